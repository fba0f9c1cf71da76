"""The laws of THEORY.md sections 3-5 against simulation (the checks `inertia verify` runs),
each paired with a power control: the same check on a deliberately broken variant must fail,
by a wide margin, so none of these tests can pass vacuously."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from inertia import verify
from inertia.dynamics import NesterovFriction
from inertia.integrators import METHODS, Method, StepContext, StepResult, register

N_PATHS = 2000


def _variant(
    name: str,
    base: str,
    *,
    ctx: Callable[[StepContext], StepContext] | None = None,
    result: Callable[[StepResult], StepResult] | None = None,
    **meta: object,
) -> Method:
    """A registered method that wraps ``base`` with a deliberate bug."""
    inner_method = METHODS[base]

    def make_step(friction_free: bool):  # type: ignore[no-untyped-def]
        inner = inner_method.make_step(friction_free)

        def step(state, n, c):  # type: ignore[no-untyped-def]
            res = inner(state, n, ctx(c) if ctx else c)
            return result(res) if result else res

        return step

    fields = dataclasses.asdict(inner_method) | {"name": name, "make_step": make_step} | meta
    return Method(**fields)  # type: ignore[arg-type]


@pytest.fixture
def broken() -> Iterator[Callable[..., str]]:
    names: list[str] = []

    def make(name: str, base: str, **kw: object) -> str:
        register(_variant(name, base, **kw))
        names.append(name)
        return name

    yield make
    for n in names:
        METHODS.pop(n, None)


def _wide_fail(r: verify.CheckResult, factor: float = 3.0) -> bool:
    return (not r.passed) and abs(r.measured - r.predicted) > factor * r.tolerance


def _noise_dt(c: StepContext) -> StepContext:
    # the classic bug: noise scaled by dt instead of sqrt(dt)
    return dataclasses.replace(c, sigma=c.sigma * math.sqrt(c.dt))


# ------------------------------------------------------------------ integrator orders


@pytest.mark.parametrize("method", sorted(METHODS))
def test_declared_order_is_measured(method: str) -> None:
    r = verify.check_order(method)
    assert r.passed, r


def test_order_under_nesterov_schedule() -> None:
    assert verify.check_order("leapfrog", gamma=NesterovFriction(3.0), t0=1.0).passed
    assert verify.check_order("yoshida4", gamma=NesterovFriction(3.0), t0=1.0).passed


def test_order_check_has_teeth(broken: Callable[..., str]) -> None:
    # leapfrog claiming order 4, symplectic Euler claiming order 2: both must fail
    assert not verify.check_order(broken("leapfrog_claims_4", "leapfrog", order=4)).passed
    assert not verify.check_order(broken("se_claims_2", "symplectic_euler", order=2)).passed


# ------------------------------------------------------------------ law 1: conservation


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "symplectic_euler", "baoab"])
def test_conservation_has_no_drift(method: str) -> None:
    r = verify.check_conservation_drift(method, horizon=300.0)
    assert r.passed, r


def test_drift_check_fails_for_explicit_euler() -> None:
    r = verify.check_conservation_drift("euler", dt=0.01, horizon=300.0)
    assert not r.passed and r.measured > 5.0, r


@pytest.mark.parametrize("method,dt", [("leapfrog", 0.05), ("yoshida4", 0.2)])
def test_energy_error_scales_with_order(method: str, dt: float) -> None:
    assert verify.check_conservation_order(method, dt=dt).passed


def test_euler_energy_growth_factor_exact() -> None:
    r = verify.check_euler_growth()
    assert r.passed, r
    assert verify.check_euler_growth(eigenvalue=0.25, dt=0.1).passed


# ------------------------------------------------------------------ law 2: damped ledger


@pytest.mark.parametrize("method", ["leapfrog", "symplectic_euler", "baoab", "yoshida4"])
def test_damped_ledger_closes_at_scheme_order(method: str) -> None:
    r = verify.check_ledger_order(method)
    assert r.passed, r


def test_damped_ledger_under_schedule() -> None:
    assert verify.check_ledger_order("leapfrog", gamma=NesterovFriction(3.0), t0=1.0).passed


def test_ledger_check_has_teeth(broken: Callable[..., str]) -> None:
    # booking only half the friction work leaves an O(1) residual: no convergence
    name = broken("half_ledger", "leapfrog", result=lambda r: r._replace(dissipated=0.5 * r.dissipated))
    assert not verify.check_ledger_order(name).passed


@pytest.mark.parametrize("regime", ["underdamped", "critical", "overdamped"])
def test_closed_forms(regime: str) -> None:
    r = verify.check_closed_form(regime)
    assert r.passed, r


def test_closed_form_check_has_teeth(broken: Callable[..., str]) -> None:
    # 1 % too much friction: the error stops converging
    from inertia.dynamics import ConstantFriction

    name = broken(
        "wrong_gamma",
        "leapfrog",
        ctx=lambda c: dataclasses.replace(c, friction=ConstantFriction(1.01 * c.friction(0.0))),
    )
    assert not verify.check_closed_form("underdamped", method=name).passed


# ------------------------------------------------------------------ law 3: stochastic drift


def test_heating_is_linear_with_ito_term() -> None:
    r = verify.check_heating(n_paths=N_PATHS)
    assert r.passed, r


def test_heating_fails_without_ito_term() -> None:
    assert _wide_fail(verify.check_heating(n_paths=N_PATHS, ito_term=False))


def test_heating_fails_with_noise_scaled_by_dt(broken: Callable[..., str]) -> None:
    name = broken("baoab_noise_dt", "baoab", ctx=_noise_dt)
    assert _wide_fail(verify.check_heating(method=name, n_paths=N_PATHS))


@pytest.mark.parametrize("start", ["above", "below"])
def test_relaxation_to_gibbs_level(start: str) -> None:
    r = verify.check_relaxation(start, n_paths=N_PATHS)
    assert r.passed, r


def test_relaxation_fails_with_noise_scaled_by_dt(broken: Callable[..., str]) -> None:
    name = broken("baoab_noise_dt", "baoab", ctx=_noise_dt)
    assert _wide_fail(verify.check_relaxation("below", method=name, n_paths=N_PATHS))


@pytest.mark.parametrize("method", ["baoab", "leapfrog"])
def test_moment_curve(method: str) -> None:
    for r in verify.check_moment_curve(method=method, n_paths=N_PATHS):
        assert r.passed, r


def test_moment_curve_fails_with_noise_scaled_by_dt(broken: Callable[..., str]) -> None:
    name = broken("leapfrog_noise_dt", "leapfrog", ctx=_noise_dt)
    rows = verify.check_moment_curve(method=name, n_paths=N_PATHS)
    assert all(not r.passed for r in rows)
    assert _wide_fail(rows[-1])


def test_exact_ou_step_at_large_dt() -> None:
    r = verify.check_exact_ou_step(n_paths=10000)
    assert r.passed, r


def test_ou_check_fails_for_euler_maruyama_noise(broken: Callable[..., str]) -> None:
    # an O step with Euler-Maruyama noise sigma sqrt(dt) instead of the exact OU variance
    def em_noise(c: StepContext) -> StepContext:
        g = c.friction(0.0)
        exact = math.sqrt(-math.expm1(-2 * g * c.dt) / (2 * g))
        return dataclasses.replace(c, sigma=c.sigma * math.sqrt(c.dt) / exact)

    name = broken("baoab_em_noise", "baoab", ctx=em_noise)
    assert _wide_fail(verify.check_exact_ou_step(method=name, n_paths=10000))


def test_baoab_samples_potential_exactly() -> None:
    r = verify.check_gibbs_potential(n_paths=N_PATHS)
    assert r.passed, r


@pytest.mark.parametrize("method", ["baoab", "leapfrog", "euler_maruyama", "symplectic_euler"])
def test_weak_order_from_exact_moments(method: str) -> None:
    assert verify.check_weak_bias_order(method).passed


def test_weak_order_check_has_teeth(broken: Callable[..., str]) -> None:
    # the broken noise converges to the wrong level: the bias does not vanish
    assert not verify.check_weak_bias_order(broken("b_noise_dt", "baoab", ctx=_noise_dt)).passed


def test_stationary_level_independent_of_hessian() -> None:
    # E[I]_inf = d sigma^2 / (2 gamma) whatever the eigenvalues: a stiffer quadratic, same level
    from inertia import potentials, simulate, theory

    lam = [1.0, 9.0]
    tr = simulate(
        potentials.Quadratic(lam),
        [0.0, 0.0],
        gamma=2.0,
        sigma=0.6,
        dt=0.02,
        n_steps=1000,
        method="baoab",
        n_paths=N_PATHS,
        seed=11,
        save_every=1000,
    )
    level = theory.stationary_inertia(2, 2.0, 0.6)
    se = tr.inertia[-1].std(ddof=1) / np.sqrt(N_PATHS)
    assert abs(tr.inertia[-1].mean() - level) <= 3 * se + verify.bias_budget("baoab", 0.02, level) * 9 / 4


def test_run_checks_quick_all_pass() -> None:
    seen: list[str] = []
    results = verify.run_checks(quick=True, progress=seen.append)
    assert seen and len(results) >= len(seen)
    failed = [r for r in results if not r.passed]
    assert not failed, failed
