"""Mixed precision as people train (issue 8, item 4), on CPU (and CUDA where present).

* bf16/fp16 parameters (and so optimizer state): the sums are taken in float32 (not in the
  state's 8 or 11 bits): they equal a float64 computation of the same formulas on the same state
  to float32 rounding, where sums in bf16 arithmetic would be off by about 1 %;
* ``torch.autocast``: float32 parameters, a bf16 forward: the ledger closes to float32 rounding;
* ``torch.amp.GradScaler``: a step the scaler skips (non-finite gradients) changes no parameter;
  it is counted in the next row's ``skipped`` column, is no ledger term, and the ledger of the
  rows around it closes.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker, SGDMapping  # noqa: E402
from inertia.track.adam import AdamMapping  # noqa: E402
from track_helpers import worst_residual  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def model(dtype: Any, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).to(
        device=device, dtype=dtype
    )


def batch(device: str, dtype: Any = torch.float32, seed: int = 0) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(64, 16, generator=gen).to(device, dtype), torch.randn(64, 4, generator=gen).to(
        device, dtype
    )


def as_f64(opt: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The optimizer's single group and state with every tensor converted to float64."""
    group = opt.param_groups[0]
    params, state = [], {}
    for p in group["params"]:
        q = p.detach().double()
        q.grad = p.grad.double()
        params.append(q)
        state[q] = {
            k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in opt.state[p].items()
        }
    return {**group, "params": params}, state


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(
    ("cls", "kwargs", "mapping"),
    [
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, SGDMapping()),
        (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, SGDMapping()),
        # eps = 1e-8 is 0 in fp16: torch's own fp16 Adam step then divides by zero
        (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.01, "eps": 1e-3}, AdamMapping()),
    ],
    ids=["sgd", "sgd-wd", "adamw"],
)
def test_low_precision_state_is_summed_in_float32(
    device: str, dtype: Any, cls: Any, kwargs: dict[str, Any], mapping: Any
) -> None:
    net = model(dtype, device)
    opt = cls(net.parameters(), **kwargs)
    tracker = InertiaTracker(opt)
    x, y = batch(device, dtype)
    for _ in range(4):
        opt.zero_grad()
        loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        tracker.record(loss)
    tracker.close()
    assert all(r["finite"] for r in tracker.rows) and len(tracker.rows) == 4
    got = mapping.reduce(opt.param_groups[0], opt.state).tolist()
    ref = mapping.reduce(*as_f64(opt)).tolist()
    assert got == pytest.approx(ref, rel=2e-5, abs=1e-9)
    # teeth: the same sums in the state's own precision miss the tolerance
    from inertia.track import reduce as reduce_mod

    real = reduce_mod._working_precision
    try:
        reduce_mod._working_precision = lambda c: c
        low = mapping.reduce(opt.param_groups[0], opt.state).tolist()
    finally:
        reduce_mod._working_precision = real
    assert low != pytest.approx(ref, rel=2e-5, abs=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", [torch.optim.SGD, torch.optim.AdamW], ids=["sgd", "adamw"])
def test_autocast_ledger_closes_to_float32_rounding(device: str, cls: Any) -> None:
    net = model(torch.float32, device)
    kwargs = {"lr": 0.05, "momentum": 0.9} if cls is torch.optim.SGD else {"lr": 1e-2}
    opt = cls(net.parameters(), **kwargs)
    tracker = InertiaTracker(opt)
    x, y = batch(device)
    amp_dtype = torch.bfloat16 if device == "cpu" else torch.float16
    for _ in range(12):
        opt.zero_grad()
        with torch.autocast(device, dtype=amp_dtype):
            loss = (net(x) - y).pow(2).mean()
        loss.backward()
        opt.step()
        tracker.record(loss)
    tracker.close()
    assert all(r["finite"] for r in tracker.rows)
    assert worst_residual(tracker.rows) <= 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_gradscaler_skipped_step_is_counted_not_booked(device: str) -> None:
    net = model(torch.float32, device)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10)
    tracker = InertiaTracker(opt)
    x, y = batch(device)
    before: list[Any] = []
    with pytest.warns(RuntimeWarning, match="skipped"):
        for i in range(10):
            opt.zero_grad()
            loss = (net(x) - y).pow(2).mean()
            # an overflow at iteration 4: the scaler finds inf gradients and skips the step
            scaled = scaler.scale(loss * (math.inf if i == 4 else 1.0))
            scaled.backward()
            if i == 4:
                before = [p.detach().clone() for p in net.parameters()]
            scaler.step(opt)
            scaler.update()
            if i == 4:
                assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
            tracker.record(loss)
    tracker.close()
    rows = tracker.rows
    assert [r["step"] for r in rows] == list(range(9))  # 9 optimizer steps, 10 iterations
    assert [r["skipped"] for r in rows] == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert all(r["finite"] for r in rows)
    assert worst_residual(rows) <= 1e-5
