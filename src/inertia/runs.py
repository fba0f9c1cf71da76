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
* Kinds and file names are plain names (``[A-Za-z0-9._-]``, no ``..``, no separators, not
  absolute), so nothing is written outside the run directory.
* Every write is atomic (temporary file in the same directory, then :func:`os.replace`): a run
  killed at any moment leaves either the old file or the new one, never half a file.
* Readers (:func:`read_manifest`, :func:`read_table`, :func:`read_history`) open files read-only,
  never modify, move or delete what they read, and never unpickle (JSON, CSV and Parquet only).
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
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inertia._files import atomic_write_bytes

__all__ = [
    "HISTORY",
    "MANIFEST",
    "ROWS",
    "RunDir",
    "atomic_write_bytes",
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


def _default_out(kind: str, root: Path, started: _dt.datetime) -> Path:
    stamp = started.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    base = f"{kind}-{stamp}"
    for i in range(1, 10_000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()  # exist_ok=False: atomic claim, two runs never share a directory
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not find a free run directory name under {root} for {base!r}")


def create_run(kind: str, out: str | Path | None = None, root: str | Path = "runs") -> RunDir:
    """Create a new run directory.

    Args:
        kind: what the run is (a plain name, e.g. ``"demo"``).
        out: the directory to use. It must not exist or be an empty directory. ``None`` means
            ``<root>/<kind>-<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``, ... appended if taken.
        root: the parent of default run directories.

    Returns:
        The new :class:`RunDir`.

    Raises:
        ValueError: ``kind`` is not a plain name, or ``out`` exists and is not an empty directory.
    """
    check_name("kind", kind)
    started = _now()
    if out is None:
        path = _default_out(kind, Path(root), started)
    else:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"`out` must be a new or empty directory (an existing run is never "
                f"overwritten), got {str(path)!r}, which is a file"
            )
        if path.is_dir() and any(path.iterdir()):
            n = sum(1 for _ in path.iterdir())
            raise ValueError(
                f"`out` must be a new or empty directory (an existing run is never "
                f"overwritten), got {str(path)!r}, which holds {n} entries"
            )
        path.mkdir(parents=True, exist_ok=True)
    return RunDir(path=path, kind=kind, started=_iso(started))


def _manifest_file(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST if p.is_dir() else p


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` of a run directory (or the manifest file itself); read-only.

    Raises:
        FileNotFoundError: there is no manifest.
        ValueError: the manifest is not a JSON object.
    """
    file = _manifest_file(path)
    with open(file, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"manifest {file} must hold a JSON object, got {type(data).__name__}")
    return data


def read_table(path: str | Path, name: str) -> Any:
    """Read table ``name`` (``<run>/<name>.csv``) as a pandas DataFrame; read-only, no pickle."""
    import pandas as pd

    file = Path(path) / f"{check_name('name', name)}.csv"
    with open(file, encoding="utf-8") as f:
        return pd.read_csv(f)


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


def read_rows(path: str | Path) -> Any:
    """Read the row log ``<run>/rows.csv`` as a pandas DataFrame; read-only, no pickle.

    Only complete lines count: a torn last line (a run killed in the middle of a write, or a
    power cut before the operating system wrote the file out) is left out, so the result is
    always a prefix of the rows the run produced. A missing or empty log gives an empty frame
    with the columns listed in the manifest (``columns``), if there is one.

    Column types: ``step`` and other integer columns ``int64``, ``finite`` ``bool``, the rest
    ``float64`` with ``nan``, ``inf`` and ``-inf`` kept as such.
    """
    import csv
    import io

    import pandas as pd

    run = Path(path)
    file = run / ROWS
    try:
        with open(file, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    end = data.rfind(b"\n")
    lines = list(csv.reader(io.StringIO(data[: end + 1].decode("utf-8"), newline="")))
    if not lines:
        try:
            columns = read_manifest(run).get("columns")
        except FileNotFoundError:
            columns = None
        return _empty_history(columns)
    header, body = lines[0], lines[1:]
    if not body:
        return _empty_history(header)
    width = len(header)
    bad = [i + 2 for i, r in enumerate(body) if len(r) != width]
    if bad:
        raise ValueError(
            f"{file}: every row must have the {width} cells of the header, "
            f"lines {bad[:5]} do not (not a row log written by inertia?)"
        )
    columns = {name: _cells_to_column(name, [r[j] for r in body]) for j, name in enumerate(header)}
    return pd.DataFrame(columns)


def read_history(path: str | Path) -> Any:
    """The rows of a tracked run as a pandas DataFrame; read-only, no pickle.

    A finished run (its manifest names ``history.parquet``, written when the run closed) is read
    from the Parquet file; a running, killed or crashed one from its row log ``rows.csv`` by
    :func:`read_rows`, which drops a torn last line. Either way nothing in the directory is
    created, modified or deleted.

    Raises:
        FileNotFoundError: ``path`` has no ``manifest.json``.
    """
    run = Path(path)
    manifest = read_manifest(run)
    file = run / HISTORY
    if manifest.get("history") == HISTORY and file.is_file():
        import pyarrow.parquet as pq

        with open(file, "rb") as f:
            return pq.read_table(f).to_pandas()
    return read_rows(run)
