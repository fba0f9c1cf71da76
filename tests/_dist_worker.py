"""Spawned ranks for ``test_track_distributed.py`` (imported by the test and by each child).

One training scenario is a plain dict (``SCENARIOS`` below); :func:`run_scenario` trains it
either as one process on the full batch (``rank=None``: the reference) or as one rank of a
``torch.distributed`` job on its half of each batch, and returns what the test compares: the
tracker's rows, the collectives the library issued during each ``step() + record()`` pair,
the step at which a non-finite policy fired, and which ranks' sinks were written.

Data parallelism is exact here: every rank gets an equal half of each batch and the loss is a
mean, so the averaged gradient (DDP, FSDP2) equals the full-batch gradient and the average of
the per-rank losses is the full-batch loss, up to rounding (float64).
"""

from __future__ import annotations

import collections
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

BATCH = 8  # rows per step over all ranks (each of the 2 ranks gets 4)
N_IN, N_HIDDEN, N_OUT = 4, 6, 2
WORLD = 2

#: name -> spec; ``wrap``: "ddp" (replicated), "zero" (ZeroRedundancyOptimizer under DDP),
#: "fsdp" (FSDP2 ``fully_shard``); ``nan``: ``(rank, step, how)`` with ``how`` "loss" (that
#: rank passes a NaN loss) or "state" (it corrupts its own optimizer state before the step)
SCENARIOS: dict[str, dict[str, Any]] = {
    "ddp_sgd": dict(wrap="ddp", opt="sgd", kw=dict(lr=0.05, momentum=0.9, weight_decay=1e-2), sink=True),
    "ddp_adam_every3": dict(wrap="ddp", opt="adam", kw=dict(lr=0.02), every=3, n_steps=10, group=True),
    "ddp_nesterov_exact": dict(
        wrap="ddp", opt="sgd", kw=dict(lr=0.05, momentum=0.8, nesterov=True), mode="exact"
    ),
    # rows fetched 4 at a time: one all-reduce per flush, none in between (issue 8)
    "ddp_sgd_flush4": dict(wrap="ddp", opt="sgd", kw=dict(lr=0.05, momentum=0.9), n_steps=10, flush_every=4),
    "zero_sgd": dict(wrap="zero", opt="sgd", kw=dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
    "zero_adam_every3": dict(wrap="zero", opt="adam", kw=dict(lr=0.02), every=3, n_steps=10),
    # two groups, the second holding one small tensor: one rank owns nothing of it
    "zero_adamw_groups": dict(wrap="zero", opt="adamw", kw=dict(lr=0.02, weight_decay=0.1), groups=2),
    # the raw gradient is captured after DDP's averaging: unclipped, the clipping column is 0;
    # clipped, it equals the single process's (issue 9)
    "ddp_sgd_raw": dict(wrap="ddp", opt="sgd", kw=dict(lr=0.05, momentum=0.9), raw_grad=True),
    "ddp_adam_clip": dict(wrap="ddp", opt="adam", kw=dict(lr=0.02), raw_grad=True, clip=0.05),
    "nan_loss_raise": dict(wrap="ddp", opt="sgd", kw=dict(lr=0.05, momentum=0.9), nan=(1, 5, "loss")),
    "nan_state_stop": dict(wrap="zero", opt="adam", kw=dict(lr=0.02), nan=(1, 5, "state"), nan_policy="stop"),
    "nan_loss_flag": dict(
        wrap="ddp", opt="adam", kw=dict(lr=0.02), nan=(1, 3, "loss"), nan_policy="flag", every=1
    ),
}
FSDP_SCENARIOS: dict[str, dict[str, Any]] = {
    "fsdp_adam": dict(wrap="fsdp", opt="adam", kw=dict(lr=0.02)),
    "fsdp_sgd_every2": dict(
        wrap="fsdp", opt="sgd", kw=dict(lr=0.05, momentum=0.9, weight_decay=1e-2), every=2, n_steps=9
    ),
    "fsdp_nan_state_raise": dict(wrap="fsdp", opt="sgd", kw=dict(lr=0.05, momentum=0.9), nan=(1, 4, "state")),
}

_C10D = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_single",  # FSDP2's parameter all-gather
    "all_gather_object",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "all_to_all",
    "all_to_all_single",
    "barrier",
)
_FUNCOL = (
    "all_reduce",
    "all_reduce_coalesced",
    "all_gather_tensor",
    "all_gather_single",
    "reduce_scatter_tensor",
    "reduce_scatter_single",
    "all_to_all_single",
    "broadcast",
)


def _from_inertia() -> bool:
    f = sys._getframe(2)
    while f is not None:
        if f.f_globals.get("__name__", "").startswith("inertia."):
            return True
        f = f.f_back
    return False


def count_collectives() -> collections.Counter[str]:
    """Wrap the c10d and functional collectives: count the calls with a frame of the
    ``inertia`` package on the stack (DDP's gradient all-reduce runs in C++, ZeRO's broadcasts
    and FSDP2's gathers outside the library: none of them is counted)."""
    import torch.distributed as dist
    import torch.distributed._functional_collectives as funcol

    counts: collections.Counter[str] = collections.Counter()
    for module, prefix, names in ((dist, "", _C10D), (funcol, "funcol.", _FUNCOL)):
        for name in names:
            orig = getattr(module, name, None)
            if orig is None:
                continue

            def wrapper(*args: Any, _orig: Any = orig, _key: str = prefix + name, **kwargs: Any) -> Any:
                if _from_inertia():
                    counts[_key] += 1
                return _orig(*args, **kwargs)

            setattr(module, name, wrapper)
    return counts


def data(n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n_steps, BATCH, N_IN, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(-1, keepdim=True) + torch.arange(N_OUT, dtype=torch.float64))
    return x, y


def model() -> torch.nn.Module:
    torch.manual_seed(7)
    return torch.nn.Sequential(
        torch.nn.Linear(N_IN, N_HIDDEN),
        torch.nn.Tanh(),
        torch.nn.Linear(N_HIDDEN, N_HIDDEN),
        torch.nn.Tanh(),
        torch.nn.Linear(N_HIDDEN, N_OUT),
    ).double()


def _groups(net: torch.nn.Module, spec: dict[str, Any]) -> Any:
    params = list(net.parameters())
    if spec.get("groups", 1) == 1:
        return params
    return [{"params": params[:-1]}, {"params": params[-1:], "weight_decay": 0.0, "lr": 0.01}]


def _optimizer(params: Any, spec: dict[str, Any], distributed: bool) -> Any:
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[spec["opt"]]
    if spec["wrap"] == "zero" and distributed:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=cls, **spec["kw"])
    return cls(params, **spec["kw"])


def _corrupt_own_state(opt: Any) -> None:
    """Write a NaN into the first element of this rank's own optimizer state."""
    local = getattr(opt, "optim", opt)  # ZeRO: the shard this rank owns
    with torch.no_grad():  # DTensor.to_local() is then the local shard itself
        _corrupt_first(local)


def _corrupt_first(local: Any) -> None:
    from inertia.track.distributed import local_tensor

    for group in local.param_groups:
        for p in group["params"]:
            for key in ("momentum_buffer", "exp_avg"):
                t = local.state.get(p, {}).get(key)
                if t is not None and local_tensor(t).numel() > 0:
                    local_tensor(t).view(-1)[0] = math.nan
                    return
    raise AssertionError("this rank owns no optimizer state to corrupt")


class RankFileSink:
    """A sink that writes ``sink-rank{r}.jsonl`` on the rank that holds it."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = folder / f"sink-rank{rank}.jsonl"

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def close(self) -> None:
        with self.path.open("a"):
            pass


def run_scenario(
    spec: dict[str, Any],
    rank: int | None,
    folder: Path | None = None,
    counts: collections.Counter[str] | None = None,
) -> dict[str, Any]:
    """Train ``spec``: one process on the full batch (``rank=None``) or rank ``rank`` of
    the initialised process group on its half of each batch."""
    from inertia.track import InertiaTracker, NonFiniteError

    distributed = rank is not None
    n_steps = spec.get("n_steps", 8)
    x_all, y_all = data(n_steps)
    if distributed:
        half = BATCH // WORLD
        x_all, y_all = x_all[:, rank * half : (rank + 1) * half], y_all[:, rank * half : (rank + 1) * half]
    net = model()
    if distributed and spec["wrap"] in ("ddp", "zero"):
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net)
    elif distributed and spec["wrap"] == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(net)
    opt = _optimizer(_groups(net, spec), spec, distributed)
    sinks = [RankFileSink(folder, rank)] if spec.get("sink") and distributed and folder else []
    group = None
    if spec.get("group") and distributed:  # an explicit process group (of every rank)
        import torch.distributed as dist

        group = dist.new_group(list(range(WORLD)))
    tracker = InertiaTracker(
        opt,
        mode=spec.get("mode", "cheap"),
        every=spec.get("every", 1),
        nan_policy=spec.get("nan_policy", "raise"),
        sinks=sinks,
        process_group=group,
        flush_every=spec.get("flush_every"),
        raw_grad=spec.get("raw_grad", "auto"),
    )
    nan_rank, nan_step, nan_how = spec.get("nan", (None, None, None))
    out: dict[str, Any] = {"layout": tracker.layout, "calls": [], "raised_at": None, "stopped_at": None}
    if hasattr(opt, "optim"):  # ZeRO: how many parameters of each group this rank owns
        out["owned_per_group"] = [len(g["params"]) for g in opt.optim.param_groups]
    for step in range(n_steps):
        x, y = x_all[step], y_all[step]
        before = dict(counts) if counts is not None else {}
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        if nan_rank == rank and nan_step == step and nan_how == "state":
            _corrupt_own_state(opt)
        if spec.get("clip"):
            torch.nn.utils.clip_grad_norm_(net.parameters(), spec["clip"])
        opt.step()
        reported = loss
        if nan_rank == rank and nan_step == step and nan_how == "loss":
            reported = torch.tensor(math.nan, dtype=torch.float64)

        def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
            return torch.nn.functional.mse_loss(net(x), y)

        was_stopped = tracker.stopped
        try:
            tracker.record(reported, closure if spec.get("mode") == "exact" else None)
        except NonFiniteError:
            out["raised_at"] = step
        if tracker.stopped and not was_stopped:
            out["stopped_at"] = step
        if counts is not None:
            out["calls"].append({k: v - before.get(k, 0) for k, v in counts.items() if v != before.get(k, 0)})
        if out["raised_at"] is not None:
            break
    tracker.close()
    out["rows"] = tracker.rows
    return out


def _probe_fsdp2() -> str | None:
    """``None`` if FSDP2 trains on this build's CPU/gloo (without the tracker), else why not:
    the tests skip then, while a failure with the tracker attached stays a failure."""
    try:
        from torch.distributed.fsdp import fully_shard

        net = model()
        fully_shard(net)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        x, y = data(1)
        torch.nn.functional.mse_loss(net(x[0]), y[0]).backward()
        opt.step()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _replicated_dtensor_refusal() -> str | None:
    """The tracker's error for a DTensor parameter replicated over the world (its local shards
    would be counted once per rank), or ``None`` if it accepted one."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor

    from inertia.track import InertiaTracker

    mesh = init_device_mesh("cpu", (WORLD,))
    p = torch.nn.Parameter(distribute_tensor(torch.ones(4, dtype=torch.float64), mesh, [Replicate()]))
    try:
        InertiaTracker(torch.optim.SGD([p], lr=0.1))
    except ValueError as exc:
        return str(exc)
    return None


def _rank_main(rank: int, folder: str, scenarios: list[str], world: int) -> None:
    import torch.distributed as dist

    out = init_gloo(rank, folder, world)
    counts = count_collectives()
    results: dict[str, Any] = {}
    try:
        if any(n in FSDP_SCENARIOS for n in scenarios):
            results["fsdp2_unavailable"] = _probe_fsdp2()
            if results["fsdp2_unavailable"]:
                scenarios = [n for n in scenarios if n not in FSDP_SCENARIOS]
            results["replicated_dtensor"] = _replicated_dtensor_refusal()
        for name in scenarios:
            results[name] = run_scenario({**SCENARIOS, **FSDP_SCENARIOS}[name], rank, out, counts)
    finally:
        (out / f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()


def init_gloo(rank: int, folder: str, world: int) -> Path:
    """Join a ``world``-rank gloo group through a rendezvous file in ``folder`` (one thread per
    rank); returns ``folder`` as a Path, where each rank writes its results."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    out = Path(folder)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out / 'rendezvous'}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    return out


def start_ranks(main: Any, args: tuple[Any, ...], world: int, timeout: float) -> None:
    """Run ``main(rank, *args)`` on ``world`` spawned processes; kill them all and raise
    ``TimeoutError`` after ``timeout`` seconds."""
    import time

    import torch.multiprocessing as mp

    ctx = mp.start_processes(main, args=args, nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=0.5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"distributed ranks did not finish within {timeout} s (hang?)")


def spawn(folder: Path, scenarios: list[str], timeout: float = 100.0) -> list[dict[str, Any]]:
    """Run ``scenarios`` on ``WORLD`` spawned ranks (gloo, file rendezvous); kill them all and
    fail after ``timeout`` seconds. Returns each rank's results."""
    start_ranks(_rank_main, (str(folder), scenarios, WORLD), WORLD, timeout)
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(WORLD)]
