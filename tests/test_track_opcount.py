"""The tracker's device work per recorded step does not grow with the number of parameter tensors
(issue 8, item 2): on a GPU every ATen operation is a kernel launch, so this count is the proxy
for the tracker's cost there that can be measured without one.

A ``TorchDispatchMode`` counts the ATen operations dispatched by ``optimizer.step()`` plus
``tracker.record(loss)``, minus those of the same step of an identical optimizer without a
tracker, for the same model built with about 10 and with about 200 parameter tensors. A
multi-tensor operation (``torch._foreach_*``) counts once, as it is one launch per list on an
accelerator. The counts must satisfy ``count(200) <= 1.2 count(10)``; the variant that sums one
tensor at a time (the tracker before issue 8) must fail that check.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from inertia.track import InertiaTracker  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts every ATen operation dispatched while active, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def make_model(n_tensors: int, seed: int = 0) -> torch.nn.Module:
    """An MLP of ``n_tensors / 2`` layers (weight and bias each), about 20,000 parameters
    whatever the split (width 64 for 10 tensors, 14 for 200)."""
    depth = n_tensors // 2
    width = max(4, round((20_000 / depth) ** 0.5))
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers)


OPTIMIZERS = {
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 0.01}),
    "adam-amsgrad": (torch.optim.Adam, {"lr": 1e-3, "amsgrad": True}),
    "sgd-nesterov-wd": (
        torch.optim.SGD,
        {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    "rmsprop-centered": (torch.optim.RMSprop, {"lr": 1e-3, "momentum": 0.5, "centered": True}),
    "nadam": (torch.optim.NAdam, {"lr": 1e-3, "weight_decay": 0.01}),
    "radam": (torch.optim.RAdam, {"lr": 1e-3}),
    "adamax": (torch.optim.Adamax, {"lr": 1e-3}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-2}),
}


def tracker_ops(n_tensors: int, name: str, *, warmup: int = 3, **tracker_kwargs: Any) -> int:
    """ATen operations per recorded step that the tracker adds (steady state, after ``warmup``)."""
    cls, kwargs = OPTIMIZERS[name]
    counts = []
    for tracked in (False, True):
        model = make_model(n_tensors)
        width = model[0].in_features
        assert sum(1 for _ in model.parameters()) == n_tensors
        opt = cls(model.parameters(), **kwargs)
        tracker = InertiaTracker(opt, **tracker_kwargs) if tracked else None
        x = torch.randn(8, width, generator=torch.Generator().manual_seed(1))
        for i in range(warmup + 1):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            counter = OpCounter()
            with counter:
                opt.step()
                if tracker is not None:
                    tracker.record(loss)
            if i == warmup:
                counts.append(sum(counter.ops.values()))
        if tracker is not None:
            tracker.close()
    return counts[1] - counts[0]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_ops_per_recorded_step_do_not_grow_with_tensors(name: str) -> None:
    few, many = tracker_ops(10, name), tracker_ops(200, name)
    print(f"{name}: tracker ops per recorded step, 10 tensors: {few}, 200 tensors: {many}")
    assert 0 < few and many <= 1.2 * few


def test_the_count_has_teeth(monkeypatch: pytest.MonkeyPatch) -> None:
    """Summing one tensor at a time (a slice per tensor, as before issue 8) fails the check."""
    from inertia.track import reduce as reduce_mod

    def per_tensor(rows: Any, keys: Any) -> Any:
        for i, row in enumerate(rows):
            yield (None if keys is None else keys[i]), [None if t is None else t.reshape(-1) for t in row]

    monkeypatch.setattr(reduce_mod, "_slices", per_tensor)
    few, many = tracker_ops(10, "sgd-momentum"), tracker_ops(200, "sgd-momentum")
    assert many > 1.2 * few
