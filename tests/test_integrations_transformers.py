"""``inertia.integrations.transformers.InertiaCallback`` with the real Hugging Face ``Trainer``.

A one-layer GPT-2 built from a config (random weights, nothing downloaded) on synthetic tokens,
in float64. Each run is compared with a hand-written loop that reproduces the ``Trainer``'s step
(same weights, batches in order, loss scaling by ``num_items_in_batch``, accumulation, clipping,
scheduler, skipped steps): the rows must equal to rounding, and the ledger must use the gradient
the optimizer applied (after clipping). Skips with a message when transformers is not installed
(``pip install computational-inertia[transformers]``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip(
    "transformers", reason="the `transformers` extra is not installed (pip install .[transformers])"
)
pytest.importorskip("accelerate", reason="the `transformers` extra (accelerate) is not installed")

import torch
import transformers

from _framework_helpers import assert_same_rows, finite_max, run_ddp_job
from _transformers_worker import hand_loop, trainer
from inertia.integrations.transformers import InertiaCallback
from inertia.track import read_history

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


class Recorder(transformers.TrainerCallback):
    """A logging integration stand-in: remembers what ``on_log`` received and at which step."""

    def __init__(self) -> None:
        self.logs: list[tuple[int, dict]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        self.logs.append((state.global_step, dict(logs or {})))


@pytest.mark.parametrize(
    ("optimizer", "schedule"), [("sgd", "constant"), ("sgd", "linear"), ("groups", "cosine")]
)
def test_rows_equal_the_hand_written_loop(tmp_path: Path, optimizer: str, schedule: str) -> None:
    cb, seen = InertiaCallback(), Recorder()
    t = trainer(tmp_path, cb, optimizer=optimizer, schedule=schedule)
    t.add_callback(seen)
    t.train()
    want, _ = hand_loop(optimizer=optimizer, schedule=schedule)
    assert_same_rows(cb.history, want)
    assert finite_max(cb.history["residual"]) < 1e-12
    if schedule != "constant":
        assert finite_max(cb.history["schedule"]) > 0
    # the logging callbacks got every row under the prefix, at the Trainer's step of that step
    rows = [(s, m) for s, m in seen.logs if "inertia/kinetic" in m]
    assert [s for s, _ in rows] == list(range(len(want)))
    assert [m["inertia/kinetic"] for _, m in rows] == pytest.approx(want["kinetic"].tolist(), rel=1e-12)
    # ... and the Trainer's own log history is left alone
    assert not any("inertia/kinetic" in h for h in t.state.log_history)


def test_accumulation_and_clipping_use_the_applied_gradient(tmp_path: Path) -> None:
    cb = InertiaCallback()
    trainer(tmp_path, cb, steps=6, batch=4, accumulate=3, clip=0.4).train()
    want, applied = hand_loop(steps=6, batch=4, accumulate=3, clip=0.4)
    assert_same_rows(cb.history, want)
    assert finite_max(cb.history["residual"]) < 1e-12
    assert min(applied) == pytest.approx(0.4**2, rel=1e-5)  # clipping acted (to 0.4 / (1 + 1e-6 / norm))
    for row in cb.history.itertuples():
        if row.step >= 1:  # heavy ball: numerical = -lr/2 ||g||^2 of the clipped gradient
            assert row.numerical == pytest.approx(-0.1 / 2 * applied[row.step - 1], rel=1e-12)
    unclipped, _ = hand_loop(steps=6, batch=4, accumulate=3)
    assert abs(unclipped["numerical"].iloc[1] - cb.history["numerical"].iloc[1]) > 1e-6


def test_amp_skipped_step_writes_no_row(tmp_path: Path) -> None:
    """fp16 AMP's loss scaling, simulated on CPU (accelerate creates its GradScaler on GPUs only):
    the accelerator is given a CPU GradScaler before training, so ``accelerator.backward`` scales,
    clipping unscales and the optimizer steps through ``scaler.step``, as on a GPU. Sequence 17
    (in step 2's batch) has an infinite loss: the scaler skips that step, the Trainer counts it."""
    cb = InertiaCallback()
    t = trainer(tmp_path, cb, poison=(17,))  # no clipping: accelerate unscales for it only in fp16
    t.accelerator.scaler = scaler = torch.amp.GradScaler("cpu")
    t.train()
    assert scaler.get_scale() == 2.0**15 and t.state.global_step == 6  # one skip halved it
    want, _ = hand_loop(poison=(17,), skip=(2,))
    assert len(want) == 5
    assert_same_rows(cb.history, want)


def test_run_directory_report_and_tensorboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard", reason="the `loggers` extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = InertiaCallback(run_dir=tmp_path / "run", report=True)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    t = trainer(tmp_path, cb, report_to=["tensorboard"])
    t.train()
    assert read_history(tmp_path / "run").equals(cb.history)
    assert cb.reports and cb.reports[0].is_file()
    (events_dir,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents*")}
    events = EventAccumulator(str(events_dir))
    events.Reload()
    got = [(e.step, e.value) for e in events.Scalars("train/inertia/kinetic")]
    assert [s for s, _ in got] == list(range(6))
    assert [v for _, v in got] == pytest.approx(cb.history["kinetic"].tolist(), rel=1e-6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="`report=True` needs `run_dir`"):
        InertiaCallback(report=True)
    with pytest.raises(ValueError, match="`every` must be an integer >= 1, got 0"):
        InertiaCallback(every=0)
    with pytest.raises(ValueError, match="`nan_policy` must be one of"):
        InertiaCallback(nan_policy="ignore")
    with pytest.raises(TypeError, match=r"`trainer` must be a transformers\.Trainer"):
        InertiaCallback(trainer=object())


@pytest.mark.timeout(600)
def test_ddp_two_processes_equal_the_full_batch_loop(tmp_path: Path) -> None:
    """``torchrun`` with 2 CPU ranks on gloo: accelerate hands batch ``2j`` to rank 0 and ``2j+1``
    to rank 1, so step ``j`` sees sequences ``8j .. 8j+7``; the loss is normalised by the label
    tokens counted over both ranks (and multiplied by the world size, as the Trainer does), so
    DDP's averaged gradient is the full 8-sequence gradient: the rows equal that loop's."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    worker = Path(__file__).parent / "_transformers_worker.py"
    run_ddp_job([torchrun, "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path)], tmp_path)
    got = read_history(tmp_path / "run")
    want, applied = hand_loop(batch=8, steps=6, clip=0.5)
    assert min(applied) == pytest.approx(0.25, rel=1e-5)
    assert_same_rows(got, want, rtol=1e-9, atol=1e-12)
