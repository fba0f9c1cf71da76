"""The tracker changes nothing and keeps nothing alive (TESTING.md item 12).

Training with and without an :class:`inertia.track.InertiaTracker` (both modes; ``"exact"``
re-evaluates a model with dropout, which draws random numbers) must leave the parameters, their
gradients, ``optimizer.state_dict()`` (every tensor) and the global RNG state bit-identical
(``torch.equal``). The loss passed to ``record`` must not be kept alive (its autograd graph would
be), and the tracker's buffers and the number of live tensors must stay flat over many steps.
Each check comes with a control that shows it can fail.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from track_helpers import F64

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker  # noqa: E402

OPTIMIZERS: dict[str, Callable[[Any], Any]] = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "sgd-nesterov-foreach": lambda ps: torch.optim.SGD(
        ps, lr=0.05, momentum=0.9, nesterov=True, foreach=True
    ),
    "adam-amsgrad": lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=1e-3),
    "adamw-fused": lambda ps: torch.optim.AdamW(ps, lr=0.01, fused=True),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.002, momentum=0.5, centered=True),
}


def make_model() -> Any:
    return torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1)
    ).to(F64)


def data() -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(64, 5, generator=gen, dtype=F64), torch.randn(64, 1, generator=gen, dtype=F64)


def run(
    opt_name: str,
    mode: str | None,
    *,
    n_steps: int = 40,
    every: int = 1,
    rogue_closure: bool = False,
) -> dict[str, Any]:
    """Train with dropout; ``mode=None`` trains without a tracker. ``rogue_closure`` (a control)
    evaluates the closure outside the tracker, without restoring the RNG."""
    torch.manual_seed(1234)
    model = make_model()
    opt = OPTIMIZERS[opt_name](model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.8)
    tracker = InertiaTracker(opt, mode=mode, every=every) if mode is not None else None
    x, y = data()
    for k in range(n_steps):
        lo = (8 * k) % 64
        xb, yb = x[lo : lo + 8], y[lo : lo + 8]

        def closure(xb: Any = xb, yb: Any = yb) -> Any:
            return torch.nn.functional.mse_loss(model(xb), yb)

        opt.zero_grad()
        loss = closure()
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.record(loss, closure if mode == "exact" else None)
        if rogue_closure:
            with torch.no_grad():
                closure()
        sched.step()
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [p.grad.clone() for p in model.parameters()],
        "state_dict": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "rows": [] if tracker is None else tracker.rows,
    }


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    """Recursive bit-for-bit equality of nested dicts / lists / tensors / plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_identical(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize(("mode", "every"), [("cheap", 1), ("exact", 1), ("exact", 3)])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_training_is_bit_identical_with_and_without_tracker(opt_name: str, mode: str, every: int) -> None:
    if opt_name.endswith("fused"):
        try:
            torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1, dtype=F64))], fused=True)
        except (RuntimeError, TypeError, ValueError) as exc:
            pytest.skip(f"fused AdamW not available: {exc}")
    plain = run(opt_name, None)
    tracked = run(opt_name, mode, every=every)
    for key in ("params", "grads", "state_dict", "rng"):
        assert_identical(plain[key], tracked[key], key)
    assert len(tracked["rows"]) == len(range(0, 40, every))


def test_identity_check_has_teeth() -> None:
    """Control: evaluating the dropout closure without restoring the RNG is detected."""
    plain = run("adam-amsgrad", None, n_steps=6)
    rogue = run("adam-amsgrad", None, n_steps=6, rogue_closure=True)
    assert not torch.equal(plain["rng"], rogue["rng"])
    assert not all(torch.equal(a, b) for a, b in zip(plain["params"], rogue["params"], strict=True))


def _train_and_watch(
    mode: str, n_steps: int, keep: list[Any] | None = None
) -> tuple[InertiaTracker, list[Any], list[int]]:
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    tracker = InertiaTracker(opt, mode=mode)
    x, y = data()
    refs: list[Any] = []
    sizes: list[int] = []
    for k in range(n_steps):
        lo = (8 * k) % 64
        xb, yb = x[lo : lo + 8], y[lo : lo + 8]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        tracker.record(loss, (lambda xb=xb, yb=yb: torch.nn.functional.mse_loss(model(xb), yb)))
        refs.append(weakref.ref(loss))
        if keep is not None:
            keep.append(loss)
        sizes.append(len(tracker._hooks) + len(tracker._losses) + len(tracker._closures))
        del loss
    return tracker, refs, sizes


@pytest.mark.parametrize("mode", ["cheap", "exact"])
def test_no_graph_kept_alive(mode: str) -> None:
    tracker, refs, _ = _train_and_watch(mode, 12)
    gc.collect()
    assert all(r() is None for r in refs), "a loss tensor (and with it its autograd graph) is still alive"
    for store in (tracker._losses, tracker._closures):
        for value in store.values():
            assert not value.requires_grad and value.grad_fn is None
    for hook in tracker._hooks.values():
        assert not hook.sums.requires_grad


def test_graph_check_has_teeth() -> None:
    """Control: a loss somebody keeps is seen alive by the same weak references."""
    keep: list[Any] = []
    _, refs, _ = _train_and_watch("cheap", 4, keep=keep)
    gc.collect()
    assert all(r() is not None and r().grad_fn is not None for r in refs)


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.mark.parametrize("mode", ["cheap", "exact"])
def test_memory_is_flat_over_many_steps(mode: str) -> None:
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = InertiaTracker(opt, mode=mode)
    x, y = data()
    counts = {}
    for k in range(300):
        lo = (8 * k) % 64
        xb, yb = x[lo : lo + 8], y[lo : lo + 8]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        loss.backward()
        opt.step()
        tracker.record(loss, (lambda xb=xb, yb=yb: torch.nn.functional.mse_loss(model(xb), yb)))
        assert len(tracker._hooks) <= 3 and len(tracker._losses) <= 2 and len(tracker._closures) <= 2
        del loss
        if k in (50, 299):
            counts[k] = _live_tensors()
    assert counts[299] == counts[50]
    assert len(tracker.rows) == 300


def test_tracker_adds_no_module_hooks_and_one_pair_of_step_hooks() -> None:
    # one pre-step hook (Python bookkeeping: first steps, gradient version counters) and one
    # post-step hook (the sums); no module hooks; close() removes both
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = len(opt._optimizer_step_post_hooks), len(opt._optimizer_step_pre_hooks)
    tracker = InertiaTracker(opt)
    assert len(opt._optimizer_step_post_hooks) == before[0] + 1
    assert len(opt._optimizer_step_pre_hooks) == before[1] + 1
    assert all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )
    tracker.close()
    assert (len(opt._optimizer_step_post_hooks), len(opt._optimizer_step_pre_hooks)) == before
