"""``torch.optim.Adagrad`` as a preconditioned gradient step: no momentum, ``K = 0``.

PyTorch's step ``j`` (step count ``t = j + 1``; ``lr = eta``, ``lr_decay``): ``g_j = grad L +
wd theta_j`` (negated under ``maximize``), ``s_j = s_{j-1} + g_j^2`` (``sum``, from
``initial_accumulator_value``), ``M_j = diag(sqrt(s_j) + eps)``,
``eta_t = eta / (1 + (t - 1) lr_decay)`` and ``theta_{j+1} = theta_j - eta_t M_j^{-1} g_j``.

Mapping. No state carries a velocity from one step to the next: Adagrad is the explicit Euler
step of the preconditioned gradient flow ``M dtheta/dt = -G`` (the overdamped limit of the
dynamics, infinite friction), with ``dt = sqrt(eta_t)`` so that the kick and the drift read as
those of the heavy-ball step of THEORY.md section 6 with ``mu = 0``: the kick gives the velocity
``v = -dt M_j^{-1} g_j``, the drift ``theta_{j+1} = theta_j + dt v``, and the infinite friction
removes all of ``1/2 v^T M_j v`` at once, before ``theta_{j+1}`` is recorded. So every recorded
state is at rest, ``K_j = 0``, ``I = V``, and the work of the step,
``<G_j, theta_{j+1} - theta_j> = -eta_t g^T M_j^{-1} g``, splits exactly into::

    friction  = -1/2 v^T M_j v = -eta_t/2 sum g_j^2 / M_j   (the step's velocity, removed)
    numerical = -dt^2/2 g^T M_j^{-1} g = -eta_t/2 sum g_j^2 / M_j   (the scheme's dissipation)
    schedule = metric = decay = 0

so that ``I_{j+1} - I_j = V_{j+1} - V_j = friction + numerical + curvature (+ clipping)`` with
``curvature`` the Bregman remainder: the residual compares the work ``<G, dtheta>`` from the
recovered ``theta_j`` (``g_dtheta``) with ``friction + numerical`` from the accumulator. This is
the SGD-without-momentum ledger (:mod:`inertia.track.sgd`) with its velocity dropped in the same
step instead of the next, which is why ``K`` is 0 here and ``gamma`` infinite.

Recovered after the step: ``theta_j = theta_{j+1} + eta_t M^{-1} g``; with weight decay
``g = (raw + wd theta_{j+1}) / (1 - wd eta_t / M)`` (``g`` holds ``wd theta_j``).
"""

from __future__ import annotations

import math
from typing import Any

from inertia.track.adam import _floats
from inertia.track.mapping import NO_PRESTEP, Mapping, PreStep, StepTerms, params_with_grad
from inertia.track.reduce import reduce_flat

__all__ = ["AdagradMapping"]


def _decayed(lr: float, lr_decay: float, t: float) -> float:
    return lr / (1.0 + (t - 1.0) * lr_decay)


class AdagradMapping(Mapping):
    """``torch.optim.Adagrad`` (dense gradients): ``lr_decay``, weight decay, maximize."""

    names = ("kin", "gd", "th0", "th1")

    def writes_grad(self, group: dict[str, Any]) -> bool:
        return False  # both forms work on copies of the gradients

    def update_norm(self, hp: dict[str, float], terms: StepTerms) -> float:
        """``dtheta^T M dtheta = eta_t^2 g^T M^{-1} g = -2 dt^2 numerical`` (``K`` is 0 here)."""
        return -2.0 * terms.dt**2 * terms.numerical

    def has_stepped(self, optimizer: Any) -> bool:
        """Adagrad creates its state (``step = 0``) in its constructor: stepped once a count moved."""
        return any(float(st.get("step", 0)) > 0 for st in optimizer.state.values())

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        step = next((st["step"] for _, _, st in params_with_grad(group, state) if "step" in st), None)
        return {
            "step": math.nan if step is None else float(step),
            "lr": float(group["lr"]),
            "lr_decay": float(group["lr_decay"]),
            "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"]),
            "maximize": float(bool(group.get("maximize", False))),
        }

    def reduce(
        self,
        group: dict[str, Any],
        state: Any,
        pre: PreStep = NO_PRESTEP,
        hp: dict[str, float] | None = None,
    ) -> Any:
        hp = hp if hp is not None else self.snapshot(group, state)
        lr, lr_decay, eps, wd = hp["lr"], hp["lr_decay"], hp["eps"], hp["weight_decay"]
        maximize = bool(hp["maximize"])
        rows: list[tuple[Any, ...]] = []
        steps: list[Any] = []
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            if "sum" not in st:
                continue
            rows.append((grad, st["sum"], p))
            steps.append(st["step"])
        if ref is None:
            ref = group["params"][0]

        def products(t: float, grad: Any, s: Any, p: Any) -> dict[str, tuple[Any, ...]]:
            raw = -grad if maximize else grad
            clr = _decayed(lr, lr_decay, t)
            metric = s.sqrt() + eps
            g = (raw + wd * p) / (1.0 - (wd * clr) / metric) if wd else raw
            theta0 = p + clr * g / metric
            pairs: dict[str, tuple[Any, ...]] = {"kin": (g, g / metric, 0.5 * clr), "gd": (g, p - theta0)}
            if wd:
                pairs.update(th0=(theta0, theta0), th1=(p, p))
            return pairs

        return reduce_flat(rows, products, self.names, ref, None, _floats(steps))

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        lr, wd, t = hp["lr"], hp["weight_decay"], hp["step"]
        clr = _decayed(lr, hp["lr_decay"], t) if math.isfinite(t) and t > 0 else lr
        # sums["kin"] = eta_t/2 sum g^2 / M: the step's velocity's energy, removed in the step
        return StepTerms(
            kinetic=0.0,
            forward=0.0,
            schedule=0.0,
            metric=0.0,
            friction=-sums["kin"],
            numerical=-sums["kin"],
            decay=0.0,
            g_dtheta=sums["gd"],
            reg_before=0.5 * wd * sums["th0"],
            reg_after=0.5 * wd * sums["th1"],
            lr=lr,
            dt=math.sqrt(clr),
            momentum=0.0,
        )
