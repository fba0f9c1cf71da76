"""Where the tracker's rows go (TESTING.md 15 and 16): the RunLog run directory and TensorBoard.

The row log round-trips ``tracker.history`` bit for bit, NaN and inf included; it is finalised
as Parquet; a torn last line is ignored; readers never modify and never unpickle; a non-empty
directory is refused unless resuming; and a training process killed with SIGKILL at random
moments leaves a readable directory whose rows are a prefix of the uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from inertia import runs
from inertia.runs import HISTORY, ROWS, create_run, read_history, read_manifest, read_rows
from inertia.track import COLUMNS, InertiaTracker, RunLog, TensorBoardSink, run_status
from inertia.track import log as track_log

# -- helpers -----------------------------------------------------------------------------------


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_file()}


def _train(tracker: InertiaTracker, n_steps: int, bad: dict[int, float] | None = None) -> None:
    """A float64 MLP on a fixed regression problem; ``bad`` replaces the recorded loss at steps."""
    opt = tracker.optimizer
    model = opt.param_groups[0]["params"]
    g = torch.Generator().manual_seed(1)
    X = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randn(16, generator=g, dtype=torch.float64)
    w1, b1, w2 = model
    for k in range(n_steps):
        opt.zero_grad()
        xb, yb = X[(4 * k) % 16 : (4 * k) % 16 + 4], y[(4 * k) % 16 : (4 * k) % 16 + 4]
        loss = ((torch.tanh(xb @ w1 + b1) @ w2 - yb) ** 2).mean()
        loss.backward()
        opt.step()
        tracker.record(loss if bad is None or k not in bad else bad[k])


def _optimizer(kind: str = "sgd") -> Any:
    g = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(0.5 * torch.randn(3, 5, generator=g, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros(5, dtype=torch.float64)),
        torch.nn.Parameter(0.5 * torch.randn(5, generator=g, dtype=torch.float64)),
    ]
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)


BAD = {5: math.nan, 9: math.inf, 10: -math.inf}


@pytest.fixture
def tracked(tmp_path: Path) -> tuple[InertiaTracker, RunLog]:
    """12 recorded steps written to an open RunLog, with NaN, inf and -inf losses in them."""
    runlog = RunLog(tmp_path / "run", config={"lr": 0.05, "note": "test"})
    tracker = InertiaTracker(_optimizer(), nan_policy="flag", sinks=[runlog])
    _train(tracker, 12, BAD)
    return tracker, runlog


# -- round trip --------------------------------------------------------------------------------


def test_the_log_round_trips_the_history_with_its_nan_rows(tracked: tuple[InertiaTracker, RunLog]) -> None:
    tracker, runlog = tracked
    expected = tracker.history
    assert not expected["finite"].all() and expected["potential"].isna().any()
    live = read_history(runlog.path)  # while running: from rows.csv
    pd.testing.assert_frame_equal(live, expected, check_exact=True)
    tracker.close()
    final = read_history(runlog.path)  # finished: from history.parquet
    pd.testing.assert_frame_equal(final, expected, check_exact=True)
    pd.testing.assert_frame_equal(read_rows(runlog.path), expected, check_exact=True)


def test_nan_and_inf_are_written_as_such_never_as_zero(tracked: tuple[InertiaTracker, RunLog]) -> None:
    _, runlog = tracked
    lines = (runlog.path / ROWS).read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS)
    cells = {int(line.split(",")[0]): dict(zip(COLUMNS, line.split(","), strict=True)) for line in lines[1:]}
    assert cells[5]["potential"] == "nan" and cells[5]["finite"] == "False"
    assert cells[9]["potential"] == "inf" and cells[10]["potential"] == "-inf"
    assert cells[4]["finite"] == "True" and cells[0]["delta_inertia"] == "nan"
    df = read_history(runlog.path)
    assert math.isnan(df.loc[5, "potential"]) and df.loc[9, "potential"] == math.inf
    assert df.loc[10, "potential"] == -math.inf and df.loc[5, "finite"] == False  # noqa: E712


def test_the_first_nonfinite_step_reaches_the_manifest_at_once(
    tracked: tuple[InertiaTracker, RunLog],
) -> None:
    tracker, runlog = tracked
    m = read_manifest(runlog.path)  # before close: a crash now would still say so
    assert m["first_nonfinite_step"] == 5 and m["status"] == "running" and m["finished"] is None
    assert runlog.first_nonfinite_step == 5
    tracker.close()
    assert read_manifest(runlog.path)["first_nonfinite_step"] == 5


def test_manifest_at_start(tmp_path: Path) -> None:
    runlog = RunLog(tmp_path / "run", config={"lr": 0.05, "out": tmp_path})
    m = read_manifest(runlog.path)
    assert m["kind"] == "track" and m["status"] == "running" and m["finished"] is None
    assert m["config"] == {"lr": 0.05, "out": str(tmp_path)}
    assert m["columns"] == list(COLUMNS) and m["rows"] == ROWS and m["history"] is None
    assert {"python", "numpy", "torch", "inertia"} <= set(m["versions"])
    assert (runlog.path / ROWS).read_text() == ",".join(COLUMNS) + "\n"
    empty = read_history(runlog.path)
    assert list(empty.columns) == list(COLUMNS) and len(empty) == 0
    assert empty["step"].dtype == "int64" and empty["finite"].dtype == bool
    assert empty["inertia"].dtype == "float64"


# -- finalisation ------------------------------------------------------------------------------


def test_close_finalises_parquet_atomically_and_marks_the_manifest(
    tracked: tuple[InertiaTracker, RunLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, runlog = tracked
    tracker.close()
    tracker.close()  # idempotent
    m = read_manifest(runlog.path)
    assert m["status"] == "complete" and m["finished"] and m["history"] == HISTORY and m["n_rows"] == 12
    assert (runlog.path / HISTORY).read_bytes()[:4] == b"PAR1"
    assert sorted(p.name for p in runlog.path.iterdir()) == ["history.parquet", "manifest.json", "rows.csv"]

    def no_csv(path: object) -> None:
        raise AssertionError("a finished run must be read from its Parquet file")

    monkeypatch.setattr(runs, "read_rows", no_csv)
    pd.testing.assert_frame_equal(read_history(runlog.path), tracker.history, check_exact=True)
    with pytest.raises(RuntimeError, match="closed"):
        runlog.write({"step": 99})


def test_annotate_and_context_manager_record_status(tmp_path: Path) -> None:
    with RunLog(tmp_path / "a") as runlog:
        runlog.write({"step": 0, "inertia": 1.0, "finite": True})
        runlog.annotate(status="stopped", results={"accuracy": 0.5})
    m = read_manifest(tmp_path / "a")
    assert m["status"] == "stopped" and m["results"] == {"accuracy": 0.5} and m["n_rows"] == 1
    with pytest.raises(ValueError, match="must be one of"):
        runlog.annotate(status="weird")
    with pytest.raises(ValueError, match="must not set the manifest keys"):
        runlog.annotate(columns=["x"])
    with pytest.raises(ZeroDivisionError), RunLog(tmp_path / "b") as runlog:
        runlog.write({"step": 0, "inertia": 1.0, "finite": True})
        _ = 1 / 0
    m = read_manifest(tmp_path / "b")
    assert m["status"] == "failed" and "ZeroDivisionError" in m["error"]
    assert len(read_history(tmp_path / "b")) == 1


def test_fsync_every_n_rows_and_at_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync
    runlog = RunLog(tmp_path / "run", fsync_every=4)
    monkeypatch.setattr(track_log.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    for k in range(10):
        runlog.write({"step": k, "finite": True})
        assert (runlog.path / ROWS).read_text().count("\n") == k + 2  # flushed at once
    assert len(calls) == 2
    runlog.close()
    assert len(calls) >= 3


def test_row_validation(tmp_path: Path) -> None:
    runlog = RunLog(tmp_path / "run", columns=("step", "x", "label", "finite"))
    with pytest.raises(ValueError, match="columns"):
        runlog.write({"step": 0, "y": 1.0})
    with pytest.raises(ValueError, match="line break"):
        runlog.write({"step": 0, "label": "a\nb"})
    with pytest.raises(TypeError, match="must be a number"):
        runlog.write({"step": 0, "x": [1.0]})
    runlog.write({"step": 0, "x": torch.tensor(0.25, dtype=torch.float64), "label": "a,b", "finite": True})
    runlog.write({"step": 1, "label": "c", "finite": True})  # x missing -> NaN
    df = read_history(runlog.path)
    assert df["x"].tolist()[0] == 0.25 and math.isnan(df["x"].tolist()[1])
    assert df["label"].tolist() == ["a,b", "c"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fsync_every": 0}, "`fsync_every` must be an integer >= 1"),
        ({"step_offset": -1}, "`step_offset` must be None or an integer >= 0"),
        ({"columns": ()}, "`columns` must be distinct"),
        ({"columns": ("a", "a")}, "`columns` must be distinct"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RunLog(tmp_path / "run", **kwargs)
    with pytest.raises(TypeError, match="`config` must be a mapping"):
        RunLog(tmp_path / "run2", config=[1])  # type: ignore[arg-type]


# -- crash safety and readers ------------------------------------------------------------------


def test_a_torn_last_line_is_ignored(tracked: tuple[InertiaTracker, RunLog]) -> None:
    tracker, runlog = tracked
    expected = tracker.history
    with open(runlog.path / ROWS, "ab") as f:
        f.write(b"12,0.05,0.22360679774997896,0.47118")  # a row cut off mid-write
    pd.testing.assert_frame_equal(read_history(runlog.path), expected, check_exact=True)


def test_a_torn_header_reads_as_no_rows(tmp_path: Path) -> None:
    run = create_run("track", tmp_path / "run")
    run.write_manifest({"columns": list(COLUMNS), "history": None, "status": "running"})
    (run.path / ROWS).write_bytes(b"step,lr,dt,gam")
    df = read_history(run.path)
    assert len(df) == 0 and list(df.columns) == list(COLUMNS)


def test_readers_never_modify_what_they_read(tracked: tuple[InertiaTracker, RunLog], tmp_path: Path) -> None:
    tracker, runlog = tracked
    with open(runlog.path / ROWS, "ab") as f:
        f.write(b"12,0.05,0.2236")  # torn: a reader must not "repair" it
    for finished in (False, True):
        if finished:
            tracker.close()
        before = _snapshot(runlog.path)
        for p in runlog.path.iterdir():
            p.chmod(0o444)
        runlog.path.chmod(0o555)
        try:
            for _ in range(2):
                assert len(read_history(runlog.path)) == 12
                assert len(read_rows(runlog.path)) == 12
        finally:
            runlog.path.chmod(0o755)
            for p in runlog.path.iterdir():
                p.chmod(0o644)
        assert _snapshot(runlog.path) == before


def test_readers_never_unpickle(
    tracked: tuple[InertiaTracker, RunLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, runlog = tracked
    (runlog.path / "history.pkl").write_bytes(pickle.dumps({"evil": 1}))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reader unpickled something")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(pd, "read_pickle", forbidden)
    assert len(read_history(runlog.path)) == 12  # CSV
    tracker.close()
    assert len(read_history(runlog.path)) == 12  # Parquet


# -- new directories and resuming --------------------------------------------------------------


def test_a_non_empty_directory_is_refused_unless_resuming(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    with pytest.raises(ValueError, match="must be a new or empty directory"):
        RunLog(out)
    assert _snapshot(out) == before
    run = create_run("track", tmp_path / "run2")
    (run.path / ROWS).write_text("step\n")
    with pytest.raises(ValueError, match="resume=True"):
        RunLog(run)
    with pytest.raises(FileNotFoundError):
        RunLog(tmp_path / "nothing", resume=True)


def test_resume_appends_with_continuous_steps(tmp_path: Path) -> None:
    out = tmp_path / "run"
    opt = _optimizer()
    tracker = InertiaTracker(opt, sinks=[RunLog(out, config={"part": 1})])
    _train(tracker, 6)
    tracker.close()
    first = tracker.history
    with open(out / ROWS, "ab") as f:
        f.write(b"6,0.05,0.22")  # a torn line from a crash: cut before appending
    tracker2 = InertiaTracker(opt, sinks=[RunLog(out, config={"part": 2}, resume=True)])
    assert read_manifest(out)["status"] == "running"
    assert len(read_history(out)) == 6  # the stale Parquet file is not used while running
    _train(tracker2, 4)
    tracker2.close()
    df = read_history(out)
    assert df["step"].tolist() == list(range(10))
    pd.testing.assert_frame_equal(df.iloc[:6], first, check_exact=True)
    second = tracker2.history.assign(step=tracker2.history["step"] + 6)
    pd.testing.assert_frame_equal(df.iloc[6:].reset_index(drop=True), second, check_exact=True)
    assert math.isnan(df.loc[6, "delta_inertia"])  # the seam: the new tracker's row 0 has no ledger
    m = read_manifest(out)
    assert m["status"] == "complete" and m["n_rows"] == 10 and m["config"] == {"part": 1}
    assert m["resumes"][0]["rows_before"] == 6 and m["resumes"][0]["step_offset"] == 6
    assert m["resumes"][0]["config"] == {"part": 2}
    assert b"0.22\n" not in (out / ROWS).read_bytes()
    with pytest.raises(ValueError, match="must match the row log"):
        RunLog(out, resume=True, columns=("step", "x"))


# -- TensorBoard -------------------------------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.flushed = self.closed = 0

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.closed += 1


def test_tensorboard_sink_with_a_fake_writer() -> None:
    writer = FakeWriter()
    sink = TensorBoardSink(writer)
    tracker = InertiaTracker(_optimizer(), nan_policy="flag", sinks=[sink])
    _train(tracker, 12, BAD)
    tracker.close()
    got: dict[tuple[str, int], float] = {(t, s): v for t, v, s in writer.scalars}
    hist = tracker.history
    assert got[("inertia/inertia", 3)] == hist.loc[3, "inertia"]
    assert got[("inertia/finite", 3)] == 1.0 and got[("inertia/finite", 5)] == 0.0
    assert ("inertia/delta_inertia", 0) not in got  # row 0 has no ledger: nothing sent
    assert ("inertia/noise", 4) not in got  # cheap mode: not defined
    assert math.isnan(got[("inertia/potential", 5)])  # the blow-up shows as NaN, not 0 or a gap
    assert got[("inertia/potential", 9)] == math.inf
    assert not any(tag == "inertia/step" for tag, _, _ in writer.scalars)
    assert writer.flushed == 1 and writer.closed == 0
    TensorBoardSink(writer, close_writer=True).close()
    assert writer.closed == 1
    with pytest.raises(TypeError, match="add_scalar"):
        TensorBoardSink(object())


# -- SIGKILL at random moments -----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import math, sys
    import torch
    torch.set_num_threads(1)
    from inertia.track import InertiaTracker, RunLog

    out, n_steps = sys.argv[1], int(sys.argv[2])
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 8, generator=g, dtype=torch.float64)
    y = torch.randn(64, generator=g, dtype=torch.float64)
    w1 = torch.nn.Parameter(0.3 * torch.randn(8, 16, generator=g, dtype=torch.float64))
    w2 = torch.nn.Parameter(0.3 * torch.randn(16, generator=g, dtype=torch.float64))
    opt = torch.optim.SGD([w1, w2], lr=0.05, momentum=0.9)
    runlog = RunLog(out, {"n_steps": n_steps}, fsync_every=16)
    tracker = InertiaTracker(opt, nan_policy="flag", sinks=[runlog])
    print("ready", flush=True)
    for k in range(n_steps):
        i = (8 * k) % 64
        opt.zero_grad()
        loss = ((torch.tanh(X[i : i + 8] @ w1) @ w2 - y[i : i + 8]) ** 2).mean()
        loss.backward()
        opt.step()
        tracker.record(math.nan if k == 137 else loss)
        if k % 25 == 0:
            print(k, flush=True)
    tracker.close()
    print("done", flush=True)
    """
)
N_STEPS = 1000


def _child(script: Path, out: Path, stderr: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(out), str(N_STEPS)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _kill_after(proc: subprocess.Popen[str], target: int, jitter: float) -> None:
    """Kill ``proc`` with SIGKILL ``jitter`` seconds after it reports step ``target``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        word = line.strip()
        if word == "done" or (word == "ready" and target < 0) or (word.isdigit() and int(word) >= target):
            break
    time.sleep(jitter)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.timeout(180)
def test_a_run_killed_at_random_moments_leaves_a_readable_prefix(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(20260102)
    # kill points: right after the log is created, early, mid-run, late; each with a random delay
    targets = [-1, rng.randrange(0, 300), rng.randrange(300, 600), rng.randrange(600, 950)]
    reference = _child(script, tmp_path / "reference", stderr=subprocess.PIPE)
    killed = [(_child(script, tmp_path / f"killed{i}"), t) for i, t in enumerate(targets)]
    threads = [
        threading.Thread(target=_kill_after, args=(proc, t, rng.uniform(0.0, 0.01))) for proc, t in killed
    ]
    for th in threads:
        th.start()
    _, err = reference.communicate(timeout=150)
    for th in threads:
        th.join(timeout=150)
    assert reference.returncode == 0, err
    full = read_history(tmp_path / "reference")
    assert len(full) == N_STEPS and read_manifest(tmp_path / "reference")["status"] == "complete"
    assert not full.loc[137, "finite"] and math.isnan(full.loc[137, "potential"])
    pd.testing.assert_frame_equal(read_rows(tmp_path / "reference"), full, check_exact=True)
    lengths = []
    for i, (proc, _) in enumerate(killed):
        assert proc.returncode == -signal.SIGKILL
        run = tmp_path / f"killed{i}"
        manifest = read_manifest(run)  # whole JSON, never half a file
        assert manifest["kind"] == "track"
        # the writer died while running: a reader says so (issue 9)
        assert manifest["status"] == "running" and run_status(run) == "interrupted"
        rows = read_history(run)
        n = len(rows)
        lengths.append(n)
        assert list(rows.columns) == list(COLUMNS)
        pd.testing.assert_frame_equal(rows, full.iloc[:n], check_exact=True)
        raw = (run / ROWS).read_bytes()
        assert raw.count(b"\n") >= n + 1  # every row the reader returns is a complete line
    assert sum(0 < n < N_STEPS for n in lengths) >= 3, lengths


def test_manifest_json_is_plain_json(tracked: tuple[InertiaTracker, RunLog]) -> None:
    tracker, runlog = tracked
    tracker.close()
    data = json.loads((runlog.path / "manifest.json").read_text())
    assert data["n_rows"] == 12 and data["first_nonfinite_step"] == 5
