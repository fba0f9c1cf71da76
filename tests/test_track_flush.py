"""Rows stay on the device and are read to the host together (issue 8, item 3).

With ``flush_every = n`` the tracker keeps ``n`` recorded rows on the parameters' device and
brings them to the host in one transfer (one all-reduce under ``torch.distributed``:
``tests/test_track_distributed.py``). These tests check that the rows are the very same as with
``flush_every = 1``, that rows, sinks and the NaN policy act at each flush and at ``close``, that
the host is read once per flush, and the default and the validation of the argument.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from inertia.track import InertiaTracker, NonFiniteError  # noqa: E402
from inertia.track import tracker as tracker_mod  # noqa: E402
from track_helpers import QuadraticProblem  # noqa: E402

FAMILIES = {
    "sgd": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    "adamw": (torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.1}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
}


class ListSink:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.closed = False

    def write(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def close(self) -> None:
        self.closed = True


def run(
    family: str, n_steps: int, *, nan_at: int | None = None, per_step: Any = None, **kwargs: Any
) -> InertiaTracker:
    cls, opt_kwargs = FAMILIES[family]
    problem = QuadraticProblem()
    params = problem.make_params()
    opt = cls(params, **opt_kwargs)
    tracker = InertiaTracker(opt, **kwargs)
    exact = kwargs.get("mode") == "exact"
    for step in range(n_steps):
        opt.zero_grad()
        loss = problem.loss(params)
        loss.backward()
        opt.step()
        reported = torch.tensor(math.nan, dtype=torch.float64) if step == nan_at else loss
        out = tracker.record(reported, (lambda: problem.loss(params)) if exact else None)
        if per_step is not None:
            per_step(step, out, tracker)
    return tracker


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Bit for bit, NaN where NaN."""
    return len(a) == len(b) and all(
        x.keys() == y.keys()
        and all(
            x[c] == y[c] or (isinstance(x[c], float) and math.isnan(x[c]) and math.isnan(y[c])) for c in x
        )
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(("mode", "every"), [("cheap", 1), ("cheap", 3), ("exact", 1), ("exact", 2)])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_flushed_rows_equal_row_by_row(family: str, mode: str, every: int) -> None:
    one = run(family, 17, mode=mode, every=every, flush_every=1)
    five = run(family, 17, mode=mode, every=every, flush_every=5)
    five.close()
    assert len(one.rows) == len(range(0, 17, every))
    assert same(five.rows, one.rows)
    # teeth: a changed value is seen
    changed = [dict(r) for r in one.rows]
    changed[-1]["inertia"] = math.nextafter(changed[-1]["inertia"], math.inf)
    assert not same(five.rows, changed)


def test_rows_sinks_and_returns_act_at_each_flush() -> None:
    sink = ListSink()
    seen: list[tuple[int, Any, int, int]] = []

    def per_step(step: int, out: Any, tracker: InertiaTracker) -> None:
        seen.append((step, None if out is None else out["step"], len(tracker.rows), len(sink.rows)))

    tracker = run("sgd", 10, per_step=per_step, flush_every=4, sinks=[sink])
    # rows 0..3 are flushed at step 3 (record returns row 3), 4..7 at step 7, 8..9 at close
    assert [s[1] for s in seen] == [None, None, None, 3, None, None, None, 7, None, None]
    assert [s[2] for s in seen] == [0, 0, 0, 4, 4, 4, 4, 8, 8, 8]
    assert [s[3] for s in seen] == [s[2] for s in seen]
    assert len(tracker.history) == 10  # a single process: history flushes what is staged
    assert len(sink.rows) == 10 and not sink.closed
    tracker.close()
    assert sink.closed and [r["step"] for r in sink.rows] == list(range(10))


def test_close_flushes_the_staged_rows() -> None:
    sink = ListSink()
    tracker = run("adamw", 6, flush_every=4, sinks=[sink])
    assert len(sink.rows) == 4
    tracker.close()
    assert [r["step"] for r in sink.rows] == list(range(6)) and sink.closed


@pytest.mark.parametrize("flush_every", [1, 3, 4])
def test_one_host_read_per_flush(flush_every: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = tracker_mod.reduce_rows

    def spy(rows: Any, *args: Any) -> Any:
        calls.append(len(rows))
        return real(rows, *args)

    monkeypatch.setattr(tracker_mod, "reduce_rows", spy)
    tracker = run("sgd", 12, flush_every=flush_every)
    tracker.close()
    assert sum(calls) == 12
    assert calls == [flush_every] * (12 // flush_every) + ([12 % flush_every] if 12 % flush_every else [])


def test_a_nan_is_acted_on_at_the_next_flush() -> None:
    """``raise``: the error comes at the flush after the NaN, the rows up to the NaN row are
    kept and later staged rows are dropped; ``stop``: the same rows, then nothing."""
    sink = ListSink()
    raised: list[int] = []
    with pytest.raises(NonFiniteError, match="step 5"):
        try:
            run("sgd", 12, nan_at=5, flush_every=4, sinks=[sink])
        except NonFiniteError:
            raised.append(len(sink.rows))
            raise
    assert raised == [6] and [r["finite"] for r in sink.rows] == [True] * 5 + [False]
    stopped = run("sgd", 12, nan_at=5, flush_every=4, nan_policy="stop")
    assert stopped.stopped and [r["step"] for r in stopped.rows] == list(range(6))
    stopped.close()
    assert len(stopped.rows) == 6
    flagged = run("sgd", 12, nan_at=5, flush_every=4, nan_policy="flag")
    flagged.close()
    assert [r["finite"] for r in flagged.rows] == [True] * 5 + [False] * 2 + [True] * 5


def test_default_flush_every() -> None:
    cpu = torch.nn.Parameter(torch.zeros(3))
    assert InertiaTracker(torch.optim.SGD([cpu], lr=0.1)).flush_every == 1
    meta = torch.nn.Parameter(torch.zeros(3, device="meta"))
    assert InertiaTracker(torch.optim.SGD([meta], lr=0.1)).flush_every == tracker_mod.DEVICE_FLUSH_EVERY


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_flush_every_is_validated(bad: Any) -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"`flush_every` must be None or an integer >= 1, got"):
        InertiaTracker(torch.optim.SGD([p], lr=0.1), flush_every=bad)
