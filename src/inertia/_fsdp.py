"""FSDP2 parameters for Hessian-vector products: differentiate the unsharded parameters.

FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps each parameter as a DTensor sharded on
dim 0 (the *sharded* parameter, what ``model.parameters()`` and the optimizer hold) and, around
each module's forward, all-gathers it into a plain *unsharded* parameter that the forward
uses; its backward hooks reduce-scatter the unsharded gradient into the sharded one. A loss is
therefore a function of the unsharded parameters only, and a second backward (an HVP) must
differentiate those. :class:`Unsharded` does so:

* :meth:`Unsharded.gather` unshards every FSDP2 module owning one of the parameters
  (``FSDPModule.unshard()``: FSDP2's own all-gather, one per parameter group) and keeps them
  unsharded until :meth:`Unsharded.release` reshards the ones it gathered, so that a gradient
  graph built once stays valid for every product;
* :meth:`Unsharded.plain_forward` runs the loss with FSDP2's hooks passive: each FSDP state is
  put in its ``PRE_BACKWARD`` training state, FSDP2's own path for recomputing a forward
  inside backward (activation checkpointing), in which the forward neither reshards nor
  registers the backward hooks that would reduce-scatter gradients (a module not yet gathered,
  e.g. one holding only frozen parameters, is gathered there and resharded on release). The loss then depends
  on the unsharded parameters through an ordinary autograd graph.

:func:`full_tensors` gathers DTensors sharded on dim 0 (a preconditioner read from a sharded
optimizer state, a step ``theta_{k+1} - theta_k``) with one ``all_gather_into_tensor``.

Uses FSDP2 internals (``FSDPState._fsdp_param_groups``, ``FSDPParam.sharded_param`` /
``unsharded_param``, ``TrainingState``), checked against torch 2.13.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["Unsharded", "full_tensors", "is_dtensor"]


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a DTensor (``torch.distributed.tensor.DTensor``)."""
    return type(t).__name__ == "DTensor" or type(getattr(t, "data", None)).__name__ == "DTensor"


def _fsdp_states() -> list[tuple[Any, Any]]:
    """``(module, FSDPState)`` of every live FSDP2 module."""
    from torch.distributed._composable_state import _module_state_mapping
    from torch.distributed.fsdp import FSDPModule

    return [(m, m._get_fsdp_state()) for m in list(_module_state_mapping.keys()) if isinstance(m, FSDPModule)]


class Unsharded:
    """The unsharded FSDP2 parameters behind ``params`` (plain tensors are their own).

    Args:
        params: tensors, each a plain tensor or the sharded parameter of an FSDP2 module.

    Raises:
        NotImplementedError: a DTensor parameter that no ``fully_shard`` module manages (tensor
            parallelism), whose product would need that layout's own collectives.
    """

    def __init__(self, params: Sequence[Any]) -> None:
        found: dict[int, tuple[Any, Any, Any]] = {}
        for module, state in _fsdp_states():
            for group in state._fsdp_param_groups:
                for fp in group.fsdp_params:
                    found[id(fp.sharded_param)] = (module, state, fp)
        self.params = list(params)
        self._fsdp: list[Any] = []  # FSDPParam per parameter, None for a plain tensor
        modules: dict[int, tuple[Any, Any]] = {}
        for i, p in enumerate(self.params):
            if not is_dtensor(p):
                self._fsdp.append(None)
                continue
            if id(p) not in found:
                raise NotImplementedError(
                    f"`params[{i}]` is a DTensor that no FSDP2 (fully_shard) module manages "
                    f"(placements {getattr(p, 'placements', '?')}): Hessian-vector products support "
                    "FSDP2's dim-0 sharding and DDP only"
                )
            module, state, fp = found[id(p)]
            self._fsdp.append(fp)
            modules[id(module)] = (module, state)
        self._modules = list(modules.values())
        self._gathered: list[Any] = []  # modules this object unsharded (resharded on release)

    def gather(self) -> list[Any]:
        """Unshard (once; until :meth:`release`) and return the tensors to differentiate."""
        if not self._gathered:
            for module, state in self._modules:
                if not all(g.is_unsharded for g in state._fsdp_param_groups):
                    module.unshard()
                    self._gathered.append(module)
        return [
            p if fp is None else fp.unsharded_param for p, fp in zip(self.params, self._fsdp, strict=True)
        ]

    @contextlib.contextmanager
    def plain_forward(self) -> Iterator[None]:
        """Forwards inside run with FSDP2's hooks passive (parameters already unsharded)."""
        from torch.distributed.fsdp._fully_shard._fsdp_common import TrainingState

        pairs = _fsdp_states()
        states = [s for _, s in pairs]
        old = [s._training_state for s in states]
        sharded = [not all(g.is_unsharded for g in s._fsdp_param_groups) for s in states]
        for s in states:
            s._training_state = TrainingState.PRE_BACKWARD
        try:
            yield
        finally:
            for s, t in zip(states, old, strict=True):
                s._training_state = t
            # modules of other parameters (frozen ones) that this forward gathered stay
            # gathered for the kept graph; they are resharded with the rest on release
            for (module, s), was in zip(pairs, sharded, strict=True):
                if was and all(g.is_unsharded for g in s._fsdp_param_groups) and module not in self._gathered:
                    self._gathered.append(module)

    def release(self) -> None:
        """Reshard what :meth:`gather` unsharded (frees the gathered parameters)."""
        for module in self._gathered:
            module.reshard()
        self._gathered = []


def full_tensors(tensors: Sequence[Any]) -> list[Any]:
    """The full (global) tensors of ``tensors``: plain tensors as they are, DTensors sharded on
    dim 0 of one 1-D mesh gathered together by **one** ``all_gather_into_tensor`` (each local
    shard zero-padded to ``ceil(N_0 / W)`` rows, FSDP2's layout), other DTensors by
    ``full_tensor()`` each."""
    import torch
    import torch.distributed as dist

    out: list[Any] = list(tensors)
    packed = []
    mesh = None
    for i, t in enumerate(tensors):
        if not is_dtensor(t):
            continue
        t_mesh = t.device_mesh
        shard0 = t_mesh.ndim == 1 and len(t.placements) == 1 and t.placements[0].is_shard(0)
        if shard0 and (mesh is None or t_mesh == mesh) and t.ndim >= 1:
            mesh = t_mesh
            packed.append(i)
        else:
            out[i] = t.full_tensor()
    if not packed:
        return out
    assert mesh is not None
    world = mesh.size()
    dtype = tensors[packed[0]].dtype
    pieces = []
    layout = []  # (index, padded rows, row shape)
    for i in packed:
        t = tensors[i]
        rows = -(-t.shape[0] // world)
        local = t.to_local().detach().to(dtype)
        pad = torch.zeros((rows, *t.shape[1:]), dtype=dtype, device=local.device)
        pad[: local.shape[0]] = local
        pieces.append(pad.reshape(-1))
        layout.append((i, rows, tuple(t.shape[1:])))
    send = torch.cat(pieces)
    recv = torch.empty(world * send.numel(), dtype=dtype, device=send.device)
    dist.all_gather_into_tensor(recv, send, group=mesh.get_group())
    per_rank = recv.view(world, send.numel())
    offset = 0
    for i, rows, shape in layout:
        width = rows * (int(torch.Size(shape).numel()) if shape else 1)
        block = per_rank[:, offset : offset + width].reshape(world * rows, *shape)
        out[i] = block[: tensors[i].shape[0]].to(tensors[i].dtype).clone()
        offset += width
    return out
