"""Tracker sinks for the experiment trackers people read their runs in.

Each class here is a sink of :class:`inertia.track.InertiaTracker` (``write(row)`` and
``close()``, called on rank 0 only) that sends every recorded row as scalars named
``<prefix><column>`` (``inertia/kinetic``, ``inertia/residual``, ...), converted by
:func:`inertia.track.log.row_scalars`: ``finite`` as 1.0/0.0, and a NaN only in a non-finite row.
TensorBoard has :class:`inertia.track.TensorBoardSink`.

* :class:`LoggerSink`: any object with Lightning's ``log_metrics(metrics, step)`` (every
  ``lightning.pytorch.loggers`` logger: TensorBoard, CSV, W&B, MLflow, ...).
* :class:`WandbSink`: a Weights & Biases run (``wandb.init(mode="offline")`` needs no account).
* :class:`MLflowSink`: an MLflow run, through ``MlflowClient`` (a ``file:`` tracking URI needs
  no server).

Steps. Every sink sends a row at ``step = step_of(row)`` (default: the row's ``step``) and
requires the steps it sends to increase strictly (``ValueError`` otherwise): Weights & Biases
silently drops a ``step`` that does not increase, and a repeated step draws two points at one
abscissa elsewhere. The tracker's rows always increase; a custom ``step_of`` (e.g. the
framework's global step) must too.

Example:
    >>> class Printer:
    ...     def log_metrics(self, metrics, step): print(step, metrics)
    >>> sink = LoggerSink(Printer())
    >>> sink.write({"step": 2, "kinetic": 0.5, "noise": float("nan"), "finite": True})
    2 {'inertia/kinetic': 0.5, 'inertia/finite': 1.0}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from inertia.track.log import row_scalars

__all__ = ["LoggerSink", "MLflowSink", "StepOf", "WandbSink"]

#: how a sink turns a row into the step it is logged at
StepOf = Callable[[Mapping[str, Any]], int]


def _row_step(row: Mapping[str, Any]) -> int:
    return int(row["step"])


class _Sink:
    """Common part: prefix, step function and the strictly-increasing-step rule."""

    def __init__(self, prefix: str, step_of: StepOf | None) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"`prefix` must be a string, got {type(prefix).__name__}")
        if step_of is not None and not callable(step_of):
            raise TypeError(f"`step_of` must be a callable row -> int, got {type(step_of).__name__}")
        self.prefix = prefix
        self.step_of: StepOf = step_of or _row_step
        self.last_step: int | None = None

    def _next(self, row: Mapping[str, Any]) -> tuple[int, dict[str, float]]:
        step = self.step_of(row)
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"`step_of(row)` must return an int, got {type(step).__name__}")
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(
                f"logged steps must increase strictly: got step {step} after step {self.last_step} "
                f"(a logger such as Weights & Biases would drop it)"
            )
        self.last_step = step
        return step, row_scalars(row, self.prefix)


class LoggerSink(_Sink):
    """Send rows to an object with ``log_metrics(metrics, step)`` (Lightning's logger interface).

    Args:
        logger: the logger, e.g. ``lightning.pytorch.loggers.CSVLogger(...)``.
        prefix: prepended to every column name.
        step_of: the step a row is logged at (default ``row["step"]``); must increase strictly.

    :meth:`close` calls the logger's ``save()`` if it has one; the logger itself stays open (it
    belongs to the caller or the trainer, which finalises it).
    """

    def __init__(self, logger: Any, *, prefix: str = "inertia/", step_of: StepOf | None = None) -> None:
        if not callable(getattr(logger, "log_metrics", None)):
            raise TypeError(
                f"`logger` must have a log_metrics(metrics, step) method "
                f"(e.g. a lightning.pytorch.loggers logger), got {type(logger).__name__}"
            )
        super().__init__(prefix, step_of)
        self.logger = logger

    def write(self, row: Mapping[str, Any]) -> None:
        """Log the row's scalars at ``step_of(row)``."""
        step, metrics = self._next(row)
        self.logger.log_metrics(metrics, step=step)

    def close(self) -> None:
        """Save the logger (``logger.save()``) if it can."""
        save = getattr(self.logger, "save", None)
        if callable(save):
            save()


class WandbSink(_Sink):
    """Send rows to a Weights & Biases run.

    Each row is one ``run.log({...})`` holding the row's scalars and ``<prefix>step``, declared
    (``run.define_metric``) as the x-axis of the ``<prefix>*`` metrics. The row's step travels as
    a value, not as ``wandb.log``'s ``step=`` argument, so other code logging to the same run
    cannot make W&B drop the tracker's rows; the sink's steps still increase strictly.

    Args:
        run: a ``wandb`` run (default: the active ``wandb.run``); ``wandb.init(mode="offline")``
            needs no account or network.
        prefix: prepended to every column name.
        step_of: the step a row is logged at (default ``row["step"]``); must increase strictly.

    Raises:
        ImportError: ``wandb`` is not installed (``pip install computational-inertia[loggers]``).
        ValueError: no ``run`` and no active run.
    """

    def __init__(self, run: Any = None, *, prefix: str = "inertia/", step_of: StepOf | None = None) -> None:
        super().__init__(prefix, step_of)
        if run is None:
            try:
                import wandb
            except ImportError as err:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "WandbSink needs the `wandb` package: pip install computational-inertia[loggers]"
                ) from err
            run = wandb.run
        if run is None or not callable(getattr(run, "log", None)):
            raise ValueError(
                "`run` must be a wandb run, or a run must be active: call wandb.init(...) first "
                "(wandb.init(mode='offline') needs no account)"
            )
        self.run = run
        self.step_key = f"{prefix}step"
        run.define_metric(self.step_key)
        run.define_metric(f"{prefix}*", step_metric=self.step_key)

    def write(self, row: Mapping[str, Any]) -> None:
        """Log the row's scalars and ``<prefix>step`` in one ``run.log``."""
        step, metrics = self._next(row)
        self.run.log({**metrics, self.step_key: step})

    def close(self) -> None:
        """Nothing to flush: the run belongs to the caller, who calls ``run.finish()``."""


class MLflowSink(_Sink):
    """Send rows to an MLflow run with one ``MlflowClient.log_batch`` per row.

    Args:
        run_id: the run (default: the active run of ``mlflow.start_run()``).
        tracking_uri: the tracking store (default: MLflow's own default, ``MLFLOW_TRACKING_URI``
            or ``./mlruns``); ``"file:/some/dir"`` needs no server.
        prefix: prepended to every column name.
        step_of: the step a row is logged at (default ``row["step"]``); must increase strictly.

    Raises:
        ImportError: ``mlflow`` is not installed (``pip install computational-inertia[loggers]``).
        ValueError: no ``run_id`` and no active run.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        tracking_uri: str | None = None,
        prefix: str = "inertia/",
        step_of: StepOf | None = None,
    ) -> None:
        super().__init__(prefix, step_of)
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "MLflowSink needs the `mlflow` package: pip install computational-inertia[loggers]"
            ) from err
        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise ValueError("`run_id` must be given, or a run must be active (mlflow.start_run())")
            run_id = active.info.run_id
        if not isinstance(run_id, str):
            raise TypeError(f"`run_id` must be a string, got {type(run_id).__name__}")
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def write(self, row: Mapping[str, Any]) -> None:
        """Log the row's scalars at ``step_of(row)`` in one batch."""
        from mlflow.entities import Metric

        step, metrics = self._next(row)
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        """Nothing to flush: every batch is written when it is logged; the run stays open."""
