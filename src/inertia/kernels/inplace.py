"""In-place step kernels: the registered integrators on preallocated ``(n_paths, d)`` buffers.

The functional steps of :mod:`inertia.integrators.splitting` and :mod:`inertia.integrators.euler`
return new arrays for every sub-step: with ``n_paths d`` around 10^6 that is some 27 full-array
passes and as many fresh allocations per step, and the allocations (page faults on fresh memory)
make the run time vary from process to process. These kernels step the same schemes with the same
formulas, updating ``theta`` and ``v`` in place:

* splitting schemes (``symplectic_euler``, ``leapfrog``, ``yoshida4``, ``baoab``) are generated
  from the same coefficient sequences (:func:`~inertia.integrators.splitting.reduce_scheme` of the
  same :data:`~inertia.integrators.splitting.BAOAB` etc.): ``A`` is
  ``theta <- theta + c dt v``, ``B`` is ``v <- v - c dt M^{-1} grad L(theta)``, ``O`` is
  ``v <- c1 v + c2 M^{-1/2} xi`` with ``(c1, 1 - c1^2, c2)`` from
  :func:`~inertia.integrators.splitting.o_coefficients` (computed in Python per sub-step, so
  friction schedules work as in the functional step), and the friction work ``(1 - c1^2) K`` of
  the ``v`` entering each ``O`` is added to the per-path ``dissipated`` buffer;
* ``euler`` / ``euler_maruyama``: ``theta_{n+1} = theta_n + dt v_n``,
  ``v_{n+1} = (1 - dt gamma(t_n)) v_n - dt M^{-1} grad L(theta_n) + sigma sqrt(dt) M^{-1/2} xi_n``,
  friction work ``2 dt gamma(t_n) K(v_n)``.

The noise comes from :class:`inertia._backend.NoiseStream`, i.e. the same keyed numbers
``normal((seed, step, substep), ...)`` the functional steps draw, so a kernel and the functional
step agree to rounding error (the order of floating-point operations differs a little, e.g.
``(1 - dt gamma) v`` against ``v - dt gamma v``). Gradient evaluations are counted as the
functional step counts them (a ``B`` re-evaluates only after ``theta`` moved).

Potentials: those whose gradient is a per-coordinate product, ``grad L = lambda * theta``
(:class:`~inertia.potentials.Quadratic` with a diagonal), so a kick is one fused multiply-add and
``L = 1/2 sum lambda theta^2``. Backends: NumPy and torch (any device), float32 and float64.
:func:`ensemble_buffers` returns ``None`` for anything else and the table of
:mod:`inertia.kernels` then picks another kernel (the generic ``functional`` one).

Fast paths. Two subclasses of :class:`InplaceKernel` add a ``steps(n0, k)`` that advances a
chunk of steps in one compiled call (same sub-steps, same coefficients; :meth:`InplaceKernel.step`
stays for recording and for replaying a chunk that diverged), and
:func:`inertia.kernels.ensemble_kernel` picks them:
:class:`~inertia.kernels.fused.FusedKernel` for torch tensors on CUDA (``torch.compile``,
with or without noise), and :class:`~inertia.kernels.fused_cpu.CpuFusedKernel` for
``sigma = 0`` on CPU (NumPy or CPU torch) when numba is installed (a numba loop over blocks of
paths; without numba, this kernel). Noisy CPU runs with numba get
:class:`~inertia.kernels.fused_cpu.CpuNoisyKernel`, whose :meth:`step` is one compiled pass
per noise draw with the same keyed noise (no ``steps``: one step at a time); without numba, this
kernel.

Why per-backend code here. STYLE.md asks for one core written against the Array API with no
``if torch`` branches, but the Array API has no in-place or ``out=`` arithmetic (its arrays may be
immutable), and the two backends spell the fast forms differently: torch has fused in-place
``add_(x, alpha=a)`` and ``addcmul_`` (one pass over memory), NumPy needs ``out=`` ufuncs and a
scratch buffer (two passes), and the fastest row-wise sums differ (``einsum`` in NumPy,
``mul`` + ``mv`` in torch). Clarity wins by writing each kernel once against six operations
(:class:`_Ops`) with one short implementation per backend, rather than interleaving both spellings
in every kernel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inertia._backend import Array, NoiseStream, constant_like, is_torch, to_numpy
from inertia.dynamics import Friction
from inertia.integrators import get_method
from inertia.integrators.euler import EULER_STEP
from inertia.integrators.splitting import o_coefficients, reduce_scheme
from inertia.kernels._protocol import Saves
from inertia.potentials import Potential, Quadratic

__all__ = ["InplaceKernel", "diagonal_hessian", "ensemble_buffers"]


def diagonal_hessian(potential: Potential) -> np.ndarray | None:
    """``lambda`` when ``grad L(theta) = lambda * theta`` per coordinate, else ``None``.

    Exactly :class:`~inertia.potentials.Quadratic` built from ``eigenvalues`` (a subclass may
    override the gradient, so it is not trusted).
    """
    if type(potential) is Quadratic and potential.diagonal is not None:
        return np.asarray(potential.diagonal, dtype=np.float64)
    return None


class _Ops:
    """The six in-place operations the kernels use (``a``: a float or a ``(d,)`` array).

    * ``axpy(y, a, x)``: ``y += a * x``;
    * ``mul_into(out, x, a)``: ``out = a * x``;
    * ``add(y, x)``: ``y += x``;
    * ``scale(y, a)``: ``y *= a`` (``a`` a float);
    * ``sq_sum(x, w, out)``: ``out_i = 1/2 sum_j (w_j x_ij) x_ij`` (``w`` a float or a ``(d,)``
      array; in the order of :func:`inertia.energy.kinetic`, so it overflows where that does);
    * ``accumulate(acc, a, k)``: ``acc += a * k`` for ``(n_paths,)`` vectors (``k`` may be overwritten).
    """

    def axpy(self, y: Array, a: Any, x: Array) -> None:
        raise NotImplementedError

    def mul_into(self, out: Array, x: Array, a: Any) -> None:
        raise NotImplementedError

    def add(self, y: Array, x: Array) -> None:
        raise NotImplementedError

    def scale(self, y: Array, a: float) -> None:
        raise NotImplementedError

    def sq_sum(self, x: Array, w: Array, out: Array) -> None:
        raise NotImplementedError

    def accumulate(self, acc: Array, a: float, k: Array) -> None:
        raise NotImplementedError


class _NumpyOps(_Ops):
    """NumPy: ``out=`` ufuncs through one ``(n_paths, d)`` scratch; ``einsum`` for row sums."""

    def __init__(self, like: np.ndarray) -> None:
        self.tmp = np.empty_like(like)

    def axpy(self, y: Array, a: Any, x: Array) -> None:
        np.multiply(x, a, out=self.tmp)
        np.add(y, self.tmp, out=y)

    def mul_into(self, out: Array, x: Array, a: Any) -> None:
        np.multiply(x, a, out=out)

    def add(self, y: Array, x: Array) -> None:
        np.add(y, x, out=y)

    def scale(self, y: Array, a: float) -> None:
        np.multiply(y, a, out=y)

    def sq_sum(self, x: Array, w: Any, out: Array) -> None:
        if isinstance(w, float) and w == 1.0:
            np.einsum("ij,ij->i", x, x, out=out)
        else:
            np.multiply(x, w, out=self.tmp)
            np.einsum("ij,ij->i", self.tmp, x, out=out)
        np.multiply(out, 0.5, out=out)

    def accumulate(self, acc: Array, a: float, k: Array) -> None:
        np.multiply(k, a, out=k)
        np.add(acc, k, out=acc)


class _TorchOps(_Ops):
    """torch: fused in-place ``add_``/``addcmul_``; row sums as ``mul`` + ``mv`` into buffers."""

    def __init__(self, like: Any) -> None:
        self.tmp = like.new_empty(like.shape)

    def axpy(self, y: Array, a: Any, x: Array) -> None:
        if isinstance(a, float):
            y.add_(x, alpha=a)
        else:
            y.addcmul_(x, a)

    def mul_into(self, out: Array, x: Array, a: Any) -> None:
        import torch

        torch.mul(x, a, out=out)

    def add(self, y: Array, x: Array) -> None:
        y.add_(x)

    def scale(self, y: Array, a: float) -> None:
        y.mul_(a)

    def sq_sum(self, x: Array, w: Any, out: Array) -> None:
        import torch

        if isinstance(w, float) and w == 1.0:
            torch.mul(x, x, out=self.tmp)
        else:
            torch.mul(x, w, out=self.tmp).mul_(x)
        torch.sum(self.tmp, dim=-1, out=out)  # not mv: BLAS row sums may depend on n_paths
        out.mul_(0.5)

    def accumulate(self, acc: Array, a: float, k: Array) -> None:
        acc.add_(k, alpha=a)


class InplaceKernel:
    """Steps ``theta`` and ``v`` (owned ``(n_paths, d)`` buffers) of one run in place.

    Built by :func:`inertia.kernels.ensemble_kernel`. :meth:`step` advances one step and adds
    the step's friction work to ``dissipated``; :meth:`kinetic` and :meth:`potential` write
    ``K = 1/2 sum_j m_j v_j^2`` and ``L = 1/2 sum_j lambda_j theta_j^2`` per path into a
    ``(n_paths,)`` buffer.

    The kernel protocol of :mod:`inertia.kernels` (``open``, ``advance``, ``record``,
    ``energies``, ``close``) is implemented here once for every in-place kernel: a subclass with
    a ``steps(n0, k)`` chunk (:class:`~inertia.kernels.fused.FusedKernel`,
    :class:`~inertia.kernels.fused_cpu.CpuFusedKernel`) sets ``max_chunk`` and draws its own
    keyed noise from ``seed``; the others step one step per call with the noise of a
    :class:`~inertia._backend.NoiseStream`. The energies are recorded into ``(n_rows, n_paths)``
    buffers of the state's backend, dtype and device, copied to the host once, by
    :meth:`energies`.
    """

    name = "inplace"
    #: steps per :meth:`advance` (a chunk never spans a saved step: ``records_inside`` is False)
    max_chunk = 1
    records_inside = False

    def __init__(
        self,
        method: str,
        lam: np.ndarray,
        theta: Array,
        v: Array,
        *,
        mass: Any,
        friction: Friction,
        sigma: float,
        dt: float,
        t0: float,
    ) -> None:
        self.method = method
        self.theta, self.v = theta, v
        self.ops: _Ops = _TorchOps(theta) if is_torch(theta) else _NumpyOps(theta)
        self.friction, self.sigma, self.dt, self.t0 = friction, sigma, dt, t0
        d = int(theta.shape[-1])
        m = np.array(np.broadcast_to(np.asarray(mass, dtype=np.float64), (d,)))
        self._inv_mass = 1.0 / m
        self._scalar_mass = np.asarray(mass).ndim == 0
        self._inv_sqrt_mass = 1.0 / np.sqrt(m)
        self._mass: Any = float(m[0]) if self._scalar_mass else constant_like(m, theta)
        self._lam = constant_like(lam, theta)
        self._lam_over_m = lam * self._inv_mass
        self._kicks: dict[float, Array] = {}
        self._noise_scale: tuple[float, Any] | None = None
        self.dissipated = _zeros(theta, (int(theta.shape[0]),))
        self._k = _zeros(theta, (int(theta.shape[0]),))
        self._work: Array = None
        self._grad_fresh = False  # the gradient at the current theta has been evaluated
        self.noise: NoiseStream | None = None
        scheme = get_method(method).kernel_scheme
        self.euler = scheme == EULER_STEP
        if scheme is None:
            raise ValueError(f"no in-place kernel for method {method!r}: it declares no scheme")
        if not self.euler:
            steps = reduce_scheme(scheme, drop_friction=friction.is_zero() and sigma == 0.0)
            plan: list[tuple[str, float, float]] = []
            acc = 0.0  # start of each O sub-step as a fraction of dt (they tile [0, 1] in order)
            for letter, c in steps:
                plan.append((letter, c, acc))
                if letter == "O":
                    acc += c
            self._plan = plan
            self.n_noise = sum(1 for letter, _, _ in plan if letter == "O") if sigma > 0.0 else 0
        else:
            self._plan = []
            self.n_noise = 1 if sigma > 0.0 else 0
            self._work = theta.new_empty(theta.shape) if is_torch(theta) else np.empty_like(theta)
        self.n_grad = 0
        self.seed = 0
        self.row_offset = 0  # the global index of this kernel's first path (a distributed rank)
        self._rows: tuple[Array, Array, Array] | None = None
        self._stream: Any = None

    def _count_grads(self, fresh: bool) -> tuple[int, bool]:
        """``(gradients, fresh after)`` of one step, counted as :meth:`InplaceKernel.step` counts."""
        if self.euler:
            return 1, False
        n = 0
        for letter, _, _ in self._plan:
            if letter == "A":
                fresh = False
            elif letter == "B" and not fresh:
                n += 1
                fresh = True
        return n, fresh

    def _advance_grads(self, k: int) -> int:
        """Book ``k`` steps taken outside :meth:`step` (a compiled chunk): the gradient evaluations
        they count, as :meth:`step` would have counted them, updating the gradient cache flag."""
        n_grad, fresh = 0, self._grad_fresh
        for _ in range(k):
            count, fresh = self._count_grads(fresh)
            n_grad += count
        self._grad_fresh = fresh
        return n_grad

    def noise_keys(self, initial_step: int, n_steps: int) -> list[tuple[int, int]] | Any:
        """The ``(step, substep)`` of every draw of ``n_steps`` steps from ``initial_step``, in order."""
        return ((n, k) for n in range(initial_step, initial_step + n_steps) for k in range(self.n_noise))

    def _kick(self, c: float) -> Array:
        """The ``(d,)`` vector ``-c dt lambda / m`` (cached per ``c``)."""
        kick = self._kicks.get(c)
        if kick is None:
            kick = constant_like(-(c * self.dt) * self._lam_over_m, self.theta)
            self._kicks[c] = kick
        return kick

    def _noise_coef(self, c2: float) -> Any:
        """``c2 M^{-1/2}``: a float for a scalar mass, else a ``(d,)`` array (cached per ``c2``)."""
        if self._scalar_mass:
            return c2 * float(self._inv_sqrt_mass[0])
        if self._noise_scale is None or self._noise_scale[0] != c2:
            self._noise_scale = (c2, constant_like(c2 * self._inv_sqrt_mass, self.theta))
        return self._noise_scale[1]

    def _book(self, weight: float) -> None:
        """``dissipated += weight * K(v)`` for the current ``v``."""
        self.ops.sq_sum(self.v, self._mass, self._k)
        self.ops.accumulate(self.dissipated, weight, self._k)

    def _take(self, n: int, k: int) -> Array:
        assert self.noise is not None, "a noisy kernel needs its NoiseStream"
        return self.noise.take(n, k)

    def step(self, n: int) -> int:
        """Advance ``theta``, ``v`` by step ``n`` (from ``t_n = t0 + n dt``); return the gradient count."""
        if self.euler:
            return self._euler_step(n)
        ops, theta, v, dt = self.ops, self.theta, self.v, self.dt
        t = self.t0 + n * dt
        n_grad = 0
        n_noise = 0
        for letter, c, start in self._plan:
            if letter == "A":
                ops.axpy(theta, c * dt, v)
                self._grad_fresh = False
            elif letter == "B":
                if not self._grad_fresh:
                    n_grad += 1
                    self._grad_fresh = True
                ops.axpy(v, self._kick(c), theta)
            else:  # "O"
                c1, one_minus_c1sq, c2 = o_coefficients(
                    self.friction, self.sigma, t + start * dt, t + (start + c) * dt
                )
                if one_minus_c1sq != 0.0:
                    self._book(one_minus_c1sq)
                if c1 != 1.0:
                    ops.scale(v, c1)
                if self.sigma > 0.0:
                    ops.axpy(v, self._noise_coef(c2), self._take(n, n_noise))
                    n_noise += 1
        return n_grad

    def _euler_step(self, n: int) -> int:
        ops, theta, v, dt = self.ops, self.theta, self.v, self.dt
        gamma = self.friction(self.t0 + n * dt)
        if gamma != 0.0:
            self._book(2.0 * dt * gamma)
        ops.mul_into(self._work, theta, self._kick(1.0))  # -dt M^{-1} grad L(theta_n)
        ops.axpy(theta, dt, v)
        if gamma != 0.0:
            ops.scale(v, 1.0 - dt * gamma)
        ops.add(v, self._work)
        if self.sigma > 0.0:
            ops.axpy(v, self._noise_coef(self.sigma * math.sqrt(dt)), self._take(n, 0))
        self._grad_fresh = False
        return 1

    def kinetic(self, out: Array) -> Array:
        """``out_i = 1/2 sum_j m_j v_ij^2``; returns ``out``."""
        self.ops.sq_sum(self.v, self._mass, out)
        return out

    def potential(self, out: Array) -> Array:
        """``out_i = L(theta_i) = 1/2 sum_j lambda_j theta_ij^2``; returns ``out``."""
        self.ops.sq_sum(self.theta, self._lam, out)
        return out

    # --- the kernel protocol (inertia.kernels) ---------------------------------------------

    def open(self, seed: int, initial_step: int, n_steps: int, n_rows: int) -> None:
        """Allocate the record buffers and, for a one-step noisy kernel, start its noise stream
        (the next key filled while the arithmetic runs; torch's intra-op threads set to one
        meanwhile, see :func:`inertia._backend.serial_arithmetic`)."""
        import contextlib

        from inertia._backend import serial_arithmetic

        n_paths = int(self.theta.shape[0])
        self._rows = (
            _empty(self.theta, (n_rows, n_paths)),
            _empty(self.theta, (n_rows, n_paths)),
            _empty(self.theta, (n_rows, n_paths)),
        )
        self._check = _empty(self.theta, (n_paths,))
        self.seed = seed
        self._exit = contextlib.ExitStack()
        if self.n_noise and n_steps and not callable(getattr(self, "steps", None)):
            stream = NoiseStream(
                seed, self.noise_keys(initial_step, n_steps), self.theta, row_offset=self.row_offset
            )
            self._exit.callback(stream.close)
            self.noise = stream
            if stream.threads > 1:
                self._exit.enter_context(serial_arithmetic(self.theta))

    def close(self) -> None:
        """Stop the noise stream (its threads joined) and restore torch's threads."""
        self.noise = None
        self._exit.close()

    def advance(self, n0: int, k: int, saves: Saves, replay: bool = False) -> int | None:
        """Steps ``n0 .. n0 + k - 1``: ``None`` when the state stayed finite; ``j`` when the state
        after step ``n0 + j - 1`` is the first non-finite one (the state is left there); ``0`` when
        a chunk went non-finite somewhere and the state is as before it (the driver replays it
        with ``replay=True``, one step per call). A step whose state is saved (``saves``) is not
        checked here: :meth:`record` checks its energies."""
        if not replay and callable(getattr(self, "steps", None)):
            done = self.steps(n0, k)  # type: ignore[attr-defined]
            if done is not None:
                n_grad, finite = done
                if not finite:
                    return 0
                self.n_grad += n_grad
                return None
            # the compiled chunk is unavailable (logged): step in place from here on
            self.max_chunk = 1
        for j in range(k):
            self.n_grad += self.step(n0 + j)
            if j == k - 1 and saves:
                return None
            if not math.isfinite(float(self.kinetic(self._check).sum())):
                return j + 1
        return None

    def record(self, row: int) -> bool:
        """Write ``K``, ``L`` and ``dissipated`` of the current state into ``row``; True when
        ``sum K + sum L`` is finite (one host synchronisation)."""
        assert self._rows is not None, "open() the kernel first"
        kin, pot, diss = self._rows
        self.kinetic(kin[row])
        self.potential(pot[row])
        diss[row] = self.dissipated
        return _finite_total(kin[row], pot[row])

    def energies(self, n_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first ``n_rows`` recorded rows of ``K``, ``L`` and ``dissipated`` on the host."""
        assert self._rows is not None, "open() the kernel first"
        kin, pot, diss = (to_numpy(x[:n_rows]) for x in self._rows)
        return kin, pot, diss


def _finite_total(kin: Array, pot: Array) -> bool:
    """``sum K + sum L`` is finite (summed as Python floats), with one host synchronisation."""
    if is_torch(kin):
        import torch

        total = torch.stack((kin.sum(), pot.sum())).double().sum()
        return math.isfinite(float(total))
    return math.isfinite(float(kin.sum()) + float(pot.sum()))


def _empty(like: Array, shape: tuple[int, ...]) -> Array:
    """An uninitialised array of ``shape`` in ``like``'s backend, dtype and device."""
    if is_torch(like):
        return like.new_empty(shape)
    return np.empty(shape, dtype=like.dtype)


def _zeros(like: Array, shape: tuple[int, ...]) -> Array:
    if is_torch(like):
        return like.new_zeros(shape)
    return np.zeros(shape, dtype=like.dtype)


def _supported_array(x: Array) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype in (np.float32, np.float64)
    if is_torch(x):
        import torch

        return x.dtype in (torch.float32, torch.float64)
    return False


def ensemble_buffers(
    method: str, potential: Potential, theta: Array, v: Array
) -> tuple[np.ndarray, Array, Array] | None:
    """``(lambda, theta buffer, v buffer)`` when an in-place kernel can step this run (a diagonal
    quadratic, a method with a kernel scheme, NumPy or torch float32/float64 of one type), the
    buffers being owned contiguous copies; else ``None``."""
    lam = diagonal_hessian(potential)
    if lam is None or get_method(method).kernel_scheme is None or not _supported_array(theta):
        return None
    if type(v) is not type(theta) or v.dtype != theta.dtype:
        return None
    return lam, _owned(theta), _owned(v)


def _owned(x: Array) -> Array:
    """A contiguous copy of ``x`` that the kernel may update in place (detached from autograd)."""
    if is_torch(x):
        return x.detach().clone(memory_format=_contiguous())
    return np.array(x, order="C", copy=True)


def _contiguous() -> Any:
    import torch

    return torch.contiguous_format
