"""No crash window (issue 10, item 3): kill a writer at random moments, read what is left.

A child process (forked by ``tests/_crash_worker.py``, which has already imported inertia,
pandas and pyarrow, so that the kill lands in the writing and not in the imports) creates a
:class:`inertia.track.RunLog`, writes ``N_ROWS`` known rows and closes it; the parent kills it
with ``SIGKILL`` after a random delay drawn from a fixed seed, a third of them in the first
5 ms of ``RunLog(...)``. Every outcome must be one of:

* no run directory at all (killed before the rename that puts it in place), or
* a directory whose manifest reads, whose rows (:func:`read_history`) are a prefix of the rows
  written, and which ``RunLog(..., resume=True)`` continues to the complete run, bit for bit.

The same is done to ``Trajectory.save`` (no file, or a complete one; no temporary file left).
``INERTIA_KILLS`` sets the number of kills of each kind (default 60); the tallies are printed
(``pytest -s``) for the issue's closing note.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import _crash_worker as worker
import inertia
from inertia.track import RunLog, read_history

N_KILLS = int(os.environ.get("INERTIA_KILLS", "60"))


def _reference() -> pd.DataFrame:
    rows = [worker.row(i) for i in range(worker.N_ROWS)]
    return pd.DataFrame({c: [r[c] for r in rows] for c in worker.COLUMNS})


class Launcher:
    """Talks to ``_crash_worker.py`` running in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(worker.__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, kind: str, path: Path, delay: float) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind} {path} {delay!r}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


@pytest.fixture(scope="module")
def launcher() -> Any:
    ln = Launcher()
    yield ln
    ln.close()


def _delays(launcher: Launcher, kind: str, folder: Path, seed: int, n: int) -> list[float]:
    """A third in the first 5 ms, the rest spread over 1.2 times an uninterrupted run's time
    (measured here, so the kills cover the whole run however loaded the machine is)."""
    answer = launcher.run(kind, folder / ("uninterrupted" + (".npz" if kind == "save" else "")), -1)
    assert answer.startswith("finished"), answer
    took = float(answer.split()[1])
    rng = random.Random(seed)
    return [rng.uniform(0.0, 0.005) if k % 3 == 0 else rng.uniform(0.0, 1.2 * took) for k in range(n)]


def test_killed_runlog_leaves_nothing_or_a_resumable_prefix(launcher: Launcher, tmp_path: Path) -> None:
    ref = _reference()
    outcomes: Counter[str] = Counter()
    (tmp_path / "runs").mkdir()
    for k, delay in enumerate(_delays(launcher, "runlog", tmp_path, 10, N_KILLS)):
        path = tmp_path / "runs" / f"run{k}"
        launcher.run("runlog", path, delay)
        if not path.exists():
            outcomes["no directory"] += 1
            continue
        with _no_warning():
            rows = read_history(path)
        n = len(rows)
        pd.testing.assert_frame_equal(rows, ref.iloc[:n].reset_index(drop=True), check_exact=True)
        status = inertia.runs.read_manifest(path)["status"]
        outcomes[f"readable, status {status}" + (", all rows" if n == worker.N_ROWS else ", a prefix")] += 1
        if status == "complete":
            continue
        with RunLog(path, resume=True, columns=worker.COLUMNS) as log:
            for i in range(n, worker.N_ROWS):
                row = worker.row(i)
                log.write({**row, "step": i - n})  # a new tracker numbers from 0; the log offsets
        pd.testing.assert_frame_equal(read_history(path), ref, check_exact=True)
        outcomes["resumed to the full run"] += 1
    leftovers = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("."))
    print(
        f"\ncrash window, RunLog: {N_KILLS} kills -> {dict(outcomes)}; hidden temporaries: {len(leftovers)}"
    )
    assert sum(v for key, v in outcomes.items() if key != "resumed to the full run") == N_KILLS
    assert outcomes["no directory"] < N_KILLS  # the kills did land inside the run


def test_next_create_run_sweeps_temporaries_of_the_killed(launcher: Launcher, tmp_path: Path) -> None:
    rng = random.Random(11)
    for k in range(10):
        launcher.run("runlog", tmp_path / f"run{k}", rng.uniform(0.0, 0.004))
    RunLog(tmp_path / "after", columns=worker.COLUMNS).close()
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden == []


def test_killed_save_leaves_nothing_or_the_complete_file(launcher: Launcher, tmp_path: Path) -> None:
    ref = worker.trajectory()
    outcomes: Counter[str] = Counter()
    (tmp_path / "saves").mkdir()
    for k, delay in enumerate(_delays(launcher, "save", tmp_path, 12, N_KILLS)):
        path = tmp_path / "saves" / f"t{k}.npz"
        launcher.run("save", path, delay)
        if path.exists():
            back = inertia.Trajectory.load(path)
            np.testing.assert_array_equal(back.inertia, ref.inertia)
            outcomes["complete file"] += 1
        else:
            outcomes["no file"] += 1
    leftovers = [p.name for p in (tmp_path / "saves").iterdir() if p.name.endswith(".tmp")]
    print(
        f"\ncrash window, Trajectory.save: {N_KILLS} kills -> {dict(outcomes)}; temporaries: {len(leftovers)}"
    )
    assert sum(outcomes.values()) == N_KILLS
    if hasattr(os, "O_TMPFILE"):
        assert leftovers == []


class _no_warning:
    """Reading a killed run's rows gives no warning: a torn last line is not damage."""

    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
