"""Closed forms of inertia.theory against independent references (solve_ivp, Lyapunov ODE)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from inertia import stability, theory

LAM = np.array([0.25, 1.0, 4.0])
X0 = np.array([1.0, -0.5, 0.3])
V0 = np.array([0.2, 0.1, -1.0])


def _ode_inertia(lam: np.ndarray, gamma: float, x0: np.ndarray, v0: np.ndarray, t: np.ndarray) -> np.ndarray:
    d = lam.size

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        return np.concatenate([y[d:], -lam * y[:d] - gamma * y[d:]])

    sol = solve_ivp(
        rhs, (0, t[-1]), np.concatenate([x0, v0]), t_eval=t, method="DOP853", rtol=1e-13, atol=1e-13
    )
    x, v = sol.y[:d], sol.y[d:]
    return 0.5 * np.sum(v * v + lam[:, None] * x * x, axis=0)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.0, 4.0, 7.0])
def test_damped_quadratic_inertia_matches_ode(gamma: float) -> None:
    # gamma = 1 is exactly critical for lambda = 0.25, gamma = 2 for lambda = 1, 4 for 4.
    t = np.linspace(0.0, 15.0, 31)
    exact = theory.damped_quadratic_inertia(LAM, gamma, X0, V0, t)
    np.testing.assert_allclose(exact, _ode_inertia(LAM, gamma, X0, V0, t), rtol=1e-9, atol=1e-12)


def test_modes_continuous_across_critical_damping() -> None:
    # eigenvalue exactly critical vs a hair either side: no cancellation blow-up
    t = np.linspace(0, 10, 11)
    crit = theory.damped_quadratic_modes([1.0], 2.0, [1.0], [0.5], t)[0]
    for eps in (1e-9, -1e-9):
        near = theory.damped_quadratic_modes([1.0 + eps], 2.0, [1.0], [0.5], t)[0]
        np.testing.assert_allclose(near, crit, atol=1e-7)


def test_overdamped_large_time_does_not_overflow() -> None:
    out = theory.damped_quadratic_inertia([1e-3, 1.0], 50.0, [1.0, 1.0], [0.0, 0.0], [0, 1e4])
    assert np.all(np.isfinite(out)) and out[1] < out[0]


def test_ensemble_shapes() -> None:
    x0 = np.stack([X0, 2 * X0])
    out = theory.damped_quadratic_inertia(LAM, 0.5, x0, np.zeros_like(x0), [0.0, 1.0, 2.0])
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[:, 1], 4 * out[:, 0])


def _lyapunov_ode_inertia(lam: np.ndarray, gamma: float, sigma: float, t: float) -> float:
    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        out = []
        for i, li in enumerate(lam):
            s = y[4 * i : 4 * i + 4].reshape(2, 2)
            f = np.array([[0.0, 1.0], [-li, -gamma]])
            out.append((f @ s + s @ f.T + np.diag([0.0, sigma**2])).ravel())
        return np.concatenate(out)

    sol = solve_ivp(rhs, (0, t), np.zeros(4 * lam.size), rtol=1e-11, atol=1e-13, method="DOP853")
    s = sol.y[:, -1]
    return sum(0.5 * (li * s[4 * i] + s[4 * i + 3]) for i, li in enumerate(lam))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 3.0])
def test_expected_inertia_matches_lyapunov_ode(gamma: float) -> None:
    sigma, t = 0.7, 6.0
    det = theory.damped_quadratic_inertia(LAM, gamma, X0, V0, [t])[0]
    ref = det + _lyapunov_ode_inertia(LAM, gamma, sigma, t)
    got = theory.expected_inertia(LAM, gamma, sigma, X0, V0, [t])[0]
    assert got == pytest.approx(ref, rel=1e-9)


def test_expected_inertia_limits() -> None:
    # gamma = 0: linear heating I0 + sigma^2 d t / 2 (Ito drift); gamma > 0: d sigma^2 / (2 gamma)
    i0 = theory.damped_quadratic_inertia(LAM, 0.0, X0, V0, [0.0])[0]
    heat = theory.expected_inertia(LAM, 0.0, 0.4, X0, V0, [0.0, 3.0, 50.0])
    np.testing.assert_allclose(heat, i0 + 0.5 * 0.16 * 3 * np.array([0.0, 3.0, 50.0]), rtol=1e-10)
    np.testing.assert_allclose(theory.heating_inertia(i0, 3, 0.4, [0.0, 3.0, 50.0]), heat, rtol=1e-10)
    late = theory.expected_inertia(LAM, 0.8, 0.4, X0, V0, [400.0])[0]
    assert late == pytest.approx(theory.stationary_inertia(3, 0.8, 0.4), rel=1e-10)
    assert theory.stationary_inertia(3, 0.8, 0.4) == pytest.approx(3 * 0.16 / 1.6)


def test_stationary_covariance_matches_theory() -> None:
    # S_xx = sigma^2/(2 gamma) A^-1, S_vv = sigma^2/(2 gamma) I
    _, cov = theory.moments(LAM, 0.9, 0.5, X0, V0, [500.0])
    temp = theory.temperature(0.9, 0.5)
    np.testing.assert_allclose(cov[0, :, 0, 0], temp / LAM, rtol=1e-9)
    np.testing.assert_allclose(cov[0, :, 1, 1], temp, rtol=1e-9)
    np.testing.assert_allclose(cov[0, :, 0, 1], 0.0, atol=1e-12)


def test_rates_and_bounds() -> None:
    lam = np.array([0.25, 4.0])
    g = theory.critical_damping(0.25)
    assert g == 1.0
    assert theory.convergence_rate(lam, g) == pytest.approx(np.sqrt(0.25))
    assert theory.gradient_flow_rate(lam) == 0.25
    # an overdamped slow mode converges slower than critical
    assert theory.convergence_rate(lam, 3.0) < theory.convergence_rate(lam, g)
    assert theory.leapfrog_max_dt(4.0) == 1.0
    assert theory.heavy_ball_max_lr(4.0, 0.9) == pytest.approx(0.95)
    # the linear analysis of the integrator itself agrees with the closed forms
    assert theory.max_stable_dt("leapfrog", 4.0) == pytest.approx(1.0, rel=1e-8)
    dt = theory.max_stable_dt("symplectic_euler", 4.0, 0.5)
    mu = np.exp(-0.5 * dt)
    assert dt * dt == pytest.approx(theory.heavy_ball_max_lr(4.0, mu), rel=1e-8)


def test_discrete_expected_inertia_matches_continuous_limit() -> None:
    # the exact discrete moments converge to the continuous ones at the weak order
    cont = theory.expected_inertia([0.25, 4.0], 0.5, 0.3, [1.0, 1.0], [0.0, 0.0], [5.0])[0]
    errs = [
        abs(
            stability.discrete_expected_inertia(
                "baoab", [0.25, 4.0], 0.5, 0.3, dt, [1.0, 1.0], 0.0, [round(5 / dt)]
            )[0]
            - cont
        )
        for dt in (0.05, 0.025)
    ]
    assert np.log2(errs[0] / errs[1]) == pytest.approx(2.0, abs=0.15)


@pytest.mark.parametrize(
    "bad",
    [
        dict(gamma=-0.1),
        dict(eigenvalues=[1.0, -2.0]),
        dict(theta0=[1.0]),
        dict(t=[-1.0]),
    ],
)
def test_theory_rejects_bad_input(bad: dict) -> None:
    args = dict(eigenvalues=[1.0, 2.0], gamma=0.5, theta0=[1.0, 1.0], v0=[0.0, 0.0], t=[1.0])
    args.update(bad)
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name if name != "eigenvalues" else "eigenvalues"):
        theory.damped_quadratic_inertia(**args)


def test_stationary_needs_friction() -> None:
    with pytest.raises(ValueError, match="gamma"):
        theory.stationary_inertia(2, 0.0, 0.3)
