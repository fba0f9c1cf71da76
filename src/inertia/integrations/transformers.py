"""Track computational inertia in a Hugging Face ``Trainer`` run: one callback.

Usage::

    from inertia.integrations.transformers import InertiaCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[InertiaCallback(run_dir="runs/my-run")])
    trainer.train()          # inertia/kinetic, ... reach every `report_to` integration

Every recorded row of :class:`inertia.track.InertiaTracker` (columns :data:`inertia.track.COLUMNS`)
is handed to the ``on_log`` of the trainer's logging callbacks, the ones ``report_to`` installs
(TensorBoard, Weights & Biases, MLflow, ...) and any other of yours, as
``{"inertia/<column>": value}`` at ``state.global_step`` before the step (the step at which the
``Trainer`` logs that step's own numbers). The console printers and the flow callback do not get
them, and ``state.log_history`` (saved in every checkpoint) is left alone. Optionally the rows
also go to a run directory (:class:`inertia.track.RunLog`) and its HTML report.

What the callback handles:

* the loss of a step is the sum of the losses the ``Trainer`` backwarded through
  ``accelerator.backward`` since the previous step (already divided by the gradient-accumulation
  steps, or by ``num_items_in_batch``, exactly as the ``Trainer`` divided it; AMP scaling happens
  after), so accumulation is booked as one step;
* the ``Trainer`` clips (``max_grad_norm``, 1.0 by default) before ``on_pre_optimizer_step``;
  the tracker reads the gradients in the optimizer's own step hooks, so the state terms use the
  clipped gradient the optimizer applied, and it captures the gradient backward left
  (``raw_grad=True`` when ``max_grad_norm > 0``, divided by the accelerator's ``GradScaler``
  scale under fp16), so the clipping's work is booked in the ``clipping`` column, not in
  ``curvature``;
* a step that AMP skips (``accelerator.optimizer_step_was_skipped``) runs no optimizer step and
  writes no row; the learning-rate scheduler steps after the tracker has read the step's rate;
* several parameter groups are summed in one row; under DDP the tracker's replicated layout
  averages the ranks' losses (the loss whose gradient DDP's averaged gradient is) and rows are
  written by the main process.

The callback needs the ``Trainer`` itself (its accelerator and callbacks): pass
``InertiaCallback(trainer=...)`` when adding it with ``trainer.add_callback``, or let it find the
``Trainer`` that calls ``on_train_begin``.

Requires ``transformers`` (4.45 or newer): ``pip install computational-inertia[transformers]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

try:
    import transformers
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "inertia.integrations.transformers needs Hugging Face transformers: "
        "pip install computational-inertia[transformers]"
    ) from err

from inertia.integrations._recorder import CallbackOptions, StepRecorder
from inertia.integrations.loggers import _Sink
from inertia.track import Sink

__all__ = ["InertiaCallback"]

#: callbacks that print or steer training rather than record metrics: they get no rows
_NOT_LOGGERS = ("DefaultFlowCallback", "ProgressCallback", "PrinterCallback", "NotebookProgressCallback")


def _calling_trainer() -> Any:
    """The ``transformers.Trainer`` whose method is on the call stack (``None`` if none is)."""
    frame = sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("self")
        if isinstance(obj, transformers.Trainer):
            return obj
        frame = frame.f_back  # type: ignore[assignment]
    return None


class _TrainerLog(_Sink):
    """Hands each row to the ``on_log`` of the trainer's logging callbacks."""

    def __init__(self, trainer: Any, owner: Any, prefix: str) -> None:
        super().__init__(prefix, lambda row: int(trainer.state.global_step))
        self.trainer, self.owner = trainer, owner

    def write(self, row: Any) -> None:
        _, logs = self._next(row)
        t = self.trainer
        for cb in t.callback_handler.callbacks:
            if cb is self.owner or type(cb).__name__ in _NOT_LOGGERS:
                continue
            cb.on_log(t.args, t.state, t.control, logs=dict(logs), model=t.model)

    def close(self) -> None:
        """Nothing to flush: the logging callbacks belong to the trainer."""


class InertiaCallback(CallbackOptions, TrainerCallback):
    """Log the inertia tracker's columns through the ``Trainer``'s logging integrations.

    Args:
        trainer: the ``Trainer`` (default: the one that calls ``on_train_begin``).
        prefix: the metric-name prefix (``"inertia/"`` gives ``inertia/kinetic``, ...).
        every: record every ``every``-th optimizer step (see :class:`inertia.track.InertiaTracker`).
        nan_policy: ``"raise"``, ``"flag"`` or ``"stop"`` on a non-finite loss or state.
        run_dir: also write a run directory there (main process); ``None`` for none.
        report: render the run directory's ``report.html`` when training ends (needs ``run_dir``).
        log: hand the rows to the trainer's logging callbacks (default ``True``).
        config: extra entries for the run directory's manifest.

    Attributes:
        recorder: the :class:`~inertia.integrations._recorder.StepRecorder` of the current
            training (``recorder.trackers[0]`` is the tracker); ``None`` before training.
        reports: the ``report.html`` files written.

    Example:
        >>> cb = InertiaCallback(every=10)
        >>> cb.history is None      # rows appear once train() has run
        True
    """

    def __init__(
        self,
        trainer: Any = None,
        *,
        prefix: str = "inertia/",
        every: int = 1,
        nan_policy: str = "raise",
        run_dir: str | Path | None = None,
        report: bool = False,
        log: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        if trainer is not None and not isinstance(trainer, transformers.Trainer):
            raise TypeError(f"`trainer` must be a transformers.Trainer, got {type(trainer).__name__}")
        self.trainer = trainer
        self._set_options(prefix, every, nan_policy, run_dir, report, log, config)
        self._restore: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Attach the tracker to the trainer's optimizer and watch ``accelerator.backward``."""
        trainer = self.trainer or _calling_trainer()
        if trainer is None:
            raise RuntimeError(
                "InertiaCallback could not find the Trainer: pass it, InertiaCallback(trainer=trainer)"
            )
        self.trainer = trainer

        def sinks(i: int, prefix: str) -> list[Sink]:
            return [_TrainerLog(trainer, self, prefix)] if self.log else []

        self.recorder = recorder = StepRecorder(
            [trainer.optimizer],
            sinks,
            prefix=self.prefix,
            run_dir=self.run_dir,
            config=self._run_config("transformers"),
            writer=bool(state.is_world_process_zero),
            every=self.every,
            nan_policy=self.nan_policy,
            raw_grad=True if (trainer.args.max_grad_norm or 0) > 0 else "auto",
            grad_scaler=getattr(trainer.accelerator, "scaler", None),
        )
        accelerator = trainer.accelerator
        original = accelerator.backward
        own = "backward" in vars(accelerator)

        def backward(loss: Any, **kw: Any) -> Any:
            # what accelerate backwards: the Trainer's loss over its own accumulation steps
            recorder.backward(loss / accelerator.gradient_accumulation_steps)
            return original(loss, **kw)

        accelerator.backward = backward
        self._restore = (accelerator, original if own else None)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The accumulation window ends (after clipping): its loss is the loss of this step."""
        if self.recorder is not None and self.trainer is not None:
            self.recorder.boundary(self.trainer.optimizer)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Stop watching, close the tracker (finalising the run directory), render the report."""
        if self._restore is not None:
            accelerator, original = self._restore
            if original is None:
                del accelerator.backward
            else:
                accelerator.backward = original
            self._restore = None
        if self.recorder is not None:
            self.reports += self.recorder.close(report=self.report and state.is_world_process_zero)
