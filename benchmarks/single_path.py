"""One long path (issue 4, "long single paths"): microseconds per step of ``inertia.simulate`` on a
frictionless double well, against a hand-written NumPy leapfrog loop and diffrax fixed-step
solvers, measured in the same run; plus the energy drift ratio of simulate's run.

Problem: ``potentials.DoubleWell(dim=d)`` (``L = (theta_0^2 - 1)^2 + 1/2 sum_{i>=1} theta_i^2``),
``d = 2`` and ``d = 10`` (``--dims``), frictionless (``gamma = sigma = 0``), leapfrog, ``dt = 0.01``,
``n_steps = 10^6`` (``--n-steps``; ``t`` runs to ``10^4``), ``theta0 = 0.5`` in every coordinate,
``v0 = 0``, float64, one path. The orbit stays in the right-hand well (``L(theta0) < 1`` in the
first coordinate); the largest curvature on it is about 17, so ``dt omega <= 0.05``, far inside
leapfrog's stability bound of 2. Energies are recorded every ``save_every = 100`` steps
(``--save-every``; every time unit), by every variant: that gives 101 samples in ``[0, 100]`` for
the drift ratio, and costs every variant the same small share (1 record per 100 steps).

Figure of merit: microseconds per step, ``us/step = wall time / n_steps``.

Variants, each in a fresh process (this script with ``--worker``), the median of ``--processes``
(default 3) processes per variant and ``d``, in interleaved rounds:

* ``simulate``: ``inertia.simulate(DoubleWell(d), ...)``, the default path for a built-in
  potential (whatever loop the library chooses for it);
* ``simulate_user``: ``inertia.simulate`` on ``UserDoubleWell``, a ``Potential`` subclass defined
  in this script with the same formulas in NumPy: the generic loop for user-defined potentials;
* ``hand``: the baseline. A hand-written NumPy per-step velocity-Verlet (leapfrog) loop, the
  gradient formulas written inline, state updated in place, energies recorded at the same steps;
* ``hand_user``: the same hand-written loop, its gradient and energies taken from
  ``UserDoubleWell.value_and_grad`` (one call per step, as ``simulate`` makes): the baseline of
  ``user_over_hand``, since a user's potential costs the same in both loops and the question is
  what the library's loop adds around it;
* ``diffrax_semi_implicit_euler`` (peer): ``diffrax.SemiImplicitEuler`` on a ``(theta, v)`` tuple
  with ``ConstantStepSize``, float64, jitted. diffrax has no leapfrog; semi-implicit (symplectic)
  Euler is its closest fixed-step symplectic solver and costs the same one gradient per step (it is
  first order, so its energy error is larger; the figure compared is the cost per step). The
  energy is saved with ``SaveAt(steps=save_every, fn=...)``;
* ``diffrax_euler`` (peer): ``diffrax.Euler`` on the same tuple state (not symplectic: its energy
  grows; timed for the cost of diffrax's plainest step).

The diffrax solves are compiled ahead of time; ``compile_s`` is reported apart and not included in
``us_per_step``. The other variants run a warm-up of ``min(1000, n_steps)`` steps first
(``warmup_s``), so that any just-in-time compilation inside the library is excluded too.

Ratios (medians, same ``d``): ``simulate_over_hand``, ``user_over_hand`` (``simulate_user`` over
``hand_user``; goal <= 1.2: the generic loop within 1.2x of a hand-written NumPy leapfrog on the
same potential), ``user_over_inline_hand`` (over ``hand``, for scale), ``simulate_over_diffrax`` (against
``diffrax_semi_implicit_euler``; <= 1 means faster than diffrax). Goal: the built-in potential at
``d = 10`` at most 1.5 us/step (diffrax's figure in the issue).

Drift: for every run, ``max |I(t) - I(0)|`` over the windows ``[0, 100]``, ``[0, 1000]``, ...
covered by the run (``errors``), and ``drift_ratios``, e.g. ``"[0,1000]/[0,100]"``: error over the
longer window divided by the error over ``[0, 100]`` (goal <= 1.2 for simulate's leapfrog). A run
shorter than ``t = 1000`` reports ``[0,T]/[0,T/10]`` instead.

Peers come from the ``bench`` extra; a missing one (or ``--no-peers``) gives a ``"skipped: not
installed (pip install .[bench])"`` entry. The JSON document goes to stdout (and ``--out``); a line
per process and one verdict line per goal go to stderr.

Run: ``python benchmarks/single_path.py`` (about 5 minutes on 2 cores at the defaults), or e.g.
``python benchmarks/single_path.py --n-steps 100000 --processes 1 --dims 10``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

import _common as common

VARIANTS = ("simulate", "simulate_user", "hand", "hand_user", "diffrax_semi_implicit_euler", "diffrax_euler")
PEERS = ("diffrax_semi_implicit_euler", "diffrax_euler")
PEER_MODULES = ("jax", "diffrax")
BARRIER, STIFFNESS = 1.0, 1.0  # DoubleWell's defaults; the hand loop and UserDoubleWell use them
GOAL_US = 1.5
GOAL_USER = 1.2
GOAL_DRIFT = 1.2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n-steps", type=common.positive_int, default=1_000_000, help="steps (default 1e6)")
    p.add_argument("--dims", type=common.int_list, default=[2, 10], help="dimensions d (default 2,10)")
    p.add_argument("--dt", type=common.positive_float, default=0.01, help="time step (default 0.01)")
    p.add_argument("--theta0", type=float, default=0.5, help="initial theta, every coordinate (0.5)")
    p.add_argument("--save-every", type=common.positive_int, default=100, help="record every (100)")
    p.add_argument("--processes", type=common.positive_int, default=3, help="fresh processes (3)")
    p.add_argument(
        "--variants",
        type=common.variant_list(VARIANTS),
        default=list(VARIANTS),
        help="comma-separated subset",
    )
    p.add_argument("--no-peers", action="store_true", help="treat jax/diffrax as not installed")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-d", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.save_every > args.n_steps:
        p.error(f"--save-every must be <= --n-steps, got {args.save_every} > {args.n_steps}")
    if not math.isfinite(args.theta0):
        p.error(f"--theta0 must be finite, got {args.theta0}")
    if args.worker is not None and args.worker not in VARIANTS:
        p.error(f"unknown variant {args.worker!r}")
    return args


# --------------------------------------------------------------------------------------------
# workers: each returns (wall_s, warmup_s, compile_s, inertia at the saved steps, n_grad_evals)


def user_potential(d: int) -> Any:
    """A user-defined ``Potential`` (not a built-in): the double well's formulas in NumPy."""
    import numpy as np

    from inertia.potentials import Potential

    class UserDoubleWell(Potential):
        dim = d

        def value_and_grad(self, theta: Any) -> tuple[Any, Any]:
            x0, rest = theta[..., :1], theta[..., 1:]
            w = x0 * x0 - 1.0
            value = BARRIER * (w * w)[..., 0] + 0.5 * STIFFNESS * np.sum(rest * rest, axis=-1)
            grad = np.concatenate([4.0 * BARRIER * x0 * w, STIFFNESS * rest], axis=-1)
            return value, grad

    return UserDoubleWell()


def run_simulate(args: argparse.Namespace, d: int, user: bool) -> dict[str, Any]:
    import numpy as np

    import inertia
    from inertia import potentials

    pot = user_potential(d) if user else potentials.DoubleWell(dim=d, barrier=BARRIER, stiffness=STIFFNESS)
    theta0 = np.full(d, args.theta0)

    def run(n_steps: int) -> Any:
        return inertia.simulate(
            pot, theta0, dt=args.dt, n_steps=n_steps, method="leapfrog", save_every=args.save_every
        )

    t0 = time.perf_counter()
    run(min(1000, args.n_steps))
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    traj = run(args.n_steps)
    wall_s = time.perf_counter() - t0
    return {
        "wall_s": wall_s,
        "warmup_s": warmup_s,
        "compile_s": None,
        "t": traj.t.tolist(),
        "inertia": traj.inertia[:, 0].tolist(),
        "n_grad_evals": traj.n_grad_evals,
        "status": traj.status,
    }


def run_hand(args: argparse.Namespace, d: int) -> dict[str, Any]:
    """Velocity Verlet, one gradient per step, in place; energies every ``save_every`` steps."""
    import numpy as np

    dt, half, every = args.dt, 0.5 * args.dt, args.save_every
    four_b = 4.0 * BARRIER

    def run(n_steps: int) -> tuple[list[float], list[float]]:
        theta = np.full(d, args.theta0)
        v = np.zeros(d)
        g = np.empty(d)
        tmp = np.empty(d)
        ts, es = [], []

        def grad() -> None:  # g = grad L(theta), inline
            np.multiply(theta, STIFFNESS, out=g)
            x0 = float(theta[0])
            g[0] = four_b * x0 * (x0 * x0 - 1.0)

        def record(step: int) -> None:
            x0 = float(theta[0])
            w = x0 * x0 - 1.0
            rest = theta[1:]
            es.append(0.5 * float(v @ v) + BARRIER * w * w + 0.5 * STIFFNESS * float(rest @ rest))
            ts.append(step * dt)

        grad()
        record(0)
        for step in range(1, n_steps + 1):
            np.multiply(g, half, out=tmp)  # B(1/2)
            v -= tmp
            np.multiply(v, dt, out=tmp)  # A(1)
            theta += tmp
            grad()
            np.multiply(g, half, out=tmp)  # B(1/2)
            v -= tmp
            if step % every == 0 or step == n_steps:
                record(step)
        return ts, es

    t0 = time.perf_counter()
    run(min(1000, args.n_steps))
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts, es = run(args.n_steps)
    wall_s = time.perf_counter() - t0
    return {"wall_s": wall_s, "warmup_s": warmup_s, "compile_s": None, "t": ts, "inertia": es}


def run_hand_user(args: argparse.Namespace, d: int) -> dict[str, Any]:
    """Velocity Verlet on ``UserDoubleWell``: one ``value_and_grad`` call per step, in place."""
    import numpy as np

    pot = user_potential(d)
    dt, half, every = args.dt, 0.5 * args.dt, args.save_every

    def run(n_steps: int) -> tuple[list[float], list[float]]:
        theta = np.full(d, args.theta0)
        v = np.zeros(d)
        tmp = np.empty(d)
        ts, es = [], []
        value, g = pot.value_and_grad(theta)
        ts.append(0.0)
        es.append(0.5 * float(v @ v) + float(value))
        for step in range(1, n_steps + 1):
            np.multiply(g, half, out=tmp)  # B(1/2)
            v -= tmp
            np.multiply(v, dt, out=tmp)  # A(1)
            theta += tmp
            value, g = pot.value_and_grad(theta)
            np.multiply(g, half, out=tmp)  # B(1/2)
            v -= tmp
            if step % every == 0 or step == n_steps:
                ts.append(step * dt)
                es.append(0.5 * float(v @ v) + float(value))
        return ts, es

    t0 = time.perf_counter()
    run(min(1000, args.n_steps))
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts, es = run(args.n_steps)
    wall_s = time.perf_counter() - t0
    return {"wall_s": wall_s, "warmup_s": warmup_s, "compile_s": None, "t": ts, "inertia": es}


def run_diffrax(args: argparse.Namespace, d: int, solver_name: str) -> dict[str, Any]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    n, dt, every = args.n_steps, args.dt, args.save_every

    def grad(theta: Any) -> Any:
        x0 = theta[0]
        return (STIFFNESS * theta).at[0].set(4.0 * BARRIER * x0 * (x0 * x0 - 1.0))

    def energy(t: Any, y: Any, _: Any) -> Any:
        theta, v = y
        w = theta[0] ** 2 - 1.0
        return 0.5 * jnp.sum(v * v) + BARRIER * w * w + 0.5 * STIFFNESS * jnp.sum(theta[1:] ** 2)

    if solver_name == "diffrax_semi_implicit_euler":
        # theta' = v (from v), v' = -grad L (from theta): theta first, then v at the new theta
        terms: Any = (
            diffrax.ODETerm(lambda t, v, _: v),
            diffrax.ODETerm(lambda t, theta, _: -grad(theta)),
        )
        solver: Any = diffrax.SemiImplicitEuler()
    else:
        terms = diffrax.ODETerm(lambda t, y, _: (y[1], -grad(y[0])))
        solver = diffrax.Euler()

    def solve(theta0: Any) -> Any:
        sol = diffrax.diffeqsolve(
            terms,
            solver,
            0.0,
            n * dt,
            dt,
            (theta0, jnp.zeros_like(theta0)),
            saveat=diffrax.SaveAt(t0=True, steps=every, fn=energy),
            stepsize_controller=diffrax.ConstantStepSize(),
            max_steps=n,
        )
        return sol.ts, sol.ys

    theta0 = jnp.full((d,), args.theta0, dtype=jnp.float64)
    t0 = time.perf_counter()
    compiled = jax.jit(solve).lower(theta0).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(theta0))  # one untimed run, as the others' warm-up
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts, es = jax.block_until_ready(compiled(theta0))
    wall_s = time.perf_counter() - t0
    import numpy as np

    ts, es = np.asarray(ts), np.asarray(es)
    keep = np.isfinite(ts)  # steps=every pads the unused slots with inf
    return {
        "wall_s": wall_s,
        "warmup_s": warmup_s,
        "compile_s": compile_s,
        "t": ts[keep].tolist(),
        "inertia": es[keep].tolist(),
    }


def drift(t: list[float], energy: list[float]) -> dict[str, Any]:
    """``max |I - I(0)|`` over ``[0, 100 * 10^k]`` covered by the run, and the drift ratios."""
    import numpy as np

    tt, ee = np.asarray(t), np.asarray(energy)
    err = np.abs(ee - ee[0])
    horizon = float(tt[-1])
    if not np.all(np.isfinite(ee)):
        return {"errors": {}, "drift_ratios": {}, "max_abs_error": None, "finite": False}

    def upto(w: float) -> float:
        return float(err[tt <= w * (1 + 1e-12)].max())

    errors: dict[str, float] = {}
    ratios: dict[str, float | None] = {}
    if horizon >= 1000 * (1 - 1e-12):
        w = 100.0
        while w <= horizon * (1 + 1e-12):
            errors[f"[0,{w:g}]"] = upto(w)
            w *= 10
        for key in list(errors)[1:]:
            ratios[f"{key}/[0,100]"] = common.ratio(errors[key], errors["[0,100]"])
    else:
        short, full = f"[0,{horizon / 10:g}]", f"[0,{horizon:g}]"
        errors = {short: upto(horizon / 10), full: upto(horizon)}
        ratios[f"{full}/{short}"] = common.ratio(errors[full], errors[short])
    return {"errors": errors, "drift_ratios": ratios, "max_abs_error": float(err.max()), "finite": True}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    d, name = args.worker_d, args.worker
    if name == "simulate":
        r = run_simulate(args, d, user=False)
    elif name == "simulate_user":
        r = run_simulate(args, d, user=True)
    elif name == "hand":
        r = run_hand(args, d)
    elif name == "hand_user":
        r = run_hand_user(args, d)
    else:
        r = run_diffrax(args, d, name)
    out = {k: r[k] for k in ("wall_s", "warmup_s", "compile_s")}
    out.update(drift(r["t"], r["inertia"]))
    out["n_saved"] = len(r["t"])
    out["n_grad_evals"] = r.get("n_grad_evals")
    out["status"] = r.get("status")
    return out


# --------------------------------------------------------------------------------------------
# the driver


def worker_argv(args: argparse.Namespace, name: str, d: int) -> list[str]:
    return [
        "--worker",
        name,
        "--worker-d",
        str(d),
        "--n-steps",
        str(args.n_steps),
        "--dt",
        repr(args.dt),
        "--theta0",
        repr(args.theta0),
        "--save-every",
        str(args.save_every),
    ]


def summarise(runs: list[dict[str, Any]], n_steps: int) -> dict[str, Any]:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"status": "failed", "message": errors[0]}
    us = [1e6 * r["wall_s"] / n_steps for r in runs]
    first = runs[0]  # the numerics are deterministic: every process computes the same path
    out: dict[str, Any] = {
        "status": "ok",
        "us_per_step": common.stats(us),
        "spread": max(us) / min(us),
        "wall_s_median": common.stats([r["wall_s"] for r in runs])["median"],
        "warmup_s_median": common.stats([r["warmup_s"] for r in runs])["median"],
        "compile_s_median": (
            common.stats([r["compile_s"] for r in runs])["median"] if first["compile_s"] is not None else None
        ),
        "n_saved": first["n_saved"],
        "max_abs_energy_error": first["max_abs_error"],
        "errors": first["errors"],
        "drift_ratios": first["drift_ratios"],
        "finite": first["finite"],
    }
    if first["n_grad_evals"] is not None:
        out["n_grad_evals"] = first["n_grad_evals"]
        out["grad_evals_per_step"] = first["n_grad_evals"] / n_steps
        out["simulate_status"] = first["status"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_peers:
        common.hide_peers(PEER_MODULES)
    if args.worker is not None:
        import json

        print(json.dumps(common.finite_or_null(worker(args))))
        return 0
    peers_ok = common.available(*PEER_MODULES)
    names = [n for n in VARIANTS if n in args.variants]
    runnable = [n for n in names if n not in PEERS or peers_ok]
    jobs = [(d, n) for d in args.dims for n in runnable]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {job: [] for job in jobs}
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    for p in range(args.processes):
        shift = p % len(jobs) if jobs else 0
        for d, name in jobs[shift:] + jobs[:shift]:
            r = common.spawn_worker(__file__, worker_argv(args, name, d))
            runs[(d, name)].append(r)
            head = f"process {p + 1}/{args.processes}: d={d} {name}"
            if "error" in r:
                print(f"{head}: {r['error']}", file=sys.stderr)
            else:
                print(f"{head}: {1e6 * r['wall_s'] / args.n_steps:.3f} us/step", file=sys.stderr)
    wall_s = time.perf_counter() - t_start

    results: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, float | None]] = {}
    for d in args.dims:
        per_d: dict[str, Any] = {}
        for name in names:
            if name in PEERS and not peers_ok:
                per_d[name] = {"status": "skipped", "message": common.SKIPPED_BENCH}
            else:
                per_d[name] = summarise(runs[(d, name)], args.n_steps)
        results[f"d={d}"] = per_d

        def med(name: str, per_d: dict[str, Any] = per_d) -> float | None:
            r = per_d.get(name)
            return r["us_per_step"]["median"] if r and r["status"] == "ok" else None

        ratios[f"d={d}"] = {
            "simulate_over_hand": common.ratio(med("simulate"), med("hand")),
            "user_over_hand": common.ratio(med("simulate_user"), med("hand_user")),
            "user_over_inline_hand": common.ratio(med("simulate_user"), med("hand")),
            "simulate_over_diffrax": common.ratio(med("simulate"), med("diffrax_semi_implicit_euler")),
            "user_over_diffrax": common.ratio(med("simulate_user"), med("diffrax_semi_implicit_euler")),
            "hand_over_diffrax": common.ratio(med("hand"), med("diffrax_semi_implicit_euler")),
        }

    goals: dict[str, Any] = {}
    d_goal = 10 if 10 in args.dims else max(args.dims)
    sim = results[f"d={d_goal}"].get("simulate", {})
    goals["builtin_us_per_step"] = common.goal(
        f"built-in potential, d={d_goal}: simulate us/step",
        sim["us_per_step"]["median"] if sim.get("status") == "ok" else None,
        GOAL_US,
        unit=" us",
    )
    goals["builtin_vs_diffrax"] = common.goal(
        f"built-in potential, d={d_goal}: simulate / diffrax SemiImplicitEuler",
        ratios[f"d={d_goal}"]["simulate_over_diffrax"],
        1.0,
    )
    for d in args.dims:
        goals[f"user_over_hand_d{d}"] = common.goal(
            f"user-defined potential, d={d}: simulate / hand NumPy leapfrog on it",
            ratios[f"d={d}"]["user_over_hand"],
            GOAL_USER,
        )
        r = results[f"d={d}"].get("simulate", {})
        dr = r.get("drift_ratios", {}) if r.get("status") == "ok" else {}
        key = "[0,1000]/[0,100]" if "[0,1000]/[0,100]" in dr else next(iter(dr), None)
        goals[f"drift_ratio_d{d}"] = common.goal(
            f"leapfrog drift ratio, d={d}, simulate {key}", dr.get(key) if key else None, GOAL_DRIFT
        )

    machine = common.machine_info()
    machine.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), wall_s=wall_s)
    doc = {
        "benchmark": "single_path",
        "config": {
            "potential": f"DoubleWell(dim=d, barrier={BARRIER}, stiffness={STIFFNESS})",
            "dims": args.dims,
            "method": "leapfrog",
            "gamma": 0.0,
            "sigma": 0.0,
            "dt": args.dt,
            "n_steps": args.n_steps,
            "t_end": args.n_steps * args.dt,
            "theta0": args.theta0,
            "v0": 0.0,
            "dtype": "float64",
            "save_every": args.save_every,
            "processes": args.processes,
            "variants": names,
        },
        "machine": machine,
        "results": results,
        "ratios": ratios,
        "goals": goals,
    }
    common.emit(doc, args.out)
    for d in args.dims:
        for name, r in results[f"d={d}"].items():
            if r["status"] == "ok":
                u, err = r["us_per_step"], r["max_abs_energy_error"]
                err_text = f"{err:.2e}" if err is not None else "non-finite (blew up)"
                print(
                    f"d={d:<4d} {name:30s} {u['median']:8.3f} us/step (min {u['min']:.3f}, max "
                    f"{u['max']:.3f})  max|I-I0| {err_text}",
                    file=sys.stderr,
                )
            else:
                print(f"d={d:<4d} {name:30s} {r['status']}: {r['message']}", file=sys.stderr)
    for g in goals.values():
        print(g["verdict"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
