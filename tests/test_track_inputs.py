"""Small things users hit (issue 9, item 8): NumPy losses, bad learning rates named clearly,
and the report naming the dtype the run actually used. (``record()`` after ``close()`` is in
``test_track_status.py``.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inertia.report import render_track, track_summary  # noqa: E402
from inertia.runs import read_history, read_manifest  # noqa: E402
from inertia.track import InertiaTracker, RunLog  # noqa: E402


def _step(w: torch.nn.Parameter, opt: torch.optim.Optimizer) -> torch.Tensor:
    opt.zero_grad()
    loss = 0.5 * (w * w).sum()
    loss.backward()
    opt.step()
    return loss.detach()


@pytest.mark.parametrize(
    "convert",
    [np.float64, np.float32, lambda x: np.array(x), lambda x: np.array([x]), lambda x: np.float16(x)],
    ids=["float64", "float32", "0-d array", "1-element array", "float16"],
)
def test_numpy_scalars_and_one_element_arrays_are_losses(convert: object) -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    tracker = InertiaTracker(opt)
    for _ in range(3):
        loss = _step(w, opt)
        value = convert(float(loss))  # type: ignore[operator]
        row = tracker.record(value)
        assert row is not None and row["potential"] == float(np.asarray(value).item())
    assert tracker.history["finite"].all()


def test_other_losses_are_refused_with_their_type() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)
    tracker = InertiaTracker(opt)
    for bad, name in ((np.bool_(True), "bool"), (np.array([1.0, 2.0]), "ndarray"), ("1.0", "str")):
        _step(w, opt)
        with pytest.raises(
            TypeError, match=f"`loss` must be a scalar tensor, a number or a NumPy scalar, got {name}"
        ):
            tracker.record(bad)
        tracker.record(1.0)  # the step is still recorded once


@pytest.mark.parametrize("lr", [-0.1, math.nan, math.inf])
def test_a_bad_learning_rate_is_named(lr: float) -> None:
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}], lr=0.1, momentum=0.9)
    opt.param_groups[0]["lr"] = lr  # torch checks only at construction
    with pytest.raises(ValueError, match=r"`lr` of parameter group 0 must be a finite number >= 0 \(.*got"):
        InertiaTracker(opt)
    opt.param_groups[0]["lr"] = 0.1
    tracker = InertiaTracker(opt)
    tracker.record(_step(w, opt))
    opt.param_groups[0]["lr"] = lr  # e.g. a scheduler gone wrong
    with pytest.raises(ValueError, match=r"group 0 must be a finite number >= 0 at optimizer step 1"):
        _step(w, opt)


def test_the_report_names_the_dtype_the_run_used(tmp_path: Path) -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float32))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    tracker = InertiaTracker(opt, every=2, sinks=[RunLog(tmp_path / "run")])
    assert tracker.info["dtypes"] == ["float32"] and tracker.info["n_params"] == 2
    for _ in range(5):
        tracker.record(_step(w, opt))
    tracker.close()
    m = read_manifest(tmp_path / "run")
    assert m["tracked"]["dtypes"] == ["float32"] and m["tracked"]["optimizer"] == "SGD"
    summary = track_summary(read_history(tmp_path / "run"), m).set_index("quantity")["value"]
    assert summary["parameter dtype"] == "float32" and summary["every"] == "2"
    html = render_track(tmp_path / "run").read_text(encoding="utf-8")
    assert "this run&#x27;s parameters are float32" in html or "this run's parameters are float32" in html
