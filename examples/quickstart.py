"""Quickstart: simulate a damped quadratic and compare its computational inertia with theory.

Computational inertia is ``I = 1/2 v^T M v + L(theta)``. With friction ``gamma`` and no noise it
obeys the ledger ``I(t) + integral_0^t gamma |v|^2 ds = I(0)``, and on a quadratic
``L = 1/2 theta^T A theta`` it has a closed form (``inertia.theory.damped_quadratic_inertia``).

Run it with::

    .venv/bin/python examples/quickstart.py
"""

from __future__ import annotations

import numpy as np

import inertia
from inertia import potentials, theory

eigenvalues = [0.25, 4.0]  # A = diag(0.25, 4): an anisotropic quadratic
theta0, v0 = [2.0, 0.5], [0.0, 0.0]
gamma = theory.critical_damping(min(eigenvalues))  # 2 sqrt(lambda_min) = 1
dt = 0.01

traj = inertia.simulate(
    potentials.Quadratic(eigenvalues), theta0, v0, gamma=gamma, dt=dt, n_steps=2000, method="leapfrog"
)
exact = theory.damped_quadratic_inertia(eigenvalues, gamma, theta0, v0, traj.t)
simulated = traj.inertia[:, 0]
ledger = simulated + traj.dissipated[:, 0] - simulated[0]

print(f"{traj.method}, gamma = {gamma:g}, dt = {dt:g}, t in [0, {traj.t[-1]:g}]: {traj.message}")
print(f"I(0) = {simulated[0]:.6f}, I(T) = {simulated[-1]:.3e} (theory {exact[-1]:.3e})")
print(f"max |I - I_theory|            = {np.max(np.abs(simulated - exact)):.3e}  (O(dt^2))")
print(f"max |I + dissipated - I(0)|   = {np.max(np.abs(ledger)):.3e}  (O(dt^2))")
