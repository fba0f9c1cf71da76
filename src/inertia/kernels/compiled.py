"""Compiled kernels for long single paths: the built-in potentials and the step loop, in numba.

:func:`inertia.simulate` owns dispatch, validation, the recording layout and the
:class:`~inertia.Trajectory`; this module holds only what numba has to compile. For one path
(``n_paths = 1``), no noise, a NumPy ``theta`` and a built-in potential, ``simulate`` hands chunks
of steps to :func:`run_path`. Numba cannot call back into Python per step without losing the
point, so the time loop itself is compiled here: :func:`run_path` is the one compiled loop, and
:mod:`inertia.simulate` is still the only place that decides what is stepped, recorded and
returned.

**Same numbers as the generic loop.** Every formula below is the formula of
:mod:`inertia.potentials` (named in each docstring), evaluated elementwise in the same order, and
every reduction uses NumPy's own pairwise summation (:func:`pairwise_sum`), so in float64 the
compiled loop reproduces ``simulate(..., fast=False)`` bit for bit, except for the dense-matrix
quadratic (whose ``theta @ A`` NumPy hands to BLAS; here it is a plain loop, equal to rounding).
The splitting sub-steps are the generic loop's (:func:`inertia.integrators.splitting.reduce_scheme`),
passed in as codes and coefficients, and the friction factors are computed from the same
``integral gamma`` expressions (for ``ConstantFriction`` and ``NesterovFriction`` here; for any
other schedule ``simulate`` tabulates ``integral gamma`` per step in Python).

**Precision.** Kernels compute in float64. float32 inputs are stepped in float64 and returned
as float32; a value beyond the float32 range counts as non-finite (the ``limit`` argument), so
divergence is reported where a float32 run would overflow.

numba is optional (the ``fast`` extra). Without it the functions here are plain Python (correct
but slow, used by no default path): :func:`available` says whether they are compiled, and
``simulate`` then falls back to its lean NumPy loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

numba: Any
try:  # optional dependency: `pip install computational-inertia[fast]`
    import numba
except ImportError:  # pragma: no cover - exercised by monkeypatching `available`
    numba = None

__all__ = [
    "DOUBLE_WELL",
    "FRICTION_CONSTANT",
    "FRICTION_NESTEROV",
    "FRICTION_NONE",
    "FRICTION_TABLE",
    "QUADRATIC_DIAGONAL",
    "QUADRATIC_MATRIX",
    "QUARTIC_CHAIN",
    "ROSENBROCK",
    "SUB_A",
    "SUB_B",
    "SUB_EULER",
    "SUB_O",
    "available",
    "double_well",
    "family_of",
    "kinetic",
    "pairwise_sum",
    "quadratic_diagonal",
    "quadratic_matrix",
    "quartic_chain",
    "rosenbrock",
    "run_path",
    "value_and_grad",
]

F = TypeVar("F", bound=Callable[..., Any])


def _jit(fn: F) -> F:
    """``numba.njit(cache=True)`` when numba is installed (compiled once per machine), else ``fn``."""
    if numba is None:
        return fn
    return numba.njit(cache=True)(fn)  # type: ignore[no-any-return,unused-ignore]


def available() -> bool:
    """True when numba is importable, so the kernels here are compiled."""
    return numba is not None


#: Potential families (the ``family`` argument of :func:`value_and_grad`).
QUADRATIC_DIAGONAL, QUADRATIC_MATRIX, DOUBLE_WELL, QUARTIC_CHAIN, ROSENBROCK = 0, 1, 2, 3, 4
#: Sub-step codes of :func:`run_path`: drift, kick, exact friction, a whole explicit Euler step.
SUB_A, SUB_B, SUB_O, SUB_EULER = 0, 1, 2, 3
#: Friction modes of :func:`run_path`: none, constant, ``r / t``, tabulated per step.
FRICTION_NONE, FRICTION_CONSTANT, FRICTION_NESTEROV, FRICTION_TABLE = 0, 1, 2, 3


def family_of(potential: Any) -> tuple[int, np.ndarray, np.ndarray] | None:
    """``(family, scalars, array)`` for a built-in potential, ``None`` for anything else.

    Only the exact built-in classes qualify (a subclass may override ``value_and_grad``). The
    parameters are the potential's public attributes: ``Quadratic.diagonal`` / ``.matrix``,
    ``DoubleWell.barrier, .stiffness``, ``QuarticChain.lam, .beta``, ``Rosenbrock.a, .b``.
    """
    from inertia import potentials as p

    kind = type(potential)
    empty = np.zeros((1, 1))
    if kind is p.Quadratic:
        if potential.diagonal is not None:
            return QUADRATIC_DIAGONAL, np.zeros(1), np.ascontiguousarray(potential.diagonal[None, :])
        return QUADRATIC_MATRIX, np.zeros(1), np.ascontiguousarray(potential.matrix, dtype=np.float64)
    if kind is p.DoubleWell:
        return DOUBLE_WELL, np.array([potential.barrier, potential.stiffness]), empty
    if kind is p.QuarticChain:
        return QUARTIC_CHAIN, np.array([potential.beta]), np.ascontiguousarray(potential.lam[None, :])
    if kind is p.Rosenbrock:
        return ROSENBROCK, np.array([potential.a, potential.b]), empty
    return None


@_jit
def _pairwise_block(a: np.ndarray, lo: int, n: int) -> float:
    # NumPy's pairwise_sum for n <= 128 terms: a plain loop below 8, else 8 accumulators
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_jit
def _pairwise_tree(a: np.ndarray, n: int) -> float:
    # NumPy's recursion for n > 128 (split at n2 = n/2 rounded down to a multiple of 8, sum the
    # halves, add), run on an explicit stack: numba's cache cannot reload recursive functions
    los = np.empty(64, dtype=np.int64)
    ns = np.empty(64, dtype=np.int64)
    state = np.zeros(64, dtype=np.int64)
    left = np.empty(64)
    los[0], ns[0], state[0] = 0, n, 0
    top = 0
    ret = 0.0
    while True:
        if ns[top] <= 128:
            ret = _pairwise_block(a, los[top], ns[top])
            top -= 1
        else:
            n2 = ns[top] // 2
            n2 -= n2 % 8
            if state[top] == 0:  # descend into the left half
                state[top] = 1
                los[top + 1], ns[top + 1], state[top + 1] = los[top], n2, 0
                top += 1
                continue
            if state[top] == 1:  # left half done: descend into the right half
                left[top] = ret
                state[top] = 2
                los[top + 1], ns[top + 1], state[top + 1] = los[top] + n2, ns[top] - n2, 0
                top += 1
                continue
            ret = left[top] + ret
            top -= 1
        if top < 0:
            return ret


@_jit
def pairwise_sum(a: np.ndarray, n: int) -> float:
    """``sum_{i<n} a_i`` in NumPy's order (``np.sum``, ``np.add.reduce``): blocks of 8
    accumulators up to 128 terms, halves beyond, so the result equals NumPy's bit for bit."""
    if n <= 128:
        return 0.0 + _pairwise_block(a, 0, n)
    return 0.0 + _pairwise_tree(a, n)


@_jit
def kinetic(v: np.ndarray, mass: np.ndarray, tmp: np.ndarray) -> float:
    """``K = 1/2 sum_i m_i v_i^2`` (:func:`inertia.energy.kinetic`); ``tmp`` is scratch ``(d,)``."""
    d = v.shape[0]
    for i in range(d):
        tmp[i] = mass[i] * v[i] * v[i]
    return 0.5 * pairwise_sum(tmp, d)


@_jit
def quadratic_diagonal(theta: np.ndarray, grad: np.ndarray, lam: np.ndarray, tmp: np.ndarray) -> float:
    """``L = 1/2 sum_i lambda_i theta_i^2``, ``grad_i = lambda_i theta_i``
    (:class:`inertia.potentials.Quadratic` with ``eigenvalues``). Writes ``grad``, returns ``L``."""
    d = theta.shape[0]
    for i in range(d):
        grad[i] = lam[i] * theta[i]
        tmp[i] = theta[i] * grad[i]
    return 0.5 * pairwise_sum(tmp, d)


@_jit
def quadratic_matrix(theta: np.ndarray, grad: np.ndarray, a: np.ndarray, tmp: np.ndarray) -> float:
    """``L = 1/2 theta^T A theta``, ``grad = A theta`` (:class:`inertia.potentials.Quadratic`
    with ``matrix``; ``A`` symmetric, ``grad_j = sum_i theta_i A_ij``). Writes ``grad``."""
    d = theta.shape[0]
    for j in range(d):
        grad[j] = 0.0
    for i in range(d):
        ti = theta[i]
        for j in range(d):
            grad[j] += ti * a[i, j]
    for i in range(d):
        tmp[i] = theta[i] * grad[i]
    return 0.5 * pairwise_sum(tmp, d)


@_jit
def double_well(
    theta: np.ndarray, grad: np.ndarray, barrier: float, stiffness: float, tmp: np.ndarray
) -> float:
    """``L = barrier (theta_0^2 - 1)^2 + stiffness/2 sum_{i>=1} theta_i^2``,
    ``dL/dtheta_0 = 4 barrier theta_0 (theta_0^2 - 1)``, ``dL/dtheta_i = stiffness theta_i``
    (:class:`inertia.potentials.DoubleWell`). Writes ``grad``, returns ``L``."""
    d = theta.shape[0]
    x0 = theta[0]
    w = x0 * x0 - 1.0
    grad[0] = 4.0 * barrier * x0 * w
    for i in range(1, d):
        grad[i] = stiffness * theta[i]
        tmp[i - 1] = theta[i] * theta[i]
    return barrier * (w * w) + 0.5 * stiffness * pairwise_sum(tmp, d - 1)


@_jit
def quartic_chain(
    theta: np.ndarray, grad: np.ndarray, lam: np.ndarray, beta: float, tmp: np.ndarray
) -> float:
    """``L = 1/2 sum_i lambda_i theta_i^2 + beta/4 sum_{i<d-1} D_i^4``, ``D_i = theta_{i+1} - theta_i``;
    ``dL/dtheta_i = lambda_i theta_i - beta D_i^3 + beta D_{i-1}^3``
    (:class:`inertia.potentials.QuarticChain`). Writes ``grad``, returns ``L``."""
    d = theta.shape[0]
    for i in range(d):
        grad[i] = lam[i] * theta[i]
        tmp[i] = theta[i] * grad[i]
    v2 = 0.5 * pairwise_sum(tmp, d)
    prev = 0.0  # D_{i-1}^3, with the chain's zero pad at i = 0
    for i in range(d - 1):
        di = theta[i + 1] - theta[i]
        d3 = di * di * di
        tmp[i] = d3 * di
        grad[i] = grad[i] + beta * ((0.0 - d3) if i == 0 else (prev - d3))
        prev = d3
    grad[d - 1] = grad[d - 1] + beta * (prev - 0.0)
    return v2 + 0.25 * beta * pairwise_sum(tmp, d - 1)


@_jit
def rosenbrock(theta: np.ndarray, grad: np.ndarray, a: float, b: float, tmp: np.ndarray) -> float:
    """``L = sum_{i<d-1} b (theta_{i+1} - theta_i^2)^2 + (a - theta_i)^2``; with
    ``r_i = theta_{i+1} - theta_i^2``, ``s_i = a - theta_i``:
    ``dL/dtheta_i = -4 b r_i theta_i - 2 s_i + 2 b r_{i-1}`` (:class:`inertia.potentials.Rosenbrock`).
    Writes ``grad``, returns ``L``."""
    d = theta.shape[0]
    right = 0.0  # 2 b r_{i-1}, zero padded at i = 0
    for i in range(d - 1):
        x = theta[i]
        r = theta[i + 1] - x * x
        s = a - x
        tmp[i] = b * r * r + s * s
        left = -4.0 * b * r * x - 2.0 * s
        grad[i] = left + (0.0 if i == 0 else right)
        right = 2.0 * b * r
    grad[d - 1] = 0.0 + right
    return pairwise_sum(tmp, d - 1)


@_jit
def value_and_grad(
    family: int, theta: np.ndarray, grad: np.ndarray, scalars: np.ndarray, arr: np.ndarray, tmp: np.ndarray
) -> float:
    """``L(theta)`` of the built-in potential ``family`` (see :func:`family_of`); writes ``grad L``."""
    if family == QUADRATIC_DIAGONAL:
        return quadratic_diagonal(theta, grad, arr[0], tmp)
    if family == QUADRATIC_MATRIX:
        return quadratic_matrix(theta, grad, arr, tmp)
    if family == DOUBLE_WELL:
        return double_well(theta, grad, scalars[0], scalars[1], tmp)
    if family == QUARTIC_CHAIN:
        return quartic_chain(theta, grad, arr[0], scalars[0], tmp)
    return rosenbrock(theta, grad, scalars[0], scalars[1], tmp)


@_jit
def _check_sum(theta: np.ndarray, v: np.ndarray, tmp: np.ndarray) -> float:
    # the generic loop's divergence check: sum(theta) + sum(v * v)
    d = theta.shape[0]
    for i in range(d):
        tmp[i] = v[i] * v[i]
    return pairwise_sum(theta, d) + pairwise_sum(tmp, d)


@_jit
def _big_gamma(mode: int, gamma: float, t: float, start: float, frac: float, dt: float) -> float:
    # integral of gamma over the O sub-step [t + start dt, t + (start + frac) dt], as in
    # ConstantFriction.integral and NesterovFriction.integral
    ta = t + start * dt
    tb = t + (start + frac) * dt
    if mode == FRICTION_CONSTANT:
        return gamma * (tb - ta)
    if ta == tb:
        return 0.0
    if ta == 0.0:
        return math.inf
    if tb == 0.0:
        return -math.inf
    return gamma * math.log(tb / ta)


@_jit
def run_path(
    family: int,
    scalars: np.ndarray,
    arr: np.ndarray,
    theta: np.ndarray,
    v: np.ndarray,
    grad: np.ndarray,
    tmp: np.ndarray,
    codes: np.ndarray,
    coefs: np.ndarray,
    starts: np.ndarray,
    fracs: np.ndarray,
    friction_mode: int,
    gamma: float,
    table: np.ndarray,
    mass: np.ndarray,
    inv_mass: np.ndarray,
    dt: float,
    t0: float,
    step0: int,
    n_chunk: int,
    first_save: int,
    save_every: int,
    save_last: bool,
    limit: float,
    rec_step: np.ndarray,
    rec_kinetic: np.ndarray,
    rec_potential: np.ndarray,
    rec_dissipated: np.ndarray,
    n_rec: int,
    fresh: bool,
    value: float,
    dissipated: float,
) -> tuple[int, bool, int, int, bool, float, float]:
    """Step one path ``n_chunk`` times from step ``step0``, updating ``theta``, ``v``, ``grad`` in place.

    Each step applies the sub-steps ``codes`` in order (the generic loop's, from
    :func:`~inertia.integrators.splitting.reduce_scheme`): ``SUB_A`` ``theta <- theta + c dt v``;
    ``SUB_B`` ``v <- v - c dt M^{-1} grad L`` (gradient re-evaluated only when ``theta`` moved);
    ``SUB_O`` ``v <- exp(-Gamma) v`` with ``Gamma = integral gamma`` over the sub-step, booking
    ``(1 - exp(-2 Gamma)) K`` as dissipated; ``SUB_EULER`` the explicit Euler step
    ``theta <- theta + dt v``, ``v <- v - dt M^{-1} grad L(theta) - dt gamma(t_n) v``, booking
    ``2 dt gamma(t_n) K``. ``coefs`` holds ``c dt``; ``starts``/``fracs`` place each ``O``
    sub-step in ``[t_n, t_n + dt]``. Friction: ``friction_mode`` none, constant ``gamma``,
    ``gamma / t`` (Nesterov with ``r = gamma``), or ``table[k, j]`` = ``Gamma`` of the ``j``-th
    ``O`` sub-step of chunk step ``k`` (``gamma(t_n)`` for Euler).

    After each step: diverged when ``|sum(theta) + sum(v^2) (+ L where evaluated)| > limit``
    (not finite, in the caller's precision). After the chunk's ``j``-th step (``j = 1 ..
    n_chunk``) with ``j = first_save + i save_every`` (``i >= 0``), after its last step when
    ``save_last``, and at a bad step it writes ``(step, K, L, dissipated)`` at row ``n_rec`` of
    the ``rec_*`` arrays (the saved steps are the driver's, :func:`inertia.simulate._drive`); a
    non-finite ``K + L`` there is divergence too. Returns
    ``(steps taken, bad, n_grad_evals, n_rec, fresh, value, dissipated)``.
    """
    d = theta.shape[0]
    n_sub = codes.shape[0]
    n_grad = 0
    bad = False
    taken = 0
    for k in range(n_chunk):
        n = step0 + k
        t = t0 + n * dt
        step_diss = 0.0
        j_o = 0
        for s in range(n_sub):
            code = codes[s]
            if code == SUB_A:
                c = coefs[s]
                for i in range(d):
                    theta[i] = theta[i] + c * v[i]
                fresh = False
            elif code == SUB_B:
                if not fresh:
                    value = value_and_grad(family, theta, grad, scalars, arr, tmp)
                    n_grad += 1
                    fresh = True
                c = coefs[s]
                for i in range(d):
                    v[i] = v[i] - c * (inv_mass[i] * grad[i])
            elif code == SUB_O:
                if friction_mode == FRICTION_TABLE:
                    big = table[k, j_o]
                else:
                    big = _big_gamma(friction_mode, gamma, t, starts[s], fracs[s], dt)
                j_o += 1
                one_minus_c1sq = -math.expm1(-2.0 * big)
                c1 = math.exp(-big)
                if one_minus_c1sq != 0.0:
                    step_diss = step_diss + one_minus_c1sq * kinetic(v, mass, tmp)
                for i in range(d):
                    v[i] = c1 * v[i]
            else:  # SUB_EULER
                if not fresh:
                    value_and_grad(family, theta, grad, scalars, arr, tmp)
                    n_grad += 1
                if friction_mode == FRICTION_NONE:
                    g_t = 0.0
                elif friction_mode == FRICTION_CONSTANT:
                    g_t = gamma
                elif friction_mode == FRICTION_NESTEROV:
                    g_t = gamma / t if t > 0 else math.inf
                else:
                    g_t = table[k, 0]
                if g_t != 0.0:
                    step_diss = step_diss + (2.0 * dt * g_t) * kinetic(v, mass, tmp)
                dg = dt * g_t
                for i in range(d):
                    vi = v[i]
                    new_v = vi - dt * (inv_mass[i] * grad[i])
                    if g_t != 0.0:
                        new_v = new_v - dg * vi
                    theta[i] = theta[i] + dt * vi
                    v[i] = new_v
                fresh = False
        dissipated = dissipated + step_diss
        taken += 1
        check = _check_sum(theta, v, tmp)
        if fresh:
            check = check + value
        bad = not abs(check) <= limit
        saved = (taken >= first_save and (taken - first_save) % save_every == 0) or (
            save_last and taken == n_chunk
        )
        if bad or saved:
            if fresh:
                pot = value
            else:  # the state's potential, as the generic loop's record evaluates it (not counted)
                pot = value_and_grad(family, theta, grad, scalars, arr, tmp)
            kin = kinetic(v, mass, tmp)
            rec_step[n_rec] = n + 1
            rec_kinetic[n_rec] = kin
            rec_potential[n_rec] = pot
            rec_dissipated[n_rec] = dissipated
            n_rec += 1
            if bad or not abs(kin + pot) <= limit:
                return taken, True, n_grad, n_rec, fresh, value, dissipated
    return taken, bad, n_grad, n_rec, fresh, value, dissipated
