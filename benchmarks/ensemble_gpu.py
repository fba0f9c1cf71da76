"""Ensemble throughput on problem B1 of issue 4 on a GPU: ``inertia.simulate`` on CUDA tensors
against a hand-written eager torch loop, the same step fused by ``torch.compile`` (one and ten steps
per call) and diffrax (Euler, ALIGN) on the same GPU, with the device's copy bandwidth as the bound.

Problem B1 (the constants of ``ensemble_b1.py``): ``L = 1/2 sum_i lambda_i theta_i^2``, ``d = 100``,
``lambda`` log-spaced in ``[0.01, 1]``, ``gamma = 0.5``, ``sigma = 0.1``, ``dt = 0.01``,
``theta0 = 1``, ``v0 = 0``, unit mass, float32, ``n_paths`` paths in one ``(n_paths, d)`` array
(``--n-paths``, default ``1e5,1e6``), ``--n-steps`` steps (default 200 on a GPU: enough to time;
the issue's 1,000 changes nothing per step). The figure of merit is::

    element-steps/s = n_paths * d * n_steps / wall time

The issue's figures on an H200 at ``N = 1e5..1e6``: torch eager 4.2e10; torch.compile 1.8e11 (one
step per call), 1.96e11 (ten steps per call); diffrax Euler 5.0e10, ALIGN 2.6e10; the bandwidth
bound of a one-step fused kernel about 2.7e11 (4.26 TB/s / 16 bytes per element-step).

Variants (``--variants``, comma-separated; all by default):

* ``simulate``: ``inertia.simulate(Quadratic(lambda), theta0, method="baoab", seed=...,
  save_every=n_steps)`` on ``(n_paths, d)`` tensors on the device: the library's default path,
  which on CUDA is the fused kernel of ``inertia.kernels.fused``: chunks of up to 8 BAOAB steps
  in one ``torch.compile``-d graph (inductor), the state held on chip across the chunk, the keyed
  noise of the chunk's steps drawn beforehand by ``Tensor.normal_`` (one generator per key) into a
  ``(8, n_paths, d)`` buffer, one host sync per chunk for the divergence check. Its compilation
  (one graph per chunk length and size) happens in the warm-up, outside the timed runs (the
  warm-up's 10 steps compile the chunks of 8 and 2; the timed ``n_steps`` = 200 runs 25 chunks
  of 8); it had not yet been measured on a GPU when this was written;
* ``simulate_save_every``: the same with ``save_every=--save-every`` (default 10): ``kinetic``,
  ``potential``, ``inertia`` of every path recorded every 10 steps (issue 11: the chunk's graph
  returns the kinetic and potential energy of its last state, so a saved step costs no extra
  pass over the state and no extra host synchronisation);
* both ``simulate`` variants also time one run of ``2 n_steps`` after their repeats: with the
  median ``t(n)`` of ``n_steps`` that gives ``fixed_cost_s = 2 t(n) - t(2n)`` (the cost per call
  that does not grow with the steps) and ``marginal_element_steps_per_s = N d n / (t(2n) - t(n))``,
  and they report the kernel that ran (``kernel``: ``fused_cuda`` on CUDA);
* ``eager``: the baseline. The hand-written in-place BAOAB loop of ``ensemble_b1.py``'s
  ``runner_hand_torch`` on the device (``addcmul_``/``add_``/``mul_`` on preallocated buffers,
  noise by ``Tensor.normal_`` from a device ``torch.Generator``): about 7 kernels per step;
* ``compiled_1``, ``compiled_10``: the same BAOAB step written as a pure function
  ``(theta, v) -> (theta, v)`` with the noise drawn in the graph (``torch.randn_like``, so the
  generator is fused into the kernel), compiled by ``torch.compile(fn, dynamic=False,
  mode=--compile-mode)``, one step per call and ten steps per call (the ten unrolled in one graph;
  ``--n-steps`` and the warm-up must then be multiples of 10). The default compile mode is
  ``"default"`` (no CUDA graphs, no autotuning: the step is one pointwise kernel, which autotuning
  barely changes and which compiles in well under a minute); ``--compile-mode
  max-autotune-no-cudagraphs`` is the other choice. The first call, which compiles, is timed apart
  as ``compile_s``; every size compiles anew (``dynamic=False``);
* ``diffrax_euler``: ``diffrax.Euler`` (Euler-Maruyama) on a ``(theta, v)`` tuple state with
  ``UnsafeBrownianPath``, constant step, jitted and compiled ahead of time (``compile_s``);
* ``diffrax_align``: ``diffrax.ALIGN(0.1)`` (diffrax's second-order underdamped Langevin solver, the
  closest it has to BAOAB) on the same SDE as ``UnderdampedLangevin`` terms.

diffrax runs on ``jax.devices("gpu")`` with ``--device cuda``; where jax sees no GPU its entries
say ``"skipped: jax has no GPU here"``, and where jax or diffrax is missing (or ``--no-peers``)
``"skipped: not installed (pip install .[bench])"``. With ``--device cpu`` everything, diffrax
included, runs on the CPU at a tiny size (default ``n_paths = 256``, ``n_steps = 20``): what the
test suite does to check that the script works; its figures mean nothing.

Timing: each variant runs in its own fresh process (this script with ``--worker``; a compile or an
allocator state in one cannot affect another) that loops over the sizes: it builds what it needs,
compiles (``compile_s``), runs a warm-up of ``--warmup-steps`` (default 10) steps on the full
ensemble (``warmup_s``; for diffrax one full compiled run), then times ``--repeats`` (default 3)
full runs of ``n_steps``, each between ``torch.cuda.synchronize()`` calls (``block_until_ready``
for jax), stopping early once the timed runs of a size took ``--max-timed-s`` (default 20 s; at
least one run: a guard for the device budget should a variant be slow; ``repeats`` says how many
ran). A process's figure is the median of its repeats; a variant's figure is the median over
``--processes`` processes (default 1, to fit a short device lease; the issue asks for medians of 3
fresh processes: pass ``--processes 3``, which about triples the run time), with min and max.
Variants run in interleaved rounds, the order rotating from round to round.

Bound: a separate worker measures the device's copy bandwidth, ``dst.copy_(src)`` on a float32
tensor of ``--copy-mib`` MiB (default 1024 on CUDA), bytes moved counted as ``2 x size`` (read and
written), the median of 5 timed batches of 10 copies. A one-step kernel reads and writes ``theta``
and ``v`` once per element-step, 16 bytes in float32, so ``bound_element_steps_per_s = bandwidth /
16``, and every variant reports ``fraction_of_bound``. Fusing several steps with the state held
on chip (``compiled_10`` keeps it in registers across its ten steps) can pass it.

Agreement: every run also reports ``mean_inertia_end`` (the ensemble mean of ``K + V`` at the
last step) and its standard error ``sem_inertia_end``; ``z_score`` is the distance, in standard
errors, from the exact expectation of the variant's own scheme (``inertia.stability.
discrete_expected_inertia``: BAOAB for ours, Euler-Maruyama for ``diffrax_euler``; for
``diffrax_align`` the exact continuous-time ``inertia.theory.expected_inertia``, as ALIGN's own
discrete law is not available in closed form; its O(dt^2) bias may show at a million paths). All
variants simulate the same SDE: ``|z_score|`` of a few at most. The reference values are in
``reference_mean_inertia_end``.

Issue 11's goals are stated too (``issue11_*``): at ``N = 1e6``, simulate ``>= 3.5e11``, ``>= 2.2x``
diffrax Euler, ``>= 1.3x`` the one-step bound, saving every 10 steps ``>= 0.8x`` saving at the end,
a fixed cost ``<= 10 ms``; at ``N = 1e5``, ``>= 1.5e11``. The prepared check for a short device
lease (one command, about 4-6 minutes on one H100/H200: the five variants it needs at ``N = 1e6``)::

    PYTHONPATH=src:.devsite PYTHONUNBUFFERED=1 python3 benchmarks/ensemble_gpu.py --n-paths 1000000 \\
        --variants simulate,simulate_save_every,eager,compiled_10,diffrax_euler --out $OUT/gpu11.json

Ratios (per size, of medians): ``simulate_over_eager``, ``simulate_over_best_diffrax`` (the faster
of the two diffrax solvers), ``compiled_1_over_eager``, ``compiled_10_over_eager``,
``simulate_over_compiled_1``, ``simulate_over_compiled_10``, ``save_every_over_simulate``. Goals
(issue 4, per size; a GPU goal, so met or not only on an H100/H200-class GPU): ``simulate >=
1.5e11`` element-steps/s and ``simulate >= 3 x`` the best diffrax on the same GPU; a figure that
was not measured gives a verdict saying so.

Output: the JSON document to stdout (and ``--out``); progress, one line per variant and size, and
one verdict per goal to stderr. Without a CUDA device (``--device cuda``, the default) the document
says ``"status": "skipped: no CUDA device"`` and the script exits 0.

Run it on the device machine (its ``python3`` holds torch, triton, jax with CUDA and diffrax; the
package is used from ``src/`` and its one missing dependency, the pure-Python
``array-api-compat``, is carried from this checkout's virtual environment)::

    # here, once: copy array_api_compat into an ignored folder that travels with `carry`
    echo /.devsite/ >> .git/info/exclude
    mkdir -p .devsite && cp -r .venv/lib/python3*/site-packages/array_api_compat .devsite/
    # there (carry: [".devsite"], timeout_s about 540); expected 3-5 minutes on one H100
    # (an estimate: the script has not yet run on a GPU)
    PYTHONPATH=src:.devsite PYTHONUNBUFFERED=1 python3 benchmarks/ensemble_gpu.py \\
        --out $OUT/ensemble_gpu.json

Add ``--processes 3`` for the issue's medians of three processes where the lease allows it, and
``--variants simulate,eager,compiled_1`` (say) to rerun a subset. On a CPU: ``python
benchmarks/ensemble_gpu.py --device cpu``. See ``--help`` for every option.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import _common as common
from ensemble_b1 import DT, GAMMA, LAM_RANGE, SIGMA, diffrax_b1, eigenvalues  # problem B1, once

D = 100
FUSE = 10  # steps per call of compiled_10
VARIANTS = (
    "simulate",
    "simulate_save_every",
    "eager",
    "compiled_1",
    "compiled_10",
    "diffrax_euler",
    "diffrax_align",
)
PEERS = ("diffrax_euler", "diffrax_align")
PEER_MODULES = ("jax", "diffrax", "equinox")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
SKIPPED_NO_CUDA = "skipped: no CUDA device"
SKIPPED_JAX_NO_GPU = "skipped: jax has no GPU here"
GOAL_RATE = 1.5e11
GOAL_OVER_DIFFRAX = 3.0
#: issue 11 (per n_paths where it names one): simulate's rate, its ratio to diffrax Euler and to
#: the one-step bound, saving every 10 steps against saving at the end, the fixed cost per call
GOAL11_RATE = {1_000_000: 3.5e11, 100_000: 1.5e11}
GOAL11_OVER_EULER = 2.2
GOAL11_OVER_BOUND = 1.3
GOAL11_SAVE_EVERY = 0.8
GOAL11_FIXED_COST_S = 0.010
BYTES_PER_ELEMENT_STEP = 16  # theta and v, float32, read and written once per step
DEFAULTS = {  # per device: n_paths, n_steps, copy MiB
    "cuda": ([100_000, 1_000_000], 200, 1024),
    "cpu": ([256], 20, 8),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where to run (cuda)")
    p.add_argument(
        "--n-paths", type=common.int_list, default=None, help="ensemble sizes (cuda: 1e5,1e6; cpu: 256)"
    )
    p.add_argument(
        "--n-steps", type=common.positive_int, default=None, help="steps per run (cuda 200, cpu 20)"
    )
    p.add_argument("--d", type=common.positive_int, default=D, help=f"dimension (default {D})")
    p.add_argument("--warmup-steps", type=common.positive_int, default=10, help="warm-up steps (10)")
    p.add_argument("--repeats", type=common.positive_int, default=3, help="timed runs per process (3)")
    p.add_argument(
        "--max-timed-s",
        type=common.positive_float,
        default=20.0,
        help="stop a size's repeats once its timed runs took this long (20 s; at least one runs)",
    )
    p.add_argument("--processes", type=common.positive_int, default=1, help="fresh processes per variant (1)")
    p.add_argument("--save-every", type=common.positive_int, default=10, help="simulate_save_every's (10)")
    p.add_argument(
        "--variants",
        type=common.variant_list(VARIANTS),
        default=list(VARIANTS),
        help="comma-separated subset",
    )
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default", help="torch.compile mode")
    p.add_argument("--copy-mib", type=common.positive_int, default=None, help="copy-bandwidth tensor (MiB)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--worker-timeout", type=common.positive_float, default=300.0, help="s per process")
    p.add_argument("--no-peers", action="store_true", help="treat jax/diffrax as not installed")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes, steps, copy_mib = DEFAULTS[args.device]
    args.n_paths = args.n_paths if args.n_paths is not None else sizes
    args.n_steps = args.n_steps if args.n_steps is not None else steps
    args.copy_mib = args.copy_mib if args.copy_mib is not None else copy_mib
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    if "simulate_save_every" in args.variants and args.save_every > args.n_steps:
        p.error(f"--save-every must be <= --n-steps, got {args.save_every} > {args.n_steps}")
    if "compiled_10" in args.variants and (args.n_steps % FUSE or args.warmup_steps % FUSE):
        p.error(
            f"compiled_10 takes {FUSE} steps per call: --n-steps and --warmup-steps must be multiples "
            f"of {FUSE}, got {args.n_steps} and {args.warmup_steps} (or leave compiled_10 out of --variants)"
        )
    if args.worker is not None and args.worker not in (*VARIANTS, "copy"):
        p.error(f"unknown worker {args.worker!r}")
    return args


# --------------------------------------------------------------------------------------------
# the problem (the constants of ensemble_b1.py)


def ou_coefficients(dt: float) -> tuple[float, float]:
    """BAOAB's exact O step over ``dt``: ``v <- c1 v + c2 xi``."""
    c1 = math.exp(-GAMMA * dt)
    return c1, SIGMA * math.sqrt(-math.expm1(-2 * GAMMA * dt) / (2 * GAMMA))


def reference_mean_inertia_end(d: int, n_steps: int) -> dict[str, float]:
    """Exact ``E[I]`` at the last step: of the discrete BAOAB and Euler-Maruyama schemes, and of
    the SDE itself (``continuous``)."""
    from inertia import stability, theory

    lam = eigenvalues(d)
    theta0, v0 = [1.0] * d, [0.0] * d
    out = {
        method: float(
            stability.discrete_expected_inertia(method, lam, GAMMA, SIGMA, DT, theta0, v0, [n_steps])[0]
        )
        for method in ("baoab", "euler_maruyama")
    }
    out["continuous"] = float(theory.expected_inertia(lam, GAMMA, SIGMA, theta0, v0, [n_steps * DT])[0])
    return out


REFERENCE_OF = {"diffrax_euler": "euler_maruyama", "diffrax_align": "continuous"}  # others: baoab


# --------------------------------------------------------------------------------------------
# workers. A runner is (setup(n) -> run, where run(n_steps) -> final (theta, v) as NumPy-able
# per-path energies); each worker times run() between device synchronisations.


def _energy_stats(theta: Any, v: Any, lam: Any) -> tuple[float, float]:
    """Ensemble mean of ``K + V`` per path and its standard error (torch or jax arrays)."""
    e = 0.5 * (v * v).sum(1) + 0.5 * (theta * theta * lam).sum(1)
    n = e.shape[0]
    mean = float(e.mean())
    sem = float(e.std()) / math.sqrt(n) if n > 1 else float("nan")
    return mean, sem


def torch_worker(args: argparse.Namespace, name: str) -> list[dict[str, Any]]:
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    d = args.d
    lam64 = torch.tensor(eigenvalues(d), dtype=torch.float64)
    lam = lam64.to(device=device, dtype=torch.float32)
    hlam = (0.5 * DT * lam64).to(device=device, dtype=torch.float32)
    c1, c2 = ou_coefficients(DT)
    half = DT / 2
    if name.startswith("simulate"):
        import inertia
        from inertia.potentials import Quadratic

        pot = Quadratic(eigenvalues(d))
    per_call = FUSE if name == "compiled_10" else 1
    fused: Any = None
    if name.startswith("compiled"):

        def steps(theta: Any, v: Any) -> tuple[Any, Any]:
            for _ in range(per_call):
                v = v - hlam * theta  # B
                theta = theta + half * v  # A
                v = c1 * v + c2 * torch.randn_like(v)  # O, noise drawn in the graph
                theta = theta + half * v  # A
                v = v - hlam * theta  # B
            return theta, v

        # one compiled function, recompiled for each size (static shapes)
        torch.manual_seed(args.seed)
        fused = torch.compile(steps, dynamic=False, mode=args.compile_mode)
    out = []
    kernels: set[str] = set()
    for n in args.n_paths:
        compile_s = None
        if name.startswith("simulate"):
            theta0 = torch.ones((n, d), dtype=torch.float32, device=device)

            def run(n_steps: int, theta0: Any = theta0) -> tuple[Any, Any]:
                every = n_steps if name == "simulate" else min(args.save_every, n_steps)
                traj = inertia.simulate(
                    pot,
                    theta0,
                    gamma=GAMMA,
                    sigma=SIGMA,
                    dt=DT,
                    n_steps=n_steps,
                    method="baoab",
                    seed=args.seed,
                    save_every=every,
                )
                kernels.add(traj.config["kernel"])
                return traj.theta, traj.v

        elif name == "eager":
            gen = torch.Generator(device=device).manual_seed(args.seed)

            @torch.no_grad()
            def run(n_steps: int, n: int = n, gen: Any = gen) -> tuple[Any, Any]:
                theta = torch.ones((n, d), dtype=torch.float32, device=device)
                v = torch.zeros((n, d), dtype=torch.float32, device=device)
                xi = torch.empty((n, d), dtype=torch.float32, device=device)
                for _ in range(n_steps):
                    v.addcmul_(theta, hlam, value=-1.0)  # B
                    theta.add_(v, alpha=half)  # A
                    xi.normal_(generator=gen)  # O
                    v.mul_(c1).add_(xi, alpha=c2)
                    theta.add_(v, alpha=half)  # A
                    v.addcmul_(theta, hlam, value=-1.0)  # B
                return theta, v

        else:  # compiled_1, compiled_10

            @torch.no_grad()
            def run(n_steps: int, n: int = n) -> tuple[Any, Any]:
                theta = torch.ones((n, d), dtype=torch.float32, device=device)
                v = torch.zeros((n, d), dtype=torch.float32, device=device)
                for _ in range(n_steps // per_call):
                    theta, v = fused(theta, v)
                return theta, v

            sync()
            t0 = time.perf_counter()
            run(per_call)
            sync()
            compile_s = time.perf_counter() - t0

        sync()
        t0 = time.perf_counter()
        run(args.warmup_steps)
        sync()
        warmup_s = time.perf_counter() - t0
        walls: list[float] = []
        while len(walls) < args.repeats and (not walls or sum(walls) < args.max_timed_s):
            sync()
            t0 = time.perf_counter()
            theta, v = run(args.n_steps)
            sync()
            walls.append(time.perf_counter() - t0)
        mean, sem = _energy_stats(theta.float(), v.float(), lam)
        del theta, v
        row = _row(n, walls, warmup_s, compile_s, mean, sem)
        if name.startswith("simulate"):
            # twice the steps, once: with the median of n_steps it gives the fixed cost per call
            sync()
            t0 = time.perf_counter()
            run(2 * args.n_steps)
            sync()
            row["wall_s_double"] = time.perf_counter() - t0
            row["kernel"] = sorted(kernels)
        out.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def diffrax_worker(args: argparse.Namespace, name: str) -> list[dict[str, Any]] | str:
    """The diffrax runs, or the reason they are skipped."""
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if args.device == "cuda":
        try:
            dev = jax.devices("gpu")[0]
        except Exception:  # jax says "unknown backend" (RuntimeError) where it has no GPU
            return SKIPPED_JAX_NO_GPU
    else:
        dev = jax.devices("cpu")[0]
    import jax.numpy as jnp

    d = args.d
    out = []
    with jax.default_device(dev):
        lam = jnp.asarray(eigenvalues(d), dtype=jnp.float32)
        for n in args.n_paths:
            solve = diffrax_b1(name, n, d, "float32")
            key = jax.random.key(args.seed)
            t0 = time.perf_counter()
            compiled = jax.jit(solve, static_argnums=1).lower(key, args.n_steps).compile()
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(key))
            warmup_s = time.perf_counter() - t0
            walls: list[float] = []
            while len(walls) < args.repeats and (not walls or sum(walls) < args.max_timed_s):
                t0 = time.perf_counter()
                theta, v = jax.block_until_ready(compiled(key))
                walls.append(time.perf_counter() - t0)
            mean, sem = _energy_stats(theta, v, lam)
            del theta, v
            out.append(_row(n, walls, warmup_s, compile_s, mean, sem))
    return out


def _row(
    n: int, walls: list[float], warmup_s: float, compile_s: float | None, mean: float, sem: float
) -> dict[str, Any]:
    return {
        "n_paths": n,
        "wall_s": walls,
        "warmup_s": warmup_s,
        "compile_s": compile_s,
        "mean_inertia_end": mean,
        "sem_inertia_end": sem,
    }


def copy_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Copy bandwidth of the device (bytes read plus written per second) and what the device is."""
    import torch

    device = torch.device(args.device)
    info: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu_name=props.name,
            gpu_memory_gib=props.total_memory / 2**30,
            gpu_multiprocessors=props.multi_processor_count,
            gpu_capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            if smi.returncode == 0 and smi.stdout.strip():
                info["driver"] = smi.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
        import importlib.util

        if importlib.util.find_spec("triton") is not None:
            info["triton"] = __import__("triton").__version__
    else:
        info["torch_threads"] = torch.get_num_threads()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    numel = args.copy_mib * 2**20 // 4
    src = torch.ones(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    rates = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        for _ in range(10):
            dst.copy_(src)
        sync()
        rates.append(10 * 2 * 4 * numel / (time.perf_counter() - t0))
    info["copy_bytes_per_s"] = statistics.median(rates)
    info["copy_bytes_per_s_runs"] = rates
    info["copy_tensor_bytes"] = 4 * numel
    return info


def worker(args: argparse.Namespace) -> dict[str, Any]:
    if args.worker == "copy":
        return copy_worker(args)
    if args.worker in PEERS:
        rows = diffrax_worker(args, args.worker)
        return {"skipped": rows} if isinstance(rows, str) else {"sizes": rows}
    return {"sizes": torch_worker(args, args.worker)}


# --------------------------------------------------------------------------------------------
# the driver


def worker_argv(args: argparse.Namespace, name: str) -> list[str]:
    argv = ["--worker", name, "--device", args.device, "--d", str(args.d)]
    argv += ["--n-paths", ",".join(str(n) for n in args.n_paths), "--n-steps", str(args.n_steps)]
    argv += ["--warmup-steps", str(args.warmup_steps), "--repeats", str(args.repeats)]
    argv += ["--max-timed-s", repr(args.max_timed_s)]
    argv += ["--save-every", str(args.save_every), "--compile-mode", args.compile_mode]
    argv += ["--copy-mib", str(args.copy_mib), "--seed", str(args.seed)]
    # the worker validates like the driver; only its own variant matters to it
    return [*argv, "--variants", name if name in VARIANTS else "eager"]


def summarise(
    name: str, runs: list[dict[str, Any]], n: int, work: float, bound: float | None, reference: float | None
) -> dict[str, Any]:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"status": "failed", "message": errors[0]}
    skipped = [r["skipped"] for r in runs if "skipped" in r]
    if skipped:
        return {"status": "skipped", "message": skipped[0]}
    rows = [next(row for row in r["sizes"] if row["n_paths"] == n) for r in runs]
    rates = [work / statistics.median(row["wall_s"]) for row in rows]
    all_rates = [work / w for row in rows for w in row["wall_s"]]
    med = statistics.median(rates)
    mean = statistics.median(row["mean_inertia_end"] for row in rows)
    sem = statistics.median(row["sem_inertia_end"] for row in rows)
    compile_s = [row["compile_s"] for row in rows if row["compile_s"] is not None]
    fixed: dict[str, Any] = {}
    doubles = [row["wall_s_double"] for row in rows if row.get("wall_s_double") is not None]
    if doubles:
        t1 = statistics.median(statistics.median(row["wall_s"]) for row in rows)
        t2 = statistics.median(doubles)
        fixed = {
            "kernel": sorted({k for row in rows for k in row.get("kernel", [])}),
            "wall_s_double_steps": t2,
            "fixed_cost_s": 2.0 * t1 - t2,
            "marginal_element_steps_per_s": work / (t2 - t1) if t2 > t1 else None,
        }
    return {
        "status": "ok",
        **fixed,
        "element_steps_per_s": common.stats(rates),
        "best_repeat_element_steps_per_s": max(all_rates),
        "fraction_of_bound": common.ratio(med, bound),
        "wall_s_median": statistics.median(statistics.median(row["wall_s"]) for row in rows),
        "repeats": [len(row["wall_s"]) for row in rows],
        "warmup_s_median": statistics.median(row["warmup_s"] for row in rows),
        "compile_s_median": statistics.median(compile_s) if compile_s else None,
        "mean_inertia_end": mean,
        "sem_inertia_end": sem,
        "reference": REFERENCE_OF.get(name, "baoab"),
        "z_score": (mean - reference) / sem if reference is not None and sem and math.isfinite(sem) else None,
    }


def skipped_doc(args: argparse.Namespace, status: str) -> dict[str, Any]:
    return {
        "benchmark": "ensemble_gpu",
        "status": status,
        "config": config(args),
        "machine": common.machine_info(),
    }


def config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "problem": "B1",
        "device": args.device,
        "n_paths": args.n_paths,
        "d": args.d,
        "n_steps": args.n_steps,
        "gamma": GAMMA,
        "sigma": SIGMA,
        "dt": DT,
        "eigenvalues": f"log-spaced in [{LAM_RANGE[0]}, {LAM_RANGE[1]}]",
        "theta0": 1.0,
        "v0": 0.0,
        "dtype": "float32",
        "method": "baoab (diffrax_euler: Euler-Maruyama; diffrax_align: ALIGN(0.1))",
        "save_every": args.save_every,
        "steps_per_call": {"compiled_1": 1, "compiled_10": FUSE},
        "compile_mode": args.compile_mode,
        "warmup_steps": args.warmup_steps,
        "repeats": args.repeats,
        "max_timed_s": args.max_timed_s,
        "processes": args.processes,
        "variants": args.variants,
        "copy_mib": args.copy_mib,
        "bytes_per_element_step": BYTES_PER_ELEMENT_STEP,
        "seed": args.seed,
    }


def skip_status(args: argparse.Namespace) -> str | None:
    """Why the whole run is skipped (no torch; no CUDA device with ``--device cuda``), or ``None``."""
    if not common.available("torch"):
        return common.SKIPPED_TORCH
    if args.device != "cuda":
        return None
    import torch

    return None if torch.cuda.is_available() else SKIPPED_NO_CUDA


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_peers:
        common.hide_peers(PEER_MODULES)
    if args.worker is not None:
        import json

        print(json.dumps(common.finite_or_null(worker(args))))
        return 0
    status = skip_status(args)
    if status is not None:
        common.emit(skipped_doc(args, status), args.out)
        print(f"ensemble_gpu: {status}", file=sys.stderr)
        return 0

    peers_ok = common.available(*PEER_MODULES)
    runnable = [n for n in args.variants if n not in PEERS or peers_ok]
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    copy = common.spawn_worker(__file__, worker_argv(args, "copy"), timeout=args.worker_timeout)
    if "error" in copy:
        print(f"copy bandwidth: {copy['error']}", file=sys.stderr)
    else:
        print(f"copy bandwidth: {copy['copy_bytes_per_s'] / 1e9:.1f} GB/s", file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runnable}
    for p in range(args.processes):
        shift = p % len(runnable) if runnable else 0
        for name in runnable[shift:] + runnable[:shift]:
            t0 = time.perf_counter()
            r = common.spawn_worker(__file__, worker_argv(args, name), timeout=args.worker_timeout)
            runs[name].append(r)
            head = f"process {p + 1}/{args.processes}: {name} ({time.perf_counter() - t0:.0f} s)"
            if "error" in r or "skipped" in r:
                print(f"{head}: {r.get('error') or r.get('skipped')}", file=sys.stderr)
                continue
            for row in r["sizes"]:
                rate = args.d * row["n_paths"] * args.n_steps / statistics.median(row["wall_s"])
                print(f"{head}: n_paths={row['n_paths']} {rate:.3g} element-steps/s", file=sys.stderr)
    wall_s = time.perf_counter() - t_start

    bandwidth = copy.get("copy_bytes_per_s")
    bound = bandwidth / BYTES_PER_ELEMENT_STEP if bandwidth else None
    reference = reference_mean_inertia_end(args.d, args.n_steps)
    results: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    goals: dict[str, Any] = {}
    for n in args.n_paths:
        work = float(n) * args.d * args.n_steps
        key = f"n_paths={n}"
        per: dict[str, Any] = {}
        for name in args.variants:
            if name in PEERS and not peers_ok:
                per[name] = {"status": "skipped", "message": common.SKIPPED_BENCH}
            else:
                ref = reference[REFERENCE_OF.get(name, "baoab")]
                per[name] = summarise(name, runs[name], n, work, bound, ref)
        results[key] = per

        def med(name: str, per: dict[str, Any] = per) -> float | None:
            r = per.get(name)
            return r["element_steps_per_s"]["median"] if r and r["status"] == "ok" else None

        diffrax = {name: med(name) for name in PEERS if med(name) is not None}
        best = max(diffrax, key=lambda k: diffrax[k]) if diffrax else None
        ratios[key] = {
            "simulate_over_eager": common.ratio(med("simulate"), med("eager")),
            "best_diffrax": best,
            "simulate_over_best_diffrax": common.ratio(med("simulate"), diffrax.get(best) if best else None),
            "compiled_1_over_eager": common.ratio(med("compiled_1"), med("eager")),
            "compiled_10_over_eager": common.ratio(med("compiled_10"), med("eager")),
            "simulate_over_compiled_1": common.ratio(med("simulate"), med("compiled_1")),
            "simulate_over_compiled_10": common.ratio(med("simulate"), med("compiled_10")),
            "save_every_over_simulate": common.ratio(med("simulate_save_every"), med("simulate")),
        }
        where = f"{args.device}, n_paths={n}"
        sim = per.get("simulate") or {}
        euler = med("diffrax_euler")
        issue11 = {
            f"issue11_simulate_rate_{key}": (
                f"{where}: simulate element-steps/s (issue 11)",
                med("simulate"),
                GOAL11_RATE.get(n),
                False,
            ),
            f"issue11_simulate_over_diffrax_euler_{key}": (
                f"{where}: simulate / diffrax Euler",
                common.ratio(med("simulate"), euler),
                GOAL11_OVER_EULER,
                False,
            ),
            f"issue11_simulate_over_bound_{key}": (
                f"{where}: simulate / one-step bandwidth bound",
                sim.get("fraction_of_bound"),
                GOAL11_OVER_BOUND,
                False,
            ),
            f"issue11_save_every_over_simulate_{key}": (
                f"{where}: simulate saving every {args.save_every} steps / saving at the end",
                ratios[key]["save_every_over_simulate"],
                GOAL11_SAVE_EVERY,
                False,
            ),
            f"issue11_fixed_cost_{key}": (
                f"{where}: simulate's fixed cost per call (s), {args.n_steps} vs {2 * args.n_steps} steps",
                sim.get("fixed_cost_s"),
                GOAL11_FIXED_COST_S,
                True,
            ),
        }
        for goal_key, (label, value, target, at_most) in issue11.items():
            if target is not None:
                goals[goal_key] = common.goal(label, value, target, at_most=at_most)
        goals[f"simulate_rate_{key}"] = common.goal(
            f"{where}: simulate element-steps/s", med("simulate"), GOAL_RATE, at_most=False
        )
        goals[f"simulate_over_diffrax_{key}"] = common.goal(
            f"{where}: simulate / best diffrax ({best or 'none measured'})",
            ratios[key]["simulate_over_best_diffrax"],
            GOAL_OVER_DIFFRAX,
            at_most=False,
        )

    machine = common.machine_info()
    if "error" in copy:
        machine["device_info_error"] = copy["error"]
    else:
        machine.update({k: v for k, v in copy.items() if not k.startswith("copy_")})
    machine.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), wall_s=wall_s)
    doc = {
        "benchmark": "ensemble_gpu",
        "status": "ok",
        "config": config(args),
        "machine": machine,
        "bandwidth": {
            "copy_bytes_per_s": bandwidth,
            "copy_bytes_per_s_runs": copy.get("copy_bytes_per_s_runs"),
            "copy_tensor_bytes": copy.get("copy_tensor_bytes"),
            "bytes_per_element_step": BYTES_PER_ELEMENT_STEP,
            "bound_element_steps_per_s": bound,
            "error": copy.get("error"),
        },
        "reference_mean_inertia_end": reference,
        "results": results,
        "ratios": ratios,
        "goals": goals,
    }
    common.emit(doc, args.out)
    if bound:
        print(f"bound (copy bandwidth / 16 B): {bound:.3g} element-steps/s", file=sys.stderr)
    for key, per in results.items():
        for name, r in per.items():
            if r["status"] != "ok":
                print(f"{key:16s} {name:20s} {r['status']}: {r['message']}", file=sys.stderr)
                continue
            frac = r["fraction_of_bound"]
            z = r["z_score"]
            print(
                f"{key:16s} {name:20s} {r['element_steps_per_s']['median']:9.3g} element-steps/s"
                + (f"  {frac:.2f} of bound" if frac is not None else "")
                + (f"  compile {r['compile_s_median']:.1f} s" if r["compile_s_median"] is not None else "")
                + f"  E[I_end] {r['mean_inertia_end']:.5g}"
                + (f"  fixed {r['fixed_cost_s'] * 1e3:.1f} ms" if r.get("fixed_cost_s") is not None else "")
                + (f" (z {z:+.1f})" if z is not None else ""),
                file=sys.stderr,
            )
    for g in goals.values():
        print(g["verdict"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
