"""The benchmark scripts of issue 4 (single path, accuracy, scaling) run end to end on a tiny size.

Performance is not a unit test (TESTING.md): nothing here looks at a timing, only at the shape of
the JSON (keys, ratios, goals with a verdict on stderr) and at a missing peer being reported as
skipped, which ``--no-peers`` simulates (it sets ``INERTIA_BENCH_HIDE`` for the script and its
workers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SKIPPED_BENCH = "skipped: not installed (pip install .[bench])"
SKIPPED_TORCH = "skipped: not installed (pip install .[torch])"
GOAL_KEYS = {"value", "goal", "met", "verdict"}


def _strict_json(text: str) -> dict:
    def reject(constant: str) -> None:
        pytest.fail(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def _run(script: str, *args: str, out: Path | None = None) -> tuple[dict, str]:
    cmd = [sys.executable, str(BENCHMARKS / script), *args]
    if out is not None:
        cmd += ["--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = _strict_json(proc.stdout)
    if out is not None:
        assert _strict_json(out.read_text()) == doc
    return doc, proc.stderr


def _check_goals(doc: dict, stderr: str, names: set[str]) -> None:
    assert set(doc["goals"]) == names
    for g in doc["goals"].values():
        assert GOAL_KEYS <= set(g)
        assert g["verdict"] in stderr


def _check_machine(doc: dict) -> None:
    assert {"python", "numpy", "cpu_count", "loadavg_before", "loadavg_after", "wall_s"} <= set(
        doc["machine"]
    )


# --------------------------------------------------------------------------------------------
# single_path.py

SINGLE_TINY = ["--n-steps", "2000", "--dims", "2", "--processes", "1", "--save-every", "100"]


@pytest.fixture(scope="module")
def single_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "single_path.json"
    variants = "simulate,simulate_user,hand,hand_user,diffrax_semi_implicit_euler"  # diffrax_euler: below
    return _run("single_path.py", *SINGLE_TINY, "--variants", variants, out=out)


def test_single_path_has_the_documented_keys(single_path: tuple[dict, str]) -> None:
    doc, stderr = single_path
    assert doc["benchmark"] == "single_path"
    cfg = doc["config"]
    assert (cfg["n_steps"], cfg["dims"], cfg["dt"], cfg["save_every"], cfg["processes"]) == (
        2000,
        [2],
        0.01,
        100,
        1,
    )
    _check_machine(doc)
    results = doc["results"]["d=2"]
    assert list(results) == ["simulate", "simulate_user", "hand", "hand_user", "diffrax_semi_implicit_euler"]
    for name in ("simulate", "simulate_user", "hand", "hand_user"):
        r = results[name]
        assert r["status"] == "ok", r
        assert {"median", "min", "max", "runs"} <= set(r["us_per_step"])
        assert len(r["us_per_step"]["runs"]) == 1
        assert {"spread", "wall_s_median", "warmup_s_median", "n_saved", "errors", "drift_ratios"} <= set(r)
        assert r["n_saved"] == 21  # steps 0, 100, ..., 2000
        assert list(r["drift_ratios"]) == ["[0,20]/[0,2]"]  # t = 20 < 1000: [0,T]/[0,T/10]
        assert r["max_abs_energy_error"] < 1e-3
    assert results["simulate"]["grad_evals_per_step"] == pytest.approx(1.0, abs=1e-3)
    r = results["diffrax_semi_implicit_euler"]
    assert r["status"] in ("ok", "skipped"), r
    if r["status"] == "ok":
        assert r["compile_s_median"] > 0 and r["drift_ratios"]
    else:
        assert r["message"] == SKIPPED_BENCH
    ratios = doc["ratios"]["d=2"]
    assert set(ratios) == {
        "simulate_over_hand",
        "user_over_hand",
        "user_over_inline_hand",
        "simulate_over_diffrax",
        "user_over_diffrax",
        "hand_over_diffrax",
    }
    assert ratios["simulate_over_hand"] > 0 and ratios["user_over_hand"] > 0
    _check_goals(
        doc, stderr, {"builtin_us_per_step", "builtin_vs_diffrax", "user_over_hand_d2", "drift_ratio_d2"}
    )
    assert doc["goals"]["builtin_us_per_step"]["goal"] == 1.5
    assert doc["goals"]["user_over_hand_d2"]["goal"] == 1.2


def test_single_path_reports_a_missing_peer_as_skipped() -> None:
    args = ["--variants", "hand,diffrax_semi_implicit_euler,diffrax_euler", "--no-peers"]
    doc, stderr = _run("single_path.py", *SINGLE_TINY, *args)
    results = doc["results"]["d=2"]
    assert results["hand"]["status"] == "ok"
    for name in ("diffrax_semi_implicit_euler", "diffrax_euler"):
        assert results[name] == {"status": "skipped", "message": SKIPPED_BENCH}
        assert SKIPPED_BENCH in stderr
    assert doc["ratios"]["d=2"]["simulate_over_hand"] is None  # simulate not selected
    assert doc["goals"]["builtin_us_per_step"]["met"] is None
    assert {"jax", "diffrax"} <= set(doc["machine"]["hidden_modules"])


def test_single_path_rejects_bad_arguments() -> None:
    for args, message in (
        (["--n-steps", "0"], "must be >= 1"),
        (["--variants", "nope"], "variants must be among"),
        (["--n-steps", "10", "--save-every", "100"], "--save-every must be <= --n-steps"),
    ):
        proc = subprocess.run(
            [sys.executable, str(BENCHMARKS / "single_path.py"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# accuracy.py

ACCURACY_TINY = ["--t-end", "10", "--grid", "0.1", "--dts", "0.1,0.05", "--rtols", "1e-3,1e-6"]
CSV_HEADER = (
    "problem,family,method,dt,rtol,atol,n_steps,n_grad_evals,max_err_short,max_err_long,drift_ratio,"
    "relative_error,blew_up,wall_s"
)


@pytest.fixture(scope="module")
def accuracy(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    tmp = tmp_path_factory.mktemp("bench")
    plot = tmp / "accuracy.png"
    doc, stderr = _run(
        "accuracy.py", *ACCURACY_TINY, "--out-dir", str(tmp), "--plot", str(plot), out=tmp / "a.json"
    )
    return doc, stderr, tmp


def test_accuracy_has_the_documented_keys(accuracy: tuple[dict, str, Path]) -> None:
    doc, stderr, tmp = accuracy
    assert doc["benchmark"] == "accuracy"
    assert doc["config"]["t_end"] == 10 and doc["config"]["windows"] == {"short": [0, 1], "long": [0, 10]}
    _check_machine(doc)
    tsit5 = doc["peers"]["diffrax/Tsit5"]["status"] == "ok"
    per_problem = 3 * 2 + 2 * 2 + (2 if tsit5 else 0)
    assert len(doc["runs"]) == 2 * per_problem
    for r in doc["runs"]:
        assert {"problem", "family", "method", "n_grad_evals", "max_err_short", "max_err_long"} <= set(r)
        assert {"drift_ratio", "relative_error", "blew_up", "wall_s"} <= set(r)
        assert r["n_grad_evals"] > 0
        if not r["blew_up"]:
            assert r["drift_ratio"] is not None and r["drift_ratio"] >= 1.0
    inertia_runs = [r for r in doc["runs"] if r["family"] == "inertia"]
    assert {r["method"] for r in inertia_runs} == {"leapfrog", "yoshida4", "symplectic_euler"}
    assert all(not r["blew_up"] for r in inertia_runs)
    expected = {f"inertia/{m}" for m in ("leapfrog", "yoshida4", "symplectic_euler")}
    expected |= {"scipy/RK45", "scipy/DOP853"} | ({"diffrax/Tsit5"} if tsit5 else set())
    assert set(doc["summary"]) == expected
    names = {
        f"{kind}_{m}" for kind in ("drift_ratio", "grad_evals_per_step") for m in ("leapfrog", "yoshida4")
    }
    names |= {"drift_ratio_symplectic_euler", "grad_evals_per_step_symplectic_euler"}
    _check_goals(doc, stderr, names)
    assert doc["goals"]["grad_evals_per_step_yoshida4"]["goal"] == 3.0
    lines = (tmp / "accuracy.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER and len(lines) == 1 + len(doc["runs"])
    assert (tmp / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_reports_a_missing_peer_as_skipped() -> None:
    doc, stderr = _run("accuracy.py", *ACCURACY_TINY, "--problems", "harmonic", "--no-peers")
    assert doc["peers"]["diffrax/Tsit5"] == {"status": "skipped", "message": SKIPPED_BENCH}
    assert SKIPPED_BENCH in stderr
    assert all(r["family"] != "diffrax" for r in doc["runs"])


def test_accuracy_rejects_bad_arguments() -> None:
    for args, message in (
        (["--dts", "0.03"], "--grid must be a whole multiple of every dt"),
        (["--rtols", "2"], "--rtols must be < 1"),
        (["--problems", "kepler"], "problems must be among"),
    ):
        proc = subprocess.run(
            [sys.executable, str(BENCHMARKS / "accuracy.py"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# scaling.py

SCALING_TINY = ["--n-paths", "10,100", "--dims", "3,30", "--size-steps", "5", "--steps", "5,10"]
SCALING_TINY += ["--steps-n-paths", "10", "--steps-d", "3", "--repeats", "1", "--probe-elements", "10000"]
SCALING_TINY += ["--max-state-mb", "0.01", "--threads", "1"]  # 2 * 100 * 30 * 8 B > 0.01 MB: skipped


def _check_scaling_backend(r: dict[str, Any]) -> None:
    assert r["status"] == "ok", r
    assert {"generator_ns_per_normal", "axpy_ns_per_element", "elements"} <= set(r["bounds"])
    assert [(c["n_paths"], c["d"]) for c in r["size_sweep"]] == [(10, 3), (100, 3), (10, 30), (100, 30)]
    assert [c["n_steps"] for c in r["steps_sweep"]] == [5, 10]
    skipped = r["size_sweep"][3]
    assert skipped["status"] == "skipped" and "--max-state-mb" in skipped["message"]
    for c in r["size_sweep"][:3] + r["steps_sweep"]:
        assert c["status"] == "ok", c
        assert {
            "wall_s",
            "element_steps_per_s",
            "ns_per_element_step",
            "us_per_step",
            "generator_share",
        } <= set(c)
    a = r["analysis"]
    assert {"overhead_us_per_step", "ns_per_element", "overhead_ends_at_elements", "per_call_ms"} <= set(a)
    assert set(a["overhead_ends_at_n_paths"]) == {"d=3", "d=30"}
    assert {"generator_share_of_slope", "bandwidth_share_of_slope", "largest"} <= set(a)
    assert a["largest"]["n_paths"] * a["largest"]["d"] == 300


def test_scaling_has_the_documented_keys(tmp_path: Path) -> None:
    backends = "numpy-float64,torch-float32"
    doc, stderr = _run("scaling.py", *SCALING_TINY, "--backends", backends, out=tmp_path / "s.json")
    assert doc["benchmark"] == "scaling"
    assert doc["config"]["save_every"] == "n_steps" and doc["config"]["repeats"] == 1
    _check_machine(doc)
    _check_scaling_backend(doc["backends"]["numpy-float64"])
    torch = doc["backends"]["torch-float32"]
    if torch["status"] == "skipped":
        assert torch["message"] == SKIPPED_TORCH
    else:
        _check_scaling_backend(torch)
        assert torch["torch_threads"] == 1
    _check_goals(doc, stderr, {"generator_share_numpy-float64", "generator_share_torch-float32"})
    assert doc["goals"]["generator_share_numpy-float64"]["goal"] == 0.8


def test_scaling_reports_a_missing_torch_as_skipped() -> None:
    doc, stderr = _run("scaling.py", *SCALING_TINY, "--backends", "torch-float32", "--no-peers")
    assert doc["backends"]["torch-float32"] == {"status": "skipped", "message": SKIPPED_TORCH}
    assert SKIPPED_TORCH in stderr
    assert doc["goals"]["generator_share_torch-float32"]["met"] is None
    assert "torch" in doc["machine"]["hidden_modules"]


def test_scaling_rejects_bad_arguments() -> None:
    for args, message in ((["--backends", "cupy"], "backends must be among"), (["--repeats", "0"], ">= 1")):
        proc = subprocess.run(
            [sys.executable, str(BENCHMARKS / "scaling.py"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
