"""The kernel table and the one driver (issue 11, item 1).

* one table picks the kernel, and the result names it: ``config["kernel"]``, the ``.npz``
  metadata and ``to_pandas().attrs``;
* no import circle among :mod:`inertia.kernels` and :mod:`inertia.simulate` (module-level and
  function-level imports alike);
* the old module paths (``inertia.integrators.inplace`` etc.) are the very same modules;
* a method whose step function is not the one its scheme builds (a wrapped step) runs in the
  generic loop, never in a kernel that would ignore the wrapper;
* the driver's saved steps: one rule for every kernel (compared on the step lists).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import kernels, potentials
from inertia.integrators import METHODS, register
from inertia.kernels import compiled

SRC = Path(inertia.__file__).parent
HAVE_NUMBA = compiled.available()


def _imports(path: Path, package: str) -> set[str]:
    """Every ``inertia.*`` module ``path`` imports, anywhere in it (relative imports resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], node.module]
                )
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if (SRC.parent / (full.replace(".", "/") + ".py")).exists() else base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("inertia")}


def test_no_import_circle_among_the_kernels() -> None:
    names = {p.stem: p for p in (SRC / "kernels").glob("*.py")}
    graph: dict[str, set[str]] = {}
    for stem, path in names.items():
        mod = "inertia.kernels" if stem == "__init__" else f"inertia.kernels.{stem}"
        graph[mod] = {
            m for m in _imports(path, "inertia.kernels") if m.startswith("inertia.kernels") and m != mod
        }
    graph["inertia.simulate"] = {
        m for m in _imports(SRC / "simulate.py", "inertia") if m.startswith("inertia.kernels")
    }
    assert all("inertia.simulate" not in deps for deps in graph.values())
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"import circle: {' -> '.join([*trail, node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph.get(node, ()):
            visit(dep, [*trail, node])
        state[node] = 2

    for node in graph:
        visit(node, [])
    assert "inertia.kernels.fused" not in graph["inertia.kernels.inplace"]


def test_old_module_paths_are_the_same_modules() -> None:
    from inertia.integrators import compiled as c
    from inertia.integrators import fused, fused_cpu, inplace
    from inertia.kernels import fused as kf
    from inertia.kernels import fused_cpu as kfc
    from inertia.kernels import inplace as ki

    assert (fused, fused_cpu, inplace, c) == (kf, kfc, ki, compiled)


def _name(**kw: Any) -> str:
    defaults: dict[str, Any] = dict(dt=0.01, n_steps=5)
    traj = inertia.simulate(**{**defaults, **kw})
    return str(traj.config["kernel"])


def test_the_table_picks_and_the_result_names_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    quad = potentials.Quadratic([1.0, 2.0])
    ens = np.ones((4, 2))
    assert _name(potential=quad, theta0=ens, fast=False) == "functional"
    assert _name(potential=quad, theta0=ens, sigma=0.1) == ("numba_noisy" if HAVE_NUMBA else "inplace")
    assert _name(potential=quad, theta0=ens) == ("fused_cpu" if HAVE_NUMBA else "inplace")
    assert _name(potential=potentials.DoubleWell(2), theta0=[0.5, 0.5]) == (
        "compiled_path" if HAVE_NUMBA else "numpy_path"
    )
    assert _name(potential=potentials.DoubleWell(2), theta0=ens) == "functional"  # no ensemble kernel
    monkeypatch.setattr(compiled, "available", lambda: False)
    assert _name(potential=quad, theta0=ens) == "inplace"
    assert _name(potential=potentials.DoubleWell(2), theta0=[0.5, 0.5]) == "numpy_path"
    assert [name for name, _ in kernels.TABLE][-1] == "functional"


def test_the_kernel_is_in_the_files_and_tables(tmp_path: Path) -> None:
    traj = inertia.simulate(potentials.Quadratic([1.0, 2.0]), np.ones((3, 2)), dt=0.01, n_steps=4)
    back = inertia.Trajectory.load(traj.save(tmp_path / "t.npz"))
    assert back.config["kernel"] == traj.config["kernel"]
    df = traj.to_pandas()
    assert df.attrs["kernel"] == traj.config["kernel"] and df.attrs["method"] == "leapfrog"


def test_a_wrapped_step_is_never_replaced_by_a_kernel() -> None:
    """A method registered with another method's scheme but its own step function (here one
    that doubles the friction work) must run that step: the generic loop."""
    base = METHODS["leapfrog"]

    def make_step(friction_free: bool) -> Any:
        inner = base.make_step(friction_free)

        def step(state: Any, n: int, ctx: Any) -> Any:
            res = inner(state, n, ctx)
            return res._replace(dissipated=2 * res.dissipated)

        return step

    register(dataclasses.replace(base, name="leapfrog_wrapped_test", make_step=make_step))
    try:
        assert METHODS["leapfrog_wrapped_test"].scheme is not None
        assert METHODS["leapfrog_wrapped_test"].kernel_scheme is None
        kw: dict[str, Any] = dict(gamma=0.5, dt=0.01, n_steps=20)
        wrapped = inertia.simulate(
            potentials.Quadratic([1.0, 2.0]), np.ones((3, 2)), method="leapfrog_wrapped_test", **kw
        )
        plain = inertia.simulate(potentials.Quadratic([1.0, 2.0]), np.ones((3, 2)), method="leapfrog", **kw)
        assert wrapped.config["kernel"] == "functional"
        np.testing.assert_allclose(wrapped.dissipated, 2 * plain.dissipated, rtol=1e-12)
    finally:
        METHODS.pop("leapfrog_wrapped_test", None)


@pytest.mark.parametrize(
    ("save_every", "n_steps", "initial_step"), [(7, 40, 0), (5, 5, 3), (100, 30, 0), (1, 3, 0)]
)
def test_one_saved_step_rule_for_every_kernel(save_every: int, n_steps: int, initial_step: int) -> None:
    expected = [initial_step + s for s in range(0, n_steps + 1, save_every)]
    if expected[-1] != initial_step + n_steps:
        expected.append(initial_step + n_steps)
    kw: dict[str, Any] = dict(
        dt=0.01, n_steps=n_steps, save_every=save_every, initial_step=initial_step, gamma=0.3, t0=0.0
    )
    quad = potentials.Quadratic([1.0, 2.0])
    runs = {
        "functional": inertia.simulate(quad, np.ones((3, 2)), fast=False, **kw),
        "ensemble": inertia.simulate(quad, np.ones((3, 2)), **kw),
        "noisy": inertia.simulate(quad, np.ones((3, 2)), sigma=0.1, **kw),
        "path": inertia.simulate(potentials.DoubleWell(2), [0.5, 0.5], **kw),
    }
    for name, traj in runs.items():
        assert traj.step.tolist() == expected, (name, traj.config["kernel"])


def test_saves_of_lists_the_saved_offsets_of_a_chunk() -> None:
    s = kernels.saves_of(taken=3, k=10, save_every=4, n_steps=13, row=2)
    assert s.offsets().tolist() == [1, 5, 9, 10] and list(s) == [(1, 2), (5, 3), (9, 4), (10, 5)]
    assert s.offsets(6).tolist() == [1, 5] and bool(s)
    assert not kernels.saves_of(taken=1, k=2, save_every=10, n_steps=100, row=1)
