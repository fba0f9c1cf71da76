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

import io
import json
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inertia._backend import array_namespace, constant_like, normal, to_numpy
from inertia._validate import finite_float, whole_number
from inertia.dynamics import Friction, as_friction
from inertia.energy import kinetic
from inertia.integrators import IntegratorState, StepContext, get_method
from inertia.potentials import Potential

__all__ = ["DivergenceError", "Trajectory", "simulate"]

log = logging.getLogger(__name__)

_ON_DIVERGENCE = ("raise", "stop")


class DivergenceError(RuntimeError):
    """Raised at the end of a run that blew up; ``.trajectory`` holds the partial result."""

    def __init__(self, message: str, trajectory: Trajectory) -> None:
        super().__init__(message)
        self.trajectory = trajectory


@dataclass(frozen=True)
class Trajectory:
    """The result of :func:`simulate`.

    Attributes:
        t: times of the saved steps, shape ``(n_saved,)``.
        step: step indices of the saved steps, shape ``(n_saved,)``.
        kinetic, potential, inertia, dissipated: NumPy arrays ``(n_saved, n_paths)``.
        theta, v: the final state ``(n_paths, d)`` in the backend of the inputs.
        status: ``"success"`` or ``"diverged"``.
        message: a human-readable account of how the run ended.
        first_bad_step: the first step at which ``theta``, ``v`` or the kinetic energy is
            non-finite, or the potential is, where it was evaluated (every step for the methods
            that end a step with a gradient: leapfrog, yoshida4, baoab; saved steps otherwise);
            ``None`` if none.
        n_steps: steps taken; n_grad_evals: gradient evaluations.
        method: the integrator; config: the arguments of the run (JSON-serialisable).
    """

    t: np.ndarray
    step: np.ndarray
    kinetic: np.ndarray
    potential: np.ndarray
    inertia: np.ndarray
    dissipated: np.ndarray
    theta: Any
    v: Any
    status: str
    message: str
    first_bad_step: int | None
    n_steps: int
    n_grad_evals: int
    method: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when the run finished without divergence."""
        return self.status == "success"

    @property
    def n_paths(self) -> int:
        return int(self.kinetic.shape[1])

    @property
    def n_saved(self) -> int:
        return int(self.t.shape[0])

    def to_pandas(self, *, paths: Any = None) -> Any:
        """A long table: one row per saved step and path.

        Columns ``step, t, path, kinetic, potential, inertia, dissipated``; ``paths`` selects a
        subset of path indices (default: all).
        """
        import pandas as pd

        idx = np.arange(self.n_paths) if paths is None else np.atleast_1d(np.asarray(paths))
        n_t, n_p = self.n_saved, idx.size
        return pd.DataFrame(
            {
                "step": np.repeat(self.step, n_p),
                "t": np.repeat(self.t, n_p),
                "path": np.tile(idx, n_t),
                "kinetic": self.kinetic[:, idx].reshape(-1),
                "potential": self.potential[:, idx].reshape(-1),
                "inertia": self.inertia[:, idx].reshape(-1),
                "dissipated": self.dissipated[:, idx].reshape(-1),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write the trajectory: ``.npz`` (all arrays and the config), ``.csv`` or ``.parquet``
        (the long table of :meth:`to_pandas`). Refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"`path` already exists, refusing to overwrite: {path}")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            meta = {
                k: getattr(self, k)
                for k in ("status", "message", "first_bad_step", "n_steps", "n_grad_evals", "method")
            }
            meta["config"] = self.config
            buf = io.BytesIO()
            np.savez(
                buf,
                t=self.t,
                step=self.step,
                kinetic=self.kinetic,
                potential=self.potential,
                inertia=self.inertia,
                dissipated=self.dissipated,
                theta=to_numpy(self.theta),
                v=to_numpy(self.v),
                meta=np.asarray(json.dumps(meta)),
            )
            _atomic_write(path, buf.getvalue())
        elif suffix == ".csv":
            _atomic_write(path, self.to_pandas().to_csv(index=False).encode())
        elif suffix == ".parquet":
            tmp = path.with_name(path.name + ".tmp")
            self.to_pandas().to_parquet(tmp, index=False)
            tmp.replace(path)
        else:
            raise ValueError(f"`path` must end in .npz, .csv or .parquet, got {path.name!r}")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save` as ``.npz`` (never unpickles)."""
        with np.load(Path(path), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {
                k: f[k] for k in ("t", "step", "kinetic", "potential", "inertia", "dissipated", "theta", "v")
            }
        config = meta.pop("config")
        return cls(**arrays, **meta, config=config)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _as_state_array(name: str, x: Any, ref: Any = None) -> Any:
    """Arrays pass through (validated); Python scalars and sequences become float64 NumPy."""
    try:
        array_namespace(x)
        is_array = True
    except TypeError:
        is_array = False
    if not is_array:
        try:
            x = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"`{name}` must be an array of real numbers, got {type(x).__name__}") from exc
    elif isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if ref is not None and type(x) is not type(ref):
        x = constant_like(to_numpy(x), ref)
    if x.ndim not in (1, 2):
        raise ValueError(f"`{name}` must have shape (d,) or (n_paths, d), got {tuple(x.shape)}")
    if not bool(np.all(np.isfinite(to_numpy(x)))):
        raise ValueError(f"`{name}` must be finite")
    return x


def _mass_array(mass: Any, d: int, ref: Any) -> tuple[Any, Any, Any, Any]:
    """``(mass, 1/mass, 1/sqrt(mass))`` as floats or ``(d,)`` backend arrays, and a JSON form."""
    if np.isscalar(mass) or (isinstance(mass, np.ndarray) and mass.ndim == 0):
        m = finite_float("mass", mass, minimum=0.0, strict=True)
        return m, 1.0 / m, 1.0 / math.sqrt(m), m
    m_np = np.asarray(to_numpy(mass) if not isinstance(mass, (list, tuple)) else mass, dtype=np.float64)
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
    log.info("simulate: %s, %d paths x d=%d, %d steps of dt=%g", method, n_paths, d, n_steps, dt)

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
        status, first_bad, message = "success", None, ""
        if not ok:
            status, first_bad = "diverged", initial_step
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
                    status, first_bad = "diverged", n + 1
                    break

    if first_bad is not None:
        message = (
            f"non-finite state or energy at step {first_bad} "
            f"(t = {t0 + first_bad * dt:g}); the run stopped there and the trajectory "
            f"up to it is kept. Reduce `dt` or check the potential."
        )
        log.warning("simulate: %s", message)
    else:
        message = f"completed {taken} steps"
    steps = np.asarray([r[0] for r in rows], dtype=np.int64)
    kin = to_numpy(xp.stack([r[1] for r in rows]))
    pot = to_numpy(xp.stack([r[2] for r in rows]))
    diss = to_numpy(xp.stack([r[3] for r in rows]))
    traj = Trajectory(
        t=t0 + steps * dt,
        step=steps,
        kinetic=kin,
        potential=pot,
        inertia=kin + pot,
        dissipated=diss,
        theta=state.theta,
        v=state.v,
        status=status,
        message=message,
        first_bad_step=first_bad,
        n_steps=taken,
        n_grad_evals=n_grad,
        method=method,
        config=config,
    )
    if status == "diverged" and on_divergence == "raise":
        raise DivergenceError(message, traj)
    return traj


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _methods() -> dict[str, Any]:
    from inertia.integrators import METHODS

    return METHODS
