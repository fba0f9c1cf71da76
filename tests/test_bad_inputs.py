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

import atexit
import contextlib
import io
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import inertia
from inertia import potentials, theory
from inertia.cli import main as cli_main
from inertia.demo import run_demo
from inertia.runs import create_run, read_history, read_manifest
from inertia.track import InertiaTracker, RunLog

QUAD = potentials.Quadratic([0.25, 4.0])
_TALLY = {"cases": 0, "clear errors": 0}
_TMP = Path(tempfile.mkdtemp(prefix="inertia-bad-inputs-"))
atexit.register(shutil.rmtree, _TMP, True)


class CliError(Exception):
    """A CLI call that exited non-zero; the message is what it printed on stderr."""


def _cli(*argv: str) -> Callable[[], Any]:
    def call() -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli_main(list(argv))
        if rc != 0:
            raise CliError(f"rc={rc}: " + " | ".join(err.getvalue().splitlines()))

    return call


def _fresh(name: str) -> Path:
    """A path under the module's scratch folder that does not exist yet."""
    return _TMP / name


def _opt() -> Any:
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    return torch.optim.SGD([w], lr=0.1, momentum=0.9)


def _tracker(**kw: Any) -> Callable[[], Any]:
    return lambda: InertiaTracker(_opt(), **kw)


def _runlog(name: str, **kw: Any) -> Callable[[], Any]:
    return lambda: RunLog(_fresh(name), **kw)


def _file(name: str, data: bytes) -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def _run_with(name: str, manifest: bytes) -> Path:
    run = _TMP / name
    run.mkdir()
    (run / "manifest.json").write_bytes(manifest)
    return run


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
    # -- theory
    (
        "negative eigenvalue rate",
        lambda: theory.convergence_rate([-4], 1),
        ValueError,
        r"`eigenvalues` must all be >= 0, got \[-4\.0\]",
    ),
    (
        "negative gradient flow",
        lambda: theory.gradient_flow_rate([-1]),
        ValueError,
        r"`eigenvalues` must all be >= 0, got \[-1\.0\]",
    ),
    (
        "empty eigenvalues",
        lambda: theory.gradient_flow_rate([]),
        ValueError,
        r"`eigenvalues` must be a non-empty 1-D sequence, got shape \(0,\)",
    ),
    (
        "nan theta0 theory",
        lambda: theory.damped_quadratic_inertia([1.0], 0.1, [math.nan], None, 1.0),
        ValueError,
        r"`theta0` must be finite, got nan",
    ),
    (
        "inf v0 theory",
        lambda: theory.damped_quadratic_inertia([1.0], 0.1, [1.0], [math.inf], 1.0),
        ValueError,
        r"`v0` must be finite, got inf",
    ),
    (
        "nan heating",
        lambda: theory.heating_inertia(math.nan, 2, 0.1, 1.0),
        ValueError,
        r"`inertia0` must be finite, got nan",
    ),
    (
        "complex theory theta0",
        lambda: theory.expected_inertia([1.0], 0.1, 0.1, [1j], None, 1.0),
        TypeError,
        r"`theta0` must hold real numbers.*complex",
    ),
    (
        "negative gamma theory",
        lambda: theory.damped_quadratic_inertia([1.0], -1.0, [1.0], None, 1.0),
        ValueError,
        r"`gamma` must be >= 0, got -1\.0",
    ),
    (
        "negative time",
        lambda: theory.damped_quadratic_inertia([1.0], 0.1, [1.0], None, [-2.0]),
        ValueError,
        r"`t` must be .*>= 0, got \[-2\.0\]",
    ),
    (
        "bad mass theory",
        lambda: theory.expected_inertia(np.eye(2), 0.1, 0.1, [1.0, 0.0], None, 1.0, mass=[1.0, -1.0]),
        ValueError,
        r"`mass` must be > 0 everywhere, got \[1\.0, -1\.0\]",
    ),
    (
        "asymmetric A theory",
        lambda: theory.damped_quadratic_inertia([[1.0, 1.0], [0.0, 1.0]], 0.1, [1.0, 0.0], None, 1.0),
        ValueError,
        r"`eigenvalues` must be symmetric.*= 1\.0 but",
    ),
    (
        "string dim",
        lambda: theory.stationary_inertia("2", 0.5, 0.3),
        ValueError,
        r"`dim` must be an integer >= 1, got '2'",
    ),
    # -- tracker
    (
        "sinks of paths",
        _tracker(sinks=["runs/x"]),
        TypeError,
        r"`sinks\[0\]` must be a sink with write\(row\) and close\(\).*'runs/x'",
    ),
    ("sinks a string", _tracker(sinks="runs/x"), TypeError, r"`sinks` must be a list of sinks.*'runs/x'"),
    (
        "sinks bare RunLog",
        lambda: InertiaTracker(_opt(), sinks=RunLog(_fresh("bare"))),
        TypeError,
        r"`sinks` must be a list of sinks, got a bare RunLog",
    ),
    ("tracker mode", _tracker(mode="fast"), ValueError, r"`mode` must be one of .*got 'fast'"),
    ("tracker every", _tracker(every=0), ValueError, r"`every` must be an integer >= 1, got 0"),
    ("tracker every float", _tracker(every=2.0), ValueError, r"`every` must be an integer >= 1, got 2\.0"),
    (
        "tracker policy",
        _tracker(nan_policy="ignore"),
        ValueError,
        r"`nan_policy` must be one of .*got 'ignore'",
    ),
    (
        "tracker optimizer",
        lambda: InertiaTracker(object()),
        TypeError,
        r"`optimizer` must be a torch\.optim\.Optimizer, got object",
    ),
    ("tracker fresh", _tracker(fresh="yes"), TypeError, r"`fresh` must be True, False or None, got 'yes'"),
    # -- RunLog
    (
        "config inf",
        _runlog("c-inf", config={"clip": math.inf}),
        ValueError,
        r"`config\['clip'\]` must be a finite number .*got inf",
    ),
    (
        "config nan nested",
        _runlog("c-nan", config={"a": {"b": [1.0, math.nan]}}),
        ValueError,
        r"`config\['a'\]\['b'\]\[1\]` must be a finite number.*got nan",
    ),
    (
        "config object",
        _runlog("c-obj", config={"opt": object()}),
        TypeError,
        r"`config\['opt'\]` must be a JSON value.*object",
    ),
    ("config key", _runlog("c-key", config={1: 2}), TypeError, r"`config` keys must be strings.*got key 1"),
    (
        "config not mapping",
        _runlog("c-list", config=[1, 2]),
        TypeError,
        r"`config` must be a mapping, got list",
    ),
    (
        "fsync_every",
        _runlog("f0", fsync_every=0),
        ValueError,
        r"`fsync_every` must be an integer >= 1, got 0",
    ),
    (
        "step_offset",
        _runlog("s-1", step_offset=-1),
        ValueError,
        r"`step_offset` must be None or an integer >= 0, got -1",
    ),
    (
        "columns dup",
        _runlog("cols", columns=["a", "a"]),
        ValueError,
        r"`columns` must be distinct non-empty names, got \['a', 'a'\]",
    ),
    ("run type", lambda: RunLog(42), TypeError, r"`run` must be a RunDir or a path, got int"),
    (
        "run is a file",
        lambda: RunLog(_file("runfile", b"x")),
        ValueError,
        r"`run` must be a new or empty directory.*runfile.*which is a file",
    ),
    (
        "run non-empty",
        lambda: RunLog(_file("full.txt", b"x").parent),
        ValueError,
        r"`run` must be a new or empty directory.*which holds \d+ entries",
    ),
    (
        "resume missing",
        lambda: RunLog(_fresh("nothing-here"), resume=True),
        FileNotFoundError,
        r"`path` must be a run directory holding manifest\.json.*nothing-here",
    ),
    # -- readers
    (
        "manifest bad field",
        lambda: read_manifest(_run_with("m-skip", b'{"kind": "demo", "skipped": [1, 2]}')),
        ValueError,
        r"m-skip/manifest\.json: manifest field `skipped` must be an object.*got \[1, 2\]",
    ),
    (
        "manifest not json",
        lambda: read_manifest(_run_with("m-junk", b"garbage")),
        ValueError,
        r"m-junk/manifest\.json: not a run manifest: invalid JSON at line 1 column 1",
    ),
    (
        "manifest a list",
        lambda: read_manifest(_run_with("m-list", b"[1]")),
        ValueError,
        r"manifest .*m-list/manifest\.json must hold a JSON object, got list",
    ),
    (
        "manifest n_rows",
        lambda: read_history(_run_with("m-rows", b'{"kind": "track", "n_rows": -3}')),
        ValueError,
        r"manifest field `n_rows` must be an integer >= 0 or null, got -3",
    ),
    (
        "manifest columns",
        lambda: read_history(_run_with("m-cols", b'{"kind": "track", "columns": "step"}')),
        ValueError,
        r"manifest field `columns` must be a list of column names or null, got 'step'",
    ),
    (
        "manifest history path",
        lambda: read_history(_run_with("m-hist", b'{"history": "../../etc/passwd"}')),
        ValueError,
        r"manifest field `history` must be 'history\.parquet' or null, got '\.\./\.\./etc/passwd'",
    ),
    (
        "create_run kind",
        lambda: create_run("../x", root=_TMP),
        ValueError,
        r"`kind` must be a plain name.*got '\.\./x'",
    ),
    (
        "create_run manifest",
        lambda: create_run("demo", root=_TMP / "cr", manifest={"x": math.inf}),
        ValueError,
        r"`manifest\['x'\]` must be a finite number.*got inf",
    ),
    # -- CLI
    (
        "cli track seed",
        _cli("track", "--seed", "4294967296"),
        CliError,
        r"rc=2.*argument --seed: must be an integer in \[0, 2\*\*32 - 1\], got '4294967296'",
    ),
    (
        "cli demo seed",
        _cli("demo", "--seed", "-1"),
        CliError,
        r"rc=2.*argument --seed: must be an integer in \[0, 2\*\*32 - 1\], got '-1'",
    ),
    (
        "cli track lr",
        _cli("track", "--lr", "nan"),
        CliError,
        r"rc=2.*argument --lr: must be a finite number > 0, got 'nan'",
    ),
    (
        "cli track epochs",
        _cli("track", "--epochs", "0"),
        CliError,
        r"rc=2.*argument --epochs: must be an integer >= 1, got '0'",
    ),
    (
        "cli report file",
        lambda: _cli("report", str(_file("notarun.txt", b"hello")))(),
        CliError,
        r"rc=2.*RUN_DIR must be a run directory.*notarun\.txt.*which is a file",
    ),
    (
        "cli report missing",
        _cli("report", "/nonexistent/run"),
        CliError,
        r"rc=2.*RUN_DIR must be a run directory.*'/nonexistent/run'.*missing",
    ),
    (
        "cli report junk manifest",
        lambda: _cli("report", str(_run_with("cli-junk", b"{")))(),
        CliError,
        r"rc=2.*cli-junk/manifest\.json: not a run manifest: invalid JSON",
    ),
    (
        "cli report bad skipped",
        lambda: _cli("report", str(_run_with("cli-skip", b'{"kind": "demo", "skipped": [1, 2]}')))(),
        CliError,
        r"rc=2.*manifest field `skipped` must be an object.*\[1, 2\]",
    ),
    (
        "cli report kind",
        lambda: _cli("report", str(_run_with("cli-kind", b'{"kind": "other"}')))(),
        CliError,
        r"rc=2.*manifest kind 'demo' or 'track'\), got kind 'other'",
    ),
    (
        "cli demo out file",
        lambda: _cli("demo", "--quick", "--out", str(_file("outfile", b"x")))(),
        CliError,
        r"rc=2.*argument --out: `out` must be a new or empty directory.*which is a file",
    ),
    (
        "cli demo out under file",
        lambda: _cli("demo", "--quick", "--out", str(_file("outfile2", b"x") / "run"))(),
        CliError,
        r"rc=2.*argument --out: `out` must be a path whose parent folder exists or can be made.*outfile2",
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
    assert len({c[0] for c in CASES}) == len(CASES) >= 60


def test_failed_constructions_leave_nothing_behind(tmp_path: Path) -> None:
    """A RunLog refused for its config, or a demo refused for its seed, makes no directory."""
    for config in ({"clip": math.inf}, {"x": object()}):
        with pytest.raises((ValueError, TypeError)):
            RunLog(tmp_path / "run", config=config)
    with pytest.raises(ValueError, match="`seed` must be >= 0"):
        run_demo(out=tmp_path / "demo", quick=True, seed=-1, progress=False)
    with pytest.raises(ValueError):
        create_run("demo", tmp_path / "cr", manifest={"x": math.nan})
    assert list(tmp_path.iterdir()) == []


def test_a_bare_runlog_sink_is_closed_not_left_running(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "bare")
    with pytest.raises(TypeError, match=r"pass sinks=\[\.\.\.\]"):
        InertiaTracker(_opt(), sinks=log)  # type: ignore[arg-type]
    assert log.closed
    assert read_manifest(tmp_path / "bare")["status"] == "failed"


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


def test_printing_a_trajectory_does_not_dump_its_arrays() -> None:
    traj = inertia.simulate(QUAD, [1.0, 1.0], dt=0.01, n_steps=5000, n_paths=50)
    text = repr(traj)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("Trajectory(status='success'") and "n_paths=50" in text and "2.125 ->" in text
