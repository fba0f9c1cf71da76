"""``torch.optim.SGD`` as conformal symplectic Euler (THEORY.md section 6).

PyTorch's step ``j`` (hyper-parameters ``lr = eta``, ``momentum = mu``, ``dampening = tau``,
``weight_decay = wd``): ``g_j = grad L(theta_j) + wd theta_j`` (negated loss gradient under
``maximize``), ``b_j = mu b_{j-1} + (1 - tau) g_j`` (``b_0 = g_0`` on the first step),
``d_j = b_j`` (or ``g_j + mu b_j`` with Nesterov, or ``g_j`` without momentum) and
``theta_{j+1} = theta_j - eta d_j``. The potential is ``V = L + wd/2 ||theta||^2``, whose
gradient is exactly the ``g_j`` the optimizer uses.

Heavy ball (``nesterov=False``). With ``c_j^2 = eta_j / (1 - tau)`` and
``dt_j^2 = eta_j (1 - tau)``, the velocity ``v_{j+1} = -c_j b_j`` satisfies
``v_{j+1} = mu r v_j - dt_j g_j`` (``r = c_j / c_{j-1}``) and
``theta_{j+1} = theta_j + dt_j v_{j+1}``: the conformal symplectic Euler step of the dynamics
with ``gamma = -ln(mu) / dt``. For ``tau = 0`` this is ``v = -sqrt(eta) b``, ``dt = sqrt(eta)``.
``K_{j+1} = c_j^2/2 ||b_j||^2`` and, with ``K~ = c_j^2/2 ||b_{j-1}||^2 = r^2 K_j`` (taken from the
buffer, so a warm-up from ``lr = 0`` is booked correctly), exactly::

    schedule  = K~ - K_j = (r^2 - 1) K_j
    friction  = -(1 - mu^2) K~
    numerical = -dt_j^2/2 ||g_j||^2

On a parameter's first step PyTorch sets ``b_0 = g_0`` rather than ``(1 - tau) g_0``, so for
those parameters (also when one is unfrozen mid-run) ``numerical = (c^2/2 - eta) ||g_0||^2``
(equal to ``-dt^2/2 ||g_0||^2`` when ``tau = 0``).

Nesterov (``tau = 0``). The velocity is still the buffer's, ``v_{j+1} = -sqrt(eta_j) b_j``, which
obeys the same recursion, but the iterate moves by
``theta_{j+1} - theta_j = dt (mu v_{j+1} - dt g_j)``. Substituting gives the same schedule and
friction terms and the scheme's dissipation::

    numerical = -eta_j (1 + 2 mu)/2 ||g_j||^2 + eta_j mu (1 - mu) <b_{j-1}, g_j>

PyTorch's foreach Nesterov step (without weight decay or maximize) adds ``mu b_j`` to ``.grad``
in place; the tracker notices the changed version counter and uses ``.grad - mu b_j``.

No momentum (``mu = 0``): ``v_{j+1} = -sqrt(eta) g_j``, ``friction = -K_j`` (all of it),
``numerical = -eta/2 ||g_j||^2``.

Recovered from the state after the step: ``theta_j = theta_{j+1} + eta d_j`` (with weight decay
and Nesterov or no momentum, ``g_j`` solves ``g = (grad + wd (theta_{j+1} + eta mu_N b))/(1 - eta wd)``)
and ``b_{j-1} = (b_j - (1 - tau) g_j) / mu``.
"""

from __future__ import annotations

import math
from typing import Any

from inertia.track.mapping import (
    NO_PRESTEP,
    Mapping,
    PreStep,
    StepTerms,
    hyper,
    momentum_terms,
    params_with_grad,
    prior,
)
from inertia.track.reduce import reduce_flat

__all__ = ["SGDMapping"]


class SGDMapping(Mapping):
    """``torch.optim.SGD``: momentum, dampening, Nesterov, weight decay, maximize."""

    names = ("kin", "gg", "ggf", "gd", "bg", "th0", "th1")

    def __init__(self, *, direct: bool = True) -> None:
        #: take heavy-ball / plain sums straight from the state (:meth:`_reduce_direct`); False
        #: always uses the general element-wise path (the two agree to rounding: tested)
        self.direct = direct

    def writes_grad(self, group: dict[str, Any]) -> bool:
        # PyTorch's foreach Nesterov step adds momentum * buf to .grad in place
        return bool(group.get("nesterov", False)) and float(group.get("momentum", 0.0)) != 0.0

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        return {
            "lr": hyper(group, "lr"),
            "momentum": hyper(group, "momentum"),
            "dampening": hyper(group, "dampening"),
            "weight_decay": hyper(group, "weight_decay"),
            "nesterov": float(bool(group["nesterov"])),
            "maximize": float(bool(group.get("maximize", False))),
        }

    def update_norm(self, hp: dict[str, float], terms: StepTerms) -> float:
        """``||dtheta||^2 = 2 dt^2 K`` (heavy ball, plain SGD); NaN for Nesterov, whose step
        ``-eta (g + mu b)`` is not the velocity's."""
        if hp["nesterov"] and hp["momentum"] != 0.0:
            return math.nan
        return 2.0 * terms.dt**2 * terms.kinetic

    def reduce(
        self,
        group: dict[str, Any],
        state: Any,
        pre: PreStep = NO_PRESTEP,
        hp: dict[str, float] | None = None,
    ) -> Any:
        hp = hp if hp is not None else self.snapshot(group, state)
        lr, mu, tau, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
        nesterov, maximize = bool(hp["nesterov"]), bool(hp["maximize"])
        rows: list[tuple[Any, ...]] = []
        keys: list[tuple[bool, bool]] = []
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            b = st.get("momentum_buffer") if mu != 0.0 else None
            if mu != 0.0 and b is None:
                continue
            rows.append((grad, b, p if wd else None))
            # (first step of this parameter, gradient overwritten in place by the step)
            keys.append((id(p) in pre.new, id(p) in pre.mutated))
        if ref is None:
            ref = group["params"][0]
        heavy = mu != 0.0 and not nesterov
        nest = nesterov and mu != 0.0
        if self.direct and not wd and not nest and not any(mutated for _, mutated in keys):
            return self._reduce_direct(rows, keys, ref, lr, mu, tau, maximize)

        def products(key: tuple[bool, bool], grad: Any, b: Any, p: Any) -> dict[str, tuple[Any, ...]]:
            first, mutated = key
            if mutated:  # foreach Nesterov left grad + mu * buf in .grad (no wd, no maximize)
                grad = grad - mu * b
            raw = -grad if maximize else grad
            if heavy:
                d = b
                theta0: Any = p + lr * b if wd else None
                g = raw + wd * theta0 if wd else raw
            else:
                if wd:
                    shift = p + (lr * mu) * b if nest else p
                    g = (raw + wd * shift) / (1.0 - wd * lr)
                else:
                    g = raw
                d = g + mu * b if nest else g
                theta0 = p + lr * d if wd else None
            pairs: dict[str, tuple[Any, ...]] = {"gg": (g, g)}
            if mu != 0.0:
                pairs.update(kin=(b, b), gd=(g, d))
            if first and heavy and tau:
                pairs["ggf"] = (g, g)
            if nest and not first:  # b_{j-1} = (b_j - g_j) / mu; zero on a first step
                pairs["bg"] = ((b - g) / mu, g)
            if wd:
                pairs.update(th0=(theta0, theta0), th1=(p, p))
            return pairs

        # without momentum the kinetic vector and d are g: kin = gg and gd = -lr gg
        sources = {"gd": ("gd", -lr)} if mu != 0.0 else {"kin": ("gg", 1.0), "gd": ("gg", -lr)}
        return reduce_flat(rows, products, self.names, ref, sources, keys)

    def _reduce_direct(
        self,
        rows: list[tuple[Any, ...]],
        keys: list[tuple[bool, bool]],
        ref: Any,
        lr: float,
        mu: float,
        tau: float,
        maximize: bool,
    ) -> Any:
        """Heavy ball or no momentum, without weight decay: every sum is a dot product of
        ``.grad`` and the buffer as the optimizer left them (``g = -grad`` under ``maximize``), so
        no element-wise temporary is formed (:func:`inertia.track.reduce.reduce_flat` on the
        columns themselves)."""
        sign = -1.0 if maximize else 1.0

        def products(key: tuple[bool, bool], grad: Any, b: Any, _: Any) -> dict[str, tuple[Any, ...]]:
            if mu == 0.0:  # the kinetic vector and d are g: kin = gg and gd = -lr gg
                return {"gg": (grad, grad)}
            pairs: dict[str, tuple[Any, ...]] = {"gg": (grad, grad), "kin": (b, b), "gd": (grad, b)}
            if key is not None and key[0]:
                pairs["ggf"] = (grad, grad)
            return pairs

        sources = {"gd": ("gd", -lr * sign)} if mu != 0.0 else {"kin": ("gg", 1.0), "gd": ("gg", -lr)}
        # parameters on their first step are summed apart only where it matters (ggf)
        return reduce_flat(rows, products, self.names, ref, sources, keys if mu != 0.0 and tau else None)

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        lr, mu, tau, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
        nesterov = bool(hp["nesterov"])
        inv = 1.0 / (1.0 - tau) if mu != 0.0 else 1.0  # c^2 = lr * inv
        h2 = lr * (1.0 - tau) if mu != 0.0 else lr
        k_prev, k_old = prior(prev, fresh, lr)
        schedule, metric, friction = momentum_terms(k_prev, k_old, k_old, mu)
        gg = sums["gg"]
        if mu == 0.0:
            numerical = -0.5 * lr * gg
        elif nesterov:
            numerical = -0.5 * lr * (1.0 + 2.0 * mu) * gg + lr * mu * (1.0 - mu) * sums["bg"]
        else:  # parameters on their first step had b_0 = g_0: (c^2/2 - lr) |g|^2 there
            numerical = -0.5 * h2 * gg + (0.5 * lr * inv - lr + 0.5 * h2) * sums["ggf"]
        kin = sums["kin"] if mu != 0.0 else sums["gg"]
        return StepTerms(
            kinetic=0.5 * lr * inv * kin,
            forward=0.5 * inv * kin if mu != 0.0 else 0.0,
            schedule=schedule,
            metric=metric,
            friction=friction,
            numerical=numerical,
            decay=0.0,
            g_dtheta=sums["gd"],
            reg_before=0.5 * wd * sums["th0"],
            reg_after=0.5 * wd * sums["th1"],
            lr=lr,
            dt=math.sqrt(h2),
            momentum=mu,
        )
