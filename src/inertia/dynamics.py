"""The parameters of the dynamics: friction ``gamma`` (constant or a schedule), noise ``sigma``, mass.

The SDE of THEORY.md section 2 (Ito, ``W`` in R^d)::

    dtheta = v dt
    M dv   = ( -grad L(theta) - gamma(t) M v ) dt + sigma M^{1/2} dW_t

Integrators never evaluate ``gamma(t)`` pointwise: the exact friction sub-step
``v <- exp(-integral_{t_a}^{t_b} gamma(s) ds) v`` only needs the integral of ``gamma`` over the
sub-step, which :class:`Friction` provides (in closed form where one exists, otherwise by
3-point Gauss-Legendre quadrature, exact for polynomials of degree 5 and so accurate well past
the order of every integrator here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from inertia._validate import finite_float

__all__ = ["ConstantFriction", "Friction", "NesterovFriction", "ScheduledFriction", "as_friction"]

_GL_NODES = (-math.sqrt(3 / 5), 0.0, math.sqrt(3 / 5))
_GL_WEIGHTS = (5 / 9, 8 / 9, 5 / 9)


class Friction:
    """A friction coefficient ``gamma(t) >= 0``.

    Subclasses implement :meth:`__call__` (the value ``gamma(t)``) and may override
    :meth:`integral` (``integral_{t1}^{t2} gamma(s) ds``) with a closed form.
    """

    #: True when gamma(t) is the same for all t.
    constant: bool = False

    def __call__(self, t: float) -> float:
        raise NotImplementedError

    def integral(self, t1: float, t2: float) -> float:
        """``integral_{t1}^{t2} gamma(s) ds`` by 3-point Gauss-Legendre (exact to degree 5)."""
        mid, half = 0.5 * (t1 + t2), 0.5 * (t2 - t1)
        return half * sum(w * self(mid + half * x) for x, w in zip(_GL_NODES, _GL_WEIGHTS, strict=True))

    def is_zero(self) -> bool:
        """True when there is no friction at all (gamma identically 0)."""
        return False


@dataclass(frozen=True)
class ConstantFriction(Friction):
    """``gamma(t) = gamma``; ``integral_{t1}^{t2} gamma ds = gamma (t2 - t1)``."""

    gamma: float
    constant = True

    def __post_init__(self) -> None:
        finite_float("gamma", self.gamma, minimum=0.0)

    def __call__(self, t: float) -> float:
        return self.gamma

    def integral(self, t1: float, t2: float) -> float:
        return self.gamma * (t2 - t1)

    def is_zero(self) -> bool:
        return self.gamma == 0.0


@dataclass(frozen=True)
class NesterovFriction(Friction):
    """The Nesterov ODE friction ``gamma(t) = r / t`` (r = 3 is Nesterov's accelerated method).

    ``integral_{t1}^{t2} r/s ds = r ln(t2/t1)``, so the exact friction factor over a sub-step is
    ``(t1/t2)^r``. It is singular at ``t = 0``: start a simulation at ``t0 > 0``, or, with a
    splitting method (exact friction), at ``t0 = 0`` with ``v0 = 0`` (the first friction factor is
    then 0, which is exact). Explicit Euler evaluates ``gamma(t0)`` and refuses ``t0 = 0``.
    """

    r: float = 3.0

    def __post_init__(self) -> None:
        finite_float("r", self.r, minimum=0.0)

    def __call__(self, t: float) -> float:
        return self.r / t if t > 0 else math.inf

    def integral(self, t1: float, t2: float) -> float:
        if t1 < 0 or t2 < 0:
            raise ValueError(f"NesterovFriction needs t >= 0, got interval [{t1}, {t2}]")
        if t1 == t2:
            return 0.0
        if t1 == 0.0:
            return math.inf
        if t2 == 0.0:
            return -math.inf
        return self.r * math.log(t2 / t1)


@dataclass(frozen=True)
class ScheduledFriction(Friction):
    """A user schedule ``gamma(t)`` given as a Python callable returning a float >= 0."""

    schedule: Callable[[float], float]

    def __call__(self, t: float) -> float:
        g = float(self.schedule(t))
        if not g >= 0.0:
            raise ValueError(f"`gamma(t)` must be >= 0, got gamma({t!r}) = {g!r}")
        return g


def as_friction(gamma: float | Friction | Callable[[float], float]) -> Friction:
    """Normalise ``gamma`` (a float >= 0, a :class:`Friction`, or a callable ``t -> gamma``)."""
    if isinstance(gamma, Friction):
        return gamma
    if callable(gamma):
        return ScheduledFriction(gamma)
    return ConstantFriction(finite_float("gamma", gamma, minimum=0.0))
