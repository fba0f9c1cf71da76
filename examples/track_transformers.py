"""Track computational inertia in a Hugging Face ``Trainer`` run: one callback.

A one-layer GPT-2 built from a config (random weights, nothing downloaded) learns a synthetic
counting pattern, trained by the ``Trainer`` with gradient accumulation, clipping and a linear
schedule. The two lines that add ``inertia`` are marked ``# 1`` and ``# 2``: the callback hands
the tracker's columns to the ``Trainer``'s logging integrations (here TensorBoard, if installed:
``<out>/tensorboard``, scalars ``train/inertia/kinetic``, ...) and writes a run directory with
its report.

Run it with (needs ``pip install computational-inertia[transformers]``)::

    .venv/bin/python examples/track_transformers.py               # runs/track-transformers-<time>/
    .venv/bin/python examples/track_transformers.py --steps 50 --out /tmp/hf-run
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import torch
import transformers

from inertia.integrations.transformers import InertiaCallback

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--out", default=f"runs/track-transformers-{time.strftime('%Y%m%d-%H%M%S')}")
args = parser.parse_args()

torch.manual_seed(0)
vocab, length = 64, 16
config = transformers.GPT2Config(
    vocab_size=vocab, n_positions=length, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
)
model = transformers.GPT2LMHeadModel(config)
start = torch.randint(0, vocab, (512, 1))
ids = (start + torch.arange(length)) % vocab  # each sequence counts up from a random token
dataset = [{"input_ids": row, "labels": row.clone()} for row in ids]

has_tensorboard = importlib.util.find_spec("tensorboard") is not None
os.environ.setdefault("TENSORBOARD_LOGGING_DIR", f"{args.out}/tensorboard")
callback = InertiaCallback(run_dir=f"{args.out}/inertia", report=True)  # 1
trainer = transformers.Trainer(
    model=model,
    args=transformers.TrainingArguments(
        output_dir=f"{args.out}/trainer",
        max_steps=args.steps,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,
        learning_rate=0.05,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        logging_steps=20,
        report_to=["tensorboard"] if has_tensorboard else "none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    ),
    train_dataset=dataset,
    optimizers=(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), None),
    callbacks=[callback],  # 2
)
trainer.train()
print(callback.history[["step", "lr", "kinetic", "potential", "inertia", "schedule", "residual"]].tail())
print(f"report: {callback.reports[0]}")
