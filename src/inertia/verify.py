"""The laws of THEORY.md sections 3-5, checked against simulation.

Each check runs :func:`inertia.simulate` on a system where the law has a closed form, compares
with :mod:`inertia.theory`, and returns a :class:`CheckResult` (law, predicted, measured,
tolerance, passed). ``inertia verify`` prints them; the test suite runs the same functions, and
runs them again on deliberately broken variants (noise ``dt`` instead of ``sqrt(dt)``, the Ito
term dropped) to show that they fail.

Tolerances are stated, never tuned to pass:

* convergence orders: the least-squares log-log slope is within 0.15 of the declared order;
* energy error of leapfrog on a harmonic mode: the shadow-energy bound
  ``|I - I0| <= I0 q / (1 - q)``, ``q = lambda_max dt^2 / 4``;
* statistical checks: ``|mean - predicted| <= 3 SE + bias``, where ``SE`` is the standard error of
  the ensemble mean over independent paths and ``bias`` is the scheme's exact discretisation
  bias on the quadratic (:func:`inertia.stability.discrete_expected_inertia` minus the
  continuous-time value), so no budget is guessed.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inertia import potentials, theory
from inertia.dynamics import Friction, NesterovFriction, as_friction
from inertia.integrators import METHODS
from inertia.simulate import simulate
from inertia.stability import discrete_expected_inertia

__all__ = [
    "CheckResult",
    "bias_budget",
    "check_closed_form",
    "check_conservation_drift",
    "check_conservation_order",
    "check_euler_growth",
    "check_exact_ou_step",
    "check_gibbs_potential",
    "check_heating",
    "check_ledger_order",
    "check_moment_curve",
    "check_order",
    "check_relaxation",
    "check_weak_bias_order",
    "run_checks",
]

#: the canonical anisotropic quadratic of the checks and the demo
EIGENVALUES = (0.25, 4.0)
ORDER_TOLERANCE = 0.15
N_SIGMA = 3.0


@dataclass(frozen=True)
class CheckResult:
    """One law checked against simulation: ``passed`` is decided by the check's stated rule."""

    law: str
    predicted: float
    measured: float
    tolerance: float
    passed: bool
    detail: str

    def __post_init__(self) -> None:
        # plain Python types (not NumPy scalars), so results serialise to JSON as they are
        for name in ("predicted", "measured", "tolerance"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "passed", bool(self.passed))


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(np.asarray(x)), np.log(np.asarray(y)), 1)[0])


def _order_result(
    law: str, order: float, dts: Sequence[float], errors: Sequence[float], floor: float = 1e-11
) -> CheckResult:
    keep = [(h, e) for h, e in zip(dts, errors, strict=True) if e > floor]
    if len(keep) < 3:
        return CheckResult(
            law, order, math.nan, ORDER_TOLERANCE, False, f"fewer than 3 errors above {floor:g}: {errors}"
        )
    slope = _slope([h for h, _ in keep], [e for _, e in keep])
    return CheckResult(
        law,
        float(order),
        slope,
        ORDER_TOLERANCE,
        abs(slope - order) <= ORDER_TOLERANCE,
        f"log-log slope of error vs dt over dt={keep[0][0]:g}..{keep[-1][0]:g}",
    )


def bias_budget(method: str, dt: float, scale: float) -> float:
    """A-priori bound on a scheme's bias in ``E[I]`` on the checks' quadratic:
    ``scale (sqrt(lambda_max) dt)^p / 2`` for weak order ``p``. For the order-2 splittings this is
    ``scale lambda_max dt^2 / 2``, twice the kinetic-temperature bias ``lambda dt^2 / 4`` of
    BAOAB-type schemes on a harmonic mode. It depends only on the declared order, so a broken
    scheme cannot widen its own tolerance."""
    order = METHODS[method].weak_order or 1
    return abs(scale) * (math.sqrt(max(EIGENVALUES)) * dt) ** order / 2.0


def _stat_result(
    law: str,
    predicted: float,
    samples: np.ndarray,
    budget: float,
    exact_bias: float | None = None,
    extra: str = "",
) -> CheckResult:
    """``|mean - predicted| <= 3 SE + budget``; ``exact_bias`` (the scheme's exact bias, when
    known) is reported and must itself lie within the budget."""
    mean = float(np.mean(samples))
    se = float(np.std(samples, ddof=1) / math.sqrt(samples.size))
    tol = N_SIGMA * se + budget
    passed = abs(mean - predicted) <= tol
    note = ""
    if exact_bias is not None:
        passed = passed and abs(exact_bias) <= budget
        note = f", exact scheme bias {exact_bias:.2g}"
    return CheckResult(
        law,
        predicted,
        mean,
        tol,
        passed,
        f"ensemble of {samples.size} paths; tolerance = 3 SE ({se:.2g}) + bias "
        f"budget ({budget:.2g}{note}){extra}",
    )


# --------------------------------------------------------------------------- deterministic


def _reference_final(
    pot: potentials.Potential, theta0: np.ndarray, v0: np.ndarray, friction: Friction, t0: float, t1: float
) -> np.ndarray:
    from scipy.integrate import solve_ivp

    d = theta0.size

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        th, v = y[:d], y[d:]
        return np.concatenate([v, -pot.grad(th) - friction(t) * v])

    sol = solve_ivp(rhs, (t0, t1), np.concatenate([theta0, v0]), method="DOP853", rtol=1e-13, atol=1e-13)
    return sol.y[:, -1]


def check_order(
    method: str, *, gamma: float | Friction = 0.3, t0: float = 0.0, horizon: float = 2.0, n_levels: int = 6
) -> CheckResult:
    """Global error at ``t0 + horizon`` for ``dt = 2^-3 ... 2^-(2 + n_levels)`` on a nonlinear
    coupled chain (:class:`inertia.potentials.QuarticChain`) against ``solve_ivp(DOP853,
    rtol=1e-13)``: the log-log slope is the method's declared order within 0.15."""
    pot = potentials.QuarticChain([1.0, 2.0, 3.0], beta=1.0)
    theta0, v0 = np.array([0.8, -0.3, 0.5]), np.array([0.1, 0.4, -0.2])
    friction = as_friction(gamma)
    ref = _reference_final(pot, theta0, v0, friction, t0, t0 + horizon)
    dts, errs = [], []
    for level in range(3, 3 + n_levels):
        dt = 2.0**-level
        tr = simulate(
            pot,
            theta0,
            v0,
            gamma=friction,
            dt=dt,
            n_steps=round(horizon / dt),
            method=method,
            t0=t0,
            save_every=10**9,
        )
        final = np.concatenate([np.asarray(tr.theta)[0], np.asarray(tr.v)[0]])
        dts.append(dt)
        errs.append(float(np.max(np.abs(final - ref))))
    label = "constant gamma" if friction.constant else repr(friction)
    return _order_result(f"order of {method} (quartic chain, {label})", METHODS[method].order, dts, errs)


def _harmonic_energy_error(method: str, dt: float, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    pot = potentials.Quadratic(list(EIGENVALUES))
    n = round(horizon / dt)
    tr = simulate(pot, [1.0, 1.0], [0.5, 0.0], dt=dt, n_steps=n, method=method, save_every=max(1, n // 2000))
    return tr.t, np.abs(tr.inertia[:, 0] - tr.inertia[0, 0])


def check_conservation_drift(
    method: str = "leapfrog", *, dt: float = 0.05, horizon: float = 1000.0
) -> CheckResult:
    """No secular drift: ``max|I - I0|`` over ``[0, T]`` divided by that over ``[0, T/10]`` is 1
    for a symplectic method (bounded error), within 0.2; a drifting method grows ~10x."""
    t, err = _harmonic_energy_error(method, dt, horizon)
    ratio = float(err.max() / err[t <= horizon / 10].max())
    return CheckResult(
        f"conservation, no drift ({method}): max err [0,T] / [0,T/10]",
        1.0,
        ratio,
        0.2,
        ratio <= 1.2,
        f"frictionless quadratic, dt={dt:g}, T={horizon:g}",
    )


def check_conservation_order(
    method: str = "leapfrog", *, dt: float = 0.05, horizon: float = 200.0
) -> CheckResult:
    """The bounded energy error scales as ``dt^order``: ``log2(err(dt)/err(dt/2))`` is the order."""
    e1 = _harmonic_energy_error(method, dt, horizon)[1].max()
    e2 = _harmonic_energy_error(method, dt / 2, horizon)[1].max()
    order = METHODS[method].order
    measured = float(math.log2(e1 / e2))
    return CheckResult(
        f"conservation, energy error order ({method})",
        float(order),
        measured,
        ORDER_TOLERANCE,
        abs(measured - order) <= ORDER_TOLERANCE,
        f"max|I - I0| = {e1:.3g} at dt={dt:g}, {e2:.3g} at dt/2",
    )


def check_euler_growth(*, eigenvalue: float = 4.0, dt: float = 0.01, n_steps: int = 200) -> CheckResult:
    """Explicit Euler on a frictionless harmonic mode: I grows by ``1 + lambda dt^2`` per step."""
    tr = simulate(potentials.Quadratic([eigenvalue]), [1.0], [0.3], dt=dt, n_steps=n_steps, method="euler")
    factors = tr.inertia[1:, 0] / tr.inertia[:-1, 0]
    predicted = 1.0 + eigenvalue * dt * dt
    worst = float(factors[np.argmax(np.abs(factors - predicted))])
    return CheckResult(
        "explicit euler energy growth per step",
        predicted,
        worst,
        1e-12,
        abs(worst - predicted) <= 1e-12,
        f"lambda={eigenvalue:g}, dt={dt:g}",
    )


def check_ledger_order(
    method: str = "leapfrog", *, gamma: float | Friction = 0.5, t0: float = 0.0, horizon: float = 10.0
) -> CheckResult:
    """Damped ledger ``I(t) - I(0) + integral gamma v^T M v dt -> 0`` at the scheme's order
    (nonlinear chain; ``dissipated`` is the exact friction work of the sub-steps)."""
    pot = potentials.QuarticChain([1.0, 2.0, 3.0], beta=1.0)
    theta0, v0 = np.array([0.8, -0.3, 0.5]), np.array([0.1, 0.4, -0.2])
    dts = [2.0**-k for k in range(3, 8)]
    res = []
    for dt in dts:
        tr = simulate(pot, theta0, v0, gamma=gamma, dt=dt, n_steps=round(horizon / dt), method=method, t0=t0)
        resid = tr.inertia[:, 0] + tr.dissipated[:, 0] - tr.inertia[0, 0]
        res.append(float(np.max(np.abs(resid))))
    label = "constant gamma" if as_friction(gamma).constant else repr(gamma)
    return _order_result(f"damped ledger residual order ({method}, {label})", METHODS[method].order, dts, res)


def check_closed_form(
    regime: str,
    *,
    method: str = "leapfrog",
    horizon: float = 20.0,
    dts: Sequence[float] = (0.02, 0.01, 0.005),
) -> CheckResult:
    """Simulation converges to :func:`theory.damped_quadratic_inertia` at the scheme's order in
    the regime ``"underdamped"`` (gamma = 0.2), ``"critical"`` (gamma = 2 sqrt(lambda_min),
    exactly ``gamma^2 = 4 lambda_min``) or ``"overdamped"`` (gamma = 6 > 2 sqrt(lambda_max)):
    the error ``max_t |I_sim(t) - I_exact(t)|`` has log-log slope ``order`` within 0.15."""
    lam = np.asarray(EIGENVALUES)
    gamma = {"underdamped": 0.2, "critical": theory.critical_damping(lam.min()), "overdamped": 6.0}[regime]
    theta0, v0 = np.array([1.0, 1.0]), np.array([0.5, -0.5])
    errs = []
    for dt in dts:
        tr = simulate(
            potentials.Quadratic(lam),
            theta0,
            v0,
            gamma=gamma,
            dt=dt,
            n_steps=round(horizon / dt),
            method=method,
        )
        exact = theory.damped_quadratic_inertia(lam, gamma, theta0, v0, tr.t)
        errs.append(float(np.max(np.abs(tr.inertia[:, 0] - exact))))
    res = _order_result(
        f"closed form, {regime} (gamma={gamma:g}): error order ({method})", METHODS[method].order, dts, errs
    )
    return CheckResult(
        res.law,
        res.predicted,
        res.measured,
        res.tolerance,
        res.passed,
        f"max_t |I_sim - I_exact| = {errs[-1]:.2g} at dt={dts[-1]:g} (I(0) = {float(exact[0]):.3g})",
    )


# --------------------------------------------------------------------------- stochastic


def _ensemble(
    method: str,
    gamma: float,
    sigma: float,
    theta0: Any,
    dt: float,
    n_steps: int,
    n_paths: int,
    seed: int,
    save_every: int | None = None,
) -> Any:
    return simulate(
        potentials.Quadratic(list(EIGENVALUES)),
        theta0,
        gamma=gamma,
        sigma=sigma,
        dt=dt,
        n_steps=n_steps,
        method=method,
        n_paths=n_paths,
        seed=seed,
        save_every=save_every or n_steps,
    )


def check_heating(
    *,
    method: str = "baoab",
    sigma: float = 0.5,
    dt: float = 0.05,
    horizon: float = 10.0,
    n_paths: int = 4000,
    seed: int = 1,
    ito_term: bool = True,
) -> CheckResult:
    """Frictionless heating ``E[I](t) = I(0) + sigma^2 d t / 2`` (``ito_term=False`` drops the
    ``sigma^2 d/2`` Ito drift from the prediction: a broken law that must fail)."""
    theta0 = [1.0, 1.0]
    n = round(horizon / dt)
    tr = _ensemble(method, 0.0, sigma, theta0, dt, n, n_paths, seed)
    i0 = float(tr.inertia[0, 0])
    d = len(EIGENVALUES)
    predicted = float(theory.heating_inertia(i0, d, sigma if ito_term else 0.0, horizon)[0])
    exact = float(theory.heating_inertia(i0, d, sigma, horizon)[0])
    bias = discrete_expected_inertia(method, EIGENVALUES, 0.0, sigma, dt, theta0, 0.0, [n])[0]
    return _stat_result(
        f"stochastic heating E[I](t={horizon:g}) ({method})",
        predicted,
        tr.inertia[-1],
        bias_budget(method, dt, exact),
        float(bias - exact),
    )


def check_relaxation(
    start: str,
    *,
    method: str = "baoab",
    gamma: float = 1.0,
    sigma: float = 0.5,
    dt: float = 0.05,
    horizon: float = 40.0,
    n_paths: int = 4000,
    seed: int | None = None,
) -> CheckResult:
    """Relaxation to the Gibbs level ``E[I] = d sigma^2 / (2 gamma)`` from ``start = "above"``
    (theta0 = (3, 1), decays) or ``"below"`` (theta0 = 0, heats up)."""
    if start not in ("above", "below"):
        raise ValueError(f"`start` must be 'above' or 'below', got {start!r}")
    theta0 = [3.0, 1.0] if start == "above" else [0.0, 0.0]
    seed = (2 if start == "above" else 6) if seed is None else seed
    n = round(horizon / dt)
    tr = _ensemble(method, gamma, sigma, theta0, dt, n, n_paths, seed)
    predicted = theory.stationary_inertia(len(EIGENVALUES), gamma, sigma)
    exact = float(theory.expected_inertia(EIGENVALUES, gamma, sigma, theta0, [0.0, 0.0], [horizon])[0])
    bias = discrete_expected_inertia(method, EIGENVALUES, gamma, sigma, dt, theta0, 0.0, [n])[0]
    return _stat_result(
        f"relaxation from {start} to d sigma^2/(2 gamma) ({method})",
        predicted,
        tr.inertia[-1],
        bias_budget(method, dt, predicted),
        float(bias - predicted),
        f"; I(0) = {tr.inertia[0, 0]:.3g}, exact E[I](T) - level = {exact - predicted:.1e}",
    )


def check_moment_curve(
    *,
    method: str = "baoab",
    gamma: float = 0.5,
    sigma: float = 0.6,
    dt: float = 0.05,
    times: Sequence[float] = (1.0, 3.0, 10.0),
    n_paths: int = 4000,
    seed: int = 3,
) -> list[CheckResult]:
    """Ensemble mean of I against the exact moment equations at several times."""
    theta0 = [2.0, 0.5]
    steps = [round(t / dt) for t in times]
    save = math.gcd(*steps)
    tr = _ensemble(method, gamma, sigma, theta0, dt, steps[-1], n_paths, seed, save)
    exact = theory.expected_inertia(EIGENVALUES, gamma, sigma, theta0, [0.0, 0.0], list(times))
    disc = discrete_expected_inertia(method, EIGENVALUES, gamma, sigma, dt, theta0, 0.0, steps)
    out = []
    for t, n, ex, di in zip(times, steps, exact, disc, strict=True):
        row = int(np.flatnonzero(tr.step == n)[0])
        out.append(
            _stat_result(
                f"exact moment curve E[I](t={t:g}) ({method})",
                float(ex),
                tr.inertia[row],
                bias_budget(method, dt, ex),
                float(di - ex),
            )
        )
    return out


class _Flat(potentials.Potential):
    """``L = 0``: a free particle, on which the Ornstein-Uhlenbeck sub-step is the exact flow."""

    minimum = 0.0

    def value_and_grad(self, theta: Any) -> tuple[Any, Any]:
        return 0.0 * theta[..., 0], 0.0 * theta


def check_exact_ou_step(
    *,
    method: str = "baoab",
    gamma: float = 1.0,
    sigma: float = 1.0,
    dt: float = 2.0,
    n_steps: int = 2,
    n_paths: int = 20000,
    seed: int = 4,
) -> CheckResult:
    """The O sub-step is the exact Ornstein-Uhlenbeck flow even at large ``dt``: on a free
    particle with ``v0 = 1``,
    ``E[K](t) = d/2 (e^{-2 gamma t} + sigma^2/(2 gamma) (1 - e^{-2 gamma t}))``
    with no discretisation bias (here ``gamma dt = 2``)."""
    d, t = 2, n_steps * dt
    tr = simulate(
        _Flat(),
        np.zeros(d),
        np.ones(d),
        gamma=gamma,
        sigma=sigma,
        dt=dt,
        n_steps=n_steps,
        method=method,
        n_paths=n_paths,
        seed=seed,
    )
    decay = math.exp(-2 * gamma * t)
    predicted = 0.5 * d * (decay + sigma * sigma / (2 * gamma) * (1 - decay))
    return _stat_result(
        f"exact OU step at gamma dt = {gamma * dt:g}: E[K](t={t:g}) ({method})",
        predicted,
        tr.kinetic[-1],
        0.0,
        extra="; exact at any dt: no budget",
    )


def check_gibbs_potential(
    *,
    dt: float = 0.5,
    gamma: float = 1.0,
    sigma: float = 0.5,
    horizon: float = 60.0,
    n_paths: int = 4000,
    seed: int = 5,
) -> CheckResult:
    """BAOAB samples V exactly from the Gibbs measure of a quadratic at any stable ``dt``:
    ``E[V] = d T / 2``, ``T = sigma^2/(2 gamma)``, with no bias even at ``dt = 0.5``."""
    n = round(horizon / dt)
    tr = _ensemble("baoab", gamma, sigma, [1.0, 1.0], dt, n, n_paths, seed)
    predicted = 0.5 * len(EIGENVALUES) * theory.temperature(gamma, sigma)
    return _stat_result(
        f"BAOAB Gibbs potential E[V] = d T/2 at dt={dt:g}",
        predicted,
        tr.potential[-1],
        0.0,
        extra="; exact for quadratics: no budget",
    )


def check_weak_bias_order(method: str, *, gamma: float = 1.0, sigma: float = 0.5) -> CheckResult:
    """Weak order from the exact discrete moments: the stationary bias
    ``|E_dt[I] - d sigma^2/(2 gamma)|`` scales as ``dt^weak_order`` (no sampling involved)."""
    level = theory.stationary_inertia(len(EIGENVALUES), gamma, sigma)
    dts = [0.05 * 2.0**-k for k in range(5)]
    bias = []
    for dt in dts:
        n = round(80.0 / dt)
        e = discrete_expected_inertia(method, EIGENVALUES, gamma, sigma, dt, 0.0, 0.0, [n])[0]
        bias.append(abs(e - level))
    order = METHODS[method].weak_order
    return _order_result(
        f"weak order of {method} (stationary E[I] bias)", float(order or 0), dts, bias, floor=1e-14
    )


# --------------------------------------------------------------------------- all together


def run_checks(quick: bool = False, progress: Callable[[str], None] | None = None) -> list[CheckResult]:
    """Run every check; ``quick`` uses shorter horizons and smaller ensembles (seconds).

    Example:
        >>> results = run_checks(quick=True)  # doctest: +SKIP
        >>> all(r.passed for r in results)  # doctest: +SKIP
        True
    """
    n_paths = 2000 if quick else 8000
    drift_horizon = 300.0 if quick else 1000.0
    jobs: list[tuple[str, Callable[[], CheckResult | list[CheckResult]]]] = []
    for name in METHODS:
        jobs.append((f"order {name}", functools.partial(check_order, name)))
    jobs += [
        ("order under gamma = 3/t", lambda: check_order("leapfrog", gamma=NesterovFriction(3.0), t0=1.0)),
        ("drift leapfrog", lambda: check_conservation_drift("leapfrog", horizon=drift_horizon)),
        ("drift yoshida4", lambda: check_conservation_drift("yoshida4", horizon=drift_horizon)),
        ("energy order leapfrog", lambda: check_conservation_order("leapfrog")),
        ("energy order yoshida4", lambda: check_conservation_order("yoshida4", dt=0.2)),
        ("euler growth", check_euler_growth),
        ("ledger leapfrog", lambda: check_ledger_order("leapfrog")),
        ("ledger symplectic_euler", lambda: check_ledger_order("symplectic_euler")),
        ("ledger gamma = 3/t", lambda: check_ledger_order("leapfrog", gamma=NesterovFriction(3.0), t0=1.0)),
        ("closed form underdamped", lambda: check_closed_form("underdamped")),
        ("closed form critical", lambda: check_closed_form("critical")),
        ("closed form overdamped", lambda: check_closed_form("overdamped")),
        ("heating", lambda: check_heating(n_paths=n_paths)),
        ("relaxation above", lambda: check_relaxation("above", n_paths=n_paths)),
        ("relaxation below", lambda: check_relaxation("below", n_paths=n_paths)),
        ("moment curve", lambda: check_moment_curve(n_paths=n_paths)),
        ("exact OU step", lambda: check_exact_ou_step(n_paths=5 * n_paths)),
        ("Gibbs potential", lambda: check_gibbs_potential(n_paths=n_paths)),
        ("weak order baoab", lambda: check_weak_bias_order("baoab")),
        ("weak order euler_maruyama", lambda: check_weak_bias_order("euler_maruyama")),
    ]
    results: list[CheckResult] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for label, job in jobs:
            if progress is not None:
                progress(label)
            out = job()
            results.extend(out if isinstance(out, list) else [out])
    return results
