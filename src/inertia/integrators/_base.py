"""What every integrator shares: the state it steps, the context of a run, and its metadata."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from inertia._backend import Array
from inertia.dynamics import Friction

#: A scheme: the exact flows of one step with their fractions of ``dt``, in order (see
#: :mod:`inertia.integrators.splitting`); ``(("E", 1.0),)`` is the whole explicit Euler step.
Scheme = tuple[tuple[str, float], ...]


class IntegratorState(NamedTuple):
    """``(theta, v)`` plus the cached ``V(theta)`` and ``grad V(theta)`` (``None`` when stale)."""

    theta: Array
    v: Array
    value: Array | None = None
    grad: Array | None = None


@dataclass(frozen=True)
class StepContext:
    """Everything a step needs besides the state (fixed for a whole run).

    ``mass``, ``inv_mass`` and ``inv_sqrt_mass`` are floats or backend arrays broadcasting
    against ``(n_paths, d)``. ``noise(step, substep)`` returns standard normals ``(n_paths, d)``
    keyed by the step index and the index of the noisy sub-step within the step.
    """

    value_and_grad: Callable[[Array], tuple[Array, Array]]
    mass: Any
    inv_mass: Any
    inv_sqrt_mass: Any
    friction: Friction
    sigma: float
    dt: float
    t0: float
    noise: Callable[[int, int], Array]

    def time(self, step: int) -> float:
        """``t_n = t0 + n dt`` from the integer step counter (never accumulated)."""
        return self.t0 + step * self.dt


class StepResult(NamedTuple):
    """A step's new state, the friction work it removed per path, and its gradient count."""

    state: IntegratorState
    dissipated: Array | float
    n_grad_evals: int


StepFn = Callable[[IntegratorState, int, StepContext], StepResult]


@dataclass(frozen=True)
class Method:
    """A registered integrator.

    Attributes:
        name: registry key (the ``method=`` argument of :func:`inertia.simulate`).
        order: global order of accuracy for the deterministic dynamics.
        weak_order: weak order for the stochastic dynamics (``None`` if noise is unsupported).
        symplectic: conformal symplectic (``J^T Omega J = e^{-gamma dt} Omega``) and so free of
            secular energy drift when frictionless.
        supports_noise: whether ``sigma > 0`` is allowed.
        grad_evals_per_step: gradient evaluations per step once the cache is warm.
        exact_friction: friction enters through ``integral gamma dt`` over sub-steps (so a
            schedule singular at one instant, like ``3/t`` at ``t = 0``, is fine); otherwise the
            method evaluates ``gamma(t)`` pointwise.
        make_step: builds the step function for a run (``friction_free`` lets splitting schemes
            drop identity sub-steps so reductions are bit-exact).
        description: one line for tables and ``--help``.
        scheme: the step as a sequence of exact flows ``(letter, fraction of dt)`` (``A``
            drift, ``B`` kick, ``O`` friction and noise; ``(("E", 1.0),)`` explicit Euler), the
            one declaration every kernel of :mod:`inertia.kernels` executes (see
            :attr:`kernel_scheme`); ``None`` for a method known only by its ``make_step`` (it
            runs in the generic loop only).
    """

    name: str
    order: int
    weak_order: int | None
    symplectic: bool
    supports_noise: bool
    grad_evals_per_step: int
    make_step: Callable[[bool], StepFn]
    description: str
    exact_friction: bool = True
    scheme: Scheme | None = None

    @property
    def kernel_scheme(self) -> Scheme | None:
        """The scheme the fast kernels may execute in place of :attr:`make_step`: :attr:`scheme`
        when ``make_step`` was built from it (``make_splitting_step(scheme)``, or the Euler
        step), else ``None`` (a method whose step function is its own, e.g. a wrapped or
        instrumented one, runs in the generic loop only)."""
        if self.scheme is not None and getattr(self.make_step, "scheme", None) == self.scheme:
            return self.scheme
        return None
