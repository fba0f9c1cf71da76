"""The in-place ensemble loop (``simulate(..., fast=True)``) against the generic loop (issue 4).

* float64: every method x backend (NumPy, torch CPU) x scalar/vector mass x constant/scheduled/no
  friction x ``sigma`` 0 / > 0 gives the generic loop's ``Trajectory`` to rounding error (every
  array field, the counters, status and message), and the comparison has teeth: a ``1e-6``
  relative perturbation of one field, or a kernel whose ``c2`` is off by ``1e-6``, fails it;
* the keyed noise: the same numbers with 1 or 2 filling threads and with or without prefetch;
  row ``i`` independent of ``n_paths`` (both backends, float32 and float64, ``n_paths`` not a
  multiple of the block size); torch CPU float64 noise equals NumPy float64 noise;
* divergence: the same first bad step, status and partial rows as the generic loop;
* no noise thread outlives ``simulate``, whether it returns or raises.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import _backend, dynamics, kernels, potentials
from inertia._backend import NoiseStream, block_rows, normal, normal_into
from inertia.integrators import compiled, inplace

torch = pytest.importorskip("torch")

METHODS = ("euler", "euler_maruyama", "symplectic_euler", "leapfrog", "yoshida4", "baoab")
NOISY = ("euler", "euler_maruyama", "symplectic_euler", "leapfrog", "baoab")
LAM = np.array([0.5, 1.0, 2.0, 3.0])
MASSES = {"scalar": 1.5, "vector": [1.0, 2.0, 0.5, 3.0]}
FRICTIONS = {"constant": (0.7, 0.0), "3/t": (dynamics.NesterovFriction(3.0), 1.0), "none": (0.0, 0.0)}
FIELDS = ("kinetic", "potential", "inertia", "dissipated", "t", "step")
RTOL = 1e-12


def as_backend(x: Any, backend: str, dtype: str = "float64") -> Any:
    if backend == "numpy":
        return np.asarray(x, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=getattr(torch, dtype))


def same_config(a: inertia.Trajectory, b: inertia.Trajectory) -> bool:
    """The two runs' configs are equal but for ``kernel`` (which kernel stepped the run)."""
    return {**a.config, "kernel": None} == {**b.config, "kernel": None}


def assert_same_to_rounding(a: inertia.Trajectory, b: inertia.Trajectory, rtol: float = RTOL) -> None:
    """Every array field of ``a`` within ``rtol`` (relative to the field's largest value) of ``b``;
    counters, status, message and config (but the kernel that ran) identical."""
    for name in ("status", "message", "first_bad_step", "n_steps", "n_grad_evals", "method"):
        assert getattr(a, name) == getattr(b, name), name
    assert same_config(a, b)
    for name in (*FIELDS, "theta", "v"):
        x, y = _backend.to_numpy(getattr(a, name)), _backend.to_numpy(getattr(b, name))
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert np.array_equal(np.isfinite(x), np.isfinite(y)), name
        fin = np.isfinite(y)
        scale = float(np.max(np.abs(y[fin]), initial=0.0))
        err = float(np.max(np.abs(x[fin] - y[fin]), initial=0.0))
        assert err <= rtol * scale, f"{name}: max |fast - generic| = {err:.3g} > {rtol:g} x {scale:.3g}"
    assert type(a.theta) is type(b.theta)


def run(
    backend: str,
    method: str,
    *,
    fast: bool,
    sigma: float = 0.4,
    friction: str = "constant",
    mass: Any = 1.5,
    dtype: str = "float64",
    n_paths: int = 6,
    n_steps: int = 40,
    **kw: Any,
) -> Any:
    gamma, t0 = FRICTIONS[friction]
    rng = np.random.default_rng(0)
    theta0 = as_backend(rng.normal(size=(n_paths, LAM.size)), backend, dtype)
    v0 = as_backend(rng.normal(size=(n_paths, LAM.size)), backend, dtype)
    kw = {"save_every": 7, "seed": 5, "dt": 0.05, **kw}
    return inertia.simulate(
        potentials.Quadratic(LAM),
        theta0,
        v0,
        gamma=gamma,
        t0=t0,
        sigma=sigma,
        mass=mass,
        n_steps=n_steps,
        method=method,
        fast=fast,
        **kw,
    )


CASES = [
    (m, b, mass, fr, s)
    for m in METHODS
    for b in ("numpy", "torch")
    for mass in MASSES
    for fr in FRICTIONS
    for s in ((0.0, 0.4) if m in NOISY else (0.0,))
]


@pytest.mark.parametrize(("method", "backend", "mass", "friction", "sigma"), CASES)
def test_fast_path_equals_generic_loop(
    method: str, backend: str, mass: str, friction: str, sigma: float
) -> None:
    kw = dict(sigma=sigma, friction=friction, mass=MASSES[mass])
    fast, generic = run(backend, method, fast=True, **kw), run(backend, method, fast=False, **kw)
    assert fast.success and fast.n_saved == 7  # steps 0, 7, ..., 35 and the last, 40
    assert_same_to_rounding(fast, generic)


def test_the_fast_path_is_taken() -> None:
    """A diagonal quadratic never calls the potential on the fast path (the kernel computes
    ``lambda * theta`` itself): an instance whose ``value_and_grad`` raises still runs."""
    pot = potentials.Quadratic(LAM)

    def refuse(theta: Any) -> Any:
        raise AssertionError("the generic loop was used")

    pot.value_and_grad = refuse  # type: ignore[method-assign]
    traj = inertia.simulate(pot, np.ones((3, 4)), dt=0.05, n_steps=5, method="baoab", sigma=0.1, gamma=1.0)
    assert traj.success
    with pytest.raises(AssertionError, match="generic loop"):
        inertia.simulate(pot, np.ones((3, 4)), dt=0.05, n_steps=5, method="baoab", fast=False)


def test_unsupported_runs_take_the_generic_loop() -> None:
    assert (
        kernels.ensemble_kernel(
            "baoab",
            potentials.Quadratic(matrix=np.eye(2)),
            np.ones((2, 2)),
            np.ones((2, 2)),
            mass=1.0,
            friction=dynamics.as_friction(0.0),
            sigma=0.0,
            dt=0.1,
            t0=0.0,
        )
        is None
    )
    assert (
        kernels.ensemble_kernel(
            "baoab",
            potentials.DoubleWell(2),
            np.ones((2, 2)),
            np.ones((2, 2)),
            mass=1.0,
            friction=dynamics.as_friction(0.0),
            sigma=0.0,
            dt=0.1,
            t0=0.0,
        )
        is None
    )
    half = np.ones((2, 4), dtype=np.float16)
    assert (
        kernels.ensemble_kernel(
            "baoab",
            potentials.Quadratic(LAM),
            half,
            half,
            mass=1.0,
            friction=dynamics.as_friction(0.0),
            sigma=0.0,
            dt=0.1,
            t0=0.0,
        )
        is None
    )


# --- the comparison has teeth (power controls) ------------------------------------------------


def test_comparison_detects_a_relative_perturbation_of_1e_6() -> None:
    ref = run("numpy", "baoab", fast=False)
    for name in ("kinetic", "dissipated", "theta"):
        bad = dict(ref.__dict__)
        bad[name] = getattr(ref, name) * (1.0 + 1e-6)
        with pytest.raises(AssertionError, match=name):
            assert_same_to_rounding(inertia.Trajectory(**bad), ref)


def test_comparison_detects_a_wrong_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel whose noise amplitude ``c2`` is off by a relative 1e-6 fails the equality test."""
    original = inplace.o_coefficients

    def wrong(*args: Any) -> tuple[float, float, float]:
        c1, w, c2 = original(*args)
        return c1, w, c2 * (1.0 + 1e-6)

    monkeypatch.setattr(inplace, "o_coefficients", wrong)
    monkeypatch.setattr(compiled, "available", lambda: False)  # this kernel, not the numba step
    fast, generic = run("numpy", "baoab", fast=True), run("numpy", "baoab", fast=False)
    with pytest.raises(AssertionError, match="max"):
        assert_same_to_rounding(fast, generic)


# --- keyed noise ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_threads_and_prefetch_do_not_change_the_numbers(
    backend: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 or 2 filling threads: bit-identical runs (3000 x 100 is two blocks, above the threading
    threshold), and both equal the generic loop's draws through ``normal``."""
    d = 100
    n = block_rows(d) + 392  # a full block and a partial one
    ref = as_backend(np.zeros(1), backend, dtype)
    expected = _backend.to_numpy(normal((9, 4, 1), (n, d), ref))
    for threads in (1, 2):
        got = _backend.to_numpy(
            normal_into(
                (9, 4, 1), _backend._empty_like(as_backend(np.zeros((n, d)), backend, dtype)), threads=threads
            )
        )
        assert np.array_equal(got, expected)
        for prefetch in (False, True):
            like = as_backend(np.zeros((n, d)), backend, dtype)
            with NoiseStream(9, [(3, 0), (4, 0), (4, 1)], like, threads=threads, prefetch=prefetch) as ns:
                assert ns.threads == threads
                ns.take(3, 0)
                ns.take(4, 0)
                assert np.array_equal(_backend.to_numpy(ns.take(4, 1)), expected)
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr(_backend, "NOISE_THREADS", threads)
        traj = inertia.simulate(
            potentials.Quadratic(np.linspace(0.01, 1.0, d)),
            as_backend(np.ones(d), backend, dtype),
            n_paths=n,
            gamma=0.5,
            sigma=0.1,
            dt=0.01,
            n_steps=4,
            method="baoab",
            seed=2,
        )
        runs.append(traj)
    a, b = runs
    for name in (*FIELDS, "theta", "v"):
        assert np.array_equal(_backend.to_numpy(getattr(a, name)), _backend.to_numpy(getattr(b, name))), name


def test_noise_taken_out_of_order_raises() -> None:
    for prefetch in (False, True):
        with NoiseStream(1, [(0, 0), (1, 0)], np.zeros((2, 3)), prefetch=prefetch) as ns:
            with pytest.raises(RuntimeError, match="out of order"):
                ns.take(1, 0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["baoab", "euler_maruyama"])
def test_path_zero_does_not_depend_on_n_paths(backend: str, dtype: str, method: str) -> None:
    """Fast path, d = 100 (blocks of 2608 rows): path 0 of 1, 5 and 2700 paths (a full block and
    a partial one, 2700 * 100 not a multiple of the block) is the same path, bit for bit."""
    d = 100
    pot = potentials.Quadratic(np.linspace(0.01, 1.0, d))
    runs = {
        n: inertia.simulate(
            pot,
            as_backend(np.ones(d), backend, dtype),
            n_paths=n,
            gamma=0.5,
            sigma=0.1,
            dt=0.01,
            n_steps=6,
            method=method,
            seed=4,
            save_every=2,
        )
        for n in (1, 5, 2700)
    }
    ref = runs[1]
    for n, traj in runs.items():
        assert np.array_equal(_backend.to_numpy(traj.theta)[0], _backend.to_numpy(ref.theta)[0]), n
        assert np.array_equal(_backend.to_numpy(traj.v)[0], _backend.to_numpy(ref.v)[0]), n
        for name in ("kinetic", "potential", "dissipated"):
            assert np.array_equal(getattr(traj, name)[:, 0], getattr(ref, name)[:, 0]), (n, name)
    big, small = _backend.to_numpy(runs[2700].theta), _backend.to_numpy(runs[5].theta)
    assert np.array_equal(big[:5], small)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_noise_rows_are_a_prefix_across_blocks(backend: str, dtype: str) -> None:
    """The keyed source itself, with sizes that are not multiples of 16 or of the block."""
    ref = as_backend(np.zeros(1), backend, dtype)
    for d in (3, 7):
        rows = block_rows(d)
        big = _backend.to_numpy(normal((5, 11, 1), (rows + 37, d), ref))
        for n in (1, 5, rows - 1, rows + 1):
            assert np.array_equal(_backend.to_numpy(normal((5, 11, 1), (n, d), ref)), big[:n]), (d, n)
        # blocks are different streams
        assert not np.array_equal(big[:5], big[rows : rows + 5])


def test_torch_float64_noise_equals_numpy_float64_noise() -> None:
    a = normal((3, 7, 0), (3000, 10), np.zeros(1))
    b = normal((3, 7, 0), (3000, 10), torch.zeros(1, dtype=torch.float64))
    assert np.array_equal(a, b.numpy())
    fast_np = run("numpy", "baoab", fast=True)
    fast_torch = run("torch", "baoab", fast=True)
    assert_same_to_rounding(
        fast_torch.__class__(
            **{
                **fast_torch.__dict__,
                "theta": fast_torch.theta.numpy(),
                "v": fast_torch.v.numpy(),
                "config": fast_np.config,
            }
        ),
        fast_np,
    )


# --- divergence and threads ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["baoab", "leapfrog", "euler_maruyama", "symplectic_euler"])
@pytest.mark.parametrize("save_every", [1, 3])
def test_divergence_matches_the_generic_loop(backend: str, method: str, save_every: int) -> None:
    """Far above the stability bound (lambda = 400, dt = 0.5) the ensemble blows up within tens of
    steps: the same first bad step, status, message and partial rows (non-finite kept)."""
    lam = np.array([1.0, 400.0])
    theta0 = as_backend(np.array([[1.0, 0.0], [0.5, 1e-3], [0.0, 2.0]]), backend)
    kw = dict(
        gamma=0.3,
        sigma=0.2,
        dt=0.5,
        n_steps=400,
        method=method,
        seed=1,
        save_every=save_every,
        on_divergence="stop",
    )
    with pytest.warns(RuntimeWarning, match="stability bound"):
        fast = inertia.simulate(potentials.Quadratic(lam), theta0, fast=True, **kw)
    with pytest.warns(RuntimeWarning, match="stability bound"):
        generic = inertia.simulate(potentials.Quadratic(lam), theta0, fast=False, **kw)
    assert generic.status == "diverged" and generic.first_bad_step is not None
    assert fast.first_bad_step == generic.first_bad_step
    assert_same_to_rounding(fast, generic, rtol=1e-10)


def _noise_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("inertia-noise")]


def test_no_noise_thread_outlives_simulate() -> None:
    d = 100
    pot = potentials.Quadratic(np.linspace(0.01, 1.0, d))
    kw = dict(n_paths=3000, gamma=0.5, sigma=0.1, dt=0.01, method="baoab")
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(len(_noise_threads()))

    assert inertia.simulate(pot, np.ones(d), n_steps=3, progress=progress, **kw).success
    assert max(seen) >= 1 and _noise_threads() == []  # threads ran, and were joined

    def fail(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        inertia.simulate(pot, np.ones(d), n_steps=3, progress=fail, **kw)
    assert _noise_threads() == []
    with pytest.raises(inertia.DivergenceError), pytest.warns(RuntimeWarning, match="stability"):
        inertia.simulate(potentials.Quadratic(np.full(d, 1e4)), np.ones(d), n_steps=300, **{**kw, "dt": 0.5})
    assert _noise_threads() == []


def test_torch_threads_are_restored() -> None:
    """The run sets torch's intra-op threads to 1 (serial_arithmetic) and restores them."""
    d = 100
    before = torch.get_num_threads()
    seen: list[int] = []
    kw = dict(n_paths=3000, gamma=0.5, sigma=0.1, dt=0.01, method="baoab", n_steps=2)
    traj = inertia.simulate(
        potentials.Quadratic(np.linspace(0.01, 1.0, d)),
        torch.ones(d, dtype=torch.float32),
        progress=lambda done, total: seen.append(torch.get_num_threads()),
        **kw,
    )
    assert traj.success and seen == [1, 1]
    assert torch.get_num_threads() == before
