"""Kernels for one long deterministic path: the compiled path and the lean NumPy path.

One path (``n_paths = 1``), no noise, a NumPy float32/float64 ``theta`` and a method with a
scheme (:func:`one_deterministic_path`): the table of :mod:`inertia.kernels` picks a
:class:`CompiledPathKernel` for a built-in potential (exact class) when numba is installed (the
``fast`` extra), else a :class:`LeanPathKernel` (any potential).
Both take the generic loop's sub-steps (:func:`_substeps`) and formulas, in the same order:
float64 results equal ``simulate(..., fast=False)`` to rounding (bit for bit where the arithmetic
is the same, which the tests pin), with the same recording and divergence.

* :class:`CompiledPathKernel`: chunks of up to :data:`COMPILED_CHUNK` steps in
  :func:`inertia.kernels.compiled.run_path` (float64 inside; float32 runs are returned as
  float32, a value beyond float32's range counting as non-finite), which records the saved steps
  the driver names (``records_inside``) and stops at the first non-finite state.
* :class:`LeanPathKernel`: the generic loop's sub-steps on ``(1, d)`` arrays without its per-step
  state objects and host checks. Divergence (``sum(theta) + sum(v^2) (+ L where the step
  evaluated it)`` not finite) is checked once per chunk of :data:`CHECK_EVERY` steps (chunks end
  at saved steps); a failed check leaves the state as before the chunk (kept as it was:
  ``theta`` gets a new array at every drift, as the potential's input must, and ``v`` is copied
  before it is updated in place) and the driver replays the chunk step by step. This assumes what
  every blow-up does: once that sum is non-finite it stays so to the end of the chunk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inertia.dynamics import ConstantFriction, NesterovFriction
from inertia.energy import kinetic
from inertia.integrators.splitting import o_coefficients, reduce_scheme
from inertia.kernels import compiled as cc
from inertia.kernels._protocol import Run, Saves

__all__ = ["CHECK_EVERY", "COMPILED_CHUNK", "CompiledPathKernel", "LeanPathKernel", "one_deterministic_path"]

#: The lean kernel checks divergence every this many steps (and at every saved step).
CHECK_EVERY = 128
#: Steps per call of the compiled loop (progress is reported after each call).
COMPILED_CHUNK = 1 << 16
#: ... when a friction schedule is tabulated in Python for each chunk.
TABLE_CHUNK = 4096


def one_deterministic_path(run: Run) -> bool:
    """One path (``n_paths = 1``), no noise, NumPy float32/float64 and a method with a kernel
    scheme: what both kernels here step (the compiled one also needs a built-in potential)."""
    theta = run.theta
    if run.n_paths != 1 or run.sigma != 0.0 or run.method.kernel_scheme is None:
        return False
    return (
        isinstance(theta, np.ndarray)
        and theta.dtype in (np.float32, np.float64)
        and isinstance(run.v, np.ndarray)
    )


def _substeps(scheme: Any, friction_free: bool) -> tuple[tuple[str, float, float], ...]:
    """``(letter, c, start)`` per sub-step, as the generic splitting step runs them: the scheme
    reduced like :func:`~inertia.integrators.splitting.reduce_scheme` does for the run, and the
    start of each ``O`` sub-step as a fraction of ``dt`` (``O`` sub-steps tile ``[0, 1]``)."""
    out = []
    acc = 0.0
    for letter, c in reduce_scheme(scheme, drop_friction=friction_free):
        out.append((letter, c, acc))
        if letter == "O":
            acc += c
    return tuple(out)


class CompiledPathKernel:
    """One path in :func:`inertia.kernels.compiled.run_path` (float64 inside)."""

    name = "compiled_path"
    records_inside = True

    def __init__(self, run: Run) -> None:
        spec = cc.family_of(run.potential)
        assert spec is not None
        self.family, self.scalars, self.arr = spec
        self.run = run
        self.dtype = run.theta.dtype
        self.limit = float(np.finfo(self.dtype).max)
        self.th = np.array(run.theta[0], dtype=np.float64)
        self.vel = np.array(run.v[0], dtype=np.float64)
        d = self.th.size
        self.grad = np.zeros(d)
        self.tmp = np.zeros(d)
        self.mass = np.ascontiguousarray(np.broadcast_to(np.asarray(run.mass_json, dtype=np.float64), (d,)))
        self.inv_mass = 1.0 / self.mass
        friction = run.friction
        self.friction_free = friction.is_zero()
        subs = _substeps(run.method.kernel_scheme, self.friction_free)
        codes = {"A": cc.SUB_A, "B": cc.SUB_B, "O": cc.SUB_O, "E": cc.SUB_EULER}
        self.codes = np.array([codes[s[0]] for s in subs])
        self.coefs = np.array([c * run.dt for _, c, _ in subs])
        self.starts = np.array([start for _, _, start in subs])
        self.fracs = np.array([c for _, c, _ in subs])
        self.o_subs = [(start, c) for letter, c, start in subs if letter == "O"]
        self.euler = subs[0][0] == "E"
        self.gamma = 0.0
        self.mode = cc.FRICTION_TABLE
        self.max_chunk = COMPILED_CHUNK
        self.n_grad = 0
        self._no_table = np.zeros((1, 1))

    def open(self, seed: int, initial_step: int, n_steps: int, n_rows: int) -> None:
        """Allocate the float64 record rows; pick the friction mode from the start time."""
        friction = self.run.friction
        t_start = self.run.t0 + initial_step * self.run.dt
        if self.friction_free:
            self.mode = cc.FRICTION_NONE
        elif type(friction) is ConstantFriction:
            self.mode, self.gamma = cc.FRICTION_CONSTANT, float(friction.gamma)
        elif type(friction) is NesterovFriction and t_start >= 0.0:
            self.mode, self.gamma = cc.FRICTION_NESTEROV, float(friction.r)
        self.max_chunk = TABLE_CHUNK if self.mode == cc.FRICTION_TABLE else COMPILED_CHUNK
        self.rec_step = np.zeros(n_rows, dtype=np.int64)
        self.rec = np.zeros((3, n_rows))
        self.fresh, self.value, self.diss = False, 0.0, 0.0

    def close(self) -> None:
        """Nothing to release."""

    def _table(self, n0: int, k: int) -> np.ndarray:
        """The generic loop's friction values for steps ``n0 .. n0 + k - 1``, in Python."""
        if self.mode != cc.FRICTION_TABLE:
            return self._no_table
        run = self.run
        times = [run.t0 + n * run.dt for n in range(n0, n0 + k)]
        if self.euler:
            return np.array([[run.friction(t)] for t in times], dtype=np.float64)
        return np.array(
            [
                [run.friction.integral(t + s * run.dt, t + (s + c) * run.dt) for s, c in self.o_subs]
                for t in times
            ],
            dtype=np.float64,
        ).reshape(k, len(self.o_subs))

    def record(self, row: int) -> bool:
        """The energies of the current state into ``row`` (not counted as a gradient evaluation)."""
        pot = (
            self.value
            if self.fresh
            else cc.value_and_grad(self.family, self.th, self.grad, self.scalars, self.arr, self.tmp)
        )
        kin = cc.kinetic(self.vel, self.mass, self.tmp)
        self.rec[0, row], self.rec[1, row], self.rec[2, row] = kin, pot, self.diss
        return abs(kin + pot) <= self.limit

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None:
        """``k`` steps in one compiled call, recording the saved steps and a bad one."""
        run = self.run
        taken, bad, ng, _, self.fresh, self.value, self.diss = cc.run_path(
            self.family,
            self.scalars,
            self.arr,
            self.th,
            self.vel,
            self.grad,
            self.tmp,
            self.codes,
            self.coefs,
            self.starts,
            self.fracs,
            self.mode,
            self.gamma,
            self._table(n0, k),
            self.mass,
            self.inv_mass,
            run.dt,
            run.t0,
            n0,
            k,
            saves.first,
            saves.every,
            saves.last,
            self.limit,
            self.rec_step,
            self.rec[0],
            self.rec[1],
            self.rec[2],
            saves.row,
            self.fresh,
            self.value,
            self.diss,
        )
        self.n_grad += ng
        return int(taken) if bad else None

    def energies(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(over="ignore"):  # a float32 run past float32's range reads as inf, as it would
            kin, pot, diss = (self.rec[i, :n_rows, None].astype(self.dtype) for i in range(3))
        return kin, pot, diss

    @property
    def theta(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return self.th.astype(self.dtype)[None, :]

    @property
    def v(self) -> np.ndarray:
        with np.errstate(over="ignore"):
            return self.vel.astype(self.dtype)[None, :]


#: theta, v, value (None when stale), grad (None when stale), dissipated
_LeanState = tuple[Any, Any, Any, Any, Any]


class LeanPathKernel:
    """The generic loop's sub-steps on ``(1, d)`` NumPy arrays, checked once per chunk."""

    name = "numpy_path"
    records_inside = False
    max_chunk = CHECK_EVERY

    def __init__(self, run: Run) -> None:
        self.run = run
        self.max_chunk = CHECK_EVERY
        dt = run.dt
        self.prog = tuple(
            (letter, c * dt, start, c)
            for letter, c, start in _substeps(run.method.kernel_scheme, run.friction.is_zero())
        )
        self.unit_mass = isinstance(run.inv_mass, float) and run.inv_mass == 1.0  # 1.0 * grad == grad
        # conservative splitting (kicks and drifts only, e.g. frictionless leapfrog): the same
        # sub-steps with less bookkeeping per step; L is current exactly while grad is
        self.conservative = all(letter in ("A", "B") for letter, _, _, _ in self.prog)
        self.drifts_and_kicks = tuple((letter == "A", cdt) for letter, cdt, _, _ in self.prog)
        self.st: _LeanState = (run.theta, run.v, None, None, np.zeros((1,), dtype=run.theta.dtype))
        self.n_grad = 0
        self.rows: list[tuple[Any, Any, Any]] = []

    @property
    def theta(self) -> np.ndarray:
        return self.st[0]

    @property
    def v(self) -> np.ndarray:
        return self.st[1]

    def open(self, seed: int, initial_step: int, n_steps: int, n_rows: int) -> None:
        self.rows = []

    def close(self) -> None:
        """Nothing to release."""

    def _steps(self, st: _LeanState, n0: int, n1: int, check_each: bool) -> tuple[_LeanState, int | None]:
        """Steps ``n0 .. n1 - 1`` from ``st`` (left as it was); with ``check_each``, stop at the
        first non-finite state: ``(state, steps taken)``."""
        if self.conservative:
            return self._steps_conservative(st, n0, n1, check_each)
        run = self.run
        value_and_grad, friction, mass, inv_mass = (
            run.potential.value_and_grad,
            run.friction,
            run.mass,
            run.inv_mass,
        )
        dt, t0, unit_mass = run.dt, run.t0, self.unit_mass
        theta, v, value, grad, diss = st
        for n in range(n0, n1):
            t = t0 + n * dt
            step_diss: Any = None
            for letter, cdt, start, c in self.prog:
                if letter == "A":
                    theta = theta + cdt * v
                    value = grad = None
                elif letter == "B":
                    if grad is None:
                        value, grad = value_and_grad(theta)
                        self.n_grad += 1
                    v = v - cdt * grad if unit_mass else v - cdt * (inv_mass * grad)
                elif letter == "O":
                    c1, one_minus_c1sq, _ = o_coefficients(
                        friction, 0.0, t + start * dt, t + (start + c) * dt
                    )
                    if one_minus_c1sq != 0.0:
                        work = one_minus_c1sq * kinetic(v, mass)
                        step_diss = work if step_diss is None else step_diss + work
                    v = c1 * v
                else:  # explicit Euler, as inertia.integrators.euler
                    if grad is None:
                        grad = value_and_grad(theta)[1]
                        self.n_grad += 1
                    gamma = friction(t)
                    new_v = v - dt * grad if unit_mass else v - dt * (inv_mass * grad)
                    if gamma != 0.0:
                        new_v = new_v - (dt * gamma) * v
                        step_diss = (2.0 * dt * gamma) * kinetic(v, mass)
                    theta, v = theta + dt * v, new_v
                    value = grad = None
            if step_diss is not None:
                diss = diss + step_diss
            if check_each and not _finite_state(theta, v, value):
                return (theta, v, value, grad, diss), n + 1 - n0
        return (theta, v, value, grad, diss), None

    def _steps_conservative(
        self, st: _LeanState, n0: int, n1: int, check_each: bool
    ) -> tuple[_LeanState, int | None]:
        value_and_grad, inv_mass, unit_mass = (
            self.run.potential.value_and_grad,
            self.run.inv_mass,
            self.unit_mass,
        )
        theta, v, value, grad, diss = st
        v = v.copy()  # updated in place below; the caller's state stays as it was, for a replay
        for n in range(n0, n1):
            for drift, cdt in self.drifts_and_kicks:
                if drift:
                    new = cdt * v  # theta + c dt v, in a new array: theta is the potential's input
                    new += theta
                    theta = new
                    grad = None
                else:
                    if grad is None:
                        value, grad = value_and_grad(theta)
                        self.n_grad += 1
                    v -= cdt * grad if unit_mass else cdt * (inv_mass * grad)
            if check_each and not _finite_state(theta, v, None if grad is None else value):
                return (theta, v, None if grad is None else value, grad, diss), n + 1 - n0
        return (theta, v, None if grad is None else value, grad, diss), None

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None:
        """``k`` steps checked once at the end (``0``: not finite, state unchanged), or with
        ``replay`` each step checked."""
        n_grad = self.n_grad
        new, bad = self._steps(self.st, n0, n0 + k, replay)
        if not replay and not _finite_state(new[0], new[1], new[2]):
            self.n_grad = n_grad  # the chunk is replayed; its gradients are counted then
            return 0
        self.st = new
        return bad

    def record(self, row: int) -> bool:
        theta, v, value, grad, diss = self.st
        if value is None:
            value = self.run.potential.value(theta)
        k = kinetic(v, self.run.mass)
        self.rows.append((k, value, diss))
        self.st = (theta, v, value, grad, diss)
        return math.isfinite(float(np.sum(k) + np.sum(value)))

    def energies(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self.rows[:n_rows]
        return (
            np.stack([r[0] for r in rows]),
            np.stack([np.asarray(r[1]).reshape(1) for r in rows]),
            np.stack([r[2] for r in rows]),
        )


def _finite_state(theta: Any, v: Any, value: Any) -> bool:
    """The generic loop's per-step check: ``sum(theta) + sum(v^2) (+ sum(L))`` is finite."""
    check = np.sum(theta) + np.sum(v * v)
    if value is not None:
        check = check + np.sum(value)
    return math.isfinite(float(check))
