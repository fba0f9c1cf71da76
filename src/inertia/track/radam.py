"""``torch.optim.RAdam`` as heavy ball whose metric and step size switch on at a step count.

PyTorch's step ``j`` (``t = j + 1`` after a fresh start; ``lr = eta``, ``betas = (b1, b2)``):
``g_j = grad L + wd theta_j`` (decoupled weight decay instead shrinks
``theta <- (1 - eta wd) theta`` first), ``m_j = b1 m_{j-1} + (1 - b1) g_j``,
``s_j = b2 s_{j-1} + (1 - b2) g_j^2``, ``bc1 = 1 - b1^t``, ``bc2 = 1 - b2^t``,
``rho_inf = 2 / (1 - b2) - 1`` and ``rho_t = rho_inf - 2 t b2^t / bc2``. When ``rho_t > 5``::

    rect_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    theta_{j+1} = theta_j - (eta rect_t / bc1) m_j / M_j,   M_j = (sqrt(s_j) + eps) / sqrt(bc2)

and otherwise (the first few steps, while the variance estimate is unreliable)
``theta_{j+1} = theta_j - (eta / bc1) m_j``: ``rect_t = 1`` and ``M_j = 1``.

Mapping. Adam's (:mod:`inertia.track.adam`) with a step-count-dependent rate and metric:
``c_j^2 = eta rect_t / ((1 - b1) bc1)``, ``dt_j^2 = eta rect_t (1 - b1) / bc1`` and
``p_{j+1} = -c_j m_j`` give ``p_{j+1} = b1 r p_j - dt_j g_j`` (``r = c_j / c_{j-1}``: the
rectification is a step-size schedule, booked in ``schedule``) and
``theta_{j+1} = theta_j + dt_j M_j^{-1} p_{j+1}``. The exact ledger is Adam's::

    K_{j+1}   = c_j^2/2 sum m_j^2 / M_j
    schedule  = (r^2 - 1) K_j
    metric    = c_j^2/2 sum m_{j-1}^2 (1/M_j - 1/M_{j-1})    (the switch from M = 1 lands here)
    friction  = -(1 - b1^2) c_j^2/2 sum m_{j-1}^2 / M_j
    numerical = -dt_j^2/2 sum g_j^2 / M_j
    decay     = wd sum theta_j (Delta - eta grad L - eta wd theta_j)   (decoupled weight decay)

with ``Delta = -(eta rect_t / bc1) m_j / M_j``. Recovered after the step as for Adam.
"""

from __future__ import annotations

import math
from typing import Any

from inertia.track.adam import AdamMapping

__all__ = ["RAdamMapping", "rectification"]


def rectification(t: float, beta2: float) -> float:
    """RAdam's ``rect_t`` at step count ``t``, or 0 while ``rho_t <= 5`` (no adaptive step)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2**t / (1.0 - beta2**t)
    if rho_t <= 5.0:
        return 0.0
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


class RAdamMapping(AdamMapping):
    """``torch.optim.RAdam``: coupled or decoupled weight decay, maximize, for-loop and foreach."""

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        return super().snapshot({**group, "amsgrad": False}, state)

    def rate(self, t: float, hp: dict[str, float]) -> float:
        """``rect_t`` once the adaptive step is on, else 1."""
        return rectification(t, hp["beta2"]) or 1.0

    def metric(self, s: Any, t: float, hp: dict[str, float]) -> Any:
        """``(sqrt(s) + eps) / sqrt(bc2)`` once the adaptive step is on, else 1."""
        if rectification(t, hp["beta2"]) == 0.0:
            import torch

            return torch.ones_like(s)
        return (s.sqrt() + hp["eps"]) / math.sqrt(1.0 - hp["beta2"] ** t)
