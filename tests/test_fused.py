"""The fused multi-step kernel (:mod:`inertia.integrators.fused`) against the generic loop (issue 4).

The fused path is meant for CUDA; here it runs on CPU with :data:`fused.FUSED_DEVICE_TYPES`
monkeypatched to include ``"cpu"`` and, for speed, ``torch.compile(backend="aot_eager")`` (the
traced graph run without code generation); one case compiles with the default inductor backend
(C++ code generation, skipped without a C++ compiler).

* float64: every fused method x scalar/vector mass x constant/scheduled/no friction x ``sigma``
  0 / > 0 gives the generic loop's ``Trajectory`` (``fast=False``) to rounding error, with
  ``save_every`` that divides the chunk, does not, and exceeds it, and with ``initial_step > 0``;
  the fused chunks are what ran (the in-place step is never called);
* divergence: the same first bad step, status, message and partial rows as the generic loop
  (the chunk with the blow-up is replayed step by step);
* power control: a wrong coefficient (``c2`` off by 1e-6) in the fused kernel fails the check;
* float32 runs and agrees with the in-place kernel to float32 rounding;
* a backend that cannot compile falls back to the in-place step with a warning, same numbers.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import dynamics, kernels, potentials
from inertia.integrators import fused

torch = pytest.importorskip("torch")

from test_inplace import LAM, MASSES, assert_same_to_rounding  # noqa: E402
from test_inplace import run as run_inplace  # noqa: E402


@pytest.fixture
def on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send CPU tensors through the fused kernel, compiled by the quick ``aot_eager`` backend."""
    monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cpu", "cuda"))
    monkeypatch.setattr(fused, "COMPILE_BACKEND", "aot_eager")


@pytest.fixture
def no_inplace_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if a fused kernel falls back to (or replays with) the in-place step."""

    def refuse(self: Any, n: int) -> int:
        raise AssertionError("the in-place step ran")

    monkeypatch.setattr(fused.FusedKernel, "step", refuse)


def run(method: str, *, fast: bool, dtype: Any = None, **kw: Any) -> inertia.Trajectory:
    """:func:`test_inplace.run` on torch CPU tensors (``dtype`` a torch dtype, default float64)."""
    name = "float64" if dtype is None else str(dtype).removeprefix("torch.")
    traj: inertia.Trajectory = run_inplace("torch", method, fast=fast, dtype=name, **kw)
    return traj


CASES = [
    (method, mass, friction, sigma)
    for method in ("baoab", "leapfrog", "symplectic_euler", "yoshida4", "euler_maruyama")
    for mass, friction, sigma in (
        ("scalar", "constant", 0.4),
        ("vector", "3/t", 0.4),
        ("vector", "constant", 0.0),
        ("scalar", "none", 0.0),
    )
    if method != "yoshida4" or sigma == 0.0
] + [("baoab", "vector", "none", 0.4)]  # noise without friction


@pytest.mark.parametrize(("method", "mass", "friction", "sigma"), CASES)
def test_fused_equals_generic_loop(
    method: str, mass: str, friction: str, sigma: float, on_cpu: None, no_inplace_step: None
) -> None:
    kw = dict(sigma=sigma, friction=friction, mass=MASSES[mass])
    got, ref = run(method, fast=True, **kw), run(method, fast=False, **kw)
    assert got.success and got.n_saved == 7  # steps 0, 7, ..., 35 and the last, 40
    assert_same_to_rounding(got, ref)


@pytest.mark.parametrize(
    ("save_every", "n_steps", "initial_step"),
    [(4, 24, 0), (3, 20, 0), (20, 45, 0), (1000, 30, 0), (7, 40, 13)],
)
@pytest.mark.parametrize("method", ["baoab", "euler_maruyama"])
def test_chunks_and_saved_steps(
    method: str, save_every: int, n_steps: int, initial_step: int, on_cpu: None, no_inplace_step: None
) -> None:
    """Chunks cut at saved steps: ``save_every`` dividing :data:`fused.MAX_CHUNK` (4), not
    dividing it (3), above it (20: chunks of 8, 8, 4) and beyond the run (1000); a run that
    starts at ``initial_step = 13`` (noise keys and friction schedule from step 13 on)."""
    kw = dict(save_every=save_every, n_steps=n_steps, initial_step=initial_step, friction="3/t")
    got, ref = run(method, fast=True, **kw), run(method, fast=False, **kw)
    assert got.success
    assert_same_to_rounding(got, ref)


def test_only_listed_devices_are_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    args = dict(mass=1.0, friction=dynamics.as_friction(0.5), sigma=0.1, dt=0.1, t0=0.0)
    x = torch.ones((3, LAM.size), dtype=torch.float64)
    plain = kernels.ensemble_kernel("baoab", potentials.Quadratic(LAM), x, x, **args)  # type: ignore[arg-type]
    # CPU tensors: not torch.compile-fused by default (the numba CpuNoisyKernel with numba installed)
    assert plain is not None and not isinstance(plain, fused.FusedKernel)
    monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cpu",))
    kernel = kernels.ensemble_kernel("baoab", potentials.Quadratic(LAM), x, x, **args)  # type: ignore[arg-type]
    assert isinstance(kernel, fused.FusedKernel)
    assert (
        kernels.ensemble_kernel("baoab", potentials.Quadratic(LAM), x.numpy(), x.numpy(), **args) is not None
    )
    assert not isinstance(
        kernels.ensemble_kernel("baoab", potentials.Quadratic(LAM), x.numpy(), x.numpy(), **args),  # type: ignore[arg-type]
        fused.FusedKernel,
    )


# --- divergence ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["baoab", "leapfrog", "euler_maruyama"])
@pytest.mark.parametrize("save_every", [5, 11])
def test_divergence_matches_the_generic_loop(
    method: str, save_every: int, on_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far above the stability bound the ensemble blows up within tens of steps: the fused
    chunk with the blow-up is replayed step by step, giving the generic loop's first bad step,
    status, message and partial rows (non-finite kept). With ``save_every = 11`` chunks are 8
    and 3 steps long, and the blow-up falls inside a chunk."""
    replays: list[int] = []
    step = fused.FusedKernel.step

    def spy(self: Any, n: int) -> int:
        replays.append(n)
        return step(self, n)

    monkeypatch.setattr(fused.FusedKernel, "step", spy)
    lam = np.array([1.0, 400.0])
    theta0 = torch.tensor([[1.0, 0.0], [0.5, 1e-3], [0.0, 2.0]], dtype=torch.float64)
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
        got = inertia.simulate(potentials.Quadratic(lam), theta0, fast=True, **kw)
    with pytest.warns(RuntimeWarning, match="stability bound"):
        ref = inertia.simulate(potentials.Quadratic(lam), theta0, fast=False, **kw)
    assert ref.status == "diverged" and ref.first_bad_step is not None
    assert replays, "the chunk with the blow-up was not replayed step by step"
    assert got.first_bad_step == ref.first_bad_step
    assert_same_to_rounding(got, ref, rtol=1e-10)


# --- power control, float32, fallback, inductor ----------------------------------------------


def test_comparison_detects_a_wrong_fused_coefficient(on_cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused kernel with its noise amplitude ``c2`` off by a relative 1e-6 fails the check."""
    original = fused.o_coefficients

    def wrong(*args: Any) -> tuple[float, float, float]:
        c1, w, c2 = original(*args)
        return c1, w, c2 * (1.0 + 1e-6)

    monkeypatch.setattr(fused, "o_coefficients", wrong)
    got, ref = run("baoab", fast=True), run("baoab", fast=False)
    with pytest.raises(AssertionError, match="max"):
        assert_same_to_rounding(got, ref)


@pytest.mark.parametrize("method", ["baoab", "euler_maruyama"])
def test_float32_agrees_with_the_inplace_kernel(
    method: str, on_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = run(method, fast=True, dtype=torch.float32, friction="3/t")
    monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cuda",))
    ref = run(method, fast=True, dtype=torch.float32, friction="3/t")  # the in-place kernel
    assert got.theta.dtype == torch.float32 and got.kinetic.dtype == np.float32
    assert_same_to_rounding(got, ref, rtol=1e-5)


def test_a_backend_that_fails_falls_back_in_place(
    on_cpu: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fused, "COMPILE_BACKEND", "no_such_backend")
    with caplog.at_level(logging.WARNING, logger="inertia.integrators.fused"):
        got = run("baoab", fast=True)
    assert "stepping in place" in caplog.text
    assert_same_to_rounding(got, run("baoab", fast=False))


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler for inductor"
)
def test_inductor_compiled_kernel(monkeypatch: pytest.MonkeyPatch, no_inplace_step: None) -> None:
    """The default backend (inductor, C++ code generation on CPU) on one case."""
    monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cpu", "cuda"))
    assert fused.COMPILE_BACKEND == "inductor"
    kw = dict(friction="3/t", mass=MASSES["vector"], save_every=8, n_steps=16)
    got, ref = run("baoab", fast=True, **kw), run("baoab", fast=False, **kw)
    assert_same_to_rounding(got, ref)
