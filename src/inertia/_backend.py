"""Array backends: one namespace lookup, conversions, and the keyed noise source.

The numerical core is written once against the Python Array API standard through
``array-api-compat``; NumPy is the default backend and PyTorch tensors (CPU or CUDA) go
through the same code. The only per-backend code of the core lives here (and, for the in-place
ensemble kernels, behind the small helper set of :mod:`inertia.kernels.inplace`):

* :func:`to_numpy` copies a (possibly device) array to a NumPy array for recording;
* :func:`normal_into` fills an array with standard normals from a *keyed* stream, and
  :func:`normal` allocates and fills. The draw for ``key = (seed, step, substep)`` is a pure
  function of the key, so runs are reproducible, can be split in chunks or resumed;
* :class:`NoiseStream` fills the keys of a run in order, block by block on a few threads and
  one key ahead, for the in-place loop of :func:`inertia.simulate`.

Keyed blocks (CPU). An ``(n_rows, *rest)`` draw is cut along its first axis into blocks of
``P = block_rows(r)`` rows, ``r = prod(rest)`` (``P = 16 max(1, 2^14 // r)``: about 2^18 numbers
per block, and ``P r`` a multiple of 16). Block ``b`` (rows ``b P ... b P + P - 1``) is drawn from
its own generator keyed by ``(seed, step, substep, b)``, so row ``i`` depends only on
``(seed, step, substep, i)`` and on ``r``: not on ``n_rows``, and not on how many threads fill the
blocks. The generators, chosen by measured rate (normals/s on one core, construction included):

* NumPy float32/float64, and torch CPU float64: ``numpy.random.SFC64`` seeded with
  ``SeedSequence((seed, step, substep, b))`` (SFC64 is the fastest NumPy bit generator here:
  0.13 G/s against Philox's 0.08-0.09 G/s; construction ~10 us per block of ~2 ms). Torch CPU
  float64 tensors are filled through ``Tensor.numpy()`` (shared memory): twice torch's own float64
  ``normal_`` (0.057 G/s), and the same numbers as NumPy for the same seed;
* torch CPU, other dtypes (float32: 0.29 G/s per core): a ``torch.Generator`` per block seeded
  with :func:`stream_key`. Torch's CPU ``normal_`` transforms uniforms in groups of 16 and redraws
  the last 16 values when the size is not a multiple of 16; full blocks are multiples of 16 and a
  last partial block is drawn into a padded scratch, so element ``i`` only depends on its group;
* other devices (CUDA): one generator per ``(seed, step, substep)`` (no blocks); the same device
  reproduces the same numbers, but row ``i`` may depend on ``n_rows``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import array_api_compat
import numpy as np

Array = Any  # an Array-API array (numpy.ndarray, torch.Tensor, ...)

__all__ = [
    "Array",
    "NoiseStream",
    "array_namespace",
    "block_rows",
    "constant_like",
    "is_torch",
    "normal",
    "normal_into",
    "serial_arithmetic",
    "stream_key",
    "to_numpy",
]


def array_namespace(*arrays: Array) -> Any:
    """Return the Array-API namespace shared by ``arrays`` (``array_api_compat.numpy`` for NumPy)."""
    return array_api_compat.array_namespace(*arrays)


def is_torch(x: Any) -> bool:
    """True if ``x`` is a torch tensor (checked without importing torch)."""
    return array_api_compat.is_torch_array(x)


def to_numpy(x: Array) -> np.ndarray:
    """Copy ``x`` (any backend, any device) into a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(array_api_compat.to_device(x, "cpu"))


def constant_like(values: Any, ref: Array) -> Array:
    """Return ``values`` as an array of ``ref``'s namespace, dtype and device."""
    xp = array_namespace(ref)
    return xp.asarray(np.asarray(values), dtype=ref.dtype, device=array_api_compat.device(ref))


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 31)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, step: int, substep: int, block: int = 0) -> int:
    """A 63-bit key mixing ``(seed, step, substep, block)`` (a splitmix64 chain)."""
    z = _splitmix64(_splitmix64(_splitmix64(seed) ^ step) ^ substep)
    return _splitmix64(z ^ block) >> 1


#: Threads that fill noise blocks in :class:`NoiseStream` when the caller does not say; the
#: numbers never depend on it (tests set it to compare 1 and 2 threads).
NOISE_THREADS = min(2, os.cpu_count() or 1)

#: Below this many numbers per draw, :class:`NoiseStream` fills on the calling thread.
_THREAD_MIN_SIZE = 1 << 16

Key = tuple[int, int, int]


def block_rows(row_size: int) -> int:
    """Rows per keyed noise block for rows of ``row_size`` numbers: ``16 max(1, 2^14 // row_size)``.

    About ``2^18`` numbers per block (so a generator's construction is negligible and two threads
    have work to share from ``n_paths d >= 2^19``), and ``block_rows(r) * r`` is a multiple of 16.

    Example:
        >>> block_rows(100), block_rows(1), block_rows(10**6)
        (2608, 262144, 16)
    """
    return 16 * max(1, (1 << 14) // max(1, row_size))


class _Filler:
    """How to fill one array with keyed normals: its row view, its blocks, its generator kind.

    With ``row_offset`` the array holds rows ``row_offset ...`` of a larger draw (one rank's
    slice of an ensemble): on CPU it gets exactly those rows' numbers (its blocks are the global
    blocks that meet the slice; a block entered in its middle is drawn from its start and the
    head dropped); on a device, a generator keyed with the offset as well.
    """

    def __init__(self, out: Array, row_offset: int = 0) -> None:
        shape = tuple(int(n) for n in out.shape)
        rows = shape[0] if shape else 1
        row_size = math.prod(shape[1:]) if shape else 1
        self.out = out
        self.size = rows * row_size
        self.rows = rows
        self.row_size = row_size
        self.rows_per_block = block_rows(row_size)
        self.row_offset = int(row_offset)
        self.first_block = self.row_offset // self.rows_per_block
        last_block = (self.row_offset + rows - 1) // self.rows_per_block
        self.n_blocks = max(1, last_block - self.first_block + 1) if self.size else 0
        self.scratch: Any = None
        if isinstance(out, np.ndarray):
            if not out.flags.c_contiguous:
                raise ValueError("`out` must be C-contiguous")
            self.kind = "numpy"
            self.flat: Any = out.reshape(-1)
        elif is_torch(out):
            if not out.is_contiguous():
                raise ValueError("`out` must be contiguous")
            if out.device.type != "cpu":
                self.kind = "device"
                self.n_blocks = 1 if self.size else 0
                self.flat = out.view(-1)
            elif out.dtype == _torch().float64:
                self.kind = "numpy"
                self.flat = out.detach().view(-1).numpy()  # shares memory with `out`
            else:
                self.kind = "torch"
                self.flat = out.detach().view(-1)
        else:
            raise TypeError(
                f"no noise source for arrays of type {type(out).__name__}; supported: numpy, torch"
            )

    def fill_block(self, key: Key, b: int) -> None:
        """Fill the ``b``-th block of this array from its own generator keyed by ``(*key, B)``,
        ``B`` the block's index in the whole draw."""
        seed, step, substep = key
        if self.kind == "device":
            gen = _torch().Generator(device=self.out.device)
            gen.manual_seed(stream_key(seed, step, substep, self.row_offset))
            self.flat.normal_(generator=gen)
            return
        rpb, rs = self.rows_per_block, self.row_size
        gb = self.first_block + b  # the block of the whole draw
        first = max(gb * rpb, self.row_offset)  # its first row in this array (global index)
        stop = min((gb + 1) * rpb, self.row_offset + self.rows)
        view = self.flat[(first - self.row_offset) * rs : (stop - self.row_offset) * rs]
        skip = (first - gb * rpb) * rs  # numbers of the block before this array's rows
        if skip:
            self._fill_tail(seed, step, substep, gb, skip, view)
            return
        b = gb
        if self.kind == "numpy":
            gen = np.random.Generator(np.random.SFC64(np.random.SeedSequence((seed, step, substep, b))))
            if view.dtype in (np.float32, np.float64):
                gen.standard_normal(out=view, dtype=view.dtype)
            else:
                view[...] = gen.standard_normal(view.shape)
            return
        torch = _torch()
        gen = torch.Generator()
        gen.manual_seed(stream_key(seed, step, substep, b))
        n = int(view.shape[0])
        padded = max(16, -(-n // 16) * 16)
        if padded == n:
            view.normal_(generator=gen)
        else:  # a last partial block: draw whole groups of 16 (see the module docstring)
            if self.scratch is None or int(self.scratch.shape[0]) < padded:
                self.scratch = torch.empty(padded, dtype=view.dtype)
            self.scratch[:padded].normal_(generator=gen)
            view.copy_(self.scratch[:n])

    def _fill_tail(self, seed: int, step: int, substep: int, gb: int, skip: int, view: Any) -> None:
        """``view`` = numbers ``skip ...`` of block ``gb``: the block's head drawn and dropped (both
        generators give a prefix of a longer draw: NumPy's sequentially, torch's in groups of 16)."""
        n = skip + int(view.shape[0])
        if self.kind == "numpy":
            gen = np.random.Generator(np.random.SFC64(np.random.SeedSequence((seed, step, substep, gb))))
            dtype = view.dtype if view.dtype in (np.float32, np.float64) else np.float64
            view[...] = gen.standard_normal(n, dtype=dtype)[skip:]
            return
        torch = _torch()
        gen = torch.Generator()
        gen.manual_seed(stream_key(seed, step, substep, gb))
        scratch = torch.empty(max(16, -(-n // 16) * 16), dtype=view.dtype)
        scratch.normal_(generator=gen)
        view.copy_(scratch[skip:n])


def _torch() -> Any:
    import torch

    return torch


def normal_into(key: Key, out: Array, *, threads: int = 1, row_offset: int = 0) -> Array:
    """Fill ``out`` in place with standard normals ``N(0, 1)`` keyed by ``key = (seed, step, substep)``.

    The result is a deterministic function of ``key``, ``out.shape`` and ``out.dtype`` (and, on
    CUDA, the device): on CPU row ``i`` (the first axis) depends only on ``(key, i)`` and the row
    size (keyed blocks of :func:`block_rows` rows, see the module docstring), so the first rows
    do not depend on how many rows are drawn, and ``threads`` (worker threads sharing the blocks)
    never changes the numbers. ``out`` must be contiguous; NumPy arrays and torch tensors. With
    ``row_offset``, ``out`` gets rows ``row_offset ... row_offset + len(out) - 1`` of the draw
    (on CPU exactly those rows of a draw of more rows: how one rank of a distributed ensemble
    draws the noise of its slice of the paths; on a device, its own generator keyed with the
    offset).

    Returns:
        ``out``.

    Example:
        >>> import numpy as np
        >>> a = normal_into((1, 0, 0), np.empty((3, 2)))
        >>> bool(np.array_equal(a, normal_into((1, 0, 0), np.empty((5, 2)), threads=2)[:3]))
        True
    """
    filler = _Filler(out, row_offset)
    threads = min(int(threads), filler.n_blocks)
    if threads <= 1:
        for b in range(filler.n_blocks):
            filler.fill_block(key, b)
        return out
    with ThreadPoolExecutor(threads, thread_name_prefix="inertia-noise") as pool:
        for f in [pool.submit(filler.fill_block, key, b) for b in range(filler.n_blocks)]:
            f.result()
    return out


def normal(key: Key, shape: tuple[int, ...], ref: Array, *, row_offset: int = 0) -> Array:
    """Standard normals of ``shape`` for ``key = (seed, step, substep)``, in ``ref``'s backend,
    dtype and device: a new array filled by :func:`normal_into` (the same numbers).

    Example:
        >>> import numpy as np
        >>> normal((1, 0, 0), (4, 3), np.zeros(1)).shape
        (4, 3)
    """
    if isinstance(ref, np.ndarray):
        dtype = ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64
        return normal_into(key, np.empty(shape, dtype=dtype), row_offset=row_offset)
    if is_torch(ref):
        torch = _torch()
        return normal_into(key, torch.empty(shape, dtype=ref.dtype, device=ref.device), row_offset=row_offset)
    raise TypeError(f"no noise source for arrays of type {type(ref).__name__}; supported: numpy, torch")


class NoiseStream:
    """The keyed normals of one run, filled in order into reusable buffers, one key ahead.

    ``keys`` lists the ``(step, substep)`` of every draw of the run in the order they will be
    taken; :meth:`take` returns a buffer holding exactly ``normal_into((seed, step, substep),
    like-shaped buffer)`` (the same numbers as :func:`normal`). ``threads`` (default
    :data:`NOISE_THREADS`) threads fill the blocks of a key: ``threads - 1`` workers and the
    caller. With ``prefetch`` the workers start on the next key in a second buffer as soon as a
    key is taken, while the caller computes; when the caller takes that key it fills the blocks no
    worker has started yet (from the last) and waits for the others, so the work is shared
    whatever the balance between noise and arithmetic. A returned buffer stays valid until the
    next call of :meth:`take`. Small draws (under 2^16 numbers) and device arrays are filled by
    the caller alone. ``row_offset``: the buffers hold rows ``row_offset ...`` of the draw (see
    :func:`normal_into`). Use it as a context manager (or call :meth:`close`): the workers are joined
    when it closes, also after an exception.

    Example:
        >>> import numpy as np
        >>> with NoiseStream(7, [(0, 0), (1, 0)], np.zeros((3, 2))) as noise:
        ...     a = noise.take(0, 0).copy()
        >>> bool(np.array_equal(a, normal((7, 0, 0), (3, 2), np.zeros(1))))
        True
    """

    def __init__(
        self,
        seed: int,
        keys: Iterable[tuple[int, int]],
        like: Array,
        *,
        threads: int | None = None,
        prefetch: bool = True,
        row_offset: int = 0,
    ) -> None:
        self.seed = int(seed)
        self._keys: Iterator[tuple[int, int]] = iter(keys)
        threads = NOISE_THREADS if threads is None else int(threads)
        first = _empty_like(like)
        filler = _Filler(first, row_offset)
        alone = filler.kind == "device" or filler.size < _THREAD_MIN_SIZE
        self.threads = 1 if alone else max(1, min(threads, filler.n_blocks))
        self.prefetch = bool(prefetch) and self.threads > 1
        self._fillers = [filler] + ([_Filler(_empty_like(like), row_offset)] if self.prefetch else [])
        workers = self.threads - 1
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="inertia-noise") if workers else None
        self._pending: tuple[tuple[int, int], int, list[Future[None]]] | None = None
        if self.prefetch:
            self._submit(0, next(self._keys, None))

    def _submit(self, index: int, key: tuple[int, int] | None) -> None:
        """Queue the blocks of ``key`` (``None``: nothing left) for the workers, into buffer ``index``."""
        if key is None:
            self._pending = None
            return
        assert self._pool is not None
        filler = self._fillers[index]
        full = (self.seed, *key)
        futures = [self._pool.submit(filler.fill_block, full, b) for b in range(filler.n_blocks)]
        self._pending = (key, index, futures)

    def _finish(self, index: int, key: tuple[int, int], futures: list[Future[None]]) -> None:
        """Fill the blocks no worker has started (from the last), then wait for the others."""
        filler = self._fillers[index]
        full = (self.seed, *key)
        for b in reversed(range(len(futures))):
            if futures[b].cancel():
                filler.fill_block(full, b)
        for f in futures:
            if not f.cancelled():
                f.result()

    def take(self, step: int, substep: int) -> Array:
        """The buffer of standard normals for ``(seed, step, substep)``, the next key in order."""
        key = (step, substep)
        if self.prefetch:
            pending = self._pending
            if pending is None or pending[0] != key:
                expected = None if pending is None else pending[0]
                raise RuntimeError(f"noise taken out of order: expected {expected}, got {key}")
            _, index, futures = pending
            self._pending = None
            self._finish(index, key, futures)
            self._submit(1 - index, next(self._keys, None))
            return self._fillers[index].out
        expected = next(self._keys, None)
        if expected != key:
            raise RuntimeError(f"noise taken out of order: expected {expected}, got {key}")
        if self._pool is None:
            filler = self._fillers[0]
            for b in range(filler.n_blocks):
                filler.fill_block((self.seed, *key), b)
        else:
            self._submit(0, key)
            assert self._pending is not None
            futures = self._pending[2]
            self._pending = None
            self._finish(0, key, futures)
        return self._fillers[0].out

    def close(self) -> None:
        """Cancel or wait for pending fills and join the workers (idempotent)."""
        if self._pending is not None:
            for f in self._pending[2]:
                f.cancel()
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> NoiseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def serial_arithmetic(like: Array) -> Iterator[None]:
    """While active, torch runs CPU arithmetic on the calling thread (``torch.set_num_threads(1)``,
    restored on exit); a no-op for other arrays and devices.

    Why: :class:`NoiseStream` fills on all cores while the caller computes. torch's own
    intra-op (OpenMP) threads spin-wait between operations, so running them alongside the fill
    threads oversubscribes the cores (measured on 2 cores, B1 in float32: 0.6-0.8x the hand loop
    with torch's threads, 1.3-1.45x with the arithmetic on the caller). The setting is
    process-wide: other threads using torch meanwhile also run on one intra-op thread.
    """
    if not is_torch(like) or like.device.type != "cpu":
        yield
        return
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _empty_like(like: Array) -> Array:
    if isinstance(like, np.ndarray):
        return np.empty(like.shape, dtype=like.dtype)
    return _torch().empty(like.shape, dtype=like.dtype, device=like.device)
