"""Closed forms for general quadratics (issue 10, item 6): a full SPD Hessian ``A`` and a mass
that is a scalar, a vector or an SPD matrix, checked against ``scipy.linalg.expm`` of the linear
system (deterministic) and of Van Loan's block matrix (the covariance), and against
``simulate``; the input checks of the theory functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import expm

import inertia
from inertia import potentials, theory

RNG = np.random.default_rng(10)


def _spd(d: int, cond: float = 10.0) -> np.ndarray:
    q, _ = np.linalg.qr(RNG.standard_normal((d, d)))
    return (q * np.geomspace(1.0, cond, d)) @ q.T


def _generator(a: np.ndarray, m: np.ndarray, gamma: float) -> np.ndarray:
    """``d/dt (theta, v) = F (theta, v)`` for ``M v' = -A theta - gamma M v``."""
    d = a.shape[0]
    minv_a = np.linalg.solve(m, a)
    return np.block([[np.zeros((d, d)), np.eye(d)], [-minv_a, -gamma * np.eye(d)]])


def _energy(a: np.ndarray, m: np.ndarray, z: np.ndarray) -> float:
    d = a.shape[0]
    th, v = z[:d], z[d:]
    return float(0.5 * v @ m @ v + 0.5 * th @ a @ th)


MASSES = {
    "scalar": lambda d: 2.5,
    "vector": lambda d: np.linspace(0.5, 3.0, d),
    "matrix": lambda d: _spd(d, 4.0),
    "none": lambda d: None,
}


@pytest.mark.parametrize("mass_kind", list(MASSES))
@pytest.mark.parametrize("gamma", [0.0, 0.3, 3.0])
def test_damped_inertia_of_a_full_matrix_matches_expm(mass_kind: str, gamma: float) -> None:
    d = 4
    a = _spd(d)
    mass = MASSES[mass_kind](d)
    m = theory._mass_matrix(1.0 if mass is None else mass, d)
    theta0, v0 = RNG.standard_normal(d), RNG.standard_normal(d)
    t = np.array([0.0, 0.4, 1.7, 5.0])
    got = theory.damped_quadratic_inertia(a, gamma, theta0, v0, t, mass=mass)
    f = _generator(a, m, gamma)
    z0 = np.concatenate([theta0, v0])
    want = np.array([_energy(a, m, expm(f * tj) @ z0) for tj in t])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_ensembles_of_initial_states_in_coordinates() -> None:
    a, m = _spd(3), _spd(3, 2.0)
    theta0 = RNG.standard_normal((5, 3))
    got = theory.damped_quadratic_inertia(a, 0.5, theta0, None, [0.0, 1.0], mass=m)
    assert got.shape == (2, 5)
    for p in range(5):
        one = theory.damped_quadratic_inertia(a, 0.5, theta0[p], None, [0.0, 1.0], mass=m)
        np.testing.assert_allclose(got[:, p], one, rtol=1e-12)


def test_diagonal_case_and_unit_mass_agree_with_the_eigenvalue_form() -> None:
    lam = np.array([0.5, 2.0, 3.0])
    theta0, v0, t = np.array([1.0, -1.0, 0.5]), np.array([0.2, 0.0, 0.1]), np.linspace(0, 3, 7)
    ref = theory.damped_quadratic_inertia(lam, 0.7, theta0, v0, t)
    np.testing.assert_allclose(
        theory.damped_quadratic_inertia(np.diag(lam), 0.7, theta0, v0, t), ref, rtol=1e-12
    )
    np.testing.assert_allclose(
        theory.damped_quadratic_inertia(lam, 0.7, theta0, v0, t, mass=1.0), ref, rtol=1e-12
    )
    # a scalar mass m is the eigenvalue problem lam / m with x = sqrt(m) theta
    got = theory.damped_quadratic_inertia(lam, 0.7, theta0, v0, t, mass=4.0)
    want = theory.damped_quadratic_inertia(lam / 4.0, 0.7, 2.0 * theta0, 2.0 * v0, t)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def _van_loan_expected(
    a: np.ndarray, m: np.ndarray, gamma: float, sigma: float, z0: np.ndarray, t: float
) -> float:
    """E[I](t) from expm: the mean by e^{Ft}, the covariance by Van Loan's block exponential,
    with noise covariance ``G G^T`` where ``G = [0; sigma M^{-1/2}]``."""
    d = a.shape[0]
    f = _generator(a, m, gamma)
    w, u = np.linalg.eigh(m)
    m_inv_half = (u / np.sqrt(w)) @ u.T
    g = np.vstack([np.zeros((d, d)), sigma * m_inv_half])
    block = np.zeros((4 * d, 4 * d))
    block[: 2 * d, : 2 * d], block[: 2 * d, 2 * d :], block[2 * d :, 2 * d :] = -f, g @ g.T, f.T
    e = expm(block * t)
    cov = e[2 * d :, 2 * d :].T @ e[: 2 * d, 2 * d :]
    mean = expm(f * t) @ z0
    qm = np.block([[a, np.zeros((d, d))], [np.zeros((d, d)), m]])
    return _energy(a, m, mean) + 0.5 * float(np.trace(qm @ cov))


@pytest.mark.parametrize("mass_kind", ["scalar", "vector", "matrix"])
@pytest.mark.parametrize("gamma", [0.0, 0.8])
def test_expected_inertia_of_a_full_matrix_matches_van_loan(mass_kind: str, gamma: float) -> None:
    d, sigma = 3, 0.6
    a = _spd(d)
    mass = MASSES[mass_kind](d)
    m = theory._mass_matrix(mass, d)
    theta0, v0 = RNG.standard_normal(d), RNG.standard_normal(d)
    t = [0.0, 0.5, 2.0]
    got = theory.expected_inertia(a, gamma, sigma, theta0, v0, t, mass=mass)
    want = [_van_loan_expected(a, m, gamma, sigma, np.concatenate([theta0, v0]), tj) for tj in t]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_a_deliberately_wrong_change_of_variables_is_caught() -> None:
    """The expm check fails if the modes forget the mass (x = Q^T theta instead of Q^T M theta)."""
    d = 3
    a, m = _spd(d), _spd(d, 4.0)
    theta0, v0 = RNG.standard_normal(d), RNG.standard_normal(d)
    lam, q = theory.normal_modes(a, m)
    wrong = theory.damped_quadratic_inertia(lam, 0.3, theta0 @ q, v0 @ q, [1.0])
    f = _generator(a, m, 0.3)
    want = _energy(a, m, expm(f) @ np.concatenate([theta0, v0]))
    assert not np.isclose(wrong[0], want, rtol=1e-6)


def test_simulate_with_a_full_matrix_and_vector_mass_follows_the_closed_form() -> None:
    a = _spd(3)
    mass = np.array([0.5, 1.0, 2.0])
    theta0, v0 = np.array([1.0, -0.5, 0.3]), np.array([0.0, 0.2, -0.1])
    traj = inertia.simulate(
        potentials.Quadratic(matrix=a),
        theta0,
        v0,
        gamma=0.4,
        dt=1e-3,
        n_steps=2000,
        save_every=500,
        method="yoshida4",
        mass=mass,
    )
    want = theory.damped_quadratic_inertia(a, 0.4, theta0, v0, traj.t, mass=mass)
    np.testing.assert_allclose(traj.inertia[:, 0], want, rtol=1e-6)


def test_normal_modes_diagonalise_both_matrices() -> None:
    a, m = _spd(4), _spd(4, 3.0)
    lam, q = theory.normal_modes(a, m)
    np.testing.assert_allclose(q.T @ m @ q, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(q.T @ a @ q, np.diag(lam), atol=1e-10)
    assert np.all(np.diff(lam) >= 0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: theory.convergence_rate([-4.0], 1.0),
            ValueError,
            r"`eigenvalues` must all be >= 0, got \[-4\.0\]",
        ),
        (
            lambda: theory.gradient_flow_rate([-1.0]),
            ValueError,
            r"`eigenvalues` must all be >= 0, got \[-1\.0\]",
        ),
        (
            lambda: theory.gradient_flow_rate([]),
            ValueError,
            r"`eigenvalues` must be a non-empty 1-D sequence",
        ),
        (
            lambda: theory.convergence_rate([], 1.0),
            ValueError,
            r"`eigenvalues` must be a non-empty 1-D sequence",
        ),
        (
            lambda: theory.damped_quadratic_inertia([1.0], 0.1, [math.nan], [0.0], [1.0]),
            ValueError,
            r"`theta0` must be finite, got nan at theta0\[0\]",
        ),
        (
            lambda: theory.damped_quadratic_inertia([1.0], 0.1, [1.0], [math.inf], [1.0]),
            ValueError,
            r"`v0` must be finite, got inf at v0\[0\]",
        ),
        (
            lambda: theory.heating_inertia(math.nan, 2, 0.1, 1.0),
            ValueError,
            r"`inertia0` must be finite, got nan",
        ),
        (
            lambda: theory.damped_quadratic_inertia([1.0], 0.1, [1j], None, [1.0]),
            TypeError,
            r"`theta0` must hold real numbers.*complex",
        ),
        (
            lambda: theory.damped_quadratic_inertia(np.array([True]), 0.1, [1.0], None, [1.0]),
            TypeError,
            r"`eigenvalues` must hold real numbers.*bool",
        ),
        (
            lambda: theory.damped_quadratic_inertia([1.0], 0.1, [1.0], None, [-1.0]),
            ValueError,
            r"`t` must be.*>= 0, got \[-1\.0\]",
        ),
        (
            lambda: theory.damped_quadratic_inertia([[1.0, 2.0], [0.0, 1.0]], 0.1, [1.0, 0.0], None, [1.0]),
            ValueError,
            r"`eigenvalues` must be symmetric.*\[0, 1\] = 2\.0 but eigenvalues\[1, 0\] = 0\.0",
        ),
        (
            lambda: theory.damped_quadratic_inertia([[1.0, 2.0], [2.0, 1.0]], 0.1, [1.0, 0.0], None, [1.0]),
            ValueError,
            r"`eigenvalues` must be positive definite, got eigenvalues \[-1\.0, 3\.0\]",
        ),
        (
            lambda: theory.damped_quadratic_inertia(np.eye(2), 0.1, [1.0, 0.0], None, [1.0], mass=-1.0),
            ValueError,
            r"`mass` must be > 0, got -1\.0",
        ),
        (
            lambda: theory.damped_quadratic_inertia(np.eye(2), 0.1, [1.0, 0.0], None, [1.0], mass=[1.0, 0.0]),
            ValueError,
            r"`mass` must be > 0 everywhere, got \[1\.0, 0\.0\]",
        ),
        (
            lambda: theory.damped_quadratic_inertia(np.eye(2), 0.1, [1.0, 0.0], None, [1.0], mass=np.ones(3)),
            ValueError,
            r"`mass` must have shape \(2,\) like the potential, got \(3,\)",
        ),
        (
            lambda: theory.expected_inertia(np.eye(2), 0.1, 0.1, [1.0, 0.0, 0.0], None, [1.0], mass=1.0),
            ValueError,
            r"`theta0` must have last dimension 2 like `A`, got shape \(3,\)",
        ),
        (
            lambda: theory.damped_quadratic_inertia(np.eye(2), 0.1, [1.0, 0.0], None, [1.0], mass=True),
            TypeError,
            r"`mass` must be a positive number.*got True",
        ),
    ],
)
def test_theory_inputs_are_checked(call, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()


def test_integer_inputs_are_promoted() -> None:
    got = theory.damped_quadratic_inertia([1, 4], 0, [1, 1], [0, 0], [0, 7])
    np.testing.assert_allclose(got, 2.5)
    assert theory.convergence_rate([4], 1) == pytest.approx(0.5)
