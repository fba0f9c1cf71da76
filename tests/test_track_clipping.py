"""The ledger's ``clipping`` column (issue 9, item 1; :mod:`inertia.track.clipping`).

``clipping = <G_raw - G_applied, theta_{k} - theta_{k-1}>`` books a change of ``.grad`` between
backward and step, so that ``curvature`` is the Bregman remainder of the loss. Proven here:

* on a convex float64 full-batch logistic regression clipped with ``clip_grad_norm_(0.05)``
  (SGD with momentum, Adam) ``curvature >= 0`` to rounding at every step and ``clipping`` is
  nonzero; the power control (``raw_grad=False``, the ledger before this column) books a
  negative ``curvature`` in most steps;
* on a float64 quadratic, ``curvature`` is ``1/2 dtheta^T A dtheta`` exactly and the residual
  stays at rounding;
* ``clipping`` equals ``<G_raw - G_applied, dtheta>`` computed here from copies of the
  gradients and parameters, for several optimizers (weight decay, ``maximize``), gradient
  accumulation, a ``GradScaler``, a user's ``p.grad.mul_``, a step pre-hook that scales,
  ``optimizer.step(closure)``, groups added mid-run and frozen parameters;
* ``raw_grad="auto"`` does no device work while nothing changes ``.grad`` (ATen operations
  counted), and at the first change books NaN, warns naming the step and is exact afterwards;
* the hooks go at ``close()``. DDP: ``tests/test_track_distributed.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker  # noqa: E402

F64 = torch.float64


def breast_cancer() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return torch.tensor(x, dtype=F64), torch.tensor(y, dtype=F64)


def logistic() -> tuple[list[Any], Callable[[], Any]]:
    """Parameters (zeros) and the full-batch loss of a standardised logistic regression."""
    x, y = breast_cancer()
    w = torch.nn.Parameter(torch.zeros(x.shape[1], dtype=F64))
    b = torch.nn.Parameter(torch.zeros(1, dtype=F64))

    def loss() -> Any:
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)

    return [w, b], loss


def quadratic(seed: int = 0, d: int = 6) -> tuple[list[Any], Callable[[], Any], Any]:
    """``theta`` (two tensors) and ``L = 1/2 theta^T A theta - c^T theta`` with ``A`` SPD."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(d, d, generator=gen, dtype=F64)
    a = q @ q.T / d + 0.5 * torch.eye(d, dtype=F64)
    c = torch.randn(d, generator=gen, dtype=F64)
    w = torch.nn.Parameter(torch.randn(d - 2, generator=gen, dtype=F64))
    b = torch.nn.Parameter(torch.randn(2, generator=gen, dtype=F64))

    def loss() -> Any:
        theta = torch.cat([w, b])
        return 0.5 * theta @ a @ theta - c @ theta

    return [w, b], loss, a


def flat(ts: list[Any]) -> Any:
    return torch.cat([t.detach().reshape(-1) for t in ts])


def train(
    params: list[Any],
    loss_fn: Callable[[], Any],
    opt: Any,
    n_steps: int,
    change: Callable[[int], None] | None = None,
    *,
    sign: float = 1.0,
    **tracker_kwargs: Any,
) -> tuple[Any, list[float], list[Any]]:
    """Train with ``change(step)`` between backward and step; return the history, the clipping
    ``sign * <raw - applied, dtheta>`` computed from copies, and each step's ``dtheta``."""
    tracker = InertiaTracker(opt, **tracker_kwargs)
    expected, steps = [], []
    for k in range(n_steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        raw = flat([p.grad for p in params])
        if change is not None:
            change(k)
        applied = flat([p.grad for p in params])
        before = flat(params)
        opt.step()
        tracker.record(loss)
        steps.append(flat(params) - before)
        expected.append(sign * float((raw - applied) @ steps[-1]))
    tracker.close()
    return tracker.history, expected, steps


def clip_to(max_norm: float, params: list[Any]) -> Callable[[int], None]:
    return lambda _: torch.nn.utils.clip_grad_norm_(params, max_norm)


def scale_of(h: Any) -> float:
    """The size of the energies that flowed (for rounding tolerances)."""
    cols = ["kinetic", "potential", "friction", "numerical", "curvature", "clipping", "metric", "schedule"]
    return float(np.nanmax(np.abs(h[cols].to_numpy(float))))


# ------------------------------------------------------------------ the convex test


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("sgd-momentum", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
        ("adam", lambda ps: torch.optim.Adam(ps, lr=0.005)),
    ],
)
def test_clipped_convex_loss_has_nonnegative_curvature(name: str, make: Any) -> None:
    params, loss = logistic()
    h, expected, _ = train(params, loss, make(params), 60, clip_to(0.05, params), raw_grad=True)
    rows = h.iloc[1:]
    scale = scale_of(h)
    assert (rows["curvature"] >= -1e-12 * scale).all(), rows["curvature"].min()
    assert (rows["clipping"] != 0).mean() > 0.5  # the clipping acted and is booked
    np.testing.assert_allclose(rows["clipping"], expected[:-1], rtol=1e-12, atol=1e-15 * scale)
    assert rows["residual"].abs().max() < 1e-14 * scale

    # power control: the ledger without the column books the clipping work in curvature
    params, loss = logistic()
    old, _, _ = train(params, loss, make(params), 60, clip_to(0.05, params), raw_grad=False)
    assert (old["clipping"].iloc[1:] == 0).all()
    assert (old["curvature"].iloc[1:] < 0).mean() > 0.5
    # curvature + clipping is what the old ledger called curvature; the residual is unchanged
    np.testing.assert_allclose(
        old["curvature"].iloc[1:], rows["curvature"] + rows["clipping"], rtol=1e-9, atol=1e-14 * scale
    )
    np.testing.assert_allclose(old["residual"], h["residual"], rtol=0, atol=1e-15 * scale)


# ------------------------------------------------------------------ exact values


OPTIMIZERS = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "sgd-nesterov-wd-foreach": lambda ps: torch.optim.SGD(
        ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1, foreach=True
    ),
    "sgd-maximize": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, maximize=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.02),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.02, weight_decay=0.1),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5),
    "nadam": lambda ps: torch.optim.NAdam(ps, lr=0.02),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_quadratic_curvature_is_the_bregman_remainder(name: str) -> None:
    """On a quadratic ``B = 1/2 dtheta^T A dtheta`` exactly: the clipped run's curvature is it,
    its clipping is the independent inner product, and the ledger closes to rounding."""
    params, loss, a = quadratic()
    maximize = name == "sgd-maximize"
    fn = (lambda: -loss()) if maximize else loss  # ascend -L: the same descent on L
    h, expected, steps = train(
        params,
        fn,
        OPTIMIZERS[name](params),
        12,
        clip_to(0.3, params),
        sign=-1.0 if maximize else 1.0,
        raw_grad=True,
    )
    rows = h.iloc[1:]
    scale = scale_of(h)
    # V = L + wd/2 ||theta||^2 (coupled and decoupled alike): B = 1/2 s^T (A + wd) s
    wd = OPTIMIZERS[name](params).param_groups[0]["weight_decay"]
    bregman = [0.5 * float(s @ a @ s) + 0.5 * wd * float(s @ s) for s in steps[:-1]]
    np.testing.assert_allclose(rows["curvature"], bregman, rtol=1e-10, atol=1e-14 * scale)
    np.testing.assert_allclose(rows["clipping"], expected[:-1], rtol=1e-12, atol=1e-16 * scale)
    assert (rows["clipping"] != 0).any()
    assert rows["residual"].abs().max() < 1e-14 * scale


def test_other_changes_of_grad_land_in_clipping() -> None:
    """A user's ``p.grad.mul_(0.5)`` after backward and a step pre-hook that scales (registered
    after the tracker: from the step after it, the tracker's hook runs after it)."""
    params, loss, _ = quadratic(1)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)

    def halve(k: int) -> None:
        if k % 2:
            for p in params:
                p.grad.mul_(0.5)

    h, expected, _ = train(params, loss, opt, 10, halve, raw_grad=True)
    np.testing.assert_allclose(h["clipping"].iloc[1:], expected[:-1], rtol=1e-12, atol=1e-18)
    assert (h["clipping"].iloc[2::2] != 0).all() and (h["clipping"].iloc[1::2] == 0).all()

    params, loss, _ = quadratic(1)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    tracker = InertiaTracker(opt, raw_grad=True)

    def scale_grads(optimizer: Any, args: Any, kwargs: Any) -> None:
        for p in params:
            p.grad.mul_(0.25)

    opt.register_step_pre_hook(scale_grads)
    expected = []
    for _ in range(6):
        opt.zero_grad()
        value = loss()
        value.backward()
        raw, before = flat([p.grad for p in params]), flat(params)
        opt.step()
        tracker.record(value)
        expected.append(float(0.75 * raw @ (flat(params) - before)))
    got = tracker.history["clipping"].to_numpy()
    np.testing.assert_allclose(got[2:], expected[1:-1], rtol=1e-12)


def test_accumulation_and_closure() -> None:
    """Several backwards per step: the raw gradient is ``.grad`` after the last one. With
    ``optimizer.step(closure)`` (Lightning) the backward and the clipping run inside the step."""
    params, loss, _ = quadratic(2)
    opt = torch.optim.Adam(params, lr=0.05)
    tracker = InertiaTracker(opt, raw_grad=True)
    expected = []
    for _ in range(6):
        opt.zero_grad()
        for part in (0.25, 0.75):
            (part * loss()).backward()
        raw = flat([p.grad for p in params])
        torch.nn.utils.clip_grad_norm_(params, 0.2)
        applied, before = flat([p.grad for p in params]), flat(params)
        opt.step()
        tracker.record(loss().detach())
        expected.append(float((raw - applied) @ (flat(params) - before)))
    tracker.close()
    np.testing.assert_allclose(tracker.history["clipping"].iloc[1:], expected[:-1], rtol=1e-12)

    params, loss, _ = quadratic(2)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    tracker = InertiaTracker(opt, raw_grad=True)
    seen: list[tuple[Any, Any]] = []

    def closure() -> Any:
        opt.zero_grad()
        value = loss()
        value.backward()
        raw = flat([p.grad for p in params])
        torch.nn.utils.clip_grad_norm_(params, 0.2)
        seen.append((raw - flat([p.grad for p in params]), flat(params)))
        return value

    expected = []
    for _ in range(6):
        value = opt.step(closure)
        tracker.record(value)
        d, before = seen[-1]
        expected.append(float(d @ (flat(params) - before)))
    np.testing.assert_allclose(tracker.history["clipping"].iloc[1:], expected[:-1], rtol=1e-12)
    assert (tracker.history["clipping"].iloc[1:] != 0).all()


# ------------------------------------------------------------------ GradScaler


def test_grad_scaler() -> None:
    """``torch.amp.GradScaler("cpu")``: unscaling is no clipping (the column is 0 and the rows
    are those of the same run without a scaler); clipping after ``scaler.unscale_`` is; a step the
    scaler skips stays ``skipped``."""

    def run(scaled: bool, clip: float | None, poison: int | None = None) -> tuple[Any, list[float]]:
        params, loss, _ = quadratic(3)
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaled else None
        tracker = InertiaTracker(opt, grad_scaler=scaler)
        expected = []
        for k in range(8):
            opt.zero_grad()
            value = loss()
            (scaler.scale(value) if scaler else value).backward()
            if k == poison:
                params[0].grad[0] = math.inf
            raw = flat([p.grad for p in params]) / (scaler.get_scale() if scaler else 1.0)
            if scaler:
                scaler.unscale_(opt)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            applied, before = flat([p.grad for p in params]), flat(params)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            tracker.record(value)
            if k != poison:
                expected.append(float((raw - applied) @ (flat(params) - before)))
        tracker.close()
        return tracker.history, expected

    plain, _ = run(False, None)
    scaled, _ = run(True, None)
    assert (scaled["clipping"].iloc[1:] == 0).all()
    cols = ["kinetic", "potential", "curvature", "clipping", "friction", "numerical", "residual"]
    np.testing.assert_allclose(
        scaled[cols].to_numpy(float), plain[cols].to_numpy(float), rtol=1e-12, atol=1e-16
    )

    clipped, expected = run(True, 0.3)
    np.testing.assert_allclose(clipped["clipping"].iloc[1:], expected[:-1], rtol=1e-12)
    assert (clipped["clipping"].iloc[1:] != 0).all()

    with pytest.warns(RuntimeWarning, match="without an optimizer.step"):
        skipped, expected = run(True, 0.3, poison=3)
    assert list(skipped["skipped"]) == [0, 0, 0, 1, 0, 0, 0]
    np.testing.assert_allclose(skipped["clipping"].iloc[1:], expected[:-1], rtol=1e-12)
    assert skipped["residual"].iloc[1:].abs().max() < 1e-14 * scale_of(skipped)


# ------------------------------------------------------------------ auto mode, cost


def test_auto_mode_first_change() -> None:
    """``raw_grad="auto"``: NaN at the first change with a warning naming the step, exact
    afterwards (the rows of a ``raw_grad=True`` run); the residual is never NaN."""
    params, loss, _ = quadratic(4)
    clip = clip_to(0.3, params)
    match = r"optimizer step 0 .* row 1's `clipping` and `curvature` are NaN.*raw_grad=True"
    with pytest.warns(RuntimeWarning, match=match):
        auto, _, _ = train(params, loss, torch.optim.SGD(params, lr=0.05, momentum=0.9), 8, clip)
    params, loss, _ = quadratic(4)
    clip = clip_to(0.3, params)
    full, _, _ = train(params, loss, torch.optim.SGD(params, lr=0.05, momentum=0.9), 8, clip, raw_grad=True)
    assert math.isnan(auto["clipping"].iloc[1]) and math.isnan(auto["curvature"].iloc[1])
    assert math.isfinite(auto["residual"].iloc[1]) and auto["finite"].all()
    np.testing.assert_array_equal(auto.iloc[2:].to_numpy(float), full.iloc[2:].to_numpy(float))


class OpCounter:
    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                counter.n += 1
                return func(*args, **(kwargs or {}))

        self.n = 0
        self.mode = Mode()


def test_auto_mode_costs_nothing_while_grad_is_untouched() -> None:
    """The same ATen operations for backward + step + record with ``"auto"`` as with
    ``False`` (no hooks), no buffers, and a clipping column of exact zeros."""
    counts = {}
    for raw_grad in ("auto", False, "auto"):  # the first run also builds cached index tensors
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        tracker = InertiaTracker(opt, raw_grad=raw_grad)
        x = torch.randn(32, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
        ops = []
        for _ in range(4):
            counter = OpCounter()
            with counter.mode:
                opt.zero_grad()
                loss = net(x).pow(2).mean()
                loss.backward()
                opt.step()
                tracker.record(loss)
            ops.append(counter.n)
        assert (tracker.history["clipping"].iloc[1:] == 0).all()
        assert not tracker._clipping._raw and not tracker._clipping._theta
        counts[raw_grad] = ops
        tracker.close()
    assert counts["auto"] == counts[False]


def test_hooks_removed_at_close_and_groups_added_mid_run() -> None:
    params, loss, _ = quadratic(5)
    first, second = params
    second.requires_grad_(False)  # frozen: no gradient, no hook
    opt = torch.optim.SGD([first], lr=0.05, momentum=0.9)
    tracker = InertiaTracker(opt, raw_grad=True)
    assert len(first._post_accumulate_grad_hooks) == 1
    expected = []
    for k in range(8):
        if k == 3:  # unfrozen, in a new group
            second.requires_grad_(True)
            opt.add_param_group({"params": [second], "lr": 0.02, "momentum": 0.5})
        opt.zero_grad()
        value = loss()
        value.backward()
        live = [p for p in params if p.grad is not None]
        raw = flat([p.grad for p in live])
        torch.nn.utils.clip_grad_norm_(live, 0.2)
        applied, before = flat([p.grad for p in live]), flat(live)
        opt.step()
        tracker.record(value)
        expected.append(float((raw - applied) @ (flat(live) - before)))
    assert len(second._post_accumulate_grad_hooks) == 1
    h = tracker.history
    np.testing.assert_allclose(h["clipping"].iloc[1:], expected[:-1], rtol=1e-12)
    assert h["residual"].iloc[1:].abs().max() < 1e-14 * scale_of(h)
    tracker.close()
    assert not first._post_accumulate_grad_hooks and not second._post_accumulate_grad_hooks


def test_bad_arguments() -> None:
    params, _, _ = quadratic()
    opt = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(ValueError, match=r"`raw_grad` must be 'auto', True or False, got 'yes'"):
        InertiaTracker(opt, raw_grad="yes")
    with pytest.raises(ValueError, match=r"`raw_grad` must be 'auto', True or False, got 1"):
        InertiaTracker(opt, raw_grad=1)
    with pytest.raises(TypeError, match=r"`grad_scaler` must be a torch.amp.GradScaler or None, got object"):
        InertiaTracker(opt, grad_scaler=object())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        InertiaTracker(opt, raw_grad=False).close()


@pytest.mark.parametrize("raw_grad", [True, "auto"])
def test_every_k_watches_only_the_backward_passes_it_sums(raw_grad: Any) -> None:
    """With ``every=4`` the hooks exist only for the backward passes before a summed step (the
    steps that feed a recorded row: 2 of 4, and the first), and the recorded rows' ``clipping``
    equals ``<raw - applied, dtheta>`` of the step before each row, computed here by hand."""
    params, loss, _ = quadratic(3)
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    every = 4
    tracker = InertiaTracker(opt, every=every, raw_grad=raw_grad)
    expected, hooked = {}, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "auto": the first change is NaN
        for k in range(21):
            hooked.append(all(len(p._post_accumulate_grad_hooks) == 1 for p in params))
            opt.zero_grad()
            value = loss()
            value.backward()
            raw = flat([p.grad for p in params])
            torch.nn.utils.clip_grad_norm_(params, 0.3)
            applied, before = flat([p.grad for p in params]), flat(params)
            opt.step()
            tracker.record(value)
            expected[k + 1] = float((raw - applied) @ (flat(params) - before))
    # step j is summed when j == 0 or row j + 1 or j + 2 is recorded
    assert hooked == [j == 0 or (j + 1) % every == 0 or (j + 2) % every == 0 for j in range(21)]
    h = tracker.history.set_index("step")
    rows = [k for k in h.index if k >= every]
    assert rows == [4, 8, 12, 16, 20]
    np.testing.assert_allclose(h.loc[rows, "clipping"], [expected[k] for k in rows], rtol=1e-12)
    assert all(abs(expected[k]) > 1e-6 for k in rows)  # the clipping did work
    tracker.close()
    assert not any(p._post_accumulate_grad_hooks for p in params)
