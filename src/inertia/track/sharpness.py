"""Sharpness beside the ledger: ``InertiaTracker(optimizer, sharpness_every=n)``.

Columns added to the tracker's rows (:data:`SHARPNESS_COLUMNS`):

* ``update_curvature`` (every recorded row, free): the curvature along the step that led to the
  row, ``2 B / (dtheta^T P dtheta)`` with ``B`` the row's ``curvature`` (the ledger's Bregman
  remainder) and ``P`` the optimizer's preconditioner (identity for SGD; Adam/AdamW/RMSprop:
  :func:`inertia.curvature.preconditioner`), from the mapping's
  :meth:`~inertia.track.Mapping.update_norm` (``dtheta^T P dtheta = 2 dt^2 K`` for heavy ball).
  For a quadratic it is exactly the Rayleigh quotient ``dtheta^T H dtheta / dtheta^T P dtheta
  <= lambda_max(P^{-1} H)``; with minibatches in ``"cheap"`` mode it also carries the
  batch-to-batch change of the loss (use ``"exact"`` mode for the batch sharpness along the
  update). NaN for Nesterov (its step is not the velocity's).
* ``threshold`` (every recorded row): :func:`inertia.curvature.stability_threshold` at the
  step's learning rate (the smallest over groups when they differ).
* ``sharpness``, ``sharpness_ratio = sharpness / threshold``, ``curvature_quadratic`` and
  ``n_hvp`` on rows ``n, 2n, ...`` (NaN and 0 elsewhere): at ``record(loss, closure)`` for step
  ``k`` with ``(k + 1) % n == 0`` the parameters are ``theta_{k+1}``, the parameters of row
  ``k + 1``; the closure (the loss of step ``k``'s batch, called with gradients enabled and the
  RNG state restored) gives the top eigenvalue of ``P^{-1/2} (H + wd I) P^{-1/2}`` by Lanczos
  (``wd``: coupled weight decay; AdamW's decoupled decay is a contraction, left out; under
  ``maximize`` ``H`` of ``-loss``), warm-started from the previous eigenvector, and one more
  product along the step just taken gives ``curvature_quadratic = 1/2 dtheta^T (H + wd I) dtheta``
  (``H`` of that batch at ``theta_{k+1}``, the full ``wd`` of ``V``), to set beside row
  ``k + 1``'s ``curvature`` ``B_k``: they agree to third order in the step (exactly on a
  quadratic; in ``"exact"`` mode on the same batch). ``n_hvp`` counts the products used.

When ``sharpness_ratio`` (or, in ``"exact"`` mode, ``update_curvature / threshold``) first reaches
``warn_ratio``, a :class:`StabilityWarning` is issued once (and logged at INFO); later crossings are in
the history only.

Cost: ``n_hvp`` Hessian-vector products every ``n`` steps (about 1.5 gradients each, measured
in ``benchmarks/curvature.py``), one parameter copy before each sharpness step, and nothing on
other steps. Distributed (DDP, FSDP2): one ``all_reduce`` per product; under FSDP2 also, per
sharpness step, FSDP2's all-gather of each group and one ``all_gather_into_tensor`` each for the
step ``dtheta`` and (Adam/AdamW/RMSprop) the preconditioner (:mod:`inertia.curvature`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

from inertia import curvature
from inertia.ledger import SHARPNESS_COLUMNS, StepTerms
from inertia.track.mapping import Mapping

__all__ = ["SHARPNESS_COLUMNS", "SharpnessMonitor", "StabilityWarning"]

log = logging.getLogger(__name__)


class StabilityWarning(RuntimeWarning):
    """The (preconditioned) sharpness reached the warned fraction of the stability threshold."""


def _min_threshold(optimizer: Any) -> float:
    try:
        thr = curvature.stability_threshold(optimizer)
    except (curvature.NoThresholdError, ValueError):
        return math.nan
    return min(thr) if isinstance(thr, list) else thr


class SharpnessMonitor:
    """Measures the sharpness every ``every`` steps and the update curvature on every row.

    Built by :class:`~inertia.track.InertiaTracker` when ``sharpness_every`` is given; usable on
    its own (call :meth:`measure` after each step, :meth:`columns` for each row).

    Args:
        optimizer: the optimizer the tracker reads (a ``ZeroRedundancyOptimizer`` for SGD only).
        mapping: its mapping (preconditioner and ``update_norm``).
        every: measure at the records of steps ``k`` with ``(k + 1) % every == 0``.
        warn_ratio: warn once when the ratio to the threshold reaches this (> 0).
        exact: whether the tracker runs in ``"exact"`` mode (then ``update_curvature`` warns too).
        tol, max_iter, mode: passed to :func:`inertia.curvature.lanczos` /
            :class:`~inertia.curvature.HessianOperator`.
        process_group: the group over which products are averaged (DDP, FSDP2).
    """

    def __init__(
        self,
        optimizer: Any,
        mapping: Mapping,
        every: int,
        *,
        warn_ratio: float = 0.9,
        exact: bool = False,
        tol: float = 1e-3,
        max_iter: int = 30,
        mode: str = "double_backward",
        process_group: Any = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`sharpness_every` must be an integer >= 1, got {every!r}")
        if not (isinstance(warn_ratio, (int, float)) and warn_ratio > 0 and math.isfinite(warn_ratio)):
            raise ValueError(f"`warn_ratio` must be a finite number > 0, got {warn_ratio!r}")
        zero = type(optimizer).__name__ == "ZeroRedundancyOptimizer"
        local = optimizer.optim if zero else optimizer
        name = type(local).__name__
        self.adaptive = name in ("Adam", "AdamW", "RMSprop")
        if zero and self.adaptive:
            raise NotImplementedError(
                "preconditioned sharpness under ZeroRedundancyOptimizer is not supported (each rank "
                "holds the preconditioner of its own shard only); use sharpness_every with DDP"
            )
        groups = optimizer.param_groups  # ZeRO: the wrapper's groups hold every parameter
        params = [p for g in groups for p in g["params"]]
        self.optimizer, self.local, self.mapping = optimizer, local, mapping
        self.every, self.warn_ratio, self.exact = every, float(warn_ratio), exact
        self.tol, self.max_iter, self.mode, self.process_group = tol, max_iter, mode, process_group
        self.params = [p for p in params if p.requires_grad]
        self._groups = groups
        self.sign = -1.0 if any(g.get("maximize", False) for g in groups) else 1.0
        self.warned = False
        self._pending: dict[int, dict[str, float]] = {}
        self._thresholds: dict[int, float] = {}  # read at record time (rows may be flushed later)
        self._snap: list[Any] | None = None
        self._v0: Any = None
        self._n_steps = 0
        self._handle = local.register_step_pre_hook(self._before_step)

    def _due(self, k: int) -> bool:
        return (k + 1) % self.every == 0

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        j = self._n_steps
        self._n_steps += 1
        if self._due(j):  # keep theta_j for the product along the step j -> j + 1
            self._snap = [p.detach().clone() for p in self.params]

    def _shifts(self, coupled_only: bool) -> list[float]:
        out = []
        for g in self._groups:
            wd = float(g.get("weight_decay", 0.0))
            decoupled = bool(g.get("decoupled_weight_decay", False)) or type(self.local).__name__ == "AdamW"
            out += [0.0 if (coupled_only and decoupled) else wd for p in g["params"] if p.requires_grad]
        return out

    def measure(self, k: int, closure: Callable[[], Any] | None) -> None:
        """At the record of step ``k``: the threshold of row ``k`` (the learning rate before a
        scheduler changes it) and, if due, the sharpness and the quadratic form of row ``k + 1``."""
        self._thresholds[k] = _min_threshold(self.optimizer)
        if not self._due(k):
            return
        if closure is None:
            raise ValueError(
                f"`closure` is required at step {k} (sharpness_every={self.every}): it must return the "
                "loss of the step's batch at the current parameters (it is differentiated twice)"
            )
        import torch

        op = curvature.HessianOperator(
            closure,
            self.params,
            mode=self.mode,
            preconditioner=self.local if self.adaptive else None,
            shift=self._shifts(coupled_only=True),
            sign=self.sign,
            process_group=self.process_group,
        )
        try:
            with warnings.catch_warnings():  # a loose tolerance is the point here
                warnings.simplefilter("ignore", RuntimeWarning)
                spec = curvature.lanczos(
                    op.matvec,
                    op.n,
                    1,
                    tol=self.tol,
                    max_iter=min(self.max_iter, op.n),
                    v0=self._v0,
                    dtype=op.dtype,
                    device=op.device,
                )
            lam = float(spec.values[0])
            self._v0 = spec.vectors[0]
            quad = math.nan
            if self._snap is not None:
                d = op._flat([p.detach() - s for p, s in zip(self.params, self._snap, strict=True)])
                wd = torch.cat(
                    [
                        torch.full((p.numel(),), w, dtype=op.dtype, device=op.device)
                        for p, w in zip(self.params, self._shifts(False), strict=True)
                    ]
                )
                quad = 0.5 * float(torch.dot(d, op.hessian(d)) + torch.dot(d, wd * d))
                self._snap = None
            n_hvp = op.n_hvp
        finally:
            op.release()
        thr = self._thresholds[k]
        ratio = lam / thr if math.isfinite(thr) and thr > 0 else math.nan
        self._pending[k + 1] = {
            "sharpness": lam,
            "threshold": thr,
            "sharpness_ratio": ratio,
            "curvature_quadratic": quad,
            "n_hvp": n_hvp,
        }
        what = "preconditioned sharpness lambda_max(P^-1 H)" if self.adaptive else "sharpness lambda_max(H)"
        self._warn(ratio, f"{what} = {lam:.4g} at step {k + 1}")

    def _warn(self, ratio: float, what: str) -> None:
        if self.warned or not (ratio >= self.warn_ratio):
            return
        self.warned = True
        msg = (
            f"{what} is {ratio:.3g} x the stability threshold (warn_ratio={self.warn_ratio:g}): "
            "training is at or past the edge of stability; later crossings are only in the history "
            "(columns sharpness_ratio, update_curvature, threshold)"
        )
        log.info(msg)
        warnings.warn(msg, StabilityWarning, stacklevel=4)

    def columns(self, k: int, row: dict[str, Any], terms: list[StepTerms] | None, hps: Any) -> dict[str, Any]:
        """The sharpness columns of row ``k`` (``terms``/``hps``: the step's ledger terms and
        hyper-parameters per group, if the row has a ledger)."""
        out: dict[str, Any] = dict.fromkeys(SHARPNESS_COLUMNS, math.nan)
        out["n_hvp"] = 0
        # the threshold at the learning rate of step k - 1, the step that led to row k (its lr)
        thr = self._thresholds.get(k - 1, self._thresholds.get(k))
        out["threshold"] = _min_threshold(self.optimizer) if thr is None else thr
        for old in [j for j in self._thresholds if j < k - 1]:
            del self._thresholds[old]
        if terms is not None and hps is not None:
            denom = sum(self.mapping.update_norm(hp, t) for hp, t in zip(hps, terms, strict=True))
            b = row.get("curvature", math.nan)
            if denom > 0 and math.isfinite(b):
                out["update_curvature"] = 2.0 * b / denom
        out.update(self._pending.pop(k, {}))
        for old in [j for j in self._pending if j < k]:
            del self._pending[old]
        if self.exact and math.isfinite(out["threshold"]):
            self._warn(out["update_curvature"] / out["threshold"], f"update curvature at step {k}")
        return out

    def close(self) -> None:
        """Remove the optimizer hook."""
        self._handle.remove()
