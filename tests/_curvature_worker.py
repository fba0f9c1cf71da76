"""Spawned ranks for ``test_curvature_distributed.py``: Hessian eigenvalues under DDP (gloo, CPU).

Each of the 2 ranks holds half of a full batch (``_dist_worker.data``); the mean loss of the
full batch is the average of the ranks' mean losses, so the averaged Hessian-vector product is
the full-batch one and the eigenvalues must equal the single-process values (float64).
"""

from __future__ import annotations

import json
import traceback
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


def track(rank: int | None, wrap: str = "ddp", opt_name: str = "sgd") -> dict[str, Any]:
    """The tracker's sharpness column over a short full-batch run (``wrap`` "ddp" or "fsdp" when
    ``rank`` is set; the closure calls the wrapped model)."""
    from inertia.track import InertiaTracker

    net, x, y = problem(rank)
    model: Any = net if rank is None else wrap_model(net, wrap)
    if opt_name == "sgd":
        opt: Any = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
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
        "curvature_quadratic": [r["curvature_quadratic"] for r in tracker.rows],
        "n_rows": len(tracker.rows),
        "n_hvp": sum(r["n_hvp"] for r in tracker.rows),
    }


def wrap_model(net: torch.nn.Module, wrap: str) -> Any:
    """DDP, or FSDP2 with each ``Linear`` and the whole net sharded (``fully_shard``)."""
    if wrap == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net)
    from torch.distributed.fsdp import fully_shard

    for m in net:
        if isinstance(m, torch.nn.Linear):
            fully_shard(m)
    fully_shard(net)
    return net


def adam_steps(net: Any, x: torch.Tensor, y: torch.Tensor, n: int = 3) -> torch.optim.Adam:
    """``n`` full-batch Adam steps: an optimizer with a state (FSDP2: sharded DTensors)."""
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(n):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return opt


def dense_reference() -> dict[str, Any]:
    """The single-process, full-batch references: eigenvalues of the dense Hessian
    (``torch.autograd.functional.hessian``, ``numpy.linalg.eigvalsh``) at the initial parameters,
    and those of ``P^{-1/2} H P^{-1/2}`` after :func:`adam_steps` (``P`` read by
    ``curvature.preconditioner``)."""
    import numpy as np

    from inertia import curvature

    net, x, y = problem(None)

    def dense() -> np.ndarray:
        names = [n for n, _ in net.named_parameters()]
        params = [p.detach() for p in net.parameters()]
        sizes = [p.numel() for p in params]

        def loss(flat: torch.Tensor) -> torch.Tensor:
            ps = {n: c.view_as(p) for n, c, p in zip(names, flat.split(sizes), params, strict=True)}
            return torch.nn.functional.mse_loss(torch.func.functional_call(net, ps, (x,)), y)

        return torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params])).numpy()

    h0 = dense()
    opt = adam_steps(net, x, y)
    h = dense()
    s = 1.0 / np.sqrt(torch.cat([d.reshape(-1) for d in curvature.preconditioner(opt)]).numpy())
    return {
        "plain": np.linalg.eigvalsh(h0)[::-1].tolist(),
        "adam": np.linalg.eigvalsh(s[:, None] * h * s[None, :])[::-1].tolist(),
    }


def _fsdp_groups(net: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [
        g for m in net.modules() if isinstance(m, FSDPModule) for g in m._get_fsdp_state()._fsdp_param_groups
    ]


def run_fsdp(rank: int, counts: Any) -> dict[str, Any]:
    """Rank ``rank`` under FSDP2: top eigenvalues (double backward, forward-over-reverse,
    power, without the all-reduce, preconditioned by a sharded Adam state) and the tracker's
    sharpness, with the library's collectives counted per section (``<section>_calls``)."""
    from inertia import curvature

    out: dict[str, Any] = {}
    mse = torch.nn.functional.mse_loss

    def counted(key: str, fn: Any) -> Any:
        before = dict(counts)
        res = fn()
        out[key + "_calls"] = {k: v - before.get(k, 0) for k, v in counts.items() if v != before.get(k, 0)}
        return res

    net, x, y = problem(rank)
    wrap_model(net, "fsdp")
    params = list(net.parameters())
    out["dtensor"] = all(type(p).__name__ == "DTensor" for p in params)
    out["n_groups"] = len([g for g in _fsdp_groups(net) if g.fsdp_params])

    def eig() -> Any:
        op = curvature.HessianOperator(curvature.model_loss(net, mse, (x, y)), params)
        spec = curvature.lanczos(op.matvec, op.n, 3, tol=1e-12, max_iter=200)
        op.release()
        return {"values": spec.values.tolist(), "n_hvp": op.n_hvp, "n_collectives": op.n_collectives}

    out["lanczos"] = counted("lanczos", eig)
    try:
        curvature.HessianOperator(curvature.model_loss(net, mse, (x, y)), params, mode="forward_over_reverse")
    except NotImplementedError as exc:
        out["forward_over_reverse"] = str(exc)
    out["resharded"] = all(not g.is_unsharded for g in _fsdp_groups(net))
    # a plain closure through the FSDP2 module, power iteration
    out["power"] = counted(
        "power",
        lambda: curvature.top_eigenvalues(
            lambda: mse(net(x), y), params, k=1, method="power", tol=1e-12, max_iter=2000
        ).tolist(),
    )
    # power control: without the all-reduce each rank has its own half batch's Hessian
    out["no_all_reduce"] = curvature.top_eigenvalues(
        lambda: mse(net(x), y), params, k=3, tol=1e-12, max_iter=200, process_group=False
    ).tolist()
    # training after the products: FSDP2's gradients (reduce-scatter) are the full-batch ones
    opt = adam_steps(net, x, y)
    out["preconditioned"] = counted(
        "preconditioned",
        lambda: curvature.top_eigenvalues(
            curvature.model_loss(net, mse, (x, y)), params, k=2, tol=1e-12, max_iter=200, preconditioner=opt
        ).tolist(),
    )
    # a DTensor that no fully_shard module manages (tensor parallelism) is refused
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor

    mesh = init_device_mesh("cpu", (WORLD,))
    q = torch.nn.Parameter(distribute_tensor(torch.ones(4, dtype=torch.float64), mesh, [Replicate()]))
    try:
        curvature.top_eigenvalues(lambda: (q**4).sum(), [q])
    except NotImplementedError as exc:
        out["foreign_dtensor"] = str(exc)
    out["tracker_sgd"] = counted("tracker_sgd", lambda: track(rank, "fsdp", "sgd"))
    out["tracker_adam"] = counted("tracker_adam", lambda: track(rank, "fsdp", "adam"))
    return out


def _rank_main(rank: int, folder: str) -> None:
    import torch.distributed as dist

    out = w.init_gloo(rank, folder, WORLD)
    counts = w.count_collectives()
    results: dict[str, Any] = {}
    try:
        results = run(rank)
        results["counted"] = dict(counts)
        results["fsdp2_unavailable"] = w._probe_fsdp2()
        if not results["fsdp2_unavailable"]:
            try:
                results["fsdp"] = run_fsdp(rank, counts)
            except Exception:  # reported by the test, after the DDP results
                results["fsdp_error"] = traceback.format_exc()
    finally:
        (out / f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()


def spawn(folder: Path, timeout: float = 180.0) -> list[dict[str, Any]]:
    """Run :func:`_rank_main` on ``WORLD`` spawned ranks; kill them and fail after ``timeout``."""
    w.start_ranks(_rank_main, (str(folder),), WORLD, timeout)
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(WORLD)]
