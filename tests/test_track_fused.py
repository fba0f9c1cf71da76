"""``InertiaTracker(..., fused=True)``: each slice's formulas and sums in one compiled function.

The fused path must give the eager path's rows to rounding for every mapping (float64 quadratics
with a schedule, several groups), keep the ledger closed, compile once per formula rather than
once per learning rate, and fall back to the eager sums with a warning where it cannot compile.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

from track_helpers import QuadraticProblem, train, worst_residual

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker  # noqa: E402
from inertia.track import reduce as reduce_mod  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes on the CPU backend

#: one configuration per mapping and formula (each is a separate compiled function)
CONFIGS: dict[str, tuple[Any, dict[str, Any]]] = {
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "sgd-nesterov-wd": (
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
    ),
    "adam": (torch.optim.Adam, {"lr": 0.05, "betas": (0.8, 0.6)}),
    "adamw-amsgrad": (torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True}),
    "rmsprop-centered-momentum": (torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.8}),
    "nadam": (torch.optim.NAdam, {"lr": 0.02}),
    "radam": (torch.optim.RAdam, {"lr": 0.02, "weight_decay": 0.05}),
    "adamax": (torch.optim.Adamax, {"lr": 0.02}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.1}),
}
COLUMNS = ("kinetic", "potential", "friction", "numerical", "curvature", "schedule", "metric", "decay")
N_STEPS = 12


def run(cls: Any, kwargs: dict[str, Any], fused: bool) -> list[dict[str, Any]]:
    problem = QuadraticProblem()
    params = problem.make_params()
    groups = [{"params": [p], "lr": kwargs["lr"] * (1.0 + 0.5 * i)} for i, p in enumerate(params)]
    opt = cls(groups, **kwargs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=N_STEPS)
    tracker, _ = train(
        params, lambda: problem.loss(params), opt, N_STEPS, scheduler=sched, tracker_kwargs={"fused": fused}
    )
    return tracker.rows


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_rows_equal_the_eager_rows(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls, kwargs = CONFIGS[name]
    compiled, calls = reduce_mod._fused_sums(), []

    def spy(*args: Any) -> Any:
        calls.append(args[0].__qualname__)
        return compiled(*args)

    monkeypatch.setattr(reduce_mod, "_FUSED_FN", [spy])
    eager = run(cls, kwargs, False)
    assert not calls
    fused = run(cls, kwargs, True)
    assert len(calls) >= N_STEPS  # every step's sums went through the compiled function
    assert worst_residual(fused) < 1e-12
    for a, b in zip(eager, fused, strict=True):
        scale = max(abs(a[c]) for c in COLUMNS if math.isfinite(a[c]))
        for c in COLUMNS:
            # the same float64 values, summed in another order
            assert b[c] == pytest.approx(a[c], rel=1e-10, abs=1e-13 * scale, nan_ok=True), (
                name,
                a["step"],
                c,
            )


def test_float32_mlp_adamw_and_no_recompile_per_learning_rate() -> None:
    """float32 AdamW on an MLP with a learning rate that changes every step: the fused rows
    equal the eager rows to float32 rounding, and after the first steps no new graph is
    compiled (the learning rate and the bias corrections are symbolic)."""
    from torch._dynamo.utils import counters

    def rows(fused: bool) -> list[dict[str, Any]]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))
        x, y = torch.randn(32, 20), torch.randint(0, 3, (32,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1.0 + 0.1 * k))
        tracker = InertiaTracker(opt, fused=fused)
        graphs = []
        for _ in range(25):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            tracker.record(loss)
            sched.step()
            graphs.append(counters["stats"]["unique_graphs"])
        if fused:
            assert graphs[-1] == graphs[4], graphs  # nothing compiled after step 4
        return tracker.rows

    eager, fused = rows(False), rows(True)
    for a, b in zip(eager[1:], fused[1:], strict=True):
        scale = max(abs(a[c]) for c in COLUMNS)
        for c in COLUMNS:
            assert b[c] == pytest.approx(a[c], rel=1e-4, abs=1e-6 * scale), (a["step"], c)


def test_a_backend_that_cannot_compile_falls_back_to_the_eager_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(reduce_mod, "_FUSED_FN", [broken])
    cls, kwargs = CONFIGS["adam"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = run(cls, kwargs, True)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert messages == [
        "fused sums are not available here (RuntimeError: no compiler here); using the eager sums"
    ]
    assert reduce_mod._FUSED_FN == [None]
    eager = run(cls, kwargs, False)
    np.testing.assert_array_equal([r["kinetic"] for r in fused], [r["kinetic"] for r in eager])


def test_fused_must_be_a_bool() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(TypeError, match=r"`fused` must be True or False, got 'yes'"):
        InertiaTracker(opt, fused="yes")  # type: ignore[arg-type]
