"""Schemes declared once (issue 11, item 2): a splitting registered through the public
:func:`inertia.integrators.register_splitting` runs on every kernel of :mod:`inertia.kernels`
with no other code, and each kernel gives the generic loop's numbers to rounding in float64.

Two schemes that are not built in:

* ``ABOBA``: ``A(1/2) B(1/2) O(1) B(1/2) A(1/2)`` (Leimkuhler-Matthews' position-split sibling
  of BAOAB; two drifts around the friction step, one gradient per step);
* a two-stage McLachlan splitting (the minimum-error ``BABAB`` of McLachlan 1995,
  ``lambda = 0.1931833275037836``) with exact friction half-steps at both ends:
  ``O(1/2) B(l) A(1/2) B(1 - 2l) A(1/2) B(l) O(1/2)`` (two gradients per step).

Each kernel (``inplace`` on NumPy and torch, ``fused_cpu``, ``numba_noisy``, the ``fused_cuda``
code run on CPU tensors, ``compiled_path``, ``numpy_path``) is checked to be the one that ran
(``config["kernel"]``) and compared field by field with ``fast=False`` (the ``functional``
kernel, which runs the scheme through :func:`~inertia.integrators.splitting.make_splitting_step`).
Power control: a scheme registered with one fraction changed by 1e-6 fails the same comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import potentials
from inertia.integrators import METHODS, get_method, register_splitting
from inertia.kernels import compiled, fused

torch = pytest.importorskip("torch")

from test_inplace import MASSES, assert_same_to_rounding  # noqa: E402
from test_inplace import run as run_ensemble  # noqa: E402

HAVE_NUMBA = compiled.available()
LAMBDA = 0.1931833275037836
SCHEMES = {
    "aboba_test": [("A", 0.5), ("B", 0.5), ("O", 1.0), ("B", 0.5), ("A", 0.5)],
    "mclachlan2_test": [
        ("O", 0.5),
        ("B", LAMBDA),
        ("A", 0.5),
        ("B", 1.0 - 2.0 * LAMBDA),
        ("A", 0.5),
        ("B", LAMBDA),
        ("O", 0.5),
    ],
}


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    """Register the two schemes for this module only."""
    for name, scheme in SCHEMES.items():
        register_splitting(name, scheme, order=2, weak_order=1, description=f"test scheme {name}")
    yield
    for name in SCHEMES:
        METHODS.pop(name, None)


def test_registration_declares_the_scheme_once() -> None:
    m = get_method("mclachlan2_test")
    assert m.scheme == tuple(SCHEMES["mclachlan2_test"]) and m.kernel_scheme == m.scheme
    assert m.symplectic and m.supports_noise and m.order == 2 and m.weak_order == 1
    assert m.grad_evals_per_step == 2 and get_method("aboba_test").grad_evals_per_step == 1


@pytest.mark.parametrize(
    ("scheme", "match"),
    [
        ([("A", 1.0), ("C", 1.0), ("O", 1.0)], "letters must be 'A', 'B' or 'O'"),
        ([("A", 0.5), ("B", 1.0), ("O", 1.0)], "'A' fractions must sum to 1"),
        ([("A", 1.0), ("B", 1.0)], "'O' fractions must sum to 1"),
        ([("A", 1.0), ("B", float("nan")), ("O", 1.0)], "finite and non-zero"),
        ([("A", 1.0), ("B", 1.0), ("O", 1.5), ("O", -0.5)], "'O' ones > 0"),
        (["AB"], "sequence of \\(letter, fraction\\) pairs"),
    ],
)
def test_bad_schemes_are_refused(scheme: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        register_splitting("bad_scheme_test", scheme, order=1)
    assert "bad_scheme_test" not in METHODS


def test_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_splitting("baoab", SCHEMES["aboba_test"], order=2)


# --- every kernel against the generic loop --------------------------------------------------

ENSEMBLE_KERNELS = [
    ("inplace", "numpy", 0.4),
    ("inplace", "torch", 0.4),
    ("inplace", "numpy", 0.0),
    ("fused_cpu", "numpy", 0.0),
    ("fused_cpu", "torch", 0.0),
    ("numba_noisy", "numpy", 0.4),
    ("numba_noisy", "torch", 0.4),
    ("fused_cuda", "torch", 0.4),
    ("fused_cuda", "torch", 0.0),
]


def use_kernel(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    """Make the ensemble dispatch pick ``kernel`` on CPU."""
    if kernel in ("fused_cpu", "numba_noisy") and not HAVE_NUMBA:
        pytest.skip("numba not installed (pip install .[fast])")
    if kernel == "inplace":
        monkeypatch.setattr(compiled, "available", lambda: False)
    if kernel == "fused_cuda":  # the CUDA kernel's code on CPU tensors, compiled without codegen
        monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cpu", "cuda"))
        monkeypatch.setattr(fused, "COMPILE_BACKEND", "aot_eager")


@pytest.mark.parametrize("friction", ["constant", "3/t"])
@pytest.mark.parametrize(("kernel", "backend", "sigma"), ENSEMBLE_KERNELS)
@pytest.mark.parametrize("method", sorted(SCHEMES))
def test_ensemble_kernels_run_a_registered_scheme(
    method: str, kernel: str, backend: str, sigma: float, friction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_kernel(monkeypatch, kernel)
    kw = dict(sigma=sigma, friction=friction, mass=MASSES["vector" if friction == "3/t" else "scalar"])
    got = run_ensemble(backend, method, fast=True, **kw)
    ref = run_ensemble(backend, method, fast=False, **kw)
    assert got.config["kernel"] == kernel and ref.config["kernel"] == "functional"
    assert got.success
    assert_same_to_rounding(got, ref)


SINGLE_PATH_KERNELS = ["compiled_path", "numpy_path"]


@pytest.mark.parametrize("gamma", [0.0, 0.7])
@pytest.mark.parametrize("kernel", SINGLE_PATH_KERNELS)
@pytest.mark.parametrize("method", sorted(SCHEMES))
def test_single_path_kernels_run_a_registered_scheme(
    method: str, kernel: str, gamma: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kernel == "compiled_path" and not HAVE_NUMBA:
        pytest.skip("numba not installed (pip install .[fast])")
    if kernel == "numpy_path":
        monkeypatch.setattr(compiled, "available", lambda: False)
    pot = potentials.DoubleWell(6, barrier=1.5, stiffness=2.0)
    kw: dict[str, Any] = dict(gamma=gamma, dt=0.01, n_steps=300, save_every=7, method=method)
    got = inertia.simulate(pot, np.full(6, 0.5), **kw)
    ref = inertia.simulate(pot, np.full(6, 0.5), **kw, fast=False)
    assert got.config["kernel"] == kernel
    assert_same_to_rounding(got, ref)


def test_comparison_detects_a_scheme_off_by_1e_6(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same comparison fails for a scheme whose middle kick is off by 1e-6 (power control)."""
    off = [(s, c * (1 + 1e-6) if i == 3 else c) for i, (s, c) in enumerate(SCHEMES["mclachlan2_test"])]
    off[1] = ("B", off[1][1] - 1e-6 * off[3][1])  # keep the B fractions summing to 1
    register_splitting("mclachlan2_off_test", off, order=2)
    try:
        monkeypatch.setattr(compiled, "available", lambda: False)
        got = run_ensemble("numpy", "mclachlan2_off_test", fast=True, sigma=0.0)
        ref = run_ensemble("numpy", "mclachlan2_test", fast=False, sigma=0.0)
        with pytest.raises(AssertionError):
            assert_same_to_rounding(got, ref.__class__(**{**ref.__dict__, "method": got.method}))
    finally:
        METHODS.pop("mclachlan2_off_test", None)
