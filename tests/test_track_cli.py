"""``inertia track`` end to end, ``inertia report`` on a track run, the training job's optimizers,
modes and NaN policies, the plots of a tracked run, and the three-line example."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inertia import plots
from inertia.cli import main
from inertia.runs import read_history, read_manifest, read_rows, read_table
from inertia.track import COLUMNS, DivergenceWarning, InertiaTracker, NonFiniteError, RunLog
from inertia.track_run import TrackConfig, run_track

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("energies", "ledger", "residual")
DATA = ("manifest.json", "rows.csv", "history.parquet", "metrics.csv")
DERIVED = ("energies.png", "ledger.png", "residual.png", "summary.csv", "ledger_totals.csv", "report.html")
LEDGER = ("friction", "numerical", "curvature", "noise", "schedule", "metric", "decay")


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _relative_residual(df: pd.DataFrame) -> np.ndarray:
    rows = df[df["delta_inertia"].notna()]
    flow = sum(rows[t].abs().fillna(0.0) for t in LEDGER)
    return (rows["residual"].abs() / flow).to_numpy()


QUICK = ["--epochs", "1", "--batch-size", "64", "--no-progress"]
N_ROWS = 22  # ceil(1347 training digits / 64)


@pytest.fixture(scope="module")
def track_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str, str]:
    out = tmp_path_factory.mktemp("track") / "run"
    rc, stdout, stderr = _run(["track", *QUICK, "--out", str(out)])
    return out, rc, stdout, stderr


TrackRun = tuple[Path, int, str, str]


# -- inertia track -----------------------------------------------------------------------------


def test_track_exits_0_and_prints_where_it_wrote(track_run: TrackRun) -> None:
    run, rc, stdout, stderr = track_run
    assert rc == 0, stderr
    assert f"run directory: {run}" in stdout and str(run / "report.html") in stdout
    assert "status complete: 22 rows" in stdout and "test accuracy" in stdout


def test_track_writes_manifest_rows_parquet_figures_and_report(track_run: TrackRun) -> None:
    run = track_run[0]
    assert sorted(p.name for p in run.iterdir()) == sorted((*DATA, *DERIVED))
    m = read_manifest(run)
    assert m["kind"] == "track" and m["status"] == "complete" and m["finished"]
    assert m["history"] == "history.parquet" and m["n_rows"] == N_ROWS and m["first_nonfinite_step"] is None
    cfg = m["config"]
    assert cfg["optimizer"] == "sgd" and cfg["lr"] == 0.05 and cfg["momentum"] == 0.9
    assert cfg["epochs"] == 1 and cfg["batch_size"] == 64 and cfg["mode"] == "cheap"
    assert cfg["data"]["n_train"] == 1347 and cfg["model"]["layers"] == [64, 64, 64, 10]
    assert {"torch", "sklearn", "pandas"} <= set(m["versions"])
    assert 0.5 < m["results"]["test_accuracy"] <= 1.0
    for name in FIGURES:
        data = (run / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_track_rows_are_the_tracker_rows(track_run: TrackRun) -> None:
    run = track_run[0]
    df = read_history(run)
    pd.testing.assert_frame_equal(df, read_rows(run), check_exact=True)
    assert list(df.columns) == list(COLUMNS) and df["step"].tolist() == list(range(N_ROWS))
    assert df["finite"].all() and df.loc[0, "kinetic"] == 0.0
    assert df["noise"].isna().all()  # cheap mode
    assert np.all(_relative_residual(df) < 1e-4)  # float32 model, float64 sums
    assert (df.loc[1:, "friction"] <= 0).all() and (df.loc[1:, "numerical"] <= 0).all()
    metrics = read_table(run, "metrics")
    assert metrics.columns.tolist() == ["epoch", "train_loss", "test_loss", "test_accuracy"]


def test_track_report_is_self_contained(track_run: TrackRun) -> None:
    html = (track_run[0] / "report.html").read_text(encoding="utf-8")
    for key in ("energies", "ledger", "residual", "training"):
        assert f'<section id="{key}">' in html, key
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="http' not in html and "<script" not in html
    assert "first non-finite step" in html and "history.parquet" in html
    summary = read_table(track_run[0], "summary").set_index("quantity")["value"]
    assert summary["status"] == "complete" and summary["first non-finite step"] == "none"
    totals = read_table(track_run[0], "ledger_totals").set_index("term")
    assert not totals.loc["noise", "measured"] and totals.loc["friction", "measured"]


def test_report_rerenders_a_track_run_from_its_rows_without_torch(
    track_run: TrackRun, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(track_run[0], copy)
    data = {name: (copy / name).read_bytes() for name in DATA}
    for name in DERIVED:
        (copy / name).unlink()
    code = (  # in a fresh interpreter, to see that reporting a track run needs no torch
        f"import sys; from inertia.cli import main; rc = main(['report', {str(copy)!r}]); "
        "sys.exit(rc or ('torch' in sys.modules and 'torch was imported'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report: {copy / 'report.html'}" in proc.stdout
    assert all((copy / name).is_file() for name in DERIVED)
    html = (copy / "report.html").read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert {name: (copy / name).read_bytes() for name in DATA} == data  # the data is only read


def test_report_of_a_run_that_never_finished(tmp_path: Path) -> None:
    """A crashed run (no Parquet, status running, a torn last line) still renders."""
    import torch

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    runlog = RunLog(tmp_path / "run", config={"lr": 0.1})
    tracker = InertiaTracker(opt, sinks=[runlog])
    for _ in range(8):
        opt.zero_grad()
        loss = 0.5 * (w * w).sum()
        loss.backward()
        opt.step()
        tracker.record(loss)
    with open(tmp_path / "run" / "rows.csv", "ab") as f:
        f.write(b"8,0.1,0.31")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    rc, _, stderr = _run(["report", str(tmp_path / "run")])
    assert rc == 0, stderr
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "Status: running; 8 rows." in html
    assert {n: (tmp_path / "run" / n).read_bytes() for n in before} == before


# -- optimizers, modes, schedules --------------------------------------------------------------


@pytest.mark.parametrize(
    ("optimizer", "mode", "scheduler", "weight_decay", "every"),
    [
        ("sgd", "exact", "step", 1e-3, 2),
        ("adam", "exact", "cosine", 0.0, 1),
        ("adamw", "cheap", "cosine", 0.01, 1),
        ("rmsprop", "exact", "none", 0.0, 1),
    ],
)
def test_every_optimizer_and_mode(
    tmp_path: Path, optimizer: str, mode: str, scheduler: str, weight_decay: float, every: int
) -> None:
    cfg = TrackConfig(
        optimizer=optimizer,
        mode=mode,
        scheduler=scheduler,
        weight_decay=weight_decay,
        every=every,
        epochs=1,
        batch_size=128,
        hidden=(16,),
    )
    result = run_track(cfg, tmp_path / "run", progress=False, report=False)
    assert result.status == "complete" and result.first_nonfinite_step is None and result.report is None
    df = read_history(result.path)
    assert len(df) == result.n_rows == math.ceil(11 / every)
    assert df["step"].tolist() == list(range(0, 11, every))
    assert np.all(_relative_residual(df) < 1e-4)
    if mode == "exact":
        assert df["noise"].iloc[1:].notna().all()
    if scheduler == "cosine":
        assert (df["schedule"].iloc[2:].abs() > 0).any()
    if optimizer == "adamw":
        assert (df["decay"].iloc[1:].abs() > 0).all()
    if optimizer in ("adam", "adamw", "rmsprop"):
        assert (df["metric"].iloc[2:].abs() > 0).any()
    assert read_manifest(result.path)["config"]["optimizer"] == optimizer


@pytest.mark.parametrize("optimizer", ["nadam", "radam", "adamax", "adagrad"])
def test_more_optimizers_from_the_command_line(tmp_path: Path, optimizer: str) -> None:
    """Issue 9: ``inertia track --optimizer`` takes NAdam, RAdam, Adamax and Adagrad (their
    default learning rates, ``--momentum`` as ``beta1``; Adagrad has none and refuses one)."""
    from inertia.track_run import DEFAULT_LR

    extra = [] if optimizer == "adagrad" else ["--momentum", "0.8"]
    argv = ["track", "--optimizer", optimizer, *extra, *QUICK, "--batch-size", "128", "--hidden", "16"]
    rc, _, stderr = _run([*argv, "--out", str(tmp_path / "run")])
    assert rc == 0, stderr
    df = read_history(tmp_path / "run")
    assert len(df) == 11 and np.all(_relative_residual(df) < 1e-4)
    cfg = read_manifest(tmp_path / "run")["config"]
    assert cfg["optimizer"] == optimizer and cfg["lr"] == DEFAULT_LR[optimizer]
    if optimizer == "adagrad":  # no momentum: at rest at every row (inertia.track.adagrad)
        assert (df["kinetic"] == 0).all() and cfg["momentum"] == 0.0
        rc, _, stderr = _run(
            ["track", "--optimizer", "adagrad", "--momentum", "0.9", "--out", str(tmp_path / "x")]
        )
        assert rc == 2 and "`momentum` does not apply to adagrad" in stderr
    else:
        assert cfg["momentum"] == 0.8 and (df["kinetic"].iloc[1:] > 0).all()


def test_cli_optimizer_choices_are_the_runners() -> None:
    from inertia.cli import _parser
    from inertia.track_run import OPTIMIZERS

    track = _parser()._subparsers._group_actions[0].choices["track"]  # type: ignore[union-attr]
    action = next(a for a in track._actions if a.dest == "optimizer")
    assert tuple(action.choices) == OPTIMIZERS


def test_training_leaves_the_global_rng_and_threads_alone(tmp_path: Path) -> None:
    import torch

    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    run_track(
        TrackConfig(epochs=1, batch_size=256, hidden=(8,)), tmp_path / "run", progress=False, report=False
    )
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


def test_same_seed_same_rows(tmp_path: Path) -> None:
    cfg = TrackConfig(epochs=1, batch_size=256, hidden=(8,), seed=3)
    a = run_track(cfg, tmp_path / "a", progress=False, report=False)
    b = run_track(cfg, tmp_path / "b", progress=False, report=False)
    pd.testing.assert_frame_equal(read_history(a.path), read_history(b.path), check_exact=True)


# -- NaN policies ------------------------------------------------------------------------------

DIVERGE = [*QUICK, "--lr", "10", "--activation", "relu"]


def test_nan_policy_raise_keeps_the_rows_and_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.warns(DivergenceWarning):  # the blow-up is flagged before it turns non-finite
        rc, stdout, stderr = _run(["track", *DIVERGE, "--nan-policy", "raise", "--out", str(out)])
    assert rc == 1 and "non-finite" in stderr and str(out) in stdout
    m = read_manifest(out)
    bad = m["first_nonfinite_step"]
    assert m["status"] == "failed" and "NonFiniteError" in m["error"] and isinstance(bad, int)
    df = read_history(out)
    assert len(df) == bad + 1 and not df["finite"].iloc[-1] and df["finite"].iloc[:-1].all()
    last = (out / "rows.csv").read_text().splitlines()[-1]
    assert last.endswith(",False") and ("inf" in last or "nan" in last)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"first at step {bad}" in html


def test_nan_policy_stop_and_flag(tmp_path: Path) -> None:
    with pytest.warns(DivergenceWarning):
        rc, stdout, _ = _run(["track", *DIVERGE, "--nan-policy", "stop", "--out", str(tmp_path / "stop")])
    assert rc == 0 and "status stopped" in stdout
    stop = read_manifest(tmp_path / "stop")
    assert stop["status"] == "stopped" and stop["n_rows"] == stop["first_nonfinite_step"] + 1
    flagged = [
        "track",
        *DIVERGE,
        "--nan-policy",
        "flag",
        "--allow-divergence",
        "--out",
        str(tmp_path / "flag"),
    ]
    with pytest.warns(DivergenceWarning):
        rc, stdout, _ = _run(flagged)
    assert rc == 0 and "status diverging" in stdout  # it blew up before its losses turned NaN
    flag = read_manifest(tmp_path / "flag")
    assert flag["n_rows"] == N_ROWS and flag["first_nonfinite_step"] == stop["first_nonfinite_step"]
    df = read_history(tmp_path / "flag")
    assert not df["finite"].iloc[-1] and not (df.loc[~df["finite"], "potential"] == 0).any()


def test_run_track_raises_after_writing(tmp_path: Path) -> None:
    cfg = TrackConfig(epochs=1, batch_size=64, lr=10.0, activation="relu")
    with pytest.raises(NonFiniteError, match="keeps every row up to it"), pytest.warns(DivergenceWarning):
        run_track(cfg, tmp_path / "run", progress=False, report=False)
    m = read_manifest(tmp_path / "run")
    assert m["status"] == "failed" and len(read_history(tmp_path / "run")) == m["first_nonfinite_step"] + 1


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        ["--optimizer", "lbfgs"],
        ["--lr", "-1"],
        ["--lr", "nan"],
        ["--epochs", "0"],
        ["--mode", "fast"],
        ["--scheduler", "linear"],
        ["--nan-policy", "ignore"],
        ["--hidden", "a,b"],
        ["--weight-decay", "-0.1"],
    ],
)
def test_bad_track_arguments_exit_2(extra: list[str], tmp_path: Path) -> None:
    rc, _, stderr = _run(["track", *extra, "--out", str(tmp_path / "run")])
    assert rc == 2 and "usage: inertia" in stderr
    assert not (tmp_path / "run").exists()


def test_bad_momentum_and_used_out_exit_2(tmp_path: Path) -> None:
    rc, _, stderr = _run(["track", "--momentum", "1.5", "--out", str(tmp_path / "run")])
    assert rc == 2 and "`momentum` must be in [0, 1)" in stderr and not (tmp_path / "run").exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    rc, _, stderr = _run(["track", *QUICK, "--out", str(used)])
    assert rc == 2 and "must be a new or empty directory" in stderr
    assert [p.name for p in used.iterdir()] == ["keep.txt"]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="`optimizer` must be one of"):
        TrackConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="`hidden` must be a non-empty tuple"):
        TrackConfig(hidden=())
    with pytest.raises(ValueError, match="`test_size` must be in"):
        TrackConfig(test_size=1.0)
    with pytest.raises(TypeError, match="TrackConfig"):
        run_track({"epochs": 1})  # type: ignore[arg-type]


# -- plots of a tracked run --------------------------------------------------------------------


def test_plots_handle_no_rows_nonfinite_rows_and_windows(track_run: TrackRun) -> None:
    df = read_history(track_run[0])
    empty = df.iloc[:0]
    panels = {plots.training_energies: 3, plots.training_ledger: 3, plots.training_residual: 2}
    for fn, n in panels.items():
        assert len(fn(empty).axes) == n
    bad = df.copy()
    bad.loc[5, ["potential", "inertia", "delta_inertia", "curvature", "residual"]] = math.nan
    bad.loc[6, ["kinetic", "inertia"]] = math.inf
    bad.loc[[5, 6], "finite"] = False
    for fn in (plots.training_energies, plots.training_residual):
        fig = fn(bad)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "non-finite row (first at step 5)" in labels
    fig = plots.training_ledger(bad, max_bars=5)
    assert "windows of 5 rows" in fig.texts[0].get_text() or "windows of 5 rows" in fig.get_suptitle()
    with pytest.raises(ValueError, match="`max_bars` must be an integer >= 1"):
        plots.training_ledger(df, max_bars=0)
    with pytest.raises(ValueError, match="missing"):
        plots.training_energies(df[["step", "kinetic"]])


# -- the example -------------------------------------------------------------------------------


def test_the_three_line_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    import torch

    out = tmp_path / "example"
    script = ROOT / "examples" / "track_digits.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--epochs", "1", "--out", str(out)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only add overhead on a shared machine
    try:
        with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()) as stdout:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    assert f"inertia report {out}" in stdout.getvalue()
    m = read_manifest(out)
    assert m["kind"] == "track" and m["status"] == "complete" and m["n_rows"] == 57  # ceil(1797 / 32)
    assert len(read_history(out)) == 57
    source = script.read_text()
    assert "# 1\n" in source and "# 2:" in source and "# 3:" in source


def test_clip_grad_norm_from_the_command_line(tmp_path: Path) -> None:
    """``inertia track --clip-grad-norm C`` clips between backward and step and books the work
    of the clipping in the ``clipping`` column (captured from step 0: no NaN row after row 0,
    which has no step before it); without it the column is exactly 0. The ledger closes either way."""
    argv = ["track", *QUICK, "--hidden", "16"]
    rc, _, stderr = _run([*argv, "--clip-grad-norm", "0.05", "--out", str(tmp_path / "clip")])
    assert rc == 0, stderr
    assert "RuntimeWarning" not in stderr
    clipped = read_history(tmp_path / "clip")
    assert read_manifest(tmp_path / "clip")["config"]["clip_grad_norm"] == 0.05
    # a gradient of the digits MLP is far above 0.05 at every step: every row after the first
    # (row k's clipping is step k-1's) carries a finite, non-zero clipping term
    work = clipped["clipping"].iloc[1:]
    assert work.notna().all() and (work.abs() > 0).all()
    assert np.all(_relative_residual(clipped) < 1e-4)
    rc, _, stderr = _run([*argv, "--out", str(tmp_path / "plain")])
    assert rc == 0, stderr
    plain = read_history(tmp_path / "plain")
    assert plain["clipping"].iloc[:1].isna().all() and (plain["clipping"].iloc[1:] == 0).all()
    assert read_manifest(tmp_path / "plain")["config"]["clip_grad_norm"] is None


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "x"])
def test_clip_grad_norm_refuses_bad_values(tmp_path: Path, value: str) -> None:
    rc, _, stderr = _run(["track", *QUICK, "--clip-grad-norm", value, "--out", str(tmp_path / "run")])
    assert rc == 2 and "--clip-grad-norm" in stderr and repr(value) in stderr
    assert not (tmp_path / "run").exists()
    for bad in (0.0, -1.0, math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match=r"`clip_grad_norm` must be a finite number > 0"):
            TrackConfig(clip_grad_norm=bad)  # type: ignore[arg-type]
