"""inertia: computational inertia ``I = 1/2 v^T M v + L(theta)`` of second-order learning dynamics.

Simulate frictionless, damped and stochastic dynamics with structure-preserving integrators,
check the laws of THEORY.md against closed forms, and (with torch) track real training.

Example:
    >>> import inertia
    >>> from inertia import potentials
    >>> traj = inertia.simulate(potentials.Quadratic([1.0]), [1.0], dt=0.1, n_steps=10)
    >>> traj.status
    'success'
"""

from inertia import curvature, dynamics, energy, integrators, potentials, stability, theory
from inertia.dynamics import ConstantFriction, NesterovFriction
from inertia.energy import inertia, kinetic, potential
from inertia.integrators import METHODS
from inertia.simulate import DivergenceError, Trajectory, simulate

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "ConstantFriction",
    "DivergenceError",
    "NesterovFriction",
    "Trajectory",
    "__version__",
    "curvature",
    "dynamics",
    "energy",
    "inertia",
    "integrators",
    "kinetic",
    "potential",
    "potentials",
    "simulate",
    "stability",
    "theory",
]
