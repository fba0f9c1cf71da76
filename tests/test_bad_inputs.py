"""Every bad input named (issue 10, items 1 and 2).

One table of bad inputs across the Python API (``simulate``, the potentials, the theory
functions), the tracker, :class:`inertia.track.RunLog`, the readers and the CLI. Each case must
raise at the front door (or at the tracker's construction) an error whose message names the
argument, the rule and the value received: ``match`` is a regular expression holding all three.
The dtype rule has its own tests: integer inputs are promoted to float64 (never computed in
integers), booleans and complex numbers refused. The number of cases and of clear errors is
printed (``pytest -s``) for the issue's closing note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import inertia
from inertia import potentials

QUAD = potentials.Quadratic([0.25, 4.0])
_TALLY = {"cases": 0, "clear errors": 0}


def _sim(**kw: Any) -> Callable[[], Any]:
    base: dict[str, Any] = dict(potential=QUAD, theta0=[1.0, 1.0], dt=0.01, n_steps=3)
    base.update(kw)
    return lambda: inertia.simulate(**base)


#: (id, call, error type, regex naming the argument, the rule and the value)
CASES: list[tuple[str, Callable[[], Any], type[BaseException], str]] = [
    # -- simulate: dtypes
    (
        "bool theta0",
        _sim(theta0=np.array([True, False])),
        TypeError,
        r"`theta0` must hold real numbers.*bool",
    ),
    (
        "bool tensor",
        _sim(theta0=torch.tensor([True, True])),
        TypeError,
        r"`theta0` must hold real.*torch\.bool",
    ),
    ("complex theta0", _sim(theta0=[1 + 1j, 0.0]), TypeError, r"`theta0` must hold real numbers.*complex128"),
    ("complex v0", _sim(v0=np.array([0j, 1j])), TypeError, r"`v0` must hold real numbers.*complex"),
    (
        "complex tensor",
        _sim(theta0=torch.tensor([1 + 0j, 1 + 0j])),
        TypeError,
        r"`theta0` must hold real.*torch\.complex64",
    ),
    ("string theta0", _sim(theta0="ab"), TypeError, r"`theta0` must be an array of real numbers.*'ab'"),
    ("object theta0", _sim(theta0=[object(), 1.0]), TypeError, r"`theta0` must be an array of real.*object"),
    (
        "nan tensor",
        _sim(theta0=torch.tensor([1.0, math.nan])),
        ValueError,
        r"`theta0` must be finite, got nan at theta0\[1\]",
    ),
    ("inf v0", _sim(v0=[0.0, -math.inf]), ValueError, r"`v0` must be finite, got -inf at v0\[1\]"),
    ("bool mass", _sim(mass=True), TypeError, r"`mass` must be a positive number.*True"),
    (
        "complex mass",
        _sim(mass=np.array([1 + 1j, 1.0])),
        TypeError,
        r"`mass` must hold real numbers.*complex",
    ),
    ("zero mass tensor", _sim(mass=torch.tensor(0.0)), ValueError, r"`mass` must be > 0, got 0\.0"),
    # -- simulate: flags and callbacks
    ("fast string", _sim(fast="no"), TypeError, r"`fast` must be True or False, got 'no'"),
    ("fast int", _sim(fast=1), TypeError, r"`fast` must be True or False, got 1"),
    ("progress int", _sim(progress=42), TypeError, r"`progress` must be None or a callable.*got 42"),
    # -- potentials
    (
        "bool eigenvalues",
        lambda: potentials.Quadratic(np.array([True, True])),
        TypeError,
        r"`eigenvalues` must hold real.*bool",
    ),
    (
        "complex eigenvalues",
        lambda: potentials.Quadratic([1j, 1.0]),
        TypeError,
        r"`eigenvalues` must hold real.*complex",
    ),
    (
        "complex matrix",
        lambda: potentials.Quadratic(matrix=np.eye(2) * (1 + 1j)),
        TypeError,
        r"`matrix` must hold real.*complex",
    ),
    (
        "asymmetric matrix",
        lambda: potentials.Quadratic(matrix=[[1.0, 0.5], [0.0, 1.0]]),
        ValueError,
        r"`matrix` must be symmetric.*matrix\[0, 1\] = 0\.5 but matrix\[1, 0\] = 0\.0",
    ),
    (
        "string barrier",
        lambda: potentials.DoubleWell(2, barrier="1"),
        TypeError,
        r"`barrier` must be a real number, got '1'",
    ),
    (
        "complex beta",
        lambda: potentials.QuarticChain([1.0, 2.0], beta=1j),
        TypeError,
        r"`beta` must be a real number, got 1j",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    print(f"\nbad inputs: {_TALLY['clear errors']} of {_TALLY['cases']} cases give a clear error")


@pytest.mark.parametrize(("call", "error", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error(call: Callable[[], Any], error: type, match: str) -> None:
    _TALLY["cases"] += 1
    with pytest.raises(error, match=match):
        call()
    _TALLY["clear errors"] += 1


def test_table_is_large_enough() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 20


# --------------------------------------------------------------------------- the dtype rule


def test_integer_tensor_is_promoted_not_computed_in_integers() -> None:
    """The issue's example: 0.25 must not become 0."""
    traj = inertia.simulate(QUAD, torch.tensor([1, 1]), dt=0.01, n_steps=100)
    assert traj.inertia[0, 0] == pytest.approx(0.5 * (0.25 + 4.0)) == 2.125
    assert traj.theta.dtype == torch.float64 and traj.success
    ref = inertia.simulate(QUAD, torch.tensor([1.0, 1.0], dtype=torch.float64), dt=0.01, n_steps=100)
    np.testing.assert_array_equal(traj.inertia, ref.inertia)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_integer_numpy_inputs_are_promoted_to_float64(dtype: Any) -> None:
    traj = inertia.simulate(
        QUAD, np.array([1, 1], dtype=dtype), np.array([0, 1], dtype=dtype), dt=0.01, n_steps=3
    )
    ref = inertia.simulate(QUAD, [1.0, 1.0], [0.0, 1.0], dt=0.01, n_steps=3)
    assert traj.theta.dtype == np.float64
    np.testing.assert_array_equal(traj.inertia, ref.inertia)


def test_integer_mass_and_potential_arguments_are_promoted() -> None:
    a = inertia.simulate(potentials.Quadratic([1, 4]), [1, 1], dt=0.01, n_steps=3, mass=np.array([2, 2]))
    b = inertia.simulate(potentials.Quadratic([1.0, 4.0]), [1.0, 1.0], dt=0.01, n_steps=3, mass=2.0)
    np.testing.assert_allclose(a.inertia, b.inertia, rtol=1e-15)
    c = inertia.simulate(QUAD, [1.0, 1.0], dt=0.01, n_steps=3, mass=torch.tensor(2.0))
    assert c.config["mass"] == 2.0


def test_float32_tensors_keep_their_dtype() -> None:
    traj = inertia.simulate(QUAD, torch.tensor([1.0, 1.0]), dt=0.01, n_steps=3)
    assert traj.theta.dtype == torch.float32
