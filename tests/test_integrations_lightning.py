"""``inertia.integrations.lightning.InertiaCallback`` with the real PyTorch Lightning.

Each fit is compared with a hand-written loop that reproduces Lightning's step exactly (same
initial weights, batches, accumulation, clipping, skipped steps): the logged rows must equal the
hand-written loop's to rounding (float64), and the ledger must use the gradient the optimizer
applied (after clipping). Skips with a message when Lightning is not installed
(``pip install computational-inertia[lightning]``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("lightning", reason="the `lightning` extra is not installed (pip install .[lightning])")

import torch

from _framework_helpers import assert_same_rows, digits, finite_max, hand_loop, run_ddp_job
from _lightning_worker import DigitsModule, TwoOptimizers, fit
from inertia.integrations.lightning import InertiaCallback
from inertia.track import COLUMNS, read_history

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def batches(size: int) -> list:
    x, y = digits()
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


@pytest.mark.parametrize("optimizer", ["sgd", "dampened", "nesterov", "adam", "groups"])
def test_rows_equal_the_hand_written_loop(optimizer: str) -> None:
    cb = InertiaCallback()
    _, logged = fit(DigitsModule(optimizer), cb, batch_size=16, epochs=2)
    want, _ = hand_loop(batches(16) * 2, optimizer=optimizer)
    assert_same_rows(cb.history, want)
    assert finite_max(cb.history["residual"]) < 1e-12
    # every row reached the trainer's logger under the prefix, at Lightning's step of that batch
    kinetic = logged.series("inertia/kinetic")
    assert [s for s, _ in kinetic] == list(range(len(want)))
    assert [v for _, v in kinetic] == pytest.approx(want["kinetic"].tolist(), rel=1e-12)
    assert {k for _, m in logged.calls for k in m if k.startswith("inertia/")} <= {
        f"inertia/{c}" for c in COLUMNS
    }
    steps = [s for s, m in logged.calls if "inertia/kinetic" in m]
    assert steps == sorted(set(steps))  # strictly increasing


def test_accumulation_and_clipping_use_the_applied_gradient() -> None:
    cb = InertiaCallback()
    fit(DigitsModule("sgd"), cb, batch_size=16, epochs=2, accumulate_grad_batches=3, gradient_clip_val=0.3)
    want, applied = hand_loop(batches(16) * 2, optimizer="sgd", accumulate=3, clip=0.3)
    assert len(want) == 4 and any(a["clipped"] for a in applied)
    assert_same_rows(cb.history, want)
    # heavy ball: numerical = -lr/2 ||g||^2 of the gradient the optimizer applied (clipped)
    for row in cb.history.itertuples():
        if row.step >= 1:
            assert row.numerical == pytest.approx(-0.05 / 2 * applied[row.step - 1]["gg"], rel=1e-12)
    assert finite_max(cb.history["residual"]) < 1e-12
    # the clipping is not hidden in the curvature: a run without clipping books other numbers
    unclipped, _ = hand_loop(batches(16) * 2, optimizer="sgd", accumulate=3)
    assert abs(unclipped["numerical"].iloc[1] - cb.history["numerical"].iloc[1]) > 1e-6


def test_amp_skipped_step_writes_no_row() -> None:
    from lightning.pytorch.plugins.precision import MixedPrecision

    # float64 weights are not cast by autocast: the scaler's arithmetic is exact (powers of 2)
    amp = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    cb = InertiaCallback()
    fit(DigitsModule("sgd", poison=(3,)), cb, batch_size=16, epochs=1, plugins=[amp])
    assert amp.scaler.get_scale() < 2.0**16  # the scaler did skip a step
    want, _ = hand_loop(batches(16), optimizer="sgd", skip=(3,))
    assert len(want) == 5
    assert_same_rows(cb.history, want)


def test_two_optimizers_in_manual_optimization(tmp_path: Path) -> None:
    cb = InertiaCallback(run_dir=tmp_path / "run")
    _, logged = fit(TwoOptimizers(), cb, batch_size=32, epochs=1)
    first, second = (t.history for t in cb.recorder.trackers)
    assert len(first) == len(second) == 3
    for h in (first, second):
        assert finite_max(h["residual"]) < 1e-12
    assert logged.series("inertia/opt1/kinetic")
    assert read_history(tmp_path / "run" / "opt0").equals(first)


def test_run_directory_and_report(tmp_path: Path) -> None:
    cb = InertiaCallback(run_dir=tmp_path / "run", report=True, every=2)
    fit(DigitsModule("adam"), cb, batch_size=32, epochs=2)
    assert read_history(tmp_path / "run").equals(cb.history)
    assert list(cb.history["step"]) == [0, 2, 4]
    assert cb.reports == [tmp_path / "run" / "report.html"] and cb.reports[0].is_file()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`report=True` needs `run_dir`"):
        InertiaCallback(report=True)
    with pytest.raises(ValueError, match="`every` must be an integer >= 1, got 0"):
        InertiaCallback(every=0)
    with pytest.raises(ValueError, match="`nan_policy` must be one of"):
        InertiaCallback(nan_policy="ignore")
    with pytest.raises(TypeError, match="`prefix` must be a string"):
        InertiaCallback(prefix=3)  # type: ignore[arg-type]


@pytest.mark.timeout(600)
def test_ddp_two_processes_equal_the_full_batch_loop(tmp_path: Path) -> None:
    """2 CPU ranks on gloo (Lightning's launcher). Lightning gives training a shuffled
    ``DistributedSampler`` (seed 0): rank ``r`` takes ``perm[r::2]``, so step ``j``'s two batches
    of 8 are ``perm[16j:16j+16]`` and DDP's averaged gradient is that full batch's: the rows equal
    the single-process loop over those batches (the tracker averages the ranks' losses)."""
    here = Path(__file__).parent
    run_ddp_job([sys.executable, str(here / "_lightning_worker.py"), str(tmp_path), "sgd"], tmp_path)
    got = read_history(tmp_path / "run")
    x, y = digits()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    full = [(x[perm[i : i + 16]], y[perm[i : i + 16]]) for i in range(0, len(x), 16)]
    want, _ = hand_loop(full, optimizer="sgd", clip=0.5)
    assert_same_rows(got, want, rtol=1e-9, atol=1e-12)
    assert not math.isnan(got["residual"].iloc[-1])
