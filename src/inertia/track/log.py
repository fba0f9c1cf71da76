"""Where the tracker's rows go: a crash-safe run directory (:class:`RunLog`) and TensorBoard.

Both are *sinks* of :class:`inertia.track.InertiaTracker`: objects with ``write(row)`` and
``close()``, called on rank 0 only, once per recorded row and once at the end.

A :class:`RunLog` run directory (kind ``"track"``, see :mod:`inertia.runs`)::

    manifest.json     kind "track", config, versions, command line, columns, status, start and
                      end time, n_rows, first_nonfinite_step, the writing process, what the
                      tracker tracks (optimizer, parameter dtypes, every); written
                      atomically, at the start, at the first non-finite row and at the end
    rows.csv          the append-only row log: a header, then one CSV line per row, each written
                      with a single unbuffered write as it comes (so a killed process loses
                      nothing it recorded) and fsynced every ``fsync_every`` rows and at close
    history.parquet   the same rows, written atomically by :meth:`RunLog.close`

Numbers are written with ``repr``, so they read back bit for bit, and NaN and infinities are
written as ``nan``, ``inf`` and ``-inf``: a non-finite loss or optimizer state is never hidden or
written as 0. :func:`read_history` returns the rows of a finished run from the Parquet file and
of a running or killed one from ``rows.csv``, leaving out a torn last line, so a crash at any
moment leaves a readable directory whose rows are a prefix of the uninterrupted run.

Example:
    >>> import tempfile, torch
    >>> from inertia.track import InertiaTracker, RunLog, read_history
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> out = tempfile.mkdtemp() + "/run"
    >>> tracker = InertiaTracker(opt, sinks=[RunLog(out, config={"lr": 0.1})])
    >>> for _ in range(3):
    ...     opt.zero_grad(); loss = 0.5 * (w * w).sum(); loss.backward(); opt.step()
    ...     _ = tracker.record(loss)
    >>> tracker.close()                      # finalises history.parquet
    >>> read_history(out).equals(tracker.history)
    True
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inertia._files import atomic_write_bytes, open_nofollow, refuse_symlink
from inertia._process import owner, run_status
from inertia.runs import (
    HISTORY,
    MANIFEST,
    ROWS,
    RunDir,
    _iso,
    _now,
    check_json,
    create_run,
    read_history,
    read_manifest,
    read_rows,
)
from inertia.track.tracker import COLUMNS

__all__ = ["KIND", "STATUSES", "RunLog", "TensorBoardSink", "read_history", "row_scalars", "run_status"]

log = logging.getLogger(__name__)

#: The manifest kind of a tracked run (``inertia report`` dispatches on it).
KIND = "track"
#: The values of the manifest's ``status``: ``running`` until the log closes, then ``complete``,
#: ``stopped`` (``nan_policy="stop"``), ``failed`` (with ``error``) or ``diverging`` (the
#: tracker's divergence rule fired; ``diverging_step`` says where). A reader reports a run whose
#: writer died while ``running`` as ``interrupted`` (:func:`run_status`); that is never written.
STATUSES = ("running", "complete", "stopped", "failed", "diverging")

_RUNDIR_KEYS = frozenset({"kind", "started", "finished", "command", "versions"})  # write_manifest's
_RESERVED = _RUNDIR_KEYS | {
    "columns",
    "rows",
    "history",
    "n_rows",
    "fsync_every",
    "first_nonfinite_step",
    "resumes",
    "process",
    "tracked",
    "diverging_step",
}


def _cell(name: str, value: Any) -> str:
    """One CSV cell: exact ``repr`` for floats (``nan``, ``inf``, ``-inf`` included)."""
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # NumPy scalars, 0-d arrays and one-element tensors
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise ValueError(f"row value `{name}` must not contain a line break, got {value!r}")
        return value
    raise TypeError(
        f"row value `{name}` must be a number, a boolean, a string or None, got {type(value).__name__}"
    )


def _line(cells: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue().encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class RunLog:
    """A tracker sink that writes a crash-safe run directory (manifest, row log, Parquet).

    Durability. Every row is written to ``rows.csv`` with one unbuffered ``os.write`` as soon as
    it is recorded, so once :meth:`write` returns the row belongs to the operating system and
    survives the process being killed (``SIGKILL``, out-of-memory, an exception). ``os.fsync``
    runs every ``fsync_every`` rows (default 64) and at :meth:`close`: it only adds protection
    against a power cut or a kernel crash, and costs from a fraction of a millisecond to tens of
    milliseconds per call depending on the disk, which every row would pay (training steps of a
    small model take about a millisecond). So a power cut loses at most the last
    ``fsync_every`` rows; nothing else does. ``fsync_every=1`` fsyncs every row.

    Resuming. ``resume=True`` opens an existing run directory (after a crash, or a finished run
    to be continued) and appends to its ``rows.csv``; without it the directory must be new or
    empty (``ValueError``, nothing touched). A torn last line left by a crash is cut off first
    (it is not a row; :func:`read_history` never counted it). Row continuity: a new tracker
    numbers its rows from 0, and its first row has no ledger (and ``kinetic`` NaN unless the
    optimizer is fresh), which marks the seam; the log adds ``step_offset`` to every ``step``,
    by default one more than the last logged step, which is right when the optimizer and model
    were saved at the last logged row with ``every=1``. Otherwise pass the number of optimizer
    steps taken before the resumed run; if that is earlier than the last logged row, those steps
    appear twice, in file order, and ``df.drop_duplicates("step", keep="last")`` keeps the
    resumed ones. The manifest lists each resume (time, rows before, offset, config) under
    ``resumes``.

    Under ``torch.distributed`` create the log on rank 0 only (the tracker writes rows there
    only, but creating a ``RunLog`` makes the directory).

    Args:
        run: a run directory (:class:`~inertia.runs.RunDir`) or a path; a path must be new or
            empty unless ``resume``.
        config: JSON-serialisable configuration stored in the manifest under ``config``.
        resume: append to the existing run at ``run``.
        columns: the row columns, in file order (default :data:`inertia.track.COLUMNS`); a row
            may leave some out (written as NaN) but may not add others (``ValueError``).
        fsync_every: fsync the row log every this many rows (an integer >= 1).
        step_offset: added to each row's ``step`` (default 0, or the next step when resuming).

    Raises:
        ValueError: bad arguments, a non-empty directory without ``resume``, or ``resume`` on a
            directory whose row log has other columns.
        FileNotFoundError: ``resume`` on a directory with no ``manifest.json``.
    """

    def __init__(
        self,
        run: RunDir | str | Path,
        config: Mapping[str, Any] | None = None,
        *,
        resume: bool = False,
        columns: Sequence[str] = COLUMNS,
        fsync_every: int = 64,
        step_offset: int | None = None,
    ) -> None:
        if isinstance(fsync_every, bool) or not isinstance(fsync_every, int) or fsync_every < 1:
            raise ValueError(f"`fsync_every` must be an integer >= 1, got {fsync_every!r}")
        if step_offset is not None and (
            isinstance(step_offset, bool) or not isinstance(step_offset, int) or step_offset < 0
        ):
            raise ValueError(f"`step_offset` must be None or an integer >= 0, got {step_offset!r}")
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise TypeError(f"`config` must be a mapping, got {type(config).__name__}")
        cols = list(columns)
        if not cols or not all(isinstance(c, str) and c for c in cols) or len(set(cols)) != len(cols):
            raise ValueError(f"`columns` must be distinct non-empty names, got {cols!r}")
        if not isinstance(run, (RunDir, str, Path)):
            raise TypeError(f"`run` must be a RunDir or a path, got {type(run).__name__}")
        check_json("config", dict(config))  # before anything is created
        self.columns: tuple[str, ...] = tuple(cols)
        self.fsync_every = fsync_every
        self._index = frozenset(cols)
        self._closed = False
        self._since_fsync = 0
        header = _line(self.columns)
        if resume:
            self.run = RunDir.open(run.path if isinstance(run, RunDir) else run)
            fd, existing = self._prepare_resume()
            rows_before = len(existing)
            last = int(existing["step"].iloc[-1]) if rows_before and "step" in existing else -1
            self.step_offset = last + 1 if step_offset is None else step_offset
            bad = existing.index[~existing["finite"]] if "finite" in existing else []
            first_bad = int(existing["step"].iloc[bad[0]]) if len(bad) and "step" in existing else None
            manifest = read_manifest(self.run.path)
            self._data: dict[str, Any] = {k: v for k, v in manifest.items() if k not in _RUNDIR_KEYS}
            resumes = list(manifest.get("resumes") or [])
            resumes.append(
                {
                    "at": _iso(_now()),
                    "rows_before": rows_before,
                    "step_offset": self.step_offset,
                    "config": dict(config),
                }
            )
            self._data.update(
                process=owner(),  # who writes, so that a reader can tell a dead run
                status="running",
                columns=list(cols),
                rows=ROWS,
                history=None,
                n_rows=None,
                fsync_every=fsync_every,
                first_nonfinite_step=first_bad,
                resumes=resumes,
            )
            self._data.pop("error", None)
            self.n_rows = rows_before
            try:
                self.run.write_manifest(self._data)
            except BaseException:
                os.close(fd)
                raise
            self._fd: int = fd
        else:
            self.step_offset = 0 if step_offset is None else step_offset
            self._data = {
                "config": dict(config),
                "status": "running",
                "columns": list(cols),
                "rows": ROWS,
                "history": None,
                "n_rows": None,
                "fsync_every": fsync_every,
                "first_nonfinite_step": None,
                "diverging_step": None,
                "resumes": [],
                "process": owner(),  # who writes, so that a reader can tell a dead run
            }
            self.n_rows = 0
            if isinstance(run, RunDir):  # made by create_run: its manifest is not a log's yet
                self.run = run
                refuse_symlink(run.path / ROWS, "rows.csv")
                taken = [n for n in (ROWS, HISTORY) if os.path.lexists(run.path / n)]
                if taken or "rows" in read_manifest(run.path):
                    raise ValueError(
                        f"`run` must not hold a run log already (found {taken or [MANIFEST]} in "
                        f"{str(run.path)!r}); pass resume=True to append to it"
                    )
                self.run.write_manifest(self._data)  # atomic, before the first row
                atomic_write_bytes(run.path / ROWS, header, overwrite=False, what="rows.csv")
            else:  # the directory appears with its manifest and the header in it
                self.run = create_run(KIND, run, manifest=self._data, files={ROWS: header}, what="run")
            self._fd = open_nofollow(self.run.path / ROWS, os.O_WRONLY | os.O_APPEND, "rows.csv")
        log.info("RunLog: writing %s", self.run.path)

    # ------------------------------------------------------------------ resume

    def _prepare_resume(self) -> tuple[int, Any]:
        """Open the existing log for appending (never through a link), check its header, cut a
        torn last line; return the descriptor and the rows there. A missing log is created
        with its header."""
        file = self.run.path / ROWS
        header = _line(self.columns)
        if not os.path.lexists(file):
            atomic_write_bytes(file, header, overwrite=False, what="rows.csv")
        fd = open_nofollow(file, os.O_RDWR | os.O_APPEND, "rows.csv")
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)
            end = data.rfind(b"\n")
            if end >= 0:
                first = data[: end + 1].split(b"\n", 1)[0].decode("utf-8", errors="replace")
                found = next(csv.reader([first]), [])
                if found != list(self.columns):
                    raise ValueError(
                        f"`columns` must match the row log being resumed: {str(file)!r} has "
                        f"{found}, got {list(self.columns)}"
                    )
            if len(data) != end + 1:
                log.warning("RunLog: cutting a torn last line of %d bytes from %s", len(data) - end - 1, file)
                os.ftruncate(fd, end + 1)
            if end < 0:
                _write_all(fd, header)
            return fd, read_rows(self.run.path)
        except BaseException:
            os.close(fd)
            raise

    # ------------------------------------------------------------------ the sink protocol

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.run.path

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def first_nonfinite_step(self) -> int | None:
        """The ``step`` of the first row with ``finite == False`` (``None`` if there is none)."""
        value = self._data.get("first_nonfinite_step")
        return None if value is None else int(value)

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of what this log writes to the manifest (without the keys ``RunDir`` adds)."""
        return dict(self._data)

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (a mapping of column -> value) to ``rows.csv``.

        Missing columns are written as NaN; ``step`` is shifted by ``step_offset``.

        Raises:
            ValueError: ``row`` has a column that is not in :attr:`columns`.
            RuntimeError: the log is closed.
        """
        if self._closed:
            raise RuntimeError(f"RunLog for {str(self.run.path)!r} is closed: no more rows can be written")
        unknown = [k for k in row if k not in self._index]
        if unknown:
            raise ValueError(f"`row` has columns {unknown} that the log does not have ({list(self.columns)})")
        values = {c: row.get(c, math.nan) for c in self.columns}
        if "step" in values and self.step_offset:
            values["step"] = int(values["step"]) + self.step_offset
        _write_all(self._fd, _line([_cell(c, values[c]) for c in self.columns]))
        self.n_rows += 1
        self._since_fsync += 1
        if self._since_fsync >= self.fsync_every:
            os.fsync(self._fd)
            self._since_fsync = 0
        finite = values.get("finite", True)
        if finite is not None and not bool(finite) and self._data["first_nonfinite_step"] is None:
            step = values.get("step")
            self._data["first_nonfinite_step"] = self.n_rows - 1 if step is None else int(step)
            self.run.write_manifest(self._data)  # say so at once, in case the run dies next

    def annotate(self, **fields: Any) -> None:
        """Add or replace manifest entries (``status``, ``error``, ``results``, ...) atomically.

        ``status`` must be one of :data:`STATUSES`. The keys the log maintains itself (``columns``,
        ``rows``, ``history``, ``n_rows``, ...) and those of :meth:`RunDir.write_manifest` are
        refused (``ValueError``).
        """
        clash = sorted(_RESERVED & set(fields))
        if clash:
            raise ValueError(f"`annotate` must not set the manifest keys {clash}: the log maintains them")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"`status` must be one of {STATUSES}, got {fields['status']!r}")
        self._data.update(fields)
        self.run.write_manifest(self._data, finished=self._closed)

    def describe(self, info: Mapping[str, Any]) -> None:
        """What the tracker tracks (optimizer, parameter dtypes, ``n_params``, mode, ``every``,
        ...), stored in the manifest under ``tracked`` and written at once; called by
        :class:`~inertia.track.InertiaTracker` when it is created."""
        self._data["tracked"] = dict(info)
        self.run.write_manifest(self._data)

    def diverging(self, step: int) -> None:
        """The tracker flagged row ``step`` as diverging: ``diverging_step`` (shifted by
        ``step_offset``) is written to the manifest at once, in case the run dies next."""
        if self._data.get("diverging_step") is None:
            self._data["diverging_step"] = int(step) + self.step_offset
            self.run.write_manifest(self._data)

    def finish(self, status: str, error: str | None = None) -> None:
        """The tracker's verdict on how the run ended, called by
        :meth:`InertiaTracker.close` just before :meth:`close`.

        Sets ``status`` (and ``error``) unless :meth:`annotate` already set a status other than
        ``"running"`` (the caller's word wins). Nothing is written until :meth:`close`.
        """
        if status not in STATUSES:
            raise ValueError(f"`status` must be one of {STATUSES}, got {status!r}")
        if self._closed or self._data.get("status") != "running":
            return
        self._data["status"] = status
        if error:
            self._data["error"] = error

    def close(self) -> None:
        """Fsync and close the row log, write ``history.parquet`` atomically, finish the manifest.

        The status becomes ``"complete"`` unless :meth:`annotate` set another one. Calling it
        again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = read_rows(self.run.path)
        buf = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf)
        atomic_write_bytes(self.run.path / HISTORY, buf.getvalue().to_pybytes())
        if self._data.get("status") == "running":
            self._data["status"] = "complete"
        self._data.update(history=HISTORY, n_rows=len(table))
        self.run.write_manifest(self._data, finished=True)
        log.info("RunLog: %d rows finalised in %s", len(table), self.run.path / HISTORY)

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and not self._closed:
            self._data.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RunLog({str(self.run.path)!r}, {self.n_rows} rows, {state})"


def row_scalars(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """A row as ``{prefix + column: float}`` for a metrics logger, ``step`` left out.

    ``finite`` becomes 1.0 or 0.0. In a row with ``finite == False`` every value is kept as it
    is, NaN and infinities included, so the blow-up shows; in a finite row a NaN means "not
    defined here" (row 0 has no ledger; ``noise`` is NaN in cheap mode) and is left out.

    Example:
        >>> row_scalars({"step": 3, "inertia": 1.5, "noise": float("nan"), "finite": True}, "i/")
        {'i/inertia': 1.5, 'i/finite': 1.0}
    """
    finite = bool(row.get("finite", True))
    out = {}
    for name, value in row.items():
        if name == "step":
            continue
        x = float(value.item() if hasattr(value, "item") else value)
        if math.isnan(x) and finite:
            continue
        out[f"{prefix}{name}"] = x
    return out


class TensorBoardSink:
    """A tracker sink that sends each row to a TensorBoard-style writer as scalars.

    ``writer`` is any object with ``add_scalar(tag, value, global_step)``, e.g.
    ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package, which inertia
    does not depend on). Each column except ``step`` becomes the scalar ``<prefix><column>`` at
    ``global_step = step``, converted by :func:`row_scalars` (``finite`` as 1.0 or 0.0; a NaN
    is sent only in a non-finite row, where it shows the blow-up).

    Args:
        writer: the writer.
        prefix: prepended to every tag.
        close_writer: also close the writer in :meth:`close` (default: only flush it).

    Example:
        >>> class Printer:
        ...     def add_scalar(self, tag, value, step): print(tag, value, step)
        >>> TensorBoardSink(Printer()).write({"step": 3, "inertia": 1.5, "noise": float("nan")})
        inertia/inertia 1.5 3
    """

    def __init__(self, writer: Any, *, prefix: str = "inertia/", close_writer: bool = False) -> None:
        if not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(
                f"`writer` must have an add_scalar(tag, value, global_step) method "
                f"(e.g. torch.utils.tensorboard.SummaryWriter), got {type(writer).__name__}"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"`prefix` must be a string, got {type(prefix).__name__}")
        self.writer = writer
        self.prefix = prefix
        self.close_writer = close_writer

    def write(self, row: Mapping[str, Any]) -> None:
        """Send the row's values as scalars at ``global_step = row["step"]``."""
        step = int(row["step"])
        for tag, x in row_scalars(row, self.prefix).items():
            self.writer.add_scalar(tag, x, step)

    def close(self) -> None:
        """Flush the writer (and close it with ``close_writer=True``)."""
        flush = getattr(self.writer, "flush", None)
        if callable(flush):
            flush()
        close = getattr(self.writer, "close", None)
        if self.close_writer and callable(close):
            close()
