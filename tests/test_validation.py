"""Front-door validation (TESTING.md item 14): every bad argument raises at once, with a message
that names the argument (and, where useful, the rule and the value received); shapes are never
broadcast silently; inputs are never mutated."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import inertia
from inertia import potentials
from inertia.dynamics import ConstantFriction, NesterovFriction

QUAD = potentials.Quadratic([1.0, 2.0])


def run(**overrides: object) -> inertia.Trajectory:
    kw: dict[str, object] = dict(potential=QUAD, theta0=[1.0, 0.0], dt=0.1, n_steps=3)
    kw.update(overrides)
    return inertia.simulate(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        # friction and noise
        (dict(gamma=-0.1), ValueError, r"`gamma` must be >= 0, got -0\.1"),
        (dict(gamma=math.nan), ValueError, r"`gamma` must be finite"),
        (dict(gamma=math.inf), ValueError, r"`gamma` must be finite"),
        (dict(sigma=-1.0), ValueError, r"`sigma` must be >= 0, got -1\.0"),
        (dict(sigma=math.nan), ValueError, r"`sigma` must be finite"),
        (dict(sigma="0.1"), TypeError, r"`sigma` must be a real number"),
        # time step
        (dict(dt=0.0), ValueError, r"`dt` must be > 0, got 0\.0"),
        (dict(dt=-0.1), ValueError, r"`dt` must be > 0, got -0\.1"),
        (dict(dt=math.nan), ValueError, r"`dt` must be finite, got nan"),
        (dict(dt=math.inf), ValueError, r"`dt` must be finite, got inf"),
        (dict(dt=-math.inf), ValueError, r"`dt` must be finite"),
        (dict(dt="0.1"), TypeError, r"`dt` must be a real number"),
        (dict(dt=True), TypeError, r"`dt` must be a real number"),
        # counts
        (dict(n_steps=-1), ValueError, r"`n_steps` must be >= 0, got -1"),
        (dict(n_steps=2.5), TypeError, r"`n_steps` must be an integer, got 2\.5"),
        (dict(n_steps=3.0), TypeError, r"`n_steps` must be an integer"),
        (dict(n_steps=True), TypeError, r"`n_steps` must be an integer"),
        (dict(save_every=0), ValueError, r"`save_every` must be >= 1, got 0"),
        (dict(save_every=-3), ValueError, r"`save_every` must be >= 1"),
        (dict(save_every=1.5), TypeError, r"`save_every` must be an integer"),
        (dict(n_paths=0), ValueError, r"`n_paths` must be >= 1, got 0"),
        (dict(n_paths=2.0), TypeError, r"`n_paths` must be an integer"),
        (dict(seed=-1), ValueError, r"`seed` must be >= 0"),
        (dict(initial_step=-1), ValueError, r"`initial_step` must be >= 0"),
        (dict(t0=math.nan), ValueError, r"`t0` must be finite"),
        # method
        (
            dict(method="yoshida4", sigma=0.1),
            ValueError,
            r"`method` 'yoshida4' does not support noise \(`sigma` = 0\.1 > 0\); use one of "
            r"\['baoab', 'euler', 'euler_maruyama', 'leapfrog', 'symplectic_euler'\]",
        ),
        (dict(method=3), TypeError, r"`method` must be a string"),
        # mass
        (dict(mass=-1.0), ValueError, r"`mass` must be > 0, got -1\.0"),
        (dict(mass=0.0), ValueError, r"`mass` must be > 0"),
        (dict(mass=math.inf), ValueError, r"`mass` must be finite"),
        (dict(mass=[1.0, -2.0]), ValueError, r"`mass` must be finite and > 0 everywhere"),
        (dict(mass=[1.0, math.nan]), ValueError, r"`mass` must be finite and > 0 everywhere"),
        (
            dict(mass=[1.0, 2.0, 3.0]),
            ValueError,
            r"`mass` must be a positive scalar or have shape \(2,\), got \(3,\)",
        ),
        (dict(mass=np.eye(2)), ValueError, r"`mass` must be a positive scalar or have shape \(2,\)"),
        # divergence policy
        (
            dict(on_divergence="ignore"),
            ValueError,
            r"`on_divergence` must be one of \('raise', 'stop'\), got 'ignore'",
        ),
        # potential
        (dict(potential=lambda th: th), TypeError, r"`potential` must be an inertia\.potentials"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(overrides, error, match) -> None:
    with pytest.raises(error, match=match):
        run(**overrides)


def test_unknown_method_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"`method` must be one of \[.*\], got 'rk45'") as info:
        run(method="rk45")
    for name in inertia.METHODS:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize(
    ("theta0", "v0", "n_paths", "match"),
    [
        # theta0 (3, 2) with n_paths = 5: no silent broadcasting
        (np.ones((3, 2)), None, 5, r"`n_paths` = 5 does not match the leading dimension 3"),
        (np.ones((1, 2)), None, 5, r"`n_paths` = 5 does not match the leading dimension 1"),
        ([1.0, 0.0], np.ones((3, 2)), 5, r"`n_paths` = 5 does not match the leading dimension 3"),
        # v0 with a different d
        ([1.0, 0.0], [1.0, 0.0, 0.0], None, r"`v0` must have last dimension d = 2"),
        (np.ones((4, 2)), np.ones((4, 3)), None, r"`v0` must have last dimension d = 2"),
        # theta0 and v0 with different numbers of paths
        (np.ones((3, 2)), np.ones((5, 2)), None, r"`theta0` and `v0` have different numbers"),
        # theta0 d different from the potential's dim
        ([1.0, 0.0, 0.0], None, None, r"`theta0` must have last dimension 2 \(the potential's dim\)"),
        (np.ones((4, 1)), None, None, r"`theta0` must have last dimension 2"),
        # bad ranks
        (np.ones((2, 2, 2)), None, None, r"`theta0` must have shape \(d,\) or \(n_paths, d\)"),
        (1.0, None, None, r"`theta0` must have shape \(d,\) or \(n_paths, d\)"),
        ([1.0, 0.0], np.ones((1, 1, 2)), None, r"`v0` must have shape \(d,\) or \(n_paths, d\)"),
    ],
)
def test_mismatched_shapes_raise(theta0, v0, n_paths, match) -> None:
    with pytest.raises(ValueError, match=match):
        inertia.simulate(QUAD, theta0, v0, dt=0.1, n_steps=3, n_paths=n_paths)


@pytest.mark.parametrize(
    ("theta0", "v0", "match"),
    [
        ([1.0, math.nan], None, r"`theta0` must be finite"),
        ([math.inf, 0.0], None, r"`theta0` must be finite"),
        (np.array([[0.0, 0.0], [0.0, -math.inf]]), None, r"`theta0` must be finite"),
        ([1.0, 0.0], [math.nan, 0.0], r"`v0` must be finite"),
    ],
)
def test_non_finite_initial_state_raises(theta0, v0, match) -> None:
    with pytest.raises(ValueError, match=match):
        inertia.simulate(QUAD, theta0, v0, dt=0.1, n_steps=3)


def test_non_numeric_initial_state_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"`theta0` must be an array of real numbers"):
        inertia.simulate(QUAD, "ab", dt=0.1, n_steps=3)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: potentials.Quadratic(matrix=[[1.0, 2.0], [2.0, 1.0]]),
            r"`matrix` must be positive definite, got eigenvalues \[-1\.0, 3\.0\]",
        ),
        (
            lambda: potentials.Quadratic(matrix=[[0.0, 0.0], [0.0, 0.0]]),
            r"`matrix` must be positive definite",
        ),
        (lambda: potentials.Quadratic(matrix=[[1.0, 0.5], [0.0, 1.0]]), r"`matrix` must be symmetric"),
        (lambda: potentials.Quadratic(matrix=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), r"`matrix` must be square"),
        (lambda: potentials.Quadratic(matrix=[[1.0, math.nan], [math.nan, 1.0]]), r"`matrix` must be finite"),
        (
            lambda: potentials.Quadratic([1.0], matrix=[[1.0]]),
            r"give exactly one of `eigenvalues` and `matrix`",
        ),
        (lambda: potentials.Quadratic(), r"give exactly one of `eigenvalues` and `matrix`"),
        (lambda: potentials.Quadratic([1.0, -1.0]), r"`eigenvalues` must all be > 0"),
        (lambda: potentials.Quadratic([1.0, 0.0]), r"`eigenvalues` must all be > 0"),
        (lambda: potentials.Quadratic([]), r"`eigenvalues` must be a non-empty 1-D sequence"),
        (lambda: potentials.Quadratic([[1.0, 2.0]]), r"`eigenvalues` must be a non-empty 1-D"),
        (lambda: potentials.Quadratic([1.0, math.inf]), r"`eigenvalues` must be finite"),
        (lambda: potentials.DoubleWell(0), r"`dim` must be an integer >= 1"),
        (lambda: potentials.DoubleWell(2.0), r"`dim` must be an integer >= 1"),
        (lambda: potentials.DoubleWell(2, barrier=-1.0), r"`barrier` must be finite and > 0"),
        (lambda: potentials.DoubleWell(2, stiffness=math.nan), r"`stiffness` must be finite and > 0"),
        (lambda: potentials.Rosenbrock(1), r"`dim` must be an integer >= 2"),
        (lambda: potentials.Rosenbrock(2, b=0.0), r"`b` must be finite and > 0"),
        (lambda: potentials.Rosenbrock(2, a=math.inf), r"`a` must be finite"),
        (lambda: potentials.QuarticChain([1.0]), r"QuarticChain needs dim >= 2"),
        (lambda: potentials.QuarticChain([1.0, -2.0]), r"`eigenvalues` must all be > 0"),
        (lambda: potentials.QuarticChain([1.0, 2.0], beta=-1.0), r"`beta` must be finite and >= 0"),
    ],
)
def test_bad_potential_arguments_raise(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_torch_potential_arguments_raise() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`loss_fn` must be callable"):
        potentials.from_torch(3.0)
    module = torch.nn.Linear(2, 1).double()
    x, y = torch.zeros(4, 2, dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"`weight_decay` must be finite and >= 0"):
        potentials.from_module(module, torch.nn.functional.mse_loss, x, y, weight_decay=-1.0)
    frozen = torch.nn.Linear(2, 1).double().requires_grad_(False)
    with pytest.raises(ValueError, match=r"`module` has no trainable parameters"):
        potentials.from_module(frozen, torch.nn.functional.mse_loss, x, y)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ConstantFriction(-1.0), r"`gamma` must be >= 0"),
        (lambda: NesterovFriction(-3.0), r"`r` must be >= 0"),
        (lambda: NesterovFriction(math.nan), r"`r` must be finite"),
    ],
)
def test_bad_friction_raises(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_negative_scheduled_friction_raises() -> None:
    with pytest.raises(ValueError, match=r"`gamma\(t\)` must be >= 0"):
        inertia.simulate(
            potentials.DoubleWell(2), [0.5, 0.0], dt=0.1, n_steps=20, gamma=lambda t: 1.0 - t
        )  # negative after t = 1


@pytest.mark.parametrize("method", ["euler", "symplectic_euler", "leapfrog", "baoab"])
def test_inputs_are_never_mutated(method: str) -> None:
    theta0 = np.array([[0.5, -1.0], [2.0, 0.3], [0.0, 0.1]])
    v0 = np.array([[0.1, 0.2], [-0.3, 0.4], [1.0, -1.0]])
    mass = np.array([1.0, 2.0])
    matrix = np.array([[2.0, 0.5], [0.5, 1.0]])
    pot = potentials.Quadratic(matrix=matrix)
    saved = [x.copy() for x in (theta0, v0, mass, matrix)]
    saved_pot = (pot.matrix.copy(), pot.eigenvalues.copy())
    traj = inertia.simulate(
        pot, theta0, v0, mass=mass, gamma=0.3, sigma=0.2, dt=0.05, n_steps=50, method=method
    )
    for before, after in zip(saved, (theta0, v0, mass, matrix), strict=True):
        assert np.array_equal(before, after)
    assert np.array_equal(saved_pot[0], pot.matrix)
    assert np.array_equal(saved_pot[1], pot.eigenvalues)
    # the outputs are not views of the inputs: changing them leaves the inputs alone
    traj.theta[...] = 0.0
    traj.v[...] = 0.0
    assert np.array_equal(saved[0], theta0) and np.array_equal(saved[1], v0)


def test_zero_steps_returns_copies_not_the_inputs() -> None:
    theta0 = np.array([[0.5, -1.0]])
    v0 = np.array([[0.1, 0.2]])
    traj = inertia.simulate(QUAD, theta0, v0, dt=0.1, n_steps=0)
    assert traj.theta is not theta0 and not np.shares_memory(traj.theta, theta0)
    assert not np.shares_memory(traj.v, v0)


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        (lambda a: potentials.Quadratic(a), np.array([1.0, 2.0])),
        (lambda a: potentials.Quadratic(matrix=a), np.array([[2.0, 0.5], [0.5, 1.0]])),
        (lambda a: potentials.QuarticChain(a), np.array([1.0, 2.0])),
    ],
    ids=["quadratic-eigenvalues", "quadratic-matrix", "quartic-chain"],
)
def test_potentials_do_not_alias_their_arguments(make, arg) -> None:
    """A potential is a value: mutating the array it was built from afterwards changes nothing."""
    pot = make(arg)
    theta = np.array([0.3, -0.4])
    before = copy.deepcopy(pot.value_and_grad(theta))
    eigenvalues = None if pot.eigenvalues is None else pot.eigenvalues.copy()
    arg[...] = 100.0
    after = pot.value_and_grad(theta)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    if eigenvalues is not None:
        assert np.array_equal(eigenvalues, pot.eigenvalues)


def test_friction_dataclasses_are_frozen() -> None:
    import dataclasses

    fr = ConstantFriction(0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fr.gamma = 1.0  # type: ignore[misc]
    traj = run()
    with pytest.raises(dataclasses.FrozenInstanceError):
        traj.status = "diverged"  # type: ignore[misc]


def test_duck_typed_potential_is_refused_with_a_clear_message() -> None:
    class Lookalike:
        def value_and_grad(self, theta):  # type: ignore[no-untyped-def]
            return theta.sum(-1), theta

    with pytest.raises(TypeError, match=r"`potential` must be an inertia\.potentials\.Potential"):
        inertia.simulate(Lookalike(), [1.0], dt=0.1, n_steps=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["euler", "euler_maruyama"])
def test_pointwise_friction_must_be_finite_at_the_start(method: str) -> None:
    pot = potentials.Quadratic([1.0])
    with pytest.raises(ValueError, match="`gamma` is infinite at the start time"):
        inertia.simulate(pot, [1.0], gamma=inertia.NesterovFriction(3.0), dt=0.1, n_steps=2, method=method)
    # exact friction handles the singular start (factor 0), and euler is fine from t0 > 0
    assert inertia.simulate(pot, [1.0], gamma=inertia.NesterovFriction(3.0), dt=0.1, n_steps=2).success
    assert inertia.simulate(
        pot, [1.0], gamma=inertia.NesterovFriction(3.0), dt=0.1, n_steps=2, method=method, t0=1.0
    ).success
