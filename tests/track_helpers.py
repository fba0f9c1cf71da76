"""Shared helpers for the training-tracker tests (``tests/test_track_*.py``).

Plain functions only: small float64 quadratic problems, one training loop that drives an
optimizer and an :class:`inertia.track.InertiaTracker` the way a user would, and the measure
of how well a row's ledger closes. Nothing here computes an expected value: the tests do that
by hand, from PyTorch's documented update rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker  # noqa: E402

F64 = torch.float64

#: the columns of a row that make up its ledger (besides ``delta_inertia`` and ``residual``)
LEDGER_TERMS = ("schedule", "metric", "friction", "numerical", "decay", "curvature")


def spd_matrix(dim: int, seed: int, low: float = 0.5, high: float = 3.0) -> np.ndarray:
    """A dense symmetric positive-definite matrix with eigenvalues spread over ``[low, high]``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.linspace(low, high, dim)) @ q.T


class QuadraticProblem:
    """``L(theta) = 1/2 theta^T A theta + c^T theta`` over ``theta`` cut into several parameters.

    ``sign = -1`` gives the concave loss ``-L`` (for ``maximize=True``, whose potential is ``L``).
    """

    def __init__(self, sizes: Sequence[int] = (2, 3, 1), seed: int = 0, sign: float = 1.0) -> None:
        dim = sum(sizes)
        rng = np.random.default_rng(seed + 100)
        self.matrix = spd_matrix(dim, seed)
        self.linear = 0.3 * rng.standard_normal(dim)
        self.theta0 = rng.standard_normal(dim)
        self.sizes = tuple(sizes)
        self.sign = sign
        self._a = torch.tensor(self.matrix, dtype=F64)
        self._c = torch.tensor(self.linear, dtype=F64)

    def make_params(self) -> list[Any]:
        chunks = np.split(self.theta0, np.cumsum(self.sizes)[:-1])
        return [torch.nn.Parameter(torch.tensor(x, dtype=F64)) for x in chunks]

    def loss(self, params: Sequence[Any]) -> Any:
        theta = torch.cat([p.reshape(-1) for p in params])
        return self.sign * (0.5 * theta @ self._a @ theta + self._c @ theta)


def train(
    params: Sequence[Any],
    loss_fn: Callable[[], Any],
    optimizer: Any,
    n_steps: int,
    *,
    scheduler: Any = None,
    tracker_kwargs: dict[str, Any] | None = None,
    track: bool = True,
) -> tuple[Any, list[np.ndarray]]:
    """Run ``n_steps`` of ``zero_grad, loss, backward, step, record[, scheduler.step]``.

    Returns the tracker (``None`` when ``track`` is false) and the parameters ``theta_0 ...
    theta_n`` (flattened, concatenated) seen along the way.
    """
    kwargs = dict(tracker_kwargs or {})
    tracker = InertiaTracker(optimizer, **kwargs) if track else None
    exact = kwargs.get("mode") == "exact"

    def flat() -> np.ndarray:
        return torch.cat([p.detach().reshape(-1) for p in params]).numpy().copy()

    thetas = [flat()]
    for _ in range(n_steps):
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        if tracker is not None:
            tracker.record(loss, loss_fn if exact else None)
        if scheduler is not None:
            scheduler.step()
        thetas.append(flat())
    return tracker, thetas


def row_scale(row: dict[str, Any], prev_inertia: float) -> float:
    """The size against which a row's residual is judged: its largest ledger term or energy."""
    values = [row[t] for t in LEDGER_TERMS] + [row["delta_inertia"], row["inertia"], prev_inertia]
    return max(abs(v) for v in values if math.isfinite(v))


def worst_residual(rows: Sequence[dict[str, Any]], start: int = 1) -> float:
    """``max |residual| / scale`` over the rows from ``start`` (NaN residual counts as inf)."""
    worst = 0.0
    for i in range(max(start, 1), len(rows)):
        row = rows[i]
        if not math.isfinite(row["residual"]):
            return math.inf
        # with every > 1 the previous row is not I_{k-1}: recover it from delta_inertia
        prev_inertia = row["inertia"] - row["delta_inertia"]
        worst = max(worst, abs(row["residual"]) / row_scale(row, prev_inertia))
    return worst
