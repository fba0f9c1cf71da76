"""Energy error per gradient evaluation over a long horizon (issue 4, "accuracy, frictionless, t to
1000"): ``inertia.simulate``'s symplectic integrators at several ``dt`` against
``scipy.integrate.solve_ivp`` (RK45, DOP853) and diffrax Tsit5 at several tolerances.

Problems (frictionless, ``gamma = sigma = 0``, unit mass, float64, one path):

* ``harmonic``: ``potentials.Quadratic([1.0])`` (``d = 1``, ``lambda = 1``), ``theta0 = 1``,
  ``v0 = 0``: ``I = 1/2``, period ``2 pi``;
* ``double_well``: ``potentials.DoubleWell(dim=2)``, ``theta0 = (0.5, 0.5)``, ``v0 = 0``:
  ``I = 0.6875``; the orbit stays in the right-hand well, anharmonic in ``theta_0``.

Methods, each over ``t`` in ``[0, T]``, ``T = 1000`` (``--t-end``):

* ``inertia/<method>`` for ``leapfrog``, ``yoshida4``, ``symplectic_euler`` at ``dt`` in
  ``0.1, 0.05, 0.02, 0.01`` (``--dts``), with ``save_every = grid / dt``: the energy on the grid
  ``t = 0, 0.1, 0.2, ..., T`` (``--grid``); gradient evaluations are ``Trajectory.n_grad_evals``;
* ``scipy/RK45`` and ``scipy/DOP853`` at ``rtol`` in ``1e-3, 1e-4, ..., 1e-10`` (``--rtols``),
  ``atol = 1e-3 rtol`` (the state is of order 1, so ``rtol`` governs), the state evaluated on the
  same grid through ``t_eval`` (the solvers' dense output); gradient evaluations are ``nfev`` (each
  call of the right-hand side evaluates the gradient once; it includes the initial step selection);
* ``diffrax/Tsit5`` (peer, ``bench`` extra) with ``PIDController(rtol, atol)`` at the same
  tolerances, ``dt0 = None``, ``SaveAt(ts=grid)``, float64; gradient evaluations are
  ``6 num_steps + 1``: Tsit5 has 7 stages, the first shared with the previous step's last (FSAL),
  so each attempted step (accepted or rejected) costs 6 new evaluations, plus 1 at the start (this
  count was checked against a host-side counter in the vector field).

Per run: ``n_grad_evals``, ``max |I(t) - I(0)|`` over the grid points in ``[0, T/10]``
(``max_err_short``) and ``[0, T]`` (``max_err_long``), their ratio ``drift_ratio`` (the issue measured
1.0-1.15 for the symplectic methods and 9-12 for RK45/DOP853/Tsit5, whose error grows linearly),
``relative_error = max_err_long / |I(0)|`` and ``blew_up`` (the solver failed or the state became
non-finite; such a run's errors are ``null``).

Goals, with one verdict line each on stderr: ``drift_ratio <= 1.2`` for leapfrog, yoshida4 and
symplectic_euler (the worst over problems and ``dt``); gradient evaluations per step
``(n_grad_evals - 1) / n_steps`` (the one at ``theta0`` excluded) at most 1 for the first- and
second-order methods and at most 3 for yoshida4.

Outputs: the JSON document on stdout (and ``--out``); ``--out-dir DIR`` also writes ``DIR/accuracy.csv``
(one row per run: error against gradient evaluations, ready to plot); ``--plot PATH`` draws
``max_err_long`` against ``n_grad_evals`` per method and problem (matplotlib, Agg backend).
``--no-peers`` treats diffrax as not installed (it is then reported as ``"skipped: not installed
(pip install .[bench])"``). Wall times are reported per run for information only: this benchmark's
figure is accuracy per gradient, not speed, so it runs in-process.

Run: ``python benchmarks/accuracy.py`` (a few minutes on 2 cores), ``--quick`` for a short
horizon and fewer settings.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import _common as common

SYMPLECTIC = ("leapfrog", "yoshida4", "symplectic_euler")
SCIPY = ("RK45", "DOP853")
DTS = [0.1, 0.05, 0.02, 0.01]
RTOLS = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
ATOL_FACTOR = 1e-3
PROBLEMS = ("harmonic", "double_well")
GOAL_DRIFT = 1.2
GOAL_EVALS = {"leapfrog": 1.0, "symplectic_euler": 1.0, "yoshida4": 3.0}
TSIT5_STAGES = 6  # new evaluations per attempted step (7 stages, FSAL)
CSV_COLUMNS = (
    "problem",
    "family",
    "method",
    "dt",
    "rtol",
    "atol",
    "n_steps",
    "n_grad_evals",
    "max_err_short",
    "max_err_long",
    "drift_ratio",
    "relative_error",
    "blew_up",
    "wall_s",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--t-end", type=common.positive_float, default=None, help="horizon T (default 1000)")
    p.add_argument("--grid", type=common.positive_float, default=0.1, help="energy grid spacing (0.1)")
    p.add_argument("--dts", type=common.float_list, default=None, help="inertia dt list (0.1,...,0.01)")
    p.add_argument("--rtols", type=common.float_list, default=None, help="rtol list (1e-3,...,1e-10)")
    p.add_argument("--problems", type=_problems, default=list(PROBLEMS), help="harmonic,double_well")
    p.add_argument("--quick", action="store_true", help="T = 100, dt 0.1,0.05, rtol 1e-3,1e-6,1e-9")
    p.add_argument("--no-peers", action="store_true", help="treat jax/diffrax as not installed")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("--out-dir", default=None, help="write accuracy.csv (and nothing else) here")
    p.add_argument("--plot", default=None, help="write a PNG of error against gradient evaluations")
    args = p.parse_args(argv)
    if args.t_end is None:
        args.t_end = 100.0 if args.quick else 1000.0
    if args.dts is None:
        args.dts = [0.1, 0.05] if args.quick else list(DTS)
    if args.rtols is None:
        args.rtols = [1e-3, 1e-6, 1e-9] if args.quick else list(RTOLS)
    n_grid = args.t_end / args.grid
    if abs(n_grid - round(n_grid)) > 1e-9 * n_grid or round(n_grid) < 10:
        p.error(f"--t-end / --grid must be a whole number >= 10, got {args.t_end} / {args.grid}")
    for dt in args.dts:
        k = args.grid / dt
        if abs(k - round(k)) > 1e-9 * k or round(k) < 1:
            p.error(f"--grid must be a whole multiple of every dt, got grid {args.grid} and dt {dt}")
    if any(r >= 1 for r in args.rtols):
        p.error(f"--rtols must be < 1, got {args.rtols}")
    if args.out_dir is not None and os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        p.error(f"--out-dir must be a directory, got the file {args.out_dir!r}")
    return args


def _problems(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in PROBLEMS for n in names):
        raise argparse.ArgumentTypeError(f"problems must be among {', '.join(PROBLEMS)}, got {text!r}")
    return names


# --------------------------------------------------------------------------------------------
# problems


def problem(name: str) -> tuple[Any, Any]:
    """``(potential, theta0)``; ``v0 = 0``."""
    import numpy as np

    from inertia import potentials

    if name == "harmonic":
        return potentials.Quadratic([1.0]), np.array([1.0])
    return potentials.DoubleWell(dim=2), np.array([0.5, 0.5])


def energy_on_grid(pot: Any, theta: Any, v: Any) -> Any:
    """``I = 1/2 |v|^2 + L(theta)`` for ``(n, d)`` arrays of states (unit mass)."""
    import numpy as np

    return 0.5 * np.sum(v * v, axis=-1) + np.asarray(pot.value(theta))


def errors(t: Any, energy: Any, short: float, blew_up: bool) -> dict[str, Any]:
    import numpy as np

    energy = np.asarray(energy, dtype=float)
    if blew_up or not np.all(np.isfinite(energy)):
        return {"max_err_short": None, "max_err_long": None, "drift_ratio": None, "relative_error": None}
    err = np.abs(energy - energy[0])
    e_short = float(err[np.asarray(t) <= short * (1 + 1e-12)].max())
    e_long = float(err.max())
    return {
        "max_err_short": e_short,
        "max_err_long": e_long,
        "drift_ratio": common.ratio(e_long, e_short),
        "relative_error": e_long / abs(float(energy[0])),
    }


# --------------------------------------------------------------------------------------------
# runners: each returns one row


def run_inertia(name: str, method: str, dt: float, args: argparse.Namespace) -> dict[str, Any]:
    import inertia

    pot, theta0 = problem(name)
    n_steps = round(args.t_end / dt)
    every = round(args.grid / dt)
    t0 = time.perf_counter()
    traj = inertia.simulate(
        pot, theta0, dt=dt, n_steps=n_steps, method=method, save_every=every, on_divergence="stop"
    )
    wall_s = time.perf_counter() - t0
    blew_up = traj.status != "success"
    row = {"family": "inertia", "method": method, "dt": dt, "rtol": None, "atol": None}
    row.update(n_steps=traj.n_steps, n_grad_evals=traj.n_grad_evals, wall_s=wall_s, blew_up=blew_up)
    row["grad_evals_per_step"] = (traj.n_grad_evals - 1) / max(traj.n_steps, 1)
    row.update(errors(traj.t, traj.inertia[:, 0], args.t_end / 10, blew_up))
    return row


def grid(args: argparse.Namespace) -> Any:
    import numpy as np

    n = round(args.t_end / args.grid)
    return np.arange(n + 1) * (args.t_end / n)


def run_scipy(name: str, method: str, rtol: float, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from scipy.integrate import solve_ivp

    pot, theta0 = problem(name)
    d = theta0.size
    y0 = np.concatenate([theta0, np.zeros(d)])

    def rhs(t: float, y: Any) -> Any:
        return np.concatenate([y[d:], -pot.grad(y[:d])])

    ts = grid(args)
    atol = rtol * ATOL_FACTOR
    t0 = time.perf_counter()
    with np.errstate(all="ignore"):
        sol = solve_ivp(rhs, (0.0, args.t_end), y0, method=method, t_eval=ts, rtol=rtol, atol=atol)
    wall_s = time.perf_counter() - t0
    blew_up = sol.status != 0 or not np.all(np.isfinite(sol.y))
    row: dict[str, Any] = {"family": "scipy", "method": method, "dt": None, "rtol": rtol, "atol": atol}
    row.update(n_steps=None, n_grad_evals=int(sol.nfev), wall_s=wall_s, blew_up=blew_up)
    if not blew_up:
        energy = energy_on_grid(pot, sol.y[:d].T, sol.y[d:].T)
        row.update(errors(sol.t, energy, args.t_end / 10, False))
    else:
        row.update(errors(ts, [math.nan], args.t_end / 10, True))
        row["message"] = str(sol.message)
    return row


def make_tsit5(name: str, args: argparse.Namespace) -> Callable[[float], dict[str, Any]]:
    """A Tsit5 runner for ``name``, compiled once (the tolerances are traced arguments)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp
    import numpy as np

    pot, theta0 = problem(name)

    if name == "harmonic":

        def grad(theta: Any) -> Any:
            return theta

    else:

        def grad(theta: Any) -> Any:
            x0 = theta[0]
            return theta.at[0].set(4.0 * x0 * (x0 * x0 - 1.0))

    term = diffrax.ODETerm(lambda t, y, _: (y[1], -grad(y[0])))
    ts = jnp.asarray(grid(args))

    def solve(rtol: Any, atol: Any) -> Any:
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            args.t_end,
            None,
            (jnp.asarray(theta0), jnp.zeros(theta0.size)),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=10_000_000,
            throw=False,
        )
        return sol.ys, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful

    compiled = jax.jit(solve)

    def run(rtol: float) -> dict[str, Any]:
        atol = rtol * ATOL_FACTOR
        t0 = time.perf_counter()
        (theta, v), num_steps, ok = jax.block_until_ready(compiled(rtol, atol))
        wall_s = time.perf_counter() - t0
        theta, v = np.asarray(theta), np.asarray(v)
        blew_up = not bool(ok) or not (np.all(np.isfinite(theta)) and np.all(np.isfinite(v)))
        row: dict[str, Any] = {"family": "diffrax", "method": "Tsit5", "dt": None, "rtol": rtol, "atol": atol}
        row.update(n_steps=int(num_steps), n_grad_evals=TSIT5_STAGES * int(num_steps) + 1)
        row.update(wall_s=wall_s, blew_up=blew_up)
        with np.errstate(all="ignore"):
            energy = energy_on_grid(pot, theta, v) if not blew_up else [math.nan]
        row.update(errors(np.asarray(ts), energy, args.t_end / 10, blew_up))
        return row

    return run


# --------------------------------------------------------------------------------------------
# outputs


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})


def plot(rows: list[dict[str, Any]], problems: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(problems), figsize=(6 * len(problems), 4.5), squeeze=False)
    for ax, name in zip(axes[0], problems, strict=True):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["problem"] == name and r["max_err_long"] is not None and r["max_err_long"] > 0:
                series.setdefault(f"{r['family']}/{r['method']}", []).append(
                    (r["n_grad_evals"], r["max_err_long"])
                )
        for label, pts in series.items():
            pts.sort()
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=label, ms=4)
        ax.set_xlabel("gradient evaluations")
        ax.set_ylabel(f"max |I(t) - I(0)|, t in [0, {rows[0]['t_end']:g}]")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_peers:
        common.hide_peers(("jax", "diffrax"))
    peers_ok = common.available("jax", "diffrax")
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    t_start = time.perf_counter()

    def add(name: str, row: dict[str, Any]) -> None:
        row = {"problem": name, "t_end": args.t_end, **row}
        rows.append(row)
        knob = f"dt={row['dt']:g}" if row["dt"] is not None else f"rtol={row['rtol']:.0e}"
        err = row["max_err_long"]
        text = "blew up" if row["blew_up"] else f"max|I-I0| {err:.3e}, drift ratio {row['drift_ratio']:.2f}"
        print(
            f"{name:12s} {row['family']}/{row['method']:17s} {knob:11s} "
            f"{row['n_grad_evals']:>9d} grads  {text}",
            file=sys.stderr,
        )

    for name in args.problems:
        for method in SYMPLECTIC:
            for dt in args.dts:
                add(name, run_inertia(name, method, dt, args))
        for method in SCIPY:
            for rtol in args.rtols:
                add(name, run_scipy(name, method, rtol, args))
        if peers_ok:
            tsit5 = make_tsit5(name, args)
            for rtol in args.rtols:
                add(name, tsit5(rtol))
    wall_s = time.perf_counter() - t_start

    peers: dict[str, Any] = {"diffrax/Tsit5": {"status": "ok" if peers_ok else "skipped"}}
    if not peers_ok:
        peers["diffrax/Tsit5"]["message"] = common.SKIPPED_BENCH

    # summary per family/method: the drift ratios and the gradient cost per step
    summary: dict[str, Any] = {}
    for r in rows:
        key = f"{r['family']}/{r['method']}"
        s = summary.setdefault(
            key, {"runs": 0, "blew_up": 0, "drift_ratio_max": None, "drift_ratio_min": None}
        )
        s["runs"] += 1
        s["blew_up"] += int(r["blew_up"])
        dr = r["drift_ratio"]
        if dr is not None:
            s["drift_ratio_max"] = dr if s["drift_ratio_max"] is None else max(s["drift_ratio_max"], dr)
            s["drift_ratio_min"] = dr if s["drift_ratio_min"] is None else min(s["drift_ratio_min"], dr)
        if "grad_evals_per_step" in r:
            s["grad_evals_per_step_max"] = max(
                s.get("grad_evals_per_step_max", 0.0), r["grad_evals_per_step"]
            )

    goals: dict[str, Any] = {}
    for method in SYMPLECTIC:
        s = summary.get(f"inertia/{method}", {})
        goals[f"drift_ratio_{method}"] = common.goal(
            f"{method}: worst drift ratio [0,{args.t_end:g}]/[0,{args.t_end / 10:g}] over problems and dt",
            s.get("drift_ratio_max"),
            GOAL_DRIFT,
        )
        goals[f"grad_evals_per_step_{method}"] = common.goal(
            f"{method}: gradient evaluations per step (the one at theta0 excluded)",
            s.get("grad_evals_per_step_max"),
            GOAL_EVALS[method],
        )

    machine = common.machine_info()
    machine.update(loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()), wall_s=wall_s)
    doc = {
        "benchmark": "accuracy",
        "config": {
            "problems": {
                "harmonic": "Quadratic([1.0]), theta0 = [1.0], v0 = 0",
                "double_well": "DoubleWell(dim=2), theta0 = [0.5, 0.5], v0 = 0",
            },
            "selected_problems": args.problems,
            "t_end": args.t_end,
            "windows": {"short": [0.0, args.t_end / 10], "long": [0.0, args.t_end]},
            "grid": args.grid,
            "dts": args.dts,
            "rtols": args.rtols,
            "atol": f"{ATOL_FACTOR:g} * rtol",
            "inertia_methods": list(SYMPLECTIC),
            "scipy_methods": list(SCIPY),
            "tsit5_grad_evals": f"{TSIT5_STAGES} * num_steps + 1 (FSAL)",
        },
        "machine": machine,
        "peers": peers,
        "runs": rows,
        "summary": summary,
        "goals": goals,
    }
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        write_csv(rows, os.path.join(args.out_dir, "accuracy.csv"))
        doc["csv"] = os.path.join(args.out_dir, "accuracy.csv")
    if args.plot:
        plot(rows, args.problems, args.plot)
        doc["plot"] = args.plot
    common.emit(doc, args.out)
    for key, s in summary.items():
        lo, hi = s["drift_ratio_min"], s["drift_ratio_max"]
        rng = f"{lo:.2f}..{hi:.2f}" if lo is not None else "n/a"
        print(f"{key:26s} drift ratio {rng:12s} blew up {s['blew_up']}/{s['runs']}", file=sys.stderr)
    if not peers_ok:
        print(f"diffrax/Tsit5: {common.SKIPPED_BENCH}", file=sys.stderr)
    for g in goals.values():
        print(g["verdict"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
