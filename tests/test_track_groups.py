"""Parameter groups added or removed mid-run, parameters frozen and unfrozen, and a tracker
attached to an optimizer restored from a ``state_dict`` (issue 9, item 2): rows continue without
a gap or an error and the ledger closes to rounding on float64 quadratics."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker  # noqa: E402
from track_helpers import worst_residual  # noqa: E402

F64 = torch.float64


def _params() -> tuple[Any, Any, Any]:
    g = torch.Generator().manual_seed(3)
    return tuple(torch.nn.Parameter(torch.randn(n, generator=g, dtype=F64)) for n in (3, 2, 4))  # type: ignore[return-value]


def _loss(ps: Any) -> Any:
    a, b, c = ps
    return 0.5 * (a * a).sum() + (b * b).sum() + 0.3 * (c * c).sum() + (a[:2] * b).sum()


def _run(opt: Any, ps: Any, n: int, events: dict[int, Any], tracker: Any = None) -> Any:
    tracker = tracker or InertiaTracker(opt)
    for k in range(n):
        opt.zero_grad()
        loss = _loss(ps)
        loss.backward()
        opt.step()
        tracker.record(loss)
        if k in events:
            events[k]()
    return tracker


@pytest.mark.parametrize(
    ("make", "extra"),
    [
        (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), {"lr": 0.02, "momentum": 0.8}),
        (lambda ps: torch.optim.Adam(ps, lr=0.02), {"lr": 0.01}),
        (lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5), {"lr": 0.005}),
    ],
    ids=["SGD", "Adam", "RMSprop"],
)
def test_groups_added_and_removed_mid_run(make: Any, extra: dict[str, Any]) -> None:
    a, b, c = ps = _params()
    opt = make([a])
    events = {
        4: lambda: opt.add_param_group({"params": [b], **extra}),
        8: lambda: opt.add_param_group({"params": [c], **extra}),
        13: lambda: opt.param_groups.pop(1),  # b's group goes, with its momentum
    }
    tracker = _run(opt, ps, 20, events)
    df = tracker.history
    assert df["step"].tolist() == list(range(20)) and df["finite"].all()
    assert worst_residual(tracker.rows) < 1e-12
    # the removed group's kinetic energy is booked where it left (like a momentum restart)
    assert df.loc[15, "restart"] < 0 and (df["restart"].drop(index=15).fillna(0.0) == 0.0).all()


def test_frozen_and_unfrozen_parameters() -> None:
    _, b, _ = ps = _params()
    opt = torch.optim.Adam(ps, lr=0.02)

    def freeze() -> None:
        b.requires_grad_(False)
        b.grad = None

    events = {3: freeze, 9: lambda: b.requires_grad_(True)}
    tracker = _run(opt, ps, 16, events)
    assert tracker.history["step"].tolist() == list(range(16))
    assert worst_residual(tracker.rows) < 1e-12


@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam"])
def test_a_tracker_on_an_optimizer_restored_from_a_state_dict(name: str) -> None:
    ps = _params()
    opt = getattr(torch.optim, name)(ps, lr=0.02, **({"momentum": 0.9} if name == "SGD" else {}))
    _run(opt, ps, 6, {}).close()
    saved, values = opt.state_dict(), [p.detach().clone() for p in ps]
    restored = tuple(torch.nn.Parameter(v.clone()) for v in values)
    opt2 = getattr(torch.optim, name)(restored, lr=0.02, **({"momentum": 0.9} if name == "SGD" else {}))
    opt2.load_state_dict(saved)
    tracker = InertiaTracker(opt2)  # its state says it has stepped: K at row 0 is unknown
    assert not tracker.fresh
    _run(opt2, restored, 8, {}, tracker)
    df = tracker.history
    assert df["step"].tolist() == list(range(8)) and df["kinetic"].iloc[1:].notna().all()
    assert worst_residual(tracker.rows, start=2) < 1e-12
