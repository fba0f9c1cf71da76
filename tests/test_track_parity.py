"""The tracker against two independent implementations (TESTING.md items 10 and 11).

1. **Tracker equals simulator.** Heavy-ball ``torch.optim.SGD`` on ``L = 1/2 theta^T A theta`` is
   the library's conformal symplectic Euler with ``dt = sqrt(lr)``, ``gamma = -ln(mu)/dt``
   (THEORY.md section 6): the tracker's ``kinetic``, ``potential``, ``inertia`` and cumulative
   friction equal :func:`inertia.simulate`'s ``kinetic``, ``potential``, ``inertia`` and
   ``dissipated`` at every step. Row ``k`` is ``theta_k`` and the velocity that reached it; a
   fresh optimizer has ``K_0 = 0``, the simulator's ``v0 = 0``.
2. **Independent reference.** :class:`NaiveReference` is a plain float64 loop over
   ``model.named_parameters()`` that copies each parameter, gradient and optimizer-state tensor
   before the step (so it never inverts an update) and evaluates the per-parameter formulas of
   the mapping docstrings, with each parameter's own step count and its own previous kinetic
   energy. It must equal the production tracker on an MLP, a small conv net, a model with
   frozen parameters and several parameter groups, for SGD with momentum, Adam, AdamW and
   RMSprop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from track_helpers import F64, LEDGER_TERMS, spd_matrix, train, worst_residual

torch = pytest.importorskip("torch")

import inertia  # noqa: E402
from inertia import potentials  # noqa: E402
from inertia.track import InertiaTracker  # noqa: E402

# --------------------------------------------------------------------------- simulator parity


@pytest.mark.parametrize(("lr", "mu"), [(0.04, 0.9), (0.2, 0.5), (0.01, 0.99)])
def test_tracker_equals_conformal_symplectic_euler(lr: float, mu: float) -> None:
    n = 60
    a = spd_matrix(4, seed=3, low=0.3, high=2.5)
    theta0 = np.array([1.0, -0.5, 0.25, 2.0])
    w = torch.nn.Parameter(torch.tensor(theta0, dtype=F64))
    at = torch.tensor(a, dtype=F64)
    opt = torch.optim.SGD([w], lr=lr, momentum=mu)
    # n + 1 steps give rows 0..n: row k pairs theta_k with the velocity that reached it
    tracker, thetas = train([w], lambda: 0.5 * w @ at @ w, opt, n + 1)
    h = math.sqrt(lr)
    traj = inertia.simulate(
        potentials.Quadratic(matrix=a),
        theta0,
        v0=None,
        gamma=-math.log(mu) / h,
        dt=h,
        n_steps=n,
        method="symplectic_euler",
    )
    hist = tracker.history
    assert hist["step"].tolist() == list(range(n + 1)) == traj.step.tolist()
    assert hist["kinetic"].iloc[0] == 0.0
    for col in ("kinetic", "potential", "inertia"):
        np.testing.assert_allclose(hist[col].to_numpy(), getattr(traj, col)[:, 0], rtol=0, atol=1e-10)
    # the friction the tracker books is the energy the exact friction sub-step removes
    np.testing.assert_allclose(
        -np.cumsum(hist["friction"].to_numpy()[1:]), traj.dissipated[1:, 0], rtol=0, atol=1e-10
    )
    np.testing.assert_allclose(np.asarray(traj.theta)[0], thetas[n], rtol=0, atol=1e-12)
    np.testing.assert_allclose(hist["dt"].to_numpy()[1:], h, rtol=1e-15)
    np.testing.assert_allclose(hist["gamma"].to_numpy()[1:], -math.log(mu) / h, rtol=1e-14)
    assert worst_residual(tracker.rows) <= 1e-12


# --------------------------------------------------------------------------- naive reference


def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}


def _dot(a: Any, b: Any) -> float:
    return float((a.to(F64) * b.to(F64)).sum())


class NaiveReference:
    """K, V and every ledger term of each step, one parameter at a time, from copies.

    Call :meth:`before_step` before ``optimizer.step()`` and :meth:`after_step` with the loss
    right after it (where the tracker's ``record`` goes); :attr:`rows` then mirrors
    ``tracker.rows``.
    """

    def __init__(self, model: Any, optimizer: Any) -> None:
        self.model = model
        self.opt = optimizer
        self.kind = type(optimizer)
        self.group_of = {p: g for g in optimizer.param_groups for p in g["params"]}
        self.last: dict[str, tuple[float, float]] = {}  # name -> (K_p, c_p^2) of its last step
        self.rows: list[dict[str, float]] = []
        self.pending: dict[str, float] | None = None  # step j-1's kinetic, terms and <G, dtheta>
        self.prev_potential = math.nan
        self.prev_inertia = math.nan

    def before_step(self) -> None:
        self.before = {}
        for name, p in self.model.named_parameters():
            if p not in self.group_of or p.grad is None:
                continue
            st = self.opt.state[p] if p in self.opt.state else {}
            self.before[name] = (p.detach().clone(), p.grad.detach().clone(), _clone_state(st))

    def after_step(self, loss: Any) -> None:
        params = dict(self.model.named_parameters())
        totals = dict.fromkeys(("kinetic", "schedule", "metric", "friction", "numerical", "decay"), 0.0)
        totals.update(g_dtheta=0.0, reg_before=0.0, reg_after=0.0)
        for name, (theta0, grad, old) in self.before.items():
            p = params[name]
            group = self.group_of[p]
            parts = self._param_terms(name, group, theta0, p.detach(), grad, old, self.opt.state[p])
            for key, value in parts.items():
                totals[key] += value
        sign = -1.0 if self.opt.param_groups[0].get("maximize", False) else 1.0
        potential = sign * float(loss.detach()) + totals["reg_before"]  # V(theta_j)
        row: dict[str, float] = {"kinetic": math.nan if self.pending is None else self.pending["kinetic"]}
        if not self.rows:
            row["kinetic"] = 0.0
        row["potential"] = potential
        row["inertia"] = row["kinetic"] + potential
        if self.pending is not None:
            pend = self.pending
            row.update({t: pend[t] for t in ("schedule", "metric", "friction", "numerical", "decay")})
            row["curvature"] = potential - self.prev_potential - pend["g_dtheta"]
            row["delta_inertia"] = row["inertia"] - self.prev_inertia
            row["residual"] = row["delta_inertia"] - sum(row[t] for t in LEDGER_TERMS)
        self.rows.append(row)
        self.pending = totals
        self.prev_potential, self.prev_inertia = potential, row["inertia"]

    def _param_terms(
        self,
        name: str,
        group: dict[str, Any],
        theta0: Any,
        theta1: Any,
        grad: Any,
        old: dict[str, Any],
        new: dict[str, Any],
    ) -> dict[str, float]:
        lr, wd = float(group["lr"]), float(group["weight_decay"])
        raw = -grad if group.get("maximize", False) else grad
        dtheta = theta1 - theta0
        k_last, c2_last = self.last.get(name, (0.0, math.nan))
        out = {"decay": 0.0, "metric": 0.0}
        if self.kind is torch.optim.SGD:
            mu, tau = float(group["momentum"]), float(group["dampening"])
            assert mu > 0 and not group["nesterov"], "the reference covers heavy-ball SGD"
            g = raw + wd * theta0
            b = new["momentum_buffer"]
            c2, dt2 = lr / (1.0 - tau), lr * (1.0 - tau)
            kin = 0.5 * c2 * _dot(b, b)
            first = "momentum_buffer" not in old
            r2k = 0.0 if first else c2 / c2_last * k_last
            out.update(
                schedule=r2k - k_last,
                friction=-(1.0 - mu * mu) * r2k,
                numerical=(0.5 * c2 - lr) * _dot(g, g) if first else -0.5 * dt2 * _dot(g, g),
            )
            big_g = g
        elif self.kind in (torch.optim.Adam, torch.optim.AdamW):
            b1, b2 = (float(x) for x in group["betas"])
            eps = float(group["eps"])
            decoupled = bool(group.get("decoupled_weight_decay", self.kind is torch.optim.AdamW))
            t = float(new["step"])
            bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
            s = new["max_exp_avg_sq"] if group["amsgrad"] else new["exp_avg_sq"]
            metric = (s / bc2).sqrt() + eps
            g = raw if decoupled else raw + wd * theta0
            big_g = raw + wd * theta0
            m, m_old = new["exp_avg"], old.get("exp_avg", torch.zeros_like(theta0))
            c2, dt2 = lr / ((1.0 - b1) * bc1), lr * (1.0 - b1) / bc1
            kin = 0.5 * c2 * _dot(m, m / metric)
            k_tilde = 0.5 * c2 * _dot(m_old, m_old / metric)
            r2k = 0.0 if not old else c2 / c2_last * k_last
            delta_adam = theta1 - (1.0 - lr * wd) * theta0 if decoupled else dtheta
            out.update(
                schedule=r2k - k_last,
                metric=k_tilde - r2k,
                friction=-(1.0 - b1 * b1) * k_tilde,
                numerical=-0.5 * dt2 * _dot(g, g / metric),
                decay=_dot(big_g, dtheta) - _dot(g, delta_adam),
            )
        elif self.kind is torch.optim.RMSprop:
            mu, eps = float(group["momentum"]), float(group["eps"])
            g = raw + wd * theta0
            s = new["square_avg"]
            if group["centered"]:
                s = s - new["grad_avg"] ** 2
            metric = s.sqrt() + eps
            c2 = lr
            if mu > 0:
                b, b_old = new["momentum_buffer"], old.get("momentum_buffer", torch.zeros_like(theta0))
                kin = 0.5 * lr * _dot(b, metric * b)
                k_tilde = 0.5 * lr * _dot(b_old, metric * b_old)
                r2k = 0.0 if not old else c2 / c2_last * k_last
                out.update(schedule=r2k - k_last, metric=k_tilde - r2k, friction=-(1.0 - mu * mu) * k_tilde)
            else:
                kin = 0.5 * lr * _dot(g, g / metric)
                out.update(schedule=0.0, friction=-k_last)
            out["numerical"] = -0.5 * lr * _dot(g, g / metric)
            big_g = g
        else:  # pragma: no cover
            raise AssertionError(self.kind)
        self.last[name] = (kin, c2)
        out.update(
            kinetic=kin,
            g_dtheta=_dot(big_g, dtheta),
            reg_before=0.5 * wd * _dot(theta0, theta0),
            reg_after=0.5 * wd * _dot(theta1, theta1),
        )
        return out


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(4, 8)
        self.l2 = torch.nn.Linear(8, 1)
        self.spare = torch.nn.Parameter(torch.ones(3))  # never used: its grad stays None

    def forward(self, x: Any) -> Any:
        return self.l2(torch.tanh(self.l1(x)))


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3)
        self.fc = torch.nn.Linear(3 * 4 * 4, 1)

    def forward(self, x: Any) -> Any:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def make_model(kind: str) -> tuple[Any, Any, Any]:
    """``(model, inputs, targets)`` in float64, from a fixed seed."""
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(11)
    if kind == "conv":
        model = ConvNet().double()
        x = torch.randn(24, 1, 6, 6, generator=gen, dtype=F64)
    else:
        model = MLP().double()
        x = torch.randn(24, 4, generator=gen, dtype=F64)
    y = torch.randn(24, 1, generator=gen, dtype=F64)
    if kind == "frozen":
        model.l1.weight.requires_grad_(False)
    return model, x, y


OPTIMIZERS = {
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3}),
    "adam": (torch.optim.Adam, {"lr": 0.01, "weight_decay": 1e-3, "amsgrad": True}),
    "adamw": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.05}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.002, "momentum": 0.5, "centered": True, "weight_decay": 1e-3}),
    "rmsprop-no-momentum": (torch.optim.RMSprop, {"lr": 0.002}),
}
SECOND_GROUP = {
    "sgd-momentum": {"lr": 0.02, "momentum": 0.5, "dampening": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 0.005, "betas": (0.8, 0.99), "amsgrad": False},
    "adamw": {"lr": 0.005, "betas": (0.7, 0.9), "weight_decay": 0.0},
    "rmsprop": {"lr": 0.001, "momentum": 0.0, "centered": False, "alpha": 0.9},
    "rmsprop-no-momentum": {"lr": 0.004, "momentum": 0.3},
}


def param_spec(model: Any, opt_name: str, groups: bool) -> Any:
    if not groups:
        return list(model.parameters())
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    others = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return [{"params": weights}, {"params": others, **SECOND_GROUP[opt_name]}]


def run_with_reference(model: Any, x: Any, y: Any, opt: Any, n_steps: int, batch: int = 8) -> tuple[Any, Any]:
    tracker = InertiaTracker(opt)
    ref = NaiveReference(model, opt)
    n = x.shape[0]
    for k in range(n_steps):
        lo = (k * batch) % n  # minibatches: the curvature column also carries batch noise
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[lo : lo + batch]), y[lo : lo + batch])
        loss.backward()
        ref.before_step()
        opt.step()
        tracker.record(loss)
        ref.after_step(loss)
    return tracker, ref


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, float]]) -> None:
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        for name, value in w.items():
            scale = max(1e-12, abs(w.get("potential", 0.0)), abs(value))
            assert g[name] == pytest.approx(value, rel=1e-10, abs=1e-12 * scale), (k, name, g[name], value)


@pytest.mark.parametrize("groups", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("model_kind", ["mlp", "conv", "frozen"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_tracker_equals_naive_reference(opt_name: str, model_kind: str, groups: bool) -> None:
    model, x, y = make_model(model_kind)
    cls, kwargs = OPTIMIZERS[opt_name]
    opt = cls(param_spec(model, opt_name, groups), **kwargs)
    tracker, ref = run_with_reference(model, x, y, opt, n_steps=12)
    assert_rows_equal(tracker.rows, ref.rows)
    assert worst_residual(ref.rows) <= 1e-12  # the reference's own ledger closes
    if model_kind == "frozen":
        assert model.l1.weight not in opt.state and model.spare not in opt.state


# --------------------------------------------------------------------------- frozen and late parameters


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW], ids=["adam", "adamw"])
def test_adam_with_a_frozen_parameter_group(cls: Any) -> None:
    """Fine-tuning pattern: the frozen backbone keeps its own group (lower lr)."""
    model, x, y = make_model("mlp")
    model.l1.requires_grad_(False)
    opt = cls([{"params": model.l1.parameters(), "lr": 1e-4}, {"params": model.l2.parameters()}], lr=0.01)
    tracker, ref = run_with_reference(model, x, y, opt, n_steps=6)
    assert worst_residual(ref.rows) <= 1e-12
    assert_rows_equal(tracker.rows, ref.rows)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (torch.optim.Adam, {"lr": 0.01}),
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.5}),
    ],
    ids=["adam", "sgd-dampening"],
)
def test_parameter_unfrozen_mid_training(cls: Any, kwargs: dict[str, Any]) -> None:
    model, x, y = make_model("frozen")  # l1.weight frozen, in the optimizer
    opt = cls(model.parameters(), **kwargs)
    tracker = InertiaTracker(opt)
    ref = NaiveReference(model, opt)
    for k in range(10):
        if k == 4:
            model.l1.weight.requires_grad_(True)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        ref.before_step()
        opt.step()
        tracker.record(loss)
        ref.after_step(loss)
    assert worst_residual(ref.rows) <= 1e-12  # per-parameter bookkeeping closes
    assert worst_residual(tracker.rows) <= 1e-12
