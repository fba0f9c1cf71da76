"""Potentials: gradients against central finite differences and torch autograd, consistent
``(d,)`` / ``(n_paths, d)`` evaluation, stated minima and spectra, and the energy functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inertia import energy, potentials

A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])

SYNTHETIC = {
    "quadratic-diag": lambda: potentials.Quadratic([0.5, 1.0, 4.0]),
    "quadratic-matrix": lambda: potentials.Quadratic(matrix=A),
    "double-well": lambda: potentials.DoubleWell(3, barrier=0.7, stiffness=2.0),
    "double-well-1d": lambda: potentials.DoubleWell(1),
    "rosenbrock": lambda: potentials.Rosenbrock(3, a=1.0, b=10.0),
    "quartic-chain": lambda: potentials.QuarticChain([1.0, 2.0, 3.0], beta=1.5),
}


def central_difference(f, theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = eps
        grad[i] = (f(theta + e) - f(theta - e)) / (2 * eps)
    return grad


def sample_points(d: int, n: int = 6, seed: int = 12345) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.5, 1.5, size=(n, d))


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_gradient_matches_central_differences(name: str) -> None:
    pot = SYNTHETIC[name]()
    for theta in sample_points(pot.dim):
        fd = central_difference(lambda x: float(pot.value(x)), theta)
        np.testing.assert_allclose(pot.grad(theta), fd, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_gradient_matches_torch_autograd(name: str) -> None:
    """The same Array-API code evaluated on torch tensors: autograd of the value is the grad."""
    torch = pytest.importorskip("torch")
    pot = SYNTHETIC[name]()
    for theta in sample_points(pot.dim):
        x = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        value = pot.value(x)
        (auto,) = torch.autograd.grad(value, x)
        np.testing.assert_allclose(pot.grad(x).detach().numpy(), auto.numpy(), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(value.detach().numpy(), pot.value(theta), rtol=1e-14)


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_ensemble_and_single_evaluations_agree(name: str) -> None:
    pot = SYNTHETIC[name]()
    thetas = sample_points(pot.dim, 7)
    values, grads = pot.value_and_grad(thetas)
    assert values.shape == (7,) and grads.shape == (7, pot.dim)
    for i, theta in enumerate(thetas):
        v_i, g_i = pot.value_and_grad(theta)
        assert np.shape(v_i) == () and g_i.shape == (pot.dim,)
        np.testing.assert_allclose(values[i], v_i, rtol=1e-15, atol=0)
        np.testing.assert_allclose(grads[i], g_i, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(pot.value(thetas), values)
    np.testing.assert_array_equal(pot.grad(thetas), grads)


def test_closed_form_values() -> None:
    theta = np.array([0.3, -1.2, 0.7])
    np.testing.assert_allclose(
        potentials.Quadratic(matrix=A).value(theta), 0.5 * theta @ A @ theta, rtol=1e-15
    )
    np.testing.assert_allclose(
        potentials.Quadratic([0.5, 1.0, 4.0]).value(theta), 0.5 * (0.5 * 0.09 + 1.44 + 4.0 * 0.49), rtol=1e-15
    )
    dw = potentials.DoubleWell(3, barrier=0.7, stiffness=2.0)
    np.testing.assert_allclose(dw.value(theta), 0.7 * (0.09 - 1) ** 2 + (1.44 + 0.49), rtol=1e-15)
    rb = potentials.Rosenbrock(3, a=1.0, b=10.0)
    expected = sum(10.0 * (theta[i + 1] - theta[i] ** 2) ** 2 + (1 - theta[i]) ** 2 for i in range(2))
    np.testing.assert_allclose(rb.value(theta), expected, rtol=1e-14)
    qc = potentials.QuarticChain([1.0, 2.0, 3.0], beta=1.5)
    diffs = np.diff(theta)
    expected = 0.5 * np.sum([1.0, 2.0, 3.0] * theta**2) + 1.5 / 4 * np.sum(diffs**4)
    np.testing.assert_allclose(qc.value(theta), expected, rtol=1e-14)


@pytest.mark.parametrize(
    ("pot", "argmin"),
    [
        (potentials.Quadratic(matrix=A), [0.0, 0.0, 0.0]),
        (potentials.DoubleWell(3), [1.0, 0.0, 0.0]),
        (potentials.DoubleWell(3), [-1.0, 0.0, 0.0]),
        (potentials.Rosenbrock(3), [1.0, 1.0, 1.0]),
        (potentials.QuarticChain([1.0, 2.0, 3.0]), [0.0, 0.0, 0.0]),
    ],
)
def test_stated_minimum(pot, argmin) -> None:
    theta = np.array(argmin)
    assert float(pot.value(theta)) == pot.minimum == 0.0
    np.testing.assert_allclose(pot.grad(theta), 0.0, atol=1e-15)
    assert np.all(pot.value(sample_points(3, 50)) >= pot.minimum)


def test_quadratic_spectrum() -> None:
    pot = potentials.Quadratic(matrix=A)
    lam, q = pot.eigenvalues, pot.eigenvectors
    assert np.all(np.diff(lam) > 0)
    np.testing.assert_allclose(q @ np.diag(lam) @ q.T, A, atol=1e-14)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-14)
    diag = potentials.Quadratic([4.0, 0.5, 1.0])
    assert diag.eigenvalues.tolist() == [0.5, 1.0, 4.0]
    np.testing.assert_allclose(
        diag.eigenvectors @ np.diag(diag.eigenvalues) @ diag.eigenvectors.T, np.diag([4.0, 0.5, 1.0])
    )
    # a nearly symmetric matrix is symmetrised; the Hessian is the matrix
    sym = potentials.Quadratic(matrix=A + 1e-14 * np.triu(np.ones((3, 3)), 1))
    np.testing.assert_allclose(sym.matrix, sym.matrix.T, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_describe_is_json(name: str) -> None:
    pot = SYNTHETIC[name]()
    desc = pot.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["dim"] == pot.dim


def test_from_torch_gradient_and_shapes() -> None:
    torch = pytest.importorskip("torch")

    def loss(th):
        return torch.sin(th[0]) * th[1] ** 2 + torch.exp(0.3 * th[2]) * th[0]

    pot = potentials.from_torch(loss, dim=3)
    thetas = torch.tensor(sample_points(3, 5), dtype=torch.float64)
    values, grads = pot.value_and_grad(thetas)
    assert values.shape == (5,) and grads.shape == (5, 3)
    for i in range(5):
        x = thetas[i].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x), x)
        torch.testing.assert_close(grads[i], g, rtol=1e-14, atol=1e-15)
        fd = central_difference(lambda z: float(loss(torch.tensor(z))), thetas[i].numpy())
        np.testing.assert_allclose(grads[i].numpy(), fd, rtol=1e-7, atol=1e-7)
    assert pot.prepare(np.zeros(3)).dtype == torch.float64


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_from_module_matches_backward(weight_decay: float) -> None:
    """The flat-parameter loss of a tiny MLP: value and gradient equal a plain forward/backward
    through the module (float64), gradient ordered as ``named_parameters``."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    loss_fn = torch.nn.functional.mse_loss
    pot = potentials.from_module(module, loss_fn, x, y, weight_decay=weight_decay)
    params = [p for _, p in module.named_parameters()]
    assert pot.dim == sum(p.numel() for p in params) == 3 * 4 + 4 + 4 * 2 + 2
    theta0 = pot.theta0

    module.zero_grad()
    flat = torch.cat([p.reshape(-1) for p in params])
    ref_loss = loss_fn(module(x), y) + 0.5 * weight_decay * (flat * flat).sum()
    ref_loss.backward()
    ref_grad = torch.cat([p.grad.reshape(-1) for p in params])

    value, grad = pot.value_and_grad(theta0)
    torch.testing.assert_close(value, ref_loss.detach(), rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14)
    # an ensemble of parameter vectors, through vmap, equals one-by-one evaluation
    thetas = theta0 + 0.1 * torch.randn(4, pot.dim, dtype=torch.float64)
    values, grads = pot.value_and_grad(thetas)
    for i in range(4):
        v_i, g_i = pot.value_and_grad(thetas[i])
        torch.testing.assert_close(values[i], v_i, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(grads[i], g_i, rtol=1e-13, atol=1e-15)
    # the module's own parameters are untouched by evaluating the potential
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in params]), theta0)
    # and a finite-difference check on a few coordinates
    for i in (0, 5, pot.dim - 1):
        e = torch.zeros(pot.dim, dtype=torch.float64)
        e[i] = 1e-6
        fd = (pot.value(theta0 + e) - pot.value(theta0 - e)) / 2e-6
        assert abs(float(fd) - float(grad[i])) < 1e-7


def test_energy_functions() -> None:
    v = np.array([[3.0, 4.0], [1.0, -2.0]])
    assert energy.kinetic(v).tolist() == [12.5, 2.5]
    assert energy.kinetic(v, mass=2.0).tolist() == [25.0, 5.0]
    assert energy.kinetic(v, mass=np.array([1.0, 3.0])).tolist() == [0.5 * (9 + 48), 0.5 * (1 + 12)]
    pot = potentials.Quadratic([1.0, 2.0])
    theta = np.array([[1.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(energy.potential(pot, theta), [1.5, 4.0])
    np.testing.assert_array_equal(energy.inertia(pot, theta, v), [14.0, 6.5])
