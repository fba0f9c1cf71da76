"""Issue 12 item 1: Hessian eigenvalues under DDP (2 spawned CPU ranks on gloo).

The averaged Hessian-vector products of the two half-batches equal the full-batch product, so
both ranks must return the single-process eigenvalues, with exactly one all-reduce per product
issued by the library; FSDP2 (DTensor) parameters are refused with a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import _curvature_worker as cw  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with gloo unavailable",
    ),
]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return cw.spawn(tmp_path_factory.mktemp("curv"))


def test_ddp_equals_single_process_with_one_all_reduce_per_product(job: list[dict]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = cw.run(None)
    finally:
        torch.set_num_threads(threads)
    assert ref["n_collectives"] == 0
    for r in job:
        np.testing.assert_allclose(r["lanczos"], ref["lanczos"], rtol=1e-9)
        np.testing.assert_allclose(r["power"], ref["power"], rtol=1e-9)
        assert r["n_collectives"] == r["n_hvp"]
        assert r["trained"]
        np.testing.assert_allclose(r["tracker"]["sharpness"], ref["tracker"]["sharpness"], rtol=1e-6)
        assert np.isfinite(r["tracker"]["sharpness"][2::2]).all()
    # the library's collectives over the whole job: one all_reduce per product, nothing else
    for r in job:  # plus the tracker's: one per row (its ledger) and one per product (sharpness)
        t = r["tracker"]
        assert r["counted"] == {"all_reduce": r["n_hvp"] + t["n_rows"] + t["n_hvp"]}
    # power control: one rank's half batch alone is a different Hessian
    half = cw.problem(0)
    net, x, y = half
    from inertia import curvature

    alone = curvature.top_eigenvalues(
        lambda: torch.nn.functional.mse_loss(net(x), y),
        list(net.parameters()),
        k=3,
        tol=1e-12,
        process_group=False,
    )
    assert np.max(np.abs(alone - np.asarray(ref["lanczos"])) / np.abs(ref["lanczos"])) > 1e-3


def test_fsdp2_is_refused_clearly(job: list[dict]) -> None:
    msg = job[0]["fsdp2"]
    if msg and msg.startswith("unavailable"):
        pytest.skip(msg)
    assert msg is not None and "FSDP2" in msg and "not supported" in msg
