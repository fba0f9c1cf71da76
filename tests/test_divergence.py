"""Divergence handling (TESTING.md item 15, STYLE.md "report numerics at the end").

A step above the stability bound of a known quadratic warns before the run starts; the blow-up
is then recorded with the first bad step, the partial rows are kept (non-finite values stay
non-finite, never 0), and the run raises :class:`inertia.DivergenceError` carrying the partial
trajectory, or returns it with ``on_divergence="stop"``. A NaN produced by the potential itself is
caught the same way. No warning at a stable step.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import inertia
from inertia import dynamics, potentials

LAM = np.array([1.0, 100.0])  # leapfrog bound: dt < 2 / sqrt(100) = 0.2
UNSTABLE_DT = 0.25


def leapfrog_reference(
    lam: np.ndarray, theta: np.ndarray, v: np.ndarray, dt: float, n_steps: int
) -> int | None:
    """The first step at which a hand-written leapfrog on ``1/2 sum lam theta^2`` has a
    non-finite state or energy (``None`` if it never does)."""
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(1, n_steps + 1):
            v = v - 0.5 * dt * lam * theta
            theta = theta + dt * v
            v = v - 0.5 * dt * lam * theta
            energy = 0.5 * np.sum(v * v) + 0.5 * np.sum(lam * theta * theta)
            if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(v)) and np.isfinite(energy)):
                return n
    return None


def test_unstable_step_warns_before_running_then_raises() -> None:
    pot = potentials.Quadratic(LAM)
    warned_before_first_step: list[bool] = []
    with pytest.warns(RuntimeWarning, match="stability bound") as record:

        def progress(done: int, total: int) -> None:
            if not warned_before_first_step:
                warned_before_first_step.append(any("stability bound" in str(w.message) for w in record))

        with pytest.raises(inertia.DivergenceError, match=r"step \d+") as info:
            inertia.simulate(
                pot, [1.0, 1.0], dt=UNSTABLE_DT, n_steps=2000, method="leapfrog", progress=progress
            )
    assert warned_before_first_step == [True]
    message = next(str(w.message) for w in record if "stability bound" in str(w.message))
    assert "leapfrog" in message and "100" in message and "0.2" in message  # bound 2/sqrt(100)

    traj = info.value.trajectory
    expected = leapfrog_reference(LAM, np.array([1.0, 1.0]), np.zeros(2), UNSTABLE_DT, 2000)
    assert expected is not None and 100 < expected < 2000
    assert traj.status == "diverged" and not traj.success
    assert traj.first_bad_step == expected
    assert f"step {expected}" in str(info.value) and f"step {expected}" in traj.message
    # the partial rows are kept: every step up to the bad one, finite before, non-finite at it
    assert traj.step.tolist() == list(range(expected + 1))
    assert traj.n_steps == expected
    assert traj.t[-1] == expected * UNSTABLE_DT
    assert np.all(np.isfinite(traj.inertia[:-1]))
    assert not np.isfinite(traj.inertia[-1, 0])  # rendered as inf/nan, never as 0
    assert traj.inertia[-1, 0] != 0.0
    # the energy grows geometrically before it blows up: it was a real divergence
    assert traj.inertia[expected // 2, 0] > 1e50 * traj.inertia[0, 0]


def test_on_divergence_stop_returns_the_partial_trajectory() -> None:
    pot = potentials.Quadratic(LAM)
    with pytest.warns(RuntimeWarning, match="stability bound"):
        traj = inertia.simulate(
            pot, [1.0, 1.0], dt=UNSTABLE_DT, n_steps=2000, save_every=50, on_divergence="stop"
        )
    expected = leapfrog_reference(LAM, np.array([1.0, 1.0]), np.zeros(2), UNSTABLE_DT, 2000)
    assert traj.status == "diverged"
    assert traj.first_bad_step is not None and traj.first_bad_step >= expected
    # saved steps up to the divergence, plus the bad step itself
    assert traj.step[-1] == traj.first_bad_step
    assert traj.step[:-1].tolist() == list(range(0, traj.first_bad_step, 50))
    assert np.all(np.isfinite(traj.inertia[:-1])) and not np.isfinite(traj.inertia[-1, 0])
    assert f"step {traj.first_bad_step}" in traj.message
    assert traj.n_steps == traj.first_bad_step < 2000


@pytest.mark.parametrize("save_every", [7, 1000])
def test_first_bad_step_does_not_depend_on_save_every(save_every: int) -> None:
    pot = potentials.Quadratic(LAM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stability warning is tested above
        traj = inertia.simulate(
            pot, [1.0, 1.0], dt=UNSTABLE_DT, n_steps=2000, save_every=save_every, on_divergence="stop"
        )
    expected = leapfrog_reference(LAM, np.array([1.0, 1.0]), np.zeros(2), UNSTABLE_DT, 2000)
    assert traj.first_bad_step == expected


def test_divergence_of_one_path_in_an_ensemble() -> None:
    """Paths are stepped together: the run stops at the first bad step of any path, and the
    other paths' rows stay finite (not zeroed)."""
    pot = potentials.Quadratic(LAM)
    theta0 = np.array([[1.0, 0.0], [0.0, 1.0]])  # only path 1 excites the stiff mode
    with pytest.warns(RuntimeWarning, match="stability bound"):
        traj = inertia.simulate(pot, theta0, dt=UNSTABLE_DT, n_steps=2000, on_divergence="stop")
    expected = leapfrog_reference(LAM, theta0[1], np.zeros(2), UNSTABLE_DT, 2000)
    assert traj.first_bad_step == expected
    assert np.all(np.isfinite(traj.inertia[:, 0])) and np.all(traj.inertia[:, 0] > 0)
    assert not np.isfinite(traj.inertia[-1, 1])


class NaNBeyond(potentials.Potential):
    """``1/2 |theta|^2`` for ``theta_0 <= 1.5``; the loss *and* its gradient are NaN beyond
    (like a log or a sqrt leaving its domain)."""

    dim = 2

    def value_and_grad(self, theta):
        bad = theta[..., :1] > 1.5
        with np.errstate(invalid="ignore"):
            value = np.where(bad[..., 0], np.nan, 0.5 * np.sum(theta * theta, axis=-1))
            grad = np.where(bad, np.nan, theta)
        return value, grad


@pytest.mark.parametrize("method", ["leapfrog", "symplectic_euler", "euler", "baoab", "yoshida4"])
@pytest.mark.parametrize("policy", ["raise", "stop"])
def test_nan_from_the_potential_is_caught(method: str, policy: str) -> None:
    theta0, v0, dt = [0.0, 0.0], [2.0, 0.0], 0.01
    clean = potentials.Quadratic([1.0, 1.0])
    # the first step at which the clean trajectory leaves the potential's domain
    ref = inertia.simulate(clean, theta0, v0, dt=dt, n_steps=200, method=method)
    crossings = [
        n
        for n in range(1, 201)
        if inertia.simulate(clean, theta0, v0, dt=dt, n_steps=n, method=method, save_every=n).theta[0, 0]
        > 1.5
    ]
    expected = crossings[0]
    assert ref.success and 50 < expected < 200

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warnings: the NaN is reported, not printed
        if policy == "raise":
            with pytest.raises(inertia.DivergenceError, match=f"step {expected}") as info:
                inertia.simulate(NaNBeyond(), theta0, v0, dt=dt, n_steps=200, method=method)
            traj = info.value.trajectory
        else:
            traj = inertia.simulate(
                NaNBeyond(), theta0, v0, dt=dt, n_steps=200, method=method, on_divergence="stop"
            )
    assert traj.status == "diverged"
    assert traj.first_bad_step == expected
    assert traj.step.tolist() == list(range(expected + 1))
    np.testing.assert_array_equal(traj.inertia[:-1], ref.inertia[:expected])
    assert np.isnan(traj.potential[-1, 0]) or np.isnan(traj.kinetic[-1, 0])
    assert np.isnan(traj.inertia[-1, 0])


def test_non_finite_loss_at_the_start_is_reported_as_step_zero() -> None:
    with pytest.raises(inertia.DivergenceError, match="step 0") as info:
        inertia.simulate(NaNBeyond(), [2.0, 0.0], dt=0.1, n_steps=10)
    traj = info.value.trajectory
    assert traj.first_bad_step == 0 and traj.n_steps == 0
    assert traj.step.tolist() == [0] and np.isnan(traj.inertia[0, 0])


def test_blow_up_without_a_known_bound_is_caught_without_stray_warnings() -> None:
    """Frictionless explicit Euler on the nonlinear chain overflows: the overflow is reported as
    a divergence at its step, not as NumPy floating-point warnings (which this project's pytest
    configuration turns into errors)."""
    pot = potentials.QuarticChain([1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traj = inertia.simulate(
            pot, [0.8, -0.6], [0.3, 0.5], dt=0.05, n_steps=5000, method="euler", on_divergence="stop"
        )
    assert traj.status == "diverged"
    assert 0 < traj.first_bad_step < 5000
    assert not np.isfinite(traj.inertia[-1, 0])
    assert np.all(np.isfinite(traj.inertia[:-1]))


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "baoab", "symplectic_euler", "euler"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, dynamics.NesterovFriction(3.0)])
def test_no_warning_at_a_stable_step(method: str, gamma: object) -> None:
    pot = potentials.Quadratic(LAM)
    # below every method's bound for lambda = 100 (yoshida4's is the smallest, about 0.155);
    # explicit Euler is stable only with friction, for dt lambda < gamma
    dt = 0.001 if method == "euler" else 0.1
    t0 = 1.0 if isinstance(gamma, dynamics.NesterovFriction) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traj = inertia.simulate(pot, [1.0, 1.0], dt=dt, n_steps=20, method=method, gamma=gamma, t0=t0)
    assert traj.success


@pytest.mark.parametrize(
    ("method", "gamma", "dt", "warns"),
    [
        # leapfrog / BAOAB: dt sqrt(lambda) < 2, i.e. dt < 0.2
        ("leapfrog", 0.0, 0.19, False),
        ("leapfrog", 0.0, 0.21, True),
        ("baoab", 0.0, 0.19, False),
        ("baoab", 0.0, 0.21, True),
        # heavy ball: dt^2 lambda < 2 (1 + e^{-gamma dt})
        ("symplectic_euler", 0.0, 0.199, False),
        ("symplectic_euler", 0.0, 0.201, True),
        ("symplectic_euler", 1.0, 0.19, False),  # 3.61 < 2 (1 + e^{-0.19}) = 3.654
        ("symplectic_euler", 1.0, 0.195, True),  # 3.8025 > 3.646
        # explicit Euler with friction: |1 - gamma dt + lambda dt^2| < 1, i.e. dt lambda < gamma
        ("euler", 1.0, 0.009, False),
        ("euler", 1.0, 0.011, True),
        # explicit Euler without friction is unstable for every dt: a baseline, not a mistake
        ("euler", 0.0, 0.001, False),
    ],
)
def test_warning_tracks_each_methods_own_bound(method: str, gamma: float, dt: float, warns: bool) -> None:
    pot = potentials.Quadratic(LAM)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        inertia.simulate(pot, [1.0, 1.0], dt=dt, n_steps=1, method=method, gamma=gamma)
    assert any("stability bound" in str(w.message) for w in record) == warns


def test_warning_accounts_for_the_mass() -> None:
    """The bound is on ``dt sqrt(lambda / m)``: a heavier mass makes the same dt stable."""
    pot = potentials.Quadratic(LAM)
    with pytest.warns(RuntimeWarning, match="stability bound"):
        inertia.simulate(pot, [1.0, 1.0], dt=0.3, n_steps=1, mass=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inertia.simulate(pot, [1.0, 1.0], dt=0.3, n_steps=1, mass=4.0)  # bound 2 sqrt(4/100)
        inertia.simulate(pot, [1.0, 1.0], dt=0.3, n_steps=1, mass=[1.0, 4.0])
    with pytest.warns(RuntimeWarning, match="stability bound"):
        inertia.simulate(pot, [1.0, 1.0], dt=0.3, n_steps=1, mass=[4.0, 1.0])
