"""Scaling of ``inertia.simulate`` (issue 4, item 3): cost against ``n_paths``, ``d`` and
``n_steps`` on problem B1, and where the fixed per-step overhead ends and the generator or
bandwidth bound begins.

Problem B1: ``L = 1/2 sum_i lambda_i theta_i^2`` (``potentials.Quadratic``, diagonal), ``lambda``
log-spaced in ``[0.01, 1]``, ``gamma = 0.5``, ``sigma = 0.1``, ``dt = 0.01``, ``theta0 = 1``,
``v0 = 0``, BAOAB with noise, ``save_every = n_steps`` (energies at the first and last step only;
``--save-every`` to change), one ``(n_paths, d)`` array per backend: torch float32 on CPU and NumPy
float64 (``--backends``; also ``numpy-float32``, ``torch-float64``).

Two sweeps per backend:

* ``size``: ``n_paths`` in ``1e2, 1e3, 1e4, 1e5, 1e6`` (``--n-paths``) times ``d`` in ``10, 100,
  1000`` (``--dims``) at ``n_steps = 100`` (``--size-steps``). A size whose state
  (``theta`` and ``v``: ``2 n_paths d`` elements) exceeds ``--max-state-mb`` (default 256 MB) is
  skipped, as is a configuration whose predicted time (from short runs) exceeds
  ``--max-config-s`` (default 20 s for all repeats; then the larger ``n_paths`` of that ``d`` are
skipped too): the table says so, with the reason;
* ``steps``: ``n_steps`` in ``10, 100, 1000`` (``--steps``) at ``n_paths = 1e4``, ``d = 100``
  (B1's size; ``--steps-n-paths``, ``--steps-d``).

Per configuration: the median wall time of ``--repeats`` (default 3) in-process repetitions, after
three short runs (3, 3 and 6 steps: the first absorbs first-call costs, the other two
predict the configuration's time; in-process medians are enough for a table; the headline throughput of
B1 is ``ensemble_b1.py``'s, over fresh processes). Reported: ``wall_s``, ``element_steps_per_s =
n_paths d n_steps / wall_s``, ``ns_per_element_step`` (its inverse) and ``us_per_step``.

Fits (per backend, weighted least squares on relative residuals, so small and large sizes count
alike):

* size sweep: ``time per step = overhead_us + ns_per_element * n_paths d``. The intercept is the
  fixed per-step cost (Python, dispatch, small allocations; with it the per-call cost divided by
  ``size_steps``), the slope the per-element cost of a step. ``overhead_ends_at_elements =
  overhead / slope``: the ``n_paths d`` above which the per-element part exceeds the overhead
  (``overhead_ends_at_n_paths`` gives it per ``d``);
* steps sweep: ``wall time = per_call_ms + us_per_step * n_steps``: the fixed cost of a call
  (validation, setup, the energies at the saved steps) against the cost per step.

Bounds, measured in the same run on a buffer of ``--probe-elements`` (default 4e6) elements: the
raw rate of a generator of each backend (``numpy.random.Generator(...).standard_normal(out=...)``
with the faster of the PCG64 and SFC64 bit generators, both reported; ``torch.Tensor.normal_`` with
one ``torch.Generator``, one stream; ns per normal) and of an in-place ``theta += c v`` (ns per element, a
bandwidth reference). BAOAB draws one normal per element and step, so ``generator_share =
generator ns / per-element ns`` is the share of the per-element cost the generator alone
accounts for: near 1 the step is generator-bound; the goal of issue 4 is a noisy kernel at >= 80 %
of the raw generator rate, judged at the largest measured size (one verdict line per backend on
stderr). ``bandwidth_share`` is the same with the ``theta += c v`` reference.

torch is the ``torch`` extra: when it is missing (or hidden with ``--no-peers``/the
``INERTIA_BENCH_HIDE`` environment variable) its backends are reported as ``"skipped: not installed
(pip install .[torch])"``.

Run: ``python benchmarks/scaling.py`` (under 10 minutes on 2 cores at the defaults; the time
budget per configuration keeps it so), ``--quick`` for a small grid (a minute or two).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any

import _common as common

BACKENDS = ("torch-float32", "numpy-float64", "numpy-float32", "torch-float64")
GAMMA, SIGMA, DT = 0.5, 0.1, 0.01
LAM_RANGE = (0.01, 1.0)
GOAL_GENERATOR = 0.8
WARMUP_STEPS = 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--backends",
        type=_backends,
        default=["torch-float32", "numpy-float64"],
        help=f"comma-separated, among {', '.join(BACKENDS)} (default torch-float32,numpy-float64)",
    )
    p.add_argument("--n-paths", type=common.int_list, default=None, help="1e2,1e3,1e4,1e5,1e6")
    p.add_argument("--dims", type=common.int_list, default=None, help="10,100,1000")
    p.add_argument("--size-steps", type=common.positive_int, default=None, help="steps in the size sweep")
    p.add_argument("--steps", type=common.int_list, default=None, help="10,100,1000 (steps sweep)")
    p.add_argument("--steps-n-paths", type=common.positive_int, default=None, help="1e4 (steps sweep)")
    p.add_argument("--steps-d", type=common.positive_int, default=None, help="100 (steps sweep)")
    p.add_argument("--save-every", type=int, default=0, help="record every (0: n_steps, the default)")
    p.add_argument("--repeats", type=common.positive_int, default=3, help="in-process repetitions (3)")
    p.add_argument("--max-state-mb", type=common.positive_float, default=256.0, help="state cap (256)")
    p.add_argument("--max-config-s", type=common.positive_float, default=20.0, help="time cap (20 s)")
    p.add_argument("--probe-elements", type=common.positive_int, default=4_000_000, help="4e6")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--quick", action="store_true", help="a small grid: a minute or two")
    p.add_argument("--no-peers", action="store_true", help="treat torch as not installed")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "n_paths": [100, 1000, 10_000] if quick else [100, 1000, 10_000, 100_000, 1_000_000],
        "dims": [10, 100] if quick else [10, 100, 1000],
        "size_steps": 20 if quick else 100,
        "steps": [10, 100] if quick else [10, 100, 1000],
        "steps_n_paths": 1000 if quick else 10_000,
        "steps_d": 100,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick and args.probe_elements == 4_000_000:
        args.probe_elements = 1_000_000
    if args.save_every < 0:
        p.error(f"--save-every must be >= 0 (0: n_steps), got {args.save_every}")
    if args.threads < 0 or args.seed < 0:
        p.error(f"--threads and --seed must be >= 0, got {args.threads} and {args.seed}")
    return args


def _backends(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in BACKENDS for n in names):
        raise argparse.ArgumentTypeError(f"backends must be among {', '.join(BACKENDS)}, got {text!r}")
    return names


def eigenvalues(d: int) -> list[float]:
    lo, hi = (math.log10(x) for x in LAM_RANGE)
    return [10 ** (lo + (hi - lo) * i / (d - 1)) if d > 1 else 10**lo for i in range(d)]


def itemsize(backend: str) -> int:
    return 4 if backend.endswith("float32") else 8


# --------------------------------------------------------------------------------------------
# measurements


def make_theta0(backend: str, n_paths: int, d: int) -> Any:
    name, dtype = backend.split("-")
    if name == "numpy":
        import numpy as np

        return np.ones((n_paths, d), dtype=getattr(np, dtype))
    import torch

    return torch.ones((n_paths, d), dtype=getattr(torch, dtype))


def run_config(backend: str, n_paths: int, d: int, n_steps: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time ``inertia.simulate`` on one configuration (or say why it was skipped)."""
    import inertia
    from inertia.potentials import Quadratic

    cfg: dict[str, Any] = {"backend": backend, "n_paths": n_paths, "d": d, "n_steps": n_steps}
    state_mb = 2 * n_paths * d * itemsize(backend) / 2**20
    cfg["state_mb"] = state_mb
    if state_mb > args.max_state_mb:
        cfg.update(
            status="skipped", message=f"state {state_mb:.0f} MB > --max-state-mb {args.max_state_mb:g}"
        )
        return cfg
    pot = Quadratic(eigenvalues(d))
    theta0 = make_theta0(backend, n_paths, d)

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        inertia.simulate(
            pot,
            theta0,
            gamma=GAMMA,
            sigma=SIGMA,
            dt=DT,
            n_steps=steps,
            method="baoab",
            seed=args.seed,
            save_every=args.save_every or steps,
        )
        return time.perf_counter() - t0

    k = min(WARMUP_STEPS, n_steps)
    cfg["warmup_s"] = run(k)  # the first call at this size: allocations, caches, any compilation
    t_k, t_2k = run(k), run(2 * k)  # the cost of a call: t(k) = per call + k per step
    per_step = (t_2k - t_k) / k if t_2k > t_k else t_2k / (2 * k)
    predicted = (t_k + per_step * (n_steps - k)) * args.repeats
    cfg["predicted_s"] = predicted
    if predicted > args.max_config_s:
        cfg.update(
            status="skipped",
            message=f"predicted {predicted:.0f} s for {args.repeats} repeats "
            f"> --max-config-s {args.max_config_s:g}",
        )
        return cfg
    walls = [run(n_steps) for _ in range(args.repeats)]
    wall = statistics.median(walls)
    work = float(n_paths) * d * n_steps
    cfg.update(
        status="ok",
        wall_s=wall,
        wall_s_runs=walls,
        element_steps_per_s=work / wall,
        ns_per_element_step=1e9 * wall / work,
        us_per_step=1e6 * wall / n_steps,
    )
    return cfg


def probe(backend: str, n: int) -> dict[str, Any]:
    """Raw rates on ``n`` elements: the backend's normal generator and an in-place axpy."""
    name, dtype = backend.split("-")

    def rate(fn: Any) -> float:
        fn()
        reps, t = 1, 0.0
        while True:  # repeat until a timing takes 0.04 s; the median of 5 such timings
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            t = time.perf_counter() - t0
            if t > 0.04:
                break
            reps *= 2
        times = [t]
        for _ in range(4):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times.append(time.perf_counter() - t0)
        return 1e9 * statistics.median(times) / (reps * n)

    if name == "numpy":
        import numpy as np

        dt_ = getattr(np, dtype)
        bit_rates: dict[str, float] = {}
        rngs = {
            "PCG64": np.random.Generator(np.random.PCG64(0)),
            "SFC64": np.random.Generator(np.random.SFC64(0)),
        }
        buf, other = np.empty(n, dtype=dt_), np.ones(n, dtype=dt_)
        tmp = np.empty(n, dtype=dt_)
        c = dt_(0.005)
        for key, r in rngs.items():
            bit_rates[key] = rate(lambda r=r: r.standard_normal(out=buf, dtype=dt_))
        fastest = min(bit_rates, key=bit_rates.__getitem__)
        rng = rngs[fastest]

        def gen() -> None:
            rng.standard_normal(out=buf, dtype=dt_)

        def axpy() -> None:
            np.multiply(other, c, out=tmp)
            np.add(buf, tmp, out=buf)

        gen_label = f"numpy Generator({fastest}).standard_normal(out=...), the faster of PCG64 and SFC64"
        axpy_label = "numpy multiply(out=tmp) + add(out=theta)"
    else:
        import torch

        gen_t = torch.Generator().manual_seed(0)
        buf, other = torch.empty(n, dtype=getattr(torch, dtype)), torch.ones(n, dtype=getattr(torch, dtype))

        def gen() -> None:
            buf.normal_(generator=gen_t)

        def axpy() -> None:
            buf.add_(other, alpha=0.005)

        gen_label = "torch Tensor.normal_(generator=...), one generator (one stream)"
        bit_rates = {}  # numpy only
        axpy_label = "torch Tensor.add_(other, alpha=c)"

    gen()
    axpy()
    g, a = rate(gen), rate(axpy)
    return {
        "elements": n,
        "generator": gen_label,
        "generator_ns_per_normal": g,
        "generator_normals_per_s": 1e9 / g,
        "numpy_bit_generators_ns_per_normal": bit_rates,
        "axpy": axpy_label,
        "axpy_ns_per_element": a,
        "axpy_bytes_per_s": 1e9 / a * (3 if name == "torch" else 5) * itemsize(backend),
    }


def weighted_line(x: list[float], y: list[float]) -> tuple[float, float] | None:
    """``y ~ a + b x``, least squares on relative residuals ``(y - a - b x) / y``."""
    if len(x) < 2 or len(set(x)) < 2:
        return None
    w = [1.0 / (yi * yi) for yi in y]
    sw = sum(w)
    sx = sum(wi * xi for wi, xi in zip(w, x, strict=True))
    sy = sum(wi * yi for wi, yi in zip(w, y, strict=True))
    sxx = sum(wi * xi * xi for wi, xi in zip(w, x, strict=True))
    sxy = sum(wi * xi * yi for wi, xi, yi in zip(w, x, y, strict=True))
    det = sw * sxx - sx * sx
    if det == 0:
        return None
    b = (sw * sxy - sx * sy) / det
    a = (sy - b * sx) / sw
    return a, b


def analyse(backend: str, size: list[dict], steps: list[dict], bounds: dict, dims: list[int]) -> dict:
    ok = [c for c in size if c["status"] == "ok"]
    out: dict[str, Any] = {"size_points": len(ok)}
    fit = weighted_line([c["n_paths"] * c["d"] for c in ok], [c["wall_s"] / c["n_steps"] for c in ok])
    if fit is not None:
        a, b = fit
        out["overhead_us_per_step"] = 1e6 * a
        out["ns_per_element"] = 1e9 * b
        ends = a / b if a > 0 and b > 0 else None
        out["overhead_ends_at_elements"] = ends
        out["overhead_ends_at_n_paths"] = {f"d={d}": (ends / d if ends else None) for d in dims}
        slope = 1e9 * b if b > 0 else None  # a non-positive slope: sizes too small to resolve it
        out["generator_share_of_slope"] = common.ratio(bounds["generator_ns_per_normal"], slope)
        out["bandwidth_share_of_slope"] = common.ratio(bounds["axpy_ns_per_element"], slope)
    ok_steps = [c for c in steps if c["status"] == "ok"]
    fit = weighted_line([c["n_steps"] for c in ok_steps], [c["wall_s"] for c in ok_steps])
    if fit is not None:
        out["per_call_ms"] = 1e3 * fit[0]
        out["us_per_step_at_steps_size"] = 1e6 * fit[1]
    if ok:
        big = max(ok, key=lambda c: (c["n_paths"] * c["d"], -c["ns_per_element_step"]))
        out["largest"] = {k: big[k] for k in ("n_paths", "d", "n_steps", "ns_per_element_step")}
        out["largest"]["generator_share"] = bounds["generator_ns_per_normal"] / big["ns_per_element_step"]
        out["largest"]["bandwidth_share"] = bounds["axpy_ns_per_element"] / big["ns_per_element_step"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_peers:
        common.hide_peers(("torch",))
    torch_ok = common.available("torch")
    if torch_ok and args.threads and any(b.startswith("torch") for b in args.backends):
        import torch

        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    backends: dict[str, Any] = {}
    for backend in args.backends:
        if backend.startswith("torch") and not torch_ok:
            backends[backend] = {"status": "skipped", "message": common.SKIPPED_TORCH}
            print(f"{backend}: {common.SKIPPED_TORCH}", file=sys.stderr)
            continue
        bounds = probe(backend, args.probe_elements)
        print(
            f"{backend}: generator {bounds['generator_ns_per_normal']:.2f} ns/normal, "
            f"axpy {bounds['axpy_ns_per_element']:.2f} ns/element",
            file=sys.stderr,
        )
        size, steps = [], []
        for d in args.dims:
            too_slow = None
            for n_paths in sorted(args.n_paths):
                if too_slow is not None:
                    c = {"backend": backend, "n_paths": n_paths, "d": d, "n_steps": args.size_steps}
                    c.update(status="skipped", message=f"n_paths={too_slow} already exceeded --max-config-s")
                    c["state_mb"] = 2 * n_paths * d * itemsize(backend) / 2**20
                else:
                    c = run_config(backend, n_paths, d, args.size_steps, args)
                    if c["status"] == "skipped" and "predicted_s" in c:
                        too_slow = n_paths
                size.append(c)
                _report(c)
        for n_steps in args.steps:
            steps.append(run_config(backend, args.steps_n_paths, args.steps_d, n_steps, args))
            _report(steps[-1])
        for c in size + steps:
            if c["status"] == "ok":
                c["generator_share"] = bounds["generator_ns_per_normal"] / c["ns_per_element_step"]
        backends[backend] = {
            "status": "ok",
            "bounds": bounds,
            "size_sweep": size,
            "steps_sweep": steps,
            "analysis": analyse(backend, size, steps, bounds, args.dims),
        }
        if backend.startswith("torch"):
            import torch

            backends[backend]["torch_threads"] = torch.get_num_threads()
    wall_s = time.perf_counter() - t_start

    goals: dict[str, Any] = {}
    for backend, r in backends.items():
        largest = r.get("analysis", {}).get("largest", {})
        where = f"n_paths={largest['n_paths']}, d={largest['d']}" if largest else "no size measured"
        goals[f"generator_share_{backend}"] = common.goal(
            f"{backend}: noisy kernel / raw generator rate at the largest size ({where})",
            largest.get("generator_share"),
            GOAL_GENERATOR,
            at_most=False,
        )

    machine = common.machine_info()
    machine.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), wall_s=wall_s)
    doc = {
        "benchmark": "scaling",
        "config": {
            "problem": "B1",
            "eigenvalues": f"log-spaced in [{LAM_RANGE[0]}, {LAM_RANGE[1]}]",
            "gamma": GAMMA,
            "sigma": SIGMA,
            "dt": DT,
            "method": "baoab",
            "theta0": 1.0,
            "v0": 0.0,
            "backends": args.backends,
            "n_paths": args.n_paths,
            "dims": args.dims,
            "size_steps": args.size_steps,
            "steps": args.steps,
            "steps_n_paths": args.steps_n_paths,
            "steps_d": args.steps_d,
            "save_every": args.save_every or "n_steps",
            "repeats": args.repeats,
            "timing": "median of in-process repeats after 3 short runs (3, 3, 6 steps)",
            "max_state_mb": args.max_state_mb,
            "max_config_s": args.max_config_s,
            "probe_elements": args.probe_elements,
            "quick": args.quick,
        },
        "machine": machine,
        "backends": backends,
        "goals": goals,
    }
    common.emit(doc, args.out)
    for backend, r in backends.items():
        a = r.get("analysis")
        if not a:
            continue
        if "overhead_us_per_step" in a:
            ends, share = a["overhead_ends_at_elements"], a["generator_share_of_slope"]
            where = f"n_paths*d = {ends:.3g}" if ends else "not resolved (intercept or slope <= 0)"
            gen = f"{share:.0%}" if share is not None else "n/a"
            print(
                f"{backend}: per-step overhead {a['overhead_us_per_step']:.1f} us, per element "
                f"{a['ns_per_element']:.3f} ns; overhead ends at {where}; the generator alone is "
                f"{gen} of the per-element cost",
                file=sys.stderr,
            )
        if "per_call_ms" in a:
            print(
                f"{backend}: per call {a['per_call_ms']:.2f} ms + "
                f"{a['us_per_step_at_steps_size']:.1f} us/step "
                f"at n_paths={args.steps_n_paths}, d={args.steps_d}",
                file=sys.stderr,
            )
    for g in goals.values():
        print(g["verdict"], file=sys.stderr)
    return 0


def _report(c: dict[str, Any]) -> None:
    head = f"{c['backend']} n_paths={c['n_paths']:<8d} d={c['d']:<5d} n_steps={c['n_steps']:<5d}"
    if c["status"] == "ok":
        print(
            f"{head} {c['wall_s']:8.4f} s  {c['element_steps_per_s'] / 1e6:8.1f} M el-steps/s  "
            f"{c['us_per_step']:9.1f} us/step",
            file=sys.stderr,
        )
    else:
        print(f"{head} skipped: {c['message']}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
