"""Tracker sinks for experiment trackers, each tested with the real package where it installs
(offline / file mode, nothing leaves the machine): every row arrives under the prefix at its
step, NaN only where the row is non-finite, steps strictly increasing. Each package's test skips
with a message when it is not installed (``pip install computational-inertia[loggers]``)."""

from __future__ import annotations

import glob
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from _framework_helpers import MemoryLogger  # noqa: E402
from inertia.integrations import LoggerSink, MLflowSink, WandbSink  # noqa: E402
from inertia.track import InertiaTracker, TensorBoardSink  # noqa: E402


def tracked_rows(sinks: list[Any], n_steps: int = 5, nan_at: int | None = None) -> list[dict[str, Any]]:
    """Heavy-ball SGD on a float64 quadratic, one row per step; a NaN loss at ``nan_at``."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    tracker = InertiaTracker(opt, sinks=sinks, nan_policy="flag")
    for k in range(n_steps):
        opt.zero_grad()
        loss = 0.5 * (w * w).sum()
        loss.backward()
        opt.step()
        tracker.record(loss * math.nan if k == nan_at else loss)
    tracker.close()
    return tracker.rows


def expected(rows: list[dict[str, Any]], column: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a column as a sink must send it: NaN only in non-finite rows."""
    out = []
    for r in rows:
        x = float(r[column])
        if math.isnan(x) and r["finite"]:
            continue
        out.append((int(r["step"]), x))
    return out


def same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        s == t and (x == y or (math.isnan(x) and math.isnan(y))) for (s, x), (t, y) in zip(a, b, strict=True)
    )


def test_logger_sink_sends_every_row_under_the_prefix() -> None:
    memory = MemoryLogger()
    rows = tracked_rows([LoggerSink(memory, prefix="inertia/")], nan_at=3)
    for column in ("kinetic", "residual", "noise", "potential"):
        assert same(memory.series(f"inertia/{column}"), expected(rows, column)), column
    assert memory.series("inertia/finite") == [(r["step"], float(r["finite"])) for r in rows]
    assert math.isnan(dict(memory.series("inertia/potential"))[3])  # the blow-up shows


def test_logger_sink_with_lightning_csv_logger(tmp_path: Path) -> None:
    loggers = pytest.importorskip(
        "lightning.pytorch.loggers", reason="the `lightning` extra is not installed"
    )
    pd = pytest.importorskip("pandas")
    logger = loggers.CSVLogger(tmp_path, name="run", version=0)
    rows = tracked_rows([LoggerSink(logger)])
    logger.finalize("success")
    table = pd.read_csv(tmp_path / "run" / "version_0" / "metrics.csv")
    assert table["step"].tolist() == [r["step"] for r in rows]
    assert table["inertia/kinetic"].tolist() == pytest.approx([r["kinetic"] for r in rows], rel=1e-15)


def test_steps_must_increase_strictly() -> None:
    sink = LoggerSink(MemoryLogger(), step_of=lambda row: 7)
    sink.write({"step": 0, "kinetic": 1.0, "finite": True})
    with pytest.raises(ValueError, match="steps must increase strictly: got step 7 after step 7"):
        sink.write({"step": 1, "kinetic": 1.0, "finite": True})
    with pytest.raises(TypeError, match="`logger` must have a log_metrics"):
        LoggerSink(object())
    with pytest.raises(TypeError, match=r"`step_of\(row\)` must return an int"):
        LoggerSink(MemoryLogger(), step_of=lambda row: 1.5).write({"step": 0, "finite": True})


def test_tensorboard_sink_with_real_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the `loggers` extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    rows = tracked_rows([TensorBoardSink(SummaryWriter(tmp_path), close_writer=True)], nan_at=3)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    for column in ("kinetic", "potential", "residual"):
        got = [(e.step, e.value) for e in events.Scalars(f"inertia/{column}")]
        want = [(s, x) for s, x in expected(rows, column)]
        assert [s for s, _ in got] == [s for s, _ in want]
        # TensorBoard stores float32
        for (_, a), (_, b) in zip(got, want, strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-30)


def wandb_history(path: str) -> list[dict[str, Any]]:
    """The history records of an offline W&B run file (LevelDB-style log of protobuf records:
    32 KiB blocks, each record ``crc32, length, type`` then data; type 1 full, 2/3/4 first,
    middle, last piece), read with wandb's own protobuf definitions."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                out.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                )
    return out


def test_wandb_sink_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb", reason="the `loggers` extra (wandb) is not installed")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(mode="offline", dir=tmp_path, project="inertia-test")
    try:
        run.log({"other": 1.0}, step=100)  # someone else's step ahead of ours: nothing dropped
        rows = tracked_rows([WandbSink(run)], nan_at=3)
    finally:
        run.finish()
    (file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    history = [h for h in wandb_history(file) if "inertia/step" in h]

    def value(v: Any) -> float:
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(v, v)

    for column in ("kinetic", "potential", "residual"):
        got = [
            (h["inertia/step"], float(value(h[f"inertia/{column}"])))
            for h in history
            if f"inertia/{column}" in h
        ]
        assert same(got, expected(rows, column)), column


def test_wandb_sink_needs_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb", reason="the `loggers` extra (wandb) is not installed")
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(ValueError, match=r"call wandb.init"):
        WandbSink()


def test_mlflow_sink_file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the `loggers` extra (mlflow) is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store opt-in
    uri = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("inertia-test"))
    rows = tracked_rows([MLflowSink(run.info.run_id, tracking_uri=uri)], nan_at=3)
    for column in ("kinetic", "potential", "residual"):
        got = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, f"inertia/{column}")]
        assert same(sorted(got), expected(rows, column)), column
    monkeypatch.setattr(mlflow, "active_run", lambda: None)
    with pytest.raises(ValueError, match="`run_id` must be given"):
        MLflowSink(tracking_uri=uri)
