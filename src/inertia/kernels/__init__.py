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
same, which the tests pin). Imports go one way: this table imports the kernel modules (when it
needs them), ``fused`` and ``fused_cpu`` import ``inplace`` (their base class), ``inplace`` and
the others import only this package's :class:`Run` and :class:`Saves`; none imports
:mod:`inertia.simulate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from inertia._backend import is_torch
from inertia.dynamics import Friction
from inertia.kernels._protocol import Kernel, Run, Saves, saves_of
from inertia.potentials import Potential

__all__ = ["TABLE", "Kernel", "Run", "Saves", "ensemble_kernel", "saves_of", "select"]

log = logging.getLogger(__name__)


def _compiled_path(run: Run) -> Kernel | None:
    from inertia.kernels import compiled, single_path

    if not single_path.one_deterministic_path(run) or not compiled.available():
        return None
    if compiled.family_of(run.potential) is None:  # the exact built-in classes only
        return None
    return single_path.CompiledPathKernel(run)


def _numpy_path(run: Run) -> Kernel | None:
    from inertia.kernels import single_path

    return single_path.LeanPathKernel(run) if single_path.one_deterministic_path(run) else None


def ensemble_kernel(
    method: str,
    potential: Potential,
    theta: Any,
    v: Any,
    *,
    mass: Any,
    friction: Friction,
    sigma: float,
    dt: float,
    t0: float,
    row_offset: int = 0,
) -> Any:
    """The ensemble rows of :data:`TABLE`: the in-place kernel for a diagonal quadratic
    (:func:`inertia.kernels.inplace.ensemble_buffers`), in its fastest form for the device.

    * ``fused_cuda``: torch tensors on a device type of
      :data:`inertia.kernels.fused.FUSED_DEVICE_TYPES` (CUDA) where ``torch.compile`` exists
      (without it, a logged warning and ``inplace``);
    * ``fused_cpu``: NumPy or CPU torch, ``sigma = 0``, numba installed
      (:func:`inertia.kernels.compiled.available`);
    * ``numba_noisy``: the same with ``sigma > 0``;
    * ``inplace``: any other NumPy or torch run;
    * ``None`` when no in-place kernel applies.
    """
    from inertia.kernels import inplace

    made = inplace.ensemble_buffers(method, potential, theta, v)
    if made is None:
        return None
    lam, theta_buf, v_buf = made
    kind: type[inplace.InplaceKernel] = inplace.InplaceKernel
    on_device = False
    if is_torch(theta):
        from inertia.kernels import fused

        on_device = fused.fused_device(theta)
        if on_device and fused.available():
            kind = fused.FusedKernel
        elif on_device:
            log.warning("torch.compile is not available: the %s run steps in place, unfused", method)
    if not on_device and (not is_torch(theta) or theta.device.type == "cpu"):
        from inertia.kernels import compiled

        if compiled.available():
            from inertia.kernels import fused_cpu

            kind = fused_cpu.CpuFusedKernel if sigma == 0.0 else fused_cpu.CpuNoisyKernel
    kernel = kind(method, lam, theta_buf, v_buf, mass=mass, friction=friction, sigma=sigma, dt=dt, t0=t0)
    kernel.row_offset = row_offset
    return kernel


def _ensemble(run: Run) -> Kernel | None:
    kernel: Kernel | None = ensemble_kernel(
        run.method.name,
        run.potential,
        run.theta,
        run.v,
        mass=run.mass_json,
        friction=run.friction,
        sigma=run.sigma,
        dt=run.dt,
        t0=run.t0,
        row_offset=run.row_offset,
    )
    return kernel


def _functional(run: Run) -> Kernel:
    from inertia.kernels.functional import FunctionalKernel

    kernel: Kernel = FunctionalKernel(run)
    return kernel


#: The choice of kernel, in order: ``(names, factory)``; a factory returns its kernel or ``None``
#: when the run is not its kind. The ensemble row picks one of four names by device, noise and
#: numba (:func:`ensemble_kernel`).
TABLE: tuple[tuple[str, Callable[[Run], Kernel | None]], ...] = (
    ("compiled_path", _compiled_path),
    ("numpy_path", _numpy_path),
    ("fused_cuda | fused_cpu | numba_noisy | inplace", _ensemble),
    ("functional", _functional),
)


def select(run: Run) -> Kernel:
    """The kernel that steps ``run``: the first row of :data:`TABLE` that takes it (only the
    last, ``functional``, when ``run.fast`` is False or the method has no kernel scheme)."""
    if run.fast and run.method.kernel_scheme is not None:
        for _, factory in TABLE[:-1]:
            kernel = factory(run)
            if kernel is not None:
                return kernel
    return _functional(run)
