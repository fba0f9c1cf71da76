"""Issue 12 item 1: Hessian eigenvalues under DDP and FSDP2 (2 spawned CPU ranks on gloo).

The averaged Hessian-vector products of the two half-batches equal the full-batch product, so
both ranks must return the single-process eigenvalues, with exactly one all-reduce per product
issued by the library. Under FSDP2 (``fully_shard``, DTensor parameters) the eigenvalues (plain,
preconditioned by a sharded Adam state, and the tracker's ``sharpness_every``) must equal the
dense Hessian of the full batch; besides the one all-reduce per product the only collectives
are FSDP2's own all-gather of each parameter group once per operator and one
``all_gather_into_tensor`` per gathered set of DTensors (``P``, the step ``dtheta``).
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


def rel(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.fixture(scope="module")
def fsdp(job: list[dict]) -> list[dict]:
    if job[0].get("fsdp2_unavailable"):
        pytest.skip(f"FSDP2 does not train on this build's CPU/gloo: {job[0]['fsdp2_unavailable']}")
    for r in job:
        assert "fsdp_error" not in r, r.get("fsdp_error")
    return [r["fsdp"] for r in job]


@pytest.fixture(scope="module")
def dense() -> dict:
    return cw.dense_reference()


def test_fsdp2_equals_dense_hessian_with_one_all_reduce_per_product(fsdp: list[dict], dense: dict) -> None:
    for f in fsdp:
        assert f["dtensor"] and f["n_groups"] == 3
        assert rel(f["lanczos"]["values"], dense["plain"][:3]) < 1e-9
        assert rel(f["power"], dense["plain"][:1]) < 1e-9
        # one all-reduce per product; FSDP2's all-gather once per parameter group, not per product
        n = f["lanczos"]["n_hvp"]
        assert f["lanczos"]["n_collectives"] == n
        assert f["lanczos_calls"] == {"all_reduce": n, "all_gather_single": 3}
        assert f["power_calls"]["all_gather_single"] == 3 and set(f["power_calls"]) == {
            "all_reduce",
            "all_gather_single",
        }
        assert f["resharded"]  # the gathered parameters are freed after the products
        assert "double_backward" in f["forward_over_reverse"]
        assert "no FSDP2 (fully_shard) module manages" in f["foreign_dtensor"]
        # power control: without the all-reduce each rank sees only its half batch
        assert rel(f["no_all_reduce"], dense["plain"][:3]) > 1e-3
    # ... and a sum instead of a mean over the 2 ranks is twice the values: outside the tolerance
    assert rel(2.0 * np.asarray(fsdp[0]["lanczos"]["values"]), dense["plain"][:3]) > 1e-3


def test_fsdp2_preconditioned_by_sharded_adam_equals_dense(fsdp: list[dict], dense: dict) -> None:
    for f in fsdp:
        # P read from the sharded Adam state, gathered by one all_gather_into_tensor
        assert rel(f["preconditioned"], dense["adam"][:2]) < 1e-9
        assert f["preconditioned_calls"]["all_gather_into_tensor"] == 1
        assert f["preconditioned_calls"]["all_gather_single"] == 3
    # power control: the unpreconditioned spectrum is a different one
    assert rel(dense["plain"][:2], dense["adam"][:2]) > 1e-1


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fsdp2_tracker_sharpness_equals_single_process(fsdp: list[dict], opt: str) -> None:
    ref = cw.track(None, opt_name=opt)
    n_measures = 3  # rows 2, 4, 6 of 7
    for f in fsdp:
        t = f[f"tracker_{opt}"]
        np.testing.assert_allclose(t["sharpness"], ref["sharpness"], rtol=1e-6)
        np.testing.assert_allclose(t["curvature_quadratic"], ref["curvature_quadratic"], rtol=1e-6)
        assert np.isfinite(t["sharpness"][2::2]).all()
        calls = f[f"tracker_{opt}_calls"]
        # one all-reduce per row (ledger) and per product; per measurement one gather of dtheta
        # (and of P for Adam) and FSDP2's all-gather of its 3 groups
        assert calls == {
            "all_reduce": t["n_rows"] + t["n_hvp"],
            "all_gather_into_tensor": n_measures * (2 if opt == "adam" else 1),
            "all_gather_single": 3 * n_measures,
        }
