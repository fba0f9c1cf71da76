"""TESTING.md item 13: the tracker under ``torch.distributed`` (2 spawned CPU ranks on gloo).

Replicated state (DDP), sharded optimizer state (``ZeroRedundancyOptimizer``, FSDP2
``fully_shard``) give the single-process full-batch values, with exactly one all-reduce per
recorded row and no other collective issued by the library; a NaN on one rank leads both ranks
to the same decision at the same step; only rank 0 writes to sinks.

Spawning is the slow part, so each spawned job runs many scenarios (``tests/_dist_worker.py``)
and the tests below read their results; FSDP2 runs in a job of its own so that a failure there
cannot take the others down. Every job has a hard deadline (the ranks are killed and the test
fails), the process group a 60 s collective timeout, and the module a pytest-timeout.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import _dist_worker as w  # noqa: E402  (after the skips: it imports torch)
from inertia.track import COLUMNS, InertiaTracker  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with gloo unavailable",
    ),
]

NUMERIC = [c for c in COLUMNS if c not in ("step", "finite")]
REPLICATED = ["ddp_sgd", "ddp_adam_every3", "ddp_nesterov_exact", "ddp_sgd_raw", "ddp_adam_clip"]
ZERO = ["zero_sgd", "zero_adam_every3", "zero_adamw_groups"]
FSDP = ["fsdp_adam", "fsdp_sgd_every2"]


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("dist")
    return folder, w.spawn(folder, list(w.SCENARIOS))


@pytest.fixture(scope="module")
def fsdp_job(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return w.spawn(tmp_path_factory.mktemp("fsdp"), list(w.FSDP_SCENARIOS))


@functools.cache
def _reference(name: str) -> dict[str, Any]:
    """The single-process, full-batch run of scenario ``name`` (in this process: no group)."""
    assert not dist.is_initialized()
    return w.run_scenario({**w.SCENARIOS, **w.FSDP_SCENARIOS}[name], rank=None)


def _results(job: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    for r in job:
        if r.get("fsdp2_unavailable"):
            version = torch.__version__
            reason = r["fsdp2_unavailable"]
            pytest.skip(f"FSDP2 fully_shard does not run on CPU/gloo in torch {version}: {reason}")
    return [r[name] for r in job]


def _frame(rows: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS))


def assert_rows_close(got: list[dict[str, Any]], ref: list[dict[str, Any]]) -> None:
    g, r = _frame(got), _frame(ref)
    assert list(g["step"]) == list(r["step"])
    assert list(g["finite"]) == list(r["finite"])
    scale = float(np.nanmax(np.abs(r[["kinetic", "potential", "inertia"]].to_numpy())))
    for col in NUMERIC:
        np.testing.assert_allclose(
            g[col].to_numpy(float), r[col].to_numpy(float), rtol=1e-10, atol=1e-12 * scale, err_msg=col
        )


def assert_ranks_identical(per_rank: list[dict[str, Any]]) -> None:
    """Every rank computed the very same rows from the one all-reduced vector."""
    first = _frame(per_rank[0]["rows"])
    for other in per_rank[1:]:
        got = _frame(other["rows"])
        for col in COLUMNS:  # bit for bit, NaN where NaN
            np.testing.assert_array_equal(got[col].to_numpy(float), first[col].to_numpy(float), err_msg=col)


def assert_one_all_reduce_per_row(per_rank: list[dict[str, Any]]) -> None:
    for res in per_rank:
        recorded = {row["step"] for row in res["rows"]}
        expected = [{"all_reduce": 1} if k in recorded else {} for k in range(len(res["calls"]))]
        assert res["calls"] == expected


# ------------------------------------------------------------------ replicated (DDP)


@pytest.mark.parametrize("name", REPLICATED)
def test_replicated_equals_single_process(main_job: Any, name: str) -> None:
    per_rank = main_job[1]
    ref = _reference(name)["rows"]
    assert all(r[name]["layout"] == "replicated" for r in per_rank)
    assert len(ref) == len(per_rank[0][name]["rows"]) >= 3
    assert all(row["finite"] for row in ref)
    for res in per_rank:
        assert_rows_close(res[name]["rows"], ref)
    assert_ranks_identical([r[name] for r in per_rank])


def test_raw_gradient_is_the_averaged_one(main_job: Any) -> None:
    """Issue 9: the gradient captured at the end of backward is DDP's average (captured before
    the reduction it would differ from the applied one and book a clipping term): unclipped,
    the column is exactly 0; clipped, it is the single process's, and nonzero."""
    for res in main_job[1]:
        rows = res["ddp_sgd_raw"]["rows"]
        assert [r["clipping"] for r in rows[1:]] == [0.0] * (len(rows) - 1)
    clipped = _frame(_reference("ddp_adam_clip")["rows"])["clipping"].iloc[1:]
    assert (clipped.abs() > 0).all()


def test_replicated_values_do_not_scale_with_world_size(main_job: Any) -> None:
    """Each rank holds the full state: summing it over 2 ranks would double ``kinetic``."""
    for name in REPLICATED:
        ref = _frame(_reference(name)["rows"]).iloc[1:]
        got = _frame(main_job[1][0][name]["rows"]).iloc[1:]
        for col in ("kinetic", "potential", "numerical", "friction"):
            nonzero = ref[col].to_numpy(float) != 0.0
            assert nonzero.sum() >= 2
            ratio = got[col].to_numpy(float)[nonzero] / ref[col].to_numpy(float)[nonzero]
            np.testing.assert_allclose(ratio, 1.0, rtol=1e-9, err_msg=f"{name}.{col}")


@pytest.mark.parametrize("name", REPLICATED + ZERO)
def test_one_all_reduce_per_recorded_row(main_job: Any, name: str) -> None:
    """Counted with a wrapper around every c10d and functional collective: calls made with a
    frame of the library on the stack, per ``step() + record()``."""
    assert_one_all_reduce_per_row([r[name] for r in main_job[1]])


def test_one_all_reduce_per_flush(main_job: Any) -> None:
    """With ``flush_every=4`` the rows stay on the device and travel 4 at a time: one
    all-reduce at every 4th recorded row (the rest at ``close``), and the same values."""
    name = "ddp_sgd_flush4"
    ref = _reference(name)["rows"]
    per_rank = [r[name] for r in main_job[1]]
    for res in per_rank:
        assert_rows_close(res["rows"], ref)
        assert len(res["rows"]) == 10
        expected = [{"all_reduce": 1} if (k + 1) % 4 == 0 else {} for k in range(len(res["calls"]))]
        assert res["calls"] == expected
    assert_ranks_identical(per_rank)


# ------------------------------------------------------------------ sharded (ZeRO, FSDP2)


@pytest.mark.parametrize("name", ZERO)
def test_zero_equals_single_process(main_job: Any, name: str) -> None:
    per_rank = [r[name] for r in main_job[1]]
    ref = _reference(name)["rows"]
    assert all(r["layout"] == "sharded" for r in per_rank)
    # the state really is split: no rank owns every parameter
    owned = [sum(r["owned_per_group"]) for r in per_rank]
    assert sum(owned) == len(list(w.model().parameters())) and min(owned) > 0
    for res in per_rank:
        assert_rows_close(res["rows"], ref)
    assert_ranks_identical(per_rank)


def test_zero_rank_owning_nothing_of_a_group(main_job: Any) -> None:
    """The second group has a single tensor, so one rank has an empty group: its hyper-parameters
    (Adam's step count) must come from the rank that owns it."""
    per_rank = [r["zero_adamw_groups"] for r in main_job[1]]
    assert sorted(r["owned_per_group"][1] for r in per_rank) == [0, 1]
    for res in per_rank:
        for row in res["rows"][1:]:
            assert all(math.isfinite(row[c]) for c in ("dt", "kinetic", "friction", "metric", "inertia"))


@pytest.mark.parametrize("name", FSDP)
def test_fsdp2_equals_single_process(fsdp_job: Any, name: str) -> None:
    per_rank = _results(fsdp_job, name)
    ref = _reference(name)["rows"]
    assert all(r["layout"] == "sharded" for r in per_rank)
    for res in per_rank:
        assert_rows_close(res["rows"], ref)
    assert_ranks_identical(per_rank)
    assert_one_all_reduce_per_row(per_rank)


def test_dtensor_replicated_over_the_world_is_refused(fsdp_job: Any) -> None:
    _results(fsdp_job, "fsdp_adam")  # skip where FSDP2 does not run
    for res in fsdp_job:
        assert res["replicated_dtensor"] is not None
        assert "not sharded once over the world" in res["replicated_dtensor"]


# ------------------------------------------------------------------ NaN on one rank, sinks


def test_nan_loss_on_one_rank_raises_on_every_rank(main_job: Any) -> None:
    per_rank = [r["nan_loss_raise"] for r in main_job[1]]
    assert [r["raised_at"] for r in per_rank] == [5, 5]
    for res in per_rank:
        last = res["rows"][-1]
        assert last["step"] == 5 and not last["finite"] and math.isnan(last["potential"])
    assert_ranks_identical(per_rank)


def test_nan_state_on_one_zero_shard_stops_every_rank(main_job: Any) -> None:
    """Rank 1 corrupts its Adam state before step 5; that step's state is read into row 6
    (row ``k`` holds ``K_k``, the velocity step ``k - 1`` produced)."""
    per_rank = [r["nan_state_stop"] for r in main_job[1]]
    assert [r["stopped_at"] for r in per_rank] == [6, 6]
    for res in per_rank:
        assert [row["finite"] for row in res["rows"]] == [True] * 6 + [False]
        assert math.isnan(res["rows"][-1]["kinetic"])  # recorded as NaN, never as 0
        assert all(c == {} for c in res["calls"][7:])  # stopped: no more collectives
    assert_ranks_identical(per_rank)


def test_nan_loss_on_one_rank_is_flagged_alike(main_job: Any) -> None:
    per_rank = [r["nan_loss_flag"] for r in main_job[1]]
    flags = [[row["finite"] for row in r["rows"]] for r in per_rank]
    assert flags[0] == flags[1]
    assert flags[0].index(False) == 3 and len(flags[0]) == 8
    assert_ranks_identical(per_rank)


def test_nan_state_on_one_fsdp2_shard_raises_on_every_rank(fsdp_job: Any) -> None:
    """Rank 1 corrupts its momentum shard before step 4: row 5 (``K_5``) is non-finite."""
    per_rank = _results(fsdp_job, "fsdp_nan_state_raise")
    assert [r["raised_at"] for r in per_rank] == [5, 5]
    assert [row["finite"] for row in per_rank[0]["rows"]] == [True] * 5 + [False]
    assert_ranks_identical(per_rank)


def test_only_rank_0_writes_to_sinks(main_job: Any) -> None:
    folder, per_rank = main_job
    assert not (folder / "sink-rank1.jsonl").exists()
    lines = (folder / "sink-rank0.jsonl").read_text().splitlines()
    assert len(lines) == len(per_rank[0]["ddp_sgd"]["rows"]) == 8


# ------------------------------------------------------------------ front door (no spawn)


@pytest.mark.parametrize("layout", ["replicated", "sharded"])
def test_distributed_layout_needs_a_process_group(layout: str) -> None:
    assert not dist.is_initialized()
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=f"layout='{layout}' needs an initialised"):
        InertiaTracker(torch.optim.SGD([p], lr=0.1), layout=layout)
