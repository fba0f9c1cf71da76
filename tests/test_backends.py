"""Array backends (STYLE.md principle 3): one core, NumPy and PyTorch through the same code.

* torch float64 CPU runs agree with NumPy to rounding for every deterministic method, and the
  final state stays a torch tensor (energies are recorded as NumPy);
* ``potentials.from_torch`` of a quadratic equals ``potentials.Quadratic``;
* ensembles of a :class:`TorchPotential` are evaluated with ``torch.func.vmap``: the loss is
  traced once per evaluation, not once per path;
* ``import inertia`` imports neither torch nor matplotlib;
* CUDA, when there is one (``-m gpu``; skipped cleanly otherwise).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import inertia
from conftest import DETERMINISTIC, NOISY, quartic_chain
from inertia import dynamics, potentials

torch = pytest.importorskip("torch")

THETA0 = np.array([[0.8, -0.6, 0.4], [0.1, 0.2, -0.3]])
V0 = np.array([0.3, 0.5, -0.2])
A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])

POTENTIALS = {
    "quartic": lambda: quartic_chain(3),
    "quadratic-matrix": lambda: potentials.Quadratic(matrix=A),
    "double-well": lambda: potentials.DoubleWell(3, barrier=0.5),
    "rosenbrock": lambda: potentials.Rosenbrock(3, b=2.0),
}
FRICTIONS = {
    "frictionless": (0.0, 0.0),
    "constant": (0.5, 0.0),
    "3/t": (dynamics.NesterovFriction(3.0), 1.0),
    "scheduled": (lambda t: 0.5 + 0.3 * math.sin(2.0 * t), 0.0),
}


def t64(x: object) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


@pytest.mark.parametrize("friction", list(FRICTIONS))
@pytest.mark.parametrize("pot_name", list(POTENTIALS))
@pytest.mark.parametrize("method", DETERMINISTIC)
def test_torch_cpu_matches_numpy(method: str, pot_name: str, friction: str) -> None:
    gamma, t0 = FRICTIONS[friction]
    pot = POTENTIALS[pot_name]()
    kw = dict(gamma=gamma, t0=t0, dt=0.02, n_steps=200, method=method, save_every=10, mass=[1.0, 2.0, 0.5])
    ref = inertia.simulate(pot, THETA0, V0, **kw)
    out = inertia.simulate(pot, t64(THETA0), t64(V0), **kw)
    assert isinstance(out.theta, torch.Tensor) and isinstance(out.v, torch.Tensor)
    assert out.theta.dtype == torch.float64 and out.theta.shape == (2, 3)
    assert isinstance(out.inertia, np.ndarray)
    assert out.config["backend"] == "torch" and ref.config["backend"] == "numpy"
    np.testing.assert_allclose(out.theta.numpy(), ref.theta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.v.numpy(), ref.v, rtol=1e-12, atol=1e-12)
    for name in ("kinetic", "potential", "inertia", "dissipated"):
        np.testing.assert_allclose(
            getattr(out, name), getattr(ref, name), rtol=1e-12, atol=1e-12, err_msg=name
        )
    assert np.array_equal(out.t, ref.t) and out.n_grad_evals == ref.n_grad_evals


@pytest.mark.parametrize("method", NOISY)
def test_torch_stochastic_run_is_well_formed(method: str) -> None:
    """Noise on torch: the state stays a float64 tensor and the run is reproducible."""
    kw = dict(gamma=0.5, sigma=0.3, dt=0.05, n_steps=50, method=method, n_paths=8, seed=1)
    a = inertia.simulate(quartic_chain(3), t64(THETA0[0]), **kw)
    b = inertia.simulate(quartic_chain(3), t64(THETA0[0]), **kw)
    assert isinstance(a.theta, torch.Tensor) and a.theta.dtype == torch.float64
    assert a.theta.shape == (8, 3) and torch.equal(a.theta, b.theta)
    assert np.all(np.isfinite(a.inertia))


def test_mixed_inputs_follow_theta0() -> None:
    traj = inertia.simulate(
        potentials.Quadratic([1.0, 2.0, 3.0]),
        t64(THETA0),
        V0.tolist(),
        dt=0.1,
        n_steps=5,
        mass=np.array([1.0, 2.0, 3.0]),
    )
    assert isinstance(traj.theta, torch.Tensor) and isinstance(traj.v, torch.Tensor)


def test_torch_inputs_are_never_mutated() -> None:
    theta0, v0, mass = t64(THETA0), t64(V0), t64([1.0, 2.0, 0.5])
    saved = [x.clone() for x in (theta0, v0, mass)]
    traj = inertia.simulate(
        quartic_chain(3), theta0, v0, mass=mass, gamma=0.3, sigma=0.2, dt=0.05, n_steps=30, method="baoab"
    )
    for before, after in zip(saved, (theta0, v0, mass), strict=True):
        assert torch.equal(before, after)
    traj.theta.zero_()
    assert torch.equal(saved[0], theta0)


def test_float32_inputs_stay_float32() -> None:
    theta0 = torch.tensor([1.0, -0.5], dtype=torch.float32)
    traj = inertia.simulate(
        potentials.Quadratic([1.0, 2.0]),
        theta0,
        dt=0.1,
        n_steps=10,
        gamma=0.3,
        sigma=0.1,
        method="baoab",
        n_paths=3,
    )
    assert traj.theta.dtype == torch.float32 and traj.v.dtype == torch.float32
    assert traj.config["dtype"] == "torch.float32"


@pytest.mark.parametrize("matrix", [False, True])
def test_from_torch_quadratic_equals_quadratic(matrix: bool) -> None:
    a = A if matrix else np.diag([0.5, 1.0, 4.0])
    a_t = t64(a)
    native = potentials.Quadratic(matrix=a) if matrix else potentials.Quadratic([0.5, 1.0, 4.0])
    wrapped = potentials.from_torch(lambda th: 0.5 * th @ a_t @ th, dim=3)
    theta = t64(THETA0)
    for x in (theta, theta[0]):  # (n_paths, d) through vmap and (d,) directly
        v_native, g_native = native.value_and_grad(x.numpy())
        v_wrapped, g_wrapped = wrapped.value_and_grad(x)
        np.testing.assert_allclose(v_wrapped.numpy(), v_native, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(g_wrapped.numpy(), g_native, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(wrapped.value(x).numpy(), v_native, rtol=1e-14, atol=1e-15)
    kw = dict(gamma=0.4, dt=0.05, n_steps=100, method="leapfrog", save_every=5)
    ref = inertia.simulate(native, THETA0, V0, **kw)
    out = inertia.simulate(wrapped, THETA0, V0, **kw)  # NumPy in: prepared as torch
    assert isinstance(out.theta, torch.Tensor)
    np.testing.assert_allclose(out.theta.numpy(), ref.theta, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.inertia, ref.inertia, rtol=1e-12, atol=1e-12)


def test_torch_potential_ensembles_go_through_vmap() -> None:
    """The loss function is called once per evaluation of the whole ensemble (vmap traces it
    once), however many paths there are, and each path matches its own single evaluation."""
    calls: list[tuple[int, ...]] = []

    def loss(th: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(th.shape))
        return 0.25 * (th**4).sum() + 0.5 * (th**2).sum()

    pot = potentials.from_torch(loss, dim=3)
    counts = {}
    results = {}
    for n_paths in (1, 7, 64):
        calls.clear()
        theta0 = np.linspace(-1.0, 1.0, 3 * n_paths).reshape(n_paths, 3)[::-1].copy()
        theta0[0] = [0.8, -0.6, 0.4]
        traj = inertia.simulate(
            pot, theta0, dt=0.05, n_steps=10, method="leapfrog", gamma=0.2, sigma=0.1, seed=2
        )
        counts[n_paths] = len(calls)
        results[n_paths] = traj
        assert all(shape == (3,) for shape in calls)  # per-sample view inside vmap
    assert counts[1] == counts[7] == counts[64] <= 30
    # path 0 is the same whatever the ensemble size (same evaluations, same noise)
    np.testing.assert_allclose(results[64].theta[0].numpy(), results[1].theta[0].numpy(), rtol=0, atol=1e-14)
    # and vmap agrees with evaluating path by path
    theta = t64(np.random.default_rng(0).normal(size=(5, 3)))
    value, grad = pot.value_and_grad(theta)
    for i in range(5):
        v_i, g_i = pot.value_and_grad(theta[i])
        torch.testing.assert_close(value[i], v_i, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(grad[i], g_i, rtol=1e-14, atol=1e-15)


def test_import_inertia_imports_neither_torch_nor_matplotlib() -> None:
    code = (
        "import sys, inertia; "
        "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", DETERMINISTIC)
def test_cuda_matches_cpu(method: str) -> None:
    cuda = torch.device("cuda")
    pot = quartic_chain(3)
    kw = dict(gamma=0.5, dt=0.02, n_steps=100, method=method, mass=[1.0, 2.0, 0.5])
    ref = inertia.simulate(pot, THETA0, V0, **kw)
    out = inertia.simulate(pot, t64(THETA0).to(cuda), t64(V0).to(cuda), **kw)
    assert out.theta.device.type == "cuda" and out.v.device.type == "cuda"
    np.testing.assert_allclose(out.theta.cpu().numpy(), ref.theta, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.inertia, ref.inertia, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_noise_is_reproducible_and_torch_potentials_run_on_device() -> None:
    cuda = torch.device("cuda")
    theta0 = t64(THETA0[0]).to(cuda)
    kw = dict(gamma=0.5, sigma=0.3, dt=0.05, n_steps=50, method="baoab", n_paths=64, seed=5)
    a = inertia.simulate(quartic_chain(3), theta0, **kw)
    b = inertia.simulate(quartic_chain(3), theta0, **kw)
    assert a.theta.device.type == "cuda" and torch.equal(a.theta, b.theta)
    pot = potentials.from_torch(lambda th: 0.5 * (th**2).sum(), dim=3, device="cuda")
    c = inertia.simulate(pot, THETA0, dt=0.05, n_steps=20, method="leapfrog")
    assert c.theta.device.type == "cuda" and c.success
