"""``InertiaTracker(..., sharpness_every=n)`` (issue 12, items 3 and 4).

References computed apart from the tracker: the Hessian of a quadratic is its matrix; the
update's quadratic form, the update curvature and the preconditioner are recomputed from the
parameters before and after the step and the optimizer state read by hand; the MLP's Hessian is
``torch.autograd.functional.hessian``. Power controls: a run below its threshold is not flagged,
and the ratio without the preconditioner is a different number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia import curvature  # noqa: E402
from inertia.track import COLUMNS, SHARPNESS_COLUMNS, InertiaTracker, RunLog, StabilityWarning  # noqa: E402

F64 = torch.float64
A = torch.tensor([10.0, 3.0, 1.0], dtype=F64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _step(opt: torch.optim.Optimizer, tracker: InertiaTracker, f: object) -> None:
    """One full-batch step and its record (with the closure ``f``)."""
    opt.zero_grad()
    loss = f()  # type: ignore[operator]
    loss.backward()
    opt.step()
    tracker.record(loss, f)  # type: ignore[arg-type]


def _quadratic_run(
    make: object, n_steps: int, every: int = 1, sharpness_every: int = 3, **kw: object
) -> tuple:
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5], dtype=F64))
    opt = make([w])  # type: ignore[operator]
    tracker = InertiaTracker(opt, every=every, sharpness_every=sharpness_every, **kw)  # type: ignore[arg-type]

    def f() -> torch.Tensor:
        return 0.5 * (A * w * w).sum()

    thetas = [w.detach().clone()]
    states = []
    for _ in range(n_steps):
        opt.zero_grad()
        loss = f()
        loss.backward()
        opt.step()
        thetas.append(w.detach().clone())
        states.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[w].items()})
        tracker.record(loss, f)
    tracker.close()
    return tracker.history, thetas, states


def test_heavy_ball_quadratic_columns_exact() -> None:
    hist, thetas, _ = _quadratic_run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5), 10)
    assert list(hist.columns) == list(COLUMNS) + list(SHARPNESS_COLUMNS)
    due = hist["step"] % 3 == 0
    due[0] = False
    sharp = hist[due]
    assert list(sharp["step"]) == [3, 6, 9]
    np.testing.assert_allclose(sharp["sharpness"], 10.0, rtol=1e-5)
    np.testing.assert_allclose(hist["threshold"], 2 * 1.5 / 0.1, rtol=1e-14)
    np.testing.assert_allclose(sharp["sharpness_ratio"], sharp["sharpness"] / 30.0, rtol=1e-14)
    assert (sharp["n_hvp"] >= 2).all() and (hist.loc[~due, "n_hvp"] == 0).all()
    assert hist.loc[~due, ["sharpness", "sharpness_ratio", "curvature_quadratic"]].isna().all().all()
    # on a quadratic the ledger's curvature work is exactly 1/2 dtheta^T A dtheta
    np.testing.assert_allclose(sharp["curvature_quadratic"], sharp["curvature"], rtol=1e-10)
    for k in range(1, len(hist)):  # update curvature by hand: dtheta^T A dtheta / ||dtheta||^2
        d = thetas[k] - thetas[k - 1]
        expect = float(d @ (A * d) / (d @ d))
        assert hist["update_curvature"].iloc[k] == pytest.approx(expect, rel=1e-9)
    assert math.isnan(hist["update_curvature"].iloc[0])
    # power control: the update curvature is not the sharpness (it is a Rayleigh quotient below it)
    assert (hist["update_curvature"].iloc[1:] < 10.0 - 1e-3).all()


def test_adam_preconditioned_sharpness_and_update_curvature() -> None:
    hist, thetas, states = _quadratic_run(lambda ps: torch.optim.Adam(ps, lr=0.05), 9, sharpness_every=4)
    b1, b2, eps = 0.9, 0.999, 1e-8

    def p_of(st: dict) -> torch.Tensor:  # P = (1 - b1^t) (sqrt(s / (1 - b2^t)) + eps), by hand
        t = float(st["step"])
        return (1 - b1**t) * (torch.sqrt(st["exp_avg_sq"] / (1 - b2**t)) + eps)

    for row in (4, 8):
        p = p_of(states[row - 1])  # the state after step row - 1 -> theta_row
        expect = float((A / p).max())  # P^{-1/2} A P^{-1/2} is diagonal here
        assert hist["sharpness"].iloc[row] == pytest.approx(expect, rel=1e-6)
        assert hist["sharpness"].iloc[row] != pytest.approx(10.0, rel=1e-2)  # power control
    np.testing.assert_allclose(hist["threshold"], (2 + 2 * b1) / ((1 - b1) * 0.05), rtol=1e-14)
    for k in range(1, 9):
        d = thetas[k] - thetas[k - 1]
        p = p_of(states[k - 1])
        expect = float(d @ (A * d) / (d @ (p * d)))
        assert hist["update_curvature"].iloc[k] == pytest.approx(expect, rel=1e-6)


def test_rmsprop_groups_and_weight_decay_mlp_against_dense() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    x = torch.randn(32, 4, dtype=F64)
    y = torch.randn(32, 2, dtype=F64)
    params = list(net.parameters())
    net[0].bias.requires_grad_(False)
    opt = torch.optim.SGD(
        [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.01}], lr=0.05, momentum=0.9
    )
    tracker = InertiaTracker(opt, sharpness_every=2, mode="exact")

    def f() -> torch.Tensor:
        return torch.nn.functional.mse_loss(net(x), y)

    def step() -> None:
        _step(opt, tracker, f)

    step()
    step()  # theta_2: row 2's sharpness is measured here (at the record of step 1)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    base = dict(net.named_parameters())
    sizes = [base[n].numel() for n in names]

    def flat_loss(flat: torch.Tensor) -> torch.Tensor:
        d = {k: v.detach() for k, v in base.items()}
        for n, c in zip(names, flat.split(sizes), strict=True):
            d[n] = c.view(base[n].shape)
        return torch.nn.functional.mse_loss(torch.func.functional_call(net, d, (x,)), y)

    flat0 = torch.cat([base[n].detach().reshape(-1) for n in names])
    h = torch.autograd.functional.hessian(flat_loss, flat0).numpy()
    wd = np.r_[np.zeros(base["0.weight"].numel()), np.full(sum(sizes) - base["0.weight"].numel(), 0.01)]
    exact = np.linalg.eigvalsh(h + np.diag(wd)).max()
    step()
    row = tracker.rows[2]
    assert row["sharpness"] == pytest.approx(exact, rel=1e-6)
    assert row["threshold"] == pytest.approx(2 * 1.9 / 0.05)
    # exact mode on a full batch: B_k and 1/2 dtheta^T H dtheta agree to third order
    # (here ~1 %: the third-order term of a step of lr 0.05 with momentum)
    assert row["curvature_quadratic"] == pytest.approx(row["curvature"], rel=5e-2)


def test_unstable_heavy_ball_is_flagged_before_it_blows_up() -> None:
    mu, eta = 0.9, 0.39  # eta * 10 = 3.9 > 2 (1 + mu) = 3.8: unstable along the top mode
    with pytest.warns(StabilityWarning, match="stability threshold"):
        hist, _, _ = _quadratic_run(
            lambda ps: torch.optim.SGD(ps, lr=eta, momentum=mu), 60, sharpness_every=5
        )
    first = hist.index[hist["sharpness_ratio"] >= 0.9][0]
    blown = hist.index[hist["potential"] > 1e3 * hist["potential"].iloc[0]][0]
    assert first < blown
    assert hist["sharpness_ratio"].dropna().iloc[0] == pytest.approx(10 * eta / 3.8, rel=1e-6)
    # from there the ledger's curvature work dominates: larger than friction + numerical together
    late = hist.iloc[40:]
    assert (late["curvature"].abs() > (late["friction"].abs() + late["numerical"].abs())).all()
    # power control: just below the threshold there is no warning and no blow-up
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)
        calm, _, _ = _quadratic_run(
            lambda ps: torch.optim.SGD(ps, lr=0.3, momentum=mu), 60, sharpness_every=5
        )
    assert calm["potential"].iloc[-1] < calm["potential"].iloc[0]
    assert (calm["sharpness_ratio"].dropna() < 0.9).all()


def test_exact_threshold_crossing_matches_eta_lambda() -> None:
    """The run is unstable iff eta lambda_max > 2 (1 + mu) (THEORY.md section 7)."""
    mu = 0.5
    for eta, unstable in ((0.299, False), (0.301, True)):  # 2 (1 + mu) / 10 = 0.3
        hist, _, _ = _quadratic_run(
            lambda ps, eta=eta: torch.optim.SGD(ps, lr=eta, momentum=mu),
            1500,
            sharpness_every=500,
            warn_ratio=2.0,
        )
        grew = hist["inertia"].iloc[-1] > hist["inertia"].iloc[1]
        assert grew == unstable
        ratio = hist["sharpness_ratio"].dropna().iloc[0]
        assert (ratio > 1.0) == unstable


def test_non_interference() -> None:
    def run(sharp: bool) -> tuple:
        torch.manual_seed(3)
        net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1)
        ).double()
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        tracker = InertiaTracker(opt, sharpness_every=2 if sharp else None)
        x, y = torch.randn(16, 4, dtype=F64), torch.randn(16, 1, dtype=F64)
        for _ in range(6):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            tracker.record(loss, lambda: torch.nn.functional.mse_loss(net(x), y))
        return [p.detach().clone() for p in net.parameters()], opt.state_dict(), torch.get_rng_state()

    p1, s1, r1 = run(False)
    p2, s2, r2 = run(True)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2, strict=True))
    assert torch.equal(r1, r2)
    for k, st in s1["state"].items():
        for name, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][k][name]))


def test_bad_input(tmp_path: object) -> None:
    w = torch.nn.Parameter(torch.ones(2, dtype=F64))
    opt = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(
        ValueError, match="`sharpness_every` must be a positive multiple of `every` \\(2\\), got 3"
    ):
        InertiaTracker(opt, every=2, sharpness_every=3)
    with pytest.raises(ValueError, match="`warn_ratio` must be a finite number > 0"):
        InertiaTracker(opt, sharpness_every=2, warn_ratio=0.0)
    log = RunLog(tmp_path / "run")  # type: ignore[operator]
    with pytest.raises(ValueError, match="lack the sharpness columns"):
        InertiaTracker(opt, sharpness_every=2, sinks=[log])
    log.close()
    tracker = InertiaTracker(opt, sharpness_every=1)
    (w * w).sum().backward()
    opt.step()
    with pytest.raises(ValueError, match="`closure` is required at step 0"):
        tracker.record(1.0)
    tracker.close()


def test_runlog_with_sharpness_columns(tmp_path: object) -> None:
    from inertia.track import read_history

    log = RunLog(tmp_path / "run", columns=COLUMNS + SHARPNESS_COLUMNS)  # type: ignore[operator]
    hist, _, _ = _quadratic_run(lambda ps: torch.optim.SGD(ps, lr=0.1), 6, sinks=[log])
    log.close()
    back = read_history(tmp_path / "run")  # type: ignore[operator]
    np.testing.assert_allclose(back["sharpness"].to_numpy(), hist["sharpness"].to_numpy(), equal_nan=True)


def test_preconditioned_matches_curvature_module() -> None:
    """The tracker's sharpness is ``curvature.top_eigenvalues(..., preconditioner=opt)``."""
    torch.manual_seed(1)
    net = torch.nn.Linear(5, 2).double()
    x, y = torch.randn(20, 5, dtype=F64), torch.randn(20, 2, dtype=F64)
    opt = torch.optim.RMSprop(net.parameters(), lr=0.01, momentum=0.3)
    tracker = InertiaTracker(opt, sharpness_every=3)

    def f() -> torch.Tensor:
        return torch.nn.functional.mse_loss(net(x), y)

    def step() -> None:
        _step(opt, tracker, f)

    for _ in range(3):
        step()
    ref = curvature.top_eigenvalues(f, list(net.parameters()), k=1, preconditioner=opt, tol=1e-12)
    plain = curvature.top_eigenvalues(f, list(net.parameters()), k=1, tol=1e-12)
    step()
    assert tracker.rows[3]["sharpness"] == pytest.approx(float(ref[0]), rel=1e-6)
    assert abs(plain[0] - ref[0]) > 1e-2 * abs(ref[0])  # power control


def test_cli_track_sharpness_every(tmp_path: object) -> None:
    """``inertia track --sharpness-every N`` writes the columns, the figure and the section."""
    import contextlib
    import io

    from inertia.cli import main
    from inertia.runs import read_history
    from inertia.track_run import TrackConfig

    out = tmp_path / "run"  # type: ignore[operator]
    argv = ["track", "--epochs", "1", "--batch-size", "256", "--sharpness-every", "2", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([*argv, "--no-progress"]) == 0
    hist = read_history(out)
    assert set(SHARPNESS_COLUMNS) <= set(hist.columns)
    sharp = hist.dropna(subset=["sharpness"])
    assert list(sharp["step"]) == [s for s in hist["step"] if s and s % 2 == 0]
    assert (sharp["n_hvp"] > 0).all() and np.allclose(hist["threshold"], 2 * 1.9 / 0.05)
    assert (out / "sharpness.png").is_file() and 'id="sharpness"' in (out / "report.html").read_text()
    with pytest.raises(ValueError, match="`sharpness_every` must be a multiple of `every` \\(2\\), got 3"):
        TrackConfig(every=2, sharpness_every=3)


def test_threshold_follows_the_rows_learning_rate_under_a_schedule() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.5], dtype=F64))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    tracker = InertiaTracker(opt, sharpness_every=3, flush_every=4)

    def f() -> torch.Tensor:
        return 0.5 * (A * w * w).sum()

    for _ in range(9):
        _step(opt, tracker, f)
        sched.step()
    tracker.close()
    hist = tracker.history
    # row k books step k - 1, whose learning rate is the row's lr: the threshold is 2 / lr
    np.testing.assert_allclose(hist["threshold"].iloc[1:], 2.0 / hist["lr"].iloc[1:], rtol=1e-14)
    assert hist["lr"].nunique() > 2  # power control: the schedule did change the learning rate
    np.testing.assert_allclose(hist["sharpness"].dropna(), 10.0, rtol=1e-6)
