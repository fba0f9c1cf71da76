"""Reducing the tracker's sums across processes: one all-reduce per recorded step.

Three layouts of the optimizer state:

* ``local``: one process (or the caller wants per-process numbers): no communication.
* ``replicated`` (DDP): every rank holds the same parameters and state, so the state sums are
  the same everywhere; only rank 0's copy enters the all-reduce (the others contribute
  ``0 * value``, which keeps a NaN on any rank a NaN everywhere). Losses are averaged over
  ranks, i.e. the full-batch loss for equal per-rank batches. Values do not scale with the
  world size.
* ``sharded`` (``ZeroRedundancyOptimizer``, FSDP2 ``fully_shard``): each rank sums over the
  state it owns; the all-reduce adds the shards.

All three use one ``all_reduce(SUM)`` of one float64 vector, so every rank receives identical
numbers and takes the same decision on a non-finite value (no rank can hang waiting for another).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LAYOUTS", "detect_layout", "local_tensor", "reduce_vector"]

LAYOUTS = ("local", "replicated", "sharded")


def local_tensor(t: Any) -> Any:
    """The local shard of a DTensor (FSDP2), or ``t`` itself."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def detect_layout(optimizer: Any, params: list[Any]) -> str:
    """``"sharded"`` for ZeRO or DTensor parameters, ``"replicated"`` under an initialised
    process group with more than one rank, else ``"local"``."""
    import torch.distributed as dist

    if type(optimizer).__name__ == "ZeroRedundancyOptimizer":
        return "sharded"
    if any(hasattr(p, "to_local") and hasattr(p, "placements") for p in params):
        return "sharded"
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return "replicated"
    return "local"


def reduce_vector(losses: Any, sums: Any, layout: str, group: Any = None) -> list[float]:
    """Concatenate ``losses`` (per-rank values, averaged) and ``sums`` (state sums) into one
    float64 vector, all-reduce it once according to ``layout``, and return it as floats (the
    one host sync of a recorded step)."""
    import torch

    vec = torch.cat([losses.to(device=sums.device, dtype=torch.float64), sums])
    if layout == "local":
        return vec.tolist()
    import torch.distributed as dist

    world = dist.get_world_size(group)
    n = losses.numel()
    scale = torch.ones_like(vec)
    scale[:n] = 1.0 / world
    if layout == "replicated" and dist.get_rank(group) != 0:
        scale[n:] = 0.0
    vec = vec * scale
    dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=group)
    return vec.tolist()
