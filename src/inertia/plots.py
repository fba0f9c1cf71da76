"""Figures: simulation drawn solid, theory drawn dashed on top.

matplotlib is imported here and nowhere else (``import inertia`` does not load it). Figures are
built with the object-oriented API on an Agg canvas: no pyplot, no global state, no window, and
the caller's backend is left alone. Every function returns a :class:`matplotlib.figure.Figure`;
:func:`save` writes it as a PNG atomically.

Inputs are *data*, so a figure can be drawn from a live :class:`inertia.Trajectory` or from a
table read back from a run directory: each data item is a :class:`~inertia.Trajectory`, a pandas
DataFrame or a mapping of column name to 1-D array. The columns each function reads:

* :func:`energies` -- ``t, kinetic, potential, inertia`` and optional ``<name>_theory``;
  a Trajectory gives path ``path``.
* :func:`ensemble` -- ``t, mean, se`` and optional ``theory``; a Trajectory gives the mean and
  standard error ``std/sqrt(n_paths)`` of its inertia over paths.
* :func:`ledger` -- ``t, inertia, dissipated`` and optional ``inertia_theory``,
  ``residual_theory``.
* :func:`drift` -- ``t, inertia`` (or ``abs_error``) and optional ``abs_error_theory``.
* :func:`convergence` -- ``dt, error``.
* :func:`restarts` -- ``step, kinetic, inertia`` and optional ``restart`` per run.
* :func:`training_energies`, :func:`training_ledger`, :func:`training_residual` -- the rows of a
  tracked training run (:data:`inertia.track.COLUMNS`: ``step, kinetic, potential, inertia,
  delta_inertia``, the ledger terms of :data:`LEDGER_TERMS`, ``residual``, ``finite``), e.g.
  ``tracker.history`` or :func:`inertia.runs.read_history` of a run directory.

Vocabulary follows STYLE.md: kinetic, potential, inertia, gamma, sigma, dt.

Example:
    >>> import inertia
    >>> from inertia import plots, potentials
    >>> traj = inertia.simulate(potentials.Quadratic([1.0]), [1.0], dt=0.1, n_steps=50)
    >>> fig = plots.energies({"harmonic": traj})
    >>> len(fig.axes)
    1
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from inertia.simulate import Trajectory

__all__ = [
    "COLORS",
    "LEDGER_TERMS",
    "convergence",
    "drift",
    "energies",
    "ensemble",
    "ledger",
    "png_bytes",
    "restarts",
    "save",
    "training_energies",
    "training_ledger",
    "training_residual",
]

#: One colour per quantity, used by every figure.
COLORS = {
    "kinetic": "tab:blue",
    "potential": "tab:orange",
    "inertia": "tab:green",
    "dissipated": "tab:purple",
    "ledger": "tab:gray",
    "theory": "black",
    "euler": "tab:red",
    "symplectic_euler": "tab:brown",
    "leapfrog": "tab:blue",
    "yoshida4": "tab:green",
    "baoab": "tab:purple",
}
_CYCLE = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:olive"]

#: Darker shades for the dashed theory line of each quantity.
THEORY_COLORS = {"kinetic": "#0b3d91", "potential": "#7a3300", "inertia": "black"}

_REF_OFFSET = 0.3

#: The ledger terms of a tracked step, in the order they are stacked (THEORY.md, the tracker).
LEDGER_TERMS = ("friction", "numerical", "curvature", "noise", "schedule", "metric", "decay", "restart")
#: One colour per ledger term.
LEDGER_COLORS = {
    "friction": "tab:purple",
    "numerical": "tab:red",
    "curvature": "tab:orange",
    "noise": "tab:cyan",
    "schedule": "tab:olive",
    "metric": "tab:pink",
    "decay": "tab:brown",
    "restart": "tab:gray",
}
_NONFINITE = {"color": "crimson", "linestyle": ":", "linewidth": 1.2, "alpha": 0.8, "zorder": 1}

_SIM = {"linewidth": 2.6, "alpha": 0.55, "solid_capstyle": "round"}
_THEORY = {"linestyle": "--", "linewidth": 1.4, "color": COLORS["theory"], "zorder": 5}


def _columns(data: Any, path: int = 0) -> dict[str, np.ndarray]:
    """Columns of ``data`` as float arrays (a Trajectory gives path ``path``, mean and se)."""
    if isinstance(data, Trajectory):
        out = {"t": np.asarray(data.t, dtype=np.float64)}
        for name in ("kinetic", "potential", "inertia", "dissipated"):
            out[name] = np.asarray(getattr(data, name)[:, path], dtype=np.float64)
        paths = np.asarray(data.inertia, dtype=np.float64)
        out["mean"] = paths.mean(axis=1)
        n = paths.shape[1]
        out["se"] = paths.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(len(out["t"]))
        return out
    if hasattr(data, "columns"):  # pandas DataFrame
        return {str(c): np.asarray(data[c]) for c in data.columns}
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v) for k, v in data.items()}
    raise TypeError(
        f"data must be a Trajectory, a DataFrame or a mapping of columns, got {type(data).__name__}"
    )


def _need(cols: Mapping[str, np.ndarray], names: Sequence[str], where: str) -> None:
    missing = [n for n in names if n not in cols]
    if missing:
        raise ValueError(f"{where}: data must have columns {list(names)}; missing {missing}")


def _figure(
    n_rows: int,
    n_cols: int,
    *,
    width: float = 4.6,
    height: float = 3.4,
    sharex: bool | Literal["col"] = False,
    min_width: float = 0.0,
) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(max(width * n_cols, min_width), height * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=sharex)
    return fig, axes


def _panels(panels: Mapping[str, Any], where: str) -> list[tuple[str, Any]]:
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError(f"{where}: `panels` must be a non-empty mapping of title -> data")
    return list(panels.items())


def _finish(fig: Figure, title: str | None) -> Figure:
    if title:
        width = int(fig.get_figwidth() * 11)  # characters that fit at fontsize 12
        fig.suptitle(textwrap.fill(title, max(width, 40)), fontsize=12)
    return fig


def _shared_legend(fig: Figure, axes: Any) -> None:
    """One legend for the whole figure, below the panels (labels deduplicated)."""
    handles: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        ncol = 4 if fig.get_figwidth() >= 9 else 3
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(len(handles), ncol),
            fontsize=8,
            frameon=False,
        )


def energies(
    panels: Mapping[str, Any], *, path: int = 0, residual: bool = False, title: str | None = None
) -> Figure:
    """Kinetic, potential and inertia against ``t``, one panel per entry of ``panels``.

    Simulation is drawn solid; any ``kinetic_theory``, ``potential_theory`` or
    ``inertia_theory`` column is drawn dashed on top. In the frictionless case the theory is
    ``I(t) = I(0)`` (a flat line) while kinetic and potential exchange.

    Args:
        panels: panel title -> data with columns ``t, kinetic, potential, inertia``.
        path: which path of a Trajectory to draw.
        residual: add a row with the conservation error ``|I(t) - I(0)| / I(0)`` (log scale).
        title: figure title.
    """
    items = _panels(panels, "energies")
    fig, axes = _figure(
        2 if residual else 1, len(items), height=3.2 if residual else 3.6, sharex="col", min_width=8.0
    )
    for j, (name, data) in enumerate(items):
        ax = axes[0, j]
        cols = _columns(data, path)
        _need(cols, ("t", "kinetic", "potential", "inertia"), "energies")
        t = cols["t"]
        for q in ("kinetic", "potential", "inertia"):
            ax.plot(t, cols[q], color=COLORS[q], label=f"{q} (simulation)", **_SIM)
        for q in ("kinetic", "potential", "inertia"):
            if f"{q}_theory" in cols:
                ax.plot(
                    t, cols[f"{q}_theory"], label=f"{q} (theory)", **{**_THEORY, "color": THEORY_COLORS[q]}
                )
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("energy")
        ax.grid(alpha=0.3)
        if residual:
            i0 = float(cols["inertia"][0])
            rel = np.abs(cols["inertia"] - i0) / (abs(i0) if i0 != 0 else 1.0)
            bottom = axes[1, j]
            bottom.semilogy(t[1:], np.maximum(rel[1:], 1e-17), color=COLORS["inertia"])
            bottom.set_ylabel("|I(t) - I(0)| / I(0)")
            bottom.grid(alpha=0.3, which="both")
        axes[-1, j].set_xlabel("t")
    _shared_legend(fig, axes[0])
    return _finish(fig, title)


def ensemble(
    panels: Mapping[str, Mapping[str, Any]],
    *,
    levels: Mapping[str, Mapping[str, float]] | None = None,
    quantity: str = "inertia",
    title: str | None = None,
) -> Figure:
    """Ensemble mean of ``quantity`` with a +-3 standard-error band, against the exact mean.

    Each panel holds one or more curves (e.g. an ensemble starting above and one below the
    stationary level). The band is ``mean +- 3 se`` with ``se = std / sqrt(n_paths)``; the exact
    ``E[I](t)`` (``theory`` column) is drawn dashed on top, and ``levels`` as dotted horizontal
    lines (e.g. ``{"quadratic": {"d sigma^2/(2 gamma)": 0.5}}``).

    Args:
        panels: panel title -> (curve label -> data with ``t, mean, se`` and optional
            ``theory``).
        levels: panel title -> (label -> value) of horizontal reference lines.
        quantity: the y-axis name.
        title: figure title.
    """
    items = _panels(panels, "ensemble")
    fig, axes = _figure(1, len(items), min_width=8.0)
    for ax, (name, curves) in zip(axes[0], items, strict=True):
        for i, (label, data) in enumerate(_panels(curves, "ensemble curves")):
            cols = _columns(data)
            _need(cols, ("t", "mean", "se"), "ensemble")
            color = _CYCLE[i % len(_CYCLE)]
            t, mean, se = cols["t"], cols["mean"], cols["se"]
            ax.fill_between(
                t,
                mean - 3 * se,
                mean + 3 * se,
                color=color,
                alpha=0.25,
                linewidth=0,
                label=f"{label}: mean +- 3 SE",
            )
            ax.plot(t, mean, color=color, linewidth=1.6, alpha=0.9, label=f"{label}: mean")
            if "theory" in cols:
                ax.plot(t, cols["theory"], label=f"{label}: exact mean (theory)", **_THEORY)
        for label, value in ((levels or {}).get(name) or {}).items():
            ax.axhline(value, color="0.35", linestyle=":", linewidth=1.6, label=label, zorder=4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("t")
        ax.set_ylabel(f"{quantity} (ensemble mean)")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    return _finish(fig, title)


def ledger(panels: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """The damped ledger ``I(t) + dissipated(t) = I(0)``, one column per entry of ``panels``.

    Top row: inertia (solid; exact ``inertia_theory`` dashed on top), the dissipated work
    ``integral_0^t gamma v^T M v ds``, their sum, and ``I(0)`` (dotted). Bottom row: the ledger
    residual ``|I(t) + dissipated(t) - I(0)|`` on a log scale (the integrator's error, O(dt^2)
    for the splitting schemes), with an optional ``residual_theory`` column drawn dashed.
    """
    items = _panels(panels, "ledger")
    fig, axes = _figure(2, len(items), height=3.0, sharex="col", min_width=8.0)
    for j, (name, data) in enumerate(items):
        cols = _columns(data)
        _need(cols, ("t", "inertia", "dissipated"), "ledger")
        t, inertia, diss = cols["t"], cols["inertia"], cols["dissipated"]
        i0 = float(inertia[0])
        top, bottom = axes[0, j], axes[1, j]
        top.plot(t, inertia, color=COLORS["inertia"], label="inertia I(t)", **_SIM)
        top.plot(t, diss, color=COLORS["dissipated"], label="dissipated(t)", **_SIM)
        top.plot(t, inertia + diss, color=COLORS["ledger"], linewidth=2.0, label="I(t) + dissipated(t)")
        if "inertia_theory" in cols:
            top.plot(t, cols["inertia_theory"], label="inertia (theory)", **_THEORY)
        top.axhline(i0, color="0.2", linestyle=":", linewidth=1.4, label="I(0)", zorder=6)
        top.set_title(name, fontsize=10)
        top.set_ylabel("energy")
        top.grid(alpha=0.3)
        resid = np.abs(inertia + diss - i0)
        bottom.semilogy(
            t[1:],
            np.maximum(resid[1:], 1e-17),
            color=COLORS["ledger"],
            linewidth=2.2,
            alpha=0.7,
            label="|I + dissipated - I(0)| (simulation)",
        )
        if "residual_theory" in cols:
            bottom.semilogy(t[1:], np.abs(cols["residual_theory"][1:]), label="residual (theory)", **_THEORY)
        bottom.set_xlabel("t")
        bottom.set_ylabel("|I + dissipated - I(0)|")
        bottom.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    return _finish(fig, title)


def drift(
    runs: Mapping[str, Any], *, clip: float | None = None, log_t: bool = False, title: str | None = None
) -> Figure:
    """``|I(t) - I(0)|`` against ``t`` on a log scale, one curve per integrator.

    Symplectic methods (symplectic_euler, leapfrog, yoshida4) stay bounded, explicit euler drifts
    away; an ``abs_error_theory`` column (e.g. euler's exact growth) is drawn dashed on top. With
    ``clip``, a curve is cut where it first exceeds ``clip`` (and marked there), so that a
    diverging baseline does not squash the others.

    Args:
        runs: method name -> data with ``t`` and ``inertia``, or ``t`` and ``abs_error`` (for
            example the maximum of ``|I - I(0)|`` over the window of steps ending at ``t``).
        clip: the largest ``|I - I(0)|`` drawn.
        log_t: logarithmic time axis (shows early growth and the long horizon together).
        title: figure title.
    """
    items = _panels(runs, "drift")
    fig, axes = _figure(1, 1, width=8.4, height=4.2)
    ax = axes[0, 0]
    for i, (name, data) in enumerate(items):
        cols = _columns(data)
        t = cols["t"].astype(np.float64)
        if "abs_error" in cols:
            err = np.abs(cols["abs_error"].astype(np.float64))
        else:
            _need(cols, ("t", "inertia"), "drift")
            err = np.abs(cols["inertia"] - cols["inertia"][0])
        color = COLORS.get(name, _CYCLE[i % len(_CYCLE)])
        keep = np.isfinite(err)
        if clip is not None and np.any(err > clip):
            cut = int(np.argmax(err > clip))
            keep[cut + 1 :] = False
            ax.plot(t[cut], err[cut], marker="x", color=color, markersize=9, zorder=6)
            ax.annotate(
                f"{name} leaves the plot\n(t = {t[cut]:.3g})",
                (t[cut], err[cut]),
                textcoords="offset points",
                xytext=(8, -22),
                fontsize=7,
                color=color,
            )
        sel = keep & (t > 0)
        ax.plot(
            t[sel],
            np.maximum(err[sel], 1e-17),
            color=color,
            linewidth=2.2,
            alpha=0.6,
            label=f"{name} (simulation)",
        )
        if "abs_error_theory" in cols:
            th = cols["abs_error_theory"].astype(np.float64)
            ok = sel & np.isfinite(th)
            if np.any(ok):
                ax.plot(t[ok], np.maximum(th[ok], 1e-17), label=f"{name} (theory)", **_THEORY)
    ax.set_yscale("log")
    if log_t:
        ax.set_xscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("|I(t) - I(0)|")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, title)


def convergence(
    runs: Mapping[str, Any],
    *,
    orders: Mapping[str, float] | None = None,
    slopes: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Global error against ``dt`` on log-log axes, with reference slopes ``dt^p``.

    Each method's points are joined solid; its declared order ``p`` (``orders``) is drawn as a
    dashed line ``C dt^p``, placed a factor ``_REF_OFFSET`` below the method's smallest-``dt``
    point so the two stay distinguishable; parallel lines mean the order is attained.
    ``slopes`` (measured least-squares slopes) are shown in the legend.

    Args:
        runs: method name -> data with columns ``dt, error``.
        orders: method name -> declared order.
        slopes: method name -> measured log-log slope.
        title: figure title.
    """
    items = _panels(runs, "convergence")
    fig, axes = _figure(1, 1, width=8.4, height=4.6)
    ax = axes[0, 0]
    for i, (name, data) in enumerate(items):
        cols = _columns(data)
        _need(cols, ("dt", "error"), "convergence")
        dt, err = cols["dt"].astype(np.float64), cols["error"].astype(np.float64)
        color = COLORS.get(name, _CYCLE[i % len(_CYCLE)])
        label = name if not slopes or name not in slopes else f"{name}: slope {slopes[name]:.2f}"
        ax.loglog(dt, err, marker="o", color=color, linewidth=1.4, label=label)
        if orders and name in orders:
            p = float(orders[name])
            k = int(np.argmin(dt))
            ref = _REF_OFFSET * err[k] * (dt / dt[k]) ** p
            ax.loglog(
                dt,
                ref,
                linestyle="--",
                color=color,
                linewidth=1.2,
                alpha=0.9,
                label=f"reference slope dt^{p:g}",
            )
    ax.set_xlabel("dt")
    ax.set_ylabel("global error at the final time")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, title)


# --------------------------------------------------------------------------------------------
# tracked training runs


def _history(data: Any, where: str, needed: Sequence[str]) -> dict[str, np.ndarray]:
    cols = _columns(data)
    _need(cols, needed, where)
    out = {k: (v if k == "finite" else v.astype(np.float64)) for k, v in cols.items() if v.dtype != object}
    out["finite"] = (
        np.asarray(cols["finite"], dtype=bool) if "finite" in cols else np.ones(len(cols["step"]), bool)
    )
    return out


def _mark_nonfinite(axes: Sequence[Any], cols: Mapping[str, np.ndarray]) -> None:
    """A dotted red line at every non-finite row; the first one labelled with its step."""
    bad = cols["step"][~cols["finite"]]
    for ax in axes:
        for i, step in enumerate(bad[:200]):
            label = f"non-finite row (first at step {int(bad[0])})" if i == 0 else None
            ax.axvline(step, label=label, **_NONFINITE)


def _no_rows(fig: Figure, axes: np.ndarray, title: str | None) -> Figure:
    for ax in np.ravel(axes):
        ax.text(0.5, 0.5, "no rows recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, title)


def training_energies(history: Any, *, title: str | None = None) -> Figure:
    """Kinetic, potential and inertia of a tracked training run against ``step``.

    Top: ``potential`` (the loss at ``theta_k`` plus any weight-decay potential), ``kinetic``
    (of the velocity that reached ``theta_k``) and their sum ``inertia``. Bottom: ``kinetic`` on
    a log scale, since it is usually orders of magnitude below the loss. Non-finite rows are
    marked by dotted red lines (their values are not drawn as numbers, and never as 0).

    Args:
        history: rows with ``step, kinetic, potential, inertia`` (and optional ``finite``).
        title: figure title.
    """
    fig, axes = _figure(2, 1, width=9.0, height=2.9, sharex="col")
    cols = _history(history, "training_energies", ("step", "kinetic", "potential", "inertia"))
    if len(cols["step"]) == 0:
        return _no_rows(fig, axes, title)
    step = cols["step"]
    top, bottom = axes[0, 0], axes[1, 0]
    for q in ("potential", "inertia", "kinetic"):
        top.plot(step, cols[q], color=COLORS[q], label=q, linewidth=1.6, alpha=0.85)
    top.set_ylabel("energy")
    kin = cols["kinetic"]
    pos = np.isfinite(kin) & (kin > 0)
    if np.any(pos):
        bottom.semilogy(step[pos], kin[pos], color=COLORS["kinetic"], linewidth=1.4, label="kinetic")
    bottom.set_ylabel("kinetic (log)")
    bottom.set_xlabel("step")
    _mark_nonfinite([top, bottom], cols)
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    return _finish(fig, title)


def restarts(panels: Mapping[str, Any], *, title: str | None = None, floor: float = 1e-16) -> Figure:
    """Inertia of tracked runs relative to its start, against ``step`` (log), restarts marked.

    One line per run of ``I / I(0)``; a dot on it at each row whose ``restart`` column is
    nonzero (the kinetic energy a momentum restart of :class:`inertia.optim.EnergyRestart`
    removed before that row). Below: ``K / I(0)``, which a restart sets to zero. Values below
    ``floor`` are cut off (the runs are compared on their way down, not at rounding level).

    Args:
        panels: run name -> rows with ``step, kinetic, inertia`` and optional ``restart``.
        title: figure title.
        floor: the lower limit of both axes.
    """
    runs = _panels(panels, "restarts")
    fig, axes = _figure(2, 1, width=9.0, height=2.9, sharex="col")
    top, bottom = axes[0, 0], axes[1, 0]
    for i, (name, data) in enumerate(runs):
        cols = _history(data, "restarts", ("step", "kinetic", "inertia"))
        color = _CYCLE[i % len(_CYCLE)]
        step = cols["step"]
        scale = cols["inertia"][0] if len(step) and cols["inertia"][0] > 0 else 1.0
        inertia, kin = cols["inertia"] / scale, cols["kinetic"] / scale
        shown = np.isfinite(inertia) & (inertia > floor)
        top.semilogy(step[shown], inertia[shown], color=color, linewidth=1.4, label=name)
        pos = np.isfinite(kin) & (kin > floor)
        bottom.semilogy(step[pos], kin[pos], color=color, linewidth=1.0, alpha=0.8)
        if "restart" in cols:
            booked = np.isfinite(cols["restart"]) & (cols["restart"] != 0.0)
            at = shown & booked
            if np.any(at):
                label = f"restarts of {name} ({int(np.sum(booked))})"
                top.plot(step[at], inertia[at], "o", color="black", markersize=2.2, label=label, zorder=3)
    top.set_ylabel("I / I(0) (log)")
    bottom.set_ylabel("K / I(0) (log)")
    bottom.set_xlabel("step")
    for ax in (top, bottom):
        ax.set_ylim(bottom=floor)
        ax.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    return _finish(fig, title)


def _ledger_rows(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows that carry a ledger: a measured change, or a non-finite row (row 0 has neither)."""
    return np.isfinite(cols["delta_inertia"]) | ~cols["finite"]


def _binned(values: np.ndarray, size: int) -> np.ndarray:
    """Sums over consecutive windows of ``size`` (a NaN or inf anywhere in a window stays)."""
    n = len(values)
    pad = (-n) % size
    padded = np.concatenate([values, np.zeros(pad)]) if pad else values
    return padded.reshape(-1, size).sum(axis=1)


def training_ledger(history: Any, *, max_bars: int = 300, title: str | None = None) -> Figure:
    """The ledger of every step, its terms stacked, with the measured change drawn on top.

    Row ``k`` books ``delta_inertia = I_k - I_{k-1}``, the change made by optimizer step
    ``k - 1``, as ``friction + numerical + curvature + noise + schedule + metric + decay +
    residual``. Each row is a column (a step of the stacked areas): positive terms stacked
    upwards from 0, negative ones downwards, so the net height is their sum; the measured
    ``delta_inertia`` is the black line over them. The bottom panel divides every column by its
    ``sum |terms|``, so the make-up of the
    ledger stays readable late in training, when the changes are small. A term that is NaN in
    every row (``noise`` in cheap mode) is left out and named in the legend. With more than
    ``max_bars`` rows, consecutive rows are summed in windows (the change over a window is the
    sum of its steps' changes) and the title says how many.

    Args:
        history: rows with ``step, delta_inertia`` and the ledger terms of :data:`LEDGER_TERMS`
            (missing terms count as not measured), optional ``finite``.
        max_bars: the most bars drawn.
        title: figure title (default: says what a bar is).
    """
    if isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1:
        raise ValueError(f"`max_bars` must be an integer >= 1, got {max_bars!r}")
    fig, axes = _figure(2, 1, width=9.0, height=3.2, sharex="col")
    cols = _history(history, "training_ledger", ("step", "delta_inertia"))
    keep = _ledger_rows(cols)
    if not np.any(keep):
        return _no_rows(fig, axes, title)
    top, bottom = axes[0, 0], axes[1, 0]
    step = cols["step"][keep]
    measured = [t for t in LEDGER_TERMS if t in cols and np.any(np.isfinite(cols[t][keep]))]
    missing = [t for t in LEDGER_TERMS if t not in measured]
    size = max(1, math.ceil(len(step) / max_bars))
    x = _binned(step, size) / np.bincount(np.arange(len(step)) // size)
    finite = cols["finite"][keep]
    terms = {}
    for term in measured:
        raw = cols[term][keep]
        raw = np.where(np.isnan(raw) & finite, 0.0, raw)  # NaN in a finite row: not defined there
        v = _binned(raw, size)
        terms[term] = np.where(np.isfinite(v), v, 0.0)  # non-finite windows: no bar, a red line
    flow = np.sum([np.abs(v) for v in terms.values()], axis=0) if terms else np.zeros(len(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(flow > 0, 1.0 / flow, 0.0)
    for ax, factor in ((top, np.ones(len(x))), (bottom, scale)):
        up, down = np.zeros(len(x)), np.zeros(len(x))
        for term, v in terms.items():
            v = v * factor
            pos, neg = np.where(v > 0, v, 0.0), np.where(v < 0, v, 0.0)
            color = LEDGER_COLORS[term]
            # one polygon per term and sign, drawn as steps centred on each row (a bar chart
            # without gaps; thousands of separate bars would be slow to draw)
            ax.fill_between(x, up, up + pos, step="mid", color=color, label=term, linewidth=0)
            ax.fill_between(x, down, down + neg, step="mid", color=color, linewidth=0)
            up, down = up + pos, down + neg
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.grid(alpha=0.3)
    delta = _binned(cols["delta_inertia"][keep], size)
    marker = "." if len(x) <= 60 else None
    top.plot(x, delta, color="black", linewidth=1.2, marker=marker, label="measured delta_inertia", zorder=6)
    bottom.plot(x, delta * scale, color="black", linewidth=0.7, alpha=0.6, marker=marker, zorder=6)
    if missing:
        top.plot([], [], " ", label="not measured: " + ", ".join(missing))
    _mark_nonfinite([top, bottom], cols)
    top.set_ylabel("change of inertia")
    bottom.set_ylabel("term / sum |terms|")
    bottom.set_ylim(-1.05, 1.05)
    bottom.set_xlabel("step")
    _shared_legend(fig, axes)
    if title is None:
        what = "each step k-1 -> k" if size == 1 else f"sums over windows of {size} rows"
        title = (
            f"Ledger of the inertia I = K + V, terms stacked ({what}); "
            f"below, each term's share of the energy that flowed"
        )
    return _finish(fig, title)


def training_residual(history: Any, *, title: str | None = None) -> Figure:
    """How well the ledger closes: ``|residual|`` and its size relative to the step's terms.

    Top: ``|residual|`` (measured ``delta_inertia`` minus the sum of the terms) on a log scale.
    Bottom: ``|residual| / sum_i |term_i|`` over the measured ledger terms, the fraction of the
    step's energy flow left unexplained, with the unit roundoff of float32 and float64 dotted
    for scale. Exact zeros are drawn at 1e-17; non-finite rows are marked by dotted red lines.

    Args:
        history: rows with ``step, residual`` and the ledger terms, optional ``finite``.
        title: figure title.
    """
    fig, axes = _figure(2, 1, width=9.0, height=2.9, sharex="col")
    cols = _history(history, "training_residual", ("step", "residual"))
    keep = np.isfinite(cols["residual"])
    if not np.any(keep) and np.all(cols["finite"]):
        return _no_rows(fig, axes, title)
    step = cols["step"]
    flow = np.zeros(len(step))
    for term in LEDGER_TERMS:
        if term in cols:
            flow += np.nan_to_num(np.abs(cols[term]), nan=0.0, posinf=np.inf)
    resid = np.abs(cols["residual"])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(flow > 0, resid / flow, np.nan)
    top, bottom = axes[0, 0], axes[1, 0]
    top.semilogy(
        step[keep],
        np.maximum(resid[keep], 1e-17),
        color=COLORS["ledger"],
        linewidth=1.2,
        marker="." if keep.sum() <= 60 else None,
        label="|residual|",
    )
    ok = keep & np.isfinite(rel)
    bottom.semilogy(
        step[ok],
        np.maximum(rel[ok], 1e-17),
        color="tab:green",
        linewidth=1.2,
        marker="." if ok.sum() <= 60 else None,
        label="|residual| / sum |terms|",
    )
    for eps, name, style in (
        (float(np.finfo(np.float32).eps) / 2, "float32", ":"),
        (float(np.finfo(np.float64).eps) / 2, "float64", "-."),
    ):
        bottom.axhline(
            eps, color="0.4", linestyle=style, linewidth=1.0, label=f"{name} unit roundoff {eps:.1e}"
        )
    top.set_ylabel("|residual|")
    bottom.set_ylabel("relative")
    bottom.set_xlabel("step")
    _mark_nonfinite([top, bottom], cols)
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    return _finish(fig, title)


def png_bytes(fig: Figure, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save(fig: Figure, path: str | Path, *, dpi: int = 110, overwrite: bool = False) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (no overwrite unless asked)."""
    from inertia.runs import atomic_write_bytes

    return atomic_write_bytes(Path(path), png_bytes(fig, dpi=dpi), overwrite=overwrite)
