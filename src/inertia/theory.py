"""Closed forms and predictions of THEORY.md sections 3, 4 and 7.

Everything here is exact for its stated regime and independent of the integrators (except the
stability bounds, which are re-exported from :mod:`inertia.stability`).

Quadratic ``L = 1/2 theta^T A theta``, unit mass, ``A = Q diag(lambda) Q^T``: in the eigenbasis the
modes decouple into ``x'' + gamma x' + lambda x = 0``. Functions take ``theta0``/``v0`` *in that
eigenbasis* (for a diagonal ``A`` the eigenbasis is the coordinate basis up to order: use
``Quadratic.eigenvectors.T @ theta``).

General quadratics. :func:`damped_quadratic_inertia` and :func:`expected_inertia` also take, in
place of the eigenvalues, a symmetric positive-definite matrix ``A`` (a 2-D array), and a keyword
``mass=`` (a scalar, a ``(d,)`` vector or a symmetric positive-definite ``(d, d)`` matrix ``M``);
``theta0``/``v0`` are then in the coordinates of ``simulate``. :func:`normal_modes` solves the
generalised eigenproblem ``A q = lambda M q`` (``scipy.linalg.eigh(A, M)``), whose ``Q`` has
``Q^T M Q = I`` and ``Q^T A Q = diag(lambda)``: with ``x = Q^T M theta`` the dynamics
``M theta'' = -A theta - gamma M theta' + sigma M^{1/2} xi`` become the decoupled
``x'' + gamma x' + lambda x = sigma xi'`` with independent unit noises ``xi'`` (covariance
``Q^T M Q = I``), and ``I = 1/2 theta'^T M theta' + 1/2 theta^T A theta = 1/2 sum_i
(x_i'^2 + lambda_i x_i^2)``, so the per-mode formulas below apply unchanged.

Every function validates its inputs as :func:`inertia.simulate` does: integers are promoted to
float64, booleans and complex numbers refused, non-finite values, negative eigenvalues and empty
lists raise an error naming the argument, the rule and the value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import expm, solve_continuous_lyapunov

from inertia._validate import check_finite, finite_float, real_array, real_vector
from inertia.stability import max_stable_dt, spectral_radius, step_matrix

__all__ = [
    "convergence_rate",
    "critical_damping",
    "damped_quadratic_inertia",
    "damped_quadratic_modes",
    "expected_inertia",
    "gradient_flow_rate",
    "heating_inertia",
    "heavy_ball_max_lr",
    "leapfrog_max_dt",
    "max_stable_dt",
    "moments",
    "normal_modes",
    "spectral_radius",
    "stationary_inertia",
    "step_matrix",
    "temperature",
]


def _eigenvalues(eigenvalues: Any) -> np.ndarray:
    """Non-empty, finite, real and >= 0 (a flat mode is allowed), as float64."""
    return real_vector("eigenvalues", eigenvalues, minimum=0.0)


def _state(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(real_array(name, x), dtype=np.float64)
    return check_finite(name, arr)


def _modes(eigenvalues: Any, theta0: Any, v0: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lam = _eigenvalues(eigenvalues)
    x0 = _state("theta0", theta0)
    u0 = np.zeros_like(x0) if v0 is None else _state("v0", v0)
    if u0.shape != x0.shape:
        raise ValueError(f"`v0` must have the shape of `theta0` {x0.shape}, got {u0.shape}")
    for name, arr in (("theta0", x0), ("v0", u0)):
        if arr.shape[-1:] != lam.shape:
            raise ValueError(
                f"`{name}` must have last dimension {lam.size} (one entry per "
                f"eigenvalue), got shape {arr.shape}"
            )
    return lam, x0, u0


def _spd(name: str, value: Any, d: int | None) -> np.ndarray:
    """A symmetric positive-definite ``(d, d)`` float64 matrix, or a clear error."""
    a = np.array(real_array(name, value), dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.size == 0 or (d is not None and a.shape[0] != d):
        want = f"({d}, {d})" if d is not None else "(d, d)"
        raise ValueError(f"`{name}` must be a square matrix of shape {want}, got shape {a.shape}")
    check_finite(name, a)
    scale = float(np.abs(a).max())
    if not np.allclose(a, a.T, rtol=1e-12, atol=1e-12 * scale):
        i, j = np.unravel_index(int(np.argmax(np.abs(a - a.T))), a.shape)
        raise ValueError(
            f"`{name}` must be symmetric (to 1e-12 relative), got {name}[{i}, {j}] = {float(a[i, j])!r} "
            f"but {name}[{j}, {i}] = {float(a[j, i])!r}"
        )
    a = 0.5 * (a + a.T)
    lam = np.linalg.eigvalsh(a)
    if not lam[0] > 0:
        raise ValueError(f"`{name}` must be positive definite, got eigenvalues {lam.tolist()}")
    return a


def _mass_matrix(mass: Any, d: int) -> np.ndarray:
    """``mass`` (a scalar, a ``(d,)`` vector or a ``(d, d)`` SPD matrix) as a ``(d, d)`` matrix."""
    if isinstance(mass, bool):
        raise TypeError(f"`mass` must be a positive number, a (d,) vector or a (d, d) matrix, got {mass!r}")
    m = np.asarray(real_array("mass", mass), dtype=np.float64)
    if m.ndim == 0:
        return np.eye(d) * finite_float("mass", float(m), minimum=0.0, strict=True)
    if m.ndim == 1:
        if m.shape != (d,):
            raise ValueError(f"`mass` must have shape ({d},) like the potential, got {m.shape}")
        check_finite("mass", m)
        if not np.all(m > 0):
            raise ValueError(f"`mass` must be > 0 everywhere, got {m.tolist()}")
        return np.diag(m)
    return _spd("mass", m, d)


def normal_modes(matrix: Any, mass: Any = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Normal modes of ``M theta'' = -A theta``: the generalised eigenproblem ``A q = lambda M q``.

    Returns ``(lam, Q)`` with ``lam`` ascending and ``Q^T M Q = I``, ``Q^T A Q = diag(lam)``
    (``scipy.linalg.eigh(A, M)``). Mode coordinates are ``x = Q^T M theta`` (and
    ``theta = Q x``); in them ``1/2 theta'^T M theta' + 1/2 theta^T A theta
    = 1/2 sum_i (x_i'^2 + lam_i x_i^2)``.

    Args:
        matrix: the Hessian ``A``, symmetric positive definite ``(d, d)``; a 1-D array means
            ``diag(matrix)``.
        mass: a positive scalar, a ``(d,)`` vector of positive masses or a symmetric
            positive-definite ``(d, d)`` matrix.

    Example:
        >>> lam, q = normal_modes([[2.0, 1.0], [1.0, 2.0]], mass=2.0)
        >>> lam.round(12).tolist()
        [0.5, 1.5]
    """
    from scipy.linalg import eigh

    arr = np.asarray(real_array("eigenvalues", matrix))
    a = np.diag(real_vector("eigenvalues", arr, minimum=0.0)) if arr.ndim == 1 else None
    if a is None:
        a = _spd("eigenvalues", arr, None)
    m = _mass_matrix(mass, a.shape[0])
    lam, q = eigh(a, m)
    return np.asarray(lam, dtype=np.float64), np.asarray(q, dtype=np.float64)


def _to_modes(eigenvalues: Any, theta0: Any, v0: Any, mass: Any) -> tuple[np.ndarray, Any, Any]:
    """The eigenvalues and ``theta0``/``v0`` in mode coordinates: unchanged for 1-D eigenvalues
    without a mass (they are already in the eigenbasis); else through :func:`normal_modes`."""
    arr = np.asarray(real_array("eigenvalues", eigenvalues))
    if arr.ndim != 2 and mass is None:
        return arr, theta0, v0
    lam, q = normal_modes(arr, 1.0 if mass is None else mass)
    m = _mass_matrix(1.0 if mass is None else mass, lam.size)
    x0 = _state("theta0", theta0)
    if x0.shape[-1:] != lam.shape:
        raise ValueError(f"`theta0` must have last dimension {lam.size} like `A`, got shape {x0.shape}")
    u0 = None if v0 is None else _state("v0", v0)
    if u0 is not None and u0.shape != x0.shape:
        raise ValueError(f"`v0` must have the shape of `theta0` {x0.shape}, got {u0.shape}")
    proj = m @ q  # x = Q^T M theta, applied to rows: theta @ (M Q)
    return lam, x0 @ proj, None if u0 is None else u0 @ proj


def _times(t: Any) -> np.ndarray:
    tt = np.atleast_1d(np.asarray(real_array("t", t), dtype=np.float64))
    if tt.ndim != 1 or not np.all(np.isfinite(tt)) or np.any(tt < 0):
        raise ValueError(f"`t` must be a finite time or 1-D array of times >= 0, got {tt.tolist()}")
    return tt


def damped_quadratic_modes(
    eigenvalues: Any, gamma: float, theta0: Any, v0: Any, t: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``x_i(t)`` and ``x_i'(t)`` of ``x'' + gamma x' + lambda_i x = 0``.

    With ``delta = lambda - gamma^2/4`` and ``u0 = v0 + gamma x0 / 2``::

        x(t)  = e^{-gamma t/2} ( x0 C(t) + u0 S(t) )
        x'(t) = e^{-gamma t/2} ( v0 C(t) - (lambda x0 + gamma v0 / 2) S(t) )

    where ``C = cos(w t)``, ``S = sin(w t)/w`` (``w = sqrt(delta)``, underdamped ``delta > 0``);
    ``C = 1``, ``S = t`` (critical ``delta = 0``); ``C = cosh(k t)``, ``S = sinh(k t)/k``
    (``k = sqrt(-delta)``, overdamped). This is the same function as THEORY.md section 4's
    ``c+ e^{r+ t} + c- e^{r- t}`` form, written so it stays accurate near critical damping
    and does not overflow for large ``t``.

    Returns:
        ``(x, xdot)``, each of shape ``(n_t,) + theta0.shape``.
    """
    lam, x0, v0_ = _modes(eigenvalues, theta0, v0)
    gamma = finite_float("gamma", gamma, minimum=0.0)
    tt = _times(t).reshape((-1,) + (1,) * x0.ndim)
    delta = lam - 0.25 * gamma * gamma
    half = 0.5 * gamma
    under, over = delta > 0, delta < 0
    w = np.sqrt(np.where(under, delta, 1.0))
    k = np.sqrt(np.where(over, -delta, 0.0))
    decay = np.exp(-half * tt)
    # overdamped: e^{-gt/2} cosh(kt) = (e^{(k - g/2) t} + e^{-(k + g/2) t}) / 2, no overflow
    ep, em = np.exp((k - half) * tt), np.exp(-(k + half) * tt)
    k_safe = np.where(k > 0, k, 1.0)
    c_over, s_over = 0.5 * (ep + em), 0.5 * (ep - em) / k_safe
    c = np.where(under, decay * np.cos(w * tt), np.where(over, c_over, decay))
    s = np.where(under, decay * np.sin(w * tt) / w, np.where(over, s_over, decay * tt))
    x = x0 * c + (v0_ + half * x0) * s
    xdot = v0_ * c - (lam * x0 + half * v0_) * s
    return x, xdot


def damped_quadratic_inertia(
    eigenvalues: Any, gamma: float, theta0: Any, v0: Any, t: Any, *, mass: Any = None
) -> np.ndarray:
    """Exact ``I(t) = sum_i 1/2 (x_i'(t)^2 + lambda_i x_i(t)^2)`` of the damped quadratic.

    All three regimes, including eigenvalues exactly at ``gamma^2 = 4 lambda``; ``gamma = 0``
    gives ``I(t) = I(0)``. ``theta0``/``v0`` are in the eigenbasis, shape ``(d,)`` or
    ``(n_paths, d)``; the result has shape ``(n_t,)`` or ``(n_t, n_paths)``.

    General quadratics: ``eigenvalues`` may be the matrix ``A`` itself (symmetric positive
    definite, 2-D), and ``mass`` a scalar, a ``(d,)`` vector or an SPD matrix ``M``; then
    ``theta0``/``v0`` are in the coordinates of :func:`inertia.simulate` and
    ``I(t) = 1/2 v^T M v + 1/2 theta^T A theta`` is computed through :func:`normal_modes`
    (the module docstring gives the change of variables). Equal to the energy of
    ``expm(t [[0, I], [-M^-1 A, -gamma I]]) (theta0, v0)``.

    Example:
        >>> import numpy as np
        >>> I = damped_quadratic_inertia([1.0, 4.0], 0.0, [1.0, 1.0], [0.0, 0.0], [0.0, 7.0])
        >>> np.allclose(I, 2.5)
        True
    """
    lam, theta0, v0 = _to_modes(eigenvalues, theta0, v0, mass)
    x, xdot = damped_quadratic_modes(lam, gamma, theta0, v0, t)
    return 0.5 * np.sum(xdot * xdot + _eigenvalues(lam) * x * x, axis=-1)


def moments(
    eigenvalues: Any, gamma: float, sigma: float, theta0: Any, v0: Any, t: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of ``X = (x_i, x_i')`` per mode of the stochastic quadratic.

    ``dX = F X dt + G dW`` with ``F = [[0, 1], [-lambda, -gamma]]``, ``G = [0, sigma]^T``: the mean
    is ``m(t) = e^{F t} X0`` and the covariance solves the Lyapunov ODE
    ``S' = F S + S F^T + G G^T``, ``S(0) = 0``, i.e.
    ``S(t) = integral_0^t e^{F s} G G^T e^{F^T s} ds``, computed exactly: for ``gamma > 0`` as
    ``S(t) = S_inf - e^{F t} S_inf e^{F^T t}`` with the stationary
    ``F S_inf + S_inf F^T + G G^T = 0`` (``S_inf = sigma^2/(2 gamma) diag(1/lambda, 1)``),
    and for ``gamma = 0`` by Van Loan's block exponential
    ``expm([[-F, G G^T], [0, F^T]] t) = [[., E12], [0, E22]]``, ``S(t) = E22^T E12``.

    Returns:
        ``mean`` of shape ``(n_t,) + theta0.shape + (2,)`` and ``cov`` of shape ``(n_t, d, 2, 2)``.
    """
    lam, x0, v0_ = _modes(eigenvalues, theta0, v0)
    gamma = finite_float("gamma", gamma, minimum=0.0)
    sigma = finite_float("sigma", sigma, minimum=0.0)
    tt = _times(t)
    x, xdot = damped_quadratic_modes(lam, gamma, x0, v0_, tt)
    mean = np.stack([x, xdot], axis=-1)
    cov = np.zeros((tt.size, lam.size, 2, 2))
    qq = np.array([[0.0, 0.0], [0.0, sigma * sigma]])
    for i, li in enumerate(lam):
        f = np.array([[0.0, 1.0], [-li, -gamma]])
        if gamma > 0.0 and li > 0.0:
            # stable: S(t) = S_inf - e^{Ft} S_inf e^{F^T t}, F S_inf + S_inf F^T + G G^T = 0
            s_inf = solve_continuous_lyapunov(f, -qq)
            for j, tj in enumerate(tt):
                e = expm(f * tj)
                cov[j, i] = s_inf - e @ s_inf @ e.T
        else:
            # gamma = 0 (or a flat mode): Van Loan, bounded because e^{-Ft} does not blow up
            block = np.zeros((4, 4))
            block[:2, :2], block[:2, 2:], block[2:, 2:] = -f, qq, f.T
            for j, tj in enumerate(tt):
                e = expm(block * tj)
                cov[j, i] = e[2:, 2:].T @ e[:2, 2:]
    cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
    return mean, cov


def expected_inertia(
    eigenvalues: Any, gamma: float, sigma: float, theta0: Any, v0: Any, t: Any, *, mass: Any = None
) -> np.ndarray:
    """Exact ``E[I](t) = I_det(t) + 1/2 tr(Qm S(t))`` of the stochastic quadratic.

    ``I_det`` is :func:`damped_quadratic_inertia` (the energy of the mean), ``Qm = diag(A, I)``
    and ``S`` the covariance of :func:`moments`: per mode, ``1/2 (lambda S_xx + S_vv)``. Special
    cases: ``gamma = 0`` gives ``I(0) + sigma^2 d t / 2``; ``t -> inf`` with ``gamma > 0`` gives
    ``d sigma^2 / (2 gamma)``.

    General quadratics as in :func:`damped_quadratic_inertia`: ``eigenvalues`` may be the SPD
    matrix ``A`` and ``mass`` a scalar, vector or SPD matrix, for
    ``M dv = (-A theta - gamma M v) dt + sigma M^{1/2} dW`` (THEORY.md section 1); in mode
    coordinates the noise is again ``sigma`` times independent unit Brownian motions, so the
    per-mode covariance is unchanged.

    Example:
        >>> import numpy as np
        >>> e = expected_inertia([1.0, 2.0], 0.0, 0.5, [1.0, 0.0], [0.0, 0.0], [0.0, 4.0])
        >>> np.allclose(e, [0.5, 0.5 + 0.25 * 2 * 4 / 2])
        True
    """
    lam, theta0, v0 = _to_modes(eigenvalues, theta0, v0, mass)
    _, cov = moments(lam, gamma, sigma, theta0, v0, t)
    fluct = 0.5 * np.sum(lam * cov[..., 0, 0] + cov[..., 1, 1], axis=-1)
    det = damped_quadratic_inertia(lam, gamma, theta0, v0, t)
    return det + (fluct if det.ndim == 1 else fluct[:, None])


def temperature(gamma: float, sigma: float) -> float:
    """Fluctuation-dissipation temperature ``T = sigma^2 / (2 gamma)`` (``gamma > 0``)."""
    gamma = finite_float("gamma", gamma, minimum=0.0, strict=True)
    sigma = finite_float("sigma", sigma, minimum=0.0)
    return sigma * sigma / (2.0 * gamma)


def stationary_inertia(dim: int, gamma: float, sigma: float) -> float:
    """``E[I]_inf = d sigma^2 / (2 gamma) = d T`` for a positive-definite quadratic with minimum 0.

    ``E[K] = d T/2`` for any potential; ``E[V] = d T/2`` for the quadratic, whatever its Hessian.

    Example:
        >>> round(stationary_inertia(2, 0.5, 0.3), 12)
        0.18
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"`dim` must be an integer >= 1, got {dim!r}")
    return dim * temperature(gamma, sigma)


def heating_inertia(inertia0: Any, dim: int, sigma: float, t: Any) -> np.ndarray:
    """Frictionless heating: ``E[I](t) = I(0) + sigma^2 d t / 2`` (any potential, Dynkin)."""
    sigma = finite_float("sigma", sigma, minimum=0.0)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"`dim` must be an integer >= 1, got {dim!r}")
    i0 = _state("inertia0", inertia0)
    return i0 + 0.5 * sigma * sigma * dim * _times(t)


def critical_damping(lambda_min: float) -> float:
    """The best constant friction for the slowest mode: ``gamma* = 2 sqrt(lambda_min)``."""
    return 2.0 * np.sqrt(finite_float("lambda_min", lambda_min, minimum=0.0))


def convergence_rate(eigenvalues: Any, gamma: float) -> float:
    """Asymptotic rate ``rho`` of ``|theta(t)| ~ e^{-rho t}`` under constant friction.

    The energy decays at ``2 rho``.

    Per mode: ``gamma/2`` if ``gamma^2 <= 4 lambda``, else ``gamma/2 - sqrt(gamma^2/4 - lambda)``;
    the slowest mode sets the rate. At ``gamma = critical_damping(lambda_min)`` it is
    ``sqrt(lambda_min)``, against ``lambda_min`` for gradient flow.
    """
    lam = _eigenvalues(eigenvalues)
    gamma = finite_float("gamma", gamma, minimum=0.0)
    disc = np.maximum(0.25 * gamma * gamma - lam, 0.0)
    return float(np.min(0.5 * gamma - np.sqrt(disc)))


def gradient_flow_rate(eigenvalues: Any) -> float:
    """Rate of gradient flow ``theta' = -A theta``: ``lambda_min`` (eigenvalues >= 0)."""
    return float(np.min(_eigenvalues(eigenvalues)))


def leapfrog_max_dt(lambda_max: float, mass: float = 1.0) -> float:
    """Leapfrog is stable iff ``dt sqrt(lambda_max / m) < 2``."""
    lam = finite_float("lambda_max", lambda_max, minimum=0.0, strict=True)
    return 2.0 / np.sqrt(lam / finite_float("mass", mass, minimum=0.0, strict=True))


def heavy_ball_max_lr(lambda_max: float, momentum: float) -> float:
    """Heavy-ball SGD on a quadratic is stable iff ``0 < lr lambda_max < 2 (1 + momentum)``."""
    lam = finite_float("lambda_max", lambda_max, minimum=0.0, strict=True)
    mu = finite_float("momentum", momentum, minimum=0.0)
    if mu >= 1.0:
        raise ValueError(f"`momentum` must be < 1, got {momentum!r}")
    return 2.0 * (1.0 + mu) / lam
