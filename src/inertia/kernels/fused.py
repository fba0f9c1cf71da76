"""Fused multi-step kernels: several steps of an in-place ensemble kernel in one compiled graph.

What it is for (issue 4, GPU ensembles). The in-place kernels of
:mod:`inertia.kernels.inplace` launch several element-wise operations per step, each reading
and writing the whole ``(n_paths, d)`` state: on a GPU the step is memory-bound at some
7 passes over the state. :class:`FusedKernel` writes ``k`` steps (a *chunk*, at most
:data:`MAX_CHUNK`) as one pure torch function of the state and compiles it with
``torch.compile(fullgraph=True, dynamic=False)``, so that the ``k`` steps run as one (or a few)
fused kernels with the state held on chip between the steps. Per element-step the traffic is then
about 8 bytes of noise (the keyed normals written by the generator and read by the fused kernel,
float32) plus ``16 / k`` bytes of state, against 16 bytes for a one-step fused kernel.

**Its GPU speed has not been measured yet**: no GPU was available when it was written.
``benchmarks/ensemble_gpu.py`` (variant ``simulate``) measures it; until then the design is an
estimate, checked for correctness only (on CPU, with the compile backend and the device list
monkeypatched by ``tests/test_fused.py``).

What is fused: exactly the configurations :func:`inertia.kernels.ensemble_kernel` accepts
(a diagonal :class:`~inertia.potentials.Quadratic`, a built-in method, float32/float64), on torch
tensors whose device type is in :data:`FUSED_DEVICE_TYPES` (``("cuda",)``). The formulas and
their order are those of :class:`~inertia.kernels.inplace.InplaceKernel`, sub-step by
sub-step, from the same coefficients (:func:`~inertia.integrators.splitting.reduce_scheme`,
:func:`~inertia.integrators.splitting.o_coefficients` computed in Python for every sub-step of
every step, so friction schedules need no recompilation):

* ``A``: ``theta <- theta + a v`` (``a = c dt``); ``B``: ``v <- v + kick * theta``
  (``kick = -c dt lambda / m``, a ``(d,)`` vector); ``O``: ``dissipated += (1 - c1^2) K(v)``,
  ``v <- c1 v``, ``v <- v + c2 M^{-1/2} xi``;
* Euler: ``work = kick * theta``, ``theta <- theta + dt v``, ``dissipated += 2 dt gamma K(v)``,
  ``v <- (1 - dt gamma) v + work + sigma sqrt(dt) M^{-1/2} xi``.

The coefficients travel as tensors (``a``, ``kick``, per step and ``O`` sub-step ``(c1, 1 -
c1^2)`` and the noise coefficient), so ``dt``, ``lambda``, the mass and a friction schedule change
numbers, not the graph. What the graph depends on is static: the sub-step letters, whether there
is friction (booking and scaling are skipped without it, as the in-place kernel skips them),
whether there is noise, and ``k``. Each such structure gets its own generated function (its own
code object, written out as straight-line source: one statement per sub-step) so that dynamo's
per-code-object caches and recompile limit are not shared between structures; a structure
compiles once per ``k``, shape, dtype and device (a run with ``save_every`` not a multiple of the
chunk compiles the shorter chunk once more).

Noise stays keyed: the ``k n_noise`` draws of a chunk are filled by
:func:`inertia._backend.normal_into` with the keys ``(seed, step, substep)`` the reference loop
uses, into one ``(k n_noise, n_paths, d)`` buffer, so a fused run gives the numbers of
``simulate(..., fast=False)`` to rounding error (issue 4, item 4). On CUDA that is one
``torch.Generator`` per key (see :mod:`inertia._backend`); generating in the graph would be
faster but would give other numbers.

Recording (issue 11). Chunks end at saved steps (:func:`inertia.simulate._drive`), and the
graph's epilogue reduces the per-path kinetic and potential energy of the chunk's last state in
the same compiled call; a saved step then records them (and ``dissipated``) by three
``(n_paths,)`` copies: no further pass over the ``(n_paths, d)`` state and no host
synchronisation of its own, so saving every few steps costs little more than saving at the end.

Divergence. :meth:`FusedKernel.steps` is pure with respect to the kernel's state: it computes the
chunk's new ``theta``, ``v``, ``dissipated`` and the per-path kinetic (and potential) energy of the
last state, and commits them only when the sum of the kinetic energy (plus, when the chunk ends at
a saved step, the potential) is finite: one host synchronisation per chunk. Otherwise the state is
left as it was before the chunk and :func:`inertia.simulate` replays the chunk step by step with
the in-place step (:meth:`InplaceKernel.step`, same keyed noise), which finds the first bad step as
the in-place loop does. The check once per chunk assumes what every blow-up does: a kinetic energy
that has become non-finite stays so up to the end of the chunk.

Fallback. When ``torch.compile`` is missing, or compiling or running the graph raises, the kernel
logs a warning and steps in place from then on (the same numbers as the in-place path): never
silently wrong numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from inertia._backend import Array, constant_like, normal_into
from inertia.integrators.splitting import o_coefficients
from inertia.kernels._protocol import Saves
from inertia.kernels.inplace import InplaceKernel

__all__ = ["COMPILE_BACKEND", "FUSED_DEVICE_TYPES", "MAX_CHUNK", "FusedKernel"]

log = logging.getLogger(__name__)

#: Device types (``tensor.device.type``) whose runs go through :class:`FusedKernel`; tests set
#: ``("cpu", "cuda")`` to exercise the fused path on CPU.
FUSED_DEVICE_TYPES: tuple[str, ...] = ("cuda",)
#: The ``torch.compile`` backend; tests set ``"aot_eager"`` (no code generation, quick).
COMPILE_BACKEND = "inductor"
#: Steps per compiled call (a chunk never spans a saved step, so it may be shorter).
MAX_CHUNK = 8

#: Compiled functions by (structure, k, backend).
_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}
#: Coefficient tensors by (device, dtype, values): constant friction reuses them every chunk.
_COEF_CACHE_SIZE = 64


def available() -> bool:
    """True when ``torch.compile`` exists (torch >= 2.0)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - the fused path is only chosen for torch tensors
        return False
    return callable(getattr(torch, "compile", None))


def _source(name: str, plan: tuple[str, ...], k: int, friction: bool, noise: bool) -> str:
    """Straight-line source of ``k`` steps of the sub-step letters ``plan`` (``("E",)``: Euler).

    Signature ``(theta, v, diss, xi, a, kick, coef, noise, mass, lam)``; returns
    ``(theta, v, diss, kinetic, potential)``, the last two per path of the last state (the
    chunk's epilogue: what a saved step records, reduced in the same graph).
    """
    kin = "(((v * mass) * v).sum(-1) * 0.5)"  # the order of InplaceKernel's sq_sum
    pot = "(((theta * lam) * theta).sum(-1) * 0.5)"
    lines = [f"def {name}(theta, v, diss, xi, a, kick, coef, noise, mass, lam):"]
    n_o = max(1, sum(1 for letter in plan if letter in "OE"))
    for i in range(k):
        j = 0
        for s, letter in enumerate(plan):
            if letter == "A":
                lines.append(f"    theta = theta + a[{s}] * v")
            elif letter == "B":
                lines.append(f"    v = v + theta * kick[{s}]")
            elif letter == "O":
                if friction:
                    lines.append(f"    diss = diss + coef[{i}, {j}, 1] * {kin}")
                    lines.append(f"    v = v * coef[{i}, {j}, 0]")
                if noise:
                    lines.append(f"    v = v + noise[{i}, {j}] * xi[{i * n_o + j}]")
                j += 1
            else:  # "E": explicit Euler / Euler-Maruyama
                if friction:
                    lines.append(f"    diss = diss + coef[{i}, 0, 1] * {kin}")
                lines.append(f"    work = theta * kick[{s}]")
                lines.append(f"    theta = theta + a[{s}] * v")
                if friction:
                    lines.append(f"    v = v * coef[{i}, 0, 0]")
                lines.append("    v = v + work")
                if noise:
                    lines.append(f"    v = v + noise[{i}, 0] * xi[{i}]")
    lines.append(f"    return theta, v, diss, {kin}, {pot}")
    return "\n".join(lines) + "\n"


def _compiled(plan: tuple[str, ...], k: int, friction: bool, noise: bool) -> Callable[..., Any]:
    """The compiled ``k``-step function of one structure (built once, cached)."""
    key = (plan, k, friction, noise, COMPILE_BACKEND)
    fn = _COMPILED.get(key)
    if fn is None:
        import torch

        name = f"fused_{''.join(plan)}_k{k}{'_f' if friction else ''}{'_n' if noise else ''}"
        namespace: dict[str, Any] = {}
        exec(compile(_source(name, plan, k, friction, noise), f"<inertia.fused {name}>", "exec"), namespace)
        fn = torch.compile(namespace[name], fullgraph=True, dynamic=False, backend=COMPILE_BACKEND)
        _COMPILED[key] = fn
    return fn


class FusedKernel(InplaceKernel):
    """An :class:`InplaceKernel` that can also advance ``k`` steps in one compiled call.

    :meth:`step`, :meth:`kinetic`, :meth:`potential`, ``dissipated`` and ``n_noise`` are the
    in-place kernel's; :meth:`steps` is the fused chunk. The noise is drawn by the kernel itself
    from ``seed`` (set by the caller before stepping), for the fused chunks and for the in-place
    steps alike, so there is no :class:`~inertia._backend.NoiseStream`.
    """

    name = "fused_cuda"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fused = available()
        self.max_chunk = MAX_CHUNK
        theta = self.theta
        d = int(theta.shape[-1])
        euler = self.euler
        self._friction_on = not self.friction.is_zero()
        self._noise_on = self.sigma > 0.0
        if euler:
            self._letters: tuple[str, ...] = ("E",)
            coefs = [self.dt]
            kicks = [-self.dt * self._lam_over_m]
            self._o_subs: list[tuple[float, float]] = [(0.0, 1.0)]
        else:
            self._letters = tuple(letter for letter, _, _ in self._plan)
            coefs = [c * self.dt for _, c, _ in self._plan]
            kicks = [-(c * self.dt) * self._lam_over_m for _, c, _ in self._plan]
            self._o_subs = [(start, c) for letter, c, start in self._plan if letter == "O"]
        self._a_coef = constant_like(np.asarray(coefs, dtype=np.float64), theta)
        self._b_kick = constant_like(np.asarray(kicks, dtype=np.float64).reshape(-1, d), theta)
        # the mass as InplaceKernel's sq_sum uses it: (1,) for a scalar mass, else (d,)
        self._mass_vec = (
            constant_like(np.asarray([self._mass], dtype=np.float64), theta)
            if self._scalar_mass
            else self._mass
        )
        self._ends_saved = False  # the current chunk ends at a saved step (set by advance)
        self._epilogue: tuple[Array, Array] | None = None  # (K, L) of the state, from the chunk
        self._xi: dict[int, Array] = {}
        self._xi_one: Array = None
        self._coef_cache: dict[tuple[Any, ...], tuple[Array, Array]] = {}
        # gradient evaluations of one step, from a stale (False) or fresh (True) gradient

    def _take(self, n: int, k: int) -> Array:
        """The keyed draw ``(seed, n, k)`` for an in-place step (a replay, or the fallback)."""
        if self._xi_one is None:
            self._xi_one = self.theta.new_empty(self.theta.shape)
        return normal_into((self.seed, n, k), self._xi_one, row_offset=self.row_offset)

    def _coefficients(self, n0: int, k: int) -> tuple[Array, Array]:
        """``coef[i, j] = (c1, 1 - c1^2)`` and ``noise[i, j]`` (the noise coefficient, ``(1,)`` or
        ``(d,)``) of ``O`` sub-step ``j`` of step ``n0 + i``, on the device."""
        n_o = len(self._o_subs)
        coef = np.zeros((k, max(1, n_o), 2))
        c2 = np.zeros((k, max(1, n_o)))
        euler = self.euler
        for i in range(k):
            t = self.t0 + (n0 + i) * self.dt
            if euler:
                gamma = self.friction(t)
                coef[i, 0] = (1.0 - self.dt * gamma, 2.0 * self.dt * gamma)
                c2[i, 0] = self.sigma * math.sqrt(self.dt)
                continue
            for j, (start, c) in enumerate(self._o_subs):
                c1, one_minus_c1sq, c2_ij = o_coefficients(
                    self.friction, self.sigma, t + start * self.dt, t + (start + c) * self.dt
                )
                coef[i, j] = (c1, one_minus_c1sq)
                c2[i, j] = c2_ij
        scale = self._inv_sqrt_mass[:1] if self._scalar_mass else self._inv_sqrt_mass
        noise = c2[:, :, None] * scale[None, None, :]  # c2 M^{-1/2}, in float64 as InplaceKernel
        key = (k, coef.tobytes(), noise.tobytes())
        hit = self._coef_cache.get(key)
        if hit is None:
            if len(self._coef_cache) >= _COEF_CACHE_SIZE:
                self._coef_cache.clear()
            hit = (constant_like(coef, self.theta), constant_like(noise, self.theta))
            self._coef_cache[key] = hit
        return hit

    def _noise(self, n0: int, k: int) -> Array:
        """The ``(k n_noise, n_paths, d)`` buffer of the chunk's keyed draws, in order."""
        if not self.n_noise:
            return None
        xi = self._xi.get(k)
        if xi is None:
            xi = self.theta.new_empty((k * self.n_noise, *self.theta.shape))
            self._xi[k] = xi
        for i in range(k):
            for j in range(self.n_noise):
                normal_into((self.seed, n0 + i, j), xi[i * self.n_noise + j], row_offset=self.row_offset)
        return xi

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None:
        """As :meth:`InplaceKernel.advance`; a chunk that ends at a saved step also checks the
        potential of its last state, so that :meth:`record` needs no synchronisation of its own."""
        self._ends_saved = bool(saves)
        return super().advance(n0, k, saves, replay)

    def step(self, n: int) -> int:
        """The in-place step (a replay, or the fallback): the chunk's epilogue is stale after it."""
        self._epilogue = None
        return super().step(n)

    def record(self, row: int) -> bool:
        """Copy the energies the chunk's epilogue reduced (no pass over the state, no host
        synchronisation: the chunk's check covered them); else as :meth:`InplaceKernel.record`."""
        if self._epilogue is None or self._rows is None:
            return super().record(row)
        kin, pot, diss = self._rows
        kin[row].copy_(self._epilogue[0])
        pot[row].copy_(self._epilogue[1])
        diss[row].copy_(self.dissipated)
        return True

    def steps(self, n0: int, k: int) -> tuple[int, bool] | None:
        """Advance steps ``n0 .. n0 + k - 1`` in one compiled call.

        Returns ``(gradient evaluations, True)`` after committing the new state when the kinetic
        energy of the last state (and its potential, when the chunk ends at a saved step) sums
        to a finite value (one host synchronisation per chunk); ``(0, False)`` with the state
        unchanged when it does not (the caller replays the chunk with :meth:`step`); ``None``
        when the fused path is unavailable (compilation failed: the caller steps in place).
        """
        if not self.fused:
            return None
        import torch

        coef, noise = self._coefficients(n0, k)
        xi = self._noise(n0, k)
        try:
            fn = _compiled(self._letters, k, self._friction_on, self._noise_on)
            with torch.no_grad():
                theta, v, diss, kin, pot = fn(
                    self.theta,
                    self.v,
                    self.dissipated,
                    xi,
                    self._a_coef,
                    self._b_kick,
                    coef,
                    noise,
                    self._mass_vec,
                    self._lam,
                )
        except Exception as exc:  # compile errors surface here, at the first call
            log.warning(
                "fused %s kernel unavailable (%s: %s); stepping in place instead",
                self.method,
                type(exc).__name__,
                exc,
            )
            self.fused = False
            self.name = "inplace"  # what steps from here on
            return None
        self._epilogue = None
        sums = torch.stack((kin.sum(), pot.sum())) if self._ends_saved else kin.sum().reshape(1)
        if not math.isfinite(float(sums.double().sum())):
            return 0, False
        self.theta, self.v, self.dissipated = theta, v, diss
        if self._ends_saved:
            self._epilogue = (kin, pot)
        return self._advance_grads(k), True


def fused_device(theta: Array) -> bool:
    """True when ``theta`` (a torch tensor) lives on a device type of :data:`FUSED_DEVICE_TYPES`."""
    return theta.device.type in FUSED_DEVICE_TYPES
