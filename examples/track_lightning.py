"""Track computational inertia in a PyTorch Lightning run: one callback.

An MLP on scikit-learn's bundled handwritten digits (no download), trained by Lightning with
gradient accumulation and clipping. The two lines that add ``inertia`` are marked ``# 1`` and
``# 2``: the callback logs the tracker's columns through the trainer's loggers (here Lightning's
``CSVLogger``: ``<out>/lightning/version_0/metrics.csv``, columns ``inertia/kinetic``, ...) and
writes a run directory with its report.

Run it with (needs ``pip install computational-inertia[lightning]``)::

    .venv/bin/python examples/track_lightning.py                 # runs/track-lightning-<time>/
    .venv/bin/python examples/track_lightning.py --epochs 2 --out /tmp/pl-run
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits

from inertia.integrations.lightning import InertiaCallback

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--out", default=f"runs/track-lightning-{time.strftime('%Y%m%d-%H%M%S')}")
args = parser.parse_args()


class Digits(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


pl.seed_everything(0)
X, y = load_digits(return_X_y=True)
X = torch.tensor((X - X.mean(0)) / (X.std(0) + 1e-8), dtype=torch.float32)
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(X, torch.tensor(y)), batch_size=32, shuffle=True
)
callback = InertiaCallback(run_dir=f"{args.out}/inertia", report=True)  # 1
trainer = pl.Trainer(
    max_epochs=args.epochs,
    accelerator="cpu",
    callbacks=[callback],  # 2
    logger=pl.loggers.CSVLogger(args.out, name="lightning"),
    accumulate_grad_batches=2,
    gradient_clip_val=1.0,
    log_every_n_steps=1,
    enable_progress_bar=False,
    enable_checkpointing=False,
)
trainer.fit(Digits(), loader)
print(callback.history[["step", "kinetic", "potential", "inertia", "delta_inertia", "residual"]].tail())
print(f"report: {callback.reports[0]}")
