"""Array backends: one namespace lookup, conversions, and the keyed noise source.

The numerical core is written once against the Python Array API standard through
``array-api-compat``; NumPy is the default backend and PyTorch tensors (CPU or CUDA) go
through the same code. The only per-backend code in the package lives here:

* :func:`to_numpy` copies a (possibly device) array to a NumPy array for recording;
* :func:`normal` draws standard normals from a *keyed* stream: the draw for ``(seed, step,
  substep)`` is a pure function of that key, so runs are reproducible, can be split in chunks
  or resumed, and row ``i`` of an ``(n_paths, d)`` draw does not depend on ``n_paths`` (on CPU).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

Array = Any  # an Array-API array (numpy.ndarray, torch.Tensor, ...)

__all__ = ["Array", "array_namespace", "constant_like", "is_torch", "normal", "to_numpy"]


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


def stream_key(seed: int, step: int, substep: int) -> int:
    """A 63-bit key mixing ``(seed, step, substep)`` (splitmix64 chain)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ step) ^ substep) >> 1


def _normal_numpy(key: tuple[int, int, int], shape: tuple[int, ...], ref: Array) -> Array:
    seed, step, substep = key
    # Philox is counter based: the counter words carry (substep, step) and the key the seed,
    # so every (seed, step, substep) has its own stream and no hashing is needed.
    gen = np.random.Generator(np.random.Philox(counter=[0, 0, substep, step], key=seed))
    dtype = np.float32 if ref.dtype == np.float32 else np.float64
    return gen.standard_normal(shape, dtype=dtype)


def _normal_torch(key: tuple[int, int, int], shape: tuple[int, ...], ref: Array) -> Array:
    import torch

    gen = torch.Generator(device=ref.device)
    gen.manual_seed(stream_key(*key))
    n = math.prod(shape)
    # torch's CPU normal_ fills uniforms in order and transforms them in blocks of 16, with a
    # special tail; drawing a multiple of 16 (at least 16) makes element i depend only on its
    # block, so path 0 is the same whatever n_paths is.
    padded = max(16, -(-n // 16) * 16)
    draw = torch.randn(padded, generator=gen, dtype=ref.dtype, device=ref.device)
    return draw[:n].reshape(shape)


def normal(key: tuple[int, int, int], shape: tuple[int, ...], ref: Array) -> Array:
    """Standard normals of ``shape`` for ``key = (seed, step, substep)``, in ``ref``'s backend.

    The result is a deterministic function of ``key`` and ``shape`` (and, for CUDA, the device):
    the same seed gives bit-identical paths, and on CPU the first rows do not depend on how many
    rows are drawn. Supported backends: NumPy and PyTorch.
    """
    if isinstance(ref, np.ndarray):
        return _normal_numpy(key, shape, ref)
    if is_torch(ref):
        return _normal_torch(key, shape, ref)
    raise TypeError(f"no noise source for arrays of type {type(ref).__name__}; supported: numpy, torch")
