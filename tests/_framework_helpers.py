"""Shared pieces of the framework-integration tests (``tests/test_integrations_*.py``) and of
their spawned workers: tiny float64 models and data, hand-written loops that reproduce what
Lightning's and the Hugging Face ``Trainer``'s steps do, and a logger that remembers what it was
sent. Nothing here computes an expected value of a ledger term: the tests compare the framework
run with the hand-written one, and the hand-written one with the optimizer's own numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

F64 = torch.float64
N_SAMPLES = 96  # digits used: 96 = 3 batches of 32, or 12 of 8


def digits(n: int = N_SAMPLES) -> tuple[Any, Any]:
    """The first ``n`` of scikit-learn's bundled digits, standardised, as float64 tensors."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    return torch.tensor(x[:n], dtype=F64), torch.tensor(y[:n])


def mlp(seed: int = 0) -> Any:
    """A 64-16-10 tanh MLP in float64 with fixed initial weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)).to(F64)


def make_optimizer(name: str, model: Any) -> Any:
    """``sgd`` (heavy ball), ``dampened`` (its first step reads which parameters are new),
    ``nesterov`` (foreach: the step writes into ``.grad``), ``adam`` or ``groups`` (AdamW, two
    parameter groups)."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if name == "dampened":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, dampening=0.5)
    if name == "nesterov":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8, nesterov=True, foreach=True)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.01)
    if name == "groups":
        first, last = list(model[0].parameters()), list(model[2].parameters())
        return torch.optim.AdamW(
            [{"params": first, "lr": 0.01, "weight_decay": 0.05}, {"params": last, "lr": 0.02}]
        )
    raise ValueError(name)


def hand_loop(
    batches: Sequence[tuple[Any, Any]],
    *,
    optimizer: str,
    accumulate: int = 1,
    clip: float | None = None,
    skip: Sequence[int] = (),
    seed: int = 0,
    loss_of: Callable[[Any, Any, Any], Any] | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """The step a framework takes, written out: windows of ``accumulate`` micro-batches, each
    loss divided by ``accumulate`` and backwarded, the gradient clipped to norm ``clip``, one
    optimizer step, the tracker recorded with the window's loss. Windows listed in ``skip`` are
    dropped (AMP's skipped step: no update, gradients discarded).

    Returns the tracker's history and, per recorded step, what the optimizer applied:
    ``gg = ||g||^2`` of the (clipped) gradient and ``clipped`` (whether clipping acted).
    """
    from inertia.track import InertiaTracker

    model = mlp(seed)
    opt = make_optimizer(optimizer, model)
    tracker = InertiaTracker(opt, raw_grad=True if clip else "auto")  # as the callback
    applied = []
    loss_of = loss_of or (lambda m, x, y: torch.nn.functional.cross_entropy(m(x), y))
    for w, start in enumerate(range(0, len(batches), accumulate)):
        opt.zero_grad(set_to_none=True)
        total = None
        for x, y in batches[start : start + accumulate]:
            loss = loss_of(model, x, y) / accumulate
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if w in skip:
            continue
        clipped = False
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            clipped = bool(norm > clip)
        gg = sum(float((p.grad * p.grad).sum()) for p in model.parameters())
        opt.step()
        tracker.record(total)
        applied.append({"gg": gg, "clipped": clipped})
    return tracker.history, applied


def assert_same_rows(got: Any, want: Any, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    """Two tracker histories agree column by column to rounding (NaN where NaN)."""
    import numpy as np

    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want), (len(got), len(want))
    for col in want.columns:
        a, b = got[col].to_numpy(dtype=float), want[col].to_numpy(dtype=float)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=col, equal_nan=True)


class MemoryLogger:
    """The logger interface Lightning's loggers share (``log_metrics(metrics, step)``), in memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((int(step) if step is not None else -1, dict(metrics)))

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(s, m[key]) for s, m in self.calls if key in m]


def finite_max(values: Any) -> float:
    """The largest absolute finite value (row 0 has NaN ledger terms)."""
    return max((abs(float(v)) for v in values if math.isfinite(float(v))), default=0.0)


def run_ddp_job(command: Sequence[str], out: Path) -> list[list[Any]]:
    """Run a 2-process CPU job (``command`` launches both ranks) with ``src/`` and ``tests/`` on
    the path; fail with its stderr if it fails; return each rank's final parameters
    (``<out>/rank<r>.pt``) after checking that the ranks agree bit for bit."""
    import subprocess

    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent / "src"), str(here)])}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(list(command), env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(*ranks, strict=True))
    return ranks
