"""Randomness (TESTING.md item 8): the noise of step ``n`` is a pure function of ``(seed, n)``.

Same seed, bit-identical paths; path 0 does not depend on ``n_paths``; a run split in chunks (or
resumed from its saved final state with ``initial_step``) equals the uninterrupted run bit for
bit; different seeds differ. NumPy and torch (CPU) backends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import inertia
from conftest import NOISY, final_state, quartic_chain
from inertia import dynamics, potentials
from inertia._backend import normal

BACKENDS = ["numpy", "torch"]


def as_backend(x: Any, backend: str) -> Any:
    if backend == "numpy":
        return np.asarray(x, dtype=np.float64)
    torch = pytest.importorskip("torch")
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def noisy_run(
    backend: str,
    method: str,
    *,
    n_paths: int = 4,
    seed: int = 3,
    n_steps: int = 40,
    theta0: Any = None,
    v0: Any = None,
    initial_step: int = 0,
    gamma: Any = 0.6,
    **kw: Any,
) -> inertia.Trajectory:
    if theta0 is None:
        theta0 = as_backend([0.8, -0.6, 0.4], backend)
    return inertia.simulate(
        quartic_chain(3),
        theta0,
        v0,
        gamma=gamma,
        sigma=0.5,
        dt=0.05,
        n_steps=n_steps,
        method=method,
        n_paths=n_paths,
        seed=seed,
        initial_step=initial_step,
        **kw,
    )


def assert_same_run(a: inertia.Trajectory, b: inertia.Trajectory) -> None:
    for x, y in zip(final_state(a), final_state(b), strict=True):
        assert np.array_equal(x, y)
    for name in ("kinetic", "potential", "inertia", "dissipated", "t", "step"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", NOISY)
def test_same_seed_gives_bit_identical_paths(backend: str, method: str) -> None:
    assert_same_run(noisy_run(backend, method), noisy_run(backend, method))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", NOISY)
def test_different_seeds_differ(backend: str, method: str) -> None:
    a, b = noisy_run(backend, method, seed=3), noisy_run(backend, method, seed=4)
    assert not np.array_equal(final_state(a)[0], final_state(b)[0])
    # and the paths of one run are not copies of each other
    theta = final_state(a)[0]
    assert len({tuple(row) for row in theta}) == theta.shape[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", NOISY)
def test_path_zero_does_not_depend_on_n_paths(backend: str, method: str) -> None:
    runs = {n: noisy_run(backend, method, n_paths=n) for n in (1, 2, 5, 16, 37)}
    ref_theta, ref_v = final_state(runs[1])
    for n, traj in runs.items():
        theta, v = final_state(traj)
        assert theta.shape == (n, 3)
        assert np.array_equal(theta[0], ref_theta[0]), n
        assert np.array_equal(v[0], ref_v[0]), n
        assert np.array_equal(traj.inertia[:, 0], runs[1].inertia[:, 0]), n
    # more generally: the first rows are shared by every larger ensemble
    assert np.array_equal(final_state(runs[16])[0], final_state(runs[37])[0][:16])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_paths", [1, 3, 5, 6, 17])
def test_noise_rows_are_a_prefix(backend: str, n_paths: int) -> None:
    """The keyed source itself: row i of an (n, d) draw does not depend on n (any d)."""
    ref = as_backend(np.zeros(1), backend)
    for d in (1, 3, 7):
        big = np.asarray(normal((5, 11, 1), (40, d), ref))
        small = np.asarray(normal((5, 11, 1), (n_paths, d), ref))
        assert np.array_equal(small, big[:n_paths])
        # a different step or sub-step is a different stream
        assert not np.array_equal(np.asarray(normal((5, 12, 1), (n_paths, d), ref)), small)
        assert not np.array_equal(np.asarray(normal((5, 11, 0), (n_paths, d), ref)), small)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noise_is_standard_normal(backend: str) -> None:
    """A cheap sanity check of the keyed source: mean 0, variance 1, uncorrelated steps."""
    ref = as_backend(np.zeros(1), backend)
    a = np.asarray(normal((1, 0, 0), (20000,), ref))
    b = np.asarray(normal((1, 1, 0), (20000,), ref))
    assert abs(a.mean()) < 4 / np.sqrt(a.size)
    assert abs(a.var() - 1.0) < 4 * np.sqrt(2 / a.size)
    assert abs(np.mean(a * b)) < 4 / np.sqrt(a.size)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", NOISY)
@pytest.mark.parametrize("gamma", [0.6, dynamics.NesterovFriction(3.0)], ids=["constant", "3/t"])
def test_chunked_run_equals_uninterrupted_run(backend: str, method: str, gamma: Any) -> None:
    t0 = 1.0 if isinstance(gamma, dynamics.NesterovFriction) else 0.0
    v0 = as_backend([0.3, 0.5, -0.2], backend)
    full = noisy_run(backend, method, n_steps=50, gamma=gamma, t0=t0, v0=v0)
    first = noisy_run(backend, method, n_steps=20, gamma=gamma, t0=t0, v0=v0)
    second = noisy_run(
        backend, method, n_steps=17, gamma=gamma, t0=t0, theta0=first.theta, v0=first.v, initial_step=20
    )
    third = noisy_run(
        backend, method, n_steps=13, gamma=gamma, t0=t0, theta0=second.theta, v0=second.v, initial_step=37
    )
    for x, y in zip(final_state(third), final_state(full), strict=True):
        assert np.array_equal(x, y)
    # the recorded rows of the chunks are the rows of the full run
    chunks = [first, second, third]
    steps = np.concatenate([c.step for c in chunks])
    assert np.array_equal(np.unique(steps), full.step)
    for c in chunks:
        rows = np.searchsorted(full.step, c.step)
        assert np.array_equal(c.inertia, full.inertia[rows])
        assert np.array_equal(c.t, full.t[rows])
    if backend == "torch":
        assert type(third.theta).__module__.startswith("torch")


@pytest.mark.parametrize("method", NOISY)
def test_resume_from_saved_file_equals_uninterrupted_run(tmp_path, method: str) -> None:
    """Resume from the state written to disk (npz round trip) rather than the live object."""
    full = noisy_run("numpy", method, n_steps=30)
    first = noisy_run("numpy", method, n_steps=12)
    path = first.save(tmp_path / "first.npz")
    loaded = inertia.Trajectory.load(path)
    second = noisy_run(
        "numpy", method, n_steps=18, theta0=loaded.theta, v0=loaded.v, initial_step=int(loaded.step[-1])
    )
    assert np.array_equal(second.theta, full.theta) and np.array_equal(second.v, full.v)


def test_noise_sources_leave_the_global_rngs_alone() -> None:
    """Each backend draws from its own keyed generator, never from a global RNG."""
    torch = pytest.importorskip("torch")
    # the legacy global state is exactly what must stay untouched
    state_np = np.random.get_state()[1].copy()  # noqa: NPY002
    state_torch = torch.random.get_rng_state().clone()
    a = noisy_run("numpy", "baoab")
    b = noisy_run("torch", "baoab")
    assert np.array_equal(np.random.get_state()[1], state_np)  # noqa: NPY002
    assert torch.equal(torch.random.get_rng_state(), state_torch)
    assert a.success and b.success


def test_deterministic_run_ignores_the_seed() -> None:
    kw = dict(dt=0.05, n_steps=30, gamma=0.5, method="baoab")
    a = inertia.simulate(potentials.Quadratic([1.0, 2.0]), [1.0, 0.0], seed=1, **kw)
    b = inertia.simulate(potentials.Quadratic([1.0, 2.0]), [1.0, 0.0], seed=2, **kw)
    assert np.array_equal(a.theta, b.theta)
