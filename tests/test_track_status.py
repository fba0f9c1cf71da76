"""Honest statuses: the manifest says how a run ended however it was driven, and a reader
reports a run whose writer died without closing it as ``interrupted`` (issue 9, item 5).

Library use with and without ``with``, ``nan_policy`` ``"stop"`` and ``"raise"``, an exception
escaping the block, the caller's own ``annotate`` winning, and the liveness rule of
:func:`inertia.track.run_status` on forged process records (a dead id, a reused id, another
host, another boot). A run killed with SIGKILL is checked in ``test_track_log.py``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from inertia import _process  # noqa: E402
from inertia.report import track_summary  # noqa: E402
from inertia.runs import read_history, read_manifest  # noqa: E402
from inertia.track import InertiaTracker, NonFiniteError, RunLog, run_status  # noqa: E402


def _problem() -> tuple[torch.nn.Parameter, torch.optim.Optimizer]:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    return w, torch.optim.SGD([w], lr=0.1, momentum=0.9)


def _steps(
    tracker: InertiaTracker, w: torch.nn.Parameter, opt: torch.optim.Optimizer, n: int, bad: int = -1
) -> None:
    for k in range(n):
        opt.zero_grad()
        loss = 0.5 * (w * w).sum()
        loss.backward()
        opt.step()
        tracker.record(math.nan if k == bad else loss)


def test_a_closed_run_is_complete_and_record_after_close_says_closed(tmp_path: Path) -> None:
    w, opt = _problem()
    tracker = InertiaTracker(opt, sinks=[RunLog(tmp_path / "run")])
    _steps(tracker, w, opt, 3)
    tracker.close()
    tracker.close()  # again: nothing
    m = read_manifest(tmp_path / "run")
    assert tracker.status == "complete" and m["status"] == "complete" and "error" not in m
    assert run_status(tmp_path / "run") == "complete"
    opt.step()
    with pytest.raises(RuntimeError, match=r"record\(\) called after close\(\): the tracker is closed"):
        tracker.record(1.0)


def test_nan_policy_stop_writes_stopped(tmp_path: Path) -> None:
    w, opt = _problem()
    tracker = InertiaTracker(opt, nan_policy="stop", sinks=[RunLog(tmp_path / "run")])
    _steps(tracker, w, opt, 6, bad=3)
    tracker.close()
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "stopped" and m["first_nonfinite_step"] == 3 and m["n_rows"] == 4


def test_a_nonfinite_error_escaping_with_writes_failed_with_the_error(tmp_path: Path) -> None:
    w, opt = _problem()
    with pytest.raises(NonFiniteError), InertiaTracker(opt, sinks=[RunLog(tmp_path / "run")]) as tracker:
        _steps(tracker, w, opt, 6, bad=2)
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "failed" and m["error"].startswith("NonFiniteError: non-finite loss")
    assert "at step 2" in m["error"] and m["finished"] and len(read_history(tmp_path / "run")) == 3


def test_any_exception_escaping_with_writes_failed(tmp_path: Path) -> None:
    w, opt = _problem()
    with pytest.raises(ZeroDivisionError), InertiaTracker(opt, sinks=[RunLog(tmp_path / "run")]) as tracker:
        _steps(tracker, w, opt, 2)
        _ = 1 / 0
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "failed" and m["error"] == "ZeroDivisionError: division by zero"
    summary = track_summary(read_history(tmp_path / "run"), m).set_index("quantity")["value"]
    assert summary["status"] == "failed" and summary["error"] == m["error"]


def test_the_callers_annotation_wins(tmp_path: Path) -> None:
    w, opt = _problem()
    runlog = RunLog(tmp_path / "run")
    tracker = InertiaTracker(opt, sinks=[runlog])
    _steps(tracker, w, opt, 2)
    runlog.annotate(status="failed", error="OutOfBudget: the caller says so")
    tracker.close()
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "failed" and m["error"] == "OutOfBudget: the caller says so"
    with pytest.raises(ValueError, match="`status` must be one of"):
        RunLog(tmp_path / "other").finish("done")


def test_the_manifest_names_its_writer_and_a_live_run_reads_running(tmp_path: Path) -> None:
    w, opt = _problem()
    tracker = InertiaTracker(opt, sinks=[RunLog(tmp_path / "run")])
    _steps(tracker, w, opt, 2)
    m = read_manifest(tmp_path / "run")
    assert m["process"]["pid"] == os.getpid() and m["process"]["host"] == _process.owner()["host"]
    assert m["status"] == "running" and run_status(tmp_path / "run") == "running"
    summary = track_summary(read_history(tmp_path / "run"), m).set_index("quantity")["value"]
    assert summary["status"] == "running"
    tracker.close()


def _dead_pid() -> int:
    pid = 2**22 + 7  # above Linux's default pid_max; checked anyway
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_run_status_rule_on_forged_process_records() -> None:
    me = _process.owner()
    running = {"status": "running"}
    assert run_status({**running, "process": me}) == "running"
    assert run_status({**running, "process": {**me, "pid": _dead_pid()}}) == "interrupted"
    if me["start_ticks"] is not None:  # Linux: the id now belongs to a process started later
        assert (
            run_status({**running, "process": {**me, "start_ticks": me["start_ticks"] - 1}}) == "interrupted"
        )
    if me["boot_id"] is not None:  # the machine restarted since
        assert run_status({**running, "process": {**me, "boot_id": "another-boot"}}) == "interrupted"
    # what a reader cannot tell stays as written
    assert run_status({**running, "process": {**me, "host": "elsewhere.example"}}) == "running"
    assert run_status({**running, "process": {"pid": "x"}}) == "running"
    assert run_status(running) == "running" and run_status({}) == "unknown"
    assert run_status({"status": "complete", "process": {**me, "pid": _dead_pid()}}) == "complete"
