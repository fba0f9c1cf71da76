"""The Trajectory result: shapes, the long table, and files that round-trip without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import inertia
from inertia import potentials


@pytest.fixture
def traj() -> inertia.Trajectory:
    return inertia.simulate(
        potentials.Quadratic([0.5, 2.0]),
        [1.0, -1.0],
        gamma=0.3,
        sigma=0.2,
        dt=0.05,
        n_steps=23,
        save_every=5,
        method="baoab",
        n_paths=3,
        seed=7,
    )


def test_shapes_and_saved_steps(traj: inertia.Trajectory) -> None:
    assert traj.step.tolist() == [0, 5, 10, 15, 20, 23]
    assert traj.t.shape == (6,)
    for name in ("kinetic", "potential", "inertia", "dissipated"):
        assert getattr(traj, name).shape == (6, 3)
    np.testing.assert_array_equal(traj.inertia, traj.kinetic + traj.potential)
    assert traj.n_paths == 3 and traj.n_saved == 6 and traj.success
    assert traj.n_grad_evals == 24  # one per step plus the first
    assert traj.config["n_paths"] == 3 and traj.config["method"] == "baoab"


def test_energies_match_definitions(traj: inertia.Trajectory) -> None:
    theta, v = np.asarray(traj.theta), np.asarray(traj.v)
    np.testing.assert_allclose(traj.kinetic[-1], 0.5 * np.sum(v * v, axis=1), rtol=1e-14)
    np.testing.assert_allclose(
        traj.potential[-1], 0.5 * np.sum(np.array([0.5, 2.0]) * theta**2, axis=1), rtol=1e-14
    )


def test_to_pandas_long_table(traj: inertia.Trajectory) -> None:
    df = traj.to_pandas()
    assert list(df.columns) == ["step", "t", "path", "kinetic", "potential", "inertia", "dissipated"]
    assert len(df) == 6 * 3
    row = df[(df.step == 10) & (df.path == 2)].iloc[0]
    assert row.inertia == traj.inertia[2, 2]
    assert len(traj.to_pandas(paths=[0])) == 6


def test_npz_round_trip_and_no_overwrite(traj: inertia.Trajectory, tmp_path: Path) -> None:
    path = traj.save(tmp_path / "run.npz")
    back = inertia.Trajectory.load(path)
    np.testing.assert_array_equal(back.inertia, traj.inertia)
    np.testing.assert_array_equal(back.theta, np.asarray(traj.theta))
    assert back.config == traj.config and back.status == traj.status
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        traj.save(path)
    assert path.read_bytes() == before


def test_csv_and_bad_suffix(traj: inertia.Trajectory, tmp_path: Path) -> None:
    df = pd.read_csv(traj.save(tmp_path / "run.csv"))
    np.testing.assert_allclose(df["inertia"].to_numpy(), traj.to_pandas()["inertia"].to_numpy())
    with pytest.raises(ValueError, match=r"`path` must end in \.npz"):
        traj.save(tmp_path / "run.txt")
    assert not (tmp_path / "run.txt").exists()


def test_load_never_unpickles(tmp_path: Path) -> None:
    bad = tmp_path / "evil.npz"
    np.savez(bad, meta=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        inertia.Trajectory.load(bad)


def test_zero_steps_saves_the_initial_state() -> None:
    tr = inertia.simulate(potentials.Quadratic([1.0]), [2.0], dt=0.1, n_steps=0)
    assert tr.step.tolist() == [0] and tr.inertia[0, 0] == 2.0 and tr.n_grad_evals == 0


def test_public_api_docstrings() -> None:
    # every public function and class of the core carries a docstring
    import inspect

    import inertia.verify

    for mod in (
        inertia,
        inertia.theory,
        inertia.potentials,
        inertia.energy,
        inertia.verify,
        inertia.stability,
        inertia.dynamics,
    ):
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{mod.__name__}.{name} has no docstring"
