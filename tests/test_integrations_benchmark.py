"""``benchmarks/integration_overhead.py`` runs end to end on a tiny size and prints the documented
JSON (only its shape is checked: performance is not a unit test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "integration_overhead.py"


def test_integration_overhead_prints_the_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "integration_overhead.json"
    tiny = ["--steps", "6", "--warmup", "1", "--blocks", "1", "--batch", "8", "--hidden", "8"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *tiny, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["benchmark"] == "integration_overhead"
    assert set(doc["pairs"]) == {"loop", "lightning", "transformers"}
    assert set(doc["variants_ms_per_step"]) >= {"loop", "loop_tracked"}
    for base, pair in doc["pairs"].items():
        if pair is None:  # the framework is not installed
            continue
        assert {"ratio", "overhead_ms"} <= set(pair)
        assert ("beyond_tracker_ms" in pair) == (base != "loop")
        assert set(pair["ratio"]) == {"median", "q1", "q3"}
    assert "loadavg" in doc["machine"]
    assert "beyond the tracker's own cost" in proc.stderr or doc["pairs"]["lightning"] is None
