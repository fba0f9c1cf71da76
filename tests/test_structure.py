"""Geometric structure of the integrators, reduction identities and the time grid.

TESTING.md "Integrators" items 3-4 and THEORY.md sections 5-6:

* time reversibility of the symmetric methods (forward, flip ``v``, forward again = back);
* conformal symplecticity of the one-step map, ``J^T Omega J = e^{-integral gamma} Omega``
  (``Omega`` the symplectic form in ``(theta, p = M v)``), Jacobian by central finite differences
  on a nonlinear coupled potential, and its failure for explicit Euler and RK4;
* reduction identities: BAOAB with ``gamma = sigma = 0`` is leapfrog bit for bit;
  Euler-Maruyama is Euler; symplectic Euler is PyTorch heavy-ball SGD
  (``dt = sqrt(lr)``, ``gamma = -ln(mu)/dt``, ``v = -sqrt(lr) * momentum_buffer``);
* the time grid ``t_n = t0 + n dt`` from an integer counter, and the saved steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import inertia
from conftest import RK4, SYMPLECTIC, quartic_chain
from inertia import dynamics, potentials

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

THETA0 = np.array([0.8, -0.6, 0.4])
V0 = np.array([0.3, 0.5, -0.2])


# --------------------------------------------------------------------------------------------
# Time reversibility


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4", "baoab"])
@pytest.mark.parametrize("mass", [1.0, [1.0, 2.5, 0.7]])
def test_time_reversibility(method: str, mass: object) -> None:
    pot = quartic_chain(3)
    n_steps, dt = 1000, 0.05
    fwd = inertia.simulate(
        pot, THETA0, V0, mass=mass, dt=dt, n_steps=n_steps, method=method, gamma=0.0, sigma=0.0
    )
    assert np.abs(fwd.theta[0] - THETA0).max() > 0.1  # it went somewhere
    back = inertia.simulate(pot, fwd.theta, -fwd.v, mass=mass, dt=dt, n_steps=n_steps, method=method)
    np.testing.assert_allclose(back.theta[0], THETA0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(-back.v[0], V0, rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["euler", "symplectic_euler"])
def test_non_symmetric_methods_are_not_reversible(method: str) -> None:
    """Power control: the same round trip does not return for one-sided methods."""
    pot = quartic_chain(3)
    fwd = inertia.simulate(pot, THETA0, V0, dt=0.01, n_steps=1000, method=method)
    back = inertia.simulate(pot, fwd.theta, -fwd.v, dt=0.01, n_steps=1000, method=method)
    assert np.abs(back.theta[0] - THETA0).max() > 1e-4


# --------------------------------------------------------------------------------------------
# Conformal symplecticity of the one-step map


def one_step_jacobian(
    method: str, gamma: object, mass: object, dt: float, t0: float = 0.0, eps: float = 1e-5
) -> np.ndarray:
    """``d(theta', p')/d(theta, p)`` of one step at ``(THETA0, V0)`` by central differences,
    all ``4 d`` perturbed states stepped at once as one ensemble."""
    d = THETA0.size
    m = np.broadcast_to(np.asarray(mass, dtype=np.float64), (d,))
    z0 = np.concatenate([THETA0, m * V0])
    dz = eps * np.eye(2 * d)
    z = np.concatenate([z0 + dz, z0 - dz])  # (4 d, 2 d)
    traj = inertia.simulate(
        quartic_chain(d),
        z[:, :d],
        z[:, d:] / m,
        gamma=gamma,
        mass=mass,
        dt=dt,
        n_steps=1,
        method=method,
        t0=t0,
    )
    out = np.concatenate([traj.theta, m * traj.v], axis=1)
    return ((out[: 2 * d] - out[2 * d :]) / (2 * eps)).T


def omega(d: int) -> np.ndarray:
    return np.block([[np.zeros((d, d)), np.eye(d)], [-np.eye(d), np.zeros((d, d))]])


FRICTION_CASES = {
    "frictionless": (0.0, 0.0, lambda dt: 1.0),
    "constant": (0.7, 0.0, lambda dt: math.exp(-0.7 * dt)),
    "nesterov": (dynamics.NesterovFriction(3.0), 1.0, lambda dt: (1.0 / (1.0 + dt)) ** 3),
}


@pytest.mark.parametrize("friction", list(FRICTION_CASES))
@pytest.mark.parametrize("mass", [1.0, [1.0, 2.5, 0.7]])
@pytest.mark.parametrize("method", SYMPLECTIC)
def test_one_step_map_is_conformal_symplectic(method: str, mass: object, friction: str) -> None:
    gamma, t0, factor = FRICTION_CASES[friction]
    dt = 0.1
    jac = one_step_jacobian(method, gamma, mass, dt, t0)
    assert np.abs(jac - np.eye(6)).max() > 1e-3  # a non-trivial map
    om = omega(3)
    np.testing.assert_allclose(jac.T @ om @ jac, factor(dt) * om, rtol=0, atol=1e-8)
    assert inertia.METHODS[method].symplectic


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_euler_and_rk4_are_not_symplectic(temporary_method, gamma: float) -> None:
    """Power control: the same check fails, by far more than its tolerance, for explicit Euler
    and for RK4 (registered for the test)."""
    temporary_method(RK4)
    om = omega(3)
    for method, min_defect in (("euler", 1e-3), (RK4.name, 1e-7)):
        jac = one_step_jacobian(method, gamma, 1.0, 0.1)
        defect = np.abs(jac.T @ om @ jac - math.exp(-gamma * 0.1) * om).max()
        assert defect > min_defect, (method, defect)
    assert not inertia.METHODS["euler"].symplectic


# --------------------------------------------------------------------------------------------
# Reduction identities


@pytest.mark.parametrize(
    "pot", [quartic_chain(3), potentials.Quadratic([0.5, 1.0, 4.0])], ids=["quartic", "quadratic"]
)
def test_baoab_without_friction_or_noise_is_leapfrog_bit_for_bit(pot) -> None:
    theta0 = np.stack([THETA0, -THETA0, 0.5 * THETA0])
    kw = dict(dt=0.07, n_steps=500, save_every=3, gamma=0.0, sigma=0.0, mass=[1.0, 2.0, 0.5])
    a = inertia.simulate(pot, theta0, V0, method="baoab", **kw)
    b = inertia.simulate(pot, theta0, V0, method="leapfrog", **kw)
    for name in ("theta", "v", "kinetic", "potential", "inertia", "t", "step"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.n_grad_evals == b.n_grad_evals


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_euler_maruyama_is_euler(sigma: float) -> None:
    kw = dict(dt=0.01, n_steps=200, gamma=0.5, sigma=sigma, n_paths=3, seed=7)
    a = inertia.simulate(quartic_chain(3), THETA0, V0, method="euler_maruyama", **kw)
    b = inertia.simulate(quartic_chain(3), THETA0, V0, method="euler", **kw)
    assert np.array_equal(a.theta, b.theta) and np.array_equal(a.v, b.v)
    assert np.array_equal(a.inertia, b.inertia)


@pytest.mark.parametrize(("lr", "momentum"), [(0.01, 0.9), (0.1, 0.5), (0.003, 0.99)])
def test_symplectic_euler_is_heavy_ball_sgd(lr: float, momentum: float) -> None:
    """THEORY.md section 6: torch.optim.SGD(momentum=mu, dampening=0) on ``1/2 theta^T A theta``
    is the library's symplectic Euler with ``dt = sqrt(lr)``, ``gamma = -ln(mu)/dt``, step for
    step, with ``v_k = -sqrt(lr) b_k``."""
    torch = pytest.importorskip("torch")
    a = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    pot = potentials.Quadratic(matrix=a)
    theta0 = np.array([1.0, -2.0, 0.5])
    dt = math.sqrt(lr)
    gamma = -math.log(momentum) / dt
    n_steps = 60

    param = torch.tensor(theta0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr, momentum=momentum, dampening=0.0, nesterov=False)
    a_t = torch.tensor(a, dtype=torch.float64)
    thetas, vs = [theta0], [np.zeros(3)]
    for _ in range(n_steps):
        opt.zero_grad()
        loss = 0.5 * param @ a_t @ param
        loss.backward()
        opt.step()
        buf = opt.state[param]["momentum_buffer"]
        thetas.append(param.detach().numpy().copy())
        vs.append(-math.sqrt(lr) * buf.numpy().copy())

    traj = inertia.simulate(pot, theta0, gamma=gamma, dt=dt, n_steps=n_steps, method="symplectic_euler")
    np.testing.assert_allclose(traj.theta[0], thetas[-1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(traj.v[0], vs[-1], rtol=0, atol=1e-10)
    # every step, through the recorded energies: K_k = lr/2 |b_k|^2, V_k = L(theta_k)
    kin = np.array([0.5 * v @ v for v in vs])
    pot_values = np.array([0.5 * th @ a @ th for th in thetas])
    np.testing.assert_allclose(traj.kinetic[:, 0], kin, rtol=0, atol=1e-10)
    np.testing.assert_allclose(traj.potential[:, 0], pot_values, rtol=0, atol=1e-10)
    # and the intermediate states, by continuing the run in chunks
    state_theta, state_v = theta0, None
    for k in range(0, n_steps, 20):
        part = inertia.simulate(
            pot,
            state_theta,
            state_v,
            gamma=gamma,
            dt=dt,
            n_steps=20,
            method="symplectic_euler",
            initial_step=k,
        )
        state_theta, state_v = part.theta, part.v
        np.testing.assert_allclose(part.theta[0], thetas[k + 20], rtol=0, atol=1e-10)
        np.testing.assert_allclose(part.v[0], vs[k + 20], rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Time grid


def test_time_grid_comes_from_the_integer_counter() -> None:
    dt, n_steps, t0 = 0.1, 10**5, 0.3
    traj = inertia.simulate(
        potentials.Quadratic([1.0]),
        [1.0],
        dt=dt,
        n_steps=n_steps,
        method="symplectic_euler",
        t0=t0,
        save_every=10**4,
    )
    assert traj.step.tolist() == list(range(0, n_steps + 1, 10**4))
    assert np.array_equal(traj.t, t0 + traj.step * dt)
    assert traj.t[-1] == t0 + n_steps * dt
    accumulated = t0
    for _ in range(n_steps):
        accumulated += dt
    assert accumulated != t0 + n_steps * dt  # so the test can tell the two apart
    assert traj.n_steps == n_steps


@pytest.mark.parametrize(
    ("n_steps", "save_every", "expected"),
    [
        (25, 7, [0, 7, 14, 21, 25]),
        (21, 7, [0, 7, 14, 21]),
        (5, 1, [0, 1, 2, 3, 4, 5]),
        (3, 10, [0, 3]),
        (0, 4, [0]),
    ],
)
def test_saved_steps(n_steps: int, save_every: int, expected: list[int]) -> None:
    traj = inertia.simulate(
        potentials.Quadratic([1.0, 2.0]), [1.0, 0.0], dt=0.1, n_steps=n_steps, save_every=save_every
    )
    assert traj.step.tolist() == expected
    assert traj.kinetic.shape == traj.potential.shape == (len(expected), 1)
    assert traj.n_saved == len(expected)


def test_time_grid_with_initial_step_and_t0() -> None:
    dt, t0 = 0.1, 0.7
    traj = inertia.simulate(
        potentials.Quadratic([1.0]),
        [1.0],
        dt=dt,
        n_steps=30,
        save_every=7,
        initial_step=12345,
        t0=t0,
        gamma=dynamics.NesterovFriction(3.0),
    )
    assert traj.step.tolist() == [12345, 12352, 12359, 12366, 12373, 12375]
    assert np.array_equal(traj.t, t0 + traj.step * dt)
    assert traj.t[-1] == t0 + (12345 + 30) * dt
