"""Which process writes a run directory, and whether it is still alive.

A writer records :func:`owner` in its manifest (``"process"``); a reader calls
:func:`run_status` on the manifest: a run whose status is still ``"running"`` but whose writer
is gone (killed, out of memory, the machine rebooted) is reported as ``"interrupted"``, never as
``"running"`` forever. Nothing is locked and nothing is written by a reader.

The writer is identified by host name, process id, the boot of the machine and, on Linux, the
process's start time (``/proc/<pid>/stat`` field 22, in clock ticks since boot), so a process id
reused by a later process is not mistaken for the writer. On another host the reader cannot
tell and keeps ``"running"``; where ``/proc`` is missing (macOS, Windows) only the process id is
checked.

Example:
    >>> manifest = {"status": "running", "process": owner()}
    >>> run_status(manifest)                 # this very process: alive
    'running'
    >>> run_status({**manifest, "process": {**owner(), "pid": 2**22 + 1}})
    'interrupted'
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["alive", "owner", "run_status"]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _boot_id() -> str | None:
    text = _read("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def _start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else ``None``."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def owner() -> dict[str, Any]:
    """This process: ``{"host", "pid", "boot_id", "start_ticks"}`` (the last two ``None`` off Linux)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot_id": _boot_id(), "start_ticks": _start_ticks(pid)}


def alive(process: Mapping[str, Any]) -> bool | None:
    """Whether the process described by ``process`` (an :func:`owner` record) still runs.

    ``None`` when it cannot be told (another host, or a malformed record); ``False`` when the
    machine has rebooted since, no process has that id, or the process with that id started at
    another time (the id was reused).
    """
    pid = process.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if process.get("host") != socket.gethostname():
        return None
    boot = process.get("boot_id")
    if boot is not None and _boot_id() is not None and boot != _boot_id():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:
        return None
    ticks = process.get("start_ticks")
    now = _start_ticks(pid)
    if ticks is not None and now is not None and ticks != now:
        return False
    return True


def run_status(run: Mapping[str, Any] | str | Path) -> str:
    """The status of a run as a reader should report it.

    ``run`` is a manifest (a mapping) or a run directory (its ``manifest.json`` is read). The
    manifest's ``status``, except that ``"running"`` becomes ``"interrupted"`` when the writing
    process recorded under ``"process"`` is known to be gone (:func:`alive` is ``False``). A
    manifest without a status gives ``"unknown"``.
    """
    if isinstance(run, Mapping):
        manifest = run
    else:
        from inertia.runs import read_manifest

        manifest = read_manifest(run)
    status = str(manifest.get("status", "unknown"))
    process = manifest.get("process")
    if status == "running" and isinstance(process, Mapping) and alive(process) is False:
        return "interrupted"
    return status
