"""The figures of a tracked training run stay readable from ten rows to a hundred thousand.

What is checked is what a reader relies on: the cumulative lines end at the sums of the rows;
the windows conserve what they sum (the bars of all windows add up to the run's total); a
non-finite row is a marker and books nothing, however large its finite terms are; the scales
turn logarithmic exactly when the values span decades; epochs and the lr/gamma panel are drawn
where the rows know them. Synthetic histories with known sums, no training.
"""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from inertia import plots
from inertia.report import _steps_per_epoch, ledger_totals, track_summary

ROOT = Path(__file__).resolve().parents[1]
TERMS = ("friction", "numerical", "curvature", "noise", "schedule", "metric", "decay")


def history(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows shaped like the tracker's: row 0 without a ledger, terms that close."""
    rng = np.random.default_rng(seed)
    step = np.arange(n)
    friction = -np.abs(rng.standard_normal(n)) / (1 + step)
    numerical = -0.1 * np.abs(rng.standard_normal(n)) / (1 + step)
    curvature = rng.standard_normal(n) / (1 + step)
    residual = 1e-16 * rng.standard_normal(n)
    delta = friction + numerical + curvature + residual
    df = pd.DataFrame(
        {
            "step": step,
            "lr": np.geomspace(0.1, 1e-4, n),
            "dt": np.sqrt(np.geomspace(0.1, 1e-4, n)),
            "gamma": np.full(n, 0.3),
            "kinetic": np.abs(rng.standard_normal(n)) * 1e-3,
            "potential": 0.0,  # set below, with the inertia
            "delta_inertia": delta,
            "friction": friction,
            "numerical": numerical,
            "curvature": curvature,
            "noise": np.nan,
            "schedule": 0.0,
            "metric": 0.0,
            "decay": 0.0,
            "residual": residual,
            "finite": True,
        }
    )
    df.loc[0, ["lr", "dt", "gamma", "delta_inertia", *TERMS, "residual"]] = math.nan
    df["inertia"] = 2.0 + np.cumsum(np.nan_to_num(df["delta_inertia"].to_numpy()))  # closes
    df["potential"] = df["inertia"] - df["kinetic"]
    return df


def line(fig: Figure, panel: int, label: str) -> np.ndarray:
    """The y data of the line labelled ``label`` on panel ``panel``."""
    (found,) = [ln for ln in fig.axes[panel].get_lines() if ln.get_label() == label]
    return np.asarray(found.get_ydata(), dtype=float)


def bars(fig: Figure, panel: int, color: str) -> np.ndarray:
    """Signed heights of the bars of one colour on panel ``panel``."""
    from matplotlib.colors import to_rgba

    want = to_rgba(color)
    return np.array([p.get_height() for p in fig.axes[panel].patches if p.get_facecolor() == want])


def test_cumulative_lines_end_at_the_sums_and_the_measured_change() -> None:
    df = history(50)
    fig = plots.training_ledger(df)
    for term in ("friction", "numerical", "curvature"):
        np.testing.assert_allclose(line(fig, 0, term)[-1], df[term].sum(), rtol=1e-12)
    measured = line(fig, 0, "measured I_k - I_first")
    np.testing.assert_allclose(measured, df["inertia"] - df["inertia"].iloc[0], rtol=1e-12)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "not measured: noise" in labels and "0 in every row: schedule, metric, decay" in labels


@pytest.mark.parametrize("n", [12, 1_000, 100_000])
def test_windows_conserve_each_term_and_are_at_most_max_bars(n: int) -> None:
    df = history(n)
    fig = plots.training_ledger(df, max_bars=150)
    friction = bars(fig, 1, plots.LEDGER_COLORS["friction"])  # a positive and a negative set
    size = math.ceil((n - 1) / 150)
    assert len(friction) == 2 * math.ceil((n - 1) / size) <= 2 * 150
    np.testing.assert_allclose(friction.sum(), df["friction"].sum(), rtol=1e-10)
    curvature = bars(fig, 1, plots.LEDGER_COLORS["curvature"])
    np.testing.assert_allclose(curvature.sum(), df["curvature"].sum(), rtol=1e-9, atol=1e-12)
    title = fig.get_suptitle()
    assert ("each step" in title) == (n - 1 <= 150)


def test_window_bars_cover_the_steps_they_sum() -> None:
    """Row k books step k-1 -> k: the windows tile (first step - 1, last step] without gaps."""
    df = history(1_001)
    fig = plots.training_ledger(df, max_bars=100)
    patches = [p for p in fig.axes[1].patches if p.get_height() < 0]
    left = sorted({p.get_x() for p in patches})
    right = sorted({p.get_x() + p.get_width() for p in patches})
    assert left[0] == 0.0 and right[-1] == 1000.0 and left[1:] == right[:-1] and len(left) == 100


def test_a_nonfinite_row_is_a_marker_and_books_nothing() -> None:
    df = history(40)
    df.loc[20, ["potential", "inertia", "delta_inertia", "curvature", "residual"]] = math.nan
    df.loc[20, "numerical"] = -4.8e39  # finite, but in a non-finite row
    df.loc[20, "finite"] = False
    fig = plots.training_ledger(df)
    numerical = bars(fig, 1, plots.LEDGER_COLORS["numerical"])
    assert np.abs(numerical).max() < 1.0
    finite = df[df["finite"]]
    np.testing.assert_allclose(line(fig, 0, "numerical")[-1], finite["numerical"].sum(), rtol=1e-12)
    label = "non-finite row (first at step 20)"
    for fn in (plots.training_energies, plots.training_ledger, plots.training_residual):
        fig = fn(df)
        assert label in [t.get_text() for t in fig.legends[0].get_texts()], fn.__name__
        markers = line(fig, 0, label)
        assert len(markers) == 1  # one triangle, at the top edge (axes coordinates)
    energies = plots.training_energies(df)
    assert np.isnan(line(energies, 0, "inertia")[20])  # the value is not drawn


def test_scales_turn_logarithmic_when_values_span_decades() -> None:
    fig = Figure()
    axes = fig.subplots(4)
    assert plots._scale(axes[0], np.array([1.0, 2.0, 3.0])) == "linear"
    assert plots._scale(axes[1], np.array([0.0, 1.0, 1e25])) == "log"
    assert plots._scale(axes[2], np.array([-1e25, -1.0, 0.5, 1.0, 2.0, 1e24])) == "symlog"
    assert plots._scale(axes[3], np.array([-1.0, 0.5, 1.0, -2.0, np.nan, np.inf])) == "linear"
    assert [ax.get_yscale() for ax in axes] == ["linear", "log", "symlog", "linear"]
    diverging = history(60)
    diverging["kinetic"] = np.geomspace(1e-3, 1e25, 60)
    diverging["potential"] = 2.0
    diverging["inertia"] = diverging["kinetic"] + diverging["potential"]
    assert plots.training_energies(diverging).axes[0].get_yscale() == "log"
    assert plots.training_energies(history(60)).axes[0].get_yscale() == "linear"


def test_lr_and_gamma_panel_and_epoch_marks() -> None:
    df = history(500)
    fig = plots.training_energies(df, steps_per_epoch=50)
    np.testing.assert_array_equal(line(fig, 2, "lr")[1:], df["lr"].to_numpy()[1:])
    twin = fig.axes[3]  # gamma on the twin axis at the right
    np.testing.assert_array_equal(twin.get_lines()[0].get_ydata()[1:], df["gamma"].to_numpy()[1:])
    assert fig.axes[2].get_yscale() == "log"  # lr spans three decades
    bounds = [[s, s] for s in range(50, 500, 50)]
    marks = [ln for ln in fig.axes[0].get_lines() if list(ln.get_xdata()) in bounds]
    assert len(marks) == 9
    many = plots.training_ledger(history(5_000), steps_per_epoch=10)  # 499 epochs: every 13th
    labels = [t.get_text() for t in many.legends[0].get_texts()]
    assert "epoch boundaries (every 13 epochs)" in labels
    with pytest.raises(ValueError, match="`steps_per_epoch` must be None or an integer >= 1, got 0"):
        plots.training_energies(df, steps_per_epoch=0)
    assert _steps_per_epoch({"config": {"steps_per_epoch": 22}}) == 22
    assert _steps_per_epoch({"config": {}}) is None and _steps_per_epoch({}) is None


def test_long_runs_draw_window_means() -> None:
    df = history(20_000)
    fig = plots.training_energies(df, max_points=400, title="Energies")
    assert "means over windows of 50 rows" in fig.get_suptitle()
    mean = line(fig, 0, "potential")
    assert len(mean) == 400
    np.testing.assert_allclose(mean[0], df["potential"].iloc[:50].mean(), rtol=1e-12)
    resid = plots.training_residual(df, max_points=400)
    top = resid.axes[0].get_lines()[0].get_ydata()
    assert len(top) == 400 and "max per 50 rows" in resid.axes[0].get_ylabel()
    np.testing.assert_allclose(top[0], df["residual"].iloc[1:51].abs().max(), rtol=1e-12)
    with pytest.raises(ValueError, match="`max_points` must be an integer >= 1"):
        plots.training_residual(df, max_points=0)


def test_the_report_rendering_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = ROOT / "examples" / "track_reports.py"
    out = tmp_path / "reports"
    monkeypatch.setattr(sys, "argv", [str(script), "--out", str(out), "--only", "short"])
    runpy.run_path(str(script), run_name="__main__")
    html = (out / "short" / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 3


# -- honest totals when the rows sample the run (every > 1) -------------------------------------


def test_totals_of_sampled_rows_are_labelled_with_the_measured_change_beside_them() -> None:
    full = history(81)
    sampled = full[full["step"] % 10 == 0].reset_index(drop=True)  # every = 10: single steps
    totals = ledger_totals(sampled).set_index("term")
    assert totals.loc["friction", "steps_summed"] == 8 and totals.loc["friction", "steps"] == 80
    assert totals.loc["friction", "sampled"] and not totals.loc["inertia_change", "sampled"]
    change = sampled["inertia"].iloc[-1] - sampled["inertia"].iloc[0]
    np.testing.assert_allclose(totals.loc["inertia_change", "total"], change, rtol=1e-12)
    summary = track_summary(sampled).set_index("quantity")["value"]
    assert summary["steps summed"] == "8 of 80: the sums are over these steps only, a sample of the run"
    # every step recorded: the sum of the changes is the measured change, nothing is sampled
    totals = ledger_totals(full).set_index("term")
    assert not totals["sampled"].any() and totals.loc["delta_inertia", "steps_summed"] == 80
    np.testing.assert_allclose(
        totals.loc["delta_inertia", "total"], totals.loc["inertia_change", "total"], rtol=1e-10
    )
    assert track_summary(full).set_index("quantity")["value"]["steps summed"] == "80 of 80"


def test_a_sampled_row_is_a_bar_one_step_wide() -> None:
    full = history(81)
    sampled = full[full["step"] % 10 == 0].reset_index(drop=True)
    fig = plots.training_ledger(sampled)
    widths = {p.get_width() for p in fig.axes[1].patches}
    assert widths == {1.0} and "the rows book 8 of the run's 80 steps" in fig.get_suptitle()
