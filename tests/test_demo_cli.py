"""The demo and the command line: outputs of ``inertia demo --quick``, ``verify`` exit codes,
``report`` re-rendering, argument errors, and that ``import inertia`` stays free of matplotlib."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inertia.cli import main
from inertia.runs import read_manifest, read_table

SECTIONS = ("frictionless", "damped", "heating", "langevin", "network", "integrators", "restart", "stability")
FIGURES = (
    "frictionless",
    "damped_energies",
    "damped_ledger",
    "heating",
    "langevin",
    "network_conservation",
    "network_ledger",
    "integrators_drift",
    "integrators_convergence",
    "restart_inertia",
    "restart_ledger",
    "stability_gd",
    "stability_momentum",
)
TABLES = (
    "frictionless",
    "damped",
    "heating",
    "langevin",
    "network",
    "integrators_drift",
    "integrators_convergence",
    "restart",
    "stability",
    *(f"{s}_summary" for s in SECTIONS),
)


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    rc, stdout, stderr = _run(["demo", "--quick", "--out", str(out), "--no-progress"])
    return out, rc, stdout, stderr


QuickRun = tuple[Path, int, str, str]


def _summary(run: Path, section: str) -> pd.DataFrame:
    return read_table(run, f"{section}_summary").set_index("quantity")


def _row(df: pd.DataFrame, prefix: str) -> pd.Series:
    rows = df[df.index.str.startswith(prefix)]
    assert len(rows) == 1, (prefix, list(df.index))
    return rows.iloc[0]


# -- inertia demo ------------------------------------------------------------------------------


def test_demo_exits_0_and_prints_where_it_wrote(quick_run: QuickRun) -> None:
    run, rc, stdout, stderr = quick_run
    assert rc == 0
    assert str(run) in stdout and str(run / "report.html") in stdout
    assert len(stdout.splitlines()) == 2 and stderr == ""  # only the CLI prints


def test_demo_writes_manifest(quick_run: QuickRun) -> None:
    m = read_manifest(quick_run[0])
    assert m["kind"] == "demo" and m["status"] == "complete" and m["finished"]
    assert m["seed"] == 0 and m["config"]["quick"] is True
    assert m["config"]["systems"]["quadratic"]["eigenvalues"] == [0.25, 4.0]
    assert m["config"]["scenarios"] == list(SECTIONS)
    assert {"python", "numpy", "scipy", "inertia", "torch"} <= set(m["versions"])
    assert m["skipped"] == {}


def test_demo_writes_every_table_and_figure(quick_run: QuickRun) -> None:
    run = quick_run[0]
    for name in TABLES:
        df = read_table(run, name)
        assert len(df) > 0, name
    for name in FIGURES:
        data = (run / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))


def test_report_is_self_contained_and_has_every_regime(quick_run: QuickRun) -> None:
    html = (quick_run[0] / "report.html").read_text(encoding="utf-8")
    for key in SECTIONS:
        assert f'<section id="{key}">' in html, key
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="http' not in html and "<script" not in html
    for word in ("kinetic", "potential", "inertia", "gamma", "sigma", "dt"):
        assert word in html
    assert "manifest.json" in html and "version: numpy" in html


def test_demo_tables_carry_theory_next_to_simulation(quick_run: QuickRun) -> None:
    run = quick_run[0]
    fr = read_table(run, "frictionless")
    q = fr[fr["system"] == "quadratic"]
    assert np.allclose(q["inertia_theory"], 1.0)
    assert np.max(np.abs(q["inertia"] - q["inertia_theory"])) < 1e-3
    damped = read_table(run, "damped")
    assert set(damped["regime"]) == {"underdamped", "critical", "overdamped"}
    assert np.max(np.abs(damped["inertia"] - damped["inertia_theory"])) < 1e-3
    i0 = damped.groupby("regime")["inertia"].transform("first")
    assert np.max(np.abs(damped["inertia"] + damped["dissipated"] - i0)) < 1e-3
    for name in ("heating", "langevin"):
        df = read_table(run, name).dropna(subset=["theory"])
        assert (df["se"] >= 0).all() and len(df) > 0


def test_demo_summaries_agree_with_the_laws(quick_run: QuickRun) -> None:
    run = quick_run[0]
    fr = _summary(run, "frictionless")
    assert _row(fr, "quadratic: max |I(t) - I(0)| / I(0)")["measured"] < 1e-3
    damped = _summary(run, "damped")
    shadow = _row(damped, "critical (gamma = 1): final ledger residual")
    assert math.isclose(shadow["measured"], shadow["predicted"], rel_tol=1e-3)
    integ = _summary(run, "integrators")
    for method, order in (("euler", 1), ("symplectic_euler", 1), ("leapfrog", 2), ("yoshida4", 4)):
        row = _row(integ, f"{method}: convergence order")
        assert row["predicted"] == order and abs(row["measured"] - order) < 0.15, method
    for method in ("symplectic_euler", "leapfrog", "yoshida4"):
        assert abs(_row(integ, f"{method}: drift ratio")["measured"] - 1.0) < 0.05
    euler = _row(integ, "euler: drift ratio")
    assert euler["measured"] > 100 and math.isclose(euler["measured"], euler["predicted"], rel_tol=1e-6)
    net = _summary(run, "network")
    assert _row(net, "frictionless (gamma = 0): max |I(t) - I(0)| / I(0)")["measured"] < 1e-3
    assert _row(net, "damped (gamma = 0.3): max |I + dissipated - I(0)|")["measured"] < 1e-3
    restart = _summary(run, "restart")
    for name in ("plain", "restart", "tuned"):
        residual = restart[restart.index.str.startswith(name + " (") & restart.index.str.contains("residual")]
        assert len(residual) == 1 and residual["measured"].iloc[0] < 1e-12
    booked = _row(restart, "tracker rows with a restart")
    assert booked["measured"] == booked["predicted"] > 0
    plain = _row(restart, "plain (lr = 0.5, mu = 0.99): inertia decay")
    assert abs(plain["measured"] - 0.99) < 2e-3
    stab = _summary(run, "stability")
    assert _row(stab, "GD lr=0.5: stability threshold")["measured"] == pytest.approx(4.0)
    assert _row(stab, "Adam lr=0.01: stability threshold")["measured"] == pytest.approx(3800.0)
    # GD at lr = 0.5 starts near its edge: warned at the first sharpness step, and 1/2 dtheta^T H
    # dtheta matches the ledger's curvature work B to a few percent
    assert _row(stab, "GD lr=0.5: first step with sharpness >= 0.9 threshold (the warning)")["measured"] == 20
    for run_name in ("GD lr=0.1", "GD lr=0.5", "Adam lr=0.01"):
        assert (
            _row(stab, f"{run_name}: median |1/2 dtheta^T H dtheta / B - 1| at sharpness steps")["measured"]
            < 0.05
        )


def test_demo_refuses_a_non_empty_out(quick_run: QuickRun) -> None:
    run = quick_run[0]
    before = sorted(p.name for p in run.iterdir())
    rc, _, err = _run(["demo", "--quick", "--out", str(run), "--no-progress"])
    assert rc == 2
    assert "--out" in err and "must be a new or empty directory" in err and str(run) in err
    assert sorted(p.name for p in run.iterdir()) == before


def test_report_rerenders_from_the_saved_tables(quick_run: QuickRun, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(quick_run[0], copy)
    data = {p.name: p.read_bytes() for p in copy.iterdir() if p.suffix in (".csv", ".json")}
    for p in copy.iterdir():
        if p.suffix in (".png", ".html"):
            p.unlink()
    rc, stdout, _ = _run(["report", str(copy)])
    assert rc == 0 and str(copy / "report.html") in stdout
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert all((copy / f"{f}.png").is_file() for f in FIGURES)
    assert {
        p.name: p.read_bytes() for p in copy.iterdir() if p.suffix in (".csv", ".json")
    } == data  # the data is only read


def test_report_refuses_what_is_not_a_demo_run(tmp_path: Path) -> None:
    rc, _, err = _run(["report", str(tmp_path)])
    assert rc == 2 and "manifest.json" in err
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "other"}))
    rc, _, err = _run(["report", str(tmp_path)])
    assert rc == 2 and "must be a demo run directory" in err


# -- inertia verify ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    law: str
    predicted: float
    measured: float
    tolerance: float
    passed: bool
    detail: str


def _stub_verify(monkeypatch: pytest.MonkeyPatch, results: list[CheckResult]) -> dict:
    seen: dict = {}

    def run_checks(quick: bool, progress: object = None) -> list[CheckResult]:
        seen["quick"] = quick
        for r in results:
            if progress is not None:
                progress(r.law)  # type: ignore[operator]
        return results

    module = types.ModuleType("inertia.verify")
    module.run_checks = run_checks  # type: ignore[attr-defined]
    module.CheckResult = CheckResult  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inertia.verify", module)
    return seen


PASS = CheckResult("conservation (leapfrog)", 0.0, 1e-6, 1e-4, True, "ok")
FAIL = CheckResult("stationary inertia (baoab)", 0.5, 0.7, 0.01, False, "off by 20 SE")


def test_verify_exit_0_when_every_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _stub_verify(monkeypatch, [PASS])
    rc, stdout, stderr = _run(["verify", "--quick"])
    assert rc == 0 and seen["quick"] is True
    header = stdout.splitlines()[0]
    assert [c.strip() for c in header.split("|")] == ["law", "predicted", "measured", "tolerance", "pass"]
    assert "conservation (leapfrog)" in stdout and "PASS" in stdout
    assert "conservation (leapfrog)" in stderr  # progress


def test_verify_exit_1_when_a_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _stub_verify(monkeypatch, [PASS, FAIL])
    rc, stdout, _ = _run(["verify"])
    assert rc == 1 and seen["quick"] is False
    assert "FAIL" in stdout and "off by 20 SE" in stdout and "1 of 2 checks passed" in stdout


def test_verify_json(monkeypatch: pytest.MonkeyPatch) -> None:
    nan = CheckResult("no prediction", float("nan"), 1.0, float("inf"), True, "")
    numpy_typed = CheckResult(
        "numpy scalars",
        np.float64(1.0),
        np.float64(1.5),
        np.float64(0.1),
        np.bool_(False),
        "np.bool_ and np.float64",
    )
    _stub_verify(monkeypatch, [PASS, FAIL, nan, numpy_typed])
    rc, stdout, _ = _run(["verify", "--json"])
    assert rc == 1
    data = json.loads(stdout)
    assert data["passed"] is False and data["n_checks"] == 4 and data["n_failed"] == 2
    assert data["checks"][3]["passed"] is False and data["checks"][3]["measured"] == 1.5
    assert data["checks"][1] == {
        "law": FAIL.law,
        "predicted": 0.5,
        "measured": 0.7,
        "tolerance": 0.01,
        "passed": False,
        "detail": "off by 20 SE",
    }
    assert data["checks"][2]["predicted"] == "nan"


# -- arguments ---------------------------------------------------------------------------------


def test_version() -> None:
    import inertia

    rc, stdout, _ = _run(["--version"])
    assert rc == 0 and inertia.__version__ in stdout


@pytest.mark.parametrize(
    "argv", [[], ["nonsense"], ["demo", "--bogus"], ["demo", "--seed", "x"], ["report"], ["verify", "extra"]]
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    rc, _, stderr = _run(argv)
    assert rc == 2 and "usage: inertia" in stderr


# -- imports -----------------------------------------------------------------------------------


def test_import_inertia_does_not_import_matplotlib() -> None:
    code = (
        "import sys, inertia, inertia.runs, inertia.report, inertia.cli; "
        "bad = [m for m in ('matplotlib', 'torch', 'tqdm') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plots_leave_the_pyplot_backend_alone() -> None:
    code = (
        "import matplotlib; matplotlib.use('svg'); import inertia.plots, inertia.demo; "
        "import sys; sys.exit(0 if matplotlib.get_backend() == 'svg' else 1)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plots_accept_a_live_trajectory(tmp_path: Path) -> None:
    import inertia
    from inertia import plots, potentials

    traj = inertia.simulate(potentials.Quadratic([1.0]), [1.0], dt=0.1, n_steps=20, n_paths=3)
    fig = plots.energies({"harmonic": traj}, residual=True)
    assert len(fig.axes) == 2
    fig = plots.ensemble({"harmonic": {"I": traj}}, levels={"harmonic": {"I(0)": 0.5}})
    path = plots.save(fig, tmp_path / "e.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError):
        plots.save(fig, path)
    with pytest.raises(ValueError, match="missing"):
        plots.ledger({"x": {"t": [0.0, 1.0]}})
    with pytest.raises(TypeError, match="data must be"):
        plots.drift({"x": 3})


# -- failures and skips inside the demo -------------------------------------------------------


def _fake_scenario(key: str, compute: object) -> object:
    from inertia.demo import _Scenario
    from inertia.report import Section

    return _Scenario(
        Section(key, key.title(), "I = K + V", "text", (), (f"{key}_summary",)),
        compute,
        lambda tables: {},
        (f"{key}_summary",),
    )  # type: ignore[arg-type]


def test_a_failing_scenario_is_recorded_in_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inertia import demo

    def ok(cfg: object, prog: object) -> dict:
        return {"first_summary": pd.DataFrame({"quantity": ["x"], "measured": [1.0]})}

    def boom(cfg: object, prog: object) -> dict:
        raise RuntimeError("numerics went wrong")

    monkeypatch.setattr(demo, "SCENARIOS", (_fake_scenario("first", ok), _fake_scenario("second", boom)))
    with pytest.raises(RuntimeError, match="numerics went wrong"):
        demo.run_demo(out=tmp_path / "run", progress=False, quick=True)
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "failed" and "numerics went wrong" in m["error"] and m["finished"]
    assert read_table(tmp_path / "run", "first_summary")["measured"].tolist() == [1.0]


def test_a_skipped_scenario_is_explained_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inertia import demo

    def skip(cfg: object, prog: object) -> dict:
        raise demo._Skip("needs torch and scikit-learn")

    monkeypatch.setattr(demo, "SCENARIOS", (_fake_scenario("network", skip),))
    path = demo.run_demo(out=tmp_path / "run", progress=False, quick=True)
    m = read_manifest(path)
    assert m["status"] == "complete" and m["skipped"] == {"network": "needs torch and scikit-learn"}
    html = (path / "report.html").read_text(encoding="utf-8")
    assert "Skipped: needs torch and scikit-learn" in html
    assert demo.render(path) == path / "report.html"
