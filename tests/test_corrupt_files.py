"""Corrupt files degrade gracefully (issue 10, item 5), and readers and the report never follow a
link (item 4): an unreadable ``history.parquet`` falls back to ``rows.csv`` with a warning;
malformed lines of ``rows.csv`` are skipped and named (``strict=True`` raises); a resumed log
and the report refuse planted symbolic links and leave their targets untouched."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
import pytest

from inertia._files import SymlinkError
from inertia.report import render_track
from inertia.runs import MalformedRowsWarning, read_history, read_rows
from inertia.track import RunLog

COLUMNS = ("step", "loss", "finite")
VICTIM = b"secret,contents\n1,2\n"


def _run(path: Path, n: int = 5, close: bool = True) -> pd.DataFrame:
    log = RunLog(path, columns=COLUMNS)
    for i in range(n):
        log.write({"step": i, "loss": 0.5 / (i + 1), "finite": True})
    if close:
        log.close()
    return pd.DataFrame(
        {"step": list(range(n)), "loss": [0.5 / (i + 1) for i in range(n)], "finite": [True] * n}
    )


@pytest.mark.parametrize("damage", [b"", b"PAR1garbage", b"not parquet at all"])
def test_unreadable_parquet_falls_back_to_rows(tmp_path: Path, damage: bytes) -> None:
    want = _run(tmp_path / "r")
    (tmp_path / "r" / "history.parquet").write_bytes(damage)
    with pytest.warns(
        RuntimeWarning, match=r"history\.parquet: unreadable .*reading the rows from rows\.csv"
    ):
        got = read_history(tmp_path / "r")
    pd.testing.assert_frame_equal(got, want)
    with pytest.raises(ValueError, match=r"history\.parquet: unreadable .*strict=True"):
        read_history(tmp_path / "r", strict=True)


def test_missing_parquet_falls_back_to_rows(tmp_path: Path) -> None:
    want = _run(tmp_path / "r")
    (tmp_path / "r" / "history.parquet").unlink()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        pd.testing.assert_frame_equal(read_history(tmp_path / "r"), want)


@pytest.mark.parametrize(
    ("garbage", "kind"),
    [
        (b"this is not a row\n", "wrong width"),
        (b"x,y,z\n", "text among numbers"),
        (b"3,\xff\xfe,True\n", "undecodable"),
        (b"3,0.1,True,extra\n", "wrong width"),
        (b"\x00\x00\x00\n", "NUL bytes"),
    ],
)
def test_malformed_lines_are_skipped_and_named(tmp_path: Path, garbage: bytes, kind: str) -> None:
    want = _run(tmp_path / "r", n=6, close=False)
    rows = tmp_path / "r" / "rows.csv"
    lines = rows.read_bytes().split(b"\n")
    lines.insert(3, garbage.rstrip(b"\n"))  # after the header and two rows: line 4
    rows.write_bytes(b"\n".join(lines))
    with pytest.warns(MalformedRowsWarning, match=r"1 of 7 lines are not rows.*line 4; skipped"):
        got = read_rows(tmp_path / "r")
    pd.testing.assert_frame_equal(got, want)
    with pytest.warns(MalformedRowsWarning):
        pd.testing.assert_frame_equal(read_history(tmp_path / "r"), want)
    with pytest.raises(ValueError, match=r"line 4 \(strict=True\)"):
        read_rows(tmp_path / "r", strict=True)


def test_a_torn_last_line_is_not_damage(tmp_path: Path) -> None:
    want = _run(tmp_path / "r", n=4, close=False)
    with open(tmp_path / "r" / "rows.csv", "ab") as f:
        f.write(b"4,0.1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pd.testing.assert_frame_equal(read_history(tmp_path / "r"), want)


def test_resume_refuses_a_symlinked_row_log(tmp_path: Path) -> None:
    _run(tmp_path / "r", close=False)
    victim = tmp_path / "victim.csv"
    victim.write_bytes(VICTIM)
    rows = tmp_path / "r" / "rows.csv"
    rows.unlink()
    os.symlink(victim, rows)
    with pytest.raises(SymlinkError, match=r"`rows\.csv` must not be a symbolic link"):
        RunLog(tmp_path / "r", resume=True, columns=COLUMNS)
    with pytest.raises(SymlinkError):
        read_history(tmp_path / "r")
    assert victim.read_bytes() == VICTIM


def test_readers_refuse_a_symlinked_manifest(tmp_path: Path) -> None:
    _run(tmp_path / "r")
    real = tmp_path / "r" / "manifest.json"
    os.rename(real, tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", real)
    with pytest.raises(SymlinkError, match="`manifest` must not be a symbolic link"):
        read_history(tmp_path / "r")


def test_report_does_not_embed_or_write_through_links(tmp_path: Path) -> None:
    with RunLog(tmp_path / "r") as log:
        for i in range(20):
            k, v = 1.0 / (i + 1), 2.0 / (i + 1)
            log.write({"step": i, "kinetic": k, "potential": v, "inertia": k + v, "finite": True})
    victim = tmp_path / "victim.csv"
    victim.write_bytes(VICTIM)
    os.symlink(victim, tmp_path / "r" / "metrics.csv")
    report = render_track(tmp_path / "r")
    text = report.read_text()
    assert "secret" not in text and victim.read_bytes() == VICTIM
    # a link planted where the report writes a figure is refused, its target untouched
    (tmp_path / "r" / "energies.png").unlink()
    os.symlink(victim, tmp_path / "r" / "energies.png")
    with pytest.raises(SymlinkError, match="must not be a symbolic link"):
        render_track(tmp_path / "r")
    assert victim.read_bytes() == VICTIM
