"""Front-door validation helpers: every message names the argument, the rule and the value."""

from __future__ import annotations

import math
import numbers
from typing import Any


def finite_float(name: str, value: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    """Return ``value`` as a float, checking it is a finite real number (>= or > ``minimum``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__})")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"`{name}` must be finite, got {value!r}")
    if minimum is not None:
        if strict and not out > minimum:
            raise ValueError(f"`{name}` must be > {minimum:g}, got {value!r}")
        if not strict and not out >= minimum:
            raise ValueError(f"`{name}` must be >= {minimum:g}, got {value!r}")
    return out


def whole_number(name: str, value: Any, *, minimum: int = 0) -> int:
    """Return ``value`` as an int, checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {value!r} ({type(value).__name__})")
    out = int(value)
    if out < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}")
    return out


def flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is a boolean (Python or NumPy), else raise ``TypeError``.

    ``fast="no"`` or ``fast=1`` are refused rather than read as their truth value.
    """
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ == "bool":
        return bool(value)
    raise TypeError(f"`{name}` must be True or False, got {value!r} ({type(value).__name__})")


def optional_callable(name: str, value: Any, signature: str) -> Any:
    """Return ``value`` if it is ``None`` or callable, else raise ``TypeError`` (at the front door,
    not from inside a loop)."""
    if value is not None and not callable(value):
        raise TypeError(
            f"`{name}` must be None or a callable {signature}, got {value!r} ({type(value).__name__})"
        )
    return value


def _dtype_kind(x: Any) -> str:
    """``"f"`` (floating), ``"i"`` (integer, signed or not), ``"b"`` (bool), ``"c"`` (complex),
    or ``"o"`` (anything else), for a NumPy array or a torch tensor."""
    dtype = x.dtype
    if type(x).__module__.startswith("torch"):
        if dtype.is_complex:
            return "c"
        if dtype.is_floating_point:
            return "f"
        return "b" if str(dtype) == "torch.bool" else "i"
    kind = getattr(dtype, "kind", "o")
    return {"f": "f", "i": "i", "u": "i", "b": "b", "c": "c"}.get(kind, "o")


def real_array(name: str, x: Any) -> Any:
    """The dtype rule of the front door: return ``x`` as a floating array, never computing in
    integers and never dropping an imaginary part in silence.

    * floating arrays and tensors (float16/32/64, bfloat16) pass through unchanged;
    * integer arrays and tensors become float64 in their own namespace and device (so
      ``torch.tensor([1, 1])`` becomes ``torch.tensor([1.0, 1.0], dtype=torch.float64)``);
    * Python scalars and sequences become float64 NumPy arrays;
    * boolean and complex inputs, and anything that is not a number, raise ``TypeError``
      naming the argument and the dtype.

    Finiteness is not checked here (see :func:`check_finite`).
    """
    mod = type(x).__module__
    if mod.startswith("torch") and hasattr(x, "dtype"):
        kind = _dtype_kind(x)
        if kind == "f":
            return x
        if kind == "i":
            import torch

            return x.to(torch.float64)
    else:
        import numpy as np

        if isinstance(x, (str, bytes)):
            raise TypeError(f"`{name}` must be an array of real numbers, got {type(x).__name__} {x!r}")
        if not isinstance(x, np.ndarray) and hasattr(x, "__array_namespace__"):
            kind = _dtype_kind(x)  # another array-API array (cupy, jax): keep its namespace
            if kind == "f":
                return x
            if kind == "i":
                return x.__array_namespace__().astype(x, x.__array_namespace__().float64)
        else:
            try:
                arr = np.asarray(x)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"`{name}` must be an array of real numbers, got {type(x).__name__}") from exc
            kind = _dtype_kind(arr)
            if kind == "f":
                return arr if isinstance(x, np.ndarray) else arr.astype(np.float64)
            if kind == "i":
                return arr.astype(np.float64)
            x = arr
    kind = _dtype_kind(x)
    if kind == "b":
        raise TypeError(
            f"`{name}` must hold real numbers, got a boolean array (dtype {x.dtype}); "
            f"convert it explicitly, e.g. x.astype(float), if 0/1 values are meant"
        )
    if kind == "c":
        raise TypeError(
            f"`{name}` must hold real numbers, got a complex array (dtype {x.dtype}); the "
            f"imaginary part would be dropped: pass x.real explicitly if that is meant"
        )
    raise TypeError(f"`{name}` must be an array of real numbers, got dtype {x.dtype}")


def check_finite(name: str, x: Any) -> Any:
    """Return ``x`` if every entry is finite, else raise ``ValueError`` naming the first bad entry.

    On a GPU tensor the test runs on the device and only one boolean comes back to the host
    (the array itself is copied only to write the error message).
    """
    if type(x).__module__.startswith("torch"):
        import torch

        ok = bool(torch.isfinite(x).all())
    else:
        import numpy as np

        xp = (
            x.__array_namespace__()
            if not isinstance(x, np.ndarray) and hasattr(x, "__array_namespace__")
            else np
        )
        ok = bool(xp.all(xp.isfinite(x)))
    if not ok:
        from inertia._backend import to_numpy

        arr = to_numpy(x)
        import numpy as np

        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        where = f"[{', '.join(map(str, idx))}]" if idx else ""
        raise ValueError(f"`{name}` must be finite, got {arr[idx].item()!r} at {name}{where}")
    return x


def real_vector(name: str, values: Any, *, minimum: float | None = None, strict: bool = False) -> Any:
    """``values`` as a non-empty finite 1-D float64 NumPy array (copied), with an optional bound.

    Applies :func:`real_array`'s dtype rule; the errors name the argument, the rule and the
    offending entries.
    """
    import numpy as np

    from inertia._backend import to_numpy

    arr = real_array(name, values)
    arr = np.array(to_numpy(arr), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {arr.shape}")
    check_finite(name, arr)
    if minimum is not None:
        bad = arr <= minimum if strict else arr < minimum
        if np.any(bad):
            op = ">" if strict else ">="
            raise ValueError(f"`{name}` must all be {op} {minimum:g}, got {arr.tolist()}")
    return arr
