"""Bad input, non-finite values and lifecycle of the tracker (TESTING.md items 14 and 15).

* NaN/Inf in a loss or in the optimizer state is recorded as NaN/Inf (never 0) with
  ``finite = False``; ``nan_policy``: ``"raise"`` raises :class:`inertia.track.NonFiniteError`
  naming the step *after* appending the row, ``"flag"`` goes on, ``"stop"`` sets ``stopped`` and
  ignores later calls.
* Every validation rule raises with the argument's name; unsupported optimizers raise a
  ``TypeError`` that lists the supported ones and shows ``register_mapping``.
* Call-order mistakes: ``record`` without a step warns, two steps without a ``record`` raise.
* Attached mid-training: ``K_0`` is unknown (NaN), the ledger is closed from row 2 on.
* ``close`` removes the optimizer hook.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from track_helpers import F64, QuadraticProblem, train, worst_residual

torch = pytest.importorskip("torch")

from inertia.track import MAPPINGS, InertiaTracker, NonFiniteError, SGDMapping, register_mapping  # noqa: E402


def quadratic_setup(opt_cls: Any = torch.optim.SGD, **kwargs: Any) -> tuple[Any, Any, Any]:
    problem = QuadraticProblem()
    params = problem.make_params()
    opt = opt_cls(params, **({"lr": 0.1, "momentum": 0.9} if not kwargs else kwargs))
    return problem, params, opt


def step(problem: Any, params: Any, opt: Any, grad_poison: float | None = None) -> Any:
    opt.zero_grad()
    loss = problem.loss(params)
    loss.backward()
    if grad_poison is not None:
        params[0].grad[0] = grad_poison
    opt.step()
    return loss


# --------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_loss_is_recorded_not_zeroed(bad: float) -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, nan_policy="flag")
    for k in range(5):
        loss = step(problem, params, opt)
        tracker.record(torch.tensor(bad, dtype=F64) if k == 3 else loss)
    rows = tracker.rows
    bad_row = rows[3]
    assert not bad_row["finite"]
    for col in ("potential", "inertia", "delta_inertia", "curvature", "residual"):
        value = bad_row[col]
        assert not math.isfinite(value), col  # never rendered as 0 (or any finite number)
    if math.isnan(bad):
        assert math.isnan(bad_row["potential"])
    else:
        assert bad_row["potential"] == bad
    # row 4 uses the bad loss as V(theta_3): its change and curvature are not finite either
    assert not rows[4]["finite"]
    assert not math.isfinite(rows[4]["delta_inertia"]) and not math.isfinite(rows[4]["curvature"])
    assert math.isfinite(rows[4]["kinetic"]) and math.isfinite(rows[4]["potential"])
    assert all(r["finite"] for r in rows[:3])


def test_nonfinite_state_is_recorded() -> None:
    """A NaN gradient at step 2 poisons the buffer and theta_3: row 3 is the first bad row."""
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, nan_policy="flag")
    for k in range(5):
        loss = step(problem, params, opt, grad_poison=math.nan if k == 2 else None)
        tracker.record(loss)
    rows = tracker.rows
    assert [r["finite"] for r in rows] == [True, True, True, False, False]
    assert math.isnan(rows[3]["kinetic"]) and math.isnan(rows[3]["numerical"])
    assert math.isnan(rows[3]["residual"])


def test_inf_gradient_gives_inf_or_nan_kinetic() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, nan_policy="flag")
    for k in range(3):
        tracker.record(step(problem, params, opt, grad_poison=math.inf if k == 1 else None))
    row = tracker.rows[2]
    assert not row["finite"]
    assert row["kinetic"] == math.inf and row["numerical"] == -math.inf


def test_policy_raise_names_step_after_appending_row() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt)  # nan_policy="raise" is the default
    for _ in range(3):
        tracker.record(step(problem, params, opt))
    loss = step(problem, params, opt)
    with pytest.raises(NonFiniteError, match=r"step 3\b"):
        tracker.record(loss * math.nan)
    assert issubclass(NonFiniteError, FloatingPointError)
    assert len(tracker.rows) == 4 and tracker.rows[-1]["step"] == 3
    assert not tracker.rows[-1]["finite"] and math.isnan(tracker.rows[-1]["potential"])


def test_policy_raise_on_state_names_first_bad_step() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, nan_policy="raise")
    tracker.record(step(problem, params, opt))
    tracker.record(step(problem, params, opt, grad_poison=math.nan))  # row 1: theta_1 still fine
    with pytest.raises(NonFiniteError, match=r"step 2\b"):
        tracker.record(step(problem, params, opt))
    assert tracker.rows[-1]["step"] == 2


def test_policy_flag_goes_on() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, nan_policy="flag")
    for k in range(6):
        loss = step(problem, params, opt)
        tracker.record(loss * math.nan if k == 2 else loss)
    assert len(tracker.rows) == 6 and not tracker.stopped
    assert [r["finite"] for r in tracker.rows] == [True, True, False, False, True, True]
    assert worst_residual(tracker.rows, start=4) <= 1e-12


def test_policy_stop_ignores_later_records() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, nan_policy="stop")
    for k in range(3):
        loss = step(problem, params, opt)
        tracker.record(loss * math.inf if k == 2 else loss)
    assert tracker.stopped
    assert len(tracker.rows) == 3 and not tracker.rows[-1]["finite"]
    for _ in range(3):  # later steps: no error (even without records), nothing recorded
        step(problem, params, opt)
    assert tracker.record(step(problem, params, opt)) is None
    assert len(tracker.rows) == 3


def test_default_policy_does_not_fire_on_finite_training() -> None:
    problem, params, opt = quadratic_setup(torch.optim.Adam, lr=0.05)
    tracker, _ = train(params, lambda: problem.loss(params), opt, 10)
    assert all(r["finite"] for r in tracker.rows)


# --------------------------------------------------------------------------- validation


class MySGD(torch.optim.SGD):
    def step(self, closure: Any = None) -> Any:  # overrides step: must be registered (issue 9)
        return super().step(closure)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.LBFGS(ps, lr=0.1),
        lambda ps: torch.optim.SparseAdam(ps, lr=0.1),
        lambda ps: MySGD(ps, lr=0.1, momentum=0.9),
    ],
    ids=["LBFGS", "SparseAdam", "subclass-of-SGD-overriding-step"],
)
def test_unsupported_optimizer_raises_typeerror(make: Any) -> None:
    _, params, _ = quadratic_setup()
    opt = make(params)
    with pytest.raises(TypeError, match="register_mapping") as info:
        InertiaTracker(opt)
    msg = str(info.value)
    assert type(opt).__qualname__ in msg
    for name in ("torch.optim.sgd.SGD", "torch.optim.adam.Adam", "torch.optim.adamw.AdamW", "RMSprop"):
        assert name in msg


def test_registered_subclass_is_accepted() -> None:
    _, params, _ = quadratic_setup()
    opt = MySGD(params, lr=0.1, momentum=0.9)
    register_mapping(MySGD, SGDMapping())
    try:
        assert isinstance(InertiaTracker(opt).mapping, SGDMapping)
    finally:
        MAPPINGS.pop(MySGD, None)


def test_not_an_optimizer_raises_typeerror() -> None:
    with pytest.raises(TypeError, match="`optimizer`"):
        InertiaTracker(object())


def test_register_mapping_validates() -> None:
    with pytest.raises(TypeError, match="`optimizer_type`"):
        register_mapping(torch.optim.SGD(QuadraticProblem().make_params(), lr=0.1), SGDMapping())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`mapping`"):
        register_mapping(MySGD, object())  # type: ignore[arg-type]
    assert MySGD not in MAPPINGS


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"mode": "fast"}, "mode"),
        ({"mode": "EXACT"}, "mode"),
        ({"nan_policy": "ignore"}, "nan_policy"),
        ({"every": 0}, "every"),
        ({"every": -2}, "every"),
        ({"every": 1.5}, "every"),
        ({"every": True}, "every"),
        ({"layout": "ddp"}, "layout"),
    ],
)
def test_bad_arguments_raise_valueerror_naming_them(kwargs: dict[str, Any], name: str) -> None:
    _, _, opt = quadratic_setup()
    with pytest.raises(ValueError, match=f"`{name}`") as info:
        InertiaTracker(opt, **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)  # says what it received


def test_mixed_maximize_groups_raise() -> None:
    params = QuadraticProblem().make_params()
    opt = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "maximize": True}], lr=0.1)
    with pytest.raises(ValueError, match="maximize"):
        InertiaTracker(opt)


def test_exact_mode_without_closure_raises() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt, mode="exact")
    with pytest.raises(ValueError, match="`closure`"):
        tracker.record(step(problem, params, opt))


def test_non_scalar_loss_raises() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt)
    step(problem, params, opt)
    with pytest.raises(ValueError, match="`loss`"):
        tracker.record(torch.ones(2, dtype=F64))
    with pytest.raises(TypeError, match="`loss`"):
        tracker.record("0.5")


def test_record_without_step_warns_and_records_nothing() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt)
    tracker.record(step(problem, params, opt))
    with pytest.warns(RuntimeWarning, match="without an optimizer.step"):
        assert tracker.record(problem.loss(params)) is None
    assert len(tracker.rows) == 1
    tracker.record(step(problem, params, opt))  # and the pairing is intact afterwards
    assert [r["step"] for r in tracker.rows] == [0, 1]
    assert worst_residual(tracker.rows) <= 1e-12


def test_two_steps_without_record_raise() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt)
    step(problem, params, opt)
    loss = step(problem, params, opt)
    with pytest.raises(RuntimeError, match=r"once after every optimizer.step\(\)"):
        tracker.record(loss)


# --------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize(
    ("opt_cls", "kwargs"),
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}),
        (torch.optim.Adam, {"lr": 0.05}),
        (torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
        (torch.optim.RMSprop, {"lr": 0.01}),
        (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.8}),
    ],
    ids=["sgd", "sgd-dampening-wd", "adam", "adamw", "rmsprop", "rmsprop-momentum"],
)
@pytest.mark.parametrize("every", [1, 2])
def test_attached_mid_training(opt_cls: Any, kwargs: dict[str, Any], every: int) -> None:
    problem, params, opt = quadratic_setup(opt_cls, **kwargs)
    for _ in range(5):  # training before the tracker exists: the optimizer has state
        step(problem, params, opt)
    assert len(opt.state) > 0
    tracker, _ = train(params, lambda: problem.loss(params), opt, 9, tracker_kwargs={"every": every})
    rows = tracker.rows
    assert math.isnan(rows[0]["kinetic"]) and math.isnan(rows[0]["inertia"])
    assert math.isfinite(rows[0]["potential"])
    assert all(r["finite"] for r in rows)  # unknown K_0 is not a non-finite training state
    if every == 1:
        # row 1: K_1 is known, but the change from the unknown I_0 is not
        assert math.isfinite(rows[1]["kinetic"])
        assert math.isnan(rows[1]["delta_inertia"]) and math.isnan(rows[1]["residual"])
        assert any(math.isnan(rows[1][t]) for t in ("schedule", "metric", "friction"))  # need K_0
    # from row 2 on (every = 2: the row at step 2) the ledger is closed
    ledger_rows = [i for i, r in enumerate(rows) if r["step"] >= 2]
    assert worst_residual(rows, start=ledger_rows[0]) <= 1e-12


def test_mid_training_sgd_without_momentum_k0_unknown() -> None:
    # plain SGD keeps no state, so an attach mid-run cannot be detected: say fresh=False
    problem, params, opt = quadratic_setup(torch.optim.SGD, lr=0.1)
    for _ in range(3):
        step(problem, params, opt)
    tracker = InertiaTracker(opt, fresh=False)
    for _ in range(3):
        tracker.record(step(problem, params, opt))
    assert math.isnan(tracker.rows[0]["kinetic"]) and math.isnan(tracker.rows[1]["delta_inertia"])
    assert math.isfinite(tracker.rows[2]["residual"]) and abs(tracker.rows[2]["residual"]) < 1e-12


def test_fresh_must_be_a_bool_or_none() -> None:
    _, _, opt = quadratic_setup()
    with pytest.raises(TypeError, match="`fresh`"):
        InertiaTracker(opt, fresh="yes")  # type: ignore[arg-type]


def test_close_removes_the_hook() -> None:
    problem, params, opt = quadratic_setup()
    tracker = InertiaTracker(opt)
    tracker.record(step(problem, params, opt))
    n_steps = tracker._n_steps
    tracker.close()
    for _ in range(3):  # would raise "once after every step" on the next record if still hooked
        step(problem, params, opt)
    assert tracker._n_steps == n_steps
    assert not opt._optimizer_step_post_hooks and not opt._optimizer_step_pre_hooks


def test_context_manager_closes() -> None:
    problem, params, opt = quadratic_setup()
    with InertiaTracker(opt) as tracker:
        tracker.record(step(problem, params, opt))
    assert not opt._optimizer_step_post_hooks and not opt._optimizer_step_pre_hooks
    assert len(tracker.rows) == 1


def test_history_columns_and_rows_agree() -> None:
    from inertia.track import COLUMNS

    problem, params, opt = quadratic_setup()
    tracker, _ = train(params, lambda: problem.loss(params), opt, 4)
    hist = tracker.history
    assert list(hist.columns) == list(COLUMNS)
    np.testing.assert_array_equal(hist["kinetic"].to_numpy(), [r["kinetic"] for r in tracker.rows])
    assert hist["finite"].dtype == bool
