"""Reducing the tracker's sums across processes: one all-reduce per flush of recorded rows.

Three layouts of the optimizer state:

* ``local``: one process (or the caller wants per-process numbers): no communication.
* ``replicated`` (DDP): every rank holds the same parameters and state, so the state sums are
  the same everywhere; only rank 0's copy enters the all-reduce (the others contribute
  ``0 * value``, which keeps a NaN on any rank a NaN everywhere). Losses are averaged over
  ranks, i.e. the full-batch loss for equal per-rank batches. Values do not scale with the
  world size.
* ``sharded`` (``ZeroRedundancyOptimizer``, FSDP2 ``fully_shard``): each rank sums over the
  state it owns (DTensors through their local shards, :func:`local_view`); the all-reduce adds
  the shards. A rank that owns nothing of a parameter group cannot read the group's
  state-derived hyper-parameters (Adam's step count): they travel in the same vector
  (:func:`pack_hparams`) and are filled in from the ranks that own some.

All three use one ``all_reduce(SUM)`` of one float64 vector, so every rank receives identical
numbers and takes the same decision on a non-finite value (no rank can hang waiting for another).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "LAYOUTS",
    "check_layout",
    "detect_layout",
    "local_tensor",
    "local_view",
    "pack_hparams",
    "reduce_rows",
    "reduce_vector",
    "unpack_hparams",
]

LAYOUTS = ("local", "replicated", "sharded")


def _is_dtensor(t: Any) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "placements")


def local_tensor(t: Any) -> Any:
    """The local shard of a DTensor (FSDP2), or ``t`` itself."""
    return t.to_local() if _is_dtensor(t) else t


def local_view(group: dict[str, Any], state: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    """A parameter group and optimizer state in which every DTensor is its local shard.

    Each DTensor parameter becomes a detached alias of its local shard (same storage, nothing
    copied or written) carrying the local shard of its gradient as ``.grad``; the state is
    re-keyed by those aliases. Plain tensors (``ZeroRedundancyOptimizer``'s own partition) pass
    through. Call under ``torch.no_grad()``.
    """
    params, view_state = [], {}
    for p in group["params"]:
        q = p
        if _is_dtensor(p):
            q = p.to_local().detach()
            if p.grad is not None:
                q.grad = local_tensor(p.grad)
        params.append(q)
        if p in state:
            view_state[q] = {k: local_tensor(v) for k, v in state[p].items()}
    return {**group, "params": params}, view_state


def detect_layout(optimizer: Any, params: list[Any]) -> str:
    """``"sharded"`` for ZeRO or DTensor parameters, ``"replicated"`` under an initialised
    process group with more than one rank, else ``"local"``."""
    import torch.distributed as dist

    if type(optimizer).__name__ == "ZeroRedundancyOptimizer":
        return "sharded"
    if any(_is_dtensor(p) for p in params):
        return "sharded"
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return "replicated"
    return "local"


def check_layout(layout: str, params: list[Any], group: Any = None) -> None:
    """Refuse a layout that cannot give full-model values.

    ``replicated``/``sharded`` need an initialised process group. Under ``sharded`` with the
    default group, DTensor parameters must be sharded on every mesh dimension over the whole
    world: a replicated dimension (HSDP, tensor parallel) would count its shards more than
    once; then pass ``process_group``, the group over which each element has exactly one owner.
    """
    if layout == "local":
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"layout={layout!r} needs an initialised torch.distributed process group "
            "(call torch.distributed.init_process_group first), or use layout='local'"
        )
    if layout != "sharded" or group is not None:
        return
    world = dist.get_world_size()
    for p in params:
        if not _is_dtensor(p):
            continue
        placements = tuple(p.placements)
        if not all(pl.is_shard() for pl in placements) or p.device_mesh.size() != world:
            raise ValueError(
                f"a DTensor parameter with placements {placements} on a mesh of "
                f"{p.device_mesh.size()} ranks (world size {world}) is not sharded once over the "
                "world: summing its local shards would count elements more than once. Pass "
                "`process_group`, the group over which each element has exactly one owner "
                "(for HSDP: the shard dimension's group)"
            )


def pack_hparams(hps: list[dict[str, float]], device: Any = None) -> Any:
    """``[known, value if known else 0]`` for every hyper-parameter of every group, as float64.

    A value is unknown (NaN) on a rank that owns no stepped parameter of the group; after the
    all-reduce :func:`unpack_hparams` takes it from the ranks that know it.
    """
    import torch

    flat: list[float] = []
    for hp in hps:
        for value in hp.values():
            known = not math.isnan(value)
            flat += [1.0 if known else 0.0, value if known else 0.0]
    return torch.tensor(flat, dtype=torch.float64, device=device)


def unpack_hparams(hps: list[dict[str, float]], block: list[float]) -> list[dict[str, float]]:
    """This rank's hyper-parameters with each unknown (NaN) value replaced by the mean over the
    ranks that know it (``block``: the all-reduced :func:`pack_hparams`); known values are kept
    exactly, so ranks that own part of a group keep their own numbers."""
    out, pos = [], 0
    for hp in hps:
        merged = {}
        for key, value in hp.items():
            n_known, total = block[pos], block[pos + 1]
            pos += 2
            merged[key] = total / n_known if math.isnan(value) and n_known > 0 else value
        out.append(merged)
    return out


def reduce_vector(losses: Any, sums: Any, layout: str, group: Any = None) -> list[float]:
    """Concatenate ``losses`` (per-rank values, averaged) and ``sums`` (state sums) into one
    float64 vector, all-reduce it once according to ``layout``, and return it as floats (the
    one host sync): :func:`reduce_rows` of one row."""
    return reduce_rows([(losses, sums)], layout, group)[0]


def reduce_rows(rows: list[tuple[Any, Any]], layout: str, group: Any = None) -> list[list[float]]:
    """Several rows' ``(losses, sums)`` in one float64 vector, one all-reduce and one host read.

    Each row's losses are averaged over ranks; its state sums are added (``sharded``) or taken
    from rank 0 (``replicated``); ``local`` does no communication. Returns each row's
    ``losses + sums`` as Python floats, in order: a flush of ``n`` rows costs one collective
    and one device-to-host transfer, not ``n``.
    """
    import torch

    device = rows[0][1].device
    f64 = torch.float64
    parts = []
    for losses, sums in rows:
        parts += [losses.to(device=device, dtype=f64), sums.to(device=device)]
    vec = torch.cat(parts)
    lengths = [losses.numel() + sums.numel() for losses, sums in rows]
    if layout != "local":
        import torch.distributed as dist

        world = dist.get_world_size(group)
        keep = 0.0 if layout == "replicated" and dist.get_rank(group) != 0 else 1.0
        scale: list[float] = []
        for losses, sums in rows:
            scale += [1.0 / world] * losses.numel() + [keep] * sums.numel()
        vec = vec * torch.tensor(scale, dtype=f64, device=device)
        dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=group)
    flat = vec.tolist()
    out, pos = [], 0
    for n in lengths:
        out.append(flat[pos : pos + n])
        pos += n
    return out
