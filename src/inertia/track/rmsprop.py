"""``torch.optim.RMSprop`` (with and without momentum, centered or not) as preconditioned heavy ball.

PyTorch's step ``j``: ``g_j = grad L + wd theta_j``, ``s_j = alpha s_{j-1} + (1 - alpha) g_j^2``
(centered: ``a_j = alpha a_{j-1} + (1 - alpha) g_j`` and ``s_j - a_j^2`` under the root), metric
``M_j = diag(sqrt(.) + eps)``. With ``momentum = mu > 0``: ``b_j = mu b_{j-1} + M_j^{-1} g_j`` and
``theta_{j+1} = theta_j - eta b_j``; without: ``theta_{j+1} = theta_j - eta M_j^{-1} g_j``.

Mapping. The buffer is already preconditioned, so it is a *velocity*: ``v_{j+1} = -sqrt(eta_j) b_j``,
``dt_j = sqrt(eta_j)``, ``v_{j+1} = mu r v_j - dt_j M_j^{-1} g_j`` (``r = dt_j / dt_{j-1}``) and
``theta_{j+1} = theta_j + dt_j v_{j+1}``: heavy ball in the metric ``M_j``, with
``K_{j+1} = 1/2 v^T M_j v = eta_j/2 sum M_j b_j^2``. Since the velocity is what is carried, the
metric term has THEORY.md's velocity form. With ``K~ = eta_j/2 sum M_j b_{j-1}^2``::

    schedule  = (r^2 - 1) K_j
    metric    = K~ - r^2 K_j = 1/2 (r v_j)^T (M_j - M_{j-1}) (r v_j)
    friction  = -(1 - mu^2) K~
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
    Mapping,
    StepTerms,
    dot,
    hyper,
    momentum_terms,
    params_with_grad,
    previous_kinetic,
    stack_sums,
)

__all__ = ["RMSpropMapping"]


class RMSpropMapping(Mapping):
    """``torch.optim.RMSprop``: momentum or not, centered or not, weight decay, maximize."""

    names = ("kin", "kt", "gg", "gd", "th0", "th1")

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

    def reduce(self, group: dict[str, Any], state: Any) -> Any:
        hp = self.snapshot(group, state)
        lr, eps, wd, mu = hp["lr"], hp["eps"], hp["weight_decay"], hp["momentum"]
        centered, maximize = bool(hp["centered"]), bool(hp["maximize"])
        acc: list[Any] = [0.0] * len(self.names)
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            raw = -grad if maximize else grad
            s = st["square_avg"]
            if centered:
                a = st["grad_avg"]
                s = s - a * a
            metric = s.sqrt() + eps
            if mu != 0.0:
                b = st["momentum_buffer"]
                theta0 = p + lr * b
                g = raw + wd * theta0 if wd else raw
                b_prev = (b - g / metric) / mu
                kin = dot(b, metric * b)
                kt = dot(b_prev, metric * b_prev)
                gd = -lr * dot(g, b)
            else:
                g = (raw + wd * p) / (1.0 - wd * lr / metric) if wd else raw
                theta0 = p + lr * g / metric
                kin = dot(g, g / metric)
                kt = 0.0
                gd = -lr * kin
            parts = [kin, kt, dot(g, g / metric), gd]
            parts += [dot(theta0, theta0), dot(p, p)] if wd else [0.0, 0.0]
            acc = [x + y for x, y in zip(acc, parts, strict=True)]
        if ref is None:
            ref = group["params"][0]
        return stack_sums(acc, ref)

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        lr, wd, mu = hp["lr"], hp["weight_decay"], hp["momentum"]
        k_prev, c2_prev = previous_kinetic(prev, fresh)
        k_tilde = 0.5 * lr * sums["kt"] if mu != 0.0 else None
        schedule, metric, friction = momentum_terms(k_prev, c2_prev, lr, mu, k_tilde)
        return StepTerms(
            kinetic=0.5 * lr * sums["kin"],
            scale=lr,
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
