"""The generic kernel: the method's own step function (:attr:`Method.make_step`), one step a call.

Any potential, any registered method, any Array-API backend. Each step returns a new
:class:`~inertia.integrators.IntegratorState` and the friction work it removed; after each step
``sum(theta) + sum(v^2) (+ sum(L) where the step evaluated L)`` is checked (one scalar host
synchronisation), so the first non-finite state is found without a replay. This is the
reference every other kernel of :mod:`inertia.kernels` is tested against.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inertia._backend import array_namespace, to_numpy
from inertia.energy import kinetic
from inertia.integrators import IntegratorState, StepContext
from inertia.kernels._protocol import Run, Saves

__all__ = ["FunctionalKernel"]


class FunctionalKernel:
    """Steps a run with ``run.method.make_step``; records rows as backend arrays."""

    name = "functional"
    max_chunk = 1
    records_inside = False

    def __init__(self, run: Run) -> None:
        self.run = run
        self.xp = array_namespace(run.theta)
        self.state = IntegratorState(run.theta, run.v)
        self.ctx = StepContext(
            value_and_grad=run.potential.value_and_grad,
            mass=run.mass,
            inv_mass=run.inv_mass,
            inv_sqrt_mass=run.inv_sqrt_mass,
            friction=run.friction,
            sigma=run.sigma,
            dt=run.dt,
            t0=run.t0,
            noise=run.noise,
        )
        self.step_fn = run.method.make_step(run.friction.is_zero() and run.sigma == 0.0)
        self.dissipated: Any = self.xp.zeros_like(run.theta[:, 0])
        self.rows: list[tuple[Any, Any, Any]] = []
        self.n_grad = 0

    @property
    def theta(self) -> Any:
        return self.state.theta

    @property
    def v(self) -> Any:
        return self.state.v

    def open(self, seed: int, initial_step: int, n_steps: int, n_rows: int) -> None:
        self.rows = []

    def close(self) -> None:
        """Nothing to release."""

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None:
        """One step (``k = 1``); ``1`` when the new state is not finite."""
        xp = self.xp
        for j in range(k):
            res = self.step_fn(self.state, n0 + j, self.ctx)
            self.state = res.state
            self.n_grad += res.n_grad_evals
            self.dissipated = self.dissipated + res.dissipated
            # theta, v*v (the kinetic energy) and the potential wherever the integrator already
            # evaluated it: one reduction and one host sync per step
            check = xp.sum(self.state.theta) + xp.sum(self.state.v * self.state.v)
            if self.state.value is not None:
                check = check + xp.sum(self.state.value)
            if not math.isfinite(float(check)):
                return j + 1
        return None

    def record(self, row: int) -> bool:
        st = self.state
        value = st.value if st.value is not None else self.run.potential.value(st.theta)
        if st.value is None:
            self.state = st._replace(value=value)
        k = kinetic(st.v, self.run.mass)
        self.rows.append((k, value, self.dissipated))
        return math.isfinite(float(self.xp.sum(k) + self.xp.sum(value)))

    def energies(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xp, rows = self.xp, self.rows[:n_rows]
        return tuple(to_numpy(xp.stack([r[i] for r in rows])) for i in range(3))  # type: ignore[return-value]
