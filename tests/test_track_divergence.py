"""Blow-ups that stay finite are flagged (issue 9, item 4): the rule of
:mod:`inertia.track.divergence` on hand-made inertia sequences (it fires at the row the rule
names, and not when any one of its three conditions fails), a hand-written loop at a learning
rate far past the stability bound, and ``inertia track`` exiting 1 unless told otherwise.
Zero false alarms on ordinary runs: every other test of the suite runs with the warning on, and
``test_track_cli`` checks that the default ``inertia track`` run ends ``complete``."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from inertia.cli import main  # noqa: E402
from inertia.report import track_summary  # noqa: E402
from inertia.runs import read_history, read_manifest  # noqa: E402
from inertia.track import DivergenceRule, DivergenceWarning, InertiaTracker, RunLog  # noqa: E402
from inertia.track.divergence import DivergenceMonitor  # noqa: E402


def _first(values: list[float], rule: DivergenceRule | None = None) -> int | None:
    monitor = DivergenceMonitor(rule or DivergenceRule())
    fired = [k for k, v in enumerate(values) if monitor.update(k, v, math.isfinite(v))]
    assert len(fired) <= 1  # reported once
    return fired[0] if fired else None


def test_the_rule_fires_at_the_row_it_names() -> None:
    growing = [2.0 * 4.0**k for k in range(12)]  # x4 per row: x4096 over 6 rows
    assert _first(growing) == 6
    slow = [2.0 * 3.0**k for k in range(12)]  # x3 per row: x729 over 6 rows, x2187 over 7
    assert _first(slow) is None
    assert _first(slow, DivergenceRule(window=7)) == 7


def test_each_condition_is_needed() -> None:
    broken = [2.0, 8.0, 32.0, 128.0, 100.0, 400.0, 1.6e3, 6.4e3, 2.6e4, 1e5, 4e5, 1.6e6]
    assert _first(broken) == 10  # the dip at row 4 restarts the window: rows 4..10
    below_start = [10.0, 1e-9, 4e-9, 1.6e-8, 6.4e-8, 2.6e-7, 1e-6, 4e-6, 1.6e-5]
    assert _first(below_start) is None  # geometric and unbroken, but below where the run began
    negative = [-1e6 / 4.0**k for k in range(12)]  # rising towards 0 from below
    assert _first(negative) is None
    with_nan = [2.0, 8.0, 32.0, math.nan, 128.0, 512.0, 2048.0, 8192.0, 3.3e4, 1.3e5, 5.2e5]
    assert _first(with_nan) == 10  # the non-finite row restarts the window
    noisy = [2.3 * (1 + 0.3 * math.sin(k)) * 0.999**k for k in range(10_000)]  # ordinary
    assert _first(noisy) is None


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="`window` must be an integer >= 2, got 1"):
        DivergenceRule(window=1)
    with pytest.raises(ValueError, match=r"`growth` must be a finite number > 1, got 1\.0"):
        DivergenceRule(growth=1.0)
    w = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(TypeError, match="`divergence` must be a DivergenceRule or None"):
        InertiaTracker(torch.optim.SGD([w], lr=0.1), divergence=3)  # type: ignore[arg-type]


def _loop(tmp_path: Path, lr: float, n: int, **kwargs: object) -> InertiaTracker:
    """Heavy-ball SGD on a float64 convex quadratic (curvature 1 along one axis, 0.1 along the
    other): stable for lr < 2 (1 + mu) = 3.8."""
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    scale = torch.tensor([1.0, 0.1], dtype=torch.float64)
    opt = torch.optim.SGD([w], lr=lr, momentum=0.9)
    tracker = InertiaTracker(opt, sinks=[RunLog(tmp_path / "run")], **kwargs)  # type: ignore[arg-type]
    for _ in range(n):
        opt.zero_grad()
        loss = 0.5 * (scale * w * w).sum()
        loss.backward()
        opt.step()
        tracker.record(loss)
    tracker.close()
    return tracker


def test_a_loop_far_past_the_stability_bound_is_flagged_once(tmp_path: Path) -> None:
    with pytest.warns(DivergenceWarning, match=r"the run is diverging at step (\d+)") as record:
        tracker = _loop(tmp_path, lr=20.0, n=20)
    assert len(record) == 1
    step = int(str(record[0].message).split("at step ")[1].split(":")[0])
    df = read_history(tmp_path / "run")
    assert df["finite"].all() and df["inertia"].iloc[-1] > 1e12 * df["inertia"].iloc[0]
    assert step <= 8 and (df["inertia"].diff().iloc[step - 5 : step + 1] > 0).all()
    m = read_manifest(tmp_path / "run")
    assert tracker.status == "diverging" and m["status"] == "diverging" and m["diverging_step"] == step
    summary = track_summary(df, m).set_index("quantity")["value"]
    assert summary["status"] == "diverging" and summary["diverging from step"] == str(step)


def test_a_stable_loop_and_a_switched_off_rule_stay_silent(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        stable = _loop(tmp_path / "a", lr=3.0, n=200)  # just inside the bound
        off = _loop(tmp_path / "b", lr=20.0, n=20, divergence=None)
    assert stable.status == "complete" and off.status == "complete"
    assert read_manifest(tmp_path / "a" / "run")["diverging_step"] is None


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_inertia_track_exits_1_on_a_diverging_run_unless_allowed(tmp_path: Path) -> None:
    args = ["track", "--lr", "3", "--activation", "relu", "--epochs", "1", "--no-progress"]
    rc, stdout, stderr = _cli([*args, "--out", str(tmp_path / "a")])
    m = read_manifest(tmp_path / "a")
    assert rc == 1 and m["status"] == "diverging" and "status diverging" in stdout
    assert (
        f"the run is diverging from step {m['diverging_step']}" in stderr and "--allow-divergence" in stderr
    )
    html = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert f"Diverging from step {m['diverging_step']}" in html
    rc, stdout, _ = _cli([*args, "--allow-divergence", "--out", str(tmp_path / "b")])
    assert rc == 0 and read_manifest(tmp_path / "b")["status"] == "diverging"
