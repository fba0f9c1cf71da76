"""Kinetic, potential and total energy (computational inertia), defined once.

THEORY.md section 1: mass matrix ``M`` (here a positive scalar or a diagonal given as a
per-coordinate vector ``m``), velocity ``v``, and

    kinetic   K = 1/2 v^T M v = 1/2 sum_i m_i v_i^2
    potential V = L(theta)
    inertia   I = K + V

Arrays are ``(..., d)``: the sums run over the last axis, so ``(n_paths, d)`` ensembles give
``(n_paths,)`` energies.
"""

from __future__ import annotations

from typing import Any

from inertia._backend import Array, array_namespace

__all__ = ["inertia", "kinetic", "potential"]


def kinetic(v: Array, mass: Any = 1.0) -> Array:
    """``K = 1/2 sum_i m_i v_i^2`` over the last axis.

    Example:
        >>> import numpy as np
        >>> float(kinetic(np.array([3.0, 4.0]), mass=2.0))
        25.0
    """
    xp = array_namespace(v)
    return 0.5 * xp.sum(mass * v * v, axis=-1)


def potential(pot: Any, theta: Array) -> Array:
    """``V = L(theta)`` for a :class:`inertia.potentials.Potential` ``pot``."""
    return pot.value(theta)


def inertia(pot: Any, theta: Array, v: Array, mass: Any = 1.0) -> Array:
    """Computational inertia ``I = 1/2 v^T M v + L(theta)``.

    Example:
        >>> import numpy as np
        >>> from inertia.potentials import Quadratic
        >>> float(inertia(Quadratic([2.0]), np.array([1.0]), np.array([1.0])))
        1.5
    """
    return kinetic(v, mass) + potential(pot, theta)
