"""The noisy numba step (:class:`~inertia.integrators.fused_cpu.CpuNoisyKernel`) against the reference.

Issue 4.

* float64: every noisy method x NumPy/torch x scalar/vector mass x constant/``3/t`` friction gives
  the generic loop's ``Trajectory`` (``fast=False``) to rounding error, and only the compiled step
  ran (the in-place step never did);
* ``theta`` and ``v`` equal the NumPy in-place kernel's bit for bit (float64 and float32), with
  the same keyed noise; 1 and 2 noise threads give the same bits;
* without numba the in-place kernel runs and gives the same numbers;
* power control: a ``c2`` off by a relative 1e-6 fails the comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import inertia
from inertia import _backend, kernels, potentials
from inertia.integrators import compiled, fused_cpu, inplace

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from test_inplace import FRICTIONS, MASSES, NOISY, as_backend, assert_same_to_rounding, run  # noqa: E402

NOISY_FRICTIONS = [f for f in FRICTIONS if f != "none"]


@pytest.fixture
def compiled_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fail if the in-place step runs; return the steps the compiled kernel took."""

    def refuse(self: Any, n: int) -> int:
        raise AssertionError("the in-place step ran")

    calls: list[int] = []
    step = fused_cpu.CpuNoisyKernel.step

    def spy(self: Any, n: int) -> int:
        calls.append(n)
        return step(self, n)

    monkeypatch.setattr(inplace.InplaceKernel, "step", refuse)
    monkeypatch.setattr(fused_cpu.CpuNoisyKernel, "step", spy)
    return calls


def in_place(monkeypatch: pytest.MonkeyPatch, *args: Any, **kw: Any) -> Any:
    """:func:`test_inplace.run` with numba reported missing (the plain in-place kernel)."""
    with monkeypatch.context() as m:
        m.setattr(compiled, "available", lambda: False)
        return run(*args, **kw)


CASES = [
    (m, b, mass, fr) for m in NOISY for b in ("numpy", "torch") for mass in MASSES for fr in NOISY_FRICTIONS
]


@pytest.mark.parametrize(("method", "backend", "mass", "friction"), CASES)
def test_noisy_steps_equal_the_generic_loop(
    method: str, backend: str, mass: str, friction: str, compiled_steps: list[int]
) -> None:
    kw = dict(sigma=0.4, friction=friction, mass=MASSES[mass])
    got = run(backend, method, fast=True, **kw)
    assert compiled_steps == list(range(40))
    ref = run(backend, method, fast=False, **kw)
    assert got.success and got.n_saved == 7
    assert_same_to_rounding(got, ref)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", NOISY)
@pytest.mark.parametrize("mass", list(MASSES))
def test_state_equals_the_inplace_kernel_bit_for_bit(
    dtype: str, method: str, mass: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = dict(sigma=0.4, friction="3/t", mass=MASSES[mass], dtype=dtype)
    got = run("numpy", method, fast=True, **kw)
    ref = in_place(monkeypatch, "numpy", method, fast=True, **kw)
    for name in ("theta", "v"):
        assert np.array_equal(getattr(got, name), getattr(ref, name)), name
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert_same_to_rounding(got, ref, rtol=rtol)


def test_float32_torch_agrees_with_the_inplace_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(sigma=0.4, friction="constant", mass=MASSES["vector"], dtype="float32")
    got = run("torch", "baoab", fast=True, **kw)
    assert_same_to_rounding(got, in_place(monkeypatch, "torch", "baoab", fast=True, **kw), rtol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["baoab", "leapfrog", "euler_maruyama"])
def test_noise_threads_do_not_change_the_numbers(
    backend: str, method: str, monkeypatch: pytest.MonkeyPatch, compiled_steps: list[int]
) -> None:
    """1 or 2 filling threads (20000 x 4 numbers per draw: above the threading threshold, several
    blocks; with two, the next key is filled while the step runs): bit-identical runs."""
    runs = []
    for threads in (1, 2):
        monkeypatch.setattr(_backend, "NOISE_THREADS", threads)
        runs.append(run(backend, method, fast=True, n_paths=20000, n_steps=6, save_every=4))
    a, b = runs
    assert compiled_steps == list(range(6)) * 2
    for name in ("kinetic", "potential", "dissipated", "theta", "v"):
        assert np.array_equal(_backend.to_numpy(getattr(a, name)), _backend.to_numpy(getattr(b, name))), name


@pytest.mark.filterwarnings("ignore:`dt` = 3 is above the stability bound")
def test_divergence_matches_the_generic_loop() -> None:
    kw = dict(sigma=0.4, dt=3.0, on_divergence="stop", n_steps=400, save_every=50)
    got, ref = run("numpy", "baoab", fast=True, **kw), run("numpy", "baoab", fast=False, **kw)
    assert got.status == "diverged" and got.first_bad_step is not None
    assert_same_to_rounding(got, ref)


# --- dispatch, fallback, power control -------------------------------------------------------


def test_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.ones((3, 4))
    args = dict(mass=1.0, friction=inertia.dynamics.as_friction(0.5), sigma=0.1, dt=0.1, t0=0.0)
    quad = potentials.Quadratic([0.5, 1.0, 2.0, 3.0])
    for arr in (x, x.astype(np.float32), torch.as_tensor(x), torch.as_tensor(x, dtype=torch.float32)):
        assert type(kernels.ensemble_kernel("baoab", quad, arr, arr, **args)) is fused_cpu.CpuNoisyKernel  # type: ignore[arg-type]
    monkeypatch.setattr(compiled, "available", lambda: False)
    assert type(kernels.ensemble_kernel("baoab", quad, x, x, **args)) is inplace.InplaceKernel  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noisy"):
        fused_cpu.CpuNoisyKernel("baoab", np.ones(4), x, x, **{**args, "sigma": 0.0})  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma", [0.0, 0.4], ids=["noise-free", "noisy"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_without_numba_the_inplace_kernel_gives_the_same_numbers(
    backend: str, sigma: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without numba the plain in-place kernel steps one step at a time and gives the compiled
    kernels' numbers (noise-free chunks and noisy steps alike)."""
    calls: list[int] = []
    step = inplace.InplaceKernel.step

    def spy(self: Any, n: int) -> int:
        calls.append(n)
        return step(self, n)

    monkeypatch.setattr(inplace.InplaceKernel, "step", spy)
    kw = dict(sigma=sigma, friction="3/t", mass=MASSES["vector"])
    got = in_place(monkeypatch, backend, "baoab", fast=True, **kw)
    assert len(calls) == 40  # the plain in-place kernel
    calls.clear()
    assert_same_to_rounding(got, run(backend, "baoab", fast=True, **kw))
    assert not calls  # the compiled kernels
    assert_same_to_rounding(got, run(backend, "baoab", fast=False, **kw))


def test_kinetic_after_a_step_is_the_recomputed_one() -> None:
    x = as_backend(np.random.default_rng(1).normal(size=(5, 4)), "numpy")
    args = dict(
        mass=[1.0, 2.0, 0.5, 3.0], friction=inertia.dynamics.as_friction(0.5), sigma=0.3, dt=0.1, t0=0.0
    )
    kernel = kernels.ensemble_kernel("leapfrog", potentials.Quadratic([0.5, 1.0, 2.0, 3.0]), x, x, **args)  # type: ignore[arg-type]
    assert type(kernel) is fused_cpu.CpuNoisyKernel
    kernel.noise = _backend.NoiseStream(3, kernel.noise_keys(0, 2), kernel.theta)
    with kernel.noise:
        for n in range(2):
            kernel.step(n)
            cached = kernel.kinetic(np.empty(5)).copy()
            fresh = inplace.InplaceKernel.kinetic(kernel, np.empty(5))
            np.testing.assert_allclose(cached, fresh, rtol=1e-14)


def test_comparison_detects_a_wrong_noise_amplitude(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled step with its noise amplitude ``c2`` off by a relative 1e-6 fails the check."""
    original = fused_cpu.o_coefficients

    def wrong(*args: Any) -> tuple[float, float, float]:
        c1, w, c2 = original(*args)
        return c1, w, c2 * (1.0 + 1e-6)

    monkeypatch.setattr(fused_cpu, "o_coefficients", wrong)
    got, ref = run("numpy", "baoab", fast=True), run("numpy", "baoab", fast=False)
    with pytest.raises(AssertionError, match="max"):
        assert_same_to_rounding(got, ref)
