"""Energy-based optimizers against tuned baselines, on problems that ship offline (issue 14).

Problems (``--problems``; data from NumPy seeds and scikit-learn's bundled datasets, no download):

* ``quad_1e2``, ``quad_1e4``, ``quad_1e6``: ``L = 1/2 theta^T A theta`` in float64, ``d = 50``,
  eigenvalues log-spaced in ``[1/kappa, 1]`` in a random basis; the seed draws ``theta_0``.
* ``logreg_1e2``, ``logreg_1e4``, ``logreg_1e6``: full-batch logistic regression in float64
  (800 train / 400 test examples, ``d = 20``) whose feature scales give the Hessian a condition
  number of about ``kappa``, plus an L2 term ``1e-3 / kappa``; labels drawn from a logistic
  model (not separable). ``L*`` is found by Newton's method; ``L - L*`` below ``1e-12 L*`` is
  rounding error and reported as ``1e-12 L*``, so that converged runs tie instead of being
  ranked by rounding noise.
* ``mlp_digits``: a 64-32-10 tanh MLP on scikit-learn's ``load_digits`` (float32, minibatch 64).
* ``mlp_cancer``: a 30-16-2 tanh MLP on ``load_breast_cancer`` (float32, minibatch 64).
* ``cnn_digits``: a small convnet (conv 8 + conv 16, 3x3, then linear) on the 8x8 digits.

Optimizers: ``sgd`` (heavy ball), ``nesterov``, ``adam``, ``adamw`` (``weight_decay = 1e-2``,
PyTorch's default), the same four wrapped in ``inertia.optim.EnergyRestart(rule="gradient")``
(``sgd+restart`` ...), and ``fire`` (``inertia.optim.FIRE``).

Protocol, the same for every optimizer: a grid of learning rates (4 values per family and
problem) times two momenta (``momentum`` or ``beta1`` in {0.9, 0.99}; FIRE: the time step
``dt = sqrt(lr_sgd)`` times ``alpha_start`` in {0.1, 0.25}), i.e. the same number of trials;
each trial is run on the tuning seed (0) and scored by its final training loss (of
``log(L - L*)`` on the convex problems); the best trial is then rerun on 5 fresh evaluation
seeds (100..104), and only those runs are reported: final training loss (``L - L*`` on convex
problems), test accuracy (classification), steps to a target training loss (censored at the
number of steps: a run that never reaches it counts as ``n_steps``) and, for wrapped runs, the
number of restarts; each as mean and standard error over the 5 seeds.

Verdicts: each wrapped optimizer against its own tuned base on each problem and metric, paired
by seed: ``win`` / ``loss`` when the mean paired difference exceeds 2.776 of its standard errors
(a two-sided paired t-test at 5 % with 4 degrees of freedom) in the wrapper's favour / against
it, else ``tie``. Lower is better for loss and steps, higher for accuracy.

Output: strict JSON on stdout and in ``--out`` (default ``runs/bench/optimizers.json``); a CSV
next to it (``optimizers.csv``: one row per problem and optimizer; columns ``problem,
optimizer, lr, momentum, final_loss_mean, final_loss_se, test_acc_mean, test_acc_se,
steps_to_target_mean, steps_to_target_se, reached, restarts_mean, diverged``), the verdicts
(``optimizers_verdicts.csv``: ``problem, optimizer, base, metric, diff_mean, diff_se,
verdict``) and a figure (``optimizers.png``: the mean training-loss curves of the tuned runs).
``--quick`` runs three small problems on a reduced grid (about a minute).

Run: ``python benchmarks/optimizers.py [--quick] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import numpy as np

log = logging.getLogger("benchmarks.optimizers")

FAMILIES = ("sgd", "nesterov", "adam", "adamw")
OPTIMIZERS = (*FAMILIES, *(f"{f}+restart" for f in FAMILIES), "fire")
MOMENTA = (0.9, 0.99)
FIRE_ALPHAS = (0.1, 0.25)
TUNE_SEEDS = (0,)
EVAL_SEEDS = (100, 101, 102, 103, 104)
T_CRIT = 2.776  # two-sided 5 % paired t-test, 4 degrees of freedom (5 seeds)


# ------------------------------------------------------------------------------------ problems


@dataclass
class Problem:
    """A training problem: a model factory, its loss, data and the benchmark's settings."""

    name: str
    n_steps: int
    sgd_lrs: tuple[float, ...]
    adam_lrs: tuple[float, ...]
    target: float  # training loss (L - L* on convex problems) that counts as reached
    convex: bool
    make: Callable[[int], Any]  # seed -> torch module (its parameters are trained)
    loss: Callable[[Any, Any], Any]  # (module, batch) -> scalar loss
    train: Any  # full training batch
    test: Any = None  # test batch (classification) or None
    batch: int = 0  # minibatch size (0: full batch)
    optimum: float = 0.0  # L* (convex problems)
    resolution: float = 0.0  # L - L* below this is rounding error: reported as this value
    eval_every: int = 1
    info: dict[str, Any] = field(default_factory=dict)


def _quadratic(kappa: float, n_steps: int) -> Problem:
    import torch

    d = 50
    rng = np.random.default_rng(int(math.log10(kappa)))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.geomspace(1.0 / kappa, 1.0, d)
    a = torch.tensor((q * lam) @ q.T, dtype=torch.float64)

    class Point(torch.nn.Module):
        def __init__(self, seed: int) -> None:
            super().__init__()
            theta0 = np.random.default_rng(seed).standard_normal(d)
            self.theta = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))

    def loss(m: Any, _: Any) -> Any:
        return 0.5 * m.theta @ a @ m.theta

    return Problem(
        f"quad_1e{round(math.log10(kappa))}",
        n_steps,
        sgd_lrs=(0.1, 0.3, 1.0, 3.0),
        adam_lrs=(3e-3, 1e-2, 3e-2, 1e-1),
        target=1e-3 * 0.5 * float(lam.sum()),  # 1e-3 of E[L(theta_0)]
        convex=True,
        make=Point,
        loss=loss,
        train=None,
        info={"d": d, "kappa": kappa},
    )


def _newton_logreg(x: np.ndarray, y: np.ndarray, reg: float) -> float:
    """``min_w mean(log(1 + exp(-s w.x))) + reg/2 |w|^2`` by Newton's method (``s = 2y - 1``)."""
    w = np.zeros(x.shape[1])
    s = 2.0 * y - 1.0
    for _ in range(100):
        z = s * (x @ w)
        p = 1.0 / (1.0 + np.exp(z))  # sigma(-z)
        grad = -(x.T @ (s * p)) / len(y) + reg * w
        hess = (x.T * (p * (1 - p))) @ x / len(y) + reg * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-15:
            break
    z = s * (x @ w)
    return float(np.mean(np.logaddexp(0.0, -z)) + 0.5 * reg * w @ w)


def _logreg(kappa: float, n_steps: int) -> Problem:
    import torch

    d, n_train, n_test = 20, 800, 400
    rng = np.random.default_rng(10 + int(math.log10(kappa)))
    scales = np.sqrt(np.geomspace(1.0 / kappa, 1.0, d))
    x = rng.standard_normal((n_train + n_test, d)) * scales
    w_true = rng.standard_normal(d) / scales * 0.5  # every direction matters for the labels
    y = (rng.random(n_train + n_test) < 1.0 / (1.0 + np.exp(-x @ w_true))).astype(np.float64)
    reg = 1e-3 / kappa
    optimum = _newton_logreg(x[:n_train], y[:n_train], reg)
    xt = torch.tensor(x, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    train, test = (xt[:n_train], yt[:n_train]), (xt[n_train:], yt[n_train:])

    class Linear(torch.nn.Module):
        def __init__(self, seed: int) -> None:
            super().__init__()
            w0 = 0.1 * np.random.default_rng(seed).standard_normal(d)
            self.w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))

        def forward(self, inputs: Any) -> Any:
            return inputs @ self.w

    def loss(m: Any, batch: Any) -> Any:
        logits = m(batch[0])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch[1])
        return bce + 0.5 * reg * (m.w @ m.w)

    return Problem(
        f"logreg_1e{round(math.log10(kappa))}",
        n_steps,
        sgd_lrs=(0.3, 1.0, 3.0, 10.0),
        adam_lrs=(3e-3, 1e-2, 3e-2, 1e-1),
        target=1e-3,
        convex=True,
        make=Linear,
        loss=loss,
        train=train,
        test=test,
        optimum=optimum,
        resolution=1e-12 * abs(optimum),
        info={"d": d, "kappa": kappa, "n_train": n_train, "n_test": n_test, "l2": reg},
    )


def _split(x: np.ndarray, y: np.ndarray, seed: int, dtype: Any) -> tuple[Any, Any]:
    import torch

    idx = np.random.default_rng(seed).permutation(len(x))
    n_test = len(x) // 5
    test, train = idx[:n_test], idx[n_test:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=torch.int64)
    return (xt[train], yt[train]), (xt[test], yt[test])


def _classifier(name: str, n_steps: int, target: float, conv: bool = False) -> Problem:
    import torch
    from sklearn.datasets import load_breast_cancer, load_digits

    data = load_digits() if "digits" in name else load_breast_cancer()
    x, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target)
    train, test = _split(x, y, seed=7, dtype=torch.float32)
    n_in, n_out = x.shape[1], int(y.max()) + 1

    def make(seed: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if conv:
                return torch.nn.Sequential(
                    torch.nn.Unflatten(1, (1, 8, 8)),
                    torch.nn.Conv2d(1, 8, 3, padding=1),
                    torch.nn.ReLU(),
                    torch.nn.Conv2d(8, 16, 3, padding=1, stride=2),
                    torch.nn.ReLU(),
                    torch.nn.Flatten(),
                    torch.nn.Linear(16 * 4 * 4, n_out),
                )
            hidden = 32 if n_in == 64 else 16
            return torch.nn.Sequential(
                torch.nn.Linear(n_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_out)
            )

    def loss(m: Any, batch: Any) -> Any:
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return Problem(
        name,
        n_steps,
        sgd_lrs=(0.01, 0.03, 0.1, 0.3),
        adam_lrs=(3e-4, 1e-3, 3e-3, 1e-2),
        target=target,
        convex=False,
        make=make,
        loss=loss,
        train=train,
        test=test,
        batch=64,
        eval_every=10,
        info={"n_train": len(train[1]), "n_test": len(test[1]), "features": n_in, "classes": n_out},
    )


def make_problem(name: str, quick: bool) -> Problem:
    """The problem called ``name`` (fewer steps with ``quick``)."""
    if name.startswith("quad_"):
        return _quadratic(float(name.split("_")[1]), 100 if quick else 400)
    if name.startswith("logreg_"):
        return _logreg(float(name.split("_")[1]), 100 if quick else 400)
    if name == "mlp_digits":
        return _classifier(name, 60 if quick else 300, target=0.1)
    if name == "mlp_cancer":
        return _classifier(name, 60 if quick else 300, target=0.1)
    if name == "cnn_digits":
        return _classifier(name, 60 if quick else 200, target=0.2, conv=True)
    raise ValueError(f"unknown problem {name!r}")


#: in the order they run (the JSON is rewritten after each problem, so a run cut short keeps
#: the problems it finished): one of each kind first
PROBLEMS = (
    "quad_1e4",
    "mlp_digits",
    "logreg_1e4",
    "cnn_digits",
    "mlp_cancer",
    "quad_1e2",
    "logreg_1e2",
    "quad_1e6",
    "logreg_1e6",
)
QUICK_PROBLEMS = ("quad_1e4", "logreg_1e2", "mlp_cancer")


# ------------------------------------------------------------------------------------ runs


def grid(problem: Problem, optimizer: str, quick: bool) -> list[tuple[float, float]]:
    """The ``(lr, momentum)`` trials of ``optimizer`` (FIRE: ``(dt, alpha_start)``)."""
    family = optimizer.split("+")[0]
    if family == "fire":
        lrs, seconds = tuple(math.sqrt(lr) for lr in problem.sgd_lrs), FIRE_ALPHAS
    else:
        lrs, seconds = (problem.adam_lrs if family.startswith("adam") else problem.sgd_lrs), MOMENTA
    if quick:
        lrs, seconds = lrs[1:3], seconds[:1]
    return [(lr, m) for lr in lrs for m in seconds]


def build(optimizer: str, params: Any, lr: float, second: float) -> Any:
    import torch

    from inertia.optim import FIRE, EnergyRestart

    family = optimizer.split("+")[0]
    if family == "fire":
        return FIRE(params, lr=lr, alpha_start=second)
    if family in ("sgd", "nesterov"):
        opt = torch.optim.SGD(params, lr=lr, momentum=second, nesterov=family == "nesterov")
    elif family == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=(second, 0.999))
    else:
        opt = torch.optim.AdamW(params, lr=lr, betas=(second, 0.999), weight_decay=1e-2)
    return EnergyRestart(opt, rule="gradient") if optimizer.endswith("+restart") else opt


def run(problem: Problem, optimizer: str, lr: float, second: float, seed: int) -> dict[str, Any]:
    """One training run; returns its metrics and its training-loss curve."""
    import torch

    model = problem.make(seed)
    opt = build(optimizer, list(model.parameters()), lr, second)
    gen = np.random.default_rng(seed + 10_000)
    n_train = 0 if problem.train is None else len(problem.train[1])
    order: list[int] = []
    curve: list[float] = []
    steps_to_target = problem.n_steps
    diverged = False

    def full_loss() -> float:
        with torch.no_grad():
            value = float(problem.loss(model, problem.train)) - problem.optimum
        return max(value, problem.resolution) if problem.convex else value

    for step in range(problem.n_steps):
        if problem.batch:
            if len(order) < problem.batch:
                order = list(gen.permutation(n_train))
            idx, order = order[: problem.batch], order[problem.batch :]
            batch = (problem.train[0][idx], problem.train[1][idx])
        else:
            batch = problem.train
        if step % problem.eval_every == 0:
            value = full_loss()
            curve.append(value)
            if value <= problem.target and steps_to_target == problem.n_steps:
                steps_to_target = step
        opt.zero_grad()
        loss = problem.loss(model, batch)
        if not torch.isfinite(loss):
            diverged = True
            break
        loss.backward()
        opt.step()
    final = full_loss() if not diverged else math.inf
    diverged = diverged or not math.isfinite(final)
    out: dict[str, Any] = {
        "seed": seed,
        "final_loss": math.inf if diverged else final,
        "steps_to_target": steps_to_target,
        "reached": steps_to_target < problem.n_steps,
        "diverged": diverged,
        "restarts": len(opt.restarts) if hasattr(opt, "restarts") else None,
        "curve": curve,
    }
    if problem.test is not None and not diverged:
        with torch.no_grad():
            logits = model(problem.test[0])
            pred = (logits > 0).long() if logits.ndim == 1 else logits.argmax(dim=1)
            out["test_acc"] = float((pred == problem.test[1].long()).double().mean())
    return out


def score(problem: Problem, runs: list[dict[str, Any]]) -> float:
    """The tuning criterion: mean final training loss (of ``log(L - L*)`` when convex)."""
    vals = []
    for r in runs:
        v = r["final_loss"]
        if not math.isfinite(v):
            return math.inf
        vals.append(math.log(max(v, 1e-300)) if problem.convex else v)
    return float(np.mean(vals))


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (NaN when undefined)."""
    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(vals) == 0 or not np.all(np.isfinite(vals)):
        return (math.nan if len(vals) == 0 else float(np.mean(vals)), math.nan)
    se = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else math.nan
    return float(np.mean(vals)), se


def verdict(base: list[float], wrapped: list[float], higher_is_better: bool) -> dict[str, Any]:
    """Paired comparison over seeds: ``win``/``loss``/``tie`` for the wrapped optimizer."""
    b, w = np.asarray(base, dtype=np.float64), np.asarray(wrapped, dtype=np.float64)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(w))):
        fin_b, fin_w = np.all(np.isfinite(b)), np.all(np.isfinite(w))
        v = "tie" if fin_b == fin_w else ("win" if fin_w else "loss")
        return {"diff_mean": math.nan, "diff_se": math.nan, "verdict": v}
    diff = w - b if higher_is_better else b - w  # positive: the wrapper is better
    mean = float(diff.mean())
    se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
    if se == 0.0 or not math.isfinite(se):
        v = "tie" if mean == 0.0 else ("win" if mean > 0 else "loss")
    else:
        v = "win" if mean > T_CRIT * se else ("loss" if mean < -T_CRIT * se else "tie")
    return {"diff_mean": mean, "diff_se": se, "verdict": v}


def bench_problem(
    problem: Problem, quick: bool, tune_seeds: tuple[int, ...], eval_seeds: tuple[int, ...]
) -> dict:
    """Tune every optimizer on ``problem``, rerun the best trial on the evaluation seeds."""
    out: dict[str, Any] = {"info": {**problem.info, "n_steps": problem.n_steps, "target": problem.target}}
    results: dict[str, Any] = {}
    for name in OPTIMIZERS:
        t0 = time.perf_counter()
        trials = []
        for lr, second in grid(problem, name, quick):
            runs = [run(problem, name, lr, second, s) for s in tune_seeds]
            trials.append({"lr": lr, "momentum": second, "score": score(problem, runs)})
        best = min(trials, key=lambda t: t["score"])
        evals = [run(problem, name, best["lr"], best["momentum"], s) for s in eval_seeds]
        summary: dict[str, Any] = {"lr": best["lr"], "momentum": best["momentum"], "trials": trials}
        for metric in ("final_loss", "steps_to_target", "test_acc", "restarts"):
            vals = [r.get(metric) for r in evals]
            if all(v is None for v in vals):
                continue
            m, se = mean_se([math.nan if v is None else float(v) for v in vals])
            summary[f"{metric}_mean"], summary[f"{metric}_se"] = m, se
        summary["reached"] = sum(r["reached"] for r in evals)
        summary["diverged"] = sum(r["diverged"] for r in evals)
        summary["runs"] = [{k: v for k, v in r.items() if k != "curve"} for r in evals]
        curves = [r["curve"] for r in evals if not r["diverged"]]
        n = min((len(c) for c in curves), default=0)
        summary["curve_mean"] = np.mean([c[:n] for c in curves], axis=0).tolist() if curves else []
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        results[name] = summary
        log.info(
            "%s %-16s lr=%-8.3g m=%-5g final=%.3g +- %.2g (%.1fs)",
            problem.name,
            name,
            best["lr"],
            best["momentum"],
            summary.get("final_loss_mean", math.nan),
            summary.get("final_loss_se", math.nan),
            summary["seconds"],
        )
    out["optimizers"] = results
    verdicts = []
    for fam in FAMILIES:
        base, wrapped = results[fam], results[f"{fam}+restart"]
        for metric, higher in (("final_loss", False), ("steps_to_target", False), ("test_acc", True)):
            b = [r.get(metric) for r in base["runs"]]
            w = [r.get(metric) for r in wrapped["runs"]]
            if any(v is None for v in b + w):
                continue
            verdicts.append(
                {
                    "optimizer": f"{fam}+restart",
                    "base": fam,
                    "metric": metric,
                    **verdict([float(v) for v in b], [float(v) for v in w], higher),
                }
            )
    out["verdicts"] = verdicts
    return out


# ------------------------------------------------------------------------------------ output

CSV_COLUMNS = (
    "problem",
    "optimizer",
    "lr",
    "momentum",
    "final_loss_mean",
    "final_loss_se",
    "test_acc_mean",
    "test_acc_se",
    "steps_to_target_mean",
    "steps_to_target_se",
    "reached",
    "restarts_mean",
    "diverged",
)
VERDICT_COLUMNS = ("problem", "optimizer", "base", "metric", "diff_mean", "diff_se", "verdict")


def write_tables(doc: dict[str, Any], out: Path) -> list[Path]:
    """The CSV tables and the figure next to the JSON file ``out``."""
    table, verdicts = out.with_suffix(".csv"), out.with_name(out.stem + "_verdicts.csv")
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for pname, p in doc["problems"].items():
            for oname, o in p["optimizers"].items():
                row = {"problem": pname, "optimizer": oname, **o}
                w.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    with verdicts.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(VERDICT_COLUMNS)
        for pname, p in doc["problems"].items():
            for v in p["verdicts"]:
                w.writerow([_cell({"problem": pname, **v}.get(c)) for c in VERDICT_COLUMNS])
    return [table, verdicts, figure(doc, out.with_suffix(".png"))]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def figure(doc: dict[str, Any], path: Path) -> Path:
    """Mean training-loss curves of the tuned runs, one panel per problem (log scale)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    problems = list(doc["problems"].items())
    cols = 3
    rows = math.ceil(len(problems) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    colors = dict(
        zip((*FAMILIES, "fire"), ("tab:blue", "tab:red", "tab:green", "tab:purple", "black"), strict=True)
    )
    for ax, (pname, p) in zip(axes.ravel(), problems, strict=False):
        every = 1 if pname.startswith(("quad", "logreg")) else 10
        for oname, o in p["optimizers"].items():
            curve = np.asarray(o["curve_mean"], dtype=np.float64)
            if len(curve) == 0:
                continue
            fam = oname.split("+")[0]
            style = "--" if oname.endswith("+restart") else "-"
            x = np.arange(len(curve)) * every
            ax.semilogy(x, np.maximum(curve, 1e-300), style, color=colors[fam], linewidth=1.2, label=oname)
        ax.set_title(pname, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in axes.ravel()[len(problems) :]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("training loss (L - L* if convex)", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(
        "Tuned optimizers, mean of 5 evaluation seeds (dashed: wrapped in EnergyRestart)", fontsize=11
    )
    fig.savefig(path, dpi=100)
    return path


def totals(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``metric -> {win, tie, loss}`` counts over every problem and family."""
    out: dict[str, dict[str, int]] = {}
    for p in doc["problems"].values():
        for v in p["verdicts"]:
            out.setdefault(v["metric"], {"win": 0, "tie": 0, "loss": 0})[v["verdict"]] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three small problems, reduced grid (~1 min)")
    parser.add_argument(
        "--problems",
        type=_common.variant_list(PROBLEMS),
        default=None,
        help="comma-separated subset of " + ",".join(PROBLEMS),
    )
    parser.add_argument(
        "--out", default="runs/bench/optimizers.json", help="JSON output (CSV/PNG next to it)"
    )
    parser.add_argument("--threads", type=_common.positive_int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--tables-from",
        metavar="JSON",
        default=None,
        help="only (re)write the CSV tables and the figure of a finished or partial JSON, next to it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.tables_from:
        for path in write_tables(json.loads(Path(args.tables_from).read_text()), Path(args.tables_from)):
            log.info("wrote %s", path)
        return 0
    if not _common.available("torch", "sklearn"):
        _common.emit({"benchmark": "optimizers", "skipped": _common.SKIPPED_TORCH}, args.out)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    names = args.problems or (QUICK_PROBLEMS if args.quick else PROBLEMS)
    tune, evals = (TUNE_SEEDS[:1], EVAL_SEEDS[:2]) if args.quick else (TUNE_SEEDS, EVAL_SEEDS)
    t0 = time.perf_counter()
    machine = {**_common.machine_info(), "torch": torch.__version__, "torch_threads": args.threads}
    machine["loadavg_before"] = list(os.getloadavg())
    doc: dict[str, Any] = {
        "benchmark": "optimizers",
        "config": {
            "quick": args.quick,
            "problems": list(names),
            "optimizers": list(OPTIMIZERS),
            "momenta": list(MOMENTA),
            "fire_alpha_start": list(FIRE_ALPHAS),
            "tune_seeds": list(tune),
            "eval_seeds": list(evals),
            "t_crit": T_CRIT,
        },
        "problems": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        problem = make_problem(name, args.quick)
        doc["problems"][name] = bench_problem(problem, args.quick, tune, evals)
        doc["totals"] = totals(doc)
        partial = out.with_name(out.stem + "_partial.json")  # what is done so far
        partial.write_text(json.dumps(_common.finite_or_null(doc), allow_nan=False) + "\n")
    machine["loadavg_after"] = list(os.getloadavg())
    machine["wall_s"] = round(time.perf_counter() - t0, 1)
    doc["machine"] = machine
    _common.emit(doc, str(out))
    partial.unlink(missing_ok=True)
    for path in write_tables(doc, out):
        log.info("wrote %s", path)
    for metric, counts in doc["totals"].items():
        log.info(
            "restart vs base, %s: %d wins, %d ties, %d losses",
            metric,
            counts["win"],
            counts["tie"],
            counts["loss"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
