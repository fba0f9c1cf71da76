"""``simulate(distributed=True)`` over 2 spawned gloo ranks (issue 11, item 5).

The paths are split in contiguous slices (9 paths: ranks 0 and 1 take 4 and 5); each rank's
noise is keyed by the global path index, so on CPU:

* every rank's recorded energies (gathered once, at the end) equal the single-process run's bit
  for bit, for NumPy and torch, float64 and float32, the numba, in-place and generic kernels,
  with noise and without;
* each rank's final ``theta`` and ``v`` are its slice of the single-process final state, bit for
  bit, and ``config["distributed"]`` names the slice;
* when one rank's paths blow up, every rank reports the single-process status and first bad
  step, and the rows before it equal the single-process rows; at the (unsaved) bad step the
  rank that did not diverge has no row (NaN columns, documented);
* without a process group, ``distributed=True`` is refused with a clear message.

Spawning is the slow part, so one spawned job runs every scenario (``tests/_sim_dist_worker.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import potentials

pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import _sim_dist_worker as w  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

SLICES = [(0, 4), (4, 9)]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    return w.spawn(Path(tmp_path_factory.mktemp("simdist")))


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The single-process runs."""
    return {name: w.run(name, distributed=False) for name in w.SCENARIOS}


SUCCESS = [n for n in w.SCENARIOS if n != "diverges"]


@pytest.mark.parametrize("name", SUCCESS)
def test_union_of_the_ranks_is_the_single_process_run(name: str, job: Any, reference: dict[str, Any]) -> None:
    ref = reference[name]
    assert ref.success
    for rank, (arrays, meta) in enumerate(job):
        for field in ("step", "kinetic", "potential", "dissipated"):
            np.testing.assert_array_equal(
                arrays[f"{name}.{field}"], getattr(ref, field), err_msg=field, strict=True
            )
        lo, hi = SLICES[rank]
        np.testing.assert_array_equal(arrays[f"{name}.theta"], inertia._backend.to_numpy(ref.theta)[lo:hi])
        np.testing.assert_array_equal(arrays[f"{name}.v"], inertia._backend.to_numpy(ref.v)[lo:hi])
        m = meta[name]
        assert (m["status"], m["first_bad_step"], m["n_steps"], m["n_grad_evals"]) == (
            "success",
            None,
            ref.n_steps,
            ref.n_grad_evals,
        )
        assert m["config"]["distributed"] == {"rank": rank, "world_size": 2, "paths": [lo, hi]}
        assert m["config"]["n_paths"] == w.N_PATHS and m["config"]["kernel"] == ref.config["kernel"]


def test_the_scenarios_cover_the_kernels(reference: dict[str, Any]) -> None:
    kernels = {reference[n].config["kernel"] for n in SUCCESS}
    assert {"inplace", "functional"} <= kernels
    assert kernels & {"numba_noisy", "fused_cpu"} or not inertia.kernels.compiled.available()


def test_divergence_on_one_rank_is_reported_on_every_rank(job: Any, reference: dict[str, Any]) -> None:
    ref = reference["diverges"]
    assert ref.status == "diverged" and ref.first_bad_step % 50 != 0  # an unsaved bad step
    for arrays, meta in job:
        m = meta["diverges"]
        assert (m["status"], m["first_bad_step"]) == ("diverged", ref.first_bad_step)
        np.testing.assert_array_equal(arrays["diverges.step"], ref.step)
        kin = arrays["diverges.kinetic"]
        np.testing.assert_array_equal(kin[:-1], ref.kinetic[:-1])
        np.testing.assert_array_equal(kin[-1, 4:], ref.kinetic[-1, 4:])  # the diverged rank's row
        assert np.isnan(kin[-1, :4]).all()  # rank 0 was still finite there: no row


def test_a_plain_run_on_a_rank_is_unaffected(job: Any) -> None:
    assert all(meta["plain_run_on_a_rank"] == "ok" for _, meta in job)


def test_distributed_needs_a_process_group() -> None:
    with pytest.raises(ValueError, match=r"initialised torch\.distributed process group"):
        inertia.simulate(potentials.Quadratic([1.0]), [[1.0], [2.0]], dt=0.1, n_steps=2, distributed=True)


@pytest.mark.parametrize("dtype", ["numpy-float64", "numpy-float32", "torch-float32", "torch-float64"])
@pytest.mark.parametrize("row_size", [3, 100])
def test_a_slice_draws_the_rows_of_the_whole_draw(dtype: str, row_size: int) -> None:
    """``normal_into(..., row_offset=lo)`` fills rows ``lo ...`` of the whole draw bit for bit,
    for slices starting at a block boundary, inside a block, and ending in the last partial one."""
    import torch

    from inertia._backend import block_rows, normal_into

    backend, name = dtype.split("-")
    n = 3 * block_rows(row_size) // 2 + 7

    def empty(rows: int) -> Any:
        if backend == "numpy":
            return np.empty((rows, row_size), dtype=name)
        return torch.empty((rows, row_size), dtype=getattr(torch, name))

    whole = np.asarray(normal_into((1, 2, 3), empty(n), threads=2))
    for lo, hi in ((0, n // 2), (n // 2, n), (5, n - 3), (n - 1, n), (block_rows(row_size), n)):
        part = np.asarray(normal_into((1, 2, 3), empty(hi - lo), row_offset=lo, threads=2))
        np.testing.assert_array_equal(part, whole[lo:hi], err_msg=f"rows {lo}:{hi}")
