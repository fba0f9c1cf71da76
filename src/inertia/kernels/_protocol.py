"""The kernel protocol (:class:`Kernel`), what a kernel is told about a run (:class:`Run`) and
about the saved steps of a chunk (:class:`Saves`). See :mod:`inertia.kernels` for the picture."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inertia.dynamics import Friction
from inertia.integrators import Method
from inertia.potentials import Potential

__all__ = ["Kernel", "Run", "Saves", "saves_of"]


@dataclass(frozen=True)
class Run:
    """Everything a kernel needs to know about a validated run (built by :func:`inertia.simulate`).

    ``theta`` and ``v`` are ``(n_paths, d)`` arrays of one backend (on a distributed rank, its
    slice of the paths, whose first global index is ``row_offset``: the noise of path ``i`` is
    keyed by its global index); ``mass`` / ``inv_mass`` /
    ``inv_sqrt_mass`` floats or ``(d,)`` backend arrays; ``mass_json`` the mass as a float or a
    list (host); ``noise(step, substep)`` the keyed standard normals of the run's paths.
    """

    potential: Potential
    method: Method
    theta: Any
    v: Any
    mass: Any
    inv_mass: Any
    inv_sqrt_mass: Any
    mass_json: Any
    friction: Friction
    sigma: float
    dt: float
    t0: float
    noise: Callable[[int, int], Any]
    fast: bool = True
    row_offset: int = 0

    @property
    def n_paths(self) -> int:
        return int(self.theta.shape[0])


@dataclass(frozen=True)
class Saves:
    """The saved steps of one chunk of ``k`` steps: offsets ``j`` (``1 <= j <= k``; state after
    ``j`` steps) ``first, first + every, ...`` and, with ``last``, ``k`` itself (the run's last
    step, off the stride); their rows are ``row, row + 1, ...`` in that order."""

    first: int
    every: int
    k: int
    last: bool
    row: int

    def offsets(self, upto: int | None = None) -> np.ndarray:
        """The saved offsets ``<= upto`` (default ``k``), ascending."""
        top = self.k if upto is None else upto
        out = np.arange(self.first, top + 1, self.every, dtype=np.int64)
        if self.last and top >= self.k and (out.size == 0 or out[-1] != self.k):
            out = np.append(out, self.k)
        return out

    def __bool__(self) -> bool:
        return self.first <= self.k or self.last

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """``(offset, row)`` pairs."""
        for i, j in enumerate(self.offsets().tolist()):
            yield j, self.row + i


def saves_of(taken: int, k: int, save_every: int, n_steps: int, row: int) -> Saves:
    """The saved steps of the chunk after ``taken`` steps of the run: every ``save_every``-th step
    of the run and its last (step ``n_steps``), the saved-step rule of :func:`inertia.simulate`."""
    first = save_every - taken % save_every
    return Saves(first, save_every, k, taken + k == n_steps and n_steps % save_every != 0, row)


class Kernel(Protocol):
    """The protocol of the module docstring (``advance``'s return: ``None`` ok, ``j`` the first
    non-finite state, ``0`` a chunk to replay)."""

    name: str
    max_chunk: int
    records_inside: bool
    n_grad: int

    @property
    def theta(self) -> Any: ...

    @property
    def v(self) -> Any: ...

    def open(self, seed: int, initial_step: int, n_steps: int, n_rows: int) -> None: ...

    def close(self) -> None: ...

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None: ...

    def record(self, row: int) -> bool: ...

    def energies(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
