"""What the framework callbacks share: which loss goes with which optimizer step.

Frameworks run backward several times per step (gradient accumulation), may skip a step (AMP's
``GradScaler`` on an overflow) and may drive several optimizers. :class:`StepRecorder` keeps one
:class:`~inertia.track.InertiaTracker` per optimizer and pairs each *taken* step with its loss:

* :meth:`StepRecorder.backward` adds every loss as it is backwarded (after the framework divided
  it by the number of accumulated micro-batches, before any AMP scaling), so the sum over one
  accumulation window is the loss whose gradient the step applies;
* :meth:`StepRecorder.boundary` (the framework's "before optimizer step" callback) closes the
  window: its sum becomes the loss of that optimizer's next step; a backward after it opens a new
  window. Two optimizers stepping after one backward both get its loss;
* an optimizer step post-hook, registered after the tracker's own, calls
  :meth:`~inertia.track.InertiaTracker.record` with that loss. A step that AMP skipped never runs
  the optimizer's hooks, so it is not recorded, and its window is dropped at the next boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inertia.track import InertiaTracker, RunLog, Sink

__all__ = ["CallbackOptions", "StepRecorder"]

log = logging.getLogger(__name__)


def _torch_optimizer(optimizer: Any) -> Any:
    """The ``torch.optim`` optimizer behind a framework's wrapper (Lightning's
    ``LightningOptimizer``, accelerate's ``AcceleratedOptimizer`` keep it as ``.optimizer`` or
    ``._optimizer``)."""
    for name in ("_optimizer", "optimizer"):
        inner = getattr(optimizer, name, None)
        if inner is not None and hasattr(inner, "register_step_post_hook"):
            return inner
    return optimizer


class StepRecorder:
    """One tracker per optimizer, fed with the loss of each step the optimizer really took.

    Args:
        optimizers: the optimizers (framework wrappers are unwrapped).
        sinks: ``sinks(i, prefix)`` -> the sinks of optimizer ``i``'s tracker (called on every
            rank; the tracker writes on rank 0 only).
        prefix: the metric prefix; with several optimizers optimizer ``i`` gets
            ``<prefix>opt<i>/``.
        run_dir: a run directory for the rows (rank 0 only; ``<run_dir>/opt<i>`` with several
            optimizers); ``None`` for none.
        config: stored in each run directory's manifest.
        writer: whether this process writes the run directory (rank 0).
        every, nan_policy, raw_grad, grad_scaler: passed to
            :class:`~inertia.track.InertiaTracker` (``raw_grad=True`` where the framework clips,
            so the ``clipping`` column is measured from the first step).
    """

    def __init__(
        self,
        optimizers: Sequence[Any],
        sinks: Callable[[int, str], list[Sink]],
        *,
        prefix: str,
        run_dir: str | Path | None,
        config: dict[str, Any],
        writer: bool,
        every: int,
        nan_policy: str,
        raw_grad: str | bool = "auto",
        grad_scaler: Any = None,
    ) -> None:
        self.optimizers = [_torch_optimizer(o) for o in optimizers]
        if not self.optimizers:
            raise ValueError("the trainer has no optimizer to track")
        several = len(self.optimizers) > 1
        self.prefixes = [f"{prefix}opt{i}/" if several else prefix for i in range(len(self.optimizers))]
        self.run_dirs: list[Path | None] = [
            None if run_dir is None else (Path(run_dir) / f"opt{i}" if several else Path(run_dir))
            for i in range(len(self.optimizers))
        ]
        self.trackers: list[InertiaTracker] = []
        self._handles = []
        self._index = {id(o): i for i, o in enumerate(self.optimizers)}
        self._window: Any = None  # the losses backwarded since the last boundary
        self._open = False
        self._due: list[Any] = [None] * len(self.optimizers)
        for i, opt in enumerate(self.optimizers):
            own: list[Sink] = list(sinks(i, self.prefixes[i]))
            path = self.run_dirs[i]
            if writer and path is not None:
                own.append(RunLog(path, config={**config, "optimizer": type(opt).__name__}))
            self.trackers.append(
                InertiaTracker(
                    opt,
                    every=every,
                    nan_policy=nan_policy,
                    sinks=own,
                    raw_grad=raw_grad,
                    grad_scaler=grad_scaler,
                )
            )
            # registered after the tracker's own post-hook, so it runs after it
            self._handles.append(opt.register_step_post_hook(self._stepped(i)))

    def index(self, optimizer: Any) -> int | None:
        """The position of ``optimizer`` (or of the optimizer it wraps), ``None`` if not tracked."""
        return self._index.get(id(_torch_optimizer(optimizer)))

    def backward(self, loss: Any) -> None:
        """Add a loss that is being backwarded (already divided for accumulation, unscaled)."""
        loss = loss.detach()
        if not self._open:
            self._window, self._open = loss, True
        else:
            self._window = self._window + loss

    def boundary(self, optimizer: Any) -> None:
        """The framework is about to step ``optimizer``: the window's loss is that step's."""
        i = self.index(optimizer)
        if i is None:
            return
        self._due[i] = self._window
        self._open = False

    def _stepped(self, i: int) -> Callable[..., None]:
        def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
            loss, self._due[i] = self._due[i], None
            if loss is None:
                raise RuntimeError(
                    "inertia: an optimizer step without a backward through the framework since the "
                    "previous step (in Lightning's manual optimization use self.manual_backward(loss))"
                )
            self.trackers[i].record(loss)

        return hook

    def close(self, *, report: bool = False, error: BaseException | None = None) -> list[Path]:
        """Remove the hooks, close the trackers (finalising run directories) and, with ``report``,
        render each run directory's report; returns the reports written."""
        for h in self._handles:
            h.remove()
        self._handles = []
        reports = []
        for tracker, path in zip(self.trackers, self.run_dirs, strict=True):
            if error is not None:
                for sink in tracker.sinks:
                    if isinstance(sink, RunLog) and not sink.closed:
                        sink.annotate(status="failed", error=f"{type(error).__name__}: {error}")
            tracker.close()
            if report and path is not None and any(isinstance(s, RunLog) for s in tracker.sinks):
                from inertia.report import render_track

                reports.append(render_track(path))
                log.info("inertia: report written to %s", reports[-1])
        return reports


class CallbackOptions:
    """The options and results both framework callbacks share (validated once, here)."""

    recorder: StepRecorder | None
    reports: list[Path]

    def _set_options(
        self,
        prefix: str,
        every: int,
        nan_policy: str,
        run_dir: str | Path | None,
        report: bool,
        log: bool,
        config: dict[str, Any] | None,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"`prefix` must be a string, got {type(prefix).__name__}")
        if report and run_dir is None:
            raise ValueError("`report=True` needs `run_dir`: the report is rendered from the run directory")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be an integer >= 1, got {every!r}")
        if nan_policy not in ("raise", "flag", "stop"):
            raise ValueError(f"`nan_policy` must be one of ('raise', 'flag', 'stop'), got {nan_policy!r}")
        self.prefix, self.every, self.nan_policy = prefix, every, nan_policy
        self.run_dir, self.report, self.log, self.config = run_dir, report, log, dict(config or {})
        self.recorder = None
        self.reports = []

    def _run_config(self, framework: str) -> dict[str, Any]:
        """The run directory's manifest ``config``: framework, options, and the user's entries."""
        return {"framework": framework, "every": self.every, "nan_policy": self.nan_policy, **self.config}

    @property
    def history(self) -> Any:
        """The rows of the (first) optimizer's tracker as a DataFrame; ``None`` before training."""
        return None if self.recorder is None else self.recorder.trackers[0].history
