"""``inertia track``: train a real model on real data and track its computational inertia.

:func:`run_track` trains a multilayer perceptron on scikit-learn's handwritten digits
(``load_digits``: 1797 8x8 images, shipped with scikit-learn, no download), standardised with the
training split's statistics, in shuffled minibatches, with a chosen ``torch.optim`` optimizer and
learning-rate schedule, while an :class:`~inertia.track.InertiaTracker` writes every row to a
run directory through a :class:`~inertia.track.RunLog`. At the end it writes ``metrics.csv``
(training loss, test loss and test accuracy per epoch) and the report
(:func:`inertia.report.render_track`).

The run directory (kind ``"track"``)::

    manifest.json     config, data sizes, versions, status, first non-finite step, results
    rows.csv          one line per recorded step, appended and flushed as training runs
    history.parquet   the same rows, finalised at the end
    metrics.csv       epoch, train_loss, test_loss, test_accuracy
    energies.png  ledger.png  residual.png  summary.csv  ledger_totals.csv  report.html

The model is float32 (the tracker sums in float64). In ``mode="exact"`` the closure re-evaluates
the loss of the *same* minibatch after the step, which separates the minibatch noise from the
curvature term. Non-finite losses follow ``nan_policy``: ``"raise"`` ends the run with status
``failed`` and re-raises :class:`~inertia.track.NonFiniteError` after the run directory and the
report are written; ``"flag"`` records the rows (``finite = False``) and trains on; ``"stop"``
records the first bad row and ends the run with status ``stopped``.

Example:
    >>> import tempfile
    >>> result = run_track(TrackConfig(epochs=1, batch_size=256), out=tempfile.mkdtemp() + "/run",
    ...                    progress=False, report=False)
    >>> result.status, result.n_rows
    ('complete', 6)
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from inertia.runs import RunDir, atomic_write_bytes, create_run
from inertia.track.log import KIND, RunLog
from inertia.track.sharpness import SHARPNESS_COLUMNS
from inertia.track.tracker import COLUMNS, InertiaTracker, NonFiniteError

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_LR",
    "DEFAULT_MOMENTUM",
    "OPTIMIZERS",
    "SCHEDULERS",
    "TrackConfig",
    "TrackResult",
    "load_digits_split",
    "run_track",
]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "nadam", "radam", "adamax", "adagrad")
SCHEDULERS = ("none", "step", "cosine")
ACTIVATIONS = ("tanh", "relu")
#: The learning rate used when none is given.
DEFAULT_LR = {
    "sgd": 0.05,
    "adam": 1e-3,
    "adamw": 1e-3,
    "rmsprop": 1e-3,
    "nadam": 2e-3,
    "radam": 1e-3,
    "adamax": 2e-3,
    "adagrad": 1e-2,
}
#: The momentum used when none is given: SGD's and RMSprop's ``momentum``, the Adam family's
#: ``beta1``; Adagrad has none (0).
DEFAULT_MOMENTUM = {name: 0.0 if name == "adagrad" else 0.9 for name in OPTIMIZERS}
_MODES = ("cheap", "exact")
_POLICIES = ("raise", "flag", "stop")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class TrackConfig:
    """What :func:`run_track` trains and how (validated on construction).

    Attributes:
        optimizer: one of :data:`OPTIMIZERS` (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``,
            ``"nadam"``, ``"radam"``, ``"adamax"``, ``"adagrad"``).
        lr: learning rate (default :data:`DEFAULT_LR` of the optimizer).
        momentum: SGD's and RMSprop's ``momentum``, the ``beta1`` of Adam, AdamW, NAdam, RAdam
            and Adamax (default :data:`DEFAULT_MOMENTUM`); ``beta2`` stays at PyTorch's 0.999.
            Adagrad has no momentum: giving one is an error.
        weight_decay: the optimizer's ``weight_decay`` (decoupled for AdamW).
        epochs: passes over the training split.
        batch_size: minibatch size (the last batch of an epoch may be smaller).
        hidden: widths of the hidden layers (``64 -> hidden... -> 10``).
        activation: ``"tanh"`` or ``"relu"``.
        mode: the tracker's ``"cheap"`` or ``"exact"`` mode.
        every: record every ``every``-th step.
        scheduler: ``"none"``; ``"step"`` (learning rate times 0.3 after each third of the
            steps); ``"cosine"`` (cosine annealing to 0 over all steps, per step).
        nan_policy: the tracker's ``"raise"``, ``"flag"`` or ``"stop"``.
        seed: seeds the split, the initial weights and the batch order.
        test_size: the fraction of the data held out for testing.
        threads: torch's intra-op threads during training (1 is fastest for this small model;
            ``None`` leaves torch's setting alone).
        sharpness_every: add the tracker's sharpness columns (:data:`inertia.track.SHARPNESS_COLUMNS`:
            the top Hessian eigenvalue of the current batch's loss every ``n`` steps, preconditioned
            for Adam/AdamW/RMSprop, beside the optimizer's stability threshold); a multiple of
            ``every``; ``None`` (default): off.
        clip_grad_norm: clip the gradients between backward and step with
            ``torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)`` (the total
            2-norm is scaled to at most this value) and book the clipping's work in the
            ``clipping`` column, ``<G_raw - G_applied, theta_{k+1} - theta_k>`` (the tracker
            captures the raw gradients: ``raw_grad=True``); ``None`` (default): no clipping.
    """

    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 32
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    mode: str = "cheap"
    every: int = 1
    scheduler: str = "none"
    nan_policy: str = "raise"
    seed: int = 0
    test_size: float = 0.25
    threads: int | None = 1
    sharpness_every: int | None = None
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("mode", self.mode, _MODES)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        _check_choice("nan_policy", self.nan_policy, _POLICIES)
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`lr` must be a finite number > 0, got {self.lr!r}")
        if self.momentum is not None and not (0.0 <= self.momentum < 1.0):
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum!r}")
        if self.momentum is not None and self.optimizer == "adagrad":
            raise ValueError(f"`momentum` does not apply to adagrad (it has none), got {self.momentum!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"`weight_decay` must be a finite number >= 0, got {self.weight_decay!r}")
        if self.clip_grad_norm is not None and not (
            isinstance(self.clip_grad_norm, (int, float))
            and not isinstance(self.clip_grad_norm, bool)
            and math.isfinite(self.clip_grad_norm)
            and self.clip_grad_norm > 0
        ):
            raise ValueError(
                "`clip_grad_norm` must be a finite number > 0 (or None: no clipping), "
                f"got {self.clip_grad_norm!r}"
            )
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("every", self.every, 1)
        _check_int("seed", self.seed, 0)
        if self.seed > 2**32 - 1:  # scikit-learn's split takes seeds below 2**32
            raise ValueError(f"`seed` must be an integer in [0, 2**32 - 1], got {self.seed!r}")
        if self.threads is not None:
            _check_int("threads", self.threads, 1)
        if self.sharpness_every is not None:
            _check_int("sharpness_every", self.sharpness_every, 1)
            if self.sharpness_every % self.every:
                raise ValueError(
                    f"`sharpness_every` must be a multiple of `every` ({self.every}), "
                    f"got {self.sharpness_every}"
                )
        if not isinstance(self.hidden, tuple) or not self.hidden:
            raise ValueError(f"`hidden` must be a non-empty tuple of widths, got {self.hidden!r}")
        for width in self.hidden:
            _check_int("hidden width", width, 1)
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"`test_size` must be in (0, 1), got {self.test_size!r}")

    @property
    def resolved_lr(self) -> float:
        """``lr``, or the optimizer's default."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    @property
    def resolved_momentum(self) -> float:
        """``momentum``, or the optimizer's default."""
        return DEFAULT_MOMENTUM[self.optimizer] if self.momentum is None else float(self.momentum)


@dataclass(frozen=True)
class TrackResult:
    """What :func:`run_track` did.

    Attributes:
        path: the run directory.
        status: ``"complete"``, ``"stopped"`` (``nan_policy="stop"``), ``"failed"`` or
            ``"diverging"`` (the tracker's divergence rule fired; training went on).
        n_rows: rows recorded.
        first_nonfinite_step: the step of the first non-finite row, or ``None``.
        test_accuracy: accuracy on the test split at the end (NaN if the model diverged).
        test_loss: cross-entropy on the test split at the end.
        seconds: wall time of the training loop.
        message: a one-line summary (the error, for a failed run).
        report: the path of ``report.html`` (``None`` if it was not written).
    """

    path: Path
    status: str
    n_rows: int
    first_nonfinite_step: int | None
    test_accuracy: float
    test_loss: float
    seconds: float
    message: str = ""
    report: Path | None = field(default=None)
    diverging_step: int | None = None


def load_digits_split(test_size: float = 0.25, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """scikit-learn's digits as float32 tensors ``(X_train, y_train, X_test, y_test)``.

    A stratified split; features standardised with the training split's mean and standard
    deviation (constant pixels stay 0).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - scikit-learn is a test/demo dependency
        raise ImportError(
            "inertia track needs scikit-learn for its data: pip install 'computational-inertia[demo]'"
        ) from exc
    import numpy as np

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def as_tensor(a: Any, dtype: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return (
        as_tensor((X_tr - mean) / std, torch.float32),
        as_tensor(y_tr, torch.long),
        as_tensor((X_te - mean) / std, torch.float32),
        as_tensor(y_te, torch.long),
    )


def _model(cfg: TrackConfig) -> Any:
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[cfg.activation]
    layers: list[Any] = []
    width = 64
    for h in cfg.hidden:
        layers += [torch.nn.Linear(width, h), act()]
        width = h
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def _optimizer(cfg: TrackConfig, params: Any) -> Any:
    lr, mu, wd = cfg.resolved_lr, cfg.resolved_momentum, cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=mu, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(mu, 0.999), weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(mu, 0.999), weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=mu, weight_decay=wd)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)
    cls = {"nadam": torch.optim.NAdam, "radam": torch.optim.RAdam, "adamax": torch.optim.Adamax}
    return cls[cfg.optimizer](params, lr=lr, betas=(mu, 0.999), weight_decay=wd)


def _scheduler(cfg: TrackConfig, optimizer: Any, total_steps: int) -> Any:
    if cfg.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total_steps // 3), gamma=0.3)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def _evaluate(model: Any, X: Any, y: Any) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(X)
        loss = float(torch.nn.functional.cross_entropy(logits, y))
        acc = float((logits.argmax(dim=1) == y).double().mean()) if torch.isfinite(logits).all() else math.nan
    return loss, acc


class _Bar:
    def __init__(self, enabled: bool, total: int) -> None:
        self._bar: Any = None
        self._last = 0.0
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc="inertia track", unit="step", file=sys.stderr, dynamic_ncols=True
            )

    def update(self, epoch: int, row: dict[str, Any] | None) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        now = time.monotonic()
        if row is not None and now - self._last > 0.25:
            self._last = now
            self._bar.set_postfix_str(f"epoch {epoch} loss {row['potential']:.4g} I {row['inertia']:.4g}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_track(
    config: TrackConfig | None = None,
    out: str | Path | RunDir | None = None,
    *,
    root: str | Path = "runs",
    progress: bool = True,
    report: bool = True,
) -> TrackResult:
    """Train the digits MLP with ``config`` and write a tracked run directory with its report.

    Args:
        config: what to train (default :class:`TrackConfig()`: SGD, lr 0.05, momentum 0.9,
            20 epochs of batches of 32, cheap mode).
        out: the run directory (new or empty, or a :class:`~inertia.runs.RunDir` of kind
            ``"track"`` made by :func:`inertia.runs.create_run`); default
            ``<root>/track-<YYYYmmdd-HHMMSS>``.
        root: the parent of default run directories.
        progress: a tqdm progress bar on stderr.
        report: draw the figures and write ``report.html`` at the end (``inertia report`` can do
            it later).

    Returns:
        A :class:`TrackResult`; the rows are in ``read_history(result.path)``.

    Raises:
        NonFiniteError: with ``nan_policy="raise"``, after the run directory and the report are
            written (status ``failed``, the first bad step in the manifest and the report).
    """
    cfg = TrackConfig() if config is None else config
    if not isinstance(cfg, TrackConfig):
        raise TypeError(f"`config` must be a TrackConfig, got {type(cfg).__name__}")
    run = out if isinstance(out, RunDir) else create_run(KIND, out, root=root)
    X_tr, y_tr, X_te, y_te = load_digits_split(cfg.test_size, cfg.seed)
    n_train = len(y_tr)
    per_epoch = math.ceil(n_train / cfg.batch_size)
    total = per_epoch * cfg.epochs
    old_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        # the global RNG is only touched inside fork_rng: the caller's state is left alone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _model(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        optimizer = _optimizer(cfg, model.parameters())
        scheduler = _scheduler(cfg, optimizer, total)
        manifest_config = {
            **asdict(cfg),
            "lr": cfg.resolved_lr,
            "momentum": cfg.resolved_momentum,
            "data": {
                "dataset": "sklearn.datasets.load_digits",
                "n_train": n_train,
                "n_test": len(y_te),
                "n_features": 64,
                "n_classes": 10,
            },
            "model": {"layers": [64, *cfg.hidden, 10], "activation": cfg.activation, "n_params": n_params},
            "steps_per_epoch": per_epoch,
            "n_steps": total,
        }
        sharp = cfg.sharpness_every is not None  # the sharpness columns
        runlog = RunLog(
            run, config=manifest_config, columns=COLUMNS + SHARPNESS_COLUMNS if sharp else COLUMNS
        )
        tracker = InertiaTracker(
            optimizer,
            mode=cfg.mode,
            every=cfg.every,
            nan_policy=cfg.nan_policy,
            sinks=[runlog],
            sharpness_every=cfg.sharpness_every,
            # clipping changes every large gradient: capture the raw ones from step 0
            raw_grad=True if cfg.clip_grad_norm is not None else "auto",
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        loss_fn = torch.nn.functional.cross_entropy
        metrics: list[dict[str, Any]] = []
        status, message = "complete", ""
        bar = _Bar(progress, total)
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            for epoch in range(cfg.epochs):
                order = torch.randperm(n_train, generator=generator)
                losses = []
                for start in range(0, n_train, cfg.batch_size):
                    idx = order[start : start + cfg.batch_size]
                    xb, yb = X_tr[idx], y_tr[idx]
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model(xb), yb)
                    loss.backward()
                    if cfg.clip_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                    optimizer.step()

                    def closure(xb: Any = xb, yb: Any = yb) -> Any:
                        return loss_fn(model(xb), yb)

                    row = tracker.record(loss, closure if cfg.mode == "exact" or sharp else None)
                    if scheduler is not None:
                        scheduler.step()
                    losses.append(float(loss.detach()))
                    bar.update(epoch, row)
                    if tracker.stopped:
                        break
                test_loss, test_acc = _evaluate(model, X_te, y_te)
                metrics.append(
                    {
                        "epoch": epoch,
                        "train_loss": sum(losses) / len(losses),
                        "test_loss": test_loss,
                        "test_accuracy": test_acc,
                    }
                )
                log.info("epoch %d: test loss %.4g, test accuracy %.4g", epoch, test_loss, test_acc)
                if tracker.stopped:
                    status = "stopped"
                    message = (
                        f"non-finite value at step {runlog.first_nonfinite_step}: stopped (nan_policy='stop')"
                    )
                    break
        except NonFiniteError as exc:
            status, message, error = "failed", f"NonFiniteError: {exc}", exc
        except BaseException as exc:
            status, message, error = "failed", f"{type(exc).__name__}: {exc}", exc
        finally:
            bar.close()
            seconds = time.perf_counter() - t0
        if status == "complete" and tracker.status == "diverging":
            status = "diverging"
            message = f"diverging from step {runlog.manifest.get('diverging_step')}"
        test_loss, test_acc = _evaluate(model, X_te, y_te)
        results = {"test_loss": test_loss, "test_accuracy": test_acc, "seconds": round(seconds, 3)}
        json_results = {k: (v if math.isfinite(v) else str(v)) for k, v in results.items()}
        annotations: dict[str, Any] = {"status": status, "results": json_results}
        if error is not None:
            annotations["error"] = message
        runlog.annotate(**annotations)
        tracker.close()  # closes the RunLog: history.parquet, manifest finished
        if metrics:
            import pandas as pd

            table = pd.DataFrame(metrics)
            atomic_write_bytes(run.path / "metrics.csv", table.to_csv(index=False, na_rep="nan").encode())
    finally:
        if cfg.threads is not None:
            torch.set_num_threads(old_threads)
    report_path = None
    if report:
        from inertia.report import render_track

        report_path = render_track(run)
    if isinstance(error, NonFiniteError):
        raise NonFiniteError(f"{error}; the run directory {run.path} keeps every row up to it") from error
    if error is not None:
        raise error  # the run directory and the report are written first
    return TrackResult(
        path=run.path,
        status=status,
        n_rows=runlog.n_rows,
        first_nonfinite_step=runlog.first_nonfinite_step,
        test_accuracy=test_acc,
        test_loss=test_loss,
        seconds=seconds,
        message=message or f"test accuracy {test_acc:.4f}",
        report=report_path,
        diverging_step=runlog.manifest.get("diverging_step"),
    )
