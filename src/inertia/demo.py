"""The demo (``inertia demo`` / ``make demo``): every law of THEORY.md drawn over simulation.

:func:`run_demo` runs seven scenarios and writes one new run directory (:mod:`inertia.runs`) with
``manifest.json``, one CSV table per scenario plus a ``<scenario>_summary.csv`` of predicted
against measured numbers, PNG figures (:mod:`inertia.plots`) and a self-contained
``report.html`` (:mod:`inertia.report`). :func:`render` redraws the figures and the report of a
saved run from its CSV tables alone.

Canonical synthetic systems (unit mass)
---------------------------------------
* ``QUADRATIC``: the 2-D anisotropic quadratic ``L = 1/2 (0.25 theta_0^2 + 4 theta_1^2)``,
  eigenvalues ``(0.25, 4.0)`` (condition number 16). Start ``theta0 = (2, 0.5)``, ``v0 = 0``, so
  ``I(0) = 1``. Critical damping of the slowest mode: ``gamma* = 2 sqrt(0.25) = 1``; leapfrog is
  stable for ``dt < 2/sqrt(4) = 1``.
* ``DOUBLE_WELL``: ``DoubleWell(2)``, ``L = (theta_0^2 - 1)^2 + 1/2 theta_1^2``: minima ``L = 0`` at
  ``(+-1, 0)``, a saddle of height 1 at the origin. Start ``theta0 = (-1.5, 0.5)``, ``v0 = 0``, so
  ``I(0) = 1.6875`` is above the barrier and frictionless orbits cross between the wells.

Scenarios (one section of the report each)
------------------------------------------
a. ``frictionless``: leapfrog, ``gamma = sigma = 0``, on both systems: ``I(t) = I(0)`` while
   kinetic and potential exchange (exact quadratic modes drawn over the simulation).
b. ``damped``: under- (``gamma = 0.2``), critically (``gamma = critical_damping(0.25) = 1``) and
   over-damped (``gamma = 5``) quadratic: simulated ``I`` against the exact
   :func:`inertia.theory.damped_quadratic_inertia`, and the ledger ``I(t) + dissipated(t) = I(0)``.
c. ``heating``: ``gamma = 0``, ``sigma = 0.5``, BAOAB ensembles: the mean of ``I`` with a +-3 SE
   band against ``E[I](t) = I(0) + sigma^2 d t / 2`` (any potential).
d. ``langevin``: ``gamma = 0.5``, ``sigma = 0.5``: quadratic ensembles starting above and below
   ``d sigma^2 / (2 gamma)`` relax to it, with the exact :func:`inertia.theory.expected_inertia`
   drawn over them; the double well relaxes to its Gibbs level ``E[I] = d T/2 + E_Gibbs[V]``
   (``T = sigma^2/(2 gamma)``, ``E_Gibbs[V]`` by quadrature), and its mean kinetic energy to
   ``d T / 2``.
e. ``network``: the full-batch cross-entropy of a 64-16-10 tanh MLP (float64) on a standardised
   subset of scikit-learn's bundled ``load_digits``, via :func:`inertia.potentials.from_module`:
   conservation under leapfrog with ``gamma = 0`` and the damped ledger with ``gamma > 0`` on a
   real loss surface (needs torch and scikit-learn; skipped with a note otherwise).
f. ``integrators``: ``|I - I(0)|`` over a long horizon for explicit euler (exact growth
   ``(1 + lambda dt^2)`` per step per mode, drawn dashed), symplectic_euler, leapfrog and
   yoshida4; and the measured convergence order (least-squares log-log slope of the global error
   against ``dt``) of each method against its declared order.
g. ``restart``: heavy-ball SGD on a 20-D quadratic of condition number 1e3 (float64, tracked):
   plain (``mu = 0.99``), wrapped in :class:`inertia.optim.EnergyRestart` (gradient rule) and
   tuned with the condition number; the inertia with the restarts marked, and the restarted
   run's ledger with its ``restart`` term (needs torch; skipped with a note otherwise).

``quick=True`` runs the same scenarios on much smaller ensembles and horizons (for tests).
The library never prints: progress goes to a tqdm bar on stderr (``progress=True``) and to
:mod:`logging`.

Example:
    >>> from inertia.demo import run_demo
    >>> path = run_demo(out="/tmp/inertia-demo-example", quick=True,
    ...                 progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inertia import theory
from inertia._validate import whole_number
from inertia.integrators import METHODS
from inertia.potentials import DoubleWell, Quadratic
from inertia.report import Section, write_report
from inertia.runs import RunDir, create_run, read_manifest, read_table
from inertia.simulate import Trajectory, simulate

__all__ = [
    "DOUBLE_WELL",
    "DW_THETA0",
    "QUADRATIC",
    "QUAD_THETA0",
    "DemoConfig",
    "demo_config",
    "render",
    "run_demo",
]

log = logging.getLogger(__name__)

#: The canonical anisotropic quadratic, eigenvalues (0.25, 4.0).
QUADRATIC = Quadratic([0.25, 4.0])
QUAD_THETA0 = (2.0, 0.5)
#: The canonical double well: barrier 1, stiffness 1, minima at (+-1, 0).
DOUBLE_WELL = DoubleWell(2)
DW_THETA0 = (-1.5, 0.5)
_ZERO = (0.0, 0.0)
_LAM = np.asarray(QUADRATIC.eigenvalues)
_D = 2

TITLE = "Computational inertia: laws against simulation"


@dataclass(frozen=True)
class DemoConfig:
    """All the knobs of the demo (recorded in the manifest)."""

    quick: bool = False
    seed: int = 0
    dt: float = 0.05
    dt_deterministic: float = 0.02
    t_frictionless: float = 40.0
    t_damped: float = 30.0
    gammas: dict[str, float] = field(
        default_factory=lambda: {"underdamped": 0.2, "critical": 1.0, "overdamped": 5.0}
    )
    n_paths: int = 4000
    sigma_heating: float = 0.5
    t_heating: float = 20.0
    gamma_langevin: float = 0.5
    sigma_langevin: float = 0.5
    theta0_above: tuple[float, float] = (3.0, 1.0)
    temperature_double_well: float = 0.3
    t_langevin: float = 25.0
    t_langevin_double_well: float = 40.0
    mlp_examples: int = 500
    mlp_hidden: int = 16
    mlp_dt: float = 0.05
    mlp_t: float = 30.0
    mlp_gamma: float = 0.3
    drift_dt: float = 0.1
    drift_t: float = 1000.0
    drift_t_euler: float = 100.0
    convergence_t: float = 10.0
    convergence_dts: dict[str, list[float]] = field(
        default_factory=lambda: {
            "euler": [2.0**-k for k in range(5, 11)],
            "symplectic_euler": [2.0**-k for k in range(5, 11)],
            "leapfrog": [2.0**-k for k in range(3, 9)],
            "yoshida4": [2.0**-k for k in range(3, 7)],
        }
    )
    points: int = 400
    restart_dim: int = 20
    restart_condition: float = 1e3
    restart_lr: float = 0.5
    restart_momentum: float = 0.99
    restart_steps: int = 1200
    stability_examples: int = 300
    stability_hidden: int = 32
    stability_steps: int = 600
    stability_every: int = 25


def demo_config(quick: bool = False, seed: int = 0) -> DemoConfig:
    """The full demo configuration, or the much smaller one used by tests (``quick``)."""
    if not quick:
        return DemoConfig(seed=seed)
    return DemoConfig(
        quick=True,
        seed=seed,
        t_frictionless=10.0,
        t_damped=10.0,
        n_paths=200,
        t_heating=5.0,
        t_langevin=8.0,
        t_langevin_double_well=8.0,
        mlp_examples=100,
        mlp_t=1.0,
        drift_t=50.0,
        drift_t_euler=20.0,
        convergence_t=2.0,
        convergence_dts={
            "euler": [2.0**-k for k in range(5, 8)],
            "symplectic_euler": [2.0**-k for k in range(5, 8)],
            "leapfrog": [2.0**-k for k in range(3, 6)],
            "yoshida4": [2.0**-k for k in range(3, 6)],
        },
        points=100,
        restart_steps=300,
        stability_examples=100,
        stability_steps=60,
        stability_every=20,
    )


# --------------------------------------------------------------------------------------------
# progress


class _Progress:
    """A tqdm bar on stderr over scenarios, its postfix fed by ``simulate``'s callback."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._bar: Any = None
        self._last = 0.0
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc="inertia demo", unit="scenario", file=sys.stderr, dynamic_ncols=True
            )

    def start(self, name: str) -> None:
        log.info("demo: scenario %s", name)
        if self._bar is not None:
            self._bar.set_description(f"inertia demo: {name}")

    def sim(self, label: str) -> Callable[[int, int], None] | None:
        if self._bar is None:
            return None

        def callback(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - self._last > 0.25:
                self._last = now
                self._bar.set_postfix_str(f"{label} {done}/{total} steps")

        return callback

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str("")
            self._bar.close()


# --------------------------------------------------------------------------------------------
# small helpers


def _n_steps(t_end: float, dt: float) -> int:
    return max(1, round(t_end / dt))


def _save_every(n_steps: int, points: int) -> int:
    return max(1, n_steps // points)


def _path_table(traj: Trajectory, path: int = 0, **const: Any) -> pd.DataFrame:
    """Energies of one path: ``t, kinetic, potential, inertia, dissipated`` (+ constants)."""
    df = pd.DataFrame(
        {
            "t": traj.t,
            "kinetic": traj.kinetic[:, path],
            "potential": traj.potential[:, path],
            "inertia": traj.inertia[:, path],
            "dissipated": traj.dissipated[:, path],
        }
    )
    for i, (k, v) in enumerate(const.items()):
        df.insert(i, k, v)
    return df


def _ensemble_table(traj: Trajectory, of: str = "inertia", **const: Any) -> pd.DataFrame:
    """Mean and standard error ``std/sqrt(n_paths)`` of energy ``of`` per saved time."""
    x = np.asarray(getattr(traj, of), dtype=np.float64)
    n = x.shape[1]
    se = x.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(x.shape[0])
    df = pd.DataFrame({"t": traj.t, "mean": x.mean(axis=1), "se": se, "n_paths": n})
    for i, (k, v) in enumerate(const.items()):
        df.insert(i, k, v)
    return df


def _ensemble_rows(name: str, df: pd.DataFrame) -> list[Row]:
    """E[I](T) predicted vs measured, and the deviation from theory in standard errors."""
    mean, se, exact = (df[c].to_numpy(dtype=np.float64) for c in ("mean", "se", "theory"))
    t_end = float(df["t"].iloc[-1])
    ok = se > 0
    z = np.abs(mean[ok] - exact[ok]) / se[ok] if np.any(ok) else np.zeros(1)
    return [
        (f"{name}: E[I](T) at T = {t_end:g}", "~", float(exact[-1]), float(mean[-1])),
        (f"{name}: |mean - exact| / SE at T (a standard normal draw)", "<=", 3.0, float(z[-1])),
        (
            f"{name}: max over saved times of |mean - exact| / SE (times are correlated)",
            "",
            float("nan"),
            float(z.max()),
        ),
    ]


Row = tuple[str, str, float, float]


def _summary(rows: list[Row]) -> pd.DataFrame:
    """Predicted against measured: ``quantity, relation, predicted, measured, abs_error``.

    ``relation`` is ``"~"`` (should agree up to the stated discretisation or sampling error;
    ``abs_error = |measured - predicted|``), ``"<="`` (a bound: measured <= predicted) or ``""``
    (a number for information: only one of predicted and measured is given).
    """
    df = pd.DataFrame(rows, columns=["quantity", "relation", "predicted", "measured"])
    diff = (df["measured"] - df["predicted"]).abs()
    df["abs_error"] = diff.where(df["relation"] == "~")
    return df


def _mode_energies(gamma: float, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact kinetic and potential of the canonical quadratic (its eigenbasis = coordinates)."""
    x, xdot = theory.damped_quadratic_modes(_LAM, gamma, QUAD_THETA0, _ZERO, t)
    return 0.5 * np.sum(xdot * xdot, axis=-1), 0.5 * np.sum(_LAM * x * x, axis=-1)


def _by(df: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    """Split a long table by ``column`` (order of first appearance), dropping all-NaN columns."""
    out = {}
    for key in dict.fromkeys(df[column]):
        part = df[df[column] == key].drop(columns=[column]).dropna(axis=1, how="all")
        out[str(key)] = part.reset_index(drop=True)
    return out


class _Skip(Exception):
    """A scenario cannot run here (missing optional dependency)."""


Tables = dict[str, pd.DataFrame]


# --------------------------------------------------------------------------------------------
# a. frictionless


def _frictionless(cfg: DemoConfig, prog: _Progress) -> Tables:
    dt = cfg.dt_deterministic
    n = _n_steps(cfg.t_frictionless, dt)
    every = _save_every(n, cfg.points)
    quad = simulate(
        QUADRATIC,
        QUAD_THETA0,
        _ZERO,
        dt=dt,
        n_steps=n,
        method="leapfrog",
        save_every=every,
        progress=prog.sim("frictionless quadratic"),
    )
    dw = simulate(
        DOUBLE_WELL,
        DW_THETA0,
        _ZERO,
        dt=dt,
        n_steps=n,
        method="leapfrog",
        save_every=every,
        progress=prog.sim("frictionless double well"),
    )
    q = _path_table(quad, system="quadratic", dt=dt)
    q["kinetic_theory"], q["potential_theory"] = _mode_energies(0.0, quad.t)
    q["inertia_theory"] = theory.damped_quadratic_inertia(_LAM, 0.0, QUAD_THETA0, _ZERO, quad.t)
    w = _path_table(dw, system="double well", dt=dt)
    w["inertia_theory"] = float(dw.inertia[0, 0])
    table = pd.concat([q, w], ignore_index=True).drop(columns=["dissipated"])
    rows: list[Row] = []
    for name, df in (("quadratic", q), ("double well", w)):
        i0 = float(df["inertia"].iloc[0])
        rows.append((f"{name}: I(0)", "", float("nan"), i0))
        rows.append(
            (
                f"{name}: max |I(t) - I(0)| / I(0) (leapfrog: bounded, O(dt^2))",
                "~",
                0.0,
                float(np.max(np.abs(df["inertia"] - i0)) / i0),
            )
        )
        rows.append(
            (
                f"{name}: max speed ||v|| <= sqrt(2 (I(0) - inf L))",
                "<=",
                math.sqrt(2.0 * i0),
                float(np.sqrt(2.0 * df["kinetic"].max())),
            )
        )
    rows.append(
        (
            "quadratic: max |kinetic - exact kinetic| (leapfrog phase error, O(dt^2))",
            "~",
            0.0,
            float(np.max(np.abs(q["kinetic"] - q["kinetic_theory"]))),
        )
    )
    return {"frictionless": table, "frictionless_summary": _summary(rows)}


def _draw_frictionless(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    parts = _by(t["frictionless"], "system")
    dt = float(t["frictionless"]["dt"].iloc[0])
    return {
        "frictionless": plots.energies(
            {
                f"quadratic, eigenvalues (0.25, 4), leapfrog, dt = {dt:g}": parts["quadratic"],
                f"double well DoubleWell(2), leapfrog, dt = {dt:g}": parts["double well"],
            },
            residual=True,
            title="Frictionless (gamma = 0, sigma = 0): inertia is conserved while "
            "kinetic and potential exchange",
        )
    }


# --------------------------------------------------------------------------------------------
# b. damped quadratic


def _damped(cfg: DemoConfig, prog: _Progress) -> Tables:
    dt = cfg.dt_deterministic
    n = _n_steps(cfg.t_damped, dt)
    every = _save_every(n, cfg.points)
    frames, rows = [], []
    # leapfrog with exact friction conserves H~ + dissipated exactly on a quadratic, where
    # H~ = K + 1/2 sum lambda x^2 (1 - lambda dt^2 / 4) is its shadow energy: as I -> 0 the
    # ledger residual tends to I(0) - H~(0) = sum lambda^2 dt^2 x(0)^2 / 8 (from rest).
    shadow = float(np.sum(_LAM**2 * dt**2 * np.asarray(QUAD_THETA0) ** 2) / 8.0)
    for regime, gamma in cfg.gammas.items():
        tr = simulate(
            QUADRATIC,
            QUAD_THETA0,
            _ZERO,
            gamma=gamma,
            dt=dt,
            n_steps=n,
            method="leapfrog",
            save_every=every,
            progress=prog.sim(f"damped {regime}"),
        )
        df = _path_table(tr, regime=regime, gamma=gamma, dt=dt)
        df["kinetic_theory"], df["potential_theory"] = _mode_energies(gamma, tr.t)
        df["inertia_theory"] = theory.damped_quadratic_inertia(_LAM, gamma, QUAD_THETA0, _ZERO, tr.t)
        df["residual_theory"] = shadow
        frames.append(df)
        i0 = float(df["inertia"].iloc[0])
        resid = np.abs(df["inertia"] + df["dissipated"] - i0)
        g = f"{regime} (gamma = {gamma:g})"
        rows.append(
            (
                f"{g}: max |I - I_exact| (O(dt^2))",
                "~",
                0.0,
                float(np.max(np.abs(df["inertia"] - df["inertia_theory"]))),
            )
        )
        rows.append(
            (
                f"{g}: I(T) / I(0) at T = {tr.t[-1]:g}",
                "~",
                float(df["inertia_theory"].iloc[-1]) / i0,
                float(df["inertia"].iloc[-1]) / i0,
            )
        )
        rows.append((f"{g}: max |I + dissipated - I(0)| (O(dt^2))", "~", 0.0, float(resid.max())))
        rows.append(
            (
                f"{g}: final ledger residual vs the leapfrog shadow-energy offset "
                f"sum lambda^2 dt^2 theta(0)^2 / 8 (exact as I -> 0)",
                "~",
                shadow,
                float(resid.iloc[-1]),
            )
        )
        rows.append(
            (
                f"{g}: asymptotic rate of |theta| (theory.convergence_rate)",
                "",
                theory.convergence_rate(_LAM, gamma),
                float("nan"),
            )
        )
    return {"damped": pd.concat(frames, ignore_index=True), "damped_summary": _summary(rows)}


def _draw_damped(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    parts = _by(t["damped"], "regime")
    titled = {
        f"{k}, gamma = {v['gamma'].iloc[0]:g}, dt = {v['dt'].iloc[0]:g}": v.drop(columns=["gamma", "dt"])
        for k, v in parts.items()
    }
    return {
        "damped_energies": plots.energies(
            titled,
            title="Damped quadratic (sigma = 0): simulation (solid) against the exact solution (dashed)",
        ),
        "damped_ledger": plots.ledger(titled, title="Damped ledger: I(t) + dissipated(t) = I(0)"),
    }


# --------------------------------------------------------------------------------------------
# c. noise only: heating


def _heating(cfg: DemoConfig, prog: _Progress) -> Tables:
    n = _n_steps(cfg.t_heating, cfg.dt)
    every = _save_every(n, cfg.points)
    sigma = cfg.sigma_heating
    frames, rows = [], []
    systems = (("quadratic", QUADRATIC, QUAD_THETA0), ("double well", DOUBLE_WELL, DW_THETA0))
    for k, (name, pot, theta0) in enumerate(systems):
        tr = simulate(
            pot,
            theta0,
            _ZERO,
            gamma=0.0,
            sigma=sigma,
            dt=cfg.dt,
            n_steps=n,
            method="baoab",
            n_paths=cfg.n_paths,
            seed=cfg.seed + 10 + k,
            save_every=every,
            progress=prog.sim(f"heating {name}"),
        )
        df = _ensemble_table(tr, system=name)
        df["theory"] = theory.heating_inertia(float(tr.inertia[0, 0]), _D, sigma, tr.t)
        frames.append(df)
        slope = float(np.polyfit(df["t"], df["mean"], 1)[0])
        rows.extend(_ensemble_rows(name, df))
        rows.append((f"{name}: fitted slope of the mean vs sigma^2 d / 2", "~", 0.5 * sigma**2 * _D, slope))
    return {"heating": pd.concat(frames, ignore_index=True), "heating_summary": _summary(rows)}


def _draw_heating(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    parts = _by(t["heating"], "system")
    n = int(t["heating"]["n_paths"].iloc[0])
    return {
        "heating": plots.ensemble(
            {f"{k}, {n} paths, baoab": {"inertia": v} for k, v in parts.items()},
            title="Noise only (gamma = 0, sigma = 0.5): E[I](t) = I(0) + sigma^2 d t / 2",
        )
    }


# --------------------------------------------------------------------------------------------
# d. damped + noise: Langevin relaxation


def gibbs_potential_double_well(temperature: float, barrier: float = 1.0) -> float:
    """``E[V]`` of ``DoubleWell(2)`` under the Gibbs density ``exp(-V/T)``, by quadrature.

    ``E[V] = int V0 e^{-V0/T} dx / int e^{-V0/T} dx + T/2`` with ``V0 = barrier (x^2 - 1)^2``; the
    harmonic coordinate contributes ``T/2`` whatever its stiffness.
    """
    from scipy.integrate import quad

    def v0(x: float) -> float:
        return barrier * (x * x - 1.0) ** 2

    num = quad(lambda x: v0(x) * math.exp(-v0(x) / temperature), -4.0, 4.0, limit=200)[0]
    den = quad(lambda x: math.exp(-v0(x) / temperature), -4.0, 4.0, limit=200)[0]
    return num / den + 0.5 * temperature


def _langevin(cfg: DemoConfig, prog: _Progress) -> Tables:
    gamma, sigma = cfg.gamma_langevin, cfg.sigma_langevin
    level = theory.stationary_inertia(_D, gamma, sigma)
    n = _n_steps(cfg.t_langevin, cfg.dt)
    every = _save_every(n, cfg.points)
    frames, rows = [], []
    starts = (("above", cfg.theta0_above), ("below", _ZERO))
    for k, (start, theta0) in enumerate(starts):
        tr = simulate(
            QUADRATIC,
            theta0,
            _ZERO,
            gamma=gamma,
            sigma=sigma,
            dt=cfg.dt,
            n_steps=n,
            method="baoab",
            n_paths=cfg.n_paths,
            seed=cfg.seed + 20 + k,
            save_every=every,
            progress=prog.sim(f"langevin quadratic {start}"),
        )
        df = _ensemble_table(tr, system="quadratic", start=start, quantity="inertia")
        df["theory"] = theory.expected_inertia(_LAM, gamma, sigma, theta0, _ZERO, tr.t)
        df["level"] = level
        frames.append(df)
        i0 = float(tr.inertia[0, 0])
        rows.extend(_ensemble_rows(f"quadratic, start {start} (I(0) = {i0:g})", df))
    rows.append(("quadratic: stationary level d sigma^2 / (2 gamma)", "", level, float("nan")))
    # double well: relaxation to the Gibbs level
    temp = cfg.temperature_double_well
    sigma_dw = math.sqrt(2.0 * gamma * temp)
    n_dw = _n_steps(cfg.t_langevin_double_well, cfg.dt)
    tr = simulate(
        DOUBLE_WELL,
        (-1.0, 0.0),
        _ZERO,
        gamma=gamma,
        sigma=sigma_dw,
        dt=cfg.dt,
        n_steps=n_dw,
        method="baoab",
        n_paths=cfg.n_paths,
        seed=cfg.seed + 30,
        save_every=_save_every(n_dw, cfg.points),
        progress=prog.sim("langevin double well"),
    )
    gibbs = 0.5 * _D * temp + gibbs_potential_double_well(temp)
    for quantity, lev in (("inertia", gibbs), ("kinetic", 0.5 * _D * temp)):
        df = _ensemble_table(tr, quantity, system="double well", start="minimum", quantity=quantity)
        df["theory"] = np.nan
        df["level"] = lev
        frames.append(df)
        tail = df["t"] >= 0.5 * float(df["t"].iloc[-1])
        rows.append(
            (
                f"double well (T = {temp:g}, sigma = {sigma_dw:.4g}): {quantity}, mean over "
                f"the second half of the run vs its Gibbs level",
                "~",
                lev,
                float(df.loc[tail, "mean"].mean()),
            )
        )
    return {"langevin": pd.concat(frames, ignore_index=True), "langevin_summary": _summary(rows)}


def _draw_langevin(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    df = t["langevin"]
    n = int(df["n_paths"].iloc[0])
    quad = df[df["system"] == "quadratic"]
    dw = df[df["system"] == "double well"]
    q_title = f"quadratic (0.25, 4), {n} paths: from above and below"
    w_title = f"double well, {n} paths, from a minimum"
    panels = {
        q_title: {f"start {k}": v for k, v in _by(quad.drop(columns=["quantity"]), "start").items()},
        w_title: {k: v for k, v in _by(dw.drop(columns=["start"]), "quantity").items()},
    }
    levels = {
        q_title: {"d sigma^2 / (2 gamma)": float(quad["level"].iloc[0])},
        w_title: {
            f"{q} level (Gibbs)": float(dw.loc[dw["quantity"] == q, "level"].iloc[0])
            for q in dict.fromkeys(dw["quantity"])
        },
    }
    return {
        "langevin": plots.ensemble(
            panels,
            levels=levels,
            quantity="energy",
            title="Damped + noise (gamma = 0.5): relaxation to the Gibbs level, "
            "E[I] -> d sigma^2 / (2 gamma) on the quadratic",
        )
    }


# --------------------------------------------------------------------------------------------
# e. a real network loss


def _digits(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of scikit-learn's bundled digits (a seeded subset), features standardised."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    x, y = x[idx], y[idx]
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), y


def _digits_mlp(cfg: DemoConfig) -> tuple[Any, Any, Any]:
    """(potential, module, (inputs, targets)) of the 64-h-10 tanh MLP on a digits subset."""
    try:
        import sklearn  # noqa: F401
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without the extras
        raise _Skip(f"needs torch and scikit-learn ({exc})") from exc
    from inertia.potentials import from_module

    x, y = _digits(cfg.seed, cfg.mlp_examples)
    inputs = torch.tensor(x, dtype=torch.float64)
    targets = torch.tensor(y, dtype=torch.int64)
    with torch.random.fork_rng(devices=[]):  # leave the caller's torch RNG untouched
        torch.manual_seed(cfg.seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(64, cfg.mlp_hidden), torch.nn.Tanh(), torch.nn.Linear(cfg.mlp_hidden, 10)
        ).double()
    pot = from_module(net, torch.nn.functional.cross_entropy, inputs, targets)
    return pot, net, (inputs, targets)


def _top_eigenvalue(pot: Any, theta: Any, seed: int = 0) -> float:
    """Largest (algebraic) Hessian eigenvalue at ``theta``: :func:`inertia.curvature.top_eigenvalues`
    (Lanczos on Hessian-vector products)."""
    from inertia import curvature

    th = theta.detach().clone().requires_grad_(True)
    return float(curvature.top_eigenvalues(lambda: pot.loss_fn(th), [th], k=1, tol=1e-8, seed=seed)[0])


def _accuracy(pot: Any, net: Any, data: tuple[Any, Any], theta: Any) -> float:
    import torch

    sizes, shapes, names = pot.sizes, pot.shapes, pot.names
    params = {
        n: c.reshape(s) for n, c, s in zip(names, torch.split(theta.reshape(-1), sizes), shapes, strict=True)
    }
    with torch.no_grad():
        out = torch.func.functional_call(net, params, (data[0],))
    return float((out.argmax(dim=1) == data[1]).double().mean())


def _network(cfg: DemoConfig, prog: _Progress) -> Tables:
    pot, net, data = _digits_mlp(cfg)
    import torch

    # The matrices are tiny: one intra-op thread is fastest and does not collapse when the
    # cores are shared with other processes (torch's spinning workers do). Restored below.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _network_runs(cfg, prog, pot, net, data)
    finally:
        torch.set_num_threads(threads)


def _network_runs(cfg: DemoConfig, prog: _Progress, pot: Any, net: Any, data: tuple[Any, Any]) -> Tables:
    theta0 = pot.theta0
    n = _n_steps(cfg.mlp_t, cfg.mlp_dt)
    every = _save_every(n, min(cfg.points, 200))
    lam = _top_eigenvalue(pot, theta0)
    frames: list[pd.DataFrame] = []
    rows: list[Row] = [
        ("parameters d", "", float("nan"), float(pot.dim)),
        ("training examples", "", float("nan"), float(cfg.mlp_examples)),
        (
            "largest Hessian eigenvalue lambda_max at theta0 (Lanczos, Hessian-vector products)",
            "",
            float("nan"),
            lam,
        ),
        (
            "dt used <= leapfrog stability bound 2 / sqrt(lambda_max) at theta0",
            "<=",
            2.0 / math.sqrt(lam) if lam > 0 else float("inf"),
            cfg.mlp_dt,
        ),
        ("loss at t = 0", "", float("nan"), float(pot.value(theta0))),
        ("training accuracy at t = 0", "", float("nan"), _accuracy(pot, net, data, theta0)),
    ]
    for run, gamma in (("frictionless", 0.0), ("damped", cfg.mlp_gamma)):
        tr = simulate(
            pot,
            theta0,
            None,
            gamma=gamma,
            dt=cfg.mlp_dt,
            n_steps=n,
            method="leapfrog",
            save_every=every,
            progress=prog.sim(f"network {run}"),
        )
        df = _path_table(tr, run=run, gamma=gamma, dt=cfg.mlp_dt)
        i0 = float(df["inertia"].iloc[0])
        df["inertia_theory"] = i0 if gamma == 0.0 else np.nan
        frames.append(df)
        g = f"{run} (gamma = {gamma:g})"
        if gamma == 0.0:
            rows.append(
                (f"{g}: max |I(t) - I(0)| / I(0)", "~", 0.0, float(np.max(np.abs(df["inertia"] - i0))) / i0)
            )
        else:
            resid = float(np.max(np.abs(df["inertia"] + df["dissipated"] - i0)))
            rows.append((f"{g}: max |I + dissipated - I(0)| / I(0)", "~", 0.0, resid / i0))
        t_end = float(tr.t[-1])
        rows.append((f"{g}: loss at t = {t_end:g}", "", float("nan"), float(df["potential"].iloc[-1])))
        rows.append(
            (
                f"{g}: training accuracy at t = {t_end:g}",
                "",
                float("nan"),
                _accuracy(pot, net, data, tr.theta),
            )
        )
    return {"network": pd.concat(frames, ignore_index=True), "network_summary": _summary(rows)}


def _draw_network(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    parts = _by(t["network"], "run")
    fr = parts["frictionless"]
    dm = parts["damped"]
    gamma, dt = float(dm["gamma"].iloc[0]), float(dm["dt"].iloc[0])
    return {
        "network_conservation": plots.energies(
            {
                f"MLP 64-16-10 (tanh) on digits, leapfrog, gamma = 0, dt = {dt:g}": fr.drop(
                    columns=["gamma", "dt", "dissipated"]
                )
            },
            residual=True,
            title="A real loss surface, frictionless: kinetic energy and the loss exchange, "
            "inertia stays at I(0)",
        ),
        "network_ledger": plots.ledger(
            {f"MLP on digits, leapfrog, gamma = {gamma:g}, dt = {dt:g}": dm.drop(columns=["gamma", "dt"])},
            title="A real loss surface, damped (heavy-ball training): I(t) + dissipated(t) = I(0)",
        ),
    }


# --------------------------------------------------------------------------------------------
# f. integrators


def _euler_growth(dt: float, t: np.ndarray) -> np.ndarray:
    """Exact ``|I_n - I_0|`` of explicit euler on the quadratic: ``sum_i E_i(0) (g_i^n - 1)``."""
    e0 = 0.5 * _LAM * np.asarray(QUAD_THETA0) ** 2
    steps = np.rint(t / dt)
    return np.sum(e0 * np.expm1(steps[:, None] * np.log1p(_LAM * dt * dt)), axis=-1)


def _envelope(t: np.ndarray, err: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum of ``err`` over log-spaced windows of time (for a log-log drift plot).

    Returns the end time of each non-empty window and the maximum over it (``t > 0`` only).
    """
    pos = t > 0
    t, err = t[pos], err[pos]
    edges = np.geomspace(t[0], t[-1], n_bins + 1)
    idx = np.clip(np.searchsorted(edges, t, side="left"), 0, n_bins)
    t_out, e_out = [], []
    for b in np.unique(idx):
        sel = idx == b
        t_out.append(t[sel][-1])
        e_out.append(np.max(err[sel]))
    return np.asarray(t_out), np.asarray(e_out)


def _integrators(cfg: DemoConfig, prog: _Progress) -> Tables:
    frames, rows = [], []
    dt = cfg.drift_dt
    for method in ("euler", "symplectic_euler", "leapfrog", "yoshida4"):
        t_end = cfg.drift_t_euler if method == "euler" else cfg.drift_t
        n = _n_steps(t_end, dt)
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            # explicit euler has no stable dt without friction: running it is the point
            warnings.filterwarnings("ignore", message=".*stability bound.*", category=RuntimeWarning)
            tr = simulate(
                QUADRATIC,
                QUAD_THETA0,
                _ZERO,
                dt=dt,
                n_steps=n,
                method=method,
                on_divergence="stop",
                progress=prog.sim(f"drift {method}"),
            )
        err = np.abs(tr.inertia[:, 0] - tr.inertia[0, 0])
        t_env, err_env = _envelope(tr.t, err, 2 * cfg.points)
        df = pd.DataFrame({"method": method, "dt": dt, "t": t_env, "abs_error": err_env})
        df["abs_error_theory"] = _euler_growth(dt, t_env) if method == "euler" else np.nan
        frames.append(df)
        k = max(1, len(err) // 10)
        late, early = float(np.max(err[-k:])), float(np.max(err[1 : k + 1]))
        if method == "euler":
            growth = _euler_growth(dt, tr.t)
            predicted = float(growth[-k:].max() / growth[1 : k + 1].max())
        else:
            predicted = 1.0
        rows.append((f"{method}: max |I - I(0)| over t <= {tr.t[-1]:g}", "", float("nan"), float(err.max())))
        rows.append(
            (
                f"{method}: drift ratio (max |I - I(0)| over the last 10% / the first 10% "
                f"of the run; 1 = no drift)",
                "~",
                predicted,
                late / early if early > 0 else float("nan"),
            )
        )
    drift = pd.concat(frames, ignore_index=True)

    conv = []
    t_end = cfg.convergence_t
    x, xdot = theory.damped_quadratic_modes(_LAM, 0.0, QUAD_THETA0, _ZERO, [t_end])
    for method, dts in cfg.convergence_dts.items():
        for h in dts:
            n = _n_steps(t_end, h)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*stability bound.*", category=RuntimeWarning)
                tr = simulate(
                    QUADRATIC,
                    QUAD_THETA0,
                    _ZERO,
                    dt=h,
                    n_steps=n,
                    method=method,
                    save_every=n,
                    on_divergence="stop",
                )
            err = max(
                float(np.max(np.abs(np.asarray(tr.theta)[0] - x[0]))),
                float(np.max(np.abs(np.asarray(tr.v)[0] - xdot[0]))),
            )
            conv.append(
                {"method": method, "order": METHODS[method].order, "dt": h, "n_steps": n, "error": err}
            )
    conv_df = pd.DataFrame(conv)
    for method, part in conv_df.groupby("method", sort=False):
        slope = float(np.polyfit(np.log(part["dt"]), np.log(part["error"]), 1)[0])
        rows.append(
            (
                f"{method}: convergence order (log-log slope of error vs dt, t = {t_end:g})",
                "~",
                float(part["order"].iloc[0]),
                slope,
            )
        )
    return {
        "integrators_drift": drift,
        "integrators_convergence": conv_df,
        "integrators_summary": _summary(rows),
    }


def _draw_integrators(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    drift = {k: v.drop(columns=["dt"]) for k, v in _by(t["integrators_drift"], "method").items()}
    dt = float(t["integrators_drift"]["dt"].iloc[0])
    conv = _by(t["integrators_convergence"], "method")
    orders = {m: float(df["order"].iloc[0]) for m, df in conv.items()}
    slopes = {m: float(np.polyfit(np.log(df["dt"]), np.log(df["error"]), 1)[0]) for m, df in conv.items()}
    return {
        "integrators_drift": plots.drift(
            drift,
            clip=10.0,
            log_t=True,
            title=f"Frictionless quadratic (0.25, 4), dt = {dt:g}: max |I - I(0)| over "
            f"log-spaced windows of time, per integrator",
        ),
        "integrators_convergence": plots.convergence(
            conv,
            orders=orders,
            slopes=slopes,
            title="Measured order: global error at a fixed time against dt",
        ),
    }


# --------------------------------------------------------------------------------------------
# g. energy restarts (inertia.optim)

#: the runs of section g and the optimizer setting each uses (see :func:`_restart_runs`)
RESTART_RUNS = ("plain", "restart", "tuned")


def _restart_runs(cfg: DemoConfig) -> dict[str, tuple[float, float, bool]]:
    """``run -> (lr, momentum, wrapped)``: heavy ball at a too-large momentum, the same with the
    gradient restart, and heavy ball tuned with the condition number (Polyak's optimal
    ``lr = 4 / (sqrt(L) + sqrt(m))^2``, ``mu = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^2``)."""
    root = math.sqrt(cfg.restart_condition)
    lr_tuned = 4.0 / (1.0 + 1.0 / root) ** 2  # L = 1, m = 1 / kappa
    mu_tuned = ((root - 1.0) / (root + 1.0)) ** 2
    return {
        "plain": (cfg.restart_lr, cfg.restart_momentum, False),
        "restart": (cfg.restart_lr, cfg.restart_momentum, True),
        "tuned": (lr_tuned, mu_tuned, False),
    }


def _restart(cfg: DemoConfig, prog: _Progress) -> Tables:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without the extras
        raise _Skip(f"needs torch ({exc})") from exc
    lam = np.geomspace(1.0 / cfg.restart_condition, 1.0, cfg.restart_dim)
    rng = np.random.default_rng(cfg.seed)
    q, _ = np.linalg.qr(rng.standard_normal((cfg.restart_dim, cfg.restart_dim)))
    theta0 = rng.standard_normal(cfg.restart_dim)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on shared cores (restored below)
    try:
        return _restart_tables(cfg, torch.tensor((q * lam) @ q.T, dtype=torch.float64), theta0)
    finally:
        torch.set_num_threads(threads)


def _restart_tables(cfg: DemoConfig, matrix: Any, theta0: np.ndarray) -> Tables:
    import torch

    from inertia.optim import EnergyRestart
    from inertia.track import InertiaTracker

    frames, rows = [], []
    for run, (lr, mu, wrapped) in _restart_runs(cfg).items():
        theta = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
        opt: Any = torch.optim.SGD([theta], lr=lr, momentum=mu)
        opt = EnergyRestart(opt, rule="gradient") if wrapped else opt
        with InertiaTracker(opt) as tracker:
            for _ in range(cfg.restart_steps):
                opt.zero_grad()
                loss = 0.5 * theta @ matrix @ theta
                loss.backward()
                opt.step()
                tracker.record(loss)
        hist = tracker.history
        hist.insert(0, "run", run)
        hist["momentum"] = mu
        frames.append(hist)
        # plain: underdamped slow modes lose energy like mu^k; tuned: mu^k is the asymptotic rate
        # (its critically damped modes carry a polynomial factor, so a finite fit is slower)
        relation = {"plain": "~", "restart": "", "tuned": ""}[run]
        label = f"{run} (lr = {lr:.3g}, mu = {mu:.3g})"
        rows += _restart_rows(label, hist, None if wrapped else mu, relation)
        if wrapped:
            booked = int((hist["restart"].fillna(0.0) != 0.0).sum())
            expected = sum(k + 1 < cfg.restart_steps for k in opt.restarts)
            rows.append(
                (f"{run}: restarts (steps after which v was zeroed)", "", math.nan, len(opt.restarts))
            )
            rows.append(("tracker rows with a restart = restarts before the last row", "~", expected, booked))
    return {"restart": pd.concat(frames, ignore_index=True), "restart_summary": _summary(rows)}


def _restart_rows(label: str, hist: pd.DataFrame, mu: float | None, relation: str) -> list[Row]:
    """Decay rate per step (predicted ``mu`` for heavy ball, when given), steps to
    ``I < 1e-5 I(0)`` and the ledger residual of one run of section g."""
    inertia = hist["inertia"].to_numpy()
    below = np.flatnonzero(inertia < 1e-5 * inertia[0])
    ok = inertia > 1e-12 * inertia[0]
    rate = math.exp(np.polyfit(hist["step"][ok], np.log(inertia[ok]), 1)[0])
    terms = np.abs(hist[["friction", "numerical", "curvature", "restart"]].to_numpy())
    residual = float(np.nanmax(np.abs(hist["residual"]))) / float(np.nanmax(terms))
    return [
        (f"{label}: inertia decay per step (log-linear fit)", relation, math.nan if mu is None else mu, rate),
        (f"{label}: steps to I < 1e-5 I(0)", "", math.nan, float(below[0]) if len(below) else math.nan),
        (f"{label}: max |ledger residual| / largest term", "~", 0.0, residual),
    ]


def _draw_restart(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    parts = {run: df for run, df in t["restart"].groupby("run", sort=False)}
    return {
        "restart_inertia": plots.restarts(
            parts,
            title="Heavy ball on an ill-conditioned quadratic: inertia with and without the "
            "gradient restart (dots: restarts), and heavy ball tuned with the condition number",
        ),
        "restart_ledger": plots.training_ledger(
            parts["restart"],
            title="Where the energy of the restarted run goes, step by step (restart: the "
            "kinetic energy each restart removes)",
        ),
    }


# --------------------------------------------------------------------------------------------
# h. the edge of stability (inertia.curvature, InertiaTracker(sharpness_every=n))


def _stability_runs() -> dict[str, tuple[str, float, float]]:
    """``run -> (optimizer, lr, momentum or beta1)``: full-batch gradient descent below and at
    its threshold ``2 / eta``, heavy ball at ``2 (1 + mu) / eta``, Adam at ``38 / eta``."""
    return {
        "GD lr=0.1": ("sgd", 0.1, 0.0),
        "GD lr=0.35": ("sgd", 0.35, 0.0),
        "GD lr=0.5": ("sgd", 0.5, 0.0),
        "heavy ball lr=0.8 mu=0.9": ("sgd", 0.8, 0.9),
        "Adam lr=0.01": ("adam", 0.01, 0.9),
    }


#: the runs still below their threshold at the end (their ratio is a bound, not an equality)
_BELOW = ("GD lr=0.1",)


def _stability(cfg: DemoConfig, prog: _Progress) -> Tables:
    try:
        import sklearn  # noqa: F401
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without the extras
        raise _Skip(f"needs torch and scikit-learn ({exc})") from exc
    x, y = _digits(cfg.seed, cfg.stability_examples)
    inputs = torch.tensor(x, dtype=torch.float64)
    targets = torch.nn.functional.one_hot(torch.tensor(y, dtype=torch.int64), 10).double()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small network: one thread is fastest on shared cores (restored)
    try:
        frames, rows = [], []
        for run, spec in _stability_runs().items():
            hist = _stability_run(cfg, spec, inputs, targets)
            hist.insert(0, "run", run)
            frames.append(hist)
            rows += _stability_rows(run, hist)
    finally:
        torch.set_num_threads(threads)
    return {"stability": pd.concat(frames, ignore_index=True), "stability_summary": _summary(rows)}


def _stability_run(
    cfg: DemoConfig, spec: tuple[str, float, float], inputs: Any, targets: Any
) -> pd.DataFrame:
    """One full-batch run of the 64-h-10 tanh MLP (float64) on the square loss
    ``1/2 mean ||net(x) - onehot(y)||^2``, tracked with ``sharpness_every``."""
    import torch

    from inertia.track import InertiaTracker, StabilityWarning

    kind, lr, mu = spec
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(64, cfg.stability_hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(cfg.stability_hidden, 10),
        ).double()
    if kind == "adam":
        opt: Any = torch.optim.Adam(net.parameters(), lr=lr, betas=(mu, 0.999))
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=mu)

    def loss_fn() -> Any:
        return 0.5 * ((net(inputs) - targets) ** 2).sum(dim=1).mean()

    with warnings.catch_warnings():  # the warning is the point here: its step is in the table
        warnings.simplefilter("ignore", StabilityWarning)
        with InertiaTracker(opt, sharpness_every=cfg.stability_every) as tracker:
            for _ in range(cfg.stability_steps):
                opt.zero_grad()
                loss = loss_fn()
                loss.backward()
                opt.step()
                tracker.record(loss, loss_fn)
    hist = tracker.history
    hist["momentum"] = mu
    return hist


def _stability_rows(run: str, hist: pd.DataFrame) -> list[Row]:
    """Per run: the threshold, where the sharpness first reached 0.9 of it, its ratio over the
    last third of the run, the update curvature there, and how well ``1/2 dtheta^T H dtheta``
    matches the ledger's curvature work ``B``."""
    sharp = hist.dropna(subset=["sharpness"])
    last = 2 * hist["step"].max() / 3
    late = sharp[sharp["step"] >= last]
    late_rows = hist[hist["step"] >= last]
    crossed = sharp.index[sharp["sharpness_ratio"] >= 0.9]
    first = float(sharp.loc[crossed[0], "step"]) if len(crossed) else math.nan
    quad = sharp["curvature_quadratic"] / sharp["curvature"] - 1.0
    relation = "<=" if run in _BELOW else "~"
    update = (late_rows["update_curvature"] / late_rows["threshold"]).median()
    return [
        (f"{run}: stability threshold", "", math.nan, float(hist["threshold"].iloc[-1])),
        (f"{run}: first step with sharpness >= 0.9 threshold (the warning)", "", math.nan, first),
        (
            f"{run}: sharpness / threshold, median of the last third",
            relation,
            1.0,
            float(late["sharpness_ratio"].median()),
        ),
        (f"{run}: update curvature / threshold, median of the last third", "", math.nan, float(update)),
        (
            f"{run}: median |1/2 dtheta^T H dtheta / B - 1| at sharpness steps",
            "~",
            0.0,
            float(quad.abs().median()),
        ),
        (
            f"{run}: Hessian-vector products per sharpness step (median)",
            "",
            math.nan,
            float(sharp["n_hvp"].median()),
        ),
    ]


def _draw_stability(t: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    from inertia import plots

    parts = {run: df for run, df in t["stability"].groupby("run", sort=False)}
    gd = {k: v for k, v in parts.items() if k.startswith("GD")}
    other = {k: v for k, v in parts.items() if not k.startswith("GD")}
    return {
        "stability_gd": plots.sharpness(
            gd,
            title="Full-batch gradient descent at three learning rates: the sharpness lambda_max(H) "
            "(dots) rises to 2/eta (dashed) and stays there; the ledger's update curvature "
            "2 B / |dtheta|^2 (line) jumps up to it at the edge",
        ),
        "stability_momentum": plots.sharpness(
            other,
            title="Heavy ball against 2(1 + mu)/eta, and Adam's preconditioned sharpness "
            "lambda_max(P^-1 H) against 38/eta",
        ),
    }


# --------------------------------------------------------------------------------------------
# the scenario table


@dataclass(frozen=True)
class _Scenario:
    section: Section
    compute: Callable[[DemoConfig, _Progress], Tables]
    draw: Callable[[Mapping[str, pd.DataFrame]], dict[str, Any]]
    data: tuple[str, ...]


SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(
        Section(
            "frictionless",
            "a. Frictionless dynamics: inertia is conserved",
            law="gamma = sigma = 0:  dI/dt = 0,  I(t) = K(t) + V(t) = I(0);  corollary: L(theta(t)) <= I(0)",
            text="""Leapfrog (velocity Verlet) on the anisotropic quadratic with eigenvalues
            (0.25, 4) and on the double well DoubleWell(2), both from rest. Kinetic and potential
            energy trade places while their sum, the computational inertia, stays at its initial
            value: the dashed lines are the theory (the exact normal-mode solution for the
            quadratic, the flat line I(0) for both). The double well starts above its barrier,
            so the orbit crosses between the wells, and the loss never exceeds I(0). The
            remaining wiggle of I is the integrator's bounded O(dt^2) error, not a drift.""",
            figures=("frictionless",),
            tables=("frictionless_summary",),
        ),
        _frictionless,
        _draw_frictionless,
        ("frictionless", "frictionless_summary"),
    ),
    _Scenario(
        Section(
            "damped",
            "b. Damped dynamics: closed forms and the ledger",
            law="sigma = 0:  dI/dt = -gamma v^T M v <= 0,  "
            "I(t) + integral_0^t gamma v^T M v ds = I(0);  critical gamma* = 2 sqrt(lambda_min)",
            text="""The same quadratic with constant friction: underdamped (gamma = 0.2),
            critically damped for the slowest mode (gamma = critical_damping(0.25) = 1) and
            overdamped (gamma = 5). The exact solution of x'' + gamma x' + lambda x = 0 per mode
            (dashed) lies on top of the simulation (solid). Inertia never increases, with
            plateaus at the turning points of the velocity; critical damping empties it fastest.

            The ledger figure books every unit of energy: the work done by friction, recorded by
            the integrator's exact friction sub-steps, plus the inertia left equals I(0). The
            bottom row shows the residual of that balance, the scheme's O(dt^2) error. It is
            predictable too: on a quadratic, leapfrog with exact friction conserves its shadow
            energy H~ = K + 1/2 sum lambda theta^2 (1 - lambda dt^2 / 4) plus the dissipated
            work exactly, so from rest the residual settles at
            I(0) - H~(0) = sum lambda^2 dt^2 theta(0)^2 / 8 (dashed) as I decays.""",
            figures=("damped_energies", "damped_ledger"),
            tables=("damped_summary",),
        ),
        _damped,
        _draw_damped,
        ("damped", "damped_summary"),
    ),
    _Scenario(
        Section(
            "heating",
            "c. Noise without friction: linear heating",
            law="gamma = 0, sigma > 0:  dE[I]/dt = sigma^2 d / 2,  E[I](t) = I(0) + sigma^2 d t / 2",
            text="""An ensemble of paths driven by noise alone (BAOAB with gamma = 0, which
            adds sigma sqrt(dt) xi to v each step). By Ito's lemma every unit of time pumps
            sigma^2 d / 2 of energy into the system, whatever the potential: the ensemble mean
            (solid, with a band of +-3 standard errors) follows the straight line of the theory
            (dashed) on the quadratic and on the double well alike.""",
            figures=("heating",),
            tables=("heating_summary",),
        ),
        _heating,
        _draw_heating,
        ("heating", "heating_summary"),
    ),
    _Scenario(
        Section(
            "langevin",
            "d. Friction and noise: relaxation to the Gibbs level",
            law="dE[I]/dt = -2 gamma E[K] + sigma^2 d / 2;  T = sigma^2 / (2 gamma);  quadratic: "
            "E[I] -> d sigma^2 / (2 gamma);  any potential: E[K] -> d T / 2",
            text="""Langevin dynamics (BAOAB, exact Ornstein-Uhlenbeck step) with gamma = 0.5 and
            sigma = 0.5, so the fluctuation-dissipation temperature is T = 0.25 and the
            stationary inertia of the 2-D quadratic is d sigma^2 / (2 gamma) = 0.5, independent
            of its Hessian. One ensemble starts above that level and decays to it; one starts
            at rest in the minimum (I = 0) and is heated up to it. The exact E[I](t) from the
            moment equations (mean and Lyapunov covariance, dashed) lies inside the +-3 SE
            bands.

            On the double well (T = 0.3, ensemble starting in a minimum) there is no closed
            form for the transient, but the stationary levels are known: mean kinetic energy
            d T / 2 for any potential, and E[I] = d T / 2 + E_Gibbs[V] with the Gibbs average
            computed by quadrature (dotted).""",
            figures=("langevin",),
            tables=("langevin_summary",),
        ),
        _langevin,
        _draw_langevin,
        ("langevin", "langevin_summary"),
    ),
    _Scenario(
        Section(
            "network",
            "e. A real network loss: conservation and the ledger",
            law="V(theta) = cross-entropy of an MLP on digits;  gamma = 0: I(t) = I(0);  "
            "gamma > 0: I(t) + integral gamma ||v||^2 ds = I(0)",
            text="""The laws do not care what the potential is. Here it is the full-batch
            cross-entropy of a 64-16-10 tanh MLP (float64) on a standardised subset of
            scikit-learn's bundled handwritten digits, as a function of all its flattened
            parameters (inertia.potentials.from_module). From the initial weights at rest,
            frictionless leapfrog turns loss into kinetic energy while the inertia stays flat to
            a relative error of order dt^2; with friction the same dynamics is heavy-ball
            training, the loss falls, and the ledger closes on the real loss surface. The
            summary gives the largest Hessian eigenvalue at the start (Lanczos on
            Hessian-vector products) and the leapfrog stability bound it implies.""",
            figures=("network_conservation", "network_ledger"),
            tables=("network_summary",),
        ),
        _network,
        _draw_network,
        ("network", "network_summary"),
    ),
    _Scenario(
        Section(
            "integrators",
            "f. Integrators: drift, bounded error and measured order",
            law="explicit euler: I_n = sum_i E_i(0) (1 + lambda_i dt^2)^n;  symplectic (order p): "
            "|I - I(0)| <= C dt^p for all time;  global error ~ C dt^p",
            text="""Frictionless runs of the quadratic with dt = 0.1. Explicit euler is not
            symplectic: each step multiplies the energy of mode i by exactly (1 + lambda_i dt^2)
            (dashed, exact), so it drifts away without bound (its curve is cut where it leaves
            the plot). Symplectic euler, leapfrog and yoshida4 keep |I - I(0)| bounded over the
            whole horizon (t = 1000): no secular drift, only an oscillating error of size
            dt, dt^2 and dt^4.

            The second figure measures each method's order: the global error of the state at a
            fixed time against the exact solution, for a range of dt, with reference lines of
            the declared slope (dashed); the legend gives the least-squares log-log slope.""",
            figures=("integrators_drift", "integrators_convergence"),
            tables=("integrators_summary",),
        ),
        _integrators,
        _draw_integrators,
        ("integrators_drift", "integrators_convergence", "integrators_summary"),
    ),
    _Scenario(
        Section(
            "restart",
            "g. Optimizers that use the energy: momentum restarts",
            law="gradient restart: zero v after step k when <g_k, theta_{k+1} - theta_k> > 0 "
            "(negative power);  a restart removes K at once: I -> I - K (ledger term restart = -K)",
            text="""Heavy-ball SGD (PyTorch's torch.optim.SGD, float64, tracked by
            InertiaTracker) on a 20-dimensional quadratic with eigenvalues spread from 1e-3 to 1
            (condition number 1000), three ways: with a too-large momentum mu = 0.99 (plain),
            the same optimizer wrapped in inertia.optim.EnergyRestart(rule="gradient") (restart),
            and heavy ball tuned with the condition number, which a user rarely knows (tuned:
            Polyak's optimal lr and mu). Plain heavy ball's slow modes are underdamped: its
            inertia falls like mu^k = 0.99^k and oscillates as the motion climbs back up the
            valley. The restart zeroes the velocity whenever the power turns negative (dots),
            which cuts those climbs and recovers most of the tuned rate without knowing the
            condition number; it does not reach it. The ledger figure shows where the restarted
            run's energy goes: friction, the scheme's numerical dissipation, curvature work and
            the restart term, which books the kinetic energy each restart removes, so the
            residual stays at rounding error.

            Honest limits, measured in benchmarks/optimizers.py and written in inertia.optim:
            heavy ball tuned with the condition number (the tuned run above) still beats the
            restarted one; restarts at full momentum can chatter on stiff modes, and on noisy
            minibatch training the rules are heuristics with mixed results.""",
            figures=("restart_inertia", "restart_ledger"),
            tables=("restart_summary",),
        ),
        _restart,
        _draw_restart,
        ("restart", "restart_summary"),
    ),
    _Scenario(
        Section(
            "stability",
            "h. The edge of stability: sharpness, thresholds and the ledger's curvature",
            law="stable iff eta lambda_max < 2 (gradient descent), < 2 (1 + mu) (heavy ball), "
            "eta lambda_max(P^-1 H) < (2 + 2 beta1)/(1 - beta1) (Adam);  "
            "update curvature = 2 B_k / (dtheta^T P dtheta)",
            text="""Full-batch training of a 64-32-10 tanh MLP (float64, square loss on one-hot
            targets) on a subset of the digits, tracked by InertiaTracker(optimizer,
            sharpness_every=25): every 25 steps the top eigenvalue of the Hessian (for Adam of
            the preconditioned Hessian P^-1/2 H P^-1/2, P read from its state) by Lanczos on
            Hessian-vector products (inertia.curvature), beside the optimizer's own stability
            threshold (dashed) and, on every step and for free, the ledger's curvature along the
            update 2 B_k / |dtheta|^2 (B_k: the curvature work of the ledger).

            First figure: gradient descent. The sharpness rises during training (progressive
            sharpening) until it reaches 2/eta, then hovers there while the loss keeps falling,
            non-monotonically (the edge of stability, Cohen et al. 2021): at eta = 0.35 and 0.5
            within the run, at eta = 0.1 not yet. Below the edge the gradient points along flat
            directions and the update curvature is orders of magnitude below the sharpness; at
            the edge it jumps up to the threshold, and the loss spikes where the curvature work
            B_k does: the free every-step signal says when training is at the edge, and the
            sharpness warned (at 0.9 of the threshold) long before the spike. The bottom row
            shows the loss and B_k, with 1/2 dtheta^T H dtheta (one more Hessian-vector
            product, dots) on top of it.

            Second figure: heavy ball with mu = 0.9 settles at 2(1 + mu)/eta, and Adam's
            preconditioned sharpness at (2 + 2 beta1)/((1 - beta1) eta) = 38/eta (Cohen et
            al. 2022); in both the sharpness reaches the threshold first, the update
            curvature and the loss spike after. The summary gives, per run, the step at which
            the tracker's StabilityWarning would fire (sharpness >= 0.9 threshold), the ratios
            over the last third of the run, and how closely 1/2 dtheta^T H dtheta matches B_k
            (they agree to third order in the step).""",
            figures=("stability_gd", "stability_momentum"),
            tables=("stability_summary",),
        ),
        _stability,
        _draw_stability,
        ("stability", "stability_summary"),
    ),
)

INTRO = """Computational inertia I = 1/2 v^T M v + L(theta) is the total energy of second-order
learning dynamics: kinetic energy of the parameter velocity plus the loss. Without friction or
noise it is conserved; friction removes exactly the energy it books in the ledger; noise heats
the system at a rate sigma^2 d / 2; together they relax it to the Gibbs level
d sigma^2 / (2 gamma). Each section below states one of these laws, draws the theory (dashed)
over a simulation (solid), and tabulates predicted against measured numbers. Systems: the
anisotropic quadratic with eigenvalues (0.25, 4) started at theta = (2, 0.5), the double well
DoubleWell(2), and an MLP trained on handwritten digits.

Every figure is drawn from a CSV table in this run directory: simulation columns (kinetic,
potential, inertia, dissipated, or the ensemble mean and its standard error se) sit next to the
theory columns (*_theory, theory, level) they are compared with, and each <scenario>_summary.csv
lists predicted against measured numbers. The relation column says how to read a row: "~" should
agree up to the stated discretisation or sampling error, "<=" is a bound. manifest.json records
the configuration, seed and package versions; "inertia report RUN_DIR" redraws the figures and
this page from the tables alone."""


def _sections(skipped: Mapping[str, str]) -> list[Section]:
    out = []
    for sc in SCENARIOS:
        s = sc.section
        if s.key in skipped:
            s = Section(s.key, s.title, s.law, f"Skipped: {skipped[s.key]}.\n\n{s.text}")
        out.append(s)
    return out


def _draw(
    run: RunDir, scenario: _Scenario, tables: Mapping[str, pd.DataFrame], *, overwrite: bool
) -> list[Path]:
    from inertia import plots

    paths = []
    for name, fig in scenario.draw(tables).items():
        paths.append(plots.save(fig, run.figure_path(name), overwrite=overwrite))
    return paths


def run_demo(
    out: str | Path | RunDir | None = None,
    progress: bool = True,
    quick: bool = False,
    *,
    seed: int = 0,
    root: str | Path = "runs",
) -> Path:
    """Run every scenario and write a new run directory; return its path.

    Args:
        out: the run directory (must not exist or be empty, or a :class:`~inertia.runs.RunDir`
            of kind ``"demo"`` just made by :func:`inertia.runs.create_run`); default
            ``<root>/demo-<YYYYmmdd-HHMMSS>``.
        progress: show a tqdm progress bar on stderr.
        quick: the much smaller configuration of :func:`demo_config` (for tests).
        seed: the base noise seed (each ensemble uses its own offset of it).
        root: the parent of default run directories.

    Returns:
        The run directory, holding ``manifest.json``, CSV tables, PNG figures and
        ``report.html``.
    """
    seed = whole_number("seed", seed, minimum=0)  # before the directory is made
    if seed > 2**32 - 1:
        raise ValueError(f"`seed` must be an integer in [0, 2**32 - 1], got {seed!r}")
    cfg = demo_config(quick, seed)
    run = out if isinstance(out, RunDir) else create_run("demo", out, root=root)
    log.info("demo: writing %s", run.path)
    manifest: dict[str, Any] = {
        "config": {
            **asdict(cfg),
            "systems": {
                "quadratic": {**QUADRATIC.describe(), "theta0": QUAD_THETA0},
                "double_well": {**DOUBLE_WELL.describe(), "theta0": DW_THETA0},
            },
            "scenarios": [s.section.key for s in SCENARIOS],
        },
        "seed": cfg.seed,
        "status": "running",
    }
    run.write_manifest(manifest)
    bar = _Progress(progress, len(SCENARIOS))
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {}
    try:
        for sc in SCENARIOS:
            key = sc.section.key
            bar.start(key)
            t0 = time.perf_counter()
            try:
                tables = sc.compute(cfg, bar)
            except _Skip as exc:
                skipped[key] = str(exc)
                log.warning("demo: scenario %s skipped: %s", key, exc)
                bar.advance()
                continue
            for name, df in tables.items():
                run.write_table(name, df)
            _draw(run, sc, tables, overwrite=False)
            timings[key] = round(time.perf_counter() - t0, 3)
            bar.advance()
    except BaseException as exc:  # keep what was written, and say in the manifest why it ended
        manifest.update(
            status="failed", error=f"{type(exc).__name__}: {exc}", skipped=skipped, seconds=timings
        )
        run.write_manifest(manifest, finished=True)
        raise
    finally:
        bar.close()
    manifest.update(status="complete", skipped=skipped, seconds=timings, report="report.html")
    run.write_manifest(manifest, finished=True)
    write_report(run, TITLE, _sections(skipped), intro=INTRO)
    return run.path


def render(run_dir: str | Path) -> Path:
    """Redraw the figures and ``report.html`` of a saved demo run from its CSV tables.

    Data (CSV tables, manifest) are only read; the figures and the report, which are derived
    from them, are replaced. Returns the path of ``report.html``.

    Raises:
        ValueError: ``run_dir`` is not a demo run.
        FileNotFoundError: a table is missing.
    """
    path = Path(run_dir)
    manifest = read_manifest(path)
    if manifest.get("kind") != "demo":
        raise ValueError(
            f"`run_dir` must be a demo run directory (manifest kind 'demo'), "
            f"got kind {manifest.get('kind')!r} in {str(path)!r}"
        )
    run = RunDir.open(path)
    skipped = dict(manifest.get("skipped") or {})
    for sc in SCENARIOS:
        if sc.section.key in skipped:
            continue
        tables = {name: read_table(path, name) for name in sc.data}
        _draw(run, sc, tables, overwrite=True)
    return write_report(run, TITLE, _sections(skipped), intro=INTRO)
