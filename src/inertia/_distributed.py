"""Ensembles over the ranks of a ``torch.distributed`` process group (``simulate(distributed=True)``).

The ``n_paths`` paths are split into contiguous slices, rank ``r`` of ``W`` taking global paths
``lo = r N // W`` to ``hi = (r + 1) N // W - 1``. Each rank steps its slice alone (its noise keyed
by the global path index, :func:`inertia._backend.normal_into`'s ``row_offset``, so on CPU the
union of the slices is the single-process run bit for bit), and at the end one collective
(:func:`gather`, ``all_gather_object``) gives every rank the recorded energies of all paths.

How to run it on several GPUs: one process per GPU, e.g. ``torchrun --nproc-per-node 4
script.py`` where the script calls ``torch.distributed.init_process_group("nccl")``, pins its
device (``torch.cuda.set_device(local_rank)``), puts ``theta0`` on it and calls
``inertia.simulate(..., distributed=True)``. (On CUDA each rank's noise comes from a generator
keyed with its first global path, so a run is reproducible for a given world size but is not the
single-process run's numbers.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gather", "slice_of"]


def slice_of(n_paths: int) -> tuple[int, int, int, int]:
    """``(rank, world_size, lo, hi)``: this rank's contiguous slice ``[lo, hi)`` of the paths.

    Raises ``ValueError`` when no process group is initialised or when there are fewer paths
    than ranks.
    """
    try:
        import torch.distributed as dist
    except ImportError as exc:  # pragma: no cover - torch is a dependency of the distributed mode
        raise ValueError("`distributed=True` needs torch.distributed (pip install torch)") from exc
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "`distributed=True` needs an initialised torch.distributed process group "
            "(torchrun, or torch.distributed.init_process_group), and none is"
        )
    rank, world = dist.get_rank(), dist.get_world_size()
    if n_paths < world:
        raise ValueError(f"`n_paths` = {n_paths} must be >= the world size {world} with `distributed=True`")
    return rank, world, rank * n_paths // world, (rank + 1) * n_paths // world


def gather(
    steps: np.ndarray,
    kinetic: np.ndarray,
    potential: np.ndarray,
    dissipated: np.ndarray,
    first_bad: int | None,
    taken: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int | None, int]:
    """Every rank's rows, side by side in rank order (one ``all_gather_object``).

    Without divergence every rank saved the same steps and the result is the single-process
    one. When some rank diverged, the run ends at the earliest first bad step ``b`` of all ranks
    (as a single process would: it stops at the first non-finite state of any path): the saved
    steps before ``b`` and ``b`` itself, every rank's energies at them; a rank whose paths were
    still finite at an unsaved ``b`` has no row there, and its columns hold NaN in that row.
    """
    import torch.distributed as dist

    mine = (steps, kinetic, potential, dissipated, first_bad, taken)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    bad = [p[4] for p in parts if p[4] is not None]
    if not bad:
        return (
            parts[0][0],
            *(np.concatenate([p[i] for p in parts], axis=1) for i in (1, 2, 3)),
            None,
            parts[0][5],
        )
    first = min(bad)
    ref = next(p for p in parts if p[4] == first)
    target = ref[0]
    cols: list[list[np.ndarray]] = [[], [], []]
    for p in parts:
        index = {int(s): i for i, s in enumerate(p[0].tolist())}
        for c, field in enumerate((1, 2, 3)):
            arr = p[field]
            out = np.full((target.size, arr.shape[1]), np.nan, dtype=arr.dtype)
            for row, s in enumerate(target.tolist()):
                if s in index:
                    out[row] = arr[index[s]]
            cols[c].append(out)
    kin, pot, diss = (np.concatenate(c, axis=1) for c in cols)
    return target, kin, pot, diss, first, ref[5]
