"""Spawned ranks for ``test_curvature_distributed.py``: Hessian eigenvalues under DDP (gloo, CPU).

Each of the 2 ranks holds half of a full batch (``_dist_worker.data``); the mean loss of the
full batch is the average of the ranks' mean losses, so the averaged Hessian-vector product is
the full-batch one and the eigenvalues must equal the single-process values (float64).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import _dist_worker as w

WORLD = 2


def problem(rank: int | None) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = w.data(1)
    x, y = x[0], y[0]
    if rank is not None:
        half = w.BATCH // WORLD
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
    return w.model(), x, y


def run(rank: int | None) -> dict[str, Any]:
    """Top eigenvalues of one rank (``rank``) or of the full batch (``None``), with the
    library's collectives counted per product."""
    from inertia import curvature

    net, x, y = problem(rank)
    mse = torch.nn.functional.mse_loss
    out: dict[str, Any] = {}
    wrapped: Any = net
    if rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(net)
    loss = curvature.model_loss(wrapped, mse, (x, y))
    op = curvature.HessianOperator(loss, list(net.parameters()))
    spec = curvature.lanczos(op.matvec, op.n, 3, tol=1e-12, max_iter=200)
    out["lanczos"] = spec.values.tolist()
    out["n_hvp"] = op.n_hvp
    out["n_collectives"] = op.n_collectives
    # a plain closure over the local module: averaged over the world by default
    op2 = curvature.HessianOperator(lambda: mse(net(x), y), list(net.parameters()))
    out["power"] = curvature.power_iteration(op2.matvec, op2.n, 1, tol=1e-12, max_iter=2000).values.tolist()
    out["n_hvp"] += op2.n_hvp
    out["n_collectives"] += op2.n_collectives
    # training still works through DDP afterwards (its reducer never saw the second backward)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    mse(wrapped(x), y).backward()
    opt.step()
    out["trained"] = True
    out["tracker"] = track(rank)
    return out


def track(rank: int | None) -> dict[str, Any]:
    """The tracker's sharpness column over a short full-batch SGD run (DDP when ``rank`` is set;
    the closure calls the DDP-wrapped model)."""
    from inertia.track import InertiaTracker

    net, x, y = problem(rank)
    model: Any = net
    if rank is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = InertiaTracker(opt, sharpness_every=2)
    mse = torch.nn.functional.mse_loss
    for _ in range(7):
        opt.zero_grad()
        loss = mse(model(x), y)
        loss.backward()
        opt.step()
        tracker.record(loss, lambda: mse(model(x), y))
    tracker.close()
    return {
        "sharpness": [r["sharpness"] for r in tracker.rows],
        "n_rows": len(tracker.rows),
        "n_hvp": sum(r["n_hvp"] for r in tracker.rows),
    }


def _fsdp2_refusal() -> str | None:
    from inertia import curvature

    try:
        from torch.distributed.fsdp import fully_shard

        net, x, y = problem(0)
        fully_shard(net)
    except Exception as exc:  # FSDP2 not available here
        return f"unavailable: {exc}"
    try:
        curvature.top_eigenvalues(lambda: torch.nn.functional.mse_loss(net(x), y), list(net.parameters()))
    except NotImplementedError as exc:
        return str(exc)
    return None


def _rank_main(rank: int, folder: str) -> None:
    import torch.distributed as dist

    out = w.init_gloo(rank, folder, WORLD)
    counts = w.count_collectives()
    results: dict[str, Any] = {}
    try:
        results = run(rank)
        results["counted"] = dict(counts)
        results["fsdp2"] = _fsdp2_refusal()
    finally:
        (out / f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()


def spawn(folder: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Run :func:`_rank_main` on ``WORLD`` spawned ranks; kill them and fail after ``timeout``."""
    w.start_ranks(_rank_main, (str(folder),), WORLD, timeout)
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(WORLD)]
