"""Splitting integrators generated from coefficients (blackjax style), with exact friction.

Three elementary flows of the SDE of THEORY.md section 2, each solved exactly over a fraction
``c`` of the step ``dt``:

* ``A`` (drift):  ``theta <- theta + c dt v``
* ``B`` (kick):   ``v <- v - c dt M^{-1} grad L(theta)``
* ``O`` (friction and noise, exact Ornstein-Uhlenbeck over ``[t_a, t_b]``, ``t_b - t_a = c dt``):
  ``v <- c1 v + c2 M^{-1/2} xi``, ``xi ~ N(0, I)``, with ``Gamma = integral_{t_a}^{t_b} gamma``,
  ``c1 = exp(-Gamma)`` and ``c2 = sigma sqrt(c dt (1 - c1^2) / (2 Gamma))`` (``sigma sqrt(c dt)``
  when ``Gamma = 0``). For constant ``gamma`` this is ``c2 = sigma sqrt((1 - c1^2)/(2 gamma))``;
  for a schedule it uses the sub-step's mean friction. The kinetic energy the friction removes,
  ``(1 - c1^2) K`` (exactly ``integral gamma v^T M v dt`` along the ``O`` flow), is returned as the
  step's ``dissipated`` work.

Time is carried by the ``O`` flows: the ``O`` sub-steps of one step tile ``[t_n, t_n + dt]`` in
order, which keeps symmetric schemes symmetric for friction schedules.

A scheme is a sequence of ``(letter, c)``; the gradient is cached in the state so that ``B``
evaluates it only when ``theta`` has moved. When there is neither friction nor noise the ``O``
sub-steps are the identity: they are dropped and neighbouring sub-steps of the same letter merged,
so ``baoab`` reduces to ``leapfrog`` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from inertia.dynamics import Friction
from inertia.energy import kinetic
from inertia.integrators._base import IntegratorState, Scheme, StepContext, StepFn, StepResult

SYMPLECTIC_EULER: Scheme = (("O", 1.0), ("B", 1.0), ("A", 1.0))
LEAPFROG: Scheme = (("O", 0.5), ("B", 0.5), ("A", 1.0), ("B", 0.5), ("O", 0.5))
BAOAB: Scheme = (("B", 0.5), ("A", 0.5), ("O", 1.0), ("A", 0.5), ("B", 0.5))

_CBRT2 = 2.0 ** (1.0 / 3.0)
#: Yoshida / Forest-Ruth triple-jump weights: w1 + w0 + w1 = 1, 2 w1^3 + w0^3 = 0.
YOSHIDA_W1 = 1.0 / (2.0 - _CBRT2)
YOSHIDA_W0 = -_CBRT2 / (2.0 - _CBRT2)


def compose(base: Scheme, weights: Sequence[float]) -> Scheme:
    """The composition ``base(w_1 dt) o base(w_2 dt) o ...`` as one scheme."""
    return tuple((letter, c * w) for w in weights for letter, c in base)


YOSHIDA4: Scheme = compose(LEAPFROG, (YOSHIDA_W1, YOSHIDA_W0, YOSHIDA_W1))


def reduce_scheme(scheme: Scheme, *, drop_friction: bool) -> Scheme:
    """Drop identity ``O`` sub-steps (if ``drop_friction``) and merge neighbours of one letter."""
    out: list[tuple[str, float]] = []
    for letter, c in scheme:
        if drop_friction and letter == "O":
            continue
        if out and out[-1][0] == letter:
            out[-1] = (letter, out[-1][1] + c)
        else:
            out.append((letter, c))
    return tuple(out)


def o_coefficients(friction: Friction, sigma: float, ta: float, tb: float) -> tuple[float, float, float]:
    """``(c1, 1 - c1^2, c2)`` of the exact ``O`` sub-step ``v <- c1 v + c2 M^{-1/2} xi`` over ``[ta, tb]``.

    ``Gamma = integral_{ta}^{tb} gamma``, ``c1 = exp(-Gamma)``, ``1 - c1^2 = -expm1(-2 Gamma)``,
    ``c2 = sigma sqrt((tb - ta) (1 - c1^2) / (2 Gamma))`` (``sigma sqrt(tb - ta)`` when
    ``Gamma = 0``; 0 when ``sigma = 0`` or ``Gamma = inf``). The friction work of the sub-step is
    ``(1 - c1^2) K``. Shared by the functional steps here and the in-place kernels
    (:mod:`inertia.kernels`), so both use one formula.

    Example:
        >>> from inertia.dynamics import ConstantFriction
        >>> c1, w, c2 = o_coefficients(ConstantFriction(0.5), 0.0, 0.0, 2.0)
        >>> round(c1, 6), round(w, 6), c2
        (0.367879, 0.864665, 0.0)
    """
    big_gamma = friction.integral(ta, tb)
    one_minus_c1sq = -math.expm1(-2.0 * big_gamma)
    c1 = math.exp(-big_gamma)
    c2 = 0.0
    if sigma > 0.0:
        tau = tb - ta
        var = tau * one_minus_c1sq / (2.0 * big_gamma) if big_gamma > 0 else tau
        c2 = sigma * math.sqrt(var)
    return c1, one_minus_c1sq, c2


def make_splitting_step(scheme: Scheme) -> Callable[[bool], StepFn]:
    """Return ``make_step(friction_free) -> StepFn`` for ``scheme``."""

    def make_step(friction_free: bool) -> StepFn:
        steps = reduce_scheme(scheme, drop_friction=friction_free)
        # start of each O sub-step as a fraction of dt (O sub-steps tile [0, 1] in order)
        o_start: list[float] = []
        acc = 0.0
        for letter, c in steps:
            o_start.append(acc)
            if letter == "O":
                acc += c

        def step(state: IntegratorState, n: int, ctx: StepContext) -> StepResult:
            theta, v, value, grad = state
            dt = ctx.dt
            t = ctx.time(n)
            dissipated: object = 0.0
            n_grad = 0
            n_noise = 0
            for (letter, c), start in zip(steps, o_start, strict=True):
                if letter == "A":
                    theta = theta + (c * dt) * v
                    value = grad = None
                elif letter == "B":
                    if grad is None:
                        value, grad = ctx.value_and_grad(theta)
                        n_grad += 1
                    v = v - (c * dt) * (ctx.inv_mass * grad)
                else:  # "O"
                    c1, one_minus_c1sq, c2 = o_coefficients(
                        ctx.friction, ctx.sigma, t + start * dt, t + (start + c) * dt
                    )
                    if one_minus_c1sq != 0.0:
                        dissipated = dissipated + one_minus_c1sq * kinetic(v, ctx.mass)
                    v = c1 * v
                    if ctx.sigma > 0.0:
                        v = v + c2 * (ctx.inv_sqrt_mass * ctx.noise(n, n_noise))
                        n_noise += 1
            return StepResult(IntegratorState(theta, v, value, grad), dissipated, n_grad)

        return step

    make_step.scheme = scheme  # type: ignore[attr-defined]  # what the kernels may execute instead
    return make_step
