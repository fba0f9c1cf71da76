"""Hand-computed ledger values for every supported optimizer and option (TESTING.md item 9).

On the two-parameter quadratic ``q(theta) = 1/2 theta^T A theta + c^T theta`` each test replays
the optimizer by hand, in NumPy float64, from PyTorch's documented update rules (``torch.optim``
docs: SGD, Adam, AdamW, RMSprop), checks that the hand replay moves ``theta`` exactly as PyTorch
does, and then derives every value of every row from the replay alone:

* the velocity from the *displacement*: ``v_{j+1} = (theta_{j+1} - theta_j) / dt_j`` (heavy ball,
  RMSprop; THEORY.md section 6), ``p_{j+1} = M_j (theta_{j+1} - theta_j) / dt_j`` (Adam's step
  in its metric), so ``K`` never comes from the buffer norm the tracker uses (Nesterov, whose
  iterate does not move along its velocity, is the one exception);
* the curvature from the closed form of the Bregman remainder of a quadratic,
  ``1/2 dtheta^T (A + wd) dtheta``, not from loss differences;
* the ledger terms from the formulas of the mapping docstrings, evaluated on the replay's own
  vectors (previous buffers kept, not recovered by inverting the step).

Each hand row is first checked to close on its own (the derivation is right), then compared
with the tracker's row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from track_helpers import F64, QuadraticProblem, train, worst_residual

torch = pytest.importorskip("torch")

from inertia.track import MAPPINGS, AdamMapping, SGDMapping, register_mapping  # noqa: E402

A2 = np.array([[2.0, 0.5], [0.5, 1.0]])
C2 = np.array([0.3, -0.2])
THETA0 = np.array([1.0, -2.0])
COMPARED = (
    "kinetic",
    "potential",
    "inertia",
    "delta_inertia",
    "friction",
    "numerical",
    "schedule",
    "metric",
    "decay",
    "curvature",
    "lr",
    "dt",
    "gamma",
)


def q(theta: np.ndarray) -> float:
    return float(0.5 * theta @ A2 @ theta + C2 @ theta)


def grad_q(theta: np.ndarray) -> np.ndarray:
    return A2 @ theta + C2


def autograd_grad(theta: np.ndarray, maximize: bool) -> np.ndarray:
    """What ``loss.backward()`` puts in ``.grad``: the training loss is ``-q`` under maximize."""
    return -grad_q(theta) if maximize else grad_q(theta)


def first_or_rescaled(k_prev: float, c2: float, c2_prev: float | None) -> float:
    """``r^2 K_j`` with ``r^2 = c_j^2 / c_{j-1}^2``; zero before the first step."""
    return 0.0 if c2_prev is None else c2 / c2_prev * k_prev


# --------------------------------------------------------------------------- hand replays


def hand_sgd(
    lrs: list[float], mu: float, tau: float, wd: float, nesterov: bool, maximize: bool
) -> list[dict[str, Any]]:
    """``torch.optim.SGD``: g = grad (negated under maximize) + wd theta; b = g on the first
    step, else mu b + (1 - tau) g; d = g + mu b (Nesterov) or b (or g without momentum);
    theta <- theta - lr d."""
    theta, b, k, c2_prev = THETA0.copy(), None, 0.0, None
    steps = []
    for lr in lrs:
        grad = autograd_grad(theta, maximize)
        g = (-grad if maximize else grad) + wd * theta
        b_prev = np.zeros(2) if b is None else b
        if mu == 0.0:
            d = g
        else:
            b = g.copy() if b is None else mu * b + (1.0 - tau) * g
            d = g + mu * b if nesterov else b
        theta_next = theta - lr * d
        dtheta = theta_next - theta
        out: dict[str, Any] = {"theta": theta, "theta_next": theta_next, "lr": lr, "mu": mu, "decay": 0.0}
        if mu == 0.0:
            # v_{j+1} = -sqrt(lr) g = dtheta / sqrt(lr): all of K_j is discarded
            dt2 = lr
            kin = dtheta @ dtheta / (2.0 * dt2)
            out.update(schedule=0.0, metric=0.0, friction=-k, numerical=-0.5 * lr * (g @ g))
            c2 = lr
        elif nesterov:
            # the velocity is the buffer's, v = -sqrt(lr) b; the iterate moves by -lr (g + mu b)
            dt2 = c2 = lr
            kin = 0.5 * lr * (b @ b)
            r2k = first_or_rescaled(k, c2, c2_prev)
            numerical = -0.5 * lr * (1.0 + 2.0 * mu) * (g @ g) + lr * mu * (1.0 - mu) * (b_prev @ g)
            out.update(schedule=r2k - k, metric=0.0, friction=-(1.0 - mu**2) * r2k, numerical=numerical)
        else:
            # heavy ball: c^2 = lr / (1 - tau), dt^2 = lr (1 - tau), v = dtheta / dt
            c2, dt2 = lr / (1.0 - tau), lr * (1.0 - tau)
            kin = dtheta @ dtheta / (2.0 * dt2)
            r2k = first_or_rescaled(k, c2, c2_prev)
            if c2_prev is None:  # b_0 = g_0 (not (1 - tau) g_0): K_1 = c^2/2 |g|^2, moved by -lr g
                numerical = (0.5 * c2 - lr) * (g @ g)
            else:
                numerical = -0.5 * dt2 * (g @ g)
            out.update(schedule=r2k - k, metric=0.0, friction=-(1.0 - mu**2) * r2k, numerical=numerical)
        out.update(kinetic=kin, dt=math.sqrt(dt2))
        steps.append(out)
        theta, k, c2_prev = theta_next, kin, c2
    return steps


def hand_adam(
    lrs: list[float],
    b1: float,
    b2: float,
    eps: float,
    wd: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> list[dict[str, Any]]:
    """``torch.optim.Adam``/``AdamW``: g = grad (negated under maximize) [+ wd theta | theta *=
    1 - lr wd]; m = b1 m + (1 - b1) g; s = b2 s + (1 - b2) g^2 (amsgrad: running max);
    theta <- theta - lr / bc1 * m / (sqrt(s / bc2) + eps)."""
    theta = THETA0.copy()
    m, s, s_max = np.zeros(2), np.zeros(2), np.zeros(2)
    k, c2_prev = 0.0, None
    steps = []
    for j, lr in enumerate(lrs):
        t = j + 1
        grad = autograd_grad(theta, maximize)
        raw = -grad if maximize else grad
        shrunk, g = (theta * (1.0 - lr * wd), raw) if decoupled else (theta, raw + wd * theta)
        m_prev = m
        m = b1 * m + (1.0 - b1) * g
        s = b2 * s + (1.0 - b2) * g * g
        s_max = np.maximum(s_max, s)
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        metric = np.sqrt((s_max if amsgrad else s) / bc2) + eps
        delta_adam = -(lr / bc1) * m / metric
        theta_next = shrunk + delta_adam
        c2, dt2 = lr / ((1.0 - b1) * bc1), lr * (1.0 - b1) / bc1
        # p = M delta_adam / dt: K = 1/2 p^T M^{-1} p = 1/2 sum M delta_adam^2 / dt^2
        kin = float(np.sum(metric * delta_adam**2)) / (2.0 * dt2)
        # the old momentum, rescaled, in the new metric: r p_j = -c_j m_{j-1}
        k_tilde = 0.5 * c2 * float(np.sum(m_prev**2 / metric))
        r2k = first_or_rescaled(k, c2, c2_prev)
        big_g = grad_q(theta) + wd * theta
        steps.append(
            {
                "theta": theta,
                "theta_next": theta_next,
                "lr": lr,
                "mu": b1,
                "dt": math.sqrt(dt2),
                "kinetic": kin,
                "schedule": r2k - k,
                "metric": k_tilde - r2k,
                "friction": -(1.0 - b1**2) * k_tilde,
                "numerical": -0.5 * dt2 * float(np.sum(g * g / metric)),
                # the work of the decoupled shrink: what <G, dtheta> has beyond <g, delta_adam>
                "decay": float(big_g @ (theta_next - theta) - g @ delta_adam),
                "amsgrad_active": bool(np.any(s_max != s)),
            }
        )
        theta, k, c2_prev = theta_next, kin, c2
    return steps


def hand_rmsprop(
    lrs: list[float],
    alpha: float,
    eps: float,
    wd: float,
    mu: float,
    centered: bool,
    maximize: bool,
) -> list[dict[str, Any]]:
    """``torch.optim.RMSprop``: g = grad (negated under maximize) + wd theta;
    s = alpha s + (1 - alpha) g^2; centered: a = alpha a + (1 - alpha) g, M = sqrt(s - a^2) + eps
    (else sqrt(s) + eps); momentum: b = mu b + g / M, theta <- theta - lr b; else
    theta <- theta - lr g / M."""
    theta = THETA0.copy()
    s, a, b = np.zeros(2), np.zeros(2), np.zeros(2)
    k, c2_prev = 0.0, None
    steps = []
    for lr in lrs:
        grad = autograd_grad(theta, maximize)
        g = (-grad if maximize else grad) + wd * theta
        s = alpha * s + (1.0 - alpha) * g * g
        if centered:
            a = alpha * a + (1.0 - alpha) * g
            metric = np.sqrt(s - a * a) + eps
        else:
            metric = np.sqrt(s) + eps
        b_prev = b
        if mu != 0.0:
            b = mu * b + g / metric
            theta_next = theta - lr * b
        else:
            theta_next = theta - lr * g / metric
        dtheta = theta_next - theta
        # v = dtheta / sqrt(lr), K = 1/2 v^T M v
        kin = float(np.sum(metric * dtheta**2)) / (2.0 * lr)
        out: dict[str, Any] = {"theta": theta, "theta_next": theta_next, "lr": lr, "mu": mu}
        numerical = -0.5 * lr * float(np.sum(g * g / metric))
        if mu != 0.0:
            k_tilde = 0.5 * lr * float(np.sum(metric * b_prev**2))  # r v_j = -sqrt(lr_j) b_{j-1}
            r2k = first_or_rescaled(k, lr, c2_prev)
            out.update(
                schedule=r2k - k, metric=k_tilde - r2k, friction=-(1.0 - mu**2) * k_tilde, numerical=numerical
            )
        else:
            out.update(schedule=0.0, metric=0.0, friction=-k, numerical=numerical)
        out.update(kinetic=kin, dt=math.sqrt(lr), decay=0.0)
        steps.append(out)
        theta, k, c2_prev = theta_next, kin, lr
    return steps


def hand_rows(steps: list[dict[str, Any]], wd: float, n_rows: int) -> list[dict[str, float]]:
    """Rows ``0 .. n_rows - 1`` from a hand replay: row ``k`` is ``theta_k`` and step ``k - 1``."""

    def potential(theta: np.ndarray) -> float:
        return q(theta) + 0.5 * wd * float(theta @ theta)

    hess = A2 + wd * np.eye(2)
    rows = [{"kinetic": 0.0, "potential": potential(THETA0), "inertia": potential(THETA0)}]
    for k in range(1, n_rows):
        st = steps[k - 1]
        dtheta = st["theta_next"] - st["theta"]
        pot = potential(st["theta_next"])
        row = {
            name: st[name] for name in ("schedule", "metric", "friction", "numerical", "decay", "lr", "dt")
        }
        row.update(
            kinetic=st["kinetic"],
            potential=pot,
            inertia=st["kinetic"] + pot,
            curvature=0.5 * float(dtheta @ hess @ dtheta),
            gamma=-math.log(st["mu"]) / st["dt"] if st["mu"] > 0 else math.inf,
        )
        row["delta_inertia"] = row["inertia"] - rows[-1]["inertia"]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the cases

N_STEPS = 4  # rows 0..3: three ledger steps


def step_lr(opt: Any) -> Any:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)


def halving(lr: float) -> list[float]:
    return [lr * 0.5**j for j in range(N_STEPS)]


def constant(lr: float) -> list[float]:
    return [lr] * N_STEPS


SGD, ADAM, ADAMW, RMSPROP = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop
ADAM_DEFAULTS = {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "wd": 0.0, "amsgrad": False, "maximize": False}

# id -> (optimizer class, its kwargs, scheduler factory or None, hand replay)
CASES: dict[str, tuple[Any, dict[str, Any], Any, Callable[[], list[dict[str, Any]]]]] = {
    "sgd-momentum": (
        SGD,
        {"lr": 0.1, "momentum": 0.9},
        None,
        lambda: hand_sgd(constant(0.1), 0.9, 0.0, 0.0, False, False),
    ),
    "sgd-dampening": (
        SGD,
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.3},
        None,
        lambda: hand_sgd(constant(0.1), 0.8, 0.3, 0.0, False, False),
    ),
    "sgd-nesterov": (
        SGD,
        {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        None,
        lambda: hand_sgd(constant(0.1), 0.9, 0.0, 0.0, True, False),
    ),
    "sgd-nesterov-wd": (
        SGD,
        {"lr": 0.1, "momentum": 0.7, "nesterov": True, "weight_decay": 0.2},
        None,
        lambda: hand_sgd(constant(0.1), 0.7, 0.0, 0.2, True, False),
    ),
    "sgd-momentum-wd": (
        SGD,
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.3},
        None,
        lambda: hand_sgd(constant(0.1), 0.9, 0.0, 0.3, False, False),
    ),
    "sgd-maximize-wd": (
        SGD,
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.3, "maximize": True},
        None,
        lambda: hand_sgd(constant(0.1), 0.9, 0.0, 0.3, False, True),
    ),
    "sgd-steplr": (
        SGD,
        {"lr": 0.2, "momentum": 0.9},
        step_lr,
        lambda: hand_sgd(halving(0.2), 0.9, 0.0, 0.0, False, False),
    ),
    "sgd-dampening-steplr": (
        SGD,
        {"lr": 0.2, "momentum": 0.6, "dampening": 0.5},
        step_lr,
        lambda: hand_sgd(halving(0.2), 0.6, 0.5, 0.0, False, False),
    ),
    "adam": (ADAM, {"lr": 0.1}, None, lambda: hand_adam(constant(0.1), **ADAM_DEFAULTS, decoupled=False)),
    "adam-l2": (
        ADAM,
        {"lr": 0.1, "weight_decay": 0.2},
        None,
        lambda: hand_adam(constant(0.1), **{**ADAM_DEFAULTS, "wd": 0.2}, decoupled=False),
    ),
    "adam-amsgrad": (
        ADAM,
        {"lr": 0.3, "betas": (0.8, 0.5), "amsgrad": True},
        None,
        lambda: hand_adam(
            constant(0.3), **{**ADAM_DEFAULTS, "b1": 0.8, "b2": 0.5, "amsgrad": True}, decoupled=False
        ),
    ),
    "adam-maximize": (
        ADAM,
        {"lr": 0.1, "maximize": True, "weight_decay": 0.1},
        None,
        lambda: hand_adam(constant(0.1), **{**ADAM_DEFAULTS, "maximize": True, "wd": 0.1}, decoupled=False),
    ),
    "adam-steplr": (
        ADAM,
        {"lr": 0.2, "betas": (0.7, 0.9)},
        step_lr,
        lambda: hand_adam(halving(0.2), **{**ADAM_DEFAULTS, "b1": 0.7, "b2": 0.9}, decoupled=False),
    ),
    "adamw": (
        ADAMW,
        {"lr": 0.1, "weight_decay": 0.5},
        None,
        lambda: hand_adam(constant(0.1), **{**ADAM_DEFAULTS, "wd": 0.5}, decoupled=True),
    ),
    "adamw-maximize-amsgrad": (
        ADAMW,
        {"lr": 0.3, "betas": (0.8, 0.5), "weight_decay": 0.5, "maximize": True, "amsgrad": True},
        None,
        lambda: hand_adam(
            constant(0.3),
            **{**ADAM_DEFAULTS, "b1": 0.8, "b2": 0.5, "wd": 0.5, "maximize": True, "amsgrad": True},
            decoupled=True,
        ),
    ),
    "rmsprop": (
        RMSPROP,
        {"lr": 0.01, "alpha": 0.9},
        None,
        lambda: hand_rmsprop(constant(0.01), 0.9, 1e-8, 0.0, 0.0, False, False),
    ),
    "rmsprop-momentum": (
        RMSPROP,
        {"lr": 0.01, "alpha": 0.9, "momentum": 0.8},
        None,
        lambda: hand_rmsprop(constant(0.01), 0.9, 1e-8, 0.0, 0.8, False, False),
    ),
    "rmsprop-centered": (
        RMSPROP,
        {"lr": 0.01, "alpha": 0.9, "centered": True},
        None,
        lambda: hand_rmsprop(constant(0.01), 0.9, 1e-8, 0.0, 0.0, True, False),
    ),
    "rmsprop-centered-momentum": (
        RMSPROP,
        {"lr": 0.01, "alpha": 0.9, "centered": True, "momentum": 0.8},
        None,
        lambda: hand_rmsprop(constant(0.01), 0.9, 1e-8, 0.0, 0.8, True, False),
    ),
    "rmsprop-wd": (
        RMSPROP,
        {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.3},
        None,
        lambda: hand_rmsprop(constant(0.01), 0.9, 1e-8, 0.3, 0.0, False, False),
    ),
    "rmsprop-momentum-wd-maximize": (
        RMSPROP,
        {"lr": 0.01, "alpha": 0.9, "weight_decay": 0.3, "momentum": 0.8, "maximize": True},
        None,
        lambda: hand_rmsprop(constant(0.01), 0.9, 1e-8, 0.3, 0.8, False, True),
    ),
    "rmsprop-momentum-steplr": (
        RMSPROP,
        {"lr": 0.02, "alpha": 0.9, "momentum": 0.8},
        step_lr,
        lambda: hand_rmsprop(halving(0.02), 0.9, 1e-8, 0.0, 0.8, False, False),
    ),
}

CASES_XFAIL = {
    "sgd-plain": (
        SGD,
        {"lr": 0.1},
        None,
        lambda: hand_sgd(constant(0.1), 0.0, 0.0, 0.0, False, False),
    ),
    "sgd-plain-wd-maximize": (
        SGD,
        {"lr": 0.1, "weight_decay": 0.3, "maximize": True},
        None,
        lambda: hand_sgd(constant(0.1), 0.0, 0.0, 0.3, False, True),
    ),
}


def weight_decay_of(kwargs: dict[str, Any], cls: Any) -> float:
    return float(kwargs.get("weight_decay", 0.01 if cls is ADAMW else 0.0))


def run_case(cls: Any, kwargs: dict[str, Any], scheduler: Any) -> tuple[Any, list[np.ndarray]]:
    maximize = bool(kwargs.get("maximize", False))
    w = torch.nn.Parameter(torch.tensor(THETA0, dtype=F64))
    a, c = torch.tensor(A2, dtype=F64), torch.tensor(C2, dtype=F64)
    sign = -1.0 if maximize else 1.0
    opt = cls([w], **kwargs)
    sched = scheduler(opt) if scheduler is not None else None
    return train([w], lambda: sign * (0.5 * w @ a @ w + c @ w), opt, N_STEPS, scheduler=sched)


def check_case(cls: Any, kwargs: dict[str, Any], scheduler: Any, replay: Callable[[], Any]) -> None:
    steps = replay()
    tracker, thetas = run_case(cls, kwargs, scheduler)
    # 1. the hand replay is PyTorch's update rule
    hand_thetas = [THETA0] + [st["theta_next"] for st in steps]
    np.testing.assert_allclose(np.array(thetas), np.array(hand_thetas), rtol=1e-13, atol=1e-14)
    wd = weight_decay_of(kwargs, cls)
    expected = hand_rows(steps, wd, N_STEPS)
    # 2. the hand derivation closes on its own
    for row in expected[1:]:
        explained = sum(row[t] for t in ("schedule", "metric", "friction", "numerical", "decay", "curvature"))
        assert row["delta_inertia"] == pytest.approx(explained, rel=1e-12, abs=1e-14)
    # 3. the tracker agrees, value by value
    rows = tracker.rows
    assert len(rows) == N_STEPS
    assert [r["step"] for r in rows] == list(range(N_STEPS))
    for k, (got, want) in enumerate(zip(rows, expected, strict=True)):
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-10, abs=1e-13), (k, name)
        assert got["finite"]
    assert math.isnan(rows[0]["delta_inertia"]) and math.isnan(rows[0]["residual"])
    assert all(abs(r["residual"]) < 1e-13 for r in rows[1:])


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_computed_rows(case: str) -> None:
    check_case(*CASES[case])


@pytest.mark.parametrize("case", sorted(CASES_XFAIL))
def test_hand_computed_rows_sgd_without_momentum(case: str) -> None:
    check_case(*CASES_XFAIL[case])


def test_cases_exercise_their_option() -> None:
    """The hand cases really take the branches they are named after."""
    ams = hand_adam(
        constant(0.3), **{**ADAM_DEFAULTS, "b1": 0.8, "b2": 0.5, "amsgrad": True}, decoupled=False
    )
    assert any(st["amsgrad_active"] for st in ams)  # max_exp_avg_sq differs from exp_avg_sq
    adamw = hand_adam(constant(0.1), **{**ADAM_DEFAULTS, "wd": 0.5}, decoupled=True)
    assert all(abs(st["decay"]) > 1e-4 for st in adamw)
    adam = hand_adam(constant(0.1), **ADAM_DEFAULTS, decoupled=False)
    assert abs(adam[2]["metric"]) > 1e-6  # Adam's metric drift is not negligible here
    sched = hand_sgd(halving(0.2), 0.9, 0.0, 0.0, False, False)
    assert sched[1]["schedule"] == pytest.approx(-0.5 * sched[0]["kinetic"])  # r^2 = 1/2
    damp = hand_sgd(constant(0.1), 0.8, 0.3, 0.0, False, False)
    g0 = grad_q(THETA0)
    assert damp[0]["kinetic"] == pytest.approx(0.5 * 0.1 / 0.7 * (g0 @ g0))  # b_0 = g_0 quirk


# --------------------------------------------------------------------------- literal numbers


def literal_run(momentum: float) -> list[dict[str, Any]]:
    """L = 1/2 (x^2 + 2 y^2) from (1, 1), lr = 0.1: three steps."""
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=F64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=momentum)
    tracker, _ = train([w], lambda: 0.5 * (w[0] ** 2 + 2.0 * w[1] ** 2), opt, 3)
    return tracker.rows


def test_literal_heavy_ball_numbers() -> None:
    """Worked by hand (lr = 0.1, mu = 0.5). g0 = (1, 2), b0 = g0, theta1 = (0.9, 0.8),
    K1 = 0.1/2 * 5 = 0.25, V0 = 1.5, V1 = 1.045, curvature = 1/2 (0.01 + 2 * 0.04) = 0.045,
    numerical = -0.1/2 * 5 = -0.25. g1 = (0.9, 1.6), b1 = 0.5 b0 + g1 = (1.4, 2.6),
    theta2 = (0.76, 0.54), K2 = 0.05 * 8.72 = 0.436, V2 = 0.5804, friction = -(1 - 0.25) 0.25
    = -0.1875, numerical = -0.05 * 3.37 = -0.1685, curvature = 1/2 (0.0196 + 2 * 0.0676) = 0.0774,
    delta = 1.0164 - 1.295 = -0.2786."""
    r = literal_run(0.5)
    want = [
        {"kinetic": 0.0, "potential": 1.5, "inertia": 1.5},
        {"kinetic": 0.25, "potential": 1.045, "delta_inertia": -0.205, "numerical": -0.25, "friction": 0.0},
        {
            "kinetic": 0.436,
            "potential": 0.5804,
            "delta_inertia": -0.2786,
            "friction": -0.1875,
            "numerical": -0.1685,
            "curvature": 0.0774,
            "schedule": 0.0,
            "metric": 0.0,
            "decay": 0.0,
        },
    ]
    assert r[1]["curvature"] == pytest.approx(0.045, abs=1e-14)
    assert r[1]["dt"] == pytest.approx(math.sqrt(0.1), abs=1e-15)
    assert r[1]["gamma"] == pytest.approx(-math.log(0.5) / math.sqrt(0.1), rel=1e-14)
    for got, expected in zip(r, want, strict=True):
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-14), name


def test_literal_plain_sgd_numbers() -> None:
    """Worked by hand (lr = 0.1, no momentum): v_{j+1} = -sqrt(lr) g_j. K1 = 0.05 * 5 = 0.25,
    numerical = -0.25, curvature = 0.045; theta2 = (0.81, 0.64), K2 = 0.05 * 3.37 = 0.1685,
    friction = -K1 = -0.25, numerical = -0.1685, curvature = 1/2 (0.0081 + 2 * 0.0256) = 0.02965,
    V2 = 0.73765, delta = 0.90615 - 1.295 = -0.38885."""
    r = literal_run(0.0)
    assert r[1]["kinetic"] == pytest.approx(0.25, abs=1e-14)
    assert r[1]["numerical"] == pytest.approx(-0.25, abs=1e-14)
    assert r[1]["curvature"] == pytest.approx(0.045, abs=1e-14)
    assert r[2]["kinetic"] == pytest.approx(0.1685, abs=1e-14)
    assert r[2]["friction"] == pytest.approx(-0.25, abs=1e-14)
    assert r[2]["numerical"] == pytest.approx(-0.1685, abs=1e-14)
    assert r[2]["curvature"] == pytest.approx(0.02965, abs=1e-14)
    assert r[2]["delta_inertia"] == pytest.approx(-0.38885, abs=1e-14)
    assert math.isinf(r[2]["gamma"])


# --------------------------------------------------------------------------- the ledger closes

N_CLOSE = 20
CLOSE_TOL = 1e-12  # |residual| relative to the row's largest term or energy

OPTIMIZERS: dict[str, tuple[Any, dict[str, Any]]] = {
    "sgd-plain": (SGD, {"lr": 0.1}),
    "sgd-momentum": (SGD, {"lr": 0.1, "momentum": 0.9}),
    "sgd-dampening": (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.4}),
    "sgd-nesterov": (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "sgd-wd": (SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.05}),
    "sgd-nesterov-wd-maximize": (
        SGD,
        {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05, "maximize": True},
    ),
    "sgd-dampening-wd-maximize": (
        SGD,
        {"lr": 0.1, "momentum": 0.8, "dampening": 0.2, "weight_decay": 0.05, "maximize": True},
    ),
    "adam": (ADAM, {"lr": 0.05}),
    "adam-l2": (ADAM, {"lr": 0.05, "weight_decay": 0.1}),
    "adam-amsgrad": (ADAM, {"lr": 0.05, "betas": (0.8, 0.6), "amsgrad": True}),
    "adam-maximize": (ADAM, {"lr": 0.05, "maximize": True, "weight_decay": 0.05}),
    "adamw": (ADAMW, {"lr": 0.05, "weight_decay": 0.2}),
    "adamw-amsgrad-maximize": (
        ADAMW,
        {"lr": 0.05, "betas": (0.8, 0.6), "weight_decay": 0.2, "amsgrad": True, "maximize": True},
    ),
    "rmsprop": (RMSPROP, {"lr": 0.01}),
    "rmsprop-momentum": (RMSPROP, {"lr": 0.01, "momentum": 0.8}),
    "rmsprop-centered": (RMSPROP, {"lr": 0.01, "centered": True}),
    "rmsprop-centered-momentum-wd": (
        RMSPROP,
        {"lr": 0.01, "centered": True, "momentum": 0.8, "weight_decay": 0.1},
    ),
    "rmsprop-wd-maximize": (RMSPROP, {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
}
FORMS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_optimizer(cls: Any, params: Any, kwargs: dict[str, Any], form: str) -> Any:
    try:
        return cls(params, **kwargs, **FORMS[form])
    except (TypeError, RuntimeError, ValueError) as exc:  # e.g. RMSprop has no fused form
        pytest.skip(f"{cls.__name__}(**{FORMS[form]}) is not available here: {exc}")


def closing_run(
    cls: Any,
    kwargs: dict[str, Any],
    *,
    form: str = "for-loop",
    groups: int = 1,
    scheduler: str = "none",
    mode: str = "cheap",
    every: int = 1,
    n_steps: int = N_CLOSE,
) -> list[dict[str, Any]]:
    problem = QuadraticProblem(sign=-1.0 if kwargs.get("maximize") else 1.0)
    params = problem.make_params()
    if groups == 1:
        spec: Any = params
    else:  # three groups with their own step size and momentum
        spec = [{"params": [p], **GROUP_OVERRIDES[cls](kwargs, i)} for i, p in enumerate(params)]
    opt = make_optimizer(cls, spec, kwargs, form)
    sched = make_scheduler(scheduler, opt, n_steps)
    tracker, _ = train(
        params,
        lambda: problem.loss(params),
        opt,
        n_steps,
        scheduler=sched,
        tracker_kwargs={"mode": mode, "every": every},
    )
    rows = tracker.rows
    assert [r["step"] for r in rows] == list(range(0, n_steps, every))
    assert all(r["finite"] for r in rows)
    return rows


def _sgd_group(kw: dict[str, Any], i: int) -> dict[str, Any]:
    return {"lr": kw["lr"] * (1.0, 0.5, 0.25)[i], "momentum": (0.9, 0.5, 0.7)[i]}


def _adam_group(kw: dict[str, Any], i: int) -> dict[str, Any]:
    return {"lr": kw["lr"] * (1.0, 0.5, 0.25)[i], "betas": ((0.9, 0.999), (0.8, 0.9), (0.5, 0.99))[i]}


def _rmsprop_group(kw: dict[str, Any], i: int) -> dict[str, Any]:
    return {
        "lr": kw["lr"] * (1.0, 0.5, 0.25)[i],
        "momentum": (0.8, 0.0, 0.5)[i],
        "alpha": (0.99, 0.9, 0.8)[i],
    }


GROUP_OVERRIDES = {SGD: _sgd_group, ADAM: _adam_group, ADAMW: _adam_group, RMSPROP: _rmsprop_group}


def make_scheduler(name: str, opt: Any, n_steps: int) -> Any:
    sch = torch.optim.lr_scheduler
    if name == "none":
        return None
    if name == "steplr":
        return sch.StepLR(opt, step_size=2, gamma=0.7)
    if name == "cosine":
        return sch.CosineAnnealingLR(opt, T_max=n_steps // 2, eta_min=1e-4)
    if name == "onecycle":  # also cycles the momentum / beta1 of every group
        max_lr = [g["lr"] for g in opt.param_groups]
        return sch.OneCycleLR(opt, max_lr=max_lr, total_steps=n_steps + 1)
    raise AssertionError(name)


def _closing_cases() -> list[Any]:
    cases = []
    for name in sorted(OPTIMIZERS):
        for form in sorted(FORMS):
            cases.append(pytest.param(name, form, id=f"{name}-{form}"))
    return cases


@pytest.mark.parametrize(("name", "form"), _closing_cases())
def test_ledger_closes_every_option_and_form(name: str, form: str) -> None:
    cls, kwargs = OPTIMIZERS[name]
    rows = closing_run(cls, kwargs, form=form)
    assert rows[0]["kinetic"] == 0.0  # fresh optimizer
    assert worst_residual(rows) <= CLOSE_TOL


FAMILIES = {
    "sgd": (SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    "sgd-nesterov": (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "adam": (ADAM, {"lr": 0.05, "amsgrad": True}),
    "adamw": (ADAMW, {"lr": 0.05, "weight_decay": 0.1}),
    "rmsprop": (RMSPROP, {"lr": 0.01, "momentum": 0.5, "centered": True}),
}


@pytest.mark.parametrize(("mode", "every"), [("cheap", 1), ("cheap", 3), ("exact", 1), ("exact", 3)])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("scheduler", ["steplr", "cosine", "onecycle"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ledger_closes_with_schedules_groups_modes(
    family: str, scheduler: str, groups: int, mode: str, every: int
) -> None:
    cls, kwargs = FAMILIES[family]
    rows = closing_run(cls, kwargs, groups=groups, scheduler=scheduler, mode=mode, every=every)
    assert worst_residual(rows) <= CLOSE_TOL
    ledger = rows[1:]
    if mode == "exact":  # full batch: the same-batch re-evaluation is the next loss
        assert all(abs(r["noise"]) <= 1e-13 * max(1.0, abs(r["potential"])) for r in ledger)
    else:
        assert all(math.isnan(r["noise"]) for r in ledger)
    # the schedule term is booked (not absorbed elsewhere) when the step size changes
    assert max(abs(r["schedule"]) for r in ledger) > 1e-6


def test_ledger_without_schedule_books_no_schedule_term() -> None:
    rows = closing_run(SGD, {"lr": 0.1, "momentum": 0.9})
    assert all(r["schedule"] == 0.0 and r["metric"] == 0.0 and r["decay"] == 0.0 for r in rows[1:])


# --------------------------------------------------------------------------- power controls


class WrongSGD(torch.optim.SGD):
    """Steps exactly like SGD; only registered with deliberately wrong mappings."""


class WrongAdam(torch.optim.Adam):
    pass


class DtEqualsLr(SGDMapping):
    """dt = lr instead of sqrt(lr) in the numerical dissipation."""

    def assemble(self, hp: dict[str, float], sums: dict[str, float], prev: Any, fresh: bool) -> Any:
        terms = super().assemble(hp, sums, prev, fresh)
        return dataclasses.replace(terms, numerical=-0.5 * hp["lr"] ** 2 * sums["gg"], dt=hp["lr"])


class NoFriction(SGDMapping):
    def assemble(self, hp: dict[str, float], sums: dict[str, float], prev: Any, fresh: bool) -> Any:
        return dataclasses.replace(super().assemble(hp, sums, prev, fresh), friction=0.0)


class VelocityFormMetric(AdamMapping):
    """THEORY.md's velocity form of the metric term, +1/2 v^T (M_new - M_old) v, for Adam (whose
    carried quantity is the momentum): first order opposite in sign to the exact term."""

    def assemble(self, hp: dict[str, float], sums: dict[str, float], prev: Any, fresh: bool) -> Any:
        terms = super().assemble(hp, sums, prev, fresh)
        return dataclasses.replace(terms, metric=-terms.metric)


@pytest.fixture
def wrong_mapping() -> Any:
    registered: list[type] = []

    def register(cls: type, mapping: Any) -> None:
        register_mapping(cls, mapping)
        registered.append(cls)

    yield register
    for cls in registered:
        MAPPINGS.pop(cls, None)


@pytest.mark.parametrize(
    ("cls", "mapping", "kwargs"),
    [
        (WrongSGD, DtEqualsLr(), {"lr": 0.1, "momentum": 0.9}),
        (WrongSGD, NoFriction(), {"lr": 0.1, "momentum": 0.9}),
        (WrongAdam, VelocityFormMetric(), {"lr": 0.05, "betas": (0.8, 0.6)}),
    ],
    ids=["dt-equals-lr", "no-friction", "adam-velocity-form-metric"],
)
def test_closing_check_has_teeth(wrong_mapping: Any, cls: type, mapping: Any, kwargs: dict[str, Any]) -> None:
    wrong_mapping(cls, mapping)
    rows = closing_run(cls, kwargs)
    assert worst_residual(rows) > 1e-3
    # and the same optimizer with the right mapping closes
    right = closing_run(cls.__mro__[1], kwargs)
    assert worst_residual(right) <= CLOSE_TOL


def test_nesterov_foreach_rows_equal_for_loop_rows() -> None:
    """Reproducer: the same Nesterov run in for-loop and foreach form (identical parameters)
    must give identical rows; the foreach rows are wrong from row 1 on."""
    kwargs = {"lr": 0.1, "momentum": 0.9, "nesterov": True}
    loop = closing_run(SGD, kwargs, form="for-loop", n_steps=5)
    fast = closing_run(SGD, kwargs, form="foreach", n_steps=5)
    for a, b in zip(loop[1:], fast[1:], strict=True):
        for name in ("kinetic", "potential", "numerical", "friction", "curvature", "residual"):
            assert b[name] == pytest.approx(a[name], rel=1e-12, abs=1e-14), name


# --------------------------------------------------------------------------- lr = 0 (warm-up)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        pytest.param(
            SGD,
            {"lr": 0.1, "momentum": 0.9},
            id="sgd-momentum",
        ),
        pytest.param(ADAM, {"lr": 0.05}, id="adam"),
        pytest.param(
            RMSPROP,
            {"lr": 0.01, "momentum": 0.5},
            id="rmsprop-momentum",
        ),
    ],
)
def test_warmup_from_zero_learning_rate(cls: Any, kwargs: dict[str, Any]) -> None:
    problem = QuadraticProblem()
    params = problem.make_params()
    opt = cls(params, **kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 4))
    tracker, thetas = train(params, lambda: problem.loss(params), opt, 8, scheduler=sched)
    rows = tracker.rows
    assert len(rows) == 8
    np.testing.assert_array_equal(thetas[1], thetas[0])  # step 0 did not move
    assert rows[1]["lr"] == 0.0 and rows[1]["dt"] == 0.0 and rows[1]["kinetic"] == 0.0
    assert not math.isfinite(rows[1]["gamma"])  # -ln(mu) / 0: never reported as a number
    assert worst_residual(rows) <= CLOSE_TOL


# --------------------------------------------------------------------------- direct dot fast path

DIRECT_CASES = {
    "plain": {"lr": 0.1},
    "momentum": {"lr": 0.1, "momentum": 0.9},
    "dampening": {"lr": 0.1, "momentum": 0.9, "dampening": 0.4},
    "momentum-maximize": {"lr": 0.1, "momentum": 0.8, "maximize": True},
    "dampening-maximize": {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "maximize": True},
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", DIRECT_CASES)
def test_direct_sums_equal_elementwise_sums(case: str, dtype: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The heavy-ball fast path (dots straight from ``.grad`` and the buffer) gives the same sums
    as the general element-wise path, on a group with a tensor larger than one chunk (sliced
    views), small tensors, a parameter on its first step (``b_0 = g_0``) and one without a
    gradient; and it is the path actually taken."""
    from inertia.track import reduce as reduce_mod
    from inertia.track.mapping import PreStep

    gen = torch.Generator().manual_seed(3)
    shapes = [(reduce_mod.CHUNK + 1000,), (7, 5), (3,), (4,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    opt = SGD(params, **DIRECT_CASES[case])
    for step in range(3):
        for i, p in enumerate(params):
            late = i == 2 and step < 2  # takes its first step at step 2
            p.grad = None if (late or i == 3) else torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    new = frozenset({id(params[2])})
    group, state = opt.param_groups[0], opt.state
    calls: list[int] = []
    real = SGDMapping._reduce_direct

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(SGDMapping, "_reduce_direct", spy)
    fast = SGDMapping().reduce(group, state, PreStep(new=new)).tolist()
    slow = SGDMapping(direct=False).reduce(group, state, PreStep(new=new)).tolist()
    assert calls == [1]
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    assert fast == pytest.approx(slow, rel=rel, abs=1e-12)
    assert any(abs(x) > 0 for x in fast)
    # teeth: the comparison sees a sum that is off by one part in 10^4
    wrong = list(fast)
    wrong[SGDMapping.names.index("gd")] *= 1 + 1e-4
    assert wrong != pytest.approx(slow, rel=rel, abs=1e-12)
