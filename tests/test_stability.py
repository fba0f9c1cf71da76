"""Linear stability (THEORY.md section 7, :mod:`inertia.stability`).

``step_matrix`` is built by stepping the registered integrator; here it is checked against the
one-step matrices written out by hand from each scheme's sub-steps, and ``max_stable_dt``
against the closed-form bounds: leapfrog ``dt sqrt(lambda) < 2``; heavy ball / symplectic Euler
``dt^2 lambda < 2 (1 + e^{-gamma dt})`` (i.e. ``lr lambda < 2 (1 + mu)``); explicit Euler without
friction never stable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from inertia import stability, theory
from inertia.integrators.splitting import YOSHIDA_W0, YOSHIDA_W1

LAMBDAS = [0.3, 1.0, 7.0, 250.0]


def drift(h: float) -> np.ndarray:
    return np.array([[1.0, h], [0.0, 1.0]])


def kick(h: float, lam: float) -> np.ndarray:
    return np.array([[1.0, 0.0], [-h * lam, 1.0]])


def friction(h: float, gamma: float) -> np.ndarray:
    return np.diag([1.0, math.exp(-gamma * h)])


def by_hand(method: str, lam: float, gamma: float, dt: float) -> np.ndarray:
    """The scheme's sub-steps as 2x2 matrices, the first sub-step rightmost."""

    def leapfrog(h: float) -> np.ndarray:
        return (
            friction(h / 2, gamma) @ kick(h / 2, lam) @ drift(h) @ kick(h / 2, lam) @ friction(h / 2, gamma)
        )

    if method == "euler":
        return np.array([[1.0, dt], [-lam * dt, 1.0 - gamma * dt]])
    if method == "symplectic_euler":  # O, then B, then A
        return drift(dt) @ kick(dt, lam) @ friction(dt, gamma)
    if method == "leapfrog":
        return leapfrog(dt)
    if method == "baoab":
        return kick(dt / 2, lam) @ drift(dt / 2) @ friction(dt, gamma) @ drift(dt / 2) @ kick(dt / 2, lam)
    if method == "yoshida4":
        return leapfrog(YOSHIDA_W1 * dt) @ leapfrog(YOSHIDA_W0 * dt) @ leapfrog(YOSHIDA_W1 * dt)
    raise AssertionError(method)


@pytest.mark.parametrize("method", ["euler", "symplectic_euler", "leapfrog", "baoab", "yoshida4"])
@pytest.mark.parametrize("gamma", [0.0, 0.4, 3.0])
@pytest.mark.parametrize("dt", [0.01, 0.1, 0.5])
def test_step_matrix_equals_the_scheme_by_hand(method: str, gamma: float, dt: float) -> None:
    s = stability.step_matrix(method, LAMBDAS, gamma, dt)
    assert s.shape == (len(LAMBDAS), 2, 2)
    for i, lam in enumerate(LAMBDAS):
        np.testing.assert_allclose(s[i], by_hand(method, lam, gamma, dt), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_euler_step_matrix_is_exact(gamma: float) -> None:
    dt, lam = 0.1, 3.0
    s = stability.step_matrix("euler", [lam], gamma, dt)[0]
    np.testing.assert_array_equal(s, [[1.0, dt], [-lam * dt, 1.0 - gamma * dt]])
    if gamma == 0.0:
        rho = stability.spectral_radius("euler", [lam], 0.0, dt)[0]
        np.testing.assert_allclose(rho, math.sqrt(1.0 + lam * dt * dt), rtol=1e-14)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_leapfrog_bound(lam: float) -> None:
    bound = 2.0 / math.sqrt(lam)
    for method in ("leapfrog", "baoab"):
        np.testing.assert_allclose(stability.max_stable_dt(method, lam), bound, rtol=1e-8)
    np.testing.assert_allclose(theory.leapfrog_max_dt(lam), bound, rtol=1e-15)
    assert stability.spectral_radius("leapfrog", [lam], 0.0, 0.99 * bound)[0] <= 1.0 + 1e-12
    assert stability.spectral_radius("leapfrog", [lam], 0.0, 1.01 * bound)[0] > 1.1


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 5.0])
def test_heavy_ball_bound(lam: float, gamma: float) -> None:
    """Symplectic Euler is heavy ball with lr = dt^2, mu = e^{-gamma dt}: stable iff
    ``dt^2 lambda < 2 (1 + e^{-gamma dt})``, i.e. ``lr lambda < 2 (1 + mu)``."""
    dt = stability.max_stable_dt("symplectic_euler", lam, gamma)
    mu = math.exp(-gamma * dt)
    np.testing.assert_allclose(dt * dt * lam, 2.0 * (1.0 + mu), rtol=1e-8)
    if gamma > 0:  # theory.heavy_ball_max_lr takes momentum < 1
        np.testing.assert_allclose(dt * dt, theory.heavy_ball_max_lr(lam, mu), rtol=1e-8)
    else:
        np.testing.assert_allclose(dt, 2.0 / math.sqrt(lam), rtol=1e-8)


@pytest.mark.parametrize("lam", LAMBDAS)
def test_explicit_euler_without_friction_is_never_stable(lam: float) -> None:
    assert stability.max_stable_dt("euler", lam, 0.0) == 0.0
    dts = np.geomspace(1e-6, 1.0, 7) / math.sqrt(lam)
    for dt in dts:
        assert stability.spectral_radius("euler", [lam], 0.0, dt)[0] > 1.0


@pytest.mark.parametrize("lam", [1.0, 7.0])
@pytest.mark.parametrize("gamma", [0.2, 1.0])
def test_explicit_euler_with_friction_bound(lam: float, gamma: float) -> None:
    """Complex eigenvalues (gamma^2 < 4 lambda): ``|z|^2 = 1 - gamma dt + lambda dt^2``, stable
    iff ``dt < gamma / lambda``."""
    np.testing.assert_allclose(stability.max_stable_dt("euler", lam, gamma), gamma / lam, rtol=1e-8)


@pytest.mark.parametrize("lam", [1.0, 9.0])
def test_yoshida4_bound_from_the_composed_matrices(lam: float) -> None:
    """The composition is stable while ``|tr S| / 2 <= 1`` (``det S = 1``); bisect the hand-made
    product independently and compare."""

    def stable(dt: float) -> bool:
        return abs(np.trace(by_hand("yoshida4", lam, 0.0, dt))) / 2 <= 1.0

    lo, hi = 0.1 / math.sqrt(lam), 3.0 / math.sqrt(lam)
    assert stable(lo) and not stable(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    np.testing.assert_allclose(stability.max_stable_dt("yoshida4", lam), lo, rtol=1e-7)
    assert lo < 2.0 / math.sqrt(lam)  # smaller than leapfrog's (the negative middle sub-step)


def test_spectral_radius_with_friction_is_the_contraction() -> None:
    """Conformal symplectic: ``det S = e^{-gamma dt}``, and ``rho = e^{-gamma dt / 2}`` while the
    eigenvalues are complex."""
    gamma, dt, lam = 0.4, 0.1, 7.0
    for method in ("symplectic_euler", "leapfrog", "baoab", "yoshida4"):
        s = stability.step_matrix(method, [lam], gamma, dt)[0]
        np.testing.assert_allclose(np.linalg.det(s), math.exp(-gamma * dt), rtol=1e-13)
        np.testing.assert_allclose(
            stability.spectral_radius(method, [lam], gamma, dt)[0], math.exp(-gamma * dt / 2), rtol=1e-12
        )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: stability.max_stable_dt("leapfrog", 0.0), ValueError, r"`eigenvalue` must be > 0"),
        (lambda: stability.max_stable_dt("leapfrog", -1.0), ValueError, r"`eigenvalue` must be > 0"),
        (lambda: stability.max_stable_dt("leapfrog", 1.0, -0.1), ValueError, r"`gamma` must be >= 0"),
        (lambda: stability.step_matrix("leapfrog", [1.0], 0.0, 0.0), ValueError, r"`dt` must be > 0"),
        (lambda: stability.step_matrix("nope", [1.0], 0.0, 0.1), ValueError, r"`method` must be one"),
    ],
)
def test_bad_arguments(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()
