"""Run directories: a new directory per run, never overwrite, safe names, atomic manifest,
readers that never modify what they read and never unpickle."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inertia import runs
from inertia.runs import RunDir, create_run, read_manifest, read_table

FIXED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _snapshot(path: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``path`` with its bytes, mtime and mode."""
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(path))] = (p.read_bytes() if p.is_file() else b"", st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "_now", lambda: FIXED)


def test_default_location_is_kind_and_start_time(tmp_path: Path, frozen_clock: None) -> None:
    run = create_run("demo", root=tmp_path / "runs")
    assert run.path == tmp_path / "runs" / "demo-20260102-030405"
    # the directory appears with its manifest already in it (no crash window), nothing else
    assert run.path.is_dir() and sorted(p.name for p in run.path.iterdir()) == ["manifest.json"]
    assert read_manifest(run.path)["status"] == "running"
    assert run.kind == "demo"
    assert run.started.startswith("2026-01-02T03:04:05")


def test_same_second_gets_a_new_directory_each_time(tmp_path: Path, frozen_clock: None) -> None:
    first = create_run("demo", root=tmp_path)
    (first.path / "data.csv").write_text("x\n1\n")
    second = create_run("demo", root=tmp_path)
    third = create_run("demo", root=tmp_path)
    assert [p.name for p in (first.path, second.path, third.path)] == [
        "demo-20260102-030405",
        "demo-20260102-030405-2",
        "demo-20260102-030405-3",
    ]
    assert (first.path / "data.csv").read_text() == "x\n1\n"  # the earlier run is untouched


def test_running_twice_without_a_clock_still_gives_two_runs(tmp_path: Path) -> None:
    a, b = create_run("demo", root=tmp_path), create_run("demo", root=tmp_path)
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()


def test_out_may_be_new_or_empty(tmp_path: Path) -> None:
    new = create_run("demo", tmp_path / "a" / "b")
    assert new.path.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_run("demo", str(empty)).path == empty


def test_non_empty_out_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"`out` must be a new or empty directory.*used.*1 entr"):
        create_run("demo", out)
    assert _snapshot(out) == before


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"`out` must be a new or empty directory.*a file"):
        create_run("demo", f)


@pytest.mark.parametrize(
    "kind", ["..", "../x", "a/b", "/abs", "", "a/../b", "a\\b", ".hidden", "x..y", "a b", "demo\x00"]
)
def test_kind_with_path_traversal_is_refused(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValueError, match="`kind` must be a plain name"):
        create_run(kind, root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_kind_must_be_a_string(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="`kind` must be a string"):
        create_run(Path("demo"), root=tmp_path)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/b", ".."])
def test_file_names_cannot_leave_the_run_directory(tmp_path: Path, name: str) -> None:
    run = create_run("demo", root=tmp_path)
    df = pd.DataFrame({"x": [1]})
    with pytest.raises(ValueError, match="must be a plain name"):
        run.write_table(name, df)
    with pytest.raises(ValueError, match="must be a plain name"):
        run.figure_path(name)
    with pytest.raises(ValueError, match="must be a plain name"):
        run.write_text(name, "x")
    with pytest.raises(ValueError, match="must be a plain name"):
        read_table(run.path, name)
    assert [p.name for p in run.path.iterdir()] == ["manifest.json"]


def test_manifest_contents(tmp_path: Path) -> None:
    run = create_run("demo", root=tmp_path)
    run.write_manifest(
        {
            "config": {"dt": np.float64(0.1), "eigs": np.array([1.0, 2.0]), "out": tmp_path},
            "seed": np.int64(7),
        }
    )
    m = read_manifest(run.path)
    assert m["kind"] == "demo" and m["seed"] == 7 and m["finished"] is None
    assert m["started"] == run.started
    assert m["config"] == {"dt": 0.1, "eigs": [1.0, 2.0], "out": str(tmp_path)}
    assert m["command"] == list(run.command)
    for pkg in ("python", "numpy", "scipy", "inertia"):
        assert isinstance(m["versions"][pkg], str) and m["versions"][pkg]
    assert ("torch" in m["versions"]) == ("torch" in sys.modules)
    run.write_manifest({"seed": 7}, finished=True)
    assert read_manifest(run.path / "manifest.json")["finished"] is not None


def test_manifest_reserved_keys_are_refused(tmp_path: Path) -> None:
    run = create_run("demo", root=tmp_path)
    with pytest.raises(ValueError, match="reserved manifest keys"):
        run.write_manifest({"versions": {}})


def test_manifest_write_is_atomic_when_serialisation_fails(tmp_path: Path) -> None:
    run = create_run("demo", root=tmp_path)
    run.write_manifest({"seed": 1})
    before = _snapshot(run.path)
    with pytest.raises(TypeError, match=r"`data\[.bad.\]` must be a JSON value"):
        run.write_manifest({"seed": 2, "bad": object()})
    assert _snapshot(run.path) == before
    with pytest.raises(ValueError):  # NaN is not JSON
        run.write_manifest({"seed": float("nan")})
    assert _snapshot(run.path) == before


def test_manifest_write_is_atomic_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = create_run("demo", root=tmp_path)
    run.write_manifest({"seed": 1})
    before = _snapshot(run.path)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        run.write_manifest({"seed": 2})
    assert _snapshot(run.path) == before  # old manifest intact, no temporary file left
    assert read_manifest(run.path)["seed"] == 1


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        run = create_run("demo", root=tmp_path)
        path = run.write_manifest({"seed": 0})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_tables_round_trip_and_are_written_once(tmp_path: Path) -> None:
    run = create_run("demo", root=tmp_path)
    df = pd.DataFrame(
        {"t": [0.0, 0.1, 1 / 3], "inertia": [1.0, np.nextafter(1.0, 2.0), 1e-300], "system": ["a", "b", "c"]}
    )
    path = run.write_table("energies", df)
    assert path == run.path / "energies.csv"
    back = read_table(run.path, "energies")
    pd.testing.assert_frame_equal(back, df)  # exact floats, no index column
    with pytest.raises(FileExistsError):
        run.write_table("energies", df)
    pd.testing.assert_frame_equal(read_table(run.path, "energies"), df)
    with pytest.raises(TypeError, match="DataFrame"):
        run.write_table("other", {"t": [0.0]})


def test_readers_do_not_modify_what_they_read(tmp_path: Path) -> None:
    run = create_run("demo", root=tmp_path)
    run.write_manifest({"seed": 3})
    run.write_table("energies", pd.DataFrame({"t": [0.0], "inertia": [1.0]}))
    before = _snapshot(run.path)
    for p in run.path.iterdir():
        p.chmod(0o444)
    run.path.chmod(0o555)
    try:
        for _ in range(2):
            assert read_manifest(run.path)["seed"] == 3
            assert read_table(run.path, "energies")["inertia"].tolist() == [1.0]
            assert RunDir.open(run.path).kind == "demo"
    finally:
        run.path.chmod(0o755)
        for p in run.path.iterdir():
            p.chmod(0o644)
    after = _snapshot(run.path)
    assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}


def test_readers_never_unpickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = create_run("demo", root=tmp_path)
    run.write_manifest({"seed": 3})
    run.write_table("energies", pd.DataFrame({"t": [0.0], "inertia": [1.0]}))
    (run.path / "evil.pkl").write_bytes(pickle.dumps({"a": 1}))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reader unpickled something")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pd, "read_pickle", forbidden)
    assert read_manifest(run.path)["seed"] == 3
    assert read_table(run.path, "energies").shape == (1, 2)
    with pytest.raises(FileNotFoundError):
        read_table(run.path, "evil")  # only <name>.csv is ever opened


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        read_manifest(tmp_path)
