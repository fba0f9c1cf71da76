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

import math

import numpy as np

from inertia._validate import finite_float
from inertia.dynamics import ConstantFriction
from inertia.integrators import IntegratorState, StepContext, get_method

__all__ = [
    "discrete_expected_inertia",
    "linear_step",
    "max_stable_dt",
    "spectral_radius",
    "step_matrix",
]


_MAX_NOISE_DRAWS = 4  # noisy sub-steps per step that linear_step can resolve


def linear_step(
    method: str, eigenvalues: object, gamma: float, dt: float, sigma: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The affine one-step map of ``method`` on a quadratic: ``X' = S X + U xi``.

    ``X = (theta, v)`` per mode, ``xi`` the standard normals the step draws. Built by stepping
    the registered integrator (unit mass, constant ``gamma``) from the basis states with no
    noise (the columns of ``S``) and from zero with one unit noise draw at a time (the columns
    of ``U``), which is exact because every method here is linear on a quadratic.

    Returns:
        ``S`` of shape ``(n_eigenvalues, 2, 2)`` and ``U`` of shape ``(n_eigenvalues, 2, k)``,
        ``k`` the number of noise draws per step (0 when ``sigma == 0``).
    """
    lam = np.atleast_1d(np.asarray(eigenvalues, dtype=np.float64))
    gamma = finite_float("gamma", gamma, minimum=0.0)
    sigma = finite_float("sigma", sigma, minimum=0.0)
    dt = finite_float("dt", dt, minimum=0.0, strict=True)
    meth = get_method(method)
    d = lam.size
    n_rows = 2 + _MAX_NOISE_DRAWS
    theta = np.zeros((n_rows, d))
    v = np.zeros((n_rows, d))
    theta[0], v[1] = 1.0, 1.0
    used: set[int] = set()

    def noise(n: int, k: int) -> np.ndarray:
        if k >= _MAX_NOISE_DRAWS:
            raise ValueError(f"{method!r} draws more than {_MAX_NOISE_DRAWS} noises per step")
        used.add(k)
        xi = np.zeros((n_rows, d))
        xi[2 + k] = 1.0
        return xi

    def value_and_grad(th: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return 0.5 * np.sum(lam * th * th, axis=-1), lam * th

    ctx = StepContext(value_and_grad, 1.0, 1.0, 1.0, ConstantFriction(gamma), sigma, dt, 0.0, noise)
    step = meth.make_step(gamma == 0.0 and sigma == 0.0)
    out = step(IntegratorState(theta, v), 0, ctx).state
    x = np.stack([out.theta, out.v], axis=1)  # (n_rows, 2, d)
    s_mat = np.transpose(x[:2], (2, 1, 0))  # (d, 2, 2): [mode, component, column]
    k = len(used)
    u_mat = np.transpose(x[2 : 2 + k], (2, 1, 0))
    return s_mat, u_mat


def step_matrix(method: str, eigenvalues: object, gamma: float, dt: float) -> np.ndarray:
    """The one-step map ``S`` of ``method`` on each mode, shape ``(n_eigenvalues, 2, 2)``.

    Column 0 is the image of ``(theta, v) = (1, 0)``, column 1 of ``(0, 1)``.

    Example:
        >>> step_matrix("euler", [1.0], 0.0, 0.1)[0].tolist()
        [[1.0, 0.1], [-0.1, 1.0]]
    """
    return linear_step(method, eigenvalues, gamma, dt)[0]


def discrete_expected_inertia(
    method: str,
    eigenvalues: object,
    gamma: float,
    sigma: float,
    dt: float,
    theta0: object,
    v0: object,
    steps: object,
) -> np.ndarray:
    """Exact ``E[I_n]`` of the *discrete* scheme on a quadratic (unit mass, constant gamma).

    With ``X' = S X + U xi``: mean ``m_{n+1} = S m_n``, covariance
    ``C_{n+1} = S C_n S^T + U U^T`` (``C_0 = 0``), and per mode
    ``E[I_n] = 1/2 (lambda (m_x^2 + C_xx) + m_v^2 + C_vv)``. Comparing a simulation with this
    has no discretisation bias; comparing this with :func:`inertia.theory.expected_inertia`
    measures the scheme's bias alone.

    Args:
        steps: increasing step indices at which to return ``E[I_n]``.

    Returns:
        shape ``(len(steps),)``.
    """
    lam = np.atleast_1d(np.asarray(eigenvalues, dtype=np.float64))
    s_mat, u_mat = linear_step(method, lam, gamma, dt, sigma)
    noise_cov = u_mat @ np.swapaxes(u_mat, -1, -2)
    want = np.asarray(steps, dtype=np.int64)
    if want.ndim != 1 or np.any(np.diff(want) < 0) or (want.size and want[0] < 0):
        raise ValueError("`steps` must be a 1-D increasing sequence of step indices >= 0")
    m = np.stack(
        [
            np.asarray(theta0, dtype=np.float64) * np.ones_like(lam),
            np.asarray(v0, dtype=np.float64) * np.ones_like(lam),
        ],
        axis=-1,
    )[..., None]
    c = np.zeros((lam.size, 2, 2))
    out = np.empty(want.size)
    n = 0
    for i, target in enumerate(want):
        while n < target:
            m = s_mat @ m
            c = s_mat @ c @ np.swapaxes(s_mat, -1, -2) + noise_cov
            n += 1
        e_x2 = m[:, 0, 0] ** 2 + c[:, 0, 0]
        e_v2 = m[:, 1, 0] ** 2 + c[:, 1, 1]
        out[i] = 0.5 * float(np.sum(lam * e_x2 + e_v2))
    return out


def spectral_radius(method: str, eigenvalues: object, gamma: float, dt: float) -> np.ndarray:
    """``rho(S)`` per eigenvalue: the factor by which a mode's amplitude can grow per step."""
    return np.max(np.abs(np.linalg.eigvals(step_matrix(method, eigenvalues, gamma, dt))), axis=-1)


def max_stable_dt(method: str, eigenvalue: float, gamma: float = 0.0, *, rtol: float = 1e-10) -> float:
    """The largest ``dt`` with ``rho(S) <= 1`` for one eigenvalue (bisection; 0 if none).

    Example:
        >>> round(max_stable_dt("leapfrog", 4.0), 8)  # 2 / sqrt(4)
        1.0
    """
    lam = finite_float("eigenvalue", eigenvalue, minimum=0.0, strict=True)
    tol = 1e-12

    def stable(dt: float) -> bool:
        return bool(spectral_radius(method, [lam], gamma, dt)[0] <= 1.0 + tol)

    lo = 1e-3 / math.sqrt(lam)
    if not stable(lo):
        return 0.0
    hi = lo
    while stable(hi):
        lo, hi = hi, 2.0 * hi
        if hi > 1e6 / math.sqrt(lam):
            return float("inf")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return float(lo)
