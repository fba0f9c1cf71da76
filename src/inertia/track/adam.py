"""``torch.optim.Adam`` / ``AdamW`` as heavy ball in a changing diagonal metric.

PyTorch's step ``j`` (``t = j + 1`` after a fresh start; ``lr = eta``, ``betas = (b1, b2)``):
``m_j = b1 m_{j-1} + (1 - b1) g_j``, ``s_j = b2 s_{j-1} + (1 - b2) g_j^2`` (``amsgrad``: the
running maximum), bias corrections ``bc1 = 1 - b1^t``, ``bc2 = 1 - b2^t``, metric
``M_j = diag(sqrt(s_j / bc2) + eps)`` and ``theta_{j+1} = theta_j - (eta / bc1) M_j^{-1} m_j``.
Adam's ``weight_decay`` is added to the gradient (``g = grad L + wd theta``); AdamW (and Adam with
``decoupled_weight_decay``) instead first shrinks ``theta <- (1 - eta wd) theta`` and uses the raw
gradient in the moments.

Mapping. The persistent state is the first moment, a momentum: ``p_{j+1} = -c_j m_j`` with
``c_j^2 = eta / ((1 - b1) bc1_j)`` and ``dt_j^2 = eta (1 - b1) / bc1_j``. Then
``p_{j+1} = b1 r p_j - dt_j g_j`` (``r = c_j / c_{j-1}``) and
``theta_{j+1} = theta_j + dt_j M_j^{-1} p_{j+1}``: heavy ball with ``mu = b1`` in the metric
``M_j``. As ``t -> inf``, ``dt -> sqrt(eta (1 - b1))`` (THEORY.md section 6); before that the bias
correction acts as a step-size schedule. ``K_{j+1} = 1/2 p^T M_j^{-1} p = c_j^2/2 sum m_j^2 / M_j``.

Exact ledger of one step (``K~ = c_j^2/2 sum m_{j-1}^2 / M_j``, the rescaled old momentum in the
new metric)::

    schedule  = (r^2 - 1) K_j
    metric    = K~ - r^2 K_j = 1/2 (r p_j)^T (M_j^{-1} - M_{j-1}^{-1}) (r p_j)
    friction  = -(1 - b1^2) K~
    numerical = -dt_j^2/2 sum g_j^2 / M_j
    decay     = <G_j, delta_j> + wd <theta_j, Delta_adam>   (AdamW only)

The metric term is in momentum form because Adam carries the momentum ``m`` across the change
of metric. THEORY.md writes it as ``+1/2 v^T (M_{j+1} - M_j) v``, which holds when the velocity
is carried; with the momentum carried the exact term is
``1/2 p^T (M_new^{-1} - M_old^{-1}) p = -1/2 v_old^T (M_new - M_old) v_new``, of the opposite sign
to first order. The tests check this form (the ledger closes to rounding error).

AdamW: ``V = L + wd/2 ||theta||^2``, ``G_j = grad L + wd theta_j``; the decoupled shrink
``delta_j = -eta wd theta_j`` is not a force in the metric, so its work is booked separately:
``decay = wd sum theta_j (Delta_adam - eta grad L - eta wd theta_j)`` where
``Delta_adam = -(eta/bc1) M^{-1} m_j``.

Recovered from the state after the step: ``theta_j = theta_{j+1} - Delta_adam`` (AdamW: divided
by ``1 - eta wd``) and ``m_{j-1} = (m_j - (1 - b1) g_j) / b1``.
"""

from __future__ import annotations

import math
from typing import Any

from inertia.track.mapping import (
    Mapping,
    StepTerms,
    dot,
    momentum_terms,
    params_with_grad,
    previous_kinetic,
    stack_sums,
)

__all__ = ["AdamMapping"]


class AdamMapping(Mapping):
    """``torch.optim.Adam`` and ``AdamW``: amsgrad, maximize, L2 or decoupled weight decay."""

    names = ("kin", "kt", "gg", "gd", "decay", "th0", "th1")

    def __init__(self, decoupled: bool | None = None) -> None:
        # None: read ``decoupled_weight_decay`` from the group (AdamW sets it True)
        self.decoupled = decoupled

    def _is_decoupled(self, group: dict[str, Any]) -> bool:
        if self.decoupled is not None:
            return self.decoupled
        return bool(group.get("decoupled_weight_decay", False))

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        step = math.nan
        for _, _, st in params_with_grad(group, state):
            step = float(st["step"])
            break
        b1, b2 = group["betas"]
        return {
            "lr": float(group["lr"]),
            "beta1": float(b1),
            "beta2": float(b2),
            "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"]),
            "amsgrad": float(bool(group["amsgrad"])),
            "maximize": float(bool(group.get("maximize", False))),
            "decoupled": float(self._is_decoupled(group)),
            "step": step,
        }

    def reduce(self, group: dict[str, Any], state: Any) -> Any:
        hp = self.snapshot(group, state)
        lr, b1, b2, eps, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["weight_decay"]
        amsgrad, maximize, decoupled = bool(hp["amsgrad"]), bool(hp["maximize"]), bool(hp["decoupled"])
        acc: list[Any] = [0.0] * len(self.names)
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            raw = -grad if maximize else grad
            t = float(st["step"])
            bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
            m = st["exp_avg"]
            s = st["max_exp_avg_sq"] if amsgrad else st["exp_avg_sq"]
            metric = s.sqrt() / math.sqrt(bc2) + eps
            du = (-lr / bc1) * m / metric
            if decoupled:
                theta0 = (p - du) / (1.0 - lr * wd) if wd else p - du
                g = raw
                big_g = raw + wd * theta0 if wd else raw
            else:
                theta0 = p - du
                g = raw + wd * theta0 if wd else raw
                big_g = g
            g_over = g / metric
            parts: list[Any] = [dot(m, m / metric)]
            if b1 != 0.0:
                m_prev = (m - (1.0 - b1) * g) / b1
                parts.append(dot(m_prev, m_prev / metric))
            else:
                parts.append(0.0)
            parts += [dot(g, g_over), dot(big_g, p - theta0)]
            if decoupled and wd:
                parts.append(wd * dot(theta0, du - lr * raw - (lr * wd) * theta0))
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
        lr, b1, wd, t = hp["lr"], hp["beta1"], hp["weight_decay"], hp["step"]
        bc1 = 1.0 - b1**t
        c2 = lr / ((1.0 - b1) * bc1)
        h2 = lr * (1.0 - b1) / bc1
        k_prev, c2_prev = previous_kinetic(prev, fresh)
        k_tilde = 0.5 * c2 * sums["kt"]
        schedule, metric, friction = momentum_terms(k_prev, c2_prev, c2, b1, k_tilde)
        return StepTerms(
            kinetic=0.5 * c2 * sums["kin"],
            scale=c2,
            schedule=schedule,
            metric=metric,
            friction=friction,
            numerical=-0.5 * h2 * sums["gg"],
            decay=sums["decay"],
            g_dtheta=sums["gd"],
            reg_before=0.5 * wd * sums["th0"],
            reg_after=0.5 * wd * sums["th1"],
            lr=lr,
            dt=math.sqrt(h2),
            momentum=b1,
        )
