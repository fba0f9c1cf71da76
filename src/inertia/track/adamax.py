"""``torch.optim.Adamax`` as heavy ball in the infinity-norm metric (Adam's ledger, another ``M``).

PyTorch's step ``j`` (``t = j + 1`` after a fresh start; ``lr = eta``, ``betas = (b1, b2)``):
``g_j = grad L + wd theta_j`` (negated under ``maximize``), ``m_j = b1 m_{j-1} + (1 - b1) g_j``,
``u_j = max(b2 u_{j-1}, |g_j| + eps)`` (``exp_inf``) and
``theta_{j+1} = theta_j - (eta / bc1) m_j / u_j`` with ``bc1 = 1 - b1^t``.

Mapping. This is Adam's step (:mod:`inertia.track.adam`) with the metric ``M_j = diag(u_j)``
(``eps`` already inside the maximum, no second bias correction): with
``c_j^2 = eta / ((1 - b1) bc1_j)``, ``dt_j^2 = eta (1 - b1) / bc1_j`` and ``p_{j+1} = -c_j m_j``,
``p_{j+1} = b1 r p_j - dt_j g_j`` and ``theta_{j+1} = theta_j + dt_j M_j^{-1} p_{j+1}``. So the
exact ledger is Adam's, term for term::

    K_{j+1}   = c_j^2/2 sum m_j^2 / u_j
    schedule  = (r^2 - 1) K_j
    metric    = c_j^2/2 sum m_{j-1}^2 (1/u_j - 1/u_{j-1})
    friction  = -(1 - b1^2) c_j^2/2 sum m_{j-1}^2 / u_j
    numerical = -dt_j^2/2 sum g_j^2 / u_j

(coupled weight decay only: ``V = L + wd/2 ||theta||^2``). Recovered after the step:
``theta_j = theta_{j+1} + (eta / bc1) m_j / u_j`` and ``m_{j-1} = (m_j - (1 - b1) g_j) / b1``.
"""

from __future__ import annotations

from typing import Any

from inertia.track.adam import AdamMapping

__all__ = ["AdamaxMapping"]


class AdamaxMapping(AdamMapping):
    """``torch.optim.Adamax``: weight decay (coupled), maximize, for-loop and foreach forms."""

    def __init__(self) -> None:
        super().__init__(decoupled=False)

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        return super().snapshot({**group, "amsgrad": False}, state)

    def second_moment(self, st: dict[str, Any], hp: dict[str, float]) -> Any:
        return st["exp_inf"]

    def metric(self, s: Any, t: float, hp: dict[str, float]) -> Any:
        """``M = diag(u)``: ``exp_inf`` itself."""
        return s
