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
``K_{j+1} = c_j^2/2 ||b_j||^2`` and, exactly::

    schedule  = (r^2 - 1) K_j
    friction  = -(1 - mu^2) r^2 K_j
    numerical = -dt_j^2/2 ||g_j||^2

On the first step PyTorch sets ``b_0 = g_0`` rather than ``(1 - tau) g_0``, so there (with
``K_0 = 0``) ``numerical = (c^2/2 - eta) ||g_0||^2`` (equal to ``-dt^2/2 ||g_0||^2`` when
``tau = 0``).

Nesterov (``tau = 0``). The velocity is still the buffer's, ``v_{j+1} = -sqrt(eta_j) b_j``, which
obeys the same recursion, but the iterate moves by
``theta_{j+1} - theta_j = dt (mu v_{j+1} - dt g_j)``. Substituting gives the same schedule and
friction terms and the scheme's dissipation::

    numerical = -eta_j (1 + 2 mu)/2 ||g_j||^2 + eta_j mu (1 - mu) <b_{j-1}, g_j>

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
    Mapping,
    StepTerms,
    dot,
    hyper,
    momentum_terms,
    params_with_grad,
    previous_kinetic,
    stack_sums,
)

__all__ = ["SGDMapping"]


class SGDMapping(Mapping):
    """``torch.optim.SGD``: momentum, dampening, Nesterov, weight decay, maximize."""

    names = ("kin", "gg", "gd", "bg", "th0", "th1")

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        return {
            "lr": hyper(group, "lr"),
            "momentum": hyper(group, "momentum"),
            "dampening": hyper(group, "dampening"),
            "weight_decay": hyper(group, "weight_decay"),
            "nesterov": float(bool(group["nesterov"])),
            "maximize": float(bool(group.get("maximize", False))),
        }

    def reduce(self, group: dict[str, Any], state: Any) -> Any:
        hp = self.snapshot(group, state)
        lr, mu, tau, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
        nesterov, maximize = bool(hp["nesterov"]), bool(hp["maximize"])
        acc: list[Any] = [0.0] * len(self.names)
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            raw = -grad if maximize else grad
            b = st.get("momentum_buffer") if mu != 0.0 else None
            if mu != 0.0 and b is None:
                continue
            if mu != 0.0 and not nesterov:
                d = b
                theta0 = p + lr * b
                g = raw + wd * theta0 if wd else raw
            else:
                shift = p + (lr * mu) * b if (nesterov and b is not None) else p
                g = (raw + wd * shift) / (1.0 - wd * lr) if wd else raw
                d = g + mu * b if (nesterov and b is not None) else g
                theta0 = p + lr * d
            kin_vec = b if mu != 0.0 else g
            parts = [dot(kin_vec, kin_vec), dot(g, g), -lr * dot(g, d)]
            if nesterov and mu != 0.0:
                parts.append(dot((b - (1.0 - tau) * g) / mu, g))
            else:
                parts.append(0.0)
            parts += [dot(theta0, theta0), dot(p, p)] if wd else [0.0, 0.0]
            acc = [a + x for a, x in zip(acc, parts, strict=True)]
        if ref is None:
            ref = group["params"][0]
        return stack_sums(acc, ref)

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        lr, mu, tau, wd = hp["lr"], hp["momentum"], hp["dampening"], hp["weight_decay"]
        nesterov = bool(hp["nesterov"])
        if mu != 0.0:
            c2, h2 = lr / (1.0 - tau), lr * (1.0 - tau)
        else:
            c2, h2 = lr, lr
        k_prev, c2_prev = previous_kinetic(prev, fresh)
        first = prev is None and fresh
        schedule, metric, friction = momentum_terms(k_prev, c2_prev, c2, mu, None)
        gg = sums["gg"]
        if mu == 0.0:
            numerical = -0.5 * h2 * gg
        elif nesterov:
            numerical = -0.5 * lr * (1.0 + 2.0 * mu) * gg + lr * mu * (1.0 - mu) * sums["bg"]
        elif first:
            numerical = (0.5 * c2 - lr) * gg
        else:
            numerical = -0.5 * h2 * gg
        return StepTerms(
            kinetic=0.5 * c2 * sums["kin"],
            scale=c2,
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
