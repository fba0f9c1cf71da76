"""``torch.optim.RMSprop`` (with and without momentum, centered or not) as preconditioned heavy ball.

PyTorch's step ``j``: ``g_j = grad L + wd theta_j``, ``s_j = alpha s_{j-1} + (1 - alpha) g_j^2``
(centered: ``a_j = alpha a_{j-1} + (1 - alpha) g_j`` and ``s_j - a_j^2`` under the root), metric
``M_j = diag(sqrt(.) + eps)``. With ``momentum = mu > 0``: ``b_j = mu b_{j-1} + M_j^{-1} g_j`` and
``theta_{j+1} = theta_j - eta b_j``; without: ``theta_{j+1} = theta_j - eta M_j^{-1} g_j``.

Mapping. The buffer is already preconditioned, so it is a *velocity*: ``v_{j+1} = -sqrt(eta_j) b_j``,
``dt_j = sqrt(eta_j)``, ``v_{j+1} = mu r v_j - dt_j M_j^{-1} g_j`` (``r = dt_j / dt_{j-1}``) and
``theta_{j+1} = theta_j + dt_j v_{j+1}``: heavy ball in the metric ``M_j``, with
``K_{j+1} = 1/2 v^T M_j v = eta_j/2 sum M_j b_j^2``. Since the velocity is what is carried, the
metric term has THEORY.md's velocity form. With ``K~_old = eta_j/2 sum M_{j-1} b_{j-1}^2``
(carried from the previous step) and ``K~_new = eta_j/2 sum M_j b_{j-1}^2``::

    schedule  = K~_old - K_j = (r^2 - 1) K_j
    metric    = K~_new - K~_old = 1/2 (r v_j)^T (M_j - M_{j-1}) (r v_j)
    friction  = -(1 - mu^2) K~_new
    numerical = -eta_j/2 sum g_j^2 / M_j

Without momentum ``friction = -K_j`` and ``K_{j+1} = eta/2 sum g_j^2 / M_j``.

Recovered after the step: ``theta_j = theta_{j+1} + eta b_j`` and
``b_{j-1} = (b_j - M_j^{-1} g_j) / mu`` (without momentum and with weight decay,
``g = (grad + wd theta_{j+1}) / (1 - eta wd / M)``).
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

__all__ = ["RMSpropMapping", "rmsprop_metric"]


def rmsprop_metric(s: Any, a: Any, eps: float) -> Any:
    """RMSprop's metric ``M = diag(sqrt(s) + eps)`` (centered: ``sqrt(s - a^2) + eps``, ``a``
    the ``grad_avg``; ``a = None`` otherwise): shared by the ledger and
    :mod:`inertia.curvature`."""
    if a is not None:
        s = s - a * a
    return s.sqrt() + eps


class RMSpropMapping(Mapping):
    """``torch.optim.RMSprop``: momentum or not, centered or not, weight decay, maximize."""

    names = ("kin", "kt", "gg", "gd", "th0", "th1")

    def writes_grad(self, group: dict[str, Any]) -> bool:
        return False  # every form (for-loop, foreach, fused) leaves .grad as it found it

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        return {
            "lr": hyper(group, "lr"),
            "alpha": hyper(group, "alpha"),
            "eps": hyper(group, "eps"),
            "weight_decay": hyper(group, "weight_decay"),
            "momentum": hyper(group, "momentum"),
            "centered": float(bool(group["centered"])),
            "maximize": float(bool(group.get("maximize", False))),
        }

    def preconditioner(self, group: dict[str, Any], state: Any) -> list[Any]:
        """``P = M``: the step is ``theta -= eta b`` with ``b <- mu b + M^{-1} g``."""
        out: list[Any] = []
        for p in group["params"]:
            st = state[p] if p in state else {}
            if "square_avg" not in st:
                out.append(None)
                continue
            a = st["grad_avg"] if group["centered"] else None
            out.append(rmsprop_metric(st["square_avg"], a, float(group["eps"])))
        return out

    def reduce(
        self,
        group: dict[str, Any],
        state: Any,
        pre: PreStep = NO_PRESTEP,
        hp: dict[str, float] | None = None,
    ) -> Any:
        hp = hp if hp is not None else self.snapshot(group, state)
        lr, eps, wd, mu = hp["lr"], hp["eps"], hp["weight_decay"], hp["momentum"]
        centered, maximize = bool(hp["centered"]), bool(hp["maximize"])
        rows: list[tuple[Any, ...]] = []
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            if "square_avg" not in st:
                continue
            a = st["grad_avg"] if centered else None
            b = st["momentum_buffer"] if mu != 0.0 else None
            rows.append((grad, st["square_avg"], a, b, p if wd else None))
        if ref is None:
            ref = group["params"][0]

        def products(_: Any, grad: Any, s: Any, a: Any, b: Any, p: Any) -> dict[str, tuple[Any, Any]]:
            raw = -grad if maximize else grad
            metric = rmsprop_metric(s, a, eps)
            if mu != 0.0:
                theta0: Any = p + lr * b if wd else None
                g = raw + wd * theta0 if wd else raw
                g_over = g / metric
                b_prev = (b - g_over) / mu
                pairs = {
                    "kin": (b, metric * b),
                    "kt": (b_prev, metric * b_prev),
                    "gg": (g, g_over),
                    "gd": (g, b),
                }
            else:
                g = (raw + wd * p) / (1.0 - wd * lr / metric) if wd else raw
                theta0 = p + lr * g / metric if wd else None
                pairs = {"gg": (g, g / metric)}
            if wd:
                pairs.update(th0=(theta0, theta0), th1=(p, p))
            return pairs

        # without momentum kin = gg and gd = -lr kin: one product
        sources = {"gd": ("gd", -lr)} if mu != 0.0 else {"kin": ("gg", 1.0), "gd": ("gg", -lr)}
        return reduce_flat(rows, products, self.names, ref, sources)

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        lr, wd, mu = hp["lr"], hp["weight_decay"], hp["momentum"]
        k_prev, k_old = prior(prev, fresh, lr)
        schedule, metric, friction = momentum_terms(k_prev, k_old, 0.5 * lr * sums["kt"], mu)
        return StepTerms(
            kinetic=0.5 * lr * sums["kin"],
            forward=0.5 * sums["kin"] if mu != 0.0 else 0.0,
            schedule=schedule,
            metric=metric,
            friction=friction,
            numerical=-0.5 * lr * sums["gg"],
            decay=0.0,
            g_dtheta=sums["gd"],
            reg_before=0.5 * wd * sums["th0"],
            reg_after=0.5 * wd * sums["th1"],
            lr=lr,
            dt=math.sqrt(lr),
            momentum=mu,
        )
