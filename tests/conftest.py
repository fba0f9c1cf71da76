"""Shared helpers for the integrator, structure, validation, divergence, randomness, backend,
potential and stability tests.

Only fixtures and plain helper functions live here: nothing is registered globally. Integrators
added for a test (a hand-written RK4, deliberately broken variants) go through
:func:`inertia.integrators.register` inside the ``temporary_method`` fixture, which removes them
again afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from inertia import potentials
from inertia.dynamics import Friction, as_friction
from inertia.integrators import (
    METHODS,
    IntegratorState,
    Method,
    StepContext,
    StepFn,
    StepResult,
    register,
)

#: Every registered deterministic method with the order it declares (noise off).
DETERMINISTIC = ("euler", "euler_maruyama", "symplectic_euler", "leapfrog", "yoshida4", "baoab")
#: The methods that accept ``sigma > 0``.
NOISY = ("euler_maruyama", "symplectic_euler", "leapfrog", "baoab")
#: The conformal symplectic methods.
SYMPLECTIC = ("symplectic_euler", "leapfrog", "yoshida4", "baoab")


def quartic_chain(dim: int = 2) -> potentials.QuarticChain:
    """The nonlinear coupled test potential: quadratic diagonal plus quartic cross terms."""
    return potentials.QuarticChain(np.linspace(1.0, 2.0, dim), beta=1.0)


def reference_solution(
    pot: potentials.Potential,
    theta0: Any,
    v0: Any,
    gamma: float | Friction | Callable[[float], float],
    t0: float,
    horizon: float,
    mass: Any = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(theta, v)`` at ``t0 + horizon`` from DOP853 with ``rtol = atol = 1e-13``.

    Solves ``theta' = v``, ``v' = -M^{-1} grad L(theta) - gamma(t) v`` (THEORY.md section 2 with
    ``sigma = 0``), independently of every integrator in the package.
    """
    friction = as_friction(gamma)
    th0 = np.asarray(theta0, dtype=np.float64)
    d = th0.size
    inv_m = 1.0 / np.broadcast_to(np.asarray(mass, dtype=np.float64), (d,))
    y0 = np.concatenate([th0, np.zeros(d) if v0 is None else np.asarray(v0, dtype=np.float64)])

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        theta, v = y[:d], y[d:]
        return np.concatenate([v, -inv_m * np.asarray(pot.grad(theta)) - friction(t) * v])

    sol = solve_ivp(rhs, (t0, t0 + horizon), y0, method="DOP853", rtol=1e-13, atol=1e-13)
    assert sol.success, sol.message
    return sol.y[:d, -1], sol.y[d:, -1]


def fit_slope(x: Any, y: Any) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(np.asarray(x)), np.log(np.asarray(y)), 1)[0])


def windowed_drift(inertia_path: np.ndarray, t: np.ndarray, n_windows: int = 50) -> tuple[float, float]:
    """``(drift, max_error)`` of ``|I(t) - I(0)|`` along one path.

    The error is cut into ``n_windows`` consecutive windows; a least-squares line is fitted to the
    windows' maxima against the windows' mean times, and ``drift = slope * horizon`` is what that
    line predicts the error gains over the run. A bounded (quasi-periodic) error has
    ``|drift| << max_error``; a secular one (linear or exponential) has ``drift ~ max_error``.
    A non-finite energy counts as infinite drift.
    """
    err = np.abs(inertia_path - inertia_path[0])
    if not np.all(np.isfinite(err)):
        return float("inf"), float("inf")
    n = (err.size - 1) // n_windows * n_windows
    maxima = err[1 : n + 1].reshape(n_windows, -1).max(axis=1)
    centres = t[1 : n + 1].reshape(n_windows, -1).mean(axis=1)
    slope = float(np.polyfit(centres, maxima, 1)[0])
    return slope * float(t[-1] - t[0]), float(err.max())


def has_secular_drift(inertia_path: np.ndarray, t: np.ndarray) -> bool:
    """The long-time energy check: the fitted drift exceeds 5% of the maximum error."""
    drift, max_err = windowed_drift(inertia_path, t)
    return not abs(drift) < 0.05 * max_err


def make_rk4_step(friction_free: bool) -> StepFn:
    """Classical (non-symplectic) RK4 on ``theta' = v, v' = -M^{-1} grad L - gamma(t) v``."""

    def step(state: IntegratorState, n: int, ctx: StepContext) -> StepResult:
        theta, v = state.theta, state.v
        dt, t = ctx.dt, ctx.time(n)

        def rhs(time: float, x: Any, u: Any) -> tuple[Any, Any]:
            _, g = ctx.value_and_grad(x)
            return u, -(ctx.inv_mass * g) - ctx.friction(time) * u

        k1 = rhs(t, theta, v)
        k2 = rhs(t + dt / 2, theta + (dt / 2) * k1[0], v + (dt / 2) * k1[1])
        k3 = rhs(t + dt / 2, theta + (dt / 2) * k2[0], v + (dt / 2) * k2[1])
        k4 = rhs(t + dt, theta + dt * k3[0], v + dt * k3[1])
        theta = theta + (dt / 6) * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        v = v + (dt / 6) * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        return StepResult(IntegratorState(theta, v), 0.0, 4)

    return step


RK4 = Method(
    "test_rk4", 4, None, False, False, 4, make_rk4_step, "classical Runge-Kutta 4 (test only): non-symplectic"
)


@pytest.fixture
def temporary_method() -> Iterator[Callable[[Method], str]]:
    """Register methods for one test through the public registry; unregister them afterwards."""
    names: list[str] = []

    def add(method: Method) -> str:
        register(method)
        names.append(method.name)
        return method.name

    yield add
    for name in names:
        METHODS.pop(name, None)


def final_state(traj: Any) -> tuple[np.ndarray, np.ndarray]:
    """The final ``(theta, v)`` of a trajectory as NumPy arrays (any backend)."""
    from inertia._backend import to_numpy

    return to_numpy(traj.theta), to_numpy(traj.v)
