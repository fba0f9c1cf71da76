"""A tiny LightningModule on digits, fitted with :class:`inertia.integrations.lightning.InertiaCallback`.

Imported by ``test_integrations_lightning.py``; run as a script it is one DDP job (2 CPU
processes on gloo, Lightning's own launcher re-running this file for rank 1) that writes the
rank-0 history to ``<out>/history.csv`` and each rank's final parameters to ``<out>/rank<r>.pt``::

    python tests/_lightning_worker.py OUT_DIR OPTIMIZER
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from _framework_helpers import MemoryLogger, digits, make_optimizer, mlp
from inertia.integrations.lightning import InertiaCallback


class Logger(pl.loggers.Logger):
    """Lightning's ``Logger`` around :class:`MemoryLogger` (what the trainer's loggers receive)."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = MemoryLogger()

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.memory.log_metrics(metrics, step)


class DigitsModule(pl.LightningModule):
    """Cross-entropy of a float64 MLP; ``poison`` batches get an infinite loss (AMP skip)."""

    def __init__(self, optimizer: str = "sgd", poison: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.net = mlp(0)
        self.optimizer_name = optimizer
        self.poison = set(poison)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        if batch_idx in self.poison:
            loss = loss * float("inf")
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return make_optimizer(self.optimizer_name, self.net)


class TwoOptimizers(pl.LightningModule):
    """Manual optimization: the hidden layer and the output layer have their own SGD, stepped one
    after the other, each after its own backward of the same batch's loss."""

    def __init__(self) -> None:
        super().__init__()
        self.net = mlp(0)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        first, second = self.optimizers()
        for opt in (first, second):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.manual_backward(loss)
            opt.step()

    def configure_optimizers(self) -> Any:
        return (
            torch.optim.SGD(self.net[0].parameters(), lr=0.05, momentum=0.9),
            torch.optim.SGD(self.net[2].parameters(), lr=0.05, momentum=0.5),
        )


def loader(batch_size: int = 32) -> Any:
    x, y = digits()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def fit(
    module: Any, callback: InertiaCallback, *, batch_size: int = 32, epochs: int = 2, **trainer_kw: Any
) -> Any:
    """Fit ``module`` on the digits for ``epochs`` epochs; returns the trainer and its logger."""
    logger = Logger()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=[logger],
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **trainer_kw,
    )
    trainer.fit(module, loader(batch_size))
    return trainer, logger.memory


if __name__ == "__main__":
    out, optimizer = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    cb = InertiaCallback(run_dir=out / "run")
    trainer, _ = fit(
        DigitsModule(optimizer),
        cb,
        batch_size=8,
        epochs=1,
        strategy="ddp",
        devices=2,
        gradient_clip_val=0.5,
    )
    rank = trainer.global_rank
    torch.save([p.detach() for p in trainer.lightning_module.parameters()], out / f"rank{rank}.pt")
