"""The noise-free numba chunk kernel (:mod:`inertia.integrators.fused_cpu`) against the reference (issue 4).

* float64: every method x NumPy/torch x scalar/vector mass x constant/``3/t``/no friction at
  ``sigma = 0`` gives the generic loop's ``Trajectory`` (``fast=False``) to rounding error, and
  only the compiled chunks ran (the in-place step never did);
* chunks cut at the chunk cap and the run's end only, the saved steps recorded inside them
  (``save_every`` dividing the chunk, not dividing it, above it, beyond the run) and
  ``initial_step > 0``;
* ``theta`` and ``v`` equal the NumPy in-place kernel's bit for bit (float64 and float32), and the
  energies agree with it to rounding; the result does not depend on numba's threads or the block
  size;
* divergence: the same first bad step, status, message and partial rows as the generic loop (the
  chunk with the blow-up is replayed step by step);
* dispatch: never for ``sigma > 0`` (then
  :class:`~inertia.integrators.fused_cpu.CpuNoisyKernel`, see ``test_fused_cpu_noise.py``), never
  where the CUDA fused kernel applies; without numba the in-place kernel runs and gives the same
  numbers;
* power control: a ``c1`` off by a relative 1e-6 fails the comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import inertia
from inertia import dynamics, kernels, potentials
from inertia.integrators import compiled, fused, fused_cpu, inplace

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

from test_inplace import FRICTIONS, LAM, MASSES, METHODS, assert_same_to_rounding, run  # noqa: E402


@pytest.fixture
def no_inplace_step(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fail if the in-place step runs; return the list of chunk lengths the kernel stepped."""

    def refuse(self: Any, n: int) -> int:
        raise AssertionError("the in-place step ran")

    chunks: list[int] = []
    steps = fused_cpu.CpuFusedKernel.steps

    def spy(self: Any, n0: int, k: int) -> Any:
        chunks.append(k)
        return steps(self, n0, k)

    monkeypatch.setattr(fused_cpu.CpuFusedKernel, "step", refuse)
    monkeypatch.setattr(fused_cpu.CpuFusedKernel, "steps", spy)
    return chunks


def in_place(monkeypatch: pytest.MonkeyPatch, *args: Any, **kw: Any) -> Any:
    """:func:`test_inplace.run` with numba reported missing (the plain in-place kernel)."""
    with monkeypatch.context() as m:
        m.setattr(compiled, "available", lambda: False)
        return run(*args, **kw)


CASES = [(m, b, mass, fr) for m in METHODS for b in ("numpy", "torch") for mass in MASSES for fr in FRICTIONS]


@pytest.mark.parametrize(("method", "backend", "mass", "friction"), CASES)
def test_chunks_equal_the_generic_loop(
    method: str, backend: str, mass: str, friction: str, no_inplace_step: list[int]
) -> None:
    kw = dict(sigma=0.0, friction=friction, mass=MASSES[mass])
    got = run(backend, method, fast=True, **kw)
    assert no_inplace_step == [40]  # one chunk: the saved steps 7, 14, ..., 35 are recorded inside it
    ref = run(backend, method, fast=False, **kw)
    assert got.success and got.n_saved == 7
    assert_same_to_rounding(got, ref)


@pytest.mark.parametrize(
    ("save_every", "n_steps", "initial_step", "max_chunk", "chunks"),
    [
        (4, 24, 0, 8, [8] * 3),
        (3, 20, 0, 8, [8, 8, 4]),
        (20, 45, 0, 8, [8] * 5 + [5]),
        (1000, 30, 0, 8, [8, 8, 8, 6]),
        (7, 40, 13, 8, [8] * 5),
        (1000, 300, 0, fused_cpu.MAX_CHUNK, [128, 128, 44]),
    ],
)
@pytest.mark.parametrize("method", ["baoab", "yoshida4", "euler"])
def test_chunks_and_saved_steps(
    method: str,
    save_every: int,
    n_steps: int,
    initial_step: int,
    max_chunk: int,
    chunks: list[int],
    monkeypatch: pytest.MonkeyPatch,
    no_inplace_step: list[int],
) -> None:
    """Chunks cut at the chunk cap and the end of the run only (the saved steps inside a chunk
    are recorded by it, issue 11); a run from ``initial_step = 13`` (the friction schedule from
    step 13 on)."""
    monkeypatch.setattr(fused_cpu, "MAX_CHUNK", max_chunk)
    kw = dict(sigma=0.0, save_every=save_every, n_steps=n_steps, initial_step=initial_step, friction="3/t")
    got = run("numpy", method, fast=True, **kw)
    assert no_inplace_step == chunks
    ref = run("numpy", method, fast=False, **kw)
    assert got.success
    assert_same_to_rounding(got, ref)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["baoab", "leapfrog", "symplectic_euler", "yoshida4", "euler"])
def test_state_equals_the_inplace_kernel_bit_for_bit(
    method: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The element updates are the in-place kernel's, in its order: the final ``theta`` and ``v``
    are the same bits; the energies (sums in another order) agree to rounding."""
    kw = dict(sigma=0.0, friction="3/t", mass=MASSES["vector"], dtype=dtype, n_paths=37)
    got = run("numpy", method, fast=True, **kw)
    ref = in_place(monkeypatch, "numpy", method, fast=True, **kw)
    assert got.theta.dtype == np.dtype(dtype) and got.kinetic.dtype == np.dtype(dtype)
    assert np.array_equal(got.theta, ref.theta) and np.array_equal(got.v, ref.v)
    assert_same_to_rounding(got, ref, rtol=1e-12 if dtype == "float64" else 1e-5)


def test_float32_torch_agrees_with_the_inplace_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(sigma=0.0, friction="constant", mass=MASSES["scalar"], dtype="float32")
    got = run("torch", "baoab", fast=True, **kw)
    ref = in_place(monkeypatch, "torch", "baoab", fast=True, **kw)
    assert got.theta.dtype == torch.float32
    assert_same_to_rounding(got, ref, rtol=1e-5)


def test_threads_and_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths are independent: one thread or two, blocks of 1 path or many (``n_paths`` not a
    multiple of the block), the same bits."""
    import numba

    kw = dict(sigma=0.0, friction="3/t", n_paths=53)
    ref = run("numpy", "baoab", fast=True, **kw)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run("numpy", "baoab", fast=True, **kw)
    finally:
        numba.set_num_threads(threads)
    monkeypatch.setattr(fused_cpu, "BLOCK_BYTES", 8)  # one path per block
    small = run("numpy", "baoab", fast=True, **kw)
    for other in (one, small):
        for name in ("theta", "v", "kinetic", "potential", "dissipated"):
            assert np.array_equal(getattr(other, name), getattr(ref, name)), name


# --- divergence ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("method", ["baoab", "leapfrog", "euler"])
@pytest.mark.parametrize("save_every", [5, 1000])
def test_divergence_matches_the_generic_loop(
    method: str, backend: str, save_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far above the stability bound the ensemble blows up within tens of steps: the chunk with
    the blow-up is replayed step by step, giving the generic loop's first bad step, status,
    message and partial rows (non-finite kept)."""
    replays: list[int] = []
    step = fused_cpu.CpuFusedKernel.step

    def spy(self: Any, n: int) -> int:
        replays.append(n)
        return step(self, n)

    monkeypatch.setattr(fused_cpu.CpuFusedKernel, "step", spy)
    lam = np.array([1.0, 400.0])
    theta0 = np.array([[1.0, 0.0], [0.5, 1e-3], [0.0, 2.0]])
    if backend == "torch":
        theta0 = torch.as_tensor(theta0)
    kw = dict(gamma=0.3, dt=0.5, n_steps=400, method=method, save_every=save_every, on_divergence="stop")
    with pytest.warns(RuntimeWarning, match="stability bound"):
        got = inertia.simulate(potentials.Quadratic(lam), theta0, fast=True, **kw)
    with pytest.warns(RuntimeWarning, match="stability bound"):
        ref = inertia.simulate(potentials.Quadratic(lam), theta0, fast=False, **kw)
    assert ref.status == "diverged" and ref.first_bad_step is not None
    assert replays, "the chunk with the blow-up was not replayed step by step"
    assert got.first_bad_step == ref.first_bad_step
    assert_same_to_rounding(got, ref, rtol=1e-10)


# --- dispatch, fallback, power control -------------------------------------------------------


def kernel_for(x: Any, sigma: float = 0.0) -> Any:
    args = dict(mass=1.0, friction=dynamics.as_friction(0.5), sigma=sigma, dt=0.1, t0=0.0)
    return kernels.ensemble_kernel("baoab", potentials.Quadratic(LAM), x, x, **args)  # type: ignore[arg-type]


def test_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.ones((3, LAM.size))
    for arr in (x, x.astype(np.float32), torch.as_tensor(x), torch.as_tensor(x, dtype=torch.float32)):
        assert type(kernel_for(arr)) is fused_cpu.CpuFusedKernel
        assert type(kernel_for(arr, sigma=0.1)) is fused_cpu.CpuNoisyKernel  # test_fused_cpu_noise.py
    monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cpu", "cuda"))  # as on CUDA
    assert type(kernel_for(torch.as_tensor(x))) is fused.FusedKernel
    assert type(kernel_for(x)) is fused_cpu.CpuFusedKernel
    monkeypatch.setattr(compiled, "available", lambda: False)
    assert type(kernel_for(x)) is inplace.InplaceKernel
    with pytest.raises(ValueError, match="noise-free"):
        fused_cpu.CpuFusedKernel(
            "baoab", LAM, x, x, mass=1.0, friction=dynamics.as_friction(0.5), sigma=0.1, dt=0.1, t0=0.0
        )


def test_slots() -> None:
    """Sub-steps packed into ``(B, A, O)`` slots, in order."""
    assert fused_cpu.slots(list("BAOAB")) == [[0, 1, 2], [-1, 3, -1], [4, -1, -1]]
    assert fused_cpu.slots(list("OBABO")) == [[-1, -1, 0], [1, 2, -1], [3, -1, 4]]
    assert fused_cpu.slots(list("BAB")) == [[0, 1, -1], [2, -1, -1]]


def test_comparison_detects_a_wrong_coefficient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunk kernel with its friction factor ``c1`` off by a relative 1e-6 fails the check."""
    original = fused_cpu.o_coefficients

    def wrong(*args: Any) -> tuple[float, float, float]:
        c1, w, c2 = original(*args)
        return c1 * (1.0 + 1e-6), w, c2

    monkeypatch.setattr(fused_cpu, "o_coefficients", wrong)
    kw = dict(sigma=0.0, friction="constant")
    got, ref = run("numpy", "baoab", fast=True, **kw), run("numpy", "baoab", fast=False, **kw)
    with pytest.raises(AssertionError, match="max"):
        assert_same_to_rounding(got, ref)
