"""Cost of :mod:`inertia.curvature` and of the tracker's sharpness columns (issue 12, item 6).

An MLP (``--inputs``-``--hidden``-``--hidden``-``--classes``, tanh, cross entropy, float32) on one
synthetic batch (nothing downloaded). Measured in interleaved blocks (the order rotates from
block to block, so that contention from other processes hits every variant alike), medians over
blocks, in ms:

* ``grad``: one forward + backward (``loss.backward()``): the unit of cost;
* ``hvp_double_backward``: one product on a kept gradient graph (what Lanczos pays per
  iteration after the first; :class:`inertia.curvature.HessianOperator`'s default);
* ``hvp_double_backward_fresh``: forward, ``create_graph`` backward and one product;
* ``hvp_forward_over_reverse``: one ``torch.func.jvp`` of ``torch.func.grad`` (every product
  pays the forward and backward again).

Ratios ``hvp_*/grad`` (goal for the default mode: ``<= 2.5``) and which mode is faster per
iteration (the library's default must be that one).

Eigenvalues: :func:`inertia.curvature.top_eigenvalues` (Lanczos, ``tol = --tol``) for ``k = 1``
and ``k = 3``: wall time, products (iterations), eigenvalues per second; and PyHessian's power
iteration (``pyhessian.hessian(...).eigenvalues(top_n=k, tol=--tol)``, the ``bench`` extra) on
the same model and batch where it is installed (else ``skipped``), with the relative difference
of the two top eigenvalues.

Tracker: ``--steps`` SGD steps per block without the tracker, with ``InertiaTracker`` (cheap
mode), and with ``sharpness_every = --sharpness-every``; ``overhead_sharpness = t_sharp / t_cheap
- 1`` (the sharpness's own cost) and against the bare loop.

``--device cuda`` runs the same on a GPU (skipped with a message without CUDA). The JSON goes to
stdout (and to ``--out``); the verdict lines to stderr. The test suite runs it on a tiny size and
checks the keys only (performance is not a unit test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common
import torch

from inertia import curvature
from inertia.track import InertiaTracker

HVP_GOAL = 2.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inputs", type=_common.positive_int, default=256, help="input width (default 256)")
    p.add_argument("--hidden", type=_common.positive_int, default=256, help="hidden width (default 256)")
    p.add_argument("--classes", type=_common.positive_int, default=10, help="classes (default 10)")
    p.add_argument("--batch", type=_common.positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--blocks", type=_common.positive_int, default=15, help="interleaved blocks (default 15)")
    p.add_argument("--reps", type=_common.positive_int, default=10, help="calls per block (default 10)")
    p.add_argument("--tol", type=_common.positive_float, default=1e-3, help="eigenvalue tolerance (1e-3)")
    p.add_argument("--steps", type=_common.positive_int, default=200, help="tracker steps per block (200)")
    p.add_argument("--tracker-blocks", type=_common.positive_int, default=3, help="tracker blocks (3)")
    p.add_argument("--sharpness-every", type=_common.positive_int, default=100, help="(default 100)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: as given)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--no-peers", action="store_true", help="treat PyHessian as not installed")
    p.add_argument("--seed", type=int, default=0, help="seed of data and model")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    return p.parse_args(argv)


def make(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(args.inputs, args.hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.Tanh(),
        torch.nn.Linear(args.hidden, args.classes),
    ).to(args.device)
    x = torch.randn(args.batch, args.inputs, generator=g).to(args.device)
    y = torch.randint(0, args.classes, (args.batch,), generator=g).to(args.device)
    return net, x, y


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], Any]], blocks: int, reps: int, device: str) -> dict[str, Any]:
    """Median (and quartiles) over blocks of the per-call time of each function, in ms."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for fn in fns.values():  # warm-up
        fn()
    for b in range(blocks):
        order = names[b % len(names) :] + names[: b % len(names)]
        for n in order:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                fns[n]()
            _sync(device)
            times[n].append(1e3 * (time.perf_counter() - t0) / reps)
    return {n: _common.stats(v) for n, v in times.items()}


def hvp_costs(args: argparse.Namespace) -> dict[str, Any]:
    net, x, y = make(args)
    ce = torch.nn.functional.cross_entropy
    params = list(net.parameters())
    loss = curvature.model_loss(net, ce, (x, y))
    kept = curvature.HessianOperator(loss, params)
    fwd = curvature.HessianOperator(loss, params, mode="forward_over_reverse")
    u = torch.randn(kept.n, generator=torch.Generator().manual_seed(1)).to(args.device)

    def grad() -> None:
        net.zero_grad(set_to_none=True)
        ce(net(x), y).backward()

    def fresh() -> None:
        kept.release()
        kept.hessian(u)

    fns = {
        "grad": grad,
        "hvp_double_backward": lambda: kept.hessian(u),
        "hvp_double_backward_fresh": fresh,
        "hvp_forward_over_reverse": lambda: fwd.hessian(u),
    }
    t = interleaved(fns, args.blocks, args.reps, args.device)
    g = t["grad"]["median"]
    ratios = {f"{k}_over_grad": _common.ratio(v["median"], g) for k, v in t.items() if k != "grad"}
    faster = min(("double_backward", "forward_over_reverse"), key=lambda m: t[f"hvp_{m}"]["median"])
    return {"n_params": kept.n, "ms": t, "ratios": ratios, "faster_mode": faster}


def eigen_costs(args: argparse.Namespace) -> dict[str, Any]:
    net, x, y = make(args)
    ce = torch.nn.functional.cross_entropy
    params = list(net.parameters())
    ref_op = curvature.HessianOperator(curvature.model_loss(net, ce, (x, y)), params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = curvature.lanczos(ref_op.matvec, ref_op.n, 3, tol=1e-9, max_iter=400, dtype=ref_op.dtype).values
    out: dict[str, Any] = {"reference_top3": ref.tolist()}
    for k in (1, 3):
        op = curvature.HessianOperator(curvature.model_loss(net, ce, (x, y)), params)
        _sync(args.device)
        t0 = time.perf_counter()
        spec = curvature.lanczos(
            op.matvec, op.n, k, tol=args.tol, max_iter=300, dtype=op.dtype, device=op.device
        )
        _sync(args.device)
        dt = time.perf_counter() - t0
        out[f"inertia_lanczos_k{k}"] = {
            "seconds": dt,
            "n_hvp": op.n_hvp,
            "eigenvalues": spec.values.tolist(),
            "eigenvalues_per_second": k / dt,
            "relative_error": float(max(abs(spec.values - ref[:k]) / abs(ref[:k]))),
        }
    if args.no_peers or not _common.available("pyhessian"):
        out["pyhessian"] = _common.SKIPPED_BENCH
        return out
    from pyhessian import hessian

    for k in (1, 3):
        torch.manual_seed(args.seed)  # PyHessian draws its start vectors from the global RNG
        _sync(args.device)
        t0 = time.perf_counter()
        h = hessian(net, ce, data=(x, y), cuda=args.device.startswith("cuda"))
        values, _ = h.eigenvalues(maxIter=300, tol=args.tol, top_n=k)
        _sync(args.device)
        dt = time.perf_counter() - t0
        ours = out[f"inertia_lanczos_k{k}"]["eigenvalues"][0]
        out[f"pyhessian_power_k{k}"] = {
            "seconds": dt,
            "eigenvalues": [float(v) for v in values],
            "eigenvalues_per_second": k / dt,
            "top_relative_difference": abs(float(max(values)) - ours) / abs(ours),
            "relative_error": float(max(abs(sorted(values, reverse=True) - ref[:k]) / abs(ref[:k]))),
        }
        out[f"speedup_k{k}"] = _common.ratio(dt, out[f"inertia_lanczos_k{k}"]["seconds"])
    return out


def tracker_costs(args: argparse.Namespace) -> dict[str, Any]:
    ce = torch.nn.functional.cross_entropy
    runs: dict[str, Any] = {}
    for variant in ("bare", "tracker", "sharpness"):
        net, x, y = make(args)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        tracker = None
        if variant != "bare":
            every = args.sharpness_every if variant == "sharpness" else None
            tracker = InertiaTracker(opt, sharpness_every=every)

        def step(net: Any = net, opt: Any = opt, tracker: Any = tracker, x: Any = x, y: Any = y) -> None:
            opt.zero_grad()
            loss = ce(net(x), y)
            loss.backward()
            opt.step()
            if tracker is not None:
                tracker.record(loss, lambda: ce(net(x), y))

        runs[variant] = (step, tracker)
    fns = {v: runs[v][0] for v in runs}
    t = interleaved(fns, args.tracker_blocks, args.steps, args.device)
    n_hvp = [r["n_hvp"] for r in runs["sharpness"][1].rows if r["n_hvp"]]
    med = {v: t[v]["median"] for v in t}
    return {
        "ms_per_step": t,
        "sharpness_every": args.sharpness_every,
        "n_hvp_per_sharpness_step": statistics.median(n_hvp) if n_hvp else None,
        "overhead_sharpness_vs_tracker": _ratio_minus_one(med["sharpness"], med["tracker"]),
        "overhead_sharpness_vs_bare": _ratio_minus_one(med["sharpness"], med["bare"]),
        "overhead_tracker_vs_bare": _ratio_minus_one(med["tracker"], med["bare"]),
    }


def _ratio_minus_one(a: float, b: float) -> float | None:
    r = _common.ratio(a, b)
    return None if r is None else r - 1.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_peers:
        os.environ[_common.HIDE_ENV] = "pyhessian"
    doc: dict[str, Any] = {"benchmark": "curvature", "machine": _common.machine_info(), "args": vars(args)}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        doc["skipped"] = "no CUDA device: no GPU figure measured"
        _common.emit(doc, args.out)
        print("curvature: skipped (no CUDA device)", file=sys.stderr)
        return 0
    doc["device"] = args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name()
    doc["hvp"] = hvp_costs(args)
    doc["eigenvalues"] = eigen_costs(args)
    doc["tracker"] = tracker_costs(args)
    default = curvature.HessianOperator.__init__.__kwdefaults__["mode"]  # type: ignore[index]
    ratio = doc["hvp"]["ratios"][f"hvp_{default}_over_grad"]
    doc["goals"] = {
        "hvp_over_grad": _common.goal("HVP / gradient (default mode, kept graph)", ratio, HVP_GOAL),
        "default_is_faster": {
            "value": default,
            "faster": doc["hvp"]["faster_mode"],
            "met": default == doc["hvp"]["faster_mode"],
        },
    }
    doc["machine"]["loadavg_end"] = list(os.getloadavg())
    _common.emit(doc, args.out)
    print(doc["goals"]["hvp_over_grad"]["verdict"], file=sys.stderr)
    print(f"default HVP mode {default}; faster here: {doc['hvp']['faster_mode']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
