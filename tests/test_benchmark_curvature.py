"""``benchmarks/curvature.py`` runs on a tiny size and prints the documented JSON (keys only:
performance is not a unit test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "curvature.py"
TINY = ["--inputs", "6", "--hidden", "5", "--classes", "3", "--batch", "8", "--blocks", "2", "--reps", "2"]
TINY += ["--steps", "4", "--tracker-blocks", "1", "--sharpness-every", "2", "--threads", "1", "--tol", "1e-2"]


@pytest.mark.timeout(300)
def test_curvature_benchmark_keys(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--out", str(out)], capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc == json.loads(out.read_text())
    assert doc["benchmark"] == "curvature"
    ratios = doc["hvp"]["ratios"]
    assert set(ratios) == {
        "hvp_double_backward_over_grad",
        "hvp_double_backward_fresh_over_grad",
        "hvp_forward_over_reverse_over_grad",
    }
    assert doc["hvp"]["faster_mode"] in ("double_backward", "forward_over_reverse")
    eig = doc["eigenvalues"]
    assert eig["inertia_lanczos_k1"]["n_hvp"] >= 1 and len(eig["inertia_lanczos_k3"]["eigenvalues"]) == 3
    assert "pyhessian_power_k1" in eig or eig["pyhessian"].startswith("skipped")
    tr = doc["tracker"]
    assert {"overhead_sharpness_vs_tracker", "overhead_sharpness_vs_bare", "n_hvp_per_sharpness_step"} <= set(
        tr
    )
    assert set(doc["goals"]) == {"hvp_over_grad", "default_is_faster"}
    assert "HVP / gradient" in proc.stderr


def test_curvature_benchmark_cuda_skips_without_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the skip path is not taken")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["skipped"].startswith("no CUDA device")
