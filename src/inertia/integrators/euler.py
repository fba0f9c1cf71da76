"""Explicit Euler / Euler-Maruyama: the non-symplectic baseline.

One step from ``(theta_n, v_n)`` at ``t_n`` uses only the old state::

    theta_{n+1} = theta_n + dt v_n
    v_{n+1}     = v_n - dt M^{-1} grad L(theta_n) - dt gamma(t_n) v_n + sigma sqrt(dt) M^{-1/2} xi_n

Deterministic order 1; weak order 1 and strong order 1/2 with noise. On a frictionless harmonic
mode ``L = lambda theta^2 / 2`` (unit mass) the energy grows by exactly ``(1 + lambda dt^2)`` per
step. The friction work it books is the left-point ``dt gamma(t_n) v_n^T M v_n``.
"""

from __future__ import annotations

import math

from inertia.energy import kinetic
from inertia.integrators._base import IntegratorState, Scheme, StepContext, StepFn, StepResult

#: The scheme of the Euler methods: one flow ``E``, the whole explicit step above (the kernels of
#: :mod:`inertia.kernels` execute it as written there).
EULER_STEP: Scheme = (("E", 1.0),)


def make_euler_step(friction_free: bool) -> StepFn:
    """Return the Euler(-Maruyama) step function."""

    def step(state: IntegratorState, n: int, ctx: StepContext) -> StepResult:
        theta, v, _, grad = state
        dt = ctx.dt
        n_grad = 0
        if grad is None:
            grad = ctx.value_and_grad(theta)[1]
            n_grad = 1
        gamma = ctx.friction(ctx.time(n))
        new_v = v - dt * (ctx.inv_mass * grad)
        dissipated: object = 0.0
        if gamma != 0.0:
            new_v = new_v - (dt * gamma) * v
            dissipated = (2.0 * dt * gamma) * kinetic(v, ctx.mass)
        if ctx.sigma > 0.0:
            new_v = new_v + (ctx.sigma * math.sqrt(dt)) * (ctx.inv_sqrt_mass * ctx.noise(n, 0))
        return StepResult(IntegratorState(theta + dt * v, new_v, None, None), dissipated, n_grad)

    return step


make_euler_step.scheme = EULER_STEP  # type: ignore[attr-defined]  # what the kernels may execute instead
