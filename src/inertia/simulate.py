"""``simulate``: the only time loop. Ensembles, recording, the friction ledger, divergence.

One entry point (like scipy's ``solve_ivp``): validate at the front door, step a registered
integrator (:mod:`inertia.integrators`) over ``(n_paths, d)`` arrays of any Array-API backend,
record the energies of THEORY.md section 1 at the saved steps, and return a frozen
:class:`Trajectory` with ``status``, ``message`` and work counters.

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

import contextlib
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
from inertia.energy import kinetic
from inertia.integrators import IntegratorState, StepContext, get_method
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
        x = constant_like(to_numpy(x), ref)
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
        fast: step the run in a fast loop where one supports it (default): ensembles of a
            diagonal :class:`~inertia.potentials.Quadratic` with a built-in method, NumPy or torch,
            float32/float64, go through the in-place kernels of
            :mod:`inertia.integrators.inplace` (state in preallocated buffers, noise filled on
            :data:`inertia._backend.NOISE_THREADS` threads one step ahead while the arithmetic
            runs on the calling thread: torch's intra-op threads are set to 1 for the run, see
            :func:`inertia._backend.serial_arithmetic`); on CUDA tensors the same kernel steps
            chunks of up to 8 steps in one ``torch.compile``-d graph
            (:mod:`inertia.integrators.fused`; the same keyed noise; the in-place kernel if
            compilation fails); on CPU without noise (``sigma = 0``) and with numba installed
            (the ``fast`` extra), chunks of up to 128 steps run in one numba loop over blocks of
            paths on all cores (:mod:`inertia.integrators.fused_cpu`; without numba, the
            in-place kernel), and with noise each step is one numba pass per noise draw on the
            calling thread (the same keyed noise, filled as above). One deterministic
            path (``n_paths = 1``, ``sigma = 0``, NumPy, a built-in method) goes through the
            compiled loop of :mod:`inertia.integrators.compiled` for a built-in potential when
            numba is installed (the ``fast`` extra; float64 inside), else through a lean NumPy
            loop (any potential; divergence checked every few steps, the first bad step found
            by replay). ``False`` forces the generic loop. Both give the same numbers to
            rounding error and the same :class:`Trajectory`; divergence is checked as
            documented there.

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
    xp = array_namespace(theta)
    ones = xp.ones((n_paths, d), dtype=theta.dtype, device=_device(theta))
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
    ctx = StepContext(
        value_and_grad=potential.value_and_grad,
        mass=mass_arr,
        inv_mass=inv_mass,
        inv_sqrt_mass=inv_sqrt_mass,
        friction=friction,
        sigma=sigma,
        dt=dt,
        t0=t0,
        noise=lambda n, k: normal((seed, n, k), (n_paths, d), theta),
    )
    step_fn = meth.make_step(friction.is_zero() and sigma == 0.0)
    loop = _single_path_loop(potential, method, meth, theta, n_paths, sigma) if fast else None
    if loop is not None:  # one deterministic path: compiled or lean NumPy loop (issue 4)
        return _run_single_path(
            loop,
            potential,
            method,
            theta,
            v,
            friction=friction,
            mass_arr=mass_arr,
            inv_mass=inv_mass,
            mass_json=mass_json,
            dt=dt,
            t0=t0,
            initial_step=initial_step,
            n_steps=n_steps,
            save_every=save_every,
            progress=progress,
            on_divergence=on_divergence,
            config=config,
        )
    log.info("simulate: %s, %d paths x d=%d, %d steps of dt=%g", method, n_paths, d, n_steps, dt)
    if fast:
        from inertia.integrators.inplace import make_kernel

        kernel = make_kernel(
            method, potential, theta, v, mass=mass_json, friction=friction, sigma=sigma, dt=dt, t0=t0
        )
        if kernel is not None:
            return _run_inplace(
                kernel,
                seed=seed,
                n_steps=n_steps,
                initial_step=initial_step,
                save_every=save_every,
                t0=t0,
                dt=dt,
                progress=progress,
                on_divergence=on_divergence,
                method=method,
                config=config,
            )

    state = IntegratorState(theta, v)
    dissipated = xp.zeros((n_paths,), dtype=theta.dtype, device=_device(theta))
    rows: list[tuple[int, Any, Any, Any]] = []
    n_grad = 0

    def record(n: int, st: IntegratorState) -> tuple[IntegratorState, bool]:
        value = st.value if st.value is not None else potential.value(st.theta)
        if st.value is None:
            st = st._replace(value=value)
        k = kinetic(st.v, mass_arr)
        rows.append((n, k, value, dissipated))
        return st, math.isfinite(float(xp.sum(k) + xp.sum(value)))

    # Blow-up is detected below and reported (status, first bad step, DivergenceError), so
    # NumPy's floating-point warnings on the way to inf/nan would only duplicate it.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        state, ok = record(initial_step, state)
        first_bad = None if ok else initial_step
        taken = 0
        for k in range(n_steps if ok else 0):
            n = initial_step + k
            res = step_fn(state, n, ctx)
            state = res.state
            n_grad += res.n_grad_evals
            dissipated = dissipated + res.dissipated
            taken = k + 1
            # theta, v*v (the kinetic energy) and the potential wherever the integrator
            # already evaluated it: one reduction and one host sync per step
            check = xp.sum(state.theta) + xp.sum(state.v * state.v)
            if state.value is not None:
                check = check + xp.sum(state.value)
            finite = math.isfinite(float(check))
            if not finite or taken % save_every == 0 or taken == n_steps:
                state, ok = record(n + 1, state)
                if progress is not None:
                    progress(taken, n_steps)
                if not (finite and ok):
                    first_bad = n + 1
                    break

    steps = np.asarray([r[0] for r in rows], dtype=np.int64)
    return finish(
        steps=steps,
        kinetic=to_numpy(xp.stack([r[1] for r in rows])),
        potential=to_numpy(xp.stack([r[2] for r in rows])),
        dissipated=to_numpy(xp.stack([r[3] for r in rows])),
        theta=state.theta,
        v=state.v,
        first_bad=first_bad,
        taken=taken,
        n_grad=n_grad,
        method=method,
        t0=t0,
        dt=dt,
        config=config,
        on_divergence=on_divergence,
    )


def _run_inplace(
    kernel: Any,
    *,
    seed: int,
    n_steps: int,
    initial_step: int,
    save_every: int,
    t0: float,
    dt: float,
    progress: Callable[[int, int], None] | None,
    on_divergence: str,
    method: str,
    config: dict[str, Any],
) -> Trajectory:
    """The time loop of :func:`simulate` for an :class:`~inertia.integrators.inplace.InplaceKernel`.

    The same saved steps, counters, progress calls, status, message and divergence policy as the
    generic loop. Recording goes into preallocated ``(n_saved, n_paths)`` buffers of the run's
    backend, copied to NumPy once at the end; noise comes from a
    :class:`~inertia._backend.NoiseStream` (closed, its threads joined, however the loop ends).
    Divergence: after every step the per-path kinetic energy is computed and its sum checked
    (one host sync), at saved steps the potential too (see :class:`Trajectory`).

    A kernel with a ``steps(n, k)`` method (:class:`~inertia.integrators.fused.FusedKernel`,
    :class:`~inertia.integrators.fused_cpu.CpuFusedKernel`) advances chunks of up to
    ``kernel.max_chunk`` steps that never span a saved step, and draws its keyed noise itself
    (``kernel.seed``; no NoiseStream). The kinetic energy of the last state
    of a chunk is checked once (one host sync per chunk); when it is not finite the kernel keeps
    the state from before the chunk and the chunk is replayed here step by step with
    ``kernel.step``, which finds the first bad step as the in-place loop does.
    """
    from inertia._backend import NoiseStream, serial_arithmetic

    theta = kernel.theta
    n_paths = int(theta.shape[0])
    n_rows = n_steps // save_every + 1 + (1 if n_steps % save_every else 0)
    kin = _empty_rows(theta, (n_rows, n_paths))
    pot = _empty_rows(theta, (n_rows, n_paths))
    diss = _empty_rows(theta, (n_rows, n_paths))
    check = _empty_rows(theta, (n_paths,))
    steps = np.zeros(n_rows, dtype=np.int64)
    row = 0

    def record(n: int) -> bool:
        nonlocal row
        kernel.kinetic(kin[row])
        kernel.potential(pot[row])
        diss[row] = kernel.dissipated
        steps[row] = n
        row += 1
        return math.isfinite(float(kin[row - 1].sum()) + float(pot[row - 1].sum()))

    noise = None
    n_grad = 0
    taken = 0
    first_bad: int | None = None
    # a FusedKernel (inertia.integrators.fused) advances whole chunks and draws its own keyed noise
    chunked = callable(getattr(kernel, "steps", None))

    def one_step(n: int) -> bool:
        """Step ``n`` in place, checked and recorded as the in-place loop does; True: stop."""
        nonlocal n_grad, taken, first_bad
        n_grad += kernel.step(n)
        taken += 1
        saved = taken % save_every == 0 or taken == n_steps
        finite = saved or math.isfinite(float(kernel.kinetic(check).sum()))
        if saved or not finite:
            ok = record(n + 1)
            if progress is not None:
                progress(taken, n_steps)
            if not (finite and ok):
                first_bad = n + 1
                return True
        return False

    stack = contextlib.ExitStack()
    try:
        if chunked:
            kernel.seed = seed
        elif kernel.n_noise and n_steps:
            # the next key is filled while the arithmetic runs on the calling thread (torch's
            # intra-op threads would compete with the fill threads: see serial_arithmetic)
            noise = NoiseStream(seed, kernel.noise_keys(initial_step, n_steps), theta)
            kernel.noise = noise
            if noise.threads > 1:
                stack.enter_context(serial_arithmetic(theta))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if not record(initial_step):
                first_bad = initial_step
            while first_bad is None and taken < n_steps:
                n = initial_step + taken
                # a chunk ends at the next saved step, the last step or after max_chunk steps
                k = min(save_every - taken % save_every, n_steps - taken, kernel.max_chunk if chunked else 1)
                done = kernel.steps(n, k) if chunked else None
                if done is None:  # the in-place loop (or a fused kernel that could not compile)
                    one_step(n)
                    continue
                n_grad_chunk, finite = done
                if not finite:  # replay the chunk step by step from the unchanged state
                    for j in range(k):
                        if one_step(n + j):
                            break
                    continue
                n_grad += n_grad_chunk
                taken += k
                if taken % save_every == 0 or taken == n_steps:
                    ok = record(n + k)
                    if progress is not None:
                        progress(taken, n_steps)
                    if not ok:
                        first_bad = n + k
    finally:
        kernel.noise = None
        stack.close()
        if noise is not None:
            noise.close()

    return finish(
        steps=steps[:row],
        kinetic=to_numpy(kin[:row]),
        potential=to_numpy(pot[:row]),
        dissipated=to_numpy(diss[:row]),
        theta=kernel.theta,
        v=kernel.v,
        first_bad=first_bad,
        taken=taken,
        n_grad=n_grad,
        method=method,
        t0=t0,
        dt=dt,
        config=config,
        on_divergence=on_divergence,
    )


def _empty_rows(like: Any, shape: tuple[int, ...]) -> Any:
    """An uninitialised array of ``shape`` in ``like``'s backend, dtype and device."""
    xp = array_namespace(like)
    return xp.empty(shape, dtype=like.dtype, device=_device(like))


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _methods() -> dict[str, Any]:
    from inertia.integrators import METHODS

    return METHODS


# --- long single paths (issue 4) -------------------------------------------------------------
#
# One path (n_paths = 1), no noise, NumPy arrays and a built-in method: simulate() hands the run
# to _run_single_path, which steps it either in the compiled loop of
# inertia.integrators.compiled (built-in potentials, numba installed) or in the lean NumPy loop
# below (any Potential). Both take the generic loop's sub-steps and formulas, in the same order:
# float64 results equal simulate(..., fast=False) to rounding (bit for bit where the arithmetic is
# the same, which the tests pin), with the same recording, divergence and Trajectory.

#: The lean loop checks divergence every this many steps (and at every saved step); a failed
#: check replays those steps one by one from the last good state to find the first bad step.
_CHECK_EVERY = 128
#: Steps per call of the compiled loop (progress is reported after each call).
_COMPILED_CHUNK = 1 << 16
#: ... when a friction schedule is tabulated in Python for each chunk.
_TABLE_CHUNK = 4096


_SINGLE_PATH_METHODS: dict[str, tuple[Any, Any]] | None = None


def _single_path_methods() -> dict[str, tuple[Any, Any]]:
    """``name -> (registered Method, scheme)`` for the built-in methods (scheme ``None``: Euler)."""
    from inertia.integrators import METHODS
    from inertia.integrators.splitting import BAOAB, LEAPFROG, SYMPLECTIC_EULER, YOSHIDA4

    global _SINGLE_PATH_METHODS
    if _SINGLE_PATH_METHODS is None:
        schemes = {
            "euler": None,
            "euler_maruyama": None,
            "symplectic_euler": SYMPLECTIC_EULER,
            "leapfrog": LEAPFROG,
            "yoshida4": YOSHIDA4,
            "baoab": BAOAB,
        }
        _SINGLE_PATH_METHODS = {name: (METHODS[name], scheme) for name, scheme in schemes.items()}
    return _SINGLE_PATH_METHODS


def _single_path_loop(
    potential: Potential, method: str, meth: Any, theta: Any, n_paths: int, sigma: float
) -> str | None:
    """The loop that steps this run: ``"compiled"``, ``"numpy"`` (lean), or ``None`` (generic).

    The single-path loops take one deterministic path (``n_paths = 1``, ``sigma = 0``) of a NumPy
    float32/float64 ``theta`` with a built-in method; the compiled loop also needs a built-in
    potential (exact class) and numba.
    """
    entry = _single_path_methods().get(method)
    if entry is None or entry[0] is not meth or n_paths != 1 or sigma != 0.0:
        return None
    if not isinstance(theta, np.ndarray) or theta.dtype not in (np.float32, np.float64):
        return None
    from inertia import potentials as p

    if type(potential) in (p.Quadratic, p.DoubleWell, p.QuarticChain, p.Rosenbrock):
        from inertia.integrators import compiled

        if compiled.available() and compiled.family_of(potential) is not None:
            return "compiled"
    return "numpy"


def _substeps(scheme: Any, friction_free: bool) -> tuple[tuple[str, float, float], ...]:
    """``(letter, c, start)`` per sub-step, as the generic splitting step runs them: the scheme
    reduced like :func:`~inertia.integrators.splitting.reduce_scheme` does for the run, and the
    start of each ``O`` sub-step as a fraction of ``dt`` (``O`` sub-steps tile ``[0, 1]``)."""
    from inertia.integrators.splitting import reduce_scheme

    if scheme is None:
        return (("E", 1.0, 0.0),)
    out = []
    acc = 0.0
    for letter, c in reduce_scheme(scheme, drop_friction=friction_free):
        out.append((letter, c, acc))
        if letter == "O":
            acc += c
    return tuple(out)


def _n_saved(n_steps: int, save_every: int) -> int:
    """Rows of a run without divergence: steps ``0, save_every, ...`` and ``n_steps``."""
    return n_steps // save_every + 1 + (1 if n_steps % save_every else 0)


_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: theta, v, value (None when stale), grad (None when stale), dissipated, n_grad_evals
_LeanState = tuple[Any, Any, Any, Any, Any, int]
_PathResult = tuple[_Rows, Any, Any, int | None, int, int]


def _single_path_compiled(
    potential: Potential,
    scheme: Any,
    theta: np.ndarray,
    v: np.ndarray,
    friction: Friction,
    mass_json: Any,
    dt: float,
    t0: float,
    initial_step: int,
    n_steps: int,
    save_every: int,
    progress: Callable[[int, int], None] | None,
) -> _PathResult:
    """Drive :func:`inertia.integrators.compiled.run_path` in chunks (float64 inside)."""
    from inertia.dynamics import ConstantFriction, NesterovFriction
    from inertia.integrators import compiled as cc

    spec = cc.family_of(potential)
    assert spec is not None
    family, scalars, arr = spec
    dtype = theta.dtype
    limit = float(np.finfo(dtype).max)
    th = np.array(theta[0], dtype=np.float64)
    vel = np.array(v[0], dtype=np.float64)
    d = th.size
    grad = np.zeros(d)
    tmp = np.zeros(d)
    mass = np.ascontiguousarray(np.broadcast_to(np.asarray(mass_json, dtype=np.float64), (d,)))
    inv_mass = 1.0 / mass

    friction_free = friction.is_zero()
    subs = _substeps(scheme, friction_free)
    codes = np.array([{"A": cc.SUB_A, "B": cc.SUB_B, "O": cc.SUB_O, "E": cc.SUB_EULER}[s[0]] for s in subs])
    coefs = np.array([c * dt for _, c, _ in subs])
    starts = np.array([start for _, _, start in subs])
    fracs = np.array([c for _, c, _ in subs])
    o_subs = [(start, c) for letter, c, start in subs if letter == "O"]
    t_start = t0 + initial_step * dt
    gamma = 0.0
    if friction_free:
        mode = cc.FRICTION_NONE
    elif type(friction) is ConstantFriction:
        mode, gamma = cc.FRICTION_CONSTANT, float(friction.gamma)
    elif type(friction) is NesterovFriction and t_start >= 0.0:
        mode, gamma = cc.FRICTION_NESTEROV, float(friction.r)
    else:
        mode = cc.FRICTION_TABLE
    chunk = _TABLE_CHUNK if mode == cc.FRICTION_TABLE else _COMPILED_CHUNK
    no_table = np.zeros((1, 1))

    def table(n0: int, k: int) -> np.ndarray:
        # the generic loop's friction values for steps n0 .. n0 + k - 1, in Python
        if mode != cc.FRICTION_TABLE:
            return no_table
        times = [t0 + n * dt for n in range(n0, n0 + k)]
        if scheme is None:
            return np.array([[friction(t)] for t in times], dtype=np.float64)
        return np.array(
            [[friction.integral(t + s * dt, t + (s + c) * dt) for s, c in o_subs] for t in times],
            dtype=np.float64,
        ).reshape(k, len(o_subs))

    size = _n_saved(n_steps, save_every)
    rec_step = np.zeros(size, dtype=np.int64)
    rec_k, rec_p, rec_d = np.zeros(size), np.zeros(size), np.zeros(size)
    pot0 = cc.value_and_grad(family, th, grad, scalars, arr, tmp)
    kin0 = cc.kinetic(vel, mass, tmp)
    rec_step[0], rec_k[0], rec_p[0] = initial_step, kin0, pot0
    n_rec, taken, n_grad = 1, 0, 0
    bad = not abs(kin0 + pot0) <= limit
    fresh, value, diss = False, 0.0, 0.0
    while taken < n_steps and not bad:
        k = min(chunk, n_steps - taken)
        n0 = initial_step + taken
        before = n_rec
        taken, bad, ng, n_rec, fresh, value, diss = cc.run_path(
            family,
            scalars,
            arr,
            th,
            vel,
            grad,
            tmp,
            codes,
            coefs,
            starts,
            fracs,
            mode,
            gamma,
            table(n0, k),
            mass,
            inv_mass,
            dt,
            t0,
            n0,
            k,
            taken,
            n_steps,
            save_every,
            limit,
            rec_step,
            rec_k,
            rec_p,
            rec_d,
            n_rec,
            fresh,
            value,
            diss,
        )
        n_grad += ng
        if progress is not None:
            for r in range(before, n_rec):
                progress(int(rec_step[r]) - initial_step, n_steps)
    first_bad = int(rec_step[n_rec - 1]) if bad else None
    with np.errstate(over="ignore"):  # a float32 run past float32's range reads as inf, as it would
        rows = (
            rec_step[:n_rec].copy(),
            rec_k[:n_rec, None].astype(dtype),
            rec_p[:n_rec, None].astype(dtype),
            rec_d[:n_rec, None].astype(dtype),
        )
        return rows, th.astype(dtype)[None, :], vel.astype(dtype)[None, :], first_bad, taken, n_grad


def _single_path_numpy(
    potential: Potential,
    scheme: Any,
    theta: np.ndarray,
    v: np.ndarray,
    friction: Friction,
    mass_arr: Any,
    inv_mass: Any,
    dt: float,
    t0: float,
    initial_step: int,
    n_steps: int,
    save_every: int,
    progress: Callable[[int, int], None] | None,
) -> _PathResult:
    """The lean NumPy loop: the generic loop's sub-steps on ``(1, d)`` arrays, without the per-step
    state objects and host syncs.

    Divergence (``sum(theta) + sum(v^2) (+ L where the step evaluated it)`` not finite) is checked
    every :data:`_CHECK_EVERY` steps and at every saved step; when a check fails, the steps since
    the last good check are replayed one by one from that state (kept as it was: ``theta`` gets a
    new array at every drift, as the potential's input must, and ``v`` is copied before it is
    updated in place) to find the first bad step. This assumes what every blow-up does: once
    that sum is non-finite it stays so up to the next check (a NaN stays NaN); a state that
    overflows and comes back within ``_CHECK_EVERY`` steps would go unreported.
    """
    from inertia.integrators.splitting import o_coefficients

    value_and_grad = potential.value_and_grad
    prog = tuple((letter, c * dt, start, c) for letter, c, start in _substeps(scheme, friction.is_zero()))
    unit_mass = isinstance(inv_mass, float) and inv_mass == 1.0  # 1.0 * grad == grad: skip it

    def advance(st: _LeanState, n0: int, n1: int, check_each: bool) -> tuple[_LeanState, int | None]:
        theta, v, value, grad, diss, n_grad = st
        for n in range(n0, n1):
            t = t0 + n * dt
            step_diss: Any = None
            for letter, cdt, start, c in prog:
                if letter == "A":
                    theta = theta + cdt * v
                    value = grad = None
                elif letter == "B":
                    if grad is None:
                        value, grad = value_and_grad(theta)
                        n_grad += 1
                    v = v - cdt * grad if unit_mass else v - cdt * (inv_mass * grad)
                elif letter == "O":
                    c1, one_minus_c1sq, _ = o_coefficients(
                        friction, 0.0, t + start * dt, t + (start + c) * dt
                    )
                    if one_minus_c1sq != 0.0:
                        work = one_minus_c1sq * kinetic(v, mass_arr)
                        step_diss = work if step_diss is None else step_diss + work
                    v = c1 * v
                else:  # explicit Euler, as inertia.integrators.euler
                    if grad is None:
                        grad = value_and_grad(theta)[1]
                        n_grad += 1
                    gamma = friction(t)
                    new_v = v - dt * grad if unit_mass else v - dt * (inv_mass * grad)
                    if gamma != 0.0:
                        new_v = new_v - (dt * gamma) * v
                        step_diss = (2.0 * dt * gamma) * kinetic(v, mass_arr)
                    theta, v = theta + dt * v, new_v
                    value = grad = None
            if step_diss is not None:
                diss = diss + step_diss
            if check_each and not _finite_state(theta, v, value):
                return (theta, v, value, grad, diss, n_grad), n + 1
        return (theta, v, value, grad, diss, n_grad), None

    # conservative splitting (kicks and drifts only, e.g. frictionless leapfrog): the same
    # sub-steps with less bookkeeping per step; L is current exactly while grad is
    drifts_and_kicks = tuple((letter == "A", cdt) for letter, cdt, _, _ in prog)

    def advance_conservative(
        st: _LeanState, n0: int, n1: int, check_each: bool
    ) -> tuple[_LeanState, int | None]:
        theta, v, value, grad, diss, n_grad = st
        v = v.copy()  # updated in place below; the caller's state stays as it was, for a replay
        for n in range(n0, n1):
            for drift, cdt in drifts_and_kicks:
                if drift:
                    new = cdt * v  # theta + c dt v, in a new array: theta is the potential's input
                    new += theta
                    theta = new
                    grad = None
                else:
                    if grad is None:
                        value, grad = value_and_grad(theta)
                        n_grad += 1
                    v -= cdt * grad if unit_mass else cdt * (inv_mass * grad)
            if check_each and not _finite_state(theta, v, None if grad is None else value):
                return (theta, v, None if grad is None else value, grad, diss, n_grad), n + 1
        return (theta, v, None if grad is None else value, grad, diss, n_grad), None

    if all(letter in ("A", "B") for letter, _, _, _ in prog):
        advance = advance_conservative

    rows: list[tuple[int, Any, Any, Any]] = []

    def record(n: int, st: _LeanState) -> tuple[_LeanState, bool]:
        theta, v, value, grad, diss, n_grad = st
        if value is None:
            value = potential.value(theta)
        k = kinetic(v, mass_arr)
        rows.append((n, k, value, diss))
        return (theta, v, value, grad, diss, n_grad), math.isfinite(float(np.sum(k) + np.sum(value)))

    st: _LeanState = (theta, v, None, None, np.zeros((1,), dtype=theta.dtype), 0)
    end = initial_step + n_steps
    n = initial_step
    st, ok = record(n, st)
    first_bad = None if ok else initial_step
    while first_bad is None and n < end:
        next_save = initial_step + ((n - initial_step) // save_every + 1) * save_every
        stop = min(n + _CHECK_EVERY, next_save, end)
        new, _ = advance(st, n, stop, False)
        if not _finite_state(new[0], new[1], new[2]):
            new, first_bad = advance(st, n, stop, True)
            if first_bad is None:  # a potential that is not a pure function of theta
                first_bad = stop
        n = stop if first_bad is None else first_bad
        st = new
        if first_bad is not None or n == next_save or n == end:
            st, ok = record(n, st)
            if progress is not None:
                progress(n - initial_step, n_steps)
            if not ok:
                first_bad = n
    steps = np.asarray([r[0] for r in rows], dtype=np.int64)
    out = (
        steps,
        np.stack([r[1] for r in rows]),
        np.stack([np.asarray(r[2]).reshape(1) for r in rows]),
        np.stack([r[3] for r in rows]),
    )
    return out, st[0], st[1], first_bad, n - initial_step, st[5]


def _finite_state(theta: Any, v: Any, value: Any) -> bool:
    """The generic loop's per-step check: ``sum(theta) + sum(v^2) (+ sum(L))`` is finite."""
    check = np.sum(theta) + np.sum(v * v)
    if value is not None:
        check = check + np.sum(value)
    return math.isfinite(float(check))


def _run_single_path(
    loop: str,
    potential: Potential,
    method: str,
    theta: Any,
    v: Any,
    *,
    friction: Friction,
    mass_arr: Any,
    inv_mass: Any,
    mass_json: Any,
    dt: float,
    t0: float,
    initial_step: int,
    n_steps: int,
    save_every: int,
    progress: Callable[[int, int], None] | None,
    on_divergence: str,
    config: dict[str, Any],
) -> Trajectory:
    """One deterministic path through the compiled or the lean NumPy loop, as a :class:`Trajectory`
    with the generic loop's rows, status, message, counters and divergence policy."""
    scheme = _single_path_methods()[method][1]
    log.info(
        "simulate: %s, one path x d=%d, %d steps of dt=%g (%s loop)",
        method,
        theta.shape[-1],
        n_steps,
        dt,
        loop,
    )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if loop == "compiled":
            rows, theta, v, first_bad, taken, n_grad = _single_path_compiled(
                potential,
                scheme,
                theta,
                v,
                friction,
                mass_json,
                dt,
                t0,
                initial_step,
                n_steps,
                save_every,
                progress,
            )
        else:
            rows, theta, v, first_bad, taken, n_grad = _single_path_numpy(
                potential,
                scheme,
                theta,
                v,
                friction,
                mass_arr,
                inv_mass,
                dt,
                t0,
                initial_step,
                n_steps,
                save_every,
                progress,
            )
    steps, kin, pot, diss = rows
    return finish(
        steps=steps,
        kinetic=kin,
        potential=pot,
        dissipated=diss,
        theta=theta,
        v=v,
        first_bad=first_bad,
        taken=taken,
        n_grad=n_grad,
        method=method,
        t0=t0,
        dt=dt,
        config=config,
        on_divergence=on_divergence,
    )
