"""Ensemble throughput on problem B1 of issue 4, on CPU: ``inertia.simulate`` against a hand-written
loop of the same backend and dtype, and against diffrax and torchsde when they are installed.

Problem B1: ``L = 1/2 sum_i lambda_i theta_i^2``, ``d = 100``, ``lambda`` log-spaced in
``[0.01, 1]``, ``gamma = 0.5``, ``sigma = 0.1``, ``dt = 0.01``, 1,000 steps, ``theta0 = 1``,
``v0 = 0``, unit mass; ``n_paths`` paths (default 10,000) in one ``(n_paths, d)`` array. Methods:
BAOAB and Euler-Maruyama. The figure of merit is::

    element-steps/s = n_paths * d * n_steps / wall time

Variants (each named ``<backend>-<dtype>/<method>/<impl>``), for NumPy and torch (CPU), float32
and float64:

* ``simulate_save_end``: ``inertia.simulate(..., save_every=n_steps)`` (energies at step 0 and
  at the end only);
* ``simulate_save_every``: ``save_every=1``: ``kinetic``/``potential``/``inertia`` of every path
  recorded at every step;
* ``hand``: the baseline. A hand-written loop of the same backend and dtype: state updated in
  place in preallocated buffers, the gradient ``lambda * theta`` computed once per step, noise
  drawn in place (NumPy ``Generator.standard_normal(out=...)``, torch ``Tensor.normal_``), and the
  energies computed once, at the end;
* ``hand_record``: the same loop recording ``kinetic`` and ``potential`` of every path at every
  step into a preallocated ``(n_steps + 1, n_paths)`` buffer: what recording costs by hand.

Bounds (named ``<backend>-<dtype>/rates/<what>`` and ``.../<method>_sigma0/simulate_save_end``),
to say how close ``simulate`` comes to what bounds it:

* ``rates/generator_1thread``, ``rates/generator_2threads``: the raw rate (normals/s, reported
  as ``element_steps_per_s``) of the keyed generator the kernel draws from,
  ``inertia._backend.normal_into`` on the same ``(n_paths, d)`` buffer with 1 and 2 threads;
* ``rates/copy``: an in-cache copy of one ``(n_paths, d)`` array (elements/s);
* ``<method>_sigma0/simulate_save_end``: ``simulate`` with ``sigma = 0`` (no generator).

The ``bounds`` section of the JSON then gives, per backend, dtype and method,
``noisy_fraction_of_generator`` = ``simulate_save_end`` / the generator at
``inertia._backend.NOISE_THREADS`` threads (each element-step draws one normal; goal 0.8), and
``noise_free_fraction_of_copy`` = ``4 itemsize x simulate sigma0`` / ``2 itemsize x copy``: the
state traffic of one element-step (``theta`` and ``v`` read and written once) against the copy
bandwidth (goal 0.5).

Peers (from the ``bench`` extra, ``pip install .[bench]``; a peer that is not importable gives a
``"skipped: not installed (pip install .[bench])"`` entry, never a failure), energies at the end
only:

* ``jax-float32|float64/euler_maruyama/diffrax_euler``: ``diffrax.Euler`` on a
  ``(theta, v)`` tuple state, ``UnsafeBrownianPath``, constant step, jitted;
* ``jax-float32|float64/baoab/diffrax_align``: ``diffrax.ALIGN`` (second-order underdamped
  Langevin solver, the closest diffrax has to BAOAB) on the same SDE written as
  ``UnderdampedLangevin`` terms (``u = sigma^2 / (2 gamma)``, ``grad f = lambda theta / u``);
* ``torch-float32/euler_maruyama/torchsde_euler``: ``torchsde.sdeint(method="euler")`` on an
  ``(n_paths, 2d)`` state with diagonal noise (zero on ``theta``), its default Brownian motion;
  ``torchsde_euler_bm_dt``: the same with ``BrownianInterval(dt=dt)`` given to it.

Each measurement runs in a fresh process (this script with ``--worker``): it imports what it
needs, runs a warm-up of a few steps on the full ensemble (reported as ``warmup_s``; for the
jitted peers the ahead-of-time compilation is reported apart as ``compile_s``), then times one
full run of ``n_steps`` (``wall_s``). The variants run in interleaved rounds (the order rotates from
round to round) so that drift and contention from other processes hit all of them alike; the
throughput of a variant is the median of its ``--processes`` (default 3) processes, with min and
max. ``ratio_to_hand`` divides a variant's median by the median of ``hand`` of the same backend,
dtype and method (for jax peers: by the NumPy hand loop of the same dtype); ``ratio_to_hand_record``
(``simulate_save_every`` only) by ``hand_record``. ``spread`` is max/min over the processes.

Every worker also reports ``mean_inertia_end``, the ensemble mean of ``inertia`` at the last
step: all variants simulate the same SDE, so these agree to a few standard errors (a check that
the variants compute the same thing, not a test).

The JSON document goes to stdout (and to ``--out``); a line per process as it ends and a summary
line per variant go to stderr. Run ``make bench`` or ``python benchmarks/ensemble_b1.py --help``;
the test suite runs it on a tiny size and checks only the keys (performance is not a unit test).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as common

D = 100
GAMMA = 0.5
SIGMA = 0.1
DT = 0.01
LAM_RANGE = (0.01, 1.0)
METHODS = ("baoab", "euler_maruyama")
BACKENDS = ("numpy-float64", "numpy-float32", "torch-float32", "torch-float64")
IMPLS = ("simulate_save_end", "simulate_save_every", "hand", "hand_record")
PEERS = (
    "jax-float32/euler_maruyama/diffrax_euler",
    "jax-float64/euler_maruyama/diffrax_euler",
    "jax-float32/baoab/diffrax_align",
    "jax-float64/baoab/diffrax_align",
    "torch-float32/euler_maruyama/torchsde_euler",
    "torch-float32/euler_maruyama/torchsde_euler_bm_dt",
)
PEER_MODULES = {"diffrax": ("jax", "diffrax"), "torchsde": ("torchsde",)}
SKIPPED = "skipped: not installed (pip install .[bench])"


RATES = ("generator_1thread", "generator_2threads", "copy")


def all_variants() -> list[str]:
    ours = [f"{b}/{m}/{i}" for m in METHODS for b in BACKENDS for i in IMPLS]
    bounds = [f"{b}/rates/{r}" for b in BACKENDS for r in RATES]
    bounds += [f"{b}/{m}_sigma0/simulate_save_end" for m in METHODS for b in BACKENDS]
    return ours + list(PEERS) + bounds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-paths", type=int, default=10_000, help="ensemble size (default 10000)")
    p.add_argument("--d", type=int, default=D, help=f"dimension (default {D})")
    p.add_argument("--steps", type=int, default=1000, help="time steps per run (default 1000)")
    p.add_argument("--processes", type=int, default=3, help="fresh processes per variant (default 3)")
    p.add_argument("--warmup-steps", type=int, default=5, help="steps of the warm-up run (default 5)")
    p.add_argument(
        "--only",
        action="append",
        default=None,
        help="run only variants matching this glob (repeatable), e.g. 'torch-float32/*'",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: as torch chooses)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("n_paths", "d", "steps", "processes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup_steps < 1 or args.threads < 0 or args.seed < 0:
        p.error("--warmup-steps must be >= 1, --threads and --seed >= 0")
    if args.worker is not None and args.worker not in all_variants():
        p.error(f"unknown variant {args.worker!r}")
    return args


# --------------------------------------------------------------------------------------------
# problem constants shared by every implementation (computed in float64, cast by each backend)


def eigenvalues(d: int) -> list[float]:
    lo, hi = (math.log10(x) for x in LAM_RANGE)
    return [10 ** (lo + (hi - lo) * i / (d - 1)) if d > 1 else 10**lo for i in range(d)]


def ou_coefficients(dt: float) -> tuple[float, float]:
    """BAOAB's exact O step over ``dt``: ``v <- c1 v + c2 xi``."""
    c1 = math.exp(-GAMMA * dt)
    return c1, SIGMA * math.sqrt(-math.expm1(-2 * GAMMA * dt) / (2 * GAMMA))


# --------------------------------------------------------------------------------------------
# workers: each returns (run, sync, final energy) where run(n_steps) does the work


Runner = Callable[[int], float]  # run(n_steps) -> ensemble mean of the final inertia


def runner_simulate(
    backend: str, dtype: str, method: str, impl: str, args: argparse.Namespace, sigma: float = SIGMA
) -> Runner:
    import numpy as np

    import inertia
    from inertia.potentials import Quadratic

    pot = Quadratic(eigenvalues(args.d))
    if backend == "numpy":
        theta0: Any = np.ones((args.n_paths, args.d), dtype=getattr(np, dtype))
    else:
        import torch

        theta0 = torch.ones((args.n_paths, args.d), dtype=getattr(torch, dtype))

    def run(n_steps: int) -> float:
        traj = inertia.simulate(
            pot,
            theta0,
            gamma=GAMMA,
            sigma=sigma,
            dt=DT,
            n_steps=n_steps,
            method=method,
            seed=args.seed,
            save_every=n_steps if impl == "simulate_save_end" else 1,
        )
        return float(traj.inertia[-1].mean())

    return run


def runner_rates(backend: str, dtype: str, what: str, args: argparse.Namespace) -> Runner:
    """``run(n)`` fills (generator) or copies (copy) one ``(n_paths, d)`` buffer ``n`` times."""
    import numpy as np

    from inertia._backend import normal_into

    if backend == "numpy":
        src: Any = np.ones((args.n_paths, args.d), dtype=getattr(np, dtype))
        dst: Any = np.empty_like(src)
    else:
        import torch

        src = torch.ones((args.n_paths, args.d), dtype=getattr(torch, dtype))
        dst = torch.empty_like(src)
    threads = 2 if what == "generator_2threads" else 1

    def run(n_steps: int) -> float:
        for k in range(n_steps):
            if what == "copy":
                if backend == "numpy":
                    np.copyto(dst, src)
                else:
                    dst.copy_(src)
            else:
                normal_into((args.seed, k, 0), dst, threads=threads)
        return float(dst[0, 0])

    return run


def runner_hand_numpy(dtype: str, method: str, record: bool, args: argparse.Namespace) -> Runner:
    import numpy as np

    dt_ = getattr(np, dtype)
    n, d = args.n_paths, args.d
    lam = np.asarray(eigenvalues(d), dtype=dt_)
    c1, c2 = (dt_(c) for c in ou_coefficients(DT))
    half, full = dt_(DT / 2), dt_(DT)
    em_decay, em_noise = dt_(1 - GAMMA * DT), dt_(SIGMA * math.sqrt(DT))
    hlam = (half * lam).astype(dt_)  # kick by half a step: v -= (dt/2) lambda theta
    flam = (full * lam).astype(dt_)

    def run(n_steps: int) -> float:
        rng = np.random.default_rng(args.seed)
        theta = np.ones((n, d), dtype=dt_)
        v = np.zeros((n, d), dtype=dt_)
        tmp = np.empty((n, d), dtype=dt_)
        xi = np.empty((n, d), dtype=dt_)
        kin = pot = None
        if record:
            kin = np.empty((n_steps + 1, n), dtype=dt_)
            pot = np.empty((n_steps + 1, n), dtype=dt_)

        def energies(row: int) -> None:
            assert kin is not None and pot is not None
            np.einsum("ij,ij->i", v, v, out=kin[row])
            np.multiply(theta, lam, out=tmp)
            np.einsum("ij,ij->i", theta, tmp, out=pot[row])

        if record:
            energies(0)
        with np.errstate(all="ignore"):
            for k in range(n_steps):
                if method == "baoab":
                    np.multiply(theta, hlam, out=tmp)  # B (the gradient at theta, as a kick)
                    v -= tmp
                    np.multiply(v, half, out=tmp)  # A
                    theta += tmp
                    v *= c1  # O
                    rng.standard_normal(out=xi, dtype=dt_)
                    xi *= c2
                    v += xi
                    np.multiply(v, half, out=tmp)  # A
                    theta += tmp
                    np.multiply(theta, hlam, out=tmp)  # B
                    v -= tmp
                else:  # euler_maruyama, from the old state
                    np.multiply(theta, flam, out=tmp)
                    np.multiply(v, full, out=xi)
                    theta += xi
                    v *= em_decay
                    v -= tmp
                    rng.standard_normal(out=xi, dtype=dt_)
                    xi *= em_noise
                    v += xi
                if record:
                    energies(k + 1)
        e = (0.5 * np.einsum("ij,ij->i", v, v) + 0.5 * np.einsum("ij,ij,j->i", theta, theta, lam)).mean()
        return float(e)

    return run


def runner_hand_torch(dtype: str, method: str, record: bool, args: argparse.Namespace) -> Runner:
    import torch

    dt_ = getattr(torch, dtype)
    n, d = args.n_paths, args.d
    lam = torch.tensor(eigenvalues(d), dtype=torch.float64).to(dt_)
    c1, c2 = ou_coefficients(DT)
    half, full = DT / 2, DT
    hlam = (half * torch.tensor(eigenvalues(d), dtype=torch.float64)).to(dt_)
    flam = (full * torch.tensor(eigenvalues(d), dtype=torch.float64)).to(dt_)

    @torch.no_grad()
    def run(n_steps: int) -> float:
        gen = torch.Generator().manual_seed(args.seed)
        theta = torch.ones((n, d), dtype=dt_)
        v = torch.zeros((n, d), dtype=dt_)
        tmp = torch.empty((n, d), dtype=dt_)
        xi = torch.empty((n, d), dtype=dt_)
        kin = pot = None
        if record:
            kin = torch.empty((n_steps + 1, n), dtype=dt_)
            pot = torch.empty((n_steps + 1, n), dtype=dt_)

        def energies(row: int) -> None:
            assert kin is not None and pot is not None
            torch.mul(v, v, out=tmp)
            torch.sum(tmp, dim=1, out=kin[row])
            torch.mul(theta, theta, out=tmp)
            tmp.mul_(lam)
            torch.sum(tmp, dim=1, out=pot[row])

        if record:
            energies(0)
        for k in range(n_steps):
            if method == "baoab":
                v.addcmul_(theta, hlam, value=-1.0)  # B
                theta.add_(v, alpha=half)  # A
                xi.normal_(generator=gen)  # O
                v.mul_(c1).add_(xi, alpha=c2)
                theta.add_(v, alpha=half)  # A
                v.addcmul_(theta, hlam, value=-1.0)  # B
            else:  # euler_maruyama, from the old state
                torch.mul(theta, flam, out=tmp)
                theta.add_(v, alpha=full)
                xi.normal_(generator=gen)
                v.mul_(1 - GAMMA * DT).sub_(tmp).add_(xi, alpha=SIGMA * math.sqrt(DT))
            if record:
                energies(k + 1)
        e = 0.5 * (v * v).sum(1) + 0.5 * (theta * theta * lam).sum(1)
        return float(e.mean())

    return run


def runner_diffrax(dtype: str, method: str, impl: str, args: argparse.Namespace) -> tuple[Runner, float]:
    """``(run, compile_s)``: the solve is compiled ahead of time for ``args.steps`` steps (the
    warm-up calls a second compiled function for its own step count)."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp

    n, d = args.n_paths, args.d
    lam = jnp.asarray(eigenvalues(d), dtype=getattr(jnp, dtype))
    final_state = diffrax_b1(impl, n, d, dtype)

    def solve(key: Any, n_steps: int) -> Any:
        theta, v = final_state(key, n_steps)
        return jnp.mean(0.5 * jnp.sum(v * v, axis=1) + 0.5 * jnp.sum(lam * theta * theta, axis=1))

    key = jax.random.key(args.seed)
    t0 = time.perf_counter()
    compiled = {args.steps: jax.jit(solve, static_argnums=1).lower(key, args.steps).compile()}
    compile_s = time.perf_counter() - t0

    def run(n_steps: int) -> float:
        if n_steps not in compiled:
            compiled[n_steps] = jax.jit(solve, static_argnums=1).lower(key, n_steps).compile()
        return float(jax.block_until_ready(compiled[n_steps](key)))

    return run, compile_s


def diffrax_b1(impl: str, n: int, d: int, dtype: str) -> Callable[[Any, int], Any]:
    """``final_state(key, n_steps) -> (theta, v)``: B1 solved by diffrax (``impl`` is
    ``"diffrax_euler"``: ``Euler`` on a ``(theta, v)`` tuple with ``UnsafeBrownianPath``, or
    ``"diffrax_align"``: ``ALIGN`` on the same SDE as an underdamped Langevin diffusion, with
    ``u = sigma^2 / (2 gamma)`` and ``grad f = lambda theta / u``), constant step ``DT``, on jax's
    default device; jit it with ``static_argnums=1``. Shared with ``ensemble_gpu.py``."""
    import diffrax
    import jax
    import jax.numpy as jnp

    jdt = getattr(jnp, dtype)
    lam = jnp.asarray(eigenvalues(d), dtype=jdt)
    shape = jax.ShapeDtypeStruct((n, d), jdt)
    noise = tuple_noise_term(diffrax, jnp)

    def final_state(key: Any, n_steps: int) -> Any:
        theta0, v0 = jnp.ones((n, d), jdt), jnp.zeros((n, d), jdt)
        if impl == "diffrax_euler":
            bm = diffrax.UnsafeBrownianPath(shape=shape, key=key)

            def drift(t: Any, y: Any, _: Any) -> Any:
                theta, v = y
                return v, -lam * theta - GAMMA * v

            terms = diffrax.MultiTerm(diffrax.ODETerm(drift), noise(bm))
            solver: Any = diffrax.Euler()
        else:  # diffrax_align: the same SDE as an underdamped Langevin diffusion
            bm = diffrax.UnsafeBrownianPath(shape=shape, key=key, levy_area=diffrax.SpaceTimeLevyArea)
            u = SIGMA**2 / (2 * GAMMA)
            g = jnp.full((d,), GAMMA, jdt)
            uu = jnp.full((d,), u, jdt)
            drift_term = diffrax.UnderdampedLangevinDriftTerm(g, uu, lambda x, _: lam * x / u)
            terms = diffrax.MultiTerm(drift_term, diffrax.UnderdampedLangevinDiffusionTerm(g, uu, bm))
            solver = diffrax.ALIGN(0.1 if dtype == "float32" else 0.01)
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            0.0,
            n_steps * DT,
            DT,
            (theta0, v0),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=n_steps,
            adjoint=diffrax.ForwardMode(),  # what UnsafeBrownianPath needs; no gradients here
        )
        return sol.ys[0][-1], sol.ys[1][-1]

    return final_state


def tuple_noise_term(diffrax: Any, jnp: Any) -> Any:
    """A diffrax term adding ``sigma dW`` to ``v`` only, for a ``(theta, v)`` tuple state."""

    class TupleNoise(diffrax.AbstractTerm):
        control: Any

        def vf(self, t: Any, y: Any, args: Any) -> Any:
            return SIGMA

        def contr(self, t0: Any, t1: Any, **kwargs: Any) -> Any:
            return self.control.evaluate(t0, t1, **kwargs)

        def prod(self, vf: Any, control: Any) -> Any:
            return jnp.zeros_like(control), vf * control

    return TupleNoise


def runner_torchsde(impl: str, args: argparse.Namespace) -> Runner:
    import torch
    import torchsde

    n, d = args.n_paths, args.d
    lam = torch.tensor(eigenvalues(d), dtype=torch.float32)

    class SDE(torch.nn.Module):
        noise_type = "diagonal"
        sde_type = "ito"

        def f(self, t: Any, y: torch.Tensor) -> torch.Tensor:
            theta, v = y[:, :d], y[:, d:]
            return torch.cat([v, -lam * theta - GAMMA * v], dim=1)

        def g(self, t: Any, y: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(y)
            out[:, d:] = SIGMA
            return out

    sde = SDE()

    @torch.no_grad()
    def run(n_steps: int) -> float:
        torch.manual_seed(args.seed)
        y0 = torch.cat([torch.ones(n, d), torch.zeros(n, d)], dim=1)
        t1 = n_steps * DT
        bm = None
        if impl == "torchsde_euler_bm_dt":
            bm = torchsde.BrownianInterval(t0=0.0, t1=t1, size=(n, 2 * d), dt=DT)
        ys = torchsde.sdeint(sde, y0, torch.tensor([0.0, t1]), method="euler", dt=DT, bm=bm)
        theta, v = ys[-1][:, :d], ys[-1][:, d:]
        return float((0.5 * (v * v).sum(1) + 0.5 * (lam * theta * theta).sum(1)).mean())

    return run


def worker(args: argparse.Namespace) -> dict[str, Any]:
    name = args.worker
    platform_, method, impl = name.split("/")
    backend, dtype = platform_.split("-")
    if backend == "torch" or impl.startswith("torchsde"):
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    compile_s = None
    if method == "rates":
        run = runner_rates(backend, dtype, impl, args)
    elif method.endswith("_sigma0"):
        run = runner_simulate(backend, dtype, method.removesuffix("_sigma0"), impl, args, sigma=0.0)
    elif impl.startswith("simulate"):
        run = runner_simulate(backend, dtype, method, impl, args)
    elif impl.startswith("hand"):
        make = runner_hand_numpy if backend == "numpy" else runner_hand_torch
        run = make(dtype, method, impl == "hand_record", args)
    elif impl.startswith("diffrax"):
        run, compile_s = runner_diffrax(dtype, method, impl, args)
    else:
        run = runner_torchsde(impl, args)
    t0 = time.perf_counter()
    run(min(args.warmup_steps, args.steps) if compile_s is None else args.steps)
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    energy = run(args.steps)
    wall_s = time.perf_counter() - t0
    out: dict[str, Any] = {"wall_s": wall_s, "warmup_s": warmup_s, "compile_s": compile_s}
    out["mean_inertia_end"] = energy if math.isfinite(energy) else None
    if backend == "torch":
        import torch

        out["torch_threads"] = torch.get_num_threads()
    return out


# --------------------------------------------------------------------------------------------
# the driver: fresh processes, interleaved rounds, medians


def peer_available(name: str) -> bool:
    import importlib.util

    impl = name.split("/")[2]
    mods = PEER_MODULES["diffrax" if impl.startswith("diffrax") else "torchsde"]
    return all(importlib.util.find_spec(m) is not None for m in mods)


def spawn(name: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = ["--worker", name, "--n-paths", str(args.n_paths), "--d", str(args.d), "--steps", str(args.steps)]
    argv += [
        "--warmup-steps",
        str(args.warmup_steps),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
    ]
    return common.spawn_worker(__file__, argv)


def summarise(name: str, runs: list[dict[str, Any]], work: float) -> dict[str, Any]:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"status": "failed", "message": errors[0]}
    rates = [work / r["wall_s"] for r in runs]
    out: dict[str, Any] = {
        "status": "ok",
        "element_steps_per_s": {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
            "runs": rates,
        },
        "spread": max(rates) / min(rates),
        "wall_s_median": statistics.median(r["wall_s"] for r in runs),
        "warmup_s_median": statistics.median(r["warmup_s"] for r in runs),
        "compile_s_median": (
            statistics.median(r["compile_s"] for r in runs) if runs[0]["compile_s"] is not None else None
        ),
        "mean_inertia_end": (
            statistics.median(r["mean_inertia_end"] for r in runs)
            if all(r["mean_inertia_end"] is not None for r in runs)
            else None
        ),
    }
    if "torch_threads" in runs[0]:
        out["torch_threads"] = runs[0]["torch_threads"]
    return out


def baseline_of(name: str) -> str:
    platform_, method, _ = name.split("/")
    if platform_.startswith("jax-"):
        platform_ = "numpy-" + platform_.split("-")[1]
    return f"{platform_}/{method}/hand"


def add_ratios(results: dict[str, dict[str, Any]]) -> None:
    def med(key: str) -> float | None:
        r = results.get(key)
        if r is None or r.get("status") != "ok":
            return None
        return r["element_steps_per_s"]["median"]

    for name, r in results.items():
        if r.get("status") != "ok" or name.split("/")[1] == "rates" or "_sigma0" in name:
            continue
        base = med(baseline_of(name))
        r["baseline"] = baseline_of(name)
        r["ratio_to_hand"] = r["element_steps_per_s"]["median"] / base if base else None
        if name.endswith("/simulate_save_every"):
            rec = med(name.rsplit("/", 1)[0] + "/hand_record")
            r["ratio_to_hand_record"] = r["element_steps_per_s"]["median"] / rec if rec else None


def bounds(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per backend, dtype and method: simulate against the generator and the copy bandwidth."""
    from inertia._backend import NOISE_THREADS

    def med(key: str) -> float | None:
        r = results.get(key)
        if r is None or r.get("status") != "ok":
            return None
        return r["element_steps_per_s"]["median"]

    out: dict[str, dict[str, Any]] = {}
    gen_name = "generator_2threads" if NOISE_THREADS >= 2 else "generator_1thread"
    for b in BACKENDS:
        itemsize = 4 if b.endswith("float32") else 8
        gen, copy = med(f"{b}/rates/{gen_name}"), med(f"{b}/rates/copy")
        for m in METHODS:
            noisy, quiet = med(f"{b}/{m}/simulate_save_end"), med(f"{b}/{m}_sigma0/simulate_save_end")
            every = med(f"{b}/{m}/simulate_save_every")
            if gen is None and copy is None:
                continue
            out[f"{b}/{m}"] = {
                "generator": gen_name,
                "generator_normals_per_s": gen,
                "noisy_fraction_of_generator": noisy / gen if noisy and gen else None,
                "noisy_save_every_fraction_of_generator": every / gen if every and gen else None,
                "copy_bytes_per_s": 2 * itemsize * copy if copy else None,
                "state_bytes_per_element_step": 4 * itemsize,
                "noise_free_fraction_of_copy": 2 * quiet / copy if quiet and copy else None,
            }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(args)))
        return 0
    selected = [v for v in all_variants() if not args.only or any(fnmatch.fnmatch(v, g) for g in args.only)]
    results: dict[str, dict[str, Any]] = {}
    runnable = []
    for name in selected:
        if name in PEERS and not peer_available(name):
            results[name] = {"status": "skipped", "message": SKIPPED}
        else:
            runnable.append(name)
    work = float(args.n_paths) * args.d * args.steps
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runnable}
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    for p in range(args.processes):
        shift = p % len(runnable) if runnable else 0
        for name in runnable[shift:] + runnable[:shift]:
            r = spawn(name, args)
            runs[name].append(r)
            done = f"process {p + 1}/{args.processes}: {name}"
            if "error" in r:
                print(f"{done}: {r['error']}", file=sys.stderr)
            else:
                print(f"{done}: {work / r['wall_s'] / 1e6:.1f} M element-steps/s", file=sys.stderr)
    wall_s = time.perf_counter() - t_start
    for name in runnable:
        results[name] = summarise(name, runs[name], work)
    add_ratios(results)
    results = {name: results[name] for name in selected}
    machine = common.machine_info()
    machine.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), wall_s=wall_s)
    doc = {
        "benchmark": "ensemble_b1",
        "config": {
            "n_paths": args.n_paths,
            "d": args.d,
            "n_steps": args.steps,
            "gamma": GAMMA,
            "sigma": SIGMA,
            "dt": DT,
            "eigenvalues": f"log-spaced in [{LAM_RANGE[0]}, {LAM_RANGE[1]}]",
            "theta0": 1.0,
            "v0": 0.0,
            "processes": args.processes,
            "warmup_steps": args.warmup_steps,
            "threads": args.threads,
            "seed": args.seed,
            "element_steps_per_run": work,
        },
        "machine": machine,
        "variants": results,
        "bounds": bounds(results),
    }
    text = json.dumps(doc, indent=2, allow_nan=False)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    for name, r in results.items():
        if r["status"] == "ok":
            rate = r["element_steps_per_s"]
            ratio = r.get("ratio_to_hand")
            extra = f"  {ratio:.2f}x hand" if ratio is not None else ""
            print(
                f"{name:52s} {rate['median'] / 1e6:8.1f} M/s (min {rate['min'] / 1e6:.1f}, "
                f"max {rate['max'] / 1e6:.1f}){extra}",
                file=sys.stderr,
            )
        else:
            print(f"{name:52s} {r['status']}: {r['message']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
