"""Track computational inertia in a PyTorch Lightning run: one callback.

Usage::

    from inertia.integrations.lightning import InertiaCallback
    trainer = lightning.Trainer(callbacks=[InertiaCallback(run_dir="runs/my-run", report=True)])
    trainer.fit(model, loader)          # inertia/kinetic, inertia/residual, ... in every logger

Every recorded row of :class:`inertia.track.InertiaTracker` (columns :data:`inertia.track.COLUMNS`)
goes to each of ``trainer.loggers`` as ``log_metrics({"inertia/<column>": value}, step)`` (through
:class:`inertia.integrations.LoggerSink`), at ``step = trainer.global_step`` before the step, the
step at which Lightning logs that batch's own metrics; optionally to a run directory
(:class:`inertia.track.RunLog`) and its HTML report (:func:`inertia.report.render_track`).

What the callback handles (Lightning runs forward and backward inside ``optimizer.step(closure)``):

* the loss of a step is the sum of the losses backwarded since the previous step, taken in
  ``on_before_backward`` (already divided by ``accumulate_grad_batches``; divided back by the AMP
  scale when a ``GradScaler`` is in use), so gradient accumulation is booked as one step of the
  mean loss;
* the gradient is read after the closure, so after unscaling and ``gradient_clip_val`` clipping:
  the state terms use the gradient the optimizer applied (the tracker notes the gradients when
  the closure returns, :meth:`~inertia.track.InertiaTracker.note_gradients`), and the work of
  the clipping is booked in the ``clipping`` column, not in ``curvature``: the tracker captures
  the gradient backward left (``raw_grad=True`` when ``gradient_clip_val`` is set, else
  ``"auto"``) and divides it by the scale of the precision plugin's ``GradScaler``, so AMP's
  unscaling is no clipping;
* a step that AMP skips (non-finite gradients) takes no optimizer step and writes no row;
* several parameter groups are summed in one row; several optimizers (manual optimization) get
  one tracker each, with prefix ``inertia/opt<i>/`` and run directory ``<run_dir>/opt<i>``; each
  is paired with the losses backwarded (``self.manual_backward``) since the last step of any
  optimizer;
* under DDP the tracker's replicated layout averages the ranks' losses (the loss whose gradient
  DDP's averaged gradient is) in the same all-reduce as its sums; rows are written on rank 0.

Requires ``lightning`` (or ``pytorch_lightning``): ``pip install computational-inertia[lightning]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as err:
        raise ImportError(
            "inertia.integrations.lightning needs PyTorch Lightning: "
            "pip install computational-inertia[lightning]"
        ) from err

from inertia.integrations._recorder import CallbackOptions, StepRecorder
from inertia.integrations.loggers import LoggerSink
from inertia.track import Sink

__all__ = ["InertiaCallback"]


class InertiaCallback(CallbackOptions, pl.Callback):
    """Log the inertia tracker's columns through the trainer's loggers.

    Args:
        prefix: the metric-name prefix (``"inertia/"`` gives ``inertia/kinetic``, ...).
        every: record every ``every``-th optimizer step (see :class:`inertia.track.InertiaTracker`).
        nan_policy: ``"raise"``, ``"flag"`` or ``"stop"`` on a non-finite loss or state.
        run_dir: also write a run directory there (rank 0); ``None`` for none.
        report: render the run directory's ``report.html`` when fitting ends (needs ``run_dir``).
        log: send the rows to ``trainer.loggers`` (default ``True``).
        config: extra entries for the run directory's manifest.

    Attributes:
        recorder: the :class:`~inertia.integrations._recorder.StepRecorder` of the current fit
            (``recorder.trackers[i]`` is optimizer ``i``'s tracker); ``None`` before fitting.
        reports: the ``report.html`` files written.

    Example:
        >>> cb = InertiaCallback(prefix="inertia/", every=1)
        >>> cb.history is None      # rows appear once fit() has run
        True
    """

    def __init__(
        self,
        *,
        prefix: str = "inertia/",
        every: int = 1,
        nan_policy: str = "raise",
        run_dir: str | Path | None = None,
        report: bool = False,
        log: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._set_options(prefix, every, nan_policy, run_dir, report, log, config)
        self._scaler: Any = None

    def _sinks(self, trainer: Any) -> Any:
        def sinks(i: int, prefix: str) -> list[Sink]:
            if not self.log:
                return []

            def step_of(row: Any) -> int:  # the batch's step in Lightning's own logging
                return int(trainer.global_step)

            return [LoggerSink(lg, prefix=prefix, step_of=step_of) for lg in trainer.loggers]

        return sinks

    # ------------------------------------------------------------------ Lightning hooks

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Attach one tracker to each of ``trainer.optimizers``."""
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.recorder = StepRecorder(
            trainer.optimizers,
            self._sinks(trainer),
            prefix=self.prefix,
            run_dir=self.run_dir,
            config=self._run_config("lightning"),
            writer=bool(trainer.is_global_zero),
            every=self.every,
            nan_policy=self.nan_policy,
            raw_grad=True if trainer.gradient_clip_val else "auto",
            grad_scaler=self._scaler,
        )

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        """Add the loss being backwarded to the current step's (unscaled under AMP)."""
        if self.recorder is None:
            return
        if self._scaler is not None:  # Lightning hands over the loss already multiplied by the scale
            loss = loss.detach() / self._scaler._get_scale_async()
        self.recorder.backward(loss)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """The accumulation window ends: its loss is the loss of this optimizer's step."""
        if self.recorder is not None:
            self.recorder.boundary(optimizer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the trackers (finalising the run directory) and render the report if asked."""
        if self.recorder is not None:
            self.reports += self.recorder.close(report=self.report and trainer.is_global_zero)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Mark the run directory failed and close it."""
        if self.recorder is not None:
            self.recorder.close(error=exception)
