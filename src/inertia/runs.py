"""Run directories: one new folder per run, an atomic manifest, finalised tables, safe readers.

A run directory holds everything a run produced::

    runs/<kind>-<YYYYmmdd-HHMMSS>/
        manifest.json     configuration, seed, versions, command line, start and end time
        <table>.csv       finalised tables (one per scenario or summary)
        rows.csv          tracked runs: the append-only row log, one CSV line per row, flushed
        history.parquet   tracked runs: the same rows, finalised when the run closes
        <figure>.png      figures drawn from those tables
        report.html       a self-contained report (see :mod:`inertia.report`)

Rules (the contract of this module):

* :func:`create_run` makes a *new* directory: the default name carries the start time, and a
  second run in the same second gets ``-2``, ``-3``, ... . An explicit ``out`` must not exist or
  be an empty directory. An existing run is never overwritten.
* No crash window: the directory is built under a hidden temporary name beside its final one
  (``.<name>.<pid>.<random>.tmp``), with its manifest (and any first files) already in it, and
  then renamed into place in one step. A kill at any moment leaves either no run directory or
  one with a readable manifest; a hidden temporary directory left by a killed process is swept
  by the next :func:`create_run` in the same folder once that process is gone.
* Kinds and file names are plain names (``[A-Za-z0-9._-]``, no ``..``, no separators, not
  absolute), so nothing is written outside the run directory.
* Every write is atomic and never goes through a symbolic link
  (:func:`inertia._files.atomic_write_bytes`): a run killed at any moment leaves either the old
  file or the new one, never half a file.
* Readers (:func:`read_manifest`, :func:`read_table`, :func:`read_history`) open files read-only,
  never modify, move or delete what they read, never follow a symbolic link (a linked file is
  refused with :class:`~inertia._files.SymlinkError`) and never unpickle (JSON, CSV and Parquet
  only). Damage degrades gracefully: an unreadable ``history.parquet`` falls back to
  ``rows.csv``, malformed lines of ``rows.csv`` are skipped with a warning naming them (unless
  ``strict=True``), and a bad manifest raises a ``ValueError`` naming the file and the field.
* The row log ``rows.csv`` (written by :class:`inertia.track.RunLog`) is the one file that grows:
  it is only ever appended to, a line at a time, so a crash leaves every complete line intact
  and at most one torn last line, which :func:`read_history` ignores.

No git, no network: the manifest records versions of the Python packages in use.

Example:
    >>> import tempfile, pandas as pd
    >>> run = create_run("example", root=tempfile.mkdtemp())
    >>> _ = run.write_manifest({"config": {"dt": 0.1}, "seed": 0})
    >>> _ = run.write_table("energies", pd.DataFrame({"t": [0.0, 0.1], "inertia": [1.0, 1.0]}))
    >>> read_manifest(run.path)["seed"], list(read_table(run.path, "energies").columns)
    (0, ['t', 'inertia'])
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inertia._files import (
    SymlinkError,
    _umask,
    atomic_write_bytes,
    fsync_dir,
    read_bytes_nofollow,
    refuse_symlink,
    rename_noreplace,
)

__all__ = [
    "HISTORY",
    "MANIFEST",
    "ROWS",
    "MalformedRowsWarning",
    "RunDir",
    "atomic_write_bytes",
    "check_json",
    "check_name",
    "create_run",
    "read_history",
    "read_manifest",
    "read_rows",
    "read_table",
    "versions",
]

#: File name of the manifest inside a run directory.
MANIFEST = "manifest.json"
#: File name of the append-only row log of a tracked run.
ROWS = "rows.csv"
#: File name of the finalised row table of a tracked run (written when the run closes).
HISTORY = "history.parquet"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(what: str, name: Any) -> str:
    """Return ``name`` if it is a plain file-system name, else raise.

    A plain name is non-empty, made of ``[A-Za-z0-9._-]``, starts with a letter or digit and
    contains no ``..``: no separators, no absolute paths, no traversal.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` could leave the run directory or is empty.
    """
    if not isinstance(name, str):
        raise TypeError(f"`{what}` must be a string, got {type(name).__name__}")
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"`{what}` must be a plain name of letters, digits, '.', '_' and '-' (no '/', no "
            f"'..', not absolute, not empty), got {name!r}"
        )
    return name


def _now() -> _dt.datetime:
    return _dt.datetime.now().astimezone()


def _iso(t: _dt.datetime) -> str:
    return t.isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of Python and of the scientific packages in use (torch only if already imported)."""
    import numpy
    import scipy

    import inertia

    out = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "inertia": inertia.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    for name in ("pandas", "torch", "matplotlib", "sklearn"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "unknown"))
    return out


def check_json(what: str, value: Any) -> None:
    """Raise if ``value`` cannot be written as strict JSON into a manifest, naming where.

    Mappings with string keys, lists and tuples, strings, booleans, ``None``, integers, finite
    floats, NumPy scalars and arrays of those, paths and sets are accepted. A NaN or infinite
    float, a non-string key or any other object raises ``ValueError``/``TypeError`` naming the
    entry (e.g. ``config['clip']``), the rule and the value.
    """
    import numpy as np

    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"`{what}` keys must be strings (manifests are JSON), got key {key!r}")
            check_json(f"{what}[{key!r}]", item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            check_json(f"{what}[{i}]", item)
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"`{what}` must be a JSON value, got an array of dtype {value.dtype}")
        check_json(what, value.tolist())
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(
                f"`{what}` must be a finite number (manifests are strict JSON, without NaN or "
                f"infinity), got {float(value)!r}"
            )
    elif value is None or isinstance(value, (str, bool, int, np.integer, np.bool_, Path)):
        return
    else:
        raise TypeError(
            f"`{what}` must be a JSON value (mapping, list, string, number, boolean or None), "
            f"got {type(value).__name__}: {value!r}"
        )


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"manifest values must be JSON-serialisable, got {type(obj).__name__}: {obj!r}")


@dataclass(frozen=True)
class RunDir:
    """A run directory made by :func:`create_run` (or opened with :meth:`open` for reading).

    Attributes:
        path: the directory.
        kind: what produced the run (``"demo"``, ...).
        started: ISO-8601 start time (local time with offset).
        command: the command line that started the run.
    """

    path: Path
    kind: str
    started: str
    command: tuple[str, ...] = field(default_factory=lambda: tuple(sys.argv))

    def file(self, name: str, suffix: str) -> Path:
        """``path / (name + suffix)`` for a plain ``name`` (checked by :func:`check_name`)."""
        return self.path / f"{check_name('name', name)}{suffix}"

    def figure_path(self, name: str) -> Path:
        """Where figure ``name`` goes: ``<run>/<name>.png``."""
        return self.file(name, ".png")

    def table_path(self, name: str) -> Path:
        """Where table ``name`` goes: ``<run>/<name>.csv``."""
        return self.file(name, ".csv")

    def write_manifest(self, data: Mapping[str, Any], *, finished: bool = False) -> Path:
        """Write ``manifest.json`` atomically (replacing a previous manifest of this run).

        The manifest is ``data`` plus ``kind``, ``started``, ``finished`` (the time of this call
        when ``finished`` is True, else ``None``), ``command`` and :func:`versions`; ``data``
        must not use those keys (``ValueError``).
        """
        reserved = {"kind", "started", "finished", "command", "versions"}
        clash = reserved & set(data)
        if clash:
            raise ValueError(f"`data` must not set the reserved manifest keys {sorted(clash)}")
        check_json("data", dict(data))
        manifest = {
            "kind": self.kind,
            "started": self.started,
            "finished": _iso(_now()) if finished else None,
            "command": list(self.command),
            "versions": versions(),
            **data,
        }
        text = json.dumps(manifest, indent=2, default=_json_default, allow_nan=False)
        return atomic_write_bytes(self.path / MANIFEST, (text + "\n").encode())

    def write_table(self, name: str, table: Any) -> Path:
        """Write a pandas DataFrame as ``<name>.csv`` atomically; tables are written once.

        Raises:
            FileExistsError: the table already exists (finalised tables are never rewritten).
        """
        if not hasattr(table, "to_csv"):
            raise TypeError(f"`table` must be a pandas DataFrame, got {type(table).__name__}")
        data = table.to_csv(index=False).encode()
        return atomic_write_bytes(self.table_path(name), data, overwrite=False)

    def write_text(self, name: str, text: str, *, overwrite: bool = False) -> Path:
        """Write a text file ``<name>`` (a plain name with its suffix, e.g. ``report.html``)."""
        return atomic_write_bytes(self.path / check_name("name", name), text.encode(), overwrite=overwrite)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory, with ``kind`` and ``started`` from its manifest."""
        manifest = read_manifest(path)
        return cls(
            Path(path),
            str(manifest.get("kind", "unknown")),
            str(manifest.get("started", "")),
            tuple(manifest.get("command", ())),
        )


_TMP_DIR = re.compile(r"^\.(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\.(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp$")
#: What a hidden temporary run directory may hold for :func:`_sweep` to remove it.
_SWEEPABLE = {MANIFEST, ROWS}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours
        return True
    return True


def _sweep(folder: Path) -> None:
    """Remove hidden temporary run directories left in ``folder`` by killed processes.

    Only entries named like :func:`create_run`'s temporaries, whose process is gone, that are
    real directories (not links) and hold nothing but a manifest and a row log are removed."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = _TMP_DIR.match(entry.name)
        if not m or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            inside = {e.name for e in os.scandir(entry.path)}
            if inside <= _SWEEPABLE:
                shutil.rmtree(entry.path)
        except OSError:
            continue


def _check_out(path: Path, what: str = "out") -> None:
    refuse_symlink(path, what)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"`{what}` must be a new or empty directory (an existing run is never "
            f"overwritten), got {str(path)!r}, which is a file"
        )
    if path.is_dir() and any(path.iterdir()):
        n = sum(1 for _ in path.iterdir())
        raise ValueError(
            f"`{what}` must be a new or empty directory (an existing run is never "
            f"overwritten), got {str(path)!r}, which holds {n} entries"
        )


def _move_into_place(tmp: Path, path: Path, what: str) -> None:
    """Rename the finished temporary directory to ``path``: onto nothing, or onto an empty
    directory (which the rename replaces atomically); anything else raises ``ValueError``."""
    try:
        rename_noreplace(tmp, path)
        return
    except FileExistsError:
        pass
    _check_out(path, what)  # it exists: it must still be an empty directory (not a link, not a file)
    try:
        os.rename(tmp, path)  # replaces an empty directory in one step; ENOTEMPTY otherwise
    except OSError as exc:
        raise ValueError(
            f"`{what}` must be a new or empty directory (an existing run is never overwritten), "
            f"got {str(path)!r}, which another process filled meanwhile ({exc.strerror})"
        ) from exc


def create_run(
    kind: str,
    out: str | Path | None = None,
    root: str | Path = "runs",
    *,
    manifest: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    what: str = "out",
) -> RunDir:
    """Create a new run directory that appears with its manifest already in it.

    The directory is built under a hidden temporary name in the destination's folder: the
    manifest (``manifest`` plus the keys :meth:`RunDir.write_manifest` adds; by default
    ``{"status": "running"}``) and ``files`` are written into it, and it is then renamed into
    place in one step. So a kill at any moment leaves either no run directory or one whose
    manifest reads.

    Args:
        kind: what the run is (a plain name, e.g. ``"demo"``).
        out: the directory to use. It must not exist or be an empty directory (not a symbolic
            link). ``None`` means ``<root>/<kind>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``, ...
            appended if taken.
        root: the parent of default run directories.
        manifest: the first manifest's entries (JSON-serialisable, checked before anything is
            created).
        files: more first files, ``{plain name: bytes}`` (e.g. the header of a row log).
        what: the name of ``out`` in error messages (the caller's argument name).

    Returns:
        The new :class:`RunDir`.

    Raises:
        ValueError: ``kind`` is not a plain name, ``out`` exists and is not an empty directory,
            or a manifest entry is not finite JSON.
        SymlinkError: ``out`` is a symbolic link.
        TypeError: a manifest entry is not JSON.
    """
    check_name("kind", kind)
    data = {"status": "running"} if manifest is None else dict(manifest)
    check_json("manifest", data)
    names = {check_name("files", n): v for n, v in (files or {}).items()}
    started = _now()
    if out is None:
        parent = Path(root)
        stamp = started.strftime("%Y%m%d-%H%M%S")
        candidates: Any = (
            parent / (f"{kind}-{stamp}" if i == 1 else f"{kind}-{stamp}-{i}") for i in range(1, 10_000)
        )
    else:
        path = Path(out)
        _check_out(path, what)
        parent = path.parent
        candidates = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "root" if out is None else what
        raise ValueError(
            f"`{where}` must be a path whose parent folder exists or can be made, got "
            f"{str(parent if out is None else out)!r} ({exc.strerror}: {exc.filename})"
        ) from exc
    _sweep(parent)
    base = path.name if candidates is None else kind
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{base}.{os.getpid()}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
        RunDir(tmp, kind, _iso(started)).write_manifest(data)
        for name, content in names.items():
            atomic_write_bytes(tmp / name, content, overwrite=False)
        fsync_dir(tmp)
        if candidates is None:
            _move_into_place(tmp, path, what)
        else:
            for path in candidates:
                try:
                    rename_noreplace(tmp, path)  # atomic claim: two runs never share a directory
                    break
                except FileExistsError:
                    continue
            else:
                raise RuntimeError(f"could not find a free run directory name under {parent} for {kind!r}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    return RunDir(path=path, kind=kind, started=_iso(started))


def _manifest_file(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST if p.is_dir() else p


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(i, str) for i in x)


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


#: The manifest fields inertia reads back, and the rule each must follow.
_FIELDS: dict[str, tuple[Any, str]] = {
    "kind": (lambda x: isinstance(x, str), "a string"),
    "started": (lambda x: isinstance(x, str), "a string"),
    "finished": (lambda x: x is None or isinstance(x, str), "a string or null"),
    "command": (_is_str_list, "a list of strings"),
    "versions": (lambda x: isinstance(x, dict), "an object"),
    "config": (lambda x: isinstance(x, dict), "an object"),
    "status": (lambda x: isinstance(x, str), "a string"),
    "error": (lambda x: x is None or isinstance(x, str), "a string or null"),
    "results": (lambda x: x is None or isinstance(x, dict), "an object or null"),
    "skipped": (
        lambda x: isinstance(x, dict) and all(isinstance(v, str) for v in x.values()),
        "an object of section key -> reason (strings)",
    ),
    "columns": (lambda x: x is None or _is_str_list(x), "a list of column names or null"),
    "rows": (lambda x: x is None or x == ROWS, f"{ROWS!r} or null"),
    "history": (lambda x: x is None or x == HISTORY, f"{HISTORY!r} or null"),
    "n_rows": (lambda x: x is None or _is_count(x), "an integer >= 0 or null"),
    "first_nonfinite_step": (lambda x: x is None or _is_count(x), "an integer >= 0 or null"),
    "resumes": (lambda x: isinstance(x, list), "a list"),
}


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` of a run directory (or the manifest file itself); read-only.

    The fields inertia reads back (``kind``, ``status``, ``columns``, ``skipped``, ``n_rows``,
    ...) are checked against their rules, so a damaged manifest fails here, naming the file and
    the field, and not later inside a report.

    Raises:
        FileNotFoundError: there is no manifest (``path`` is not a run directory).
        SymlinkError: the manifest is a symbolic link.
        ValueError: the manifest is not valid JSON, not a JSON object, or a field breaks its
            rule; the message names the file.
    """
    file = _manifest_file(path)
    if not os.path.lexists(file):
        raise FileNotFoundError(
            f"`path` must be a run directory holding {MANIFEST} (or a manifest file), got "
            f"{str(path)!r}, where {str(file)!r} does not exist"
        )
    raw = read_bytes_nofollow(file, "manifest")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{file}: a manifest must be UTF-8 JSON, got undecodable bytes ({exc.reason})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{file}: not a run manifest: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"manifest {file} must hold a JSON object, got {type(data).__name__}")
    for key, (ok, rule) in _FIELDS.items():
        if key in data and not ok(data[key]):
            raise ValueError(f"{file}: manifest field `{key}` must be {rule}, got {data[key]!r}")
    return data


def _regular_file(file: Path, what: str) -> bytes:
    """The bytes of a regular file inside a run directory, refusing a symbolic link."""
    return read_bytes_nofollow(file, what)


def read_table(path: str | Path, name: str) -> Any:
    """Read table ``name`` (``<run>/<name>.csv``) as a pandas DataFrame; read-only, no pickle.

    Raises:
        SymlinkError: the table is a symbolic link (never followed).
        ValueError: the file is not a CSV table (the message names it).
    """
    import io

    import pandas as pd

    file = Path(path) / f"{check_name('name', name)}.csv"
    data = _regular_file(file, "table")
    try:
        return pd.read_csv(io.BytesIO(data))
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        raise ValueError(f"{file}: not a readable CSV table ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# the row log of a tracked run


def _cells_to_column(name: str, cells: list[str]) -> Any:
    """One column of the row log as a NumPy array of the narrowest exact type.

    ``True``/``False`` give ``bool``; integers give ``int64``; anything :func:`float` parses
    (including ``nan``, ``inf``, ``-inf``; an empty cell is NaN) gives ``float64``, parsed by
    Python so that every float written with ``repr`` comes back bit for bit; anything else stays
    text.
    """
    import numpy as np

    if cells and all(c in ("True", "False") for c in cells):
        return np.array([c == "True" for c in cells], dtype=bool)
    try:
        return np.array([int(c) for c in cells], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(c) if c else math.nan for c in cells], dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=object)


def _empty_history(columns: Any) -> Any:
    import numpy as np
    import pandas as pd

    kinds = {"step": np.int64, "finite": bool}
    names = [str(c) for c in columns] if isinstance(columns, list) else []
    return pd.DataFrame({c: np.array([], dtype=kinds.get(c, np.float64)) for c in names})


class MalformedRowsWarning(UserWarning):
    """Lines of a row log that are not rows were skipped (:func:`read_rows`)."""


def _bool_like(cell: str) -> bool:
    return cell in ("True", "False")


def _number_like(cell: str) -> bool:
    if not cell:
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_lines(data: bytes) -> tuple[list[str], list[tuple[int, list[str]]], list[int]]:
    """Header, ``(line number, cells)`` of each complete body line, and the numbers of lines
    that do not parse (undecodable bytes, a NUL, broken quoting)."""
    import csv

    header: list[str] = []
    body: list[tuple[int, list[str]]] = []
    broken: list[int] = []
    for number, raw in enumerate(data.split(b"\n")[:-1], start=1):  # the last piece is torn or empty
        try:
            text = raw.decode("utf-8")
            if "\x00" in text:
                raise ValueError("NUL byte")
            parsed = list(csv.reader([text]))
        except (UnicodeDecodeError, ValueError, csv.Error):
            broken.append(number)
            continue
        cells = parsed[0] if parsed else []
        if number == 1:
            header = cells
        else:
            body.append((number, cells))
    return header, body, broken


def read_rows(path: str | Path, *, strict: bool = False) -> Any:
    """Read the row log ``<run>/rows.csv`` as a pandas DataFrame; read-only, no pickle.

    Only complete lines count: a torn last line (a run killed in the middle of a write, or a
    power cut before the operating system wrote the file out) is left out, so the result is
    always a prefix of the rows the run produced. A missing or empty log gives an empty frame
    with the columns listed in the manifest (``columns``), if there is one.

    Malformed lines (damage, not written by inertia) are skipped, counted and named in a
    :class:`MalformedRowsWarning`: a line that does not decode or parse, has another number of
    cells than the header, or holds text in a column whose other cells are numbers or booleans
    (a column is numeric or boolean when at least half of its cells are). ``strict=True`` raises
    ``ValueError`` instead.

    Column types: ``step`` and other integer columns ``int64``, ``finite`` ``bool``, the rest
    ``float64`` with ``nan``, ``inf`` and ``-inf`` kept as such.

    Raises:
        SymlinkError: ``rows.csv`` is a symbolic link (never followed).
        ValueError: ``strict`` and a line is malformed.
    """
    import pandas as pd

    run = Path(path)
    file = run / ROWS
    try:
        data = _regular_file(file, "rows.csv")
    except FileNotFoundError:
        data = b""
    header, body, bad = _parse_lines(data)
    if not header:
        try:
            columns = read_manifest(run).get("columns")
        except FileNotFoundError:
            columns = None
        if bad:
            _malformed(file, bad, len(bad), strict)
        return _empty_history(columns)
    width = len(header)
    total = len(body) + len(bad)
    bad += [n for n, r in body if len(r) != width]
    body = [(n, r) for n, r in body if len(r) == width]
    for j in range(width):
        cells = [r[j] for _, r in body]
        for like in (_bool_like, _number_like):
            ok = [like(c) for c in cells]
            if 2 * sum(ok) >= len(cells):
                bad += [n for (n, _), good in zip(body, ok, strict=True) if not good]
                break
    if bad:
        _malformed(file, sorted(set(bad)), total, strict)
        skip = set(bad)
        body = [(n, r) for n, r in body if n not in skip]
    if not body:
        return _empty_history(header)
    columns = {name: _cells_to_column(name, [r[j] for _, r in body]) for j, name in enumerate(header)}
    return pd.DataFrame(columns)


def _malformed(file: Path, lines: list[int], total: int, strict: bool) -> None:
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    msg = (
        f"{file}: {len(lines)} of {total} lines are not rows of this log (wrong number of cells, "
        f"undecodable, or text among numbers): line {shown}"
    )
    if strict:
        raise ValueError(msg + " (strict=True)")
    warnings.warn(msg + "; skipped them (strict=True raises instead)", MalformedRowsWarning, stacklevel=3)


def read_history(path: str | Path, *, strict: bool = False) -> Any:
    """The rows of a tracked run as a pandas DataFrame; read-only, no pickle.

    A finished run (its manifest names ``history.parquet``, written when the run closed) is read
    from the Parquet file; a running, killed or crashed one from its row log ``rows.csv`` by
    :func:`read_rows`, which drops a torn last line. A Parquet file that cannot be read
    (truncated, corrupt, missing) falls back to ``rows.csv`` with a warning naming the error.
    Either way nothing in the directory is created, modified or deleted.

    Args:
        path: the run directory.
        strict: raise on a malformed line of ``rows.csv`` or an unreadable Parquet file instead
            of skipping or falling back with a warning.

    Raises:
        FileNotFoundError: ``path`` has no ``manifest.json``.
        SymlinkError: a file read is a symbolic link.
    """
    run = Path(path)
    manifest = read_manifest(run)
    file = run / HISTORY
    if manifest.get("history") == HISTORY:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(_pa_buffer(_regular_file(file, "history.parquet"))).to_pandas()
        except SymlinkError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on damage
            if strict:
                raise ValueError(f"{file}: unreadable ({type(exc).__name__}: {exc}) (strict=True)") from exc
            warnings.warn(
                f"{file}: unreadable ({type(exc).__name__}: {exc}); reading the rows from {ROWS} instead",
                RuntimeWarning,
                stacklevel=2,
            )
    return read_rows(run, strict=strict)


def _pa_buffer(data: bytes) -> Any:
    """``data`` as a pyarrow buffer reader (so Parquet is read from bytes already checked)."""
    import pyarrow as pa

    return pa.BufferReader(data)
