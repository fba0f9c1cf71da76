"""``simulate``: the front door and the only time loop (:func:`_drive`). Ensembles, recording,
the friction ledger, divergence.

One entry point (like scipy's ``solve_ivp``): validate at the front door, pick a kernel
(:func:`inertia.kernels.select`: how a registered integrator of :mod:`inertia.integrators` is
stepped over ``(n_paths, d)`` arrays of any Array-API backend), drive it through
:func:`_drive`, record the energies of THEORY.md section 1 at the saved steps, and return a
frozen :class:`Trajectory` with ``status``, ``message``, work counters and, in
``config["kernel"]``, the kernel that ran.

Recorded per saved step and path:

* ``kinetic = 1/2 v^T M v``, ``potential = L(theta)``, ``inertia = kinetic + potential``;
* ``dissipated``: the cumulative friction work ``integral_0^t gamma(s) v^T M v ds``, booked by
  the integrator (exactly, for the splitting methods' exact friction sub-steps). For
  deterministic dynamics the damped ledger of THEORY.md section 3 reads
  ``inertia(t) + dissipated(t) = inertia(0)``, up to the scheme's error.

Saved steps are ``0, save_every, 2 save_every, ...`` and always the last step ``n_steps``; the time
of step ``n`` is ``t0 + n dt`` from the integer counter, so the last time equals
``t0 + n_steps dt`` exactly.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from inertia._backend import array_namespace, constant_like, normal, to_numpy
from inertia._validate import (
    check_finite,
    finite_float,
    flag,
    optional_callable,
    real_array,
    whole_number,
)
from inertia.dynamics import Friction, as_friction
from inertia.integrators import get_method
from inertia.kernels import Kernel, Run, Saves, saves_of, select
from inertia.potentials import Potential
from inertia.trajectory import DivergenceError, Trajectory, finish

__all__ = ["DivergenceError", "Trajectory", "simulate"]

log = logging.getLogger(__name__)

_ON_DIVERGENCE = ("raise", "stop")


def _as_state_array(name: str, x: Any, ref: Any = None) -> Any:
    """Arrays keep their namespace and device (integers promoted to float64, booleans and complex
    refused: :func:`inertia._validate.real_array`); Python scalars and sequences become float64
    NumPy. The finiteness test runs where the array lives."""
    x = real_array(name, x)
    if ref is not None and type(x) is not type(ref):
        x = constant_like(x if isinstance(x, np.ndarray) else to_numpy(x), ref)
    if x.ndim not in (1, 2):
        raise ValueError(f"`{name}` must have shape (d,) or (n_paths, d), got {tuple(x.shape)}")
    return check_finite(name, x)


def _mass_array(mass: Any, d: int, ref: Any) -> tuple[Any, Any, Any, Any]:
    """``(mass, 1/mass, 1/sqrt(mass))`` as floats or ``(d,)`` backend arrays, and a JSON form."""
    if isinstance(mass, bool):
        raise TypeError(f"`mass` must be a positive number or a (d,) array, got {mass!r}")
    if not np.isscalar(mass):
        mass = real_array("mass", mass)  # the dtype rule: no booleans, no complex
        if mass.ndim == 0:  # a 0-d array or tensor is a scalar mass
            mass = float(to_numpy(mass))
    if np.isscalar(mass):
        m = finite_float("mass", mass, minimum=0.0, strict=True)
        return m, 1.0 / m, 1.0 / math.sqrt(m), m
    m_np = np.asarray(to_numpy(mass), dtype=np.float64)
    if m_np.shape != (d,):
        raise ValueError(f"`mass` must be a positive scalar or have shape ({d},), got {m_np.shape}")
    if not np.all(np.isfinite(m_np)) or not np.all(m_np > 0):
        raise ValueError(f"`mass` must be finite and > 0 everywhere, got {m_np.tolist()}")
    return (
        constant_like(m_np, ref),
        constant_like(1.0 / m_np, ref),
        constant_like(1.0 / np.sqrt(m_np), ref),
        m_np.tolist(),
    )


def _friction_repr(friction: Friction) -> Any:
    if friction.constant:
        return friction(0.0)
    return repr(friction)


def _warn_if_unstable(
    pot: Potential, method: str, friction: Friction, mass_json: Any, dt: float, t0: float, symplectic: bool
) -> None:
    from inertia.stability import max_stable_dt, spectral_radius

    if pot.eigenvalues is None:
        return
    matrix = getattr(pot, "matrix", None)
    if isinstance(mass_json, float):
        lam = np.asarray(pot.eigenvalues, dtype=np.float64) / mass_json
    elif matrix is not None:  # eigenvalues of M^{-1/2} A M^{-1/2}
        s = 1.0 / np.sqrt(np.asarray(mass_json, dtype=np.float64))
        lam = np.linalg.eigvalsh(s[:, None] * np.asarray(matrix) * s[None, :])
    else:
        return
    gamma = friction.integral(t0, t0 + dt) / dt
    if not math.isfinite(gamma):
        return
    if gamma == 0.0 and not symplectic:
        return  # the explicit baseline has no stable step without friction: that is its point
    lam_max = float(lam.max())
    rho = float(spectral_radius(method, [lam_max], gamma, dt)[0])
    if rho > 1.0 + 1e-9:
        bound = max_stable_dt(method, lam_max, gamma)
        warnings.warn(
            f"`dt` = {dt:g} is above the stability bound of {method!r} on this quadratic "
            f"(largest eigenvalue {lam_max:g}, gamma {gamma:g}): the spectral radius of one step "
            f"is {rho:.4g} > 1, so the run will blow up; stable for dt < {bound:.6g}",
            RuntimeWarning,
            stacklevel=3,
        )


def simulate(
    potential: Potential,
    theta0: Any,
    v0: Any = None,
    *,
    gamma: float | Friction | Callable[[float], float] = 0.0,
    sigma: float = 0.0,
    mass: Any = 1.0,
    dt: float,
    n_steps: int,
    method: str = "leapfrog",
    n_paths: int | None = None,
    seed: int = 0,
    save_every: int = 1,
    t0: float = 0.0,
    initial_step: int = 0,
    on_divergence: str = "raise",
    progress: Callable[[int, int], None] | None = None,
    fast: bool = True,
    distributed: bool = False,
) -> Trajectory:
    """Simulate ``dtheta = v dt``, ``M dv = (-grad L - gamma(t) M v) dt + sigma M^{1/2} dW``.

    Args:
        potential: the loss ``L`` (:mod:`inertia.potentials`).
        theta0: initial parameters, ``(d,)`` (the same for every path) or ``(n_paths, d)``.
        v0: initial velocity, same rules; ``None`` means zero.
        gamma: friction ``>= 0``: a float, a :class:`inertia.dynamics.Friction`, or a callable
            schedule ``t -> gamma(t)`` (e.g. ``NesterovFriction(3)`` for ``3/t``).
        sigma: noise scale ``>= 0``.
        mass: positive scalar or per-coordinate ``(d,)`` vector (diagonal ``M``).
        dt: time step, finite and ``> 0``.
        n_steps: number of steps ``>= 0``.
        method: a registered integrator (:data:`inertia.integrators.METHODS`).
        n_paths: ensemble size; default: the leading dimension of ``theta0``/``v0``, else 1.
        seed: the noise key; the noise of step ``n`` depends only on ``(seed, n)``, so a run
            resumed with ``initial_step`` reproduces the uninterrupted one.
        save_every: record every this many steps (and always the last).
        t0: the time of step 0; step ``n`` is at ``t0 + n dt``.
        initial_step: index of the first step (to continue a run from its final state).
        on_divergence: ``"raise"`` (default; :class:`DivergenceError` carrying the partial
            trajectory) or ``"stop"`` (return it with ``status == "diverged"``).
        progress: called as ``progress(steps_done, n_steps)`` after each saved step.
        fast: step the run with the fastest kernel that takes it (default), chosen by the
            table of :mod:`inertia.kernels`: for ensembles of a diagonal
            :class:`~inertia.potentials.Quadratic` (NumPy or torch, float32/float64) the in-place
            kernels (on CUDA, chunks of up to 8 steps in one ``torch.compile``-d graph; on CPU
            with numba, numba chunks without noise and one numba pass per noise draw with it);
            for one deterministic NumPy path the compiled path (built-in potentials, numba) or
            the lean NumPy path. ``False`` forces the ``functional`` kernel (the method's own
            step function). All give the same numbers to rounding error and the same
            :class:`Trajectory`; ``config["kernel"]`` names the kernel that ran; divergence is
            checked as documented there.
        distributed: split the paths over the ranks of the initialised ``torch.distributed``
            process group (e.g. under ``torchrun``) in contiguous slices (rank ``r`` of ``W``
            takes paths ``r N // W`` to ``(r + 1) N // W - 1``, recorded in
            ``config["distributed"]``); each rank steps its slice with its noise keyed by the
            global path index (on CPU the union is the single-process run bit for bit) and
            returns the energies of all paths (gathered once, at the end) and its own slice of
            the final state (``theta``, ``v``). See :mod:`inertia._distributed`.

    Returns:
        A :class:`Trajectory`.

    Example:
        >>> import numpy as np, inertia
        >>> from inertia import potentials
        >>> traj = inertia.simulate(potentials.Quadratic([1.0, 4.0]), [1.0, 1.0], dt=0.01,
        ...                         n_steps=1000, method="leapfrog")
        >>> bool(np.abs(traj.inertia - traj.inertia[0]).max() < 1e-3)  # |I - I0| <= I0 lambda dt^2 / 4
        True
    """
    if not isinstance(potential, Potential):
        raise TypeError(
            f"`potential` must be an inertia.potentials.Potential (subclass it, or wrap a torch "
            f"loss with potentials.from_torch), got {type(potential).__name__}"
        )
    meth = get_method(method)
    fast = flag("fast", fast)
    distributed = flag("distributed", distributed)
    optional_callable("progress", progress, "progress(steps_done, n_steps)")
    dt = finite_float("dt", dt, minimum=0.0, strict=True)
    n_steps = whole_number("n_steps", n_steps, minimum=0)
    save_every = whole_number("save_every", save_every, minimum=1)
    seed = whole_number("seed", seed, minimum=0)
    initial_step = whole_number("initial_step", initial_step, minimum=0)
    t0 = finite_float("t0", t0)
    sigma = finite_float("sigma", sigma, minimum=0.0)
    friction = as_friction(gamma)
    if on_divergence not in _ON_DIVERGENCE:
        raise ValueError(f"`on_divergence` must be one of {_ON_DIVERGENCE}, got {on_divergence!r}")
    if not meth.exact_friction and not math.isfinite(friction(t0 + initial_step * dt)):
        raise ValueError(
            f"`gamma` is infinite at the start time t = {t0 + initial_step * dt:g} and "
            f"{method!r} evaluates it pointwise; start at a later `t0` or use a "
            f"splitting method (exact friction)"
        )
    if sigma > 0 and not meth.supports_noise:
        noisy = sorted(k for k, m in _methods().items() if m.supports_noise)
        raise ValueError(
            f"`method` {method!r} does not support noise (`sigma` = {sigma:g} > 0); use one of {noisy}"
        )

    theta = potential.prepare(_as_state_array("theta0", theta0))
    v = None if v0 is None else _as_state_array("v0", v0, ref=theta)
    d = int(theta.shape[-1])
    if v is not None and int(v.shape[-1]) != d:
        raise ValueError(f"`v0` must have last dimension d = {d} like `theta0`, got {tuple(v.shape)}")
    if potential.dim is not None and d != potential.dim:
        raise ValueError(
            f"`theta0` must have last dimension {potential.dim} (the potential's "
            f"dim), got {tuple(theta.shape)}"
        )
    leading = {int(x.shape[0]) for x in (theta, v) if x is not None and x.ndim == 2}
    if len(leading) > 1:
        raise ValueError(f"`theta0` and `v0` have different numbers of paths: {sorted(leading)}")
    if n_paths is None:
        n_paths = leading.pop() if leading else 1
    else:
        n_paths = whole_number("n_paths", n_paths, minimum=1)
        if leading and leading != {n_paths}:
            raise ValueError(
                f"`n_paths` = {n_paths} does not match the leading dimension "
                f"{leading.pop()} of `theta0`/`v0` (no silent broadcasting)"
            )
    lo, hi = 0, n_paths  # the paths this process steps (all of them, unless distributed)
    shard: dict[str, Any] | None = None
    if distributed:
        from inertia import _distributed

        rank, world, lo, hi = _distributed.slice_of(n_paths)
        shard = {"rank": rank, "world_size": world, "paths": [lo, hi]}
        theta = theta[lo:hi] if theta.ndim == 2 else theta
        v = v[lo:hi] if v is not None and v.ndim == 2 else v
    n_local = hi - lo
    xp = array_namespace(theta)
    ones = xp.ones((n_local, d), dtype=theta.dtype, device=_device(theta))
    theta = ones * theta
    v = xp.zeros_like(theta) if v is None else ones * v
    mass_arr, inv_mass, inv_sqrt_mass, mass_json = _mass_array(mass, d, theta)
    _warn_if_unstable(potential, method, friction, mass_json, dt, t0 + initial_step * dt, meth.symplectic)

    config = {
        "potential": potential.describe(),
        "method": method,
        "dt": dt,
        "n_steps": n_steps,
        "gamma": _friction_repr(friction),
        "sigma": sigma,
        "mass": mass_json,
        "n_paths": n_paths,
        "d": d,
        "seed": seed,
        "save_every": save_every,
        "t0": t0,
        "initial_step": initial_step,
        "backend": type(theta).__module__.split(".")[0],
        "dtype": str(theta.dtype),
    }
    if shard is not None:
        config["distributed"] = shard
    run = Run(
        potential=potential,
        method=meth,
        theta=theta,
        v=v,
        mass=mass_arr,
        inv_mass=inv_mass,
        inv_sqrt_mass=inv_sqrt_mass,
        mass_json=mass_json,
        friction=friction,
        sigma=sigma,
        dt=dt,
        t0=t0,
        noise=lambda n, k: normal((seed, n, k), (n_local, d), theta, row_offset=lo),
        fast=fast,
        row_offset=lo,
    )
    kernel = select(run)
    log.info(
        "simulate: %s, %d paths x d=%d, %d steps of dt=%g (%s kernel)",
        method,
        n_paths,
        d,
        n_steps,
        dt,
        kernel.name,
    )
    steps, first_bad, taken = _drive(
        kernel,
        seed=seed,
        initial_step=initial_step,
        n_steps=n_steps,
        save_every=save_every,
        progress=progress,
    )
    kin, pot, diss = kernel.energies(steps.size)
    if shard is not None:  # every rank gets the energies of all paths, once, at the end
        steps, kin, pot, diss, first_bad, taken = _distributed.gather(steps, kin, pot, diss, first_bad, taken)
    config["kernel"] = kernel.name
    return finish(
        steps=steps,
        kinetic=kin,
        potential=pot,
        dissipated=diss,
        theta=kernel.theta,
        v=kernel.v,
        first_bad=first_bad,
        taken=taken,
        n_grad=kernel.n_grad,
        method=method,
        t0=t0,
        dt=dt,
        config=config,
        on_divergence=on_divergence,
    )


def _n_saved(n_steps: int, save_every: int) -> int:
    """Rows of a run without divergence: steps ``0, save_every, ...`` and ``n_steps``."""
    return n_steps // save_every + 1 + (1 if n_steps % save_every else 0)


def _drive(
    kernel: Kernel,
    *,
    seed: int,
    initial_step: int,
    n_steps: int,
    save_every: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[np.ndarray, int | None, int]:
    """The time loop of every run: ``(saved steps, first bad step or None, steps taken)``.

    Records the initial state (row 0), then advances chunks of at most ``kernel.max_chunk``
    steps; a chunk ends at the run's end and, unless the kernel records inside its chunks
    (``kernel.records_inside``), at the next saved step. The saved steps are ``initial_step +
    save_every i`` and the last step (:func:`inertia.kernels.saves_of`). After each saved step
    ``progress(steps done, n_steps)`` is called. Divergence: a kernel reports where its state
    went non-finite (``advance`` returns the step), or that a chunk did somewhere (``0``: the
    state is as before the chunk), and then the chunk is replayed here one step per call; a
    saved step whose ``sum K + sum L`` is not finite is divergence too. The first non-finite
    state is recorded as the last row and the run stops there.
    """
    n_rows = _n_saved(n_steps, save_every)
    steps = np.zeros(n_rows, dtype=np.int64)
    row, taken = 1, 0
    first_bad: int | None = None
    kernel.open(seed, initial_step, n_steps, n_rows)

    def book(n0: int, k: int, saves: Saves, got: int | None, inside: bool) -> None:
        """Account for a chunk that ``advance`` returned ``got`` for (not 0)."""
        nonlocal row, taken, first_bad
        done = k if got is None else got
        offsets = saves.offsets(done if got is None else done - 1)
        m = offsets.size
        if m:
            steps[row : row + m] = n0 + offsets
            for j in offsets.tolist():
                if not inside and not kernel.record(row):  # only at the chunk's end
                    first_bad = n0 + j
                row += 1
                if progress is not None:
                    progress(taken + j, n_steps)
        if got is not None:
            steps[row] = n0 + got
            if not inside:
                kernel.record(row)
            row += 1
            if progress is not None:
                progress(taken + got, n_steps)
            first_bad = n0 + got
        taken += done

    # Blow-up is detected and reported (status, first bad step, DivergenceError), so NumPy's
    # floating-point warnings on the way to inf/nan would only duplicate it.
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            steps[0] = initial_step
            if not kernel.record(0):
                first_bad = initial_step
            while first_bad is None and taken < n_steps:
                n0 = initial_step + taken
                k = min(kernel.max_chunk, n_steps - taken)
                if not kernel.records_inside:
                    k = min(k, save_every - taken % save_every)
                saves = saves_of(taken, k, save_every, n_steps, row)
                got = kernel.advance(n0, k, saves)
                if got != 0:
                    book(n0, k, saves, got, kernel.records_inside)
                    continue
                for j in range(k):  # replay the chunk from its unchanged start, step by step
                    one = saves_of(taken, 1, save_every, n_steps, row)
                    book(n0 + j, 1, one, kernel.advance(n0 + j, 1, one, replay=True), False)
                    if first_bad is not None:
                        break
    finally:
        kernel.close()
    return steps[:row], first_bad, taken


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _methods() -> dict[str, Any]:
    from inertia.integrators import METHODS

    return METHODS
