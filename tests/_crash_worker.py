"""The launcher of ``test_crash_window.py``: one process that imports inertia once, then forks
a child per trial and kills it with ``SIGKILL`` after the delay asked for (so no imports stand
between a child's start and its kill).

Protocol (one line per trial on stdin, one answer per line on stdout):
``<kind> <path> <delay>`` with ``kind`` one of ``runlog``, ``save``; ``delay`` in seconds, or
``-1`` to let the child finish. The answer is ``killed``, or ``finished <seconds>`` where the
child ran to its end (its own measure of the work).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import numpy as np  # noqa: F401  (imported before forking)
import pandas  # noqa: F401
import pyarrow.parquet  # noqa: F401

import inertia
from inertia import potentials
from inertia.track import RunLog

N_ROWS = 300
COLUMNS = ("step", "loss", "finite")


def row(i: int) -> dict[str, Any]:
    """Row ``i`` of the reference run."""
    return {"step": i, "loss": 1.0 / (i + 3) + i * 1e-3, "finite": True}


def trajectory() -> inertia.Trajectory:
    """The trajectory the save children write (about 2.5 MB as ``.npz``)."""
    return inertia.simulate(
        potentials.Quadratic([0.5, 2.0]), [1.0, 1.0], dt=0.01, n_steps=4000, n_paths=8, fast=False
    )


def write_run(path: str) -> None:
    """Create a RunLog at ``path``, write ``N_ROWS`` rows, close it."""
    log = RunLog(path, config={"lr": 0.1}, columns=COLUMNS, fsync_every=32)
    for i in range(N_ROWS):
        log.write(row(i))
    log.close()


def _trial(work: Any, path: str, delay: float) -> str:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: do the work, report how long it took, leave without cleanup
        os.close(r)
        t0 = time.perf_counter()
        work(path)
        os.write(w, repr(time.perf_counter() - t0).encode())
        os._exit(0)
    os.close(w)
    if delay >= 0:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    took = os.read(r, 64).decode()
    os.close(r)
    if os.WIFSIGNALED(status):
        return "killed"
    return f"finished {took}"


def main() -> None:
    traj = trajectory()
    works = {"runlog": write_run, "save": traj.save}
    print("ready", flush=True)
    for line in sys.stdin:
        kind, path, delay = line.split()
        print(_trial(works[kind], path, float(delay)), flush=True)


if __name__ == "__main__":
    main()
