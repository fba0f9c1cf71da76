"""Track computational inertia in your own training loop: three lines.

A plain PyTorch loop (an MLP on scikit-learn's bundled handwritten digits, no download) with the
three lines that add ``inertia`` marked ``# 1``, ``# 2`` and ``# 3``. The tracker reads the
kinetic energy out of the optimizer's momentum buffer, pairs it with the loss, and books each
step's change of ``I = K + V`` into its ledger; the :class:`~inertia.track.RunLog` writes every
row to a run directory as it goes and finalises it as Parquet at the end.

Run it with::

    .venv/bin/python examples/track_digits.py                    # runs/track-digits-<time>/
    .venv/bin/python examples/track_digits.py --epochs 2 --out /tmp/my-run
    .venv/bin/inertia report /tmp/my-run                          # figures + report.html
"""

from __future__ import annotations

import argparse
import time

import torch
from sklearn.datasets import load_digits

from inertia.track import InertiaTracker, RunLog

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--out", default=f"runs/track-digits-{time.strftime('%Y%m%d-%H%M%S')}")
args = parser.parse_args()

torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
X = torch.tensor((X - X.mean(0)) / (X.std(0) + 1e-8), dtype=torch.float32)
y = torch.tensor(y)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32, shuffle=True)
model = torch.nn.Sequential(
    torch.nn.Linear(64, 64),
    torch.nn.Tanh(),
    torch.nn.Linear(64, 64),
    torch.nn.Tanh(),
    torch.nn.Linear(64, 10),
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
loss_fn = torch.nn.CrossEntropyLoss()

tracker = InertiaTracker(optimizer, sinks=[RunLog(args.out, config={"lr": 0.05, "momentum": 0.9})])  # 1
for _epoch in range(args.epochs):
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        tracker.record(loss)  # 2: right after every optimizer.step(), with the loss that step used
tracker.close()  # 3: finalises history.parquet and the manifest

df = tracker.history  # the same rows as inertia.track.read_history(args.out)
print(df[["step", "kinetic", "potential", "inertia", "delta_inertia", "residual"]].tail())
print(f"run directory: {args.out}  (render it with: inertia report {args.out})")
