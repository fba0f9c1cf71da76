"""Per-step cost of the framework callbacks (issue 13, item 6): do they add anything beyond the
tracker's own cost?

One MLP (64-H-H-10, tanh, float32, cross entropy, ``torch.optim.SGD`` with momentum 0.9) on
scikit-learn's bundled digits (nothing is downloaded), batch ``--batch``, trained for ``--steps``
optimizer steps in six variants, each from the same initial weights and batches in order:

* ``loop`` / ``loop_tracked``: a hand-written loop, without / with
  :class:`inertia.track.InertiaTracker` (``record`` after every step): the tracker's own cost;
* ``lightning`` / ``lightning_callback``: a PyTorch Lightning ``Trainer`` without / with
  :class:`inertia.integrations.lightning.InertiaCallback` (both with one in-memory logger, so
  the callback's rows are logged but no file backend is timed);
* ``transformers`` / ``transformers_callback``: a Hugging Face ``Trainer`` without / with
  :class:`inertia.integrations.transformers.InertiaCallback` (``report_to="none"``, no
  checkpoints, no logging steps).

A step's time is the interval between the ends of consecutive steps (``on_train_batch_end`` /
``on_step_end`` / the loop's), so the frameworks' start-up is not timed; a run's per-step time is
the median over its steps after ``--warmup``. The variants run in ``--blocks`` interleaved blocks
(the order rotates from block to block) so that drift and other processes' load hit all alike.
Reported, over blocks: per variant the median and interquartile range of the per-step time (ms);
per pair, the ratio ``t_with / t_without`` and the overhead ``t_with - t_without`` (ms) computed
within each block (median and quartiles); and ``beyond_tracker_ms``: each callback's overhead
minus the tracker's overhead in the hand-written loop of the same block, the callbacks' own cost
(zero when they add nothing beyond the tracker).

The JSON document goes to stdout (and to ``--out``); the summary lines go to stderr. Frameworks
that are not installed are reported as ``null``. Run
``python benchmarks/integration_overhead.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
import warnings
from typing import Any

import torch
from _common import available, emit, machine_info, positive_int

VARIANTS = (
    "loop",
    "loop_tracked",
    "lightning",
    "lightning_callback",
    "transformers",
    "transformers_callback",
)
PAIRS = {"loop": "loop_tracked", "lightning": "lightning_callback", "transformers": "transformers_callback"}


def data(batch: int, steps: int) -> list[tuple[Any, Any]]:
    """``steps`` batches of standardised digits, in order, cycling over the 1797 images."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / (x.std(0) + 1e-8), dtype=torch.float32)
    y = torch.tensor(y)
    idx = torch.arange(batch * steps) % len(x)
    return [(x[idx[i : i + batch]], y[idx[i : i + batch]]) for i in range(0, len(idx), batch)]


def mlp(hidden: int) -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(hidden, 10),
    )


def sgd(params: Any) -> Any:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def per_step(stamps: list[float], warmup: int) -> float:
    """Median interval between consecutive step ends after ``warmup`` steps, in ms."""
    gaps = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1 :], strict=False)]
    return 1e3 * statistics.median(gaps)


def run_loop(batches: list, hidden: int, tracked: bool) -> list[float]:
    from inertia.track import InertiaTracker

    model = mlp(hidden)
    opt = sgd(model.parameters())
    tracker = InertiaTracker(opt) if tracked else None
    stamps = []
    for x, y in batches:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.record(loss)
        stamps.append(time.perf_counter())
    if tracker is not None:
        tracker.close()
    return stamps


def run_lightning(batches: list, hidden: int, tracked: bool) -> list[float]:
    import lightning.pytorch as pl

    from inertia.integrations.lightning import InertiaCallback

    stamps: list[float] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(hidden)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return sgd(self.parameters())

    class Timer(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            stamps.append(time.perf_counter())

    class NullLogger(pl.loggers.Logger):
        name, version = "null", 0

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

    callbacks: list[Any] = [Timer()]
    if tracked:
        callbacks.insert(0, InertiaCallback())
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        logger=[NullLogger()],
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10**6,
    )
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(batches[0][0]))
    trainer.fit(Module(), loader)
    return stamps


def run_transformers(batches: list, hidden: int, tracked: bool, out: str) -> list[float]:
    import transformers

    from inertia.integrations.transformers import InertiaCallback

    stamps: list[float] = []

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp(hidden)

        def forward(self, x: Any, labels: Any = None) -> dict[str, Any]:
            logits = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    class Timer(transformers.TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

    model = Net()
    dataset = [{"x": x[i], "labels": y[i]} for x, y in batches for i in range(len(x))]
    callbacks: list[Any] = [Timer()]
    if tracked:
        callbacks.insert(0, InertiaCallback())
    args = transformers.TrainingArguments(
        output_dir=out,
        max_steps=len(batches),
        per_device_train_batch_size=len(batches[0][0]),
        train_sampling_strategy="sequential",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        optimizers=(sgd(model.parameters()), None),
        callbacks=callbacks,
    )
    trainer.train()
    return stamps


def quartiles(values: list[float]) -> dict[str, float]:
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": q2, "q1": q1, "q3": q3}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=positive_int, default=80, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=15, help="steps left out of each run's median")
    parser.add_argument("--blocks", type=positive_int, default=5, help="interleaved blocks")
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--hidden", type=positive_int, default=256)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.warmup + 2 > args.steps:
        parser.error(f"`--warmup` must be >= 0 and leave at least 2 steps, got {args.warmup}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "transformers", "inertia"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import tempfile

    have = {"loop": True, "lightning": available("lightning"), "transformers": available("transformers")}
    variants = [v for v in VARIANTS if have[v.split("_")[0]]]
    batches = data(args.batch, args.steps)
    times: dict[str, list[float]] = {v: [] for v in variants}
    # the frameworks print (the Trainer's final metrics): keep stdout for the JSON document
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        for block in range(args.blocks):
            order = variants[block % len(variants) :] + variants[: block % len(variants)]
            for v in order:
                tracked = v.endswith(("_tracked", "_callback"))
                if v.startswith("loop"):
                    stamps = run_loop(batches, args.hidden, tracked)
                elif v.startswith("lightning"):
                    stamps = run_lightning(batches, args.hidden, tracked)
                else:
                    stamps = run_transformers(batches, args.hidden, tracked, tmp)
                times[v].append(per_step(stamps, args.warmup))
            print(f"block {block + 1}/{args.blocks} done", file=sys.stderr)

    per_variant = {v: {**quartiles(t), "per_block_ms": t} for v, t in times.items()}
    pairs: dict[str, Any] = {}
    for base, tracked in PAIRS.items():
        if base not in times:
            pairs[base] = None
            continue
        ratio = [b / a for a, b in zip(times[base], times[tracked], strict=True)]
        extra = [b - a for a, b in zip(times[base], times[tracked], strict=True)]
        pairs[base] = {"ratio": quartiles(ratio), "overhead_ms": quartiles(extra)}
        if base != "loop":
            tracker_ms = [b - a for a, b in zip(times["loop"], times["loop_tracked"], strict=True)]
            beyond = [e - t for e, t in zip(extra, tracker_ms, strict=True)]
            pairs[base]["beyond_tracker_ms"] = quartiles(beyond)
    doc = {
        "benchmark": "integration_overhead",
        "config": vars(args),
        "machine": machine_info(),
        "variants_ms_per_step": per_variant,
        "pairs": pairs,
    }
    for base, p in pairs.items():
        if p is None:
            print(f"{base}: not installed", file=sys.stderr)
            continue
        r, o = p["ratio"], p["overhead_ms"]
        line = (
            f"{base}: {per_variant[base]['median']:.3f} ms/step, with inertia x{r['median']:.3f} "
            f"(IQR {r['q1']:.3f}-{r['q3']:.3f}), +{o['median']:.3f} ms"
        )
        if "beyond_tracker_ms" in p:
            b = p["beyond_tracker_ms"]
            line += (
                f"; beyond the tracker's own cost {b['median']:+.3f} ms "
                f"(IQR {b['q1']:+.3f} to {b['q3']:+.3f})"
            )
        print(line, file=sys.stderr)
    emit(doc, args.out)
    return doc


if __name__ == "__main__":
    main()
