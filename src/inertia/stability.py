"""Linear stability of every integrator on a quadratic, from the integrator itself.

On ``L = 1/2 lambda theta^2`` (unit mass, or ``lambda`` read as ``lambda/m``) with constant
friction ``gamma`` and no noise, one step of any method here is a linear map
``(theta, v) -> S(lambda, gamma, dt) (theta, v)``. :func:`step_matrix` builds ``S`` by stepping the
registered integrator from the two basis states, so the analysis cannot disagree with the code.
A method is stable when the spectral radius ``rho(S) <= 1``. Closed forms this reproduces
(THEORY.md section 7): leapfrog ``dt sqrt(lambda_max) < 2``; heavy-ball / symplectic Euler
``dt^2 lambda_max < 2 (1 + e^{-gamma dt})``; explicit Euler with ``gamma = 0`` is unstable for
every ``dt`` (``rho = sqrt(1 + lambda dt^2)``).
"""

from __future__ import annotations

import numpy as np

from inertia._validate import finite_float
from inertia.dynamics import ConstantFriction
from inertia.integrators import IntegratorState, StepContext, get_method

__all__ = ["max_stable_dt", "spectral_radius", "step_matrix"]


def step_matrix(method: str, eigenvalues: object, gamma: float, dt: float) -> np.ndarray:
    """The one-step map ``S`` of ``method`` on each mode, shape ``(n_eigenvalues, 2, 2)``.

    Column 0 is the image of ``(theta, v) = (1, 0)``, column 1 of ``(0, 1)``.

    Example:
        >>> step_matrix("euler", [1.0], 0.0, 0.1)[0].tolist()
        [[1.0, 0.1], [-0.1, 1.0]]
    """
    lam = np.atleast_1d(np.asarray(eigenvalues, dtype=np.float64))
    gamma = finite_float("gamma", gamma, minimum=0.0)
    dt = finite_float("dt", dt, minimum=0.0, strict=True)
    meth = get_method(method)
    d = lam.size
    theta = np.stack([np.ones(d), np.zeros(d)])
    v = np.stack([np.zeros(d), np.ones(d)])

    def value_and_grad(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 0.5 * np.sum(lam * th * th, axis=-1), lam * th

    ctx = StepContext(value_and_grad, 1.0, 1.0, 1.0, ConstantFriction(gamma), 0.0, dt, 0.0,
                      lambda n, k: np.zeros((2, d)))
    step = meth.make_step(gamma == 0.0)
    out = step(IntegratorState(theta, v), 0, ctx).state
    s = np.empty((d, 2, 2))
    s[:, 0, 0], s[:, 1, 0] = out.theta[0], out.v[0]
    s[:, 0, 1], s[:, 1, 1] = out.theta[1], out.v[1]
    return s


def spectral_radius(method: str, eigenvalues: object, gamma: float, dt: float) -> np.ndarray:
    """``rho(S)`` per eigenvalue: the factor by which a mode's amplitude can grow per step."""
    return np.max(np.abs(np.linalg.eigvals(step_matrix(method, eigenvalues, gamma, dt))), axis=-1)


def max_stable_dt(method: str, eigenvalue: float, gamma: float = 0.0, *,
                  rtol: float = 1e-10) -> float:
    """The largest ``dt`` with ``rho(S) <= 1`` for one eigenvalue (bisection; 0 if none).

    Example:
        >>> round(max_stable_dt("leapfrog", 4.0), 8)  # 2 / sqrt(4)
        1.0
    """
    lam = finite_float("eigenvalue", eigenvalue, minimum=0.0, strict=True)
    tol = 1e-12

    def stable(dt: float) -> bool:
        return bool(spectral_radius(method, [lam], gamma, dt)[0] <= 1.0 + tol)

    lo = 1e-3 / np.sqrt(lam)
    if not stable(lo):
        return 0.0
    hi = lo
    while stable(hi):
        lo, hi = hi, 2.0 * hi
        if hi > 1e6 / np.sqrt(lam):
            return float("inf")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo
