"""Integrators: measured order of convergence and long-time energy behaviour.

TESTING.md "Integrators" items 1-2 and THEORY.md section 5. Everything runs in float64 on CPU
with NumPy; nothing depends on wall-clock time.

* Measured order: global error at a fixed horizon against an independent DOP853 reference for
  ``dt = 2^-3 ... 2^-10`` (points under 1e-11 dropped, at the reference's accuracy), least-squares
  log-log slope within 0.15 of ``METHODS[name].order``, on a harmonic and a nonlinear coupled
  potential, frictionless, with constant friction, with the Nesterov schedule ``3/t`` and with a
  smooth user schedule. The harness is checked in both directions: a correct 4th-order RK4 is
  measured at 4, and a leapfrog whose friction is deliberately applied off-centre is caught.
* Long-time energy: 10^5 frictionless steps; the symplectic methods keep ``|I - I0|`` bounded
  with no secular drift and with the ``dt`` / ``dt/2`` error ratio of their order, while the very
  same drift check flags explicit Euler and (non-symplectic) RK4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import inertia
from conftest import (
    DETERMINISTIC,
    RK4,
    fit_slope,
    has_secular_drift,
    quartic_chain,
    reference_solution,
    windowed_drift,
)
from inertia import dynamics, potentials, theory
from inertia.integrators import Method
from inertia.integrators.splitting import make_splitting_step

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

DTS = 2.0 ** -np.arange(3, 11)
HORIZON = 2.0
ERROR_FLOOR = 1e-11  # DOP853 at rtol = atol = 1e-13 is good to about 1e-12 here

PROBLEMS = {
    "harmonic": (lambda: potentials.Quadratic([1.0, 3.0]), [1.0, -0.5], [0.2, 0.7], 1.0),
    "quartic": (lambda: quartic_chain(2), [0.8, -0.6], [0.3, 0.5], 1.0),
    "quartic-mass": (lambda: quartic_chain(3), [0.8, -0.6, 0.4], [0.3, 0.5, -0.2], [1.0, 2.5, 0.7]),
}

FRICTIONS = {
    "frictionless": (0.0, 0.0),
    "constant": (0.8, 0.0),
    "nesterov": (dynamics.NesterovFriction(3.0), 1.0),  # gamma = 3/t from t0 = 1
    "scheduled": (dynamics.ScheduledFriction(lambda t: 0.5 + 0.3 * math.sin(2.0 * t)), 0.0),
}


def global_errors(
    method: str, problem: str, friction: str, dts: np.ndarray = DTS
) -> tuple[np.ndarray, np.ndarray]:
    """Errors ``max(|theta - theta_ref|, |v - v_ref|)`` at ``t0 + HORIZON`` for each ``dt``."""
    make_pot, theta0, v0, mass = PROBLEMS[problem]
    gamma, t0 = FRICTIONS[friction]
    pot = make_pot()
    ref_theta, ref_v = reference_solution(pot, theta0, v0, gamma, t0, HORIZON, mass)
    errors = []
    for dt in dts:
        n_steps = round(HORIZON / dt)
        assert n_steps * dt == HORIZON
        traj = inertia.simulate(
            pot,
            theta0,
            v0,
            gamma=gamma,
            mass=mass,
            dt=float(dt),
            n_steps=n_steps,
            method=method,
            t0=t0,
            save_every=n_steps,
        )
        assert traj.success
        assert traj.t[-1] == t0 + HORIZON
        errors.append(max(np.abs(traj.theta[0] - ref_theta).max(), np.abs(traj.v[0] - ref_v).max()))
    return np.asarray(dts), np.asarray(errors)


def measured_order(dts: np.ndarray, errors: np.ndarray) -> tuple[float, int]:
    """The log-log slope over the points above the reference's accuracy, and how many."""
    keep = errors > ERROR_FLOOR
    return fit_slope(dts[keep], errors[keep]), int(keep.sum())


@pytest.mark.parametrize("friction", list(FRICTIONS))
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("method", DETERMINISTIC)
def test_measured_order_matches_declared(method: str, problem: str, friction: str) -> None:
    declared = inertia.METHODS[method].order
    dts, errors = global_errors(method, problem, friction)
    slope, n_points = measured_order(dts, errors)
    assert n_points >= 4, f"only {n_points} points above {ERROR_FLOOR:g}: {errors}"
    assert declared - 0.15 <= slope <= declared + 0.15, (
        f"{method} on {problem}/{friction}: measured order {slope:.3f}, declared {declared}; errors {errors}"
    )
    # errors decrease monotonically until the reference's floor: a clean asymptotic regime
    kept = errors[errors > ERROR_FLOOR]
    assert np.all(np.diff(kept) < 0), kept
    # the limit: the finest solution agrees with DOP853 (to the accuracy its order promises)
    finest = {1: 1e-2, 2: 1e-6, 4: 1e-10}[declared]
    assert errors[-1] < finest, (method, errors[-1])


@pytest.mark.parametrize("gamma", [0.0, 0.8, 2 * math.sqrt(3.0), 5.0])
def test_reference_agrees_with_closed_form(gamma: float) -> None:
    """The DOP853 reference itself reproduces THEORY.md section 4 (under/critical/over-damped)."""
    lam = np.array([1.0, 3.0])
    theta0, v0 = np.array([1.0, -0.5]), np.array([0.2, 0.7])
    ref_theta, ref_v = reference_solution(potentials.Quadratic(lam), theta0, v0, gamma, 0.0, HORIZON)
    x, xdot = theory.damped_quadratic_modes(lam, gamma, theta0, v0, [HORIZON])
    np.testing.assert_allclose(ref_theta, x[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ref_v, xdot[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("friction", ["frictionless", "scheduled"])
def test_order_harness_measures_rk4_at_four(temporary_method, friction: str) -> None:
    """A non-splitting method registered through the public registry is measured at order 4,
    so the harness is not tuned to the splitting family."""
    temporary_method(RK4)
    slope, n_points = measured_order(*global_errors(RK4.name, "quartic", friction))
    assert n_points >= 4
    assert abs(slope - 4.0) <= 0.15, slope


def test_order_harness_catches_off_centre_friction(temporary_method) -> None:
    """Power control: a leapfrog that applies its friction in one block before the kicks
    (``O(1) B(1/2) A(1) B(1/2)`` instead of the symmetric ``O(1/2) ... O(1/2)``) is only first
    order with friction. Declared as order 2, it must fail the order check by a wide margin."""
    broken = Method(
        "test_leapfrog_off_centre",
        2,
        2,
        True,
        True,
        1,
        make_splitting_step((("O", 1.0), ("B", 0.5), ("A", 1.0), ("B", 0.5))),
        "deliberately broken",
    )
    temporary_method(broken)
    frictionless, _ = measured_order(*global_errors(broken.name, "quartic", "frictionless"))
    assert abs(frictionless - 2.0) <= 0.15  # without friction the bug is invisible ...
    slope, _ = measured_order(*global_errors(broken.name, "quartic", "constant"))
    assert slope < 2.0 - 0.5, slope  # ... and with friction it is caught


# --------------------------------------------------------------------------------------------
# Long-time energy (frictionless)

LONG_STEPS = 10**5
LONG_DT = 0.05
LONG_THETA0, LONG_V0 = [0.8, -0.6], [0.3, 0.5]


def _long_run(method: str, dt: float, n_steps: int) -> inertia.Trajectory:
    traj = inertia.simulate(quartic_chain(2), LONG_THETA0, LONG_V0, dt=dt, n_steps=n_steps, method=method)
    assert traj.success
    return traj


@pytest.mark.slow
@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "symplectic_euler", "baoab"])
def test_symplectic_energy_error_is_bounded_without_drift(method: str) -> None:
    order = inertia.METHODS[method].order
    coarse = _long_run(method, LONG_DT, LONG_STEPS)
    path = coarse.inertia[:, 0]
    assert not has_secular_drift(path, coarse.t)
    _, max_err = windowed_drift(path, coarse.t)
    assert max_err < {1: 0.3, 2: 1e-2, 4: 1e-4}[order]
    # the bound already holds early: the last quarter is no worse than the first quarter
    quarter = LONG_STEPS // 4
    early = np.abs(path[: quarter + 1] - path[0]).max()
    late = np.abs(path[-quarter:] - path[0]).max()
    assert late <= 1.05 * early, (early, late)

    # halving dt divides the error by 2^order (compared over the same horizon)
    fine = _long_run(method, LONG_DT / 2, LONG_STEPS // 2)
    horizon_steps = LONG_STEPS // 4  # coarse steps covering the fine run's horizon
    assert fine.t[-1] == coarse.t[horizon_steps]
    err_coarse = np.abs(path[: horizon_steps + 1] - path[0]).max()
    err_fine = np.abs(fine.inertia[:, 0] - fine.inertia[0, 0]).max()
    ratio = err_coarse / err_fine
    assert abs(math.log2(ratio) - order) <= 0.15, (ratio, order)


@pytest.mark.slow
def test_drift_check_fails_for_explicit_euler() -> None:
    """Power control: the same check flags explicit Euler (at a dt where it stays finite)."""
    traj = _long_run("euler", 1e-3, LONG_STEPS)
    assert has_secular_drift(traj.inertia[:, 0], traj.t)
    drift, max_err = windowed_drift(traj.inertia[:, 0], traj.t)
    assert drift > 0.5 * max_err


@pytest.mark.slow
def test_drift_check_fails_for_runge_kutta(temporary_method) -> None:
    """Power control: classical RK4 is 4th order but not symplectic, and its energy error grows
    secularly; the same check that passes yoshida4 must flag it."""
    temporary_method(RK4)
    traj = _long_run(RK4.name, 0.1, 2 * 10**4)
    assert has_secular_drift(traj.inertia[:, 0], traj.t)
    drift, max_err = windowed_drift(traj.inertia[:, 0], traj.t)
    assert abs(drift) > 0.5 * max_err


@pytest.mark.parametrize(
    ("lam", "mass", "dt"), [(1.0, 1.0, 0.1), (4.0, 1.0, 0.03), (2.0, 0.5, 0.05), (0.3, 3.0, 0.2)]
)
def test_explicit_euler_energy_grows_by_exact_factor(lam: float, mass: float, dt: float) -> None:
    """Explicit Euler on a frictionless harmonic mode: ``I_{n+1} = (1 + lambda dt^2 / m) I_n``."""
    theta0 = np.array([[1.0], [0.0], [-0.3], [2.0]])
    v0 = np.array([[0.0], [1.0], [0.7], [-1.5]])
    traj = inertia.simulate(
        potentials.Quadratic([lam]), theta0, v0, mass=mass, dt=dt, n_steps=200, method="euler"
    )
    growth = traj.inertia[1:] / traj.inertia[:-1]
    np.testing.assert_allclose(growth, 1.0 + lam * dt * dt / mass, rtol=1e-12, atol=0)
    # and hence a geometric blow-up of the total, not a bounded error
    np.testing.assert_allclose(
        traj.inertia[-1] / traj.inertia[0], (1.0 + lam * dt * dt / mass) ** 200, rtol=1e-10
    )
