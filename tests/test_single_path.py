"""Long single paths (issue 4): the compiled loop and the lean NumPy loop give the generic loop's numbers.

``simulate`` steps one deterministic NumPy path (``n_paths = 1``, ``sigma = 0``, a built-in method)
in the compiled loop of :mod:`inertia.integrators.compiled` when the potential is a built-in one
and numba is installed, else in its lean NumPy loop; ``fast=False`` forces the generic loop. The
tests here pin, in float64:

* the compiled potentials equal :mod:`inertia.potentials` bit for bit (and NumPy's summation
  order is reproduced exactly);
* both loops equal the generic loop bit for bit (the dense-matrix quadratic to rounding, its
  ``theta @ A`` being BLAS's) for every built-in potential x method x friction (none, constant,
  ``3/t``, a user schedule) x ``save_every``, including a resumed run (``t0``, ``initial_step``),
  the progress callbacks and the counters;
* divergence: the same status, first bad step, partial rows (non-finite at the bad step) and
  :class:`~inertia.DivergenceError`, for a quadratic above its stability bound and for a NaN from
  a user potential in the middle of the lean loop's check interval;
* float32: the lean loop equals the float32 generic loop bit for bit; the compiled loop computes
  in float64 and returns float32 (equal to the float64 generic run rounded to float32);
* dispatch and the numba-absent fallback (availability monkeypatched);
* power controls: the very same equality check fails for a loop with a half-step kick missing and
  for a drift coefficient off by two ulps.
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import dynamics, potentials
from inertia.integrators import compiled

sim = importlib.import_module("inertia.simulate")  # the module (inertia.simulate is the function)
single_path = importlib.import_module("inertia.kernels.single_path")

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

HAVE_NUMBA = compiled.available()
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (pip install .[fast])")

METHODS = ("leapfrog", "symplectic_euler", "yoshida4", "baoab", "euler")
LOOPS = ("compiled", "numpy")
FRICTIONS: dict[str, Any] = {
    "none": 0.0,
    "constant": 0.7,
    "nesterov": dynamics.NesterovFriction(3.0),
    "schedule": dynamics.ScheduledFriction(lambda t: 0.5 + 0.3 * math.sin(2.0 * t)),
}
_RNG = np.random.default_rng(7)
_B = _RNG.standard_normal((6, 6))
POTENTIALS = {
    "quadratic": lambda: potentials.Quadratic(np.linspace(0.5, 3.0, 10)),
    "quadratic-matrix": lambda: potentials.Quadratic(matrix=_B @ _B.T / 6 + np.eye(6)),
    "double-well": lambda: potentials.DoubleWell(10, barrier=1.5, stiffness=2.0),
    "quartic-chain": lambda: potentials.QuarticChain(np.linspace(1.0, 2.0, 10), beta=0.7),
    "rosenbrock": lambda: potentials.Rosenbrock(10, a=1.0, b=5.0),
}
#: everything the generic loop returns, compared field by field
ARRAYS = ("t", "step", "kinetic", "potential", "inertia", "dissipated", "theta", "v")
FIELDS = ("status", "message", "first_bad_step", "n_steps", "n_grad_evals", "method")


class UserDoubleWell(potentials.Potential):
    """:class:`~inertia.potentials.DoubleWell` (barrier 1, stiffness 1) re-written as a user would."""

    def value_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, rest = theta[..., :1], theta[..., 1:]
        w = x0 * x0 - 1.0
        value = (w * w)[..., 0] + 0.5 * np.sum(rest * rest, axis=-1)
        return value, np.concatenate([4.0 * x0 * w, rest], axis=-1)


class NaNBeyond(potentials.Potential):
    """``1/2 |theta|^2`` for ``theta_0 <= 1.5``; value and gradient NaN beyond."""

    def value_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bad = theta[..., :1] > 1.5
        with np.errstate(invalid="ignore"):
            value = np.where(bad[..., 0], np.nan, 0.5 * np.sum(theta * theta, axis=-1))
            grad = np.where(bad, np.nan, theta)
        return value, grad


def assert_same_run(got: inertia.Trajectory, ref: inertia.Trajectory, *, rtol: float = 0.0) -> None:
    """``got`` equals ``ref``: every array bit for bit (``rtol = 0``; NaN matches NaN) or to ``rtol``,
    and status, message, first bad step, counters, method and config exactly."""
    for name in ARRAYS:
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(ref, name))
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if rtol == 0.0:
            np.testing.assert_array_equal(a, b, err_msg=name, strict=True)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.nanmax(np.abs(b))), err_msg=name)
    for name in FIELDS:
        assert getattr(got, name) == getattr(ref, name), name
    assert {**got.config, "kernel": None} == {**ref.config, "kernel": None}  # but the kernel that ran


def recorder(calls: list[tuple[int, int]]) -> Any:
    """A ``progress`` callback appending ``(steps_done, n_steps)`` to ``calls``."""
    return lambda done, total: calls.append((done, total))


@pytest.fixture
def loop_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records which single-path loop each ``simulate`` call ran (``"compiled"``/``"numpy"``)."""
    calls: list[str] = []
    original = sim._drive
    names = {"compiled_path": "compiled", "numpy_path": "numpy"}

    def spy(kernel: Any, **kwargs: Any) -> Any:
        if kernel.name in names:
            calls.append(names[kernel.name])
        return original(kernel, **kwargs)

    monkeypatch.setattr(sim, "_drive", spy)
    yield calls


def use_loop(monkeypatch: pytest.MonkeyPatch, loop: str) -> None:
    """Make the built-in potentials take ``loop``: numba's availability is monkeypatched."""
    if loop == "compiled" and not HAVE_NUMBA:
        pytest.skip("numba not installed (pip install .[fast])")
    if loop == "numpy":
        monkeypatch.setattr(compiled, "available", lambda: False)


# --- the compiled potentials ------------------------------------------------------------------


def test_pairwise_sum_is_numpys_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    for n in [*range(0, 140), 255, 256, 257, 1000, 4099, 100_003]:
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 6, n)
        assert compiled.pairwise_sum(a, n) == np.sum(a), n
        assert compiled.pairwise_sum(a, n) == np.sum(a[None, :], axis=-1)[0], n


@pytest.mark.parametrize(
    "pot",
    [
        *(make() for make in POTENTIALS.values()),
        potentials.DoubleWell(1),
        potentials.DoubleWell(2),
        potentials.QuarticChain(np.linspace(1.0, 2.0, 300)),  # sums past NumPy's 128-term blocks
        potentials.Rosenbrock(2),
    ],
    ids=lambda p: f"{type(p).__name__}{p.dim}",
)
def test_compiled_potentials_equal_the_numpy_formulas(pot: potentials.Potential) -> None:
    spec = compiled.family_of(pot)
    assert spec is not None
    family, scalars, arr = spec
    rng = np.random.default_rng(1)
    exact = not (isinstance(pot, potentials.Quadratic) and pot.diagonal is None)
    for _ in range(5):
        theta = rng.uniform(-1.5, 1.5, pot.dim)
        grad, tmp = np.zeros(pot.dim), np.zeros(pot.dim)
        value = compiled.value_and_grad(family, theta, grad, scalars, arr, tmp)
        ref_value, ref_grad = pot.value_and_grad(theta[None, :])
        if exact:
            assert value == ref_value[0]
            np.testing.assert_array_equal(grad, ref_grad[0], strict=True)
        else:
            np.testing.assert_allclose(value, ref_value[0], rtol=1e-14)
            np.testing.assert_allclose(grad, ref_grad[0], rtol=1e-14, atol=1e-14)


def test_only_the_exact_built_in_classes_are_compiled() -> None:
    class Softer(potentials.DoubleWell):
        def value_and_grad(self, theta: Any) -> Any:
            value, grad = super().value_and_grad(theta)
            return 0.5 * value, 0.5 * grad

    assert compiled.family_of(potentials.DoubleWell(3)) is not None
    assert compiled.family_of(Softer(3)) is None
    assert compiled.family_of(UserDoubleWell()) is None


# --- same numbers as the generic loop ---------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(POTENTIALS))
def test_single_path_loops_equal_the_generic_loop(
    name: str, method: str, loop: str, monkeypatch: pytest.MonkeyPatch, loop_calls: list[str]
) -> None:
    use_loop(monkeypatch, loop)
    pot = POTENTIALS[name]()
    d = pot.dim
    theta0, v0 = np.linspace(-0.5, 0.7, d), np.linspace(0.3, -0.2, d)
    rtol = 1e-13 if name == "quadratic-matrix" else 0.0
    for friction in FRICTIONS.values():
        for save_every, t0, initial_step, mass in ((1, 1.0, 0, 1.0), (7, 0.3, 5, np.linspace(1.0, 2.0, d))):
            kwargs = dict(
                gamma=friction, dt=0.01, n_steps=30, method=method, save_every=save_every,
                t0=t0, initial_step=initial_step, mass=mass,
            )  # fmt: skip
            calls: dict[str, list[tuple[int, int]]] = {"fast": [], "generic": []}
            got = inertia.simulate(pot, theta0, v0, **kwargs, progress=recorder(calls["fast"]))
            ref = inertia.simulate(pot, theta0, v0, **kwargs, fast=False, progress=recorder(calls["generic"]))
            assert_same_run(got, ref, rtol=rtol)
            assert calls["fast"] == calls["generic"]
    assert loop_calls == [loop] * (2 * len(FRICTIONS))


@pytest.mark.parametrize("method", METHODS)
def test_lean_loop_on_a_user_potential_equals_the_generic_loop(method: str, loop_calls: list[str]) -> None:
    theta0, v0 = np.linspace(-0.5, 0.7, 10), np.linspace(0.3, -0.2, 10)
    for gamma in (0.0, 0.7):
        for save_every in (1, 1000):
            kwargs = dict(gamma=gamma, dt=0.01, n_steps=300, method=method, save_every=save_every)
            got = inertia.simulate(UserDoubleWell(), theta0, v0, **kwargs)
            assert_same_run(got, inertia.simulate(UserDoubleWell(), theta0, v0, **kwargs, fast=False))
    assert loop_calls == ["numpy"] * 4


@needs_numba
def test_compiled_loop_equals_the_lean_loop_on_the_same_formulas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in double well (compiled) and the same formulas as a user potential (lean loop):
    bit for bit over 2000 steps."""
    theta0 = np.full(10, 0.5)
    got = inertia.simulate(potentials.DoubleWell(10), theta0, dt=0.01, n_steps=2000, save_every=100)
    ref = inertia.simulate(UserDoubleWell(), theta0, dt=0.01, n_steps=2000, save_every=100)
    for name in ("kinetic", "potential", "theta", "v"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), strict=True)


# --- divergence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "symplectic_euler", "baoab"])
@pytest.mark.parametrize("save_every", [1, 7, 1000])
def test_divergence_matches_the_generic_loop(
    loop: str, method: str, save_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_loop(monkeypatch, loop)
    pot = potentials.Quadratic([1.0, 100.0])  # leapfrog is stable for dt < 0.2
    kwargs = dict(dt=0.25, n_steps=2000, method=method, save_every=save_every)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the stability warning: tested elsewhere
        with pytest.raises(inertia.DivergenceError) as info:
            inertia.simulate(pot, [1.0, 1.0], **kwargs)
        ref = inertia.simulate(pot, [1.0, 1.0], **kwargs, on_divergence="stop", fast=False)
    got = info.value.trajectory
    assert ref.status == "diverged" and 50 < ref.first_bad_step < 2000
    assert_same_run(got, ref)
    assert str(info.value) == ref.message
    assert not np.isfinite(got.inertia[-1, 0]) and np.all(np.isfinite(got.inertia[:-1]))


@pytest.mark.parametrize("check_every", [1, 5, 128, 10_000])
@pytest.mark.parametrize("method", METHODS)
def test_lean_loop_finds_the_first_bad_step_inside_its_check_interval(
    method: str, check_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN from the potential half-way through a check interval: the replay finds its step."""
    monkeypatch.setattr(single_path, "CHECK_EVERY", check_every)
    kwargs = dict(dt=0.01, n_steps=200, method=method, on_divergence="stop")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray NumPy warnings: the NaN is reported, not printed
        got = inertia.simulate(NaNBeyond(), [0.0, 0.0], [2.0, 0.0], **kwargs)
    ref = inertia.simulate(NaNBeyond(), [0.0, 0.0], [2.0, 0.0], **kwargs, fast=False)
    assert ref.status == "diverged" and 50 < ref.first_bad_step < 200
    assert_same_run(got, ref)


@pytest.mark.parametrize("loop", LOOPS)
def test_non_finite_start_is_step_zero(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_loop(monkeypatch, loop)
    pot = potentials.DoubleWell(2) if loop == "compiled" else NaNBeyond()
    theta0 = [1e200, 0.0] if loop == "compiled" else [2.0, 0.0]  # L overflows / is NaN at the start
    got = inertia.simulate(pot, theta0, dt=0.1, n_steps=10, on_divergence="stop")
    ref = inertia.simulate(pot, theta0, dt=0.1, n_steps=10, on_divergence="stop", fast=False)
    assert got.first_bad_step == 0 and got.step.tolist() == [0]
    assert_same_run(got, ref)


def test_overflow_without_a_known_bound_matches_the_generic_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frictionless explicit Euler on the quartic chain overflows (no NaN from the potential)."""
    for loop in ("compiled", "numpy") if HAVE_NUMBA else ("numpy",):
        if loop == "numpy":
            monkeypatch.setattr(compiled, "available", lambda: False)
        pot = potentials.QuarticChain([1.0, 2.0])
        kwargs = dict(dt=0.05, n_steps=5000, method="euler", on_divergence="stop", save_every=10)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = inertia.simulate(pot, [0.8, -0.6], [0.3, 0.5], **kwargs)
        assert_same_run(got, inertia.simulate(pot, [0.8, -0.6], [0.3, 0.5], **kwargs, fast=False))
        assert got.status == "diverged"


# --- float32 -------------------------------------------------------------------------------------


def test_lean_loop_in_float32_is_the_generic_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "available", lambda: False)
    theta0 = np.linspace(-0.5, 0.7, 10, dtype=np.float32)
    for pot in (potentials.DoubleWell(10), UserDoubleWell()):
        got = inertia.simulate(pot, theta0, dt=0.01, n_steps=200, gamma=0.3, save_every=9)
        ref = inertia.simulate(pot, theta0, dt=0.01, n_steps=200, gamma=0.3, save_every=9, fast=False)
        assert got.kinetic.dtype == np.float32 and got.theta.dtype == np.float32
        assert_same_run(got, ref)


@needs_numba
def test_compiled_loop_steps_float32_in_float64() -> None:
    """float32 in, float32 out; inside, float64: the float64 generic run rounded to float32, and
    within float32 rounding of the float32 generic run."""
    theta0 = np.linspace(-0.5, 0.7, 10, dtype=np.float32)
    pot = potentials.DoubleWell(10)
    kwargs = dict(dt=0.01, n_steps=200, gamma=0.3, save_every=9)
    got = inertia.simulate(pot, theta0, **kwargs)
    ref64 = inertia.simulate(pot, theta0.astype(np.float64), **kwargs, fast=False)
    ref32 = inertia.simulate(pot, theta0, **kwargs, fast=False)
    for name in ("kinetic", "potential", "dissipated", "theta", "v"):
        a = getattr(got, name)
        assert a.dtype == np.float32, name
        np.testing.assert_array_equal(a, getattr(ref64, name).astype(np.float32), err_msg=name)
        np.testing.assert_allclose(a, getattr(ref32, name), rtol=1e-5, atol=1e-6, err_msg=name)
    assert {**got.config, "kernel": None} == {**ref32.config, "kernel": None}


@needs_numba
def test_compiled_float32_diverges_where_float32_overflows() -> None:
    pot = potentials.Quadratic([1.0, 100.0])
    theta0 = np.array([1.0, 1.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = inertia.simulate(pot, theta0, dt=0.25, n_steps=2000, on_divergence="stop")
        ref32 = inertia.simulate(pot, theta0, dt=0.25, n_steps=2000, on_divergence="stop", fast=False)
        ref64 = inertia.simulate(
            pot, theta0.astype(np.float64), dt=0.25, n_steps=2000, on_divergence="stop", fast=False
        )
    assert got.first_bad_step == ref32.first_bad_step < ref64.first_bad_step
    assert got.inertia.dtype == np.float32
    assert not np.isfinite(got.inertia[-1, 0]) and np.all(np.isfinite(got.inertia[:-1]))


# --- dispatch and the fallback -------------------------------------------------------------------


def test_dispatch(monkeypatch: pytest.MonkeyPatch, loop_calls: list[str]) -> None:
    dw = potentials.DoubleWell(2)
    run = dict(dt=0.01, n_steps=5)
    inertia.simulate(dw, [0.5, 0.5], **run)
    inertia.simulate(UserDoubleWell(), [0.5, 0.5], **run)
    inertia.simulate(dw, [0.5, 0.5], **run, fast=False)  # generic
    inertia.simulate(dw, [0.5, 0.5], **run, sigma=0.1)  # noise: not a single-path loop
    inertia.simulate(dw, [[0.5, 0.5], [0.1, 0.2]], **run)  # an ensemble
    inertia.simulate(dw, [[0.5, 0.5]], **run)  # (1, d) is one path
    expected = ["compiled" if HAVE_NUMBA else "numpy", "numpy", "compiled" if HAVE_NUMBA else "numpy"]
    assert loop_calls == expected


def test_without_numba_the_built_ins_take_the_lean_loop(
    monkeypatch: pytest.MonkeyPatch, loop_calls: list[str]
) -> None:
    """As if numba were not installed: the module's ``numba`` is ``None``."""
    monkeypatch.setattr(compiled, "numba", None)
    assert not compiled.available()
    pot = potentials.DoubleWell(10)
    got = inertia.simulate(pot, np.full(10, 0.5), dt=0.01, n_steps=100, gamma=0.2)
    assert loop_calls == ["numpy"]
    assert_same_run(got, inertia.simulate(pot, np.full(10, 0.5), dt=0.01, n_steps=100, gamma=0.2, fast=False))


@needs_numba
def test_records_only_the_saved_steps() -> None:
    traj = inertia.simulate(
        potentials.DoubleWell(10), np.full(10, 0.5), dt=0.01, n_steps=100_000, save_every=10_000
    )
    assert traj.step.tolist() == list(range(0, 100_001, 10_000))
    assert traj.kinetic.shape == (11, 1) and traj.n_grad_evals == 100_001  # one per step and the first


# --- power controls ------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("defect", ["missing half kick", "drift two ulps long"])
def test_equality_check_catches_a_wrong_loop(loop: str, defect: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_loop(monkeypatch, loop)
    original = single_path._substeps

    def broken(scheme: Any, friction_free: bool) -> Any:
        subs = original(scheme, friction_free)
        if defect == "missing half kick":
            return subs[:-1]  # leapfrog B A B without its closing B
        return tuple((s, c * (1 + 2**-51) if s == "A" else c, start) for s, c, start in subs)

    monkeypatch.setattr(single_path, "_substeps", broken)
    pot = potentials.DoubleWell(10)
    kwargs = dict(dt=0.01, n_steps=50, method="leapfrog")
    got = inertia.simulate(pot, np.full(10, 0.5), **kwargs)
    ref = inertia.simulate(pot, np.full(10, 0.5), **kwargs, fast=False)
    with pytest.raises(AssertionError):
        assert_same_run(got, ref)
