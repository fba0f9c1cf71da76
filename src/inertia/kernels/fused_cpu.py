"""Noise-free ensemble chunks on CPU: many steps of an in-place kernel in one numba loop.

What it is for (issue 4, "a noise-free kernel at least 50 % of the cache copy bandwidth"). The
in-place kernels of :mod:`inertia.kernels.inplace` run each sub-step as one or two eager
array operations, each a pass over the whole ``(n_paths, d)`` state: some 18 passes per BAOAB
step where a fused step needs 4. Without noise nothing has to come from a generator, and with a
diagonal quadratic every path (indeed every coordinate) evolves on its own, so
:class:`CpuFusedKernel` advances a *chunk* of up to :data:`MAX_CHUNK` steps in one compiled loop
(:func:`run_chunk`, ``numba.njit(parallel=True, cache=True)``): blocks of a few paths
(:data:`BLOCK_BYTES` per array, so ``theta``, ``v`` and the kick rows of a block stay in L1) are
split over numba's threads with ``prange``, read once, stepped ``k`` times and written once. Per
element-step that is about ``16 / k`` bytes of memory traffic (float32; 32 / k in float64).
Within a step the sub-steps are packed into *slots*, each ``B``, then ``A``, then ``O`` with any
part absent (:func:`slots`: ``BAOAB`` is ``(BAO)(A)(B)``, leapfrog without friction ``(BA)(B)``),
and one vectorised pass over the block applies three slots with every element held in registers
through them (the presence of each part is the same for every element: a select, not a branch).
One compiled function per dtype serves every method; a step with more than three slots
(yoshida4) takes several passes.

Measured on B1 without noise (2 cores, ``benchmarks/ensemble_b1.py --only '*/baoab_sigma0/*'``):
about 8.7 G element-steps/s in torch float32 and 4.1 G in float64, against 1.2 G / 0.8 G for
the eager in-place kernel in the same run.

When: :func:`inertia.kernels.ensemble_kernel` picks this kernel for ``sigma == 0``, a NumPy
array or a CPU torch tensor (stepped through its ``.numpy()`` view, which shares memory; float32
and float64) and numba installed (:func:`inertia.kernels.compiled.available`, the ``fast``
extra); never on CUDA (:mod:`inertia.kernels.fused`). For ``sigma > 0`` it picks
:class:`CpuNoisyKernel` (below). Without numba the plain in-place kernel runs: the same numbers,
slower.

Same sub-steps, same formulas, same order per element. The plan is the in-place kernel's
(:func:`~inertia.integrators.splitting.reduce_scheme` of the same scheme) and the coefficients are
computed in Python exactly as :class:`~inertia.kernels.inplace.InplaceKernel` computes them
(``a = c dt``, ``kick = -c dt lambda / m`` by :meth:`InplaceKernel._kick`, per step and ``O``
sub-step ``(c1, 1 - c1^2)`` from :func:`~inertia.integrators.splitting.o_coefficients`, so
friction schedules work), cast to the state's dtype as NumPy casts a Python float:

* ``A``: ``theta <- theta + v a``; ``B``: ``v <- v + theta kick``;
* ``O``: ``acc += (1 - c1^2) v^2``, ``v <- v c1``;
* Euler (``euler``, ``euler_maruyama`` at ``sigma = 0``): ``acc += 2 dt gamma v^2``,
  ``work = theta kick``, ``theta <- theta + v dt``, ``v <- v (1 - dt gamma)``, ``v <- v + work``.

Where the in-place kernel skips the booking (``1 - c1^2 = 0``, or ``gamma = 0`` for Euler), the
weight here is 0, which adds exactly 0 unless ``v^2`` is not finite; then the new ``dissipated``
is not finite and the chunk is replayed in place (below), so the result is the in-place one.

Each element update is one rounding per operation, in the in-place kernel's order (numba does not
contract into FMAs without ``fastmath``), so ``theta`` and ``v`` equal the NumPy in-place kernel's
bit for bit, in float32 and float64. What differs is the order of the sums: the friction work is
accumulated per coordinate over the chunk (``acc_j``) and reduced once at the end,
``dissipated += 1/2 sum_j m_j acc_j``, where the in-place kernel reduces ``K = 1/2 sum_j m_j v_j^2``
at every ``O``; the two agree to rounding error.

Recording (issue 11): chunks are cut by :data:`MAX_CHUNK` and the run's end only, not by saved
steps: :func:`run_chunk` writes the kinetic and potential energy and the friction work of every
saved step inside the chunk into its row while the block of paths is in cache
(``records_inside``), so saving every few steps keeps the long chunks.

Divergence: as :class:`~inertia.kernels.fused.FusedKernel`. :meth:`CpuFusedKernel.steps`
writes the chunk into a second pair of buffers and the per-path kinetic energy of the last state;
only when its sum (and the sum of the new ``dissipated``, and ``sum K + sum L`` of every saved
step in the chunk) is finite does it swap the buffers in. Otherwise the state is as before the
chunk and :func:`inertia.simulate` replays the chunk step by step with the in-place
:meth:`~inertia.kernels.inplace.InplaceKernel.step`, which finds the first bad step as the
in-place loop does (assuming, as every blow-up does, that a non-finite kinetic energy stays so to
the end of the chunk), the saved steps of the replay recorded by the driver.

Noisy steps (``sigma > 0``): :class:`CpuNoisyKernel`. A noisy run is bound by the keyed generator,
whose numbers must stay those of the reference loop, so steps are not chunked: its :meth:`step`
takes each ``O`` sub-step's buffer from the run's :class:`~inertia._backend.NoiseStream` exactly
as the in-place kernel does (same keys, same order) and applies the step's sub-steps in one
compiled pass per noise draw (:func:`noisy_pass`: one for ``BAOAB``, ``symplectic_euler`` and
Euler-Maruyama, two for ``leapfrog``, four for ``yoshida4``; a NoiseStream buffer is only valid
until the next take), path by path on the calling thread, while the other core fills the next
key. The in-place kernel's eager arithmetic is some 13 NumPy passes per ``BAOAB`` step. Same
formulas and element order as the in-place kernel (``O``: ``v <- v c1 + xi c2 M^{-1/2}``, two
roundings then the sum), so ``theta`` and ``v`` equal the NumPy in-place kernel's bit for bit;
the friction work and the kinetic energy of the new state (which :meth:`CpuNoisyKernel.kinetic`
returns for the per-step finite check) are row sums in float64 in a vectorised order, equal to
the in-place ones to rounding. Not parallel: in isolation ``prange`` over the paths halves the
pass (B1 float64 about 1.2 against 2.5 ms before the row sums were vectorised), but in a run the
second core is filling noise, which is the bound. Measured on B1 (2 cores,
``noisy_fraction_of_generator``, one process each): NumPy float64 0.71 -> 0.83, float32 1.01 -> 0.96
(the generator rate itself varies by 20 % between runs), torch float32 0.66 -> 0.98.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from inertia._backend import Array, is_torch
from inertia.integrators.splitting import o_coefficients
from inertia.kernels._protocol import Saves
from inertia.kernels.inplace import InplaceKernel

numba: Any
try:  # optional dependency: `pip install computational-inertia[fast]`
    import numba
except ImportError:  # pragma: no cover - ensemble_kernel checks compiled.available() first
    numba = None

__all__ = ["BLOCK_BYTES", "MAX_CHUNK", "CpuFusedKernel", "CpuNoisyKernel", "noisy_pass", "run_chunk", "slots"]

#: Steps per compiled call (a chunk never spans a saved step, so it may be shorter).
MAX_CHUNK = 128
#: Bytes of one array of a block of paths (``theta``, ``v``, the friction work and each kick row
#: of a block stay in L1 through the chunk).
BLOCK_BYTES = 4096

# numba's workqueue threading layer aborts the process on concurrent launches from two Python
# threads; simulate() calls from several threads take turns instead.
_LAUNCH = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def _pjit(fn: F) -> F:
    """``numba.njit(parallel=True, cache=True)`` when numba is installed, else ``fn``."""
    if numba is None:  # pragma: no cover
        return fn
    return numba.njit(parallel=True, cache=True)(fn)  # type: ignore[no-any-return,unused-ignore]


def _prange(n: int) -> range:
    return range(n)  # pragma: no cover - replaced by numba.prange when numba is installed


prange: Callable[[int], Any] = _prange if numba is None else numba.prange


@_pjit
def run_chunk(
    theta: np.ndarray,
    v: np.ndarray,
    diss: np.ndarray,
    theta_out: np.ndarray,
    v_out: np.ndarray,
    diss_out: np.ndarray,
    kin_out: np.ndarray,
    kick: np.ndarray,
    a: np.ndarray,
    has: np.ndarray,
    c1: np.ndarray,
    w: np.ndarray,
    euler: bool,
    mass: np.ndarray,
    lam: np.ndarray,
    save_row: np.ndarray,
    rec_k: np.ndarray,
    rec_p: np.ndarray,
    rec_d: np.ndarray,
) -> None:
    """Step every path ``k = c1.shape[0]`` times from ``(theta, v, diss)`` into the ``*_out`` arrays.

    ``theta``, ``v`` and their outputs are the flat (C-order) ``(n_paths d,)`` views of the
    ``(n_paths, d)`` state, ``d = mass.shape[0]``. A step is a sequence of *slots* (a multiple of
    3 of them), each ``B``, then ``A``, then ``O``, each part present where ``has[s, 0|1|2]``:
    ``B`` ``v <- v + theta kick[s]``; ``A`` ``theta <- theta + v a[s]``; ``O``
    ``acc <- acc + w[i, s] v^2``, ``v <- v c1[i, s]`` (``i`` the step of the chunk). ``kick[s]`` is
    the kick ``-c dt lambda / m`` tiled over a block of ``P = kick.shape[1] / d`` paths. With
    ``euler`` a step is instead the explicit Euler step with ``kick[0]``, ``a[0] = dt``,
    ``c1[i, 0] = 1 - dt gamma``, ``w[i, 0] = 2 dt gamma``. All in the state's dtype.

    Blocks of ``P`` paths (contiguous ``P d`` elements, a few KiB: they stay in L1 for the whole
    chunk) are split over numba's threads; three slots are applied per pass over the block, each
    element held in registers through them (the conditions are the same for every element, so
    the loop vectorises). Writes the new state, ``diss_out = diss + 1/2 sum_j m_j acc_j`` and
    ``kin_out = 1/2 sum_j (v_j m_j) v_j`` of the last state, per path. After step ``i`` with
    ``save_row[i] = r >= 0`` (a saved step inside the chunk) it writes, per path, the kinetic
    energy ``rec_k[r] = 1/2 sum_j (v_j m_j) v_j``, the potential ``rec_p[r] = 1/2 sum_j
    (theta_j lambda_j) theta_j`` and the friction work so far ``rec_d[r] = diss + 1/2 sum_j m_j
    acc_j``, while the block is in cache (so saving often does not cut the chunk). Paths are
    independent: the result does not depend on the threads or on ``P``.
    """
    d = mass.shape[0]
    n_paths = diss.shape[0]
    per_block = kick.shape[1] // d
    k = c1.shape[0]
    n_groups = has.shape[0] // 3
    n_blocks = (n_paths + per_block - 1) // per_block
    for blk in prange(n_blocks):
        p0 = blk * per_block
        p1 = min(n_paths, p0 + per_block)
        m = (p1 - p0) * d
        # views of the block (indices from 0, so that numba's loops vectorise)
        x = theta_out[p0 * d : p1 * d]
        y = v_out[p0 * d : p1 * d]
        x0 = theta[p0 * d : p1 * d]
        y0 = v[p0 * d : p1 * d]
        acc = np.zeros(m, dtype=theta.dtype)
        for e in range(m):
            x[e] = x0[e]
            y[e] = y0[e]
        for i in range(k):
            if euler:
                kk = kick[0]
                cs, cf, ww = a[0], c1[i, 0], w[i, 0]
                for e in range(m):
                    xe = x[e]
                    ye = y[e]
                    acc[e] = acc[e] + ww * (ye * ye)
                    work = xe * kk[e]
                    x[e] = xe + ye * cs
                    y[e] = ye * cf + work
            for g in range(0 if euler else n_groups):
                s = 3 * g
                k0, k1, k2 = kick[s], kick[s + 1], kick[s + 2]
                a0, a1, a2 = a[s], a[s + 1], a[s + 2]
                b0, d0, o0 = has[s, 0], has[s, 1], has[s, 2]
                b1, d1, o1 = has[s + 1, 0], has[s + 1, 1], has[s + 1, 2]
                b2, d2, o2 = has[s + 2, 0], has[s + 2, 1], has[s + 2, 2]
                f0, f1, f2 = c1[i, s], c1[i, s + 1], c1[i, s + 2]
                w0, w1, w2 = w[i, s], w[i, s + 1], w[i, s + 2]
                for e in range(m):
                    xe = x[e]
                    ye = y[e]
                    ae = acc[e]
                    if b0:
                        ye = ye + xe * k0[e]
                    if d0:
                        xe = xe + ye * a0
                    if o0:
                        ae = ae + w0 * (ye * ye)
                        ye = ye * f0
                    if b1:
                        ye = ye + xe * k1[e]
                    if d1:
                        xe = xe + ye * a1
                    if o1:
                        ae = ae + w1 * (ye * ye)
                        ye = ye * f1
                    if b2:
                        ye = ye + xe * k2[e]
                    if d2:
                        xe = xe + ye * a2
                    if o2:
                        ae = ae + w2 * (ye * ye)
                        ye = ye * f2
                    x[e] = xe
                    y[e] = ye
                    acc[e] = ae
            r = save_row[i]
            if r >= 0:
                for q in range(p1 - p0):
                    inc = 0.0
                    kin = 0.0
                    pot = 0.0
                    for j in range(d):
                        ye = y[q * d + j]
                        xe = x[q * d + j]
                        inc += mass[j] * acc[q * d + j]
                        kin += (ye * mass[j]) * ye
                        pot += (xe * lam[j]) * xe
                    rec_d[r, p0 + q] = diss[p0 + q] + 0.5 * inc
                    rec_k[r, p0 + q] = 0.5 * kin
                    rec_p[r, p0 + q] = 0.5 * pot
        for q in range(p1 - p0):
            inc = 0.0
            kin = 0.0
            for j in range(d):
                ye = y[q * d + j]
                inc += mass[j] * acc[q * d + j]
                kin += (ye * mass[j]) * ye
            diss_out[p0 + q] = diss[p0 + q] + 0.5 * inc
            kin_out[p0 + q] = 0.5 * kin


def slots(letters: list[str]) -> list[list[int]]:
    """Pack a step's sub-step letters into slots ``B``, ``A``, ``O`` (each at most once, in that
    order): ``[[index of B or -1, of A, of O], ...]``, e.g. ``BAOAB`` -> ``(BAO)(A)(B)``."""
    out: list[list[int]] = []
    last = 3  # the part filled last in the current slot (3: none open)
    for s, letter in enumerate(letters):
        part = "BAO".index(letter)
        if part <= last:
            out.append([-1, -1, -1])
        out[-1][part] = s
        last = part
    return out


def _numpy_view(x: Array) -> np.ndarray:
    """``x`` itself (NumPy) or the NumPy view sharing a CPU torch tensor's memory."""
    return x.numpy() if is_torch(x) else x


def _flat(x: Array) -> np.ndarray:
    """The flat ``(n_paths d,)`` NumPy view of a C-contiguous ``(n_paths, d)`` buffer."""
    return _numpy_view(x).reshape(-1)


class CpuFusedKernel(InplaceKernel):
    """An :class:`InplaceKernel` (``sigma = 0``, CPU) that can advance ``k`` steps in one numba call.

    :meth:`step`, :meth:`kinetic`, :meth:`potential` and ``dissipated`` are the in-place kernel's
    (used for recording the initial state and for replaying a chunk that diverged);
    :meth:`steps` is the chunk, which records the saved steps inside it (``records_inside``:
    a chunk is cut by :data:`MAX_CHUNK` and the end of the run only, not by saved steps).
    """

    name = "fused_cpu"
    records_inside = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.sigma != 0.0:
            raise ValueError(f"CpuFusedKernel is noise-free: `sigma` must be 0, got {self.sigma:g}")
        self.max_chunk = MAX_CHUNK
        theta = self.theta
        dtype = _numpy_view(theta).dtype
        self._dtype = dtype
        d = int(theta.shape[-1])
        self._euler = self.euler
        # slots (B, A, O) of a step, padded to a multiple of 3; Euler: one slot
        packed = [[-1, -1, -1]] if self._euler else slots([letter for letter, _, _ in self._plan])
        packed += [[-1, -1, -1]] * (-len(packed) % 3)
        n_slots = len(packed)
        self._has = np.array([[i >= 0 for i in slot] for slot in packed], dtype=np.bool_)
        a = np.zeros(n_slots, dtype=np.float64)
        kick = np.zeros((n_slots, d), dtype=dtype)
        self._o_subs: list[tuple[int, float, float]] = []  # (slot, start, c) of each O sub-step
        for slot, (b, drift, o) in enumerate(packed):
            if b >= 0:
                kick[slot] = _numpy_view(self._kick(self._plan[b][1]))  # the in-place kernel's kick
            if drift >= 0:
                a[slot] = self._plan[drift][1] * self.dt
            if o >= 0:
                self._o_subs.append((slot, self._plan[o][2], self._plan[o][1]))
        if self._euler:
            a[0] = self.dt
            kick[0] = _numpy_view(self._kick(1.0))
        self._a = a.astype(dtype)
        itemsize = np.dtype(dtype).itemsize
        self._per_block = max(1, min(int(theta.shape[0]), BLOCK_BYTES // (itemsize * d)))
        self._kick_rows = np.ascontiguousarray(np.tile(kick, (1, self._per_block)))
        # the mass as the in-place kinetic() weighs v: the scalar or the (d,) vector, in the dtype
        mass = np.full(d, self._mass) if self._scalar_mass else _numpy_view(self._mass)
        self._mass_vec = np.ascontiguousarray(mass, dtype=dtype)
        self._lam_vec = np.ascontiguousarray(_numpy_view(self._lam), dtype=dtype)
        self._saves: Saves | None = None
        # the second buffers the chunk is written into (swapped in when it is finite)
        self._spare = (_like(theta), _like(self.v), _like(self.dissipated))
        self._kin = np.empty(int(theta.shape[0]), dtype=dtype)

    def _coefficients(self, n0: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``c1[i, s]`` and ``w[i, s]`` of slot ``s`` of step ``n0 + i``, computed as
        :meth:`InplaceKernel.step` computes them (Python floats), then cast to the dtype. A
        friction work the in-place kernel does not book (``1 - c1^2 = 0``) has ``w = 0``."""
        n_slots = len(self._has)
        c1 = np.ones((k, n_slots), dtype=np.float64)
        w = np.zeros((k, n_slots), dtype=np.float64)
        dt = self.dt
        for i in range(k):
            t = self.t0 + (n0 + i) * dt
            if self._euler:
                gamma = self.friction(t)
                if gamma != 0.0:
                    c1[i, 0] = 1.0 - dt * gamma
                    w[i, 0] = 2.0 * dt * gamma
                continue
            for slot, start, c in self._o_subs:
                c1[i, slot], w[i, slot], _ = o_coefficients(
                    self.friction, self.sigma, t + start * dt, t + (start + c) * dt
                )
        return c1.astype(self._dtype), w.astype(self._dtype)

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None:
        """As :meth:`InplaceKernel.advance`; a chunk writes the rows of its saved steps."""
        self._saves = None if replay else saves
        return super().advance(n0, k, saves, replay)

    def steps(self, n0: int, k: int) -> tuple[int, bool] | None:
        """Advance steps ``n0 .. n0 + k - 1`` in one compiled call, writing the energies of the
        saved steps among them (those :meth:`advance` was given) into their rows.

        Returns ``(gradient evaluations, True)`` after committing the new state when the kinetic
        energy of the last state (and the new ``dissipated``, and ``K + L`` of each saved step)
        sums to a finite value;
        ``(0, False)`` with the state unchanged when it does not (the caller replays the chunk with
        :meth:`step`).
        """
        c1, w = self._coefficients(n0, k)
        theta_out, v_out, diss_out = self._spare
        save_row = np.full(k, -1, dtype=np.int64)
        saved = [(j, row) for j, row in self._saves] if self._saves is not None else []
        for j, row in saved:
            save_row[j - 1] = row
        assert self._rows is not None, "open() the kernel first"
        rec_k, rec_p, rec_d = (_numpy_view(x) for x in self._rows)
        with _LAUNCH:
            run_chunk(
                _flat(self.theta),
                _flat(self.v),
                _numpy_view(self.dissipated),
                _flat(theta_out),
                _flat(v_out),
                _numpy_view(diss_out),
                self._kin,
                self._kick_rows,
                self._a,
                self._has,
                c1,
                w,
                self._euler,
                self._mass_vec,
                self._lam_vec,
                save_row,
                rec_k,
                rec_p,
                rec_d,
            )
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(self._kin.sum()) and np.isfinite(_numpy_view(diss_out).sum())
            rows = [row for _, row in saved]
            if finite and rows:  # a saved step: sum K + sum L finite, as InplaceKernel.record checks
                sums = rec_k[rows].sum(axis=1, dtype=np.float64) + rec_p[rows].sum(axis=1, dtype=np.float64)
                finite = bool(np.all(np.isfinite(sums)))
        if not finite:
            return 0, False
        self._spare = (self.theta, self.v, self.dissipated)
        self.theta, self.v, self.dissipated = theta_out, v_out, diss_out
        return self._advance_grads(k), True


def _like(x: Array) -> Array:
    """An uninitialised buffer shaped and typed like ``x`` (same backend)."""
    if is_torch(x):
        return x.new_empty(x.shape)
    return np.empty_like(x)


# ---------------------------------------------------------------------------------------------
# Noisy steps: one compiled pass per noise draw (see the module docstring)

#: Sub-step codes of :func:`noisy_pass`: drift, kick, exact friction with noise, a whole
#: Euler-Maruyama step.
_A, _B, _O, _EULER = 0, 1, 2, 3


def _njit_serial(fn: F) -> F:
    """``numba.njit(nogil=True, cache=True)`` when numba is installed, else ``fn``."""
    if numba is None:  # pragma: no cover
        return fn
    return numba.njit(nogil=True, cache=True)(fn)  # type: ignore[no-any-return,unused-ignore]


def _half_sq_sum(y: np.ndarray, mass: np.ndarray) -> float:
    """``1/2 sum_j (y_j m_j) y_j`` of one row, summed in float64 in whatever order vectorises
    (``fastmath`` reassociation only: no contraction into FMAs, no other liberties)."""
    acc = 0.0
    for j in range(y.shape[0]):
        acc += (y[j] * mass[j]) * y[j]
    return 0.5 * acc


half_sq_sum = (
    _half_sq_sum
    if numba is None
    else numba.njit(nogil=True, cache=True, fastmath={"reassoc", "nsz"})(_half_sq_sum)
)


def _noisy_pass(
    theta: np.ndarray,
    v: np.ndarray,
    diss: np.ndarray,
    kin: np.ndarray,
    code: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    w: np.ndarray,
    vec: np.ndarray,
    xi: np.ndarray,
    mass: np.ndarray,
    want_kin: bool,
) -> None:
    """Apply the sub-steps ``code`` (at most one of them drawing ``xi``) to every path in place.

    ``theta``, ``v``, ``xi``: ``(n_paths, d)``; per sub-step ``s``: ``A`` ``theta <- theta + v s1``;
    ``B`` ``v <- v + theta vec[s]`` (the kick); ``O``: if ``w != 0``
    ``diss <- diss + w 1/2 sum_j (v_j m_j) v_j``, then ``v <- v s1 + xi vec[s]`` (``vec[s] =
    c2 M^{-1/2}``); Euler-Maruyama: the ``O`` booking, then ``work = theta kick``,
    ``theta <- theta + v s2`` (``dt``), ``v <- v s1 + work + xi vec[s]`` (left to right). Path by
    path (a row of ``d`` elements stays in L1 through the sub-steps); with ``want_kin``, also
    ``kin = 1/2 sum_j (v_j m_j) v_j`` of the final ``v`` per path. All in the state's dtype.
    """
    n_paths = theta.shape[0]
    d = theta.shape[1]
    for p in _serial_range(n_paths):
        x = theta[p]
        y = v[p]
        z = xi[p]
        for s in range(code.shape[0]):
            c = code[s]
            row = vec[s]
            f = s1[s]
            if c == 0:
                for j in range(d):
                    x[j] = x[j] + y[j] * f
            elif c == 1:
                for j in range(d):
                    y[j] = y[j] + x[j] * row[j]
            else:
                ww = w[s]
                if ww != 0.0:
                    diss[p] = diss[p] + ww * half_sq_sum(y, mass)
                if c == 2:
                    for j in range(d):
                        y[j] = y[j] * f + z[j] * row[j]
                else:
                    kick = vec[s + 1]
                    h = s2[s]
                    for j in range(d):
                        xe = x[j]
                        ye = y[j]
                        work = xe * kick[j]
                        x[j] = xe + ye * h
                        y[j] = ye * f + work + z[j] * row[j]
        if want_kin:
            kin[p] = half_sq_sum(y, mass)


_serial_range: Callable[[int], Any] = range
noisy_pass = _njit_serial(_noisy_pass)


class CpuNoisyKernel(InplaceKernel):
    """An :class:`InplaceKernel` (``sigma > 0``, CPU, numba) whose :meth:`step` is compiled.

    The step's sub-steps are cut after each ``O`` into *segments* (the sub-steps before the first
    ``O`` and after the last join the first and last segment): ``BAOAB``, ``symplectic_euler`` and
    Euler-Maruyama are one segment, ``leapfrog`` two, ``yoshida4`` four. Each segment is one call
    of :func:`noisy_pass` on the calling thread (not parallel: the other cores fill the next key
    of the :class:`~inertia._backend.NoiseStream` meanwhile) with the buffer of its ``O`` taken
    just before (the same keys in the same order as :meth:`InplaceKernel.step`; a buffer is only
    valid until the next take, so a segment never holds two). The last segment also writes the
    per-path kinetic energy of the new state, which :meth:`kinetic` returns until the state
    changes again.
    """

    name = "numba_noisy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.sigma <= 0.0:
            raise ValueError(f"CpuNoisyKernel is noisy: `sigma` must be > 0, got {self.sigma:g}")
        theta = self.theta
        dtype = _numpy_view(theta).dtype
        self._dtype = dtype
        d = int(theta.shape[-1])
        self._euler = self.euler
        # segments of sub-steps: (letter, c, start) each; one O per segment
        plan = [("E", 1.0, 0.0)] if self._euler else list(self._plan)
        segments: list[list[tuple[str, float, float]]] = [[]]
        for sub in plan:
            if segments[-1] and segments[-1][-1][0] in "OE":
                segments.append([])
            segments[-1].append(sub)
        if len(segments) > 1 and not any(letter in "OE" for letter, _, _ in segments[-1]):
            segments[-2].extend(segments.pop())
        self._segments: list[tuple[Any, ...]] = []
        for seg in segments:
            n = len(seg) + (1 if self._euler else 0)  # Euler: the kick in the row after its own
            code = np.array(
                [{"A": _A, "B": _B, "O": _O, "E": _EULER}[letter] for letter, _, _ in seg], dtype=np.int8
            )
            s1 = np.zeros(n, dtype=dtype)
            s2 = np.zeros(n, dtype=dtype)
            w = np.zeros(n, dtype=dtype)
            vec = np.zeros((n, d), dtype=dtype)
            for s, (letter, c, _) in enumerate(seg):
                if letter == "A":
                    s1[s] = c * self.dt
                elif letter == "B":
                    vec[s] = _numpy_view(self._kick(c))  # the in-place kernel's kick
            if self._euler:
                s2[0] = self.dt
                vec[1] = _numpy_view(self._kick(1.0))
            self._segments.append((seg, code, s1, s2, w, vec))
        mass = np.full(d, self._mass) if self._scalar_mass else _numpy_view(self._mass)
        self._mass_vec = np.ascontiguousarray(mass, dtype=dtype)
        self._kin = np.empty(int(theta.shape[0]), dtype=dtype)
        self._kin_valid = False

    def step(self, n: int) -> int:
        """Step ``n`` as :meth:`InplaceKernel.step`, one compiled pass per segment."""
        dt = self.dt
        t = self.t0 + n * dt
        theta, v = _numpy_view(self.theta), _numpy_view(self.v)
        diss = _numpy_view(self.dissipated)
        self._kin_valid = False
        last = len(self._segments) - 1
        k = 0
        for i, (seg, code, s1, s2, w, vec) in enumerate(self._segments):
            for s, (letter, c, start) in enumerate(seg):
                if letter == "O":
                    c1, one_minus_c1sq, c2 = o_coefficients(
                        self.friction, self.sigma, t + start * dt, t + (start + c) * dt
                    )
                elif letter == "E":
                    gamma = self.friction(t)
                    c1, one_minus_c1sq = (1.0 - dt * gamma, 2.0 * dt * gamma) if gamma != 0.0 else (1.0, 0.0)
                    c2 = self.sigma * math.sqrt(dt)
                else:
                    continue
                s1[s] = c1
                w[s] = one_minus_c1sq
                vec[s] = self._noise_coef_vec(c2)
            xi = _numpy_view(self._take(n, k))
            k += 1
            noisy_pass(theta, v, diss, self._kin, code, s1, s2, w, vec, xi, self._mass_vec, i == last)
        self._kin_valid = True
        return self._advance_grads(1)

    def _noise_coef_vec(self, c2: float) -> Any:
        """``c2 M^{-1/2}`` as :meth:`InplaceKernel._noise_coef` computes it (before the cast)."""
        if self._scalar_mass:
            return c2 * float(self._inv_sqrt_mass[0])
        return c2 * self._inv_sqrt_mass

    def kinetic(self, out: Array) -> Array:
        """As :meth:`InplaceKernel.kinetic`; after a :meth:`step`, the kinetic energy its last pass
        computed (the same sum in another order)."""
        if not self._kin_valid:
            return super().kinetic(out)
        _numpy_view(out)[...] = self._kin
        return out
