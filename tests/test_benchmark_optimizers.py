"""``benchmarks/optimizers.py`` runs end to end on one tiny problem and writes what it documents.

Performance is not a unit test: nothing here looks at which optimizer wins, only at the shape of
the output and at the verdict rule (a paired t-test over seeds), which is checked on numbers
whose answer is known.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import optimizers  # noqa: E402


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "optimizers.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "optimizers.py"),
            "--quick",
            "--problems",
            "quad_1e2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert printed == json.loads(out.read_text())
    return printed, out


def test_quick_run_has_every_optimizer_tuned_on_the_same_grid(quick: tuple[dict, Path]) -> None:
    doc, _ = quick
    assert doc["benchmark"] == "optimizers" and list(doc["problems"]) == ["quad_1e2"]
    assert {"loadavg_before", "loadavg_after", "wall_s", "torch"} <= set(doc["machine"])
    results = doc["problems"]["quad_1e2"]["optimizers"]
    assert list(results) == list(optimizers.OPTIMIZERS)
    n_trials = {len(r["trials"]) for r in results.values()}
    assert n_trials == {2}  # the same number of trials for everyone
    for name, r in results.items():
        best = min(r["trials"], key=lambda t: math.inf if t["score"] is None else t["score"])
        assert (r["lr"], r["momentum"]) == (best["lr"], best["momentum"]), name
        assert len(r["runs"]) == len(doc["config"]["eval_seeds"]) == 2
        assert r["final_loss_mean"] >= 0 and r["steps_to_target_mean"] <= 100
        assert ("restarts_mean" in r) == name.endswith("+restart")


def test_quick_run_writes_the_documented_tables(quick: tuple[dict, Path]) -> None:
    doc, out = quick
    with out.with_suffix(".csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == optimizers.CSV_COLUMNS and len(rows) == 1 + len(optimizers.OPTIMIZERS)
    with out.with_name("optimizers_verdicts.csv").open() as f:
        verdicts = list(csv.DictReader(f))
    assert tuple(verdicts[0]) == optimizers.VERDICT_COLUMNS
    assert {v["verdict"] for v in verdicts} <= {"win", "tie", "loss"}
    assert {(v["optimizer"], v["base"]) for v in verdicts} == {
        (f"{f}+restart", f) for f in optimizers.FAMILIES
    }
    assert sum(doc["totals"]["final_loss"].values()) == len(optimizers.FAMILIES)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verdict_is_a_paired_t_test() -> None:
    base = [1.0, 2.0, 3.0, 4.0, 5.0]
    # the same seed-to-seed spread, shifted: a clear paired difference (se 0.01)
    better = [b - 0.1 + 0.01 * s for b, s in zip(base, (1, -1, 1, -1, 0), strict=True)]
    assert optimizers.verdict(base, better, higher_is_better=False)["verdict"] == "win"
    assert optimizers.verdict(better, base, higher_is_better=False)["verdict"] == "loss"
    assert optimizers.verdict(base, better, higher_is_better=True)["verdict"] == "loss"
    # a difference within the noise of the pairs is a tie
    noisy = [b + d for b, d in zip(base, (0.3, -0.2, 0.25, -0.3, 0.05), strict=True)]
    v = optimizers.verdict(base, noisy, higher_is_better=False)
    assert v["verdict"] == "tie" and abs(v["diff_mean"]) < optimizers.T_CRIT * v["diff_se"]
    # an unpaired comparison would call this a tie (spread 1.6 between seeds): pairing matters
    assert optimizers.verdict(base, [b - 0.05 for b in base], higher_is_better=False)["verdict"] == "win"
    assert optimizers.verdict(base, [math.inf] * 5, higher_is_better=False)["verdict"] == "loss"


def test_bad_problem_name_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "optimizers.py"), "--problems", "quad_7"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "quad_1e2" in proc.stderr
