"""NAdam, RAdam, Adamax and Adagrad (issue 9, item 3): the ledger closes to rounding on float64
quadratics for every option, the kinetic energy equals the one computed here from the
optimizer's state by each module's formula, subclasses that keep ``step`` are accepted, and
optimizers without a mapping are refused with the reason and how to register one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia.track import AdamMapping, InertiaTracker, register_mapping  # noqa: E402
from inertia.track.mapping import MAPPINGS  # noqa: E402
from inertia.track.nadam import nadam_mu  # noqa: E402
from inertia.track.radam import rectification  # noqa: E402
from track_helpers import QuadraticProblem, train, worst_residual  # noqa: E402

CASES = [
    ("NAdam", {"lr": 0.05}),
    ("NAdam", {"lr": 0.05, "weight_decay": 0.1}),
    ("NAdam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("NAdam", {"lr": 0.05, "momentum_decay": 0.01, "maximize": True}),
    ("NAdam", {"lr": 0.05, "weight_decay": 0.05, "foreach": True}),
    ("RAdam", {"lr": 0.05}),
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "foreach": True}),
    ("RAdam", {"lr": 0.05, "betas": (0.8, 0.9), "maximize": True}),
    ("Adamax", {"lr": 0.05}),
    ("Adamax", {"lr": 0.05, "weight_decay": 0.1, "foreach": True}),
    ("Adamax", {"lr": 0.05, "betas": (0.5, 0.99), "maximize": True}),
    ("Adagrad", {"lr": 0.3}),
    ("Adagrad", {"lr": 0.3, "lr_decay": 0.05, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.3, "initial_accumulator_value": 0.5, "foreach": True, "maximize": True}),
]


def _kinetic(opt: Any) -> float:
    """``K`` of the last step, computed here from the state by each module's formula (Adagrad:
    the energy ``eta_t/2 g^T M^{-1} g`` of the step's velocity, removed in the step)."""
    total = 0.0
    for group in opt.param_groups:
        lr, name = group["lr"], type(opt).__name__
        for p in group["params"]:
            st = opt.state[p]
            t = float(st["step"])
            if name == "Adagrad":
                clr = lr / (1 + (t - 1) * group["lr_decay"])
                metric = st["sum"].sqrt() + group["eps"]
                # the gradient the step used: recovered from the update (theta_j is not kept)
                total += float(0.5 * clr * (_GRADS[id(p)] ** 2 / metric).sum())
                continue
            b1, b2 = group["betas"]
            m = st["exp_avg"]
            bc1 = 1 - b1**t
            if name == "Adamax":
                c2, metric = lr / ((1 - b1) * bc1), st["exp_inf"]
            elif name == "RAdam":
                rect = rectification(t, b2)
                c2 = lr * (rect or 1.0) / ((1 - b1) * bc1)
                metric = (st["exp_avg_sq"].sqrt() + group["eps"]) / math.sqrt(1 - b2**t) if rect else 1.0
            else:  # NAdam
                mu_n = nadam_mu(t + 1, b1, group["momentum_decay"])
                c2 = lr * mu_n / (1 - float(st["mu_product"]) * mu_n) / (1 - b1)
                metric = (st["exp_avg_sq"] / (1 - b2**t)).sqrt() + group["eps"]
            total += float(0.5 * c2 * (m * m / metric).sum())
    return total


_GRADS: dict[int, Any] = {}


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_ledger_closes_and_kinetic_is_the_states(name: str, options: dict[str, Any]) -> None:
    problem = QuadraticProblem(sizes=(3, 4, 2), seed=5, sign=-1.0 if options.get("maximize") else 1.0)
    params = problem.make_params()
    opt = getattr(torch.optim, name)(params, **options)
    tracker = InertiaTracker(opt)
    assert tracker.fresh  # Adagrad creates its state in its constructor: still fresh
    kinetic = []
    for _ in range(40):
        opt.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        sign = -1.0 if options.get("maximize") else 1.0
        wd = options.get("weight_decay", 0.0)
        for p in params:  # the gradient Adagrad's step uses (coupled weight decay included)
            _GRADS[id(p)] = sign * p.grad + wd * p.detach()
        opt.step()
        tracker.record(loss)
        kinetic.append(_kinetic(opt))
    df = tracker.history
    assert df["finite"].all() and worst_residual(tracker.rows) < 1e-10, worst_residual(tracker.rows)
    if name == "Adagrad":  # no momentum: at rest at every recorded step, I = V (adagrad.py)
        assert (df["kinetic"] == 0.0).all() and (df["inertia"] == df["potential"]).all()
        np.testing.assert_allclose(df["friction"].iloc[1:], -np.array(kinetic[:-1]), rtol=1e-12)
        np.testing.assert_allclose(df["numerical"].iloc[1:], -np.array(kinetic[:-1]), rtol=1e-12)
    else:
        np.testing.assert_allclose(df["kinetic"].iloc[1:], kinetic[:-1], rtol=1e-12, atol=1e-300)
    assert df.loc[0, "kinetic"] == 0.0 and (df["friction"].iloc[1:] <= 0).all()
    assert df["delta_inertia"].iloc[1:].abs().max() > 1e-6  # the run moved


def test_radam_switches_its_metric_on_and_the_ledger_books_it() -> None:
    problem = QuadraticProblem(sizes=(3, 2), seed=1)
    params = problem.make_params()
    opt = torch.optim.RAdam(params, lr=0.02)
    tracker, _ = train(params, lambda: problem.loss(params), opt, 12)
    assert rectification(5, 0.999) == 0.0 and rectification(6, 0.999) > 0  # switch at t = 6
    df = tracker.history
    assert df.loc[6, "metric"] != 0.0 and worst_residual(tracker.rows) < 1e-10


class _KeepsStep(torch.optim.NAdam):
    """A subclass that only adds a convenience: it runs NAdam's step."""

    def describe(self) -> str:
        return "mine"


class _OverridesStep(torch.optim.Adam):
    def step(self, closure: Any = None) -> Any:
        return super().step(closure)


def test_subclasses_keeping_step_are_accepted_and_others_told_how_to_register() -> None:
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    assert InertiaTracker(_KeepsStep([w], lr=0.1)).mapping is MAPPINGS[torch.optim.NAdam]
    with pytest.raises(
        TypeError, match=r"_OverridesStep overrides the step of Adam.*register_mapping\(_OverridesStep"
    ):
        InertiaTracker(_OverridesStep([w], lr=0.1))
    register_mapping(_OverridesStep, AdamMapping())
    try:
        assert isinstance(InertiaTracker(_OverridesStep([w], lr=0.1)).mapping, AdamMapping)
    finally:
        del MAPPINGS[_OverridesStep]
    with pytest.raises(
        TypeError, match=r"no mapping for LBFGS: its step runs a line search.*register_mapping\(LBFGS"
    ):
        InertiaTracker(torch.optim.LBFGS([w]))
    with pytest.raises(TypeError, match=r"no mapping for SparseAdam: no mapping derives.*Supported: .*NAdam"):
        InertiaTracker(torch.optim.SparseAdam([w]))
