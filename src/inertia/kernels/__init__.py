"""Kernels: every way of stepping a run, behind one small protocol, chosen in one table.

How a run goes (read this first)::

    simulate()                      front door: validate, build a Run, pick a kernel
      -> select(run)                the TABLE below: the first row whose test passes
      -> simulate._drive(kernel)    THE time loop: chunks, saved steps, recording, divergence
           kernel.open(...)           buffers, noise streams
           kernel.record(0)           energies of the initial state
           kernel.advance(n0, k, saves)   k steps; where it went non-finite
           (replay the chunk one step at a time when a chunk went non-finite)
           kernel.energies(rows)      the recorded rows, copied to the host once
           kernel.close()
      -> trajectory.finish()        the Trajectory (``config["kernel"]`` names the kernel)

A kernel steps one scheme (:attr:`inertia.integrators.Method.scheme`, declared once per method:
the exact flows ``A``, ``B``, ``O`` with their fractions of ``dt``, or ``E`` for explicit
Euler), so a splitting added with :func:`inertia.integrators.register_splitting` runs on every
kernel with no other code. The protocol (:class:`Kernel`):

* ``name``: what ``Trajectory.config["kernel"]`` records;
* ``max_chunk``: the most steps one :meth:`~Kernel.advance` takes;
* ``records_inside``: the kernel writes the energies of saved steps inside a chunk itself (so a
  chunk may span saved steps); otherwise the driver ends each chunk at a saved step and calls
  :meth:`~Kernel.record`;
* ``advance(n0, k, saves, replay=False)``: steps ``n0 .. n0 + k - 1``; returns ``None`` when all
  went well, ``j >= 1`` when the state after step ``n0 + j - 1`` is the first non-finite one
  (the state is left there), ``0`` when the chunk went non-finite somewhere and the state is as
  it was before it (the driver then replays the chunk with ``replay=True``, one step a call);
* ``record(row) -> bool`` (energies of the current state into ``row``; finite?),
  ``energies(n_rows)``, ``theta``, ``v``, ``n_grad``, ``open``, ``close``.

The kernels (first applicable row of :data:`TABLE` wins; ``fast=False`` forces ``functional``):

==============  ====================================  =============================================
name            module                                when
==============  ====================================  =============================================
compiled_path   :mod:`~inertia.kernels.single_path`   one deterministic NumPy path, built-in
                                                      potential, numba installed
numpy_path      :mod:`~inertia.kernels.single_path`   one deterministic NumPy path, any potential
fused_cuda      :mod:`~inertia.kernels.fused`         diagonal quadratic ensemble, torch on CUDA
fused_cpu       :mod:`~inertia.kernels.fused_cpu`     ... on CPU, ``sigma = 0``, numba installed
numba_noisy     :mod:`~inertia.kernels.fused_cpu`     ... on CPU, ``sigma > 0``, numba installed
inplace         :mod:`~inertia.kernels.inplace`       ... NumPy or torch (anything else above fails)
functional      :mod:`~inertia.kernels.functional`    everything: the method's ``make_step``
==============  ====================================  =============================================

All give the numbers of ``functional`` to rounding error (bit for bit where the arithmetic is the
same, which the tests pin). No module here imports :mod:`inertia.simulate`; the kernels import
:mod:`inertia.kernels.inplace` (the ensemble base) and nothing imports back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from inertia.dynamics import Friction
from inertia.integrators import Method
from inertia.potentials import Potential

__all__ = ["TABLE", "Kernel", "Run", "Saves", "select"]


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


def _single_path(run: Run) -> Kernel | None:
    from inertia.kernels import single_path

    kernel: Kernel | None = single_path.make(run)
    return kernel


def _ensemble(run: Run) -> Kernel | None:
    from inertia.kernels.inplace import make_kernel

    made = make_kernel(
        run.method.name,
        run.potential,
        run.theta,
        run.v,
        mass=run.mass_json,
        friction=run.friction,
        sigma=run.sigma,
        dt=run.dt,
        t0=run.t0,
    )
    if made is not None:
        made.row_offset = run.row_offset
    kernel: Kernel | None = made
    return kernel


def _functional(run: Run) -> Kernel:
    from inertia.kernels.functional import FunctionalKernel

    kernel: Kernel = FunctionalKernel(run)
    return kernel


#: ``(what it covers, factory)``: the factory returns a kernel, or ``None`` when the run is not
#: its kind. The single-path factory picks ``compiled_path`` or ``numpy_path``; the ensemble
#: factory (:func:`inertia.kernels.inplace.make_kernel`) picks ``fused_cuda``, ``fused_cpu``,
#: ``numba_noisy`` or ``inplace`` by device, noise and numba.
TABLE: tuple[tuple[str, Callable[[Run], Kernel | None]], ...] = (
    ("one deterministic NumPy path", _single_path),
    ("ensembles of a diagonal quadratic, NumPy or torch", _ensemble),
    ("anything", _functional),
)


def select(run: Run) -> Kernel:
    """The kernel that steps ``run``: the first row of :data:`TABLE` that takes it (only the
    last, ``functional``, when ``run.fast`` is False, or the method declares no scheme)."""
    if run.fast and run.method.kernel_scheme is not None:
        for _, factory in TABLE[:-1]:
            kernel = factory(run)
            if kernel is not None:
                return kernel
    return _functional(run)
