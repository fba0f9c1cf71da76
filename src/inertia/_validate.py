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
