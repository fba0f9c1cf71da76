"""Nothing followed or overwritten that the user did not name (issue 10, item 4).

Writers (``Trajectory.save``, :func:`inertia._files.atomic_write_bytes`, the run directory's
tables, manifest and report, :class:`inertia.track.RunLog` and its resume) never write through a
symbolic link, never use a fixed temporary name, remove their temporary files on failure, and of
several processes saving to one path exactly one succeeds while every other one gets a clear
error. Each case below plants the link or starts the race and checks the victim file is intact.
The counts of cases are printed (``-s``) for the closing note of the issue.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

import inertia
from inertia import _files, potentials
from inertia._files import SymlinkError, atomic_write_bytes, rename_noreplace

VICTIM = b"the user's own data\n"
_COUNTS: dict[str, int] = {"symlink cases": 0, "race trials": 0, "race trials with one winner": 0}


@pytest.fixture(scope="module")
def traj() -> inertia.Trajectory:
    return inertia.simulate(potentials.Quadratic([0.5, 2.0]), [1.0, -1.0], dt=0.05, n_steps=20, n_paths=2)


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> object:
    yield
    print(f"\nfiles safety: {_COUNTS}")


@pytest.fixture(params=["anonymous", "named"], autouse=True)
def write_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case twice: with Linux's anonymous temporary files (``O_TMPFILE``) and with the
    portable fallback (a uniquely named hidden file, then a no-replace rename)."""
    if request.param == "named":
        monkeypatch.setattr(_files, "_anonymous", lambda folder: None)
    return str(request.param)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    return victim


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("suffix", [".csv", ".npz", ".parquet"])
def test_save_ignores_a_planted_fixed_tmp_link_and_file(traj, tmp_path: Path, suffix: str) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / f"c{suffix}"
    os.symlink(victim, tmp_path / f"c{suffix}.tmp")  # the old fixed temporary name
    own = tmp_path / f"d{suffix}.tmp"
    own.write_bytes(b"mine")
    traj.save(target)
    traj.save(tmp_path / f"d{suffix}")
    _COUNTS["symlink cases"] += 1
    assert victim.read_bytes() == VICTIM and own.read_bytes() == b"mine"
    assert (tmp_path / f"c{suffix}.tmp").is_symlink()
    assert _leftovers(tmp_path) == [f"c{suffix}.tmp", f"d{suffix}.tmp"]
    if suffix == ".npz":
        back = inertia.Trajectory.load(target)
        np.testing.assert_array_equal(back.inertia, traj.inertia)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_save_refuses_a_symlink_at_the_target(traj, tmp_path: Path, suffix: str) -> None:
    victim = _victim(tmp_path)
    link = tmp_path / f"c{suffix}"
    os.symlink(victim, link)
    with pytest.raises(SymlinkError, match=r"`path` must not be a symbolic link.*victim\.txt"):
        traj.save(link)
    dangling = tmp_path / f"e{suffix}"
    os.symlink(tmp_path / "nowhere", dangling)
    with pytest.raises(SymlinkError, match="`path` must not be a symbolic link"):
        traj.save(dangling)
    _COUNTS["symlink cases"] += 2
    assert victim.read_bytes() == VICTIM and not (tmp_path / "nowhere").exists()


def test_atomic_write_refuses_links_and_keeps_permissions(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    link = tmp_path / "out.bin"
    os.symlink(victim, link)
    for overwrite in (True, False):
        with pytest.raises(SymlinkError):
            atomic_write_bytes(link, b"x", overwrite=overwrite)
    _COUNTS["symlink cases"] += 2
    assert victim.read_bytes() == VICTIM and link.is_symlink()
    plain = atomic_write_bytes(tmp_path / "plain.bin", b"abc")
    assert plain.read_bytes() == b"abc"
    assert oct(plain.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    atomic_write_bytes(plain, b"new")
    assert plain.read_bytes() == b"new"
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        atomic_write_bytes(plain, b"x", overwrite=False)
    assert _leftovers(tmp_path) == []


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    class Boom(bytes):
        pass

    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "x.bin", Boom(b"a") + 1)  # type: ignore[operator]
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(tmp_path, b"x")
    assert list(tmp_path.iterdir()) == []


def test_rename_noreplace_never_replaces(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    with pytest.raises(FileExistsError):
        rename_noreplace(a, b)
    os.symlink(tmp_path / "zzz", tmp_path / "link")
    with pytest.raises(FileExistsError):
        rename_noreplace(a, tmp_path / "link")
    d = tmp_path / "d"
    d.mkdir()
    rename_noreplace(d, tmp_path / "e")
    assert (tmp_path / "e").is_dir() and a.read_bytes() == b"A" and b.read_bytes() == b"B"


# --------------------------------------------------------------------------- races


_TRAJS: list[inertia.Trajectory] = []


def _saver(path: str, k: int, start: object, out: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    try:
        _TRAJS[k].save(path)  # computed before the fork: the child only writes
        out.put((k, "ok"))  # type: ignore[attr-defined]
    except FileExistsError as exc:
        out.put((k, f"FileExistsError: {exc}"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_concurrent_saves_one_winner_and_no_silent_loss(tmp_path: Path, suffix: str) -> None:
    """Several processes save different trajectories to one path at the same moment: exactly
    one reports success, and the file holds exactly its data; every other one gets a clear
    FileExistsError."""
    ctx = mp.get_context("fork")
    n_trials, n_procs = 4, 4
    if not _TRAJS:
        pot = potentials.Quadratic([0.5, 2.0])
        _TRAJS.extend(
            inertia.simulate(pot, [k + 1.0, 0.0], dt=0.05, n_steps=200, fast=False)
            for k in range(n_procs)
            for k in range(n_procs)
        )
    for trial in range(n_trials):
        path = tmp_path / f"t{trial}{suffix}"
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_saver, args=(str(path), k, start, out)) for k in range(n_procs)]
        for p in procs:
            p.start()
        start.set()
        results = dict(out.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        winners = [k for k, r in results.items() if r == "ok"]
        assert len(winners) == 1, results
        assert all("FileExistsError" in r for k, r in results.items() if k != winners[0])
        if suffix == ".npz":
            back = inertia.Trajectory.load(path)
            assert float(back.potential[0, 0]) == pytest.approx(0.25 * (winners[0] + 1) ** 2)
        else:
            import pandas as pd

            df = pd.read_csv(path)
            assert float(df["potential"].iloc[0]) == pytest.approx(0.25 * (winners[0] + 1) ** 2)
        assert _leftovers(tmp_path) == []
        _COUNTS["race trials"] += 1
        _COUNTS["race trials with one winner"] += 1
