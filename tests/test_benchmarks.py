"""The benchmark scripts run end to end on a tiny size and print the documented JSON.

Performance is not a unit test (TESTING.md): nothing here looks at a timing, only at the shape of
the output, so that ``make bench`` cannot rot unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--inputs", "6", "--hidden", "5", "--classes", "3", "--batch", "4", "--batches", "2"]
TINY += ["--blocks", "3", "--steps", "10", "--warmup", "2", "--reps", "2", "--threads", "1"]
VARIANTS = ("base", "base_forward", "cheap_every1", "cheap_every10", "exact_every1")
RATIOS = ("overhead_cheap", "overhead_cheap_every10", "overhead_exact", "exact_overhead_vs_forward")


@pytest.fixture(scope="module")
def tracker_overhead(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str]:
    out = tmp_path_factory.mktemp("bench") / "tracker_overhead.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "tracker_overhead.py"), *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return _strict_json(proc.stdout), _strict_json(out.read_text()), proc.stderr


def test_tracker_overhead_depth_sets_the_number_of_parameter_tensors(tmp_path: Path) -> None:
    """``--depth K``: K hidden layers, 2 (K + 1) parameter tensors (the per-tensor cost);
    ``--fused``: the tracker's fused sums."""
    out = tmp_path / "deep.json"
    proc = _run_overhead(
        "--depth", "4", "--blocks", "1", "--fused", "--optimizer", "adamw", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    config = _strict_json(out.read_text())["config"]
    assert config["layers"] == [6, 5, 5, 5, 5, 3] and config["n_param_tensors"] == 10
    assert config["fused"] is True
    bad = _run_overhead("--depth", "0")
    assert bad.returncode == 2 and "--depth must be >= 1, got 0" in bad.stderr


def _strict_json(text: str) -> dict:
    """Parse ``text``, failing on ``NaN``/``Infinity`` (not JSON; the script writes null)."""

    def reject(constant: str) -> None:
        pytest.fail(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=reject)


def test_tracker_overhead_prints_the_json_it_writes_to_out(tracker_overhead: tuple[dict, dict, str]) -> None:
    printed, written, _ = tracker_overhead
    assert printed == written


def test_tracker_overhead_has_the_documented_keys(tracker_overhead: tuple[dict, dict, str]) -> None:
    result, _, _ = tracker_overhead
    assert result["benchmark"] == "tracker_overhead"
    assert result["config"]["layers"] == [6, 5, 5, 3]
    assert result["config"]["batch"] == 4
    assert result["machine"]["torch_threads"] == 1
    assert {"torch", "cpu_count", "loadavg_before", "loadavg_after", "wall_s"} <= set(result["machine"])
    assert set(result["ms_per_step"]) == set(VARIANTS)
    for stats in result["ms_per_step"].values():
        assert {"median", "q25", "q75", "iqr", "n"} <= set(stats)
        assert stats["n"] == 3
    for key in ("t_base_ms", "t_forward_ms", *RATIOS):
        assert key in result
    for name in ("overhead_cheap", "overhead_cheap_every10", "overhead_exact", "exact_overhead_vs_forward"):
        assert {"median", "q25", "q75"} <= set(result["paired_per_block"][name])
    for name in VARIANTS:
        assert {"optimizer_step_ms", "record_ms"} <= set(result["breakdown"][name])
    assert "reduce_ms" in result["breakdown"] and "hooks_ms" in result["breakdown"]


def test_tracker_overhead_states_a_verdict_per_goal(tracker_overhead: tuple[dict, dict, str]) -> None:
    result, _, stderr = tracker_overhead
    assert set(result["goals"]) == {"cheap_every1", "cheap_every10", "exact_every1"}
    for goal in result["goals"].values():
        assert {"value", "goal", "met", "within_noise", "verdict"} <= set(goal)
        assert goal["verdict"] in stderr
    # issue 8's CPU goals
    assert result["goals"]["cheap_every1"]["goal"] == 0.05
    assert result["goals"]["cheap_every10"]["goal"] == 0.01
    assert result["goals"]["exact_every1"]["goal"] == 1.1


def _run_overhead(*extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(BENCHMARKS / "tracker_overhead.py"), *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_tracker_overhead_transformer_adamw_and_a_baseline_tree(tmp_path: Path) -> None:
    """Issue 8's workloads: ``--model transformer --optimizer adamw`` (tiny), with the tracker
    of another source tree (here this one) interleaved as ``old_*`` variants."""
    src = Path(__file__).resolve().parents[1] / "src"
    proc = _run_overhead(
        "--model", "transformer", "--optimizer", "adamw", "--layers", "1", "--d-model", "8",
        "--heads", "2", "--ff", "16", "--seq", "4", "--baseline-src", str(src), "--flush-every", "3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = _strict_json(proc.stdout)
    config = result["config"]
    assert config["model"] == "transformer" and config["optimizer"].startswith("AdamW")
    assert (
        config["layers"] == {"layers": 1, "d_model": 8, "heads": 2, "ff": 16} and config["flush_every"] == 3
    )
    assert config["n_param_tensors"] > 10
    assert set(result["ms_per_step"]) == {
        *VARIANTS,
        "old_cheap_every1",
        "old_cheap_every10",
        "old_exact_every1",
    }
    assert {"old_overhead_cheap", "old_overhead_cheap_every10", "old_overhead_exact"} <= set(
        result["paired_per_block"]
    )
    assert "baseline tree:" in proc.stderr


def test_tracker_overhead_cuda_is_skipped_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the GPU benchmark runs for real (make bench-gpu)")
    proc = _run_overhead("--device", "cuda")
    assert proc.returncode == 0 and _strict_json(proc.stdout)["skipped"] == "CUDA is not available"


def test_tracker_overhead_rejects_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "tracker_overhead.py"), "--steps", "15"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "--steps must be a multiple of 10" in proc.stderr


def test_ensemble_b1_runs_tiny_and_prints_the_documented_keys(tmp_path: Path) -> None:
    """B1 of issue 4 on a tiny ensemble, one process per variant: the JSON has every selected
    variant with absolute figures and ratios to the hand loop; a peer is measured or skipped with
    the install hint, never a failure."""
    out = tmp_path / "ensemble_b1.json"
    only = ["numpy-float32/baoab/*", "torch-float64/euler_maruyama/*", "*/torchsde_euler_bm_dt"]
    only += ["jax-float32/euler_maruyama/diffrax_euler"]
    cmd = [sys.executable, str(BENCHMARKS / "ensemble_b1.py"), "--n-paths", "10", "--d", "3"]
    cmd += ["--steps", "5", "--processes", "1", "--warmup-steps", "2", "--threads", "1", "--out", str(out)]
    for glob in only:
        cmd += ["--only", glob]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    result = _strict_json(proc.stdout)
    assert result == _strict_json(out.read_text())
    assert result["benchmark"] == "ensemble_b1"
    config = result["config"]
    assert (config["n_paths"], config["d"], config["n_steps"], config["processes"]) == (10, 3, 5, 1)
    assert config["element_steps_per_run"] == 10 * 3 * 5
    assert {"cpu_count", "loadavg_before", "loadavg_after", "wall_s"} <= set(result["machine"])
    impls = ("simulate_save_end", "simulate_save_every", "hand", "hand_record")
    ours = [f"{p}/{i}" for p in ("numpy-float32/baoab", "torch-float64/euler_maruyama") for i in impls]
    peers = ["jax-float32/euler_maruyama/diffrax_euler", "torch-float32/euler_maruyama/torchsde_euler_bm_dt"]
    assert list(result["variants"]) == ours + peers
    for name in ours:
        r = result["variants"][name]
        assert r["status"] == "ok", r
        rate = r["element_steps_per_s"]
        assert {"median", "min", "max", "runs"} <= set(rate) and len(rate["runs"]) == 1
        assert rate["min"] <= rate["median"] <= rate["max"]
        assert {"spread", "wall_s_median", "warmup_s_median", "compile_s_median"} <= set(r)
        assert r["baseline"] == name.rsplit("/", 1)[0] + "/hand"
        assert r["ratio_to_hand"] > 0
        assert 0 < r["mean_inertia_end"] < 10  # theta0 = 1, v0 = 0, d = 3: inertia(0) < 1.5
    assert result["variants"]["numpy-float32/baoab/hand"]["ratio_to_hand"] == 1.0
    assert result["variants"]["numpy-float32/baoab/simulate_save_every"]["ratio_to_hand_record"] > 0
    for name in peers:
        r = result["variants"][name]
        if r["status"] == "skipped":
            assert r["message"] == "skipped: not installed (pip install .[bench])"
        else:
            assert r["status"] == "ok", r
            assert r["ratio_to_hand"] is None  # its hand loop is not among the selected variants
    diffrax = result["variants"]["jax-float32/euler_maruyama/diffrax_euler"]
    if diffrax["status"] == "ok":
        assert diffrax["baseline"] == "numpy-float32/euler_maruyama/hand"  # not selected: no ratio
        assert diffrax["compile_s_median"] > 0


def test_compare_trees_runs_a_benchmark_on_two_trees(tmp_path: Path) -> None:
    """``compare_trees.py`` runs one benchmark per tree and round and pairs the figures (this tree
    against itself here: the shape of the output, not a timing)."""
    root = BENCHMARKS.parent
    out = tmp_path / "compare.json"
    args = ["--old", str(root), "--rounds", "1", "--out", str(out), "--", "ensemble_b1.py"]
    args += ["--n-paths", "50", "--d", "4", "--steps", "5", "--processes", "1", "--threads", "1"]
    args += ["--only", "torch-float32/baoab/simulate_*"]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_trees.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = _strict_json(proc.stdout)
    assert doc == _strict_json(out.read_text())
    assert set(doc["figures"]) == {
        "torch-float32/baoab/simulate_save_end",
        "torch-float32/baoab/simulate_save_every",
    }
    for name, row in doc["figures"].items():
        assert len(doc["runs"][name]["old"]) == len(doc["runs"][name]["new"]) == 1
        assert row["new_over_old"] == pytest.approx(row["new"] / row["old"])


def test_compare_trees_refuses_a_tree_without_the_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_trees.py"), "--old", str(tmp_path), "ensemble_b1.py"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "must hold src/ and benchmarks/ensemble_b1.py" in proc.stderr
