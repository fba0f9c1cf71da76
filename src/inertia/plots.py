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
* :func:`sharpness` -- ``step, sharpness, update_curvature, threshold, potential, curvature,
  curvature_quadratic`` per run (``InertiaTracker(..., sharpness_every=n)``).
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
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from inertia.ledger import TERMS
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
    "lr": "tab:olive",
    "gamma": "tab:purple",
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

#: The ledger terms of a tracked step, in the order they are stacked (:data:`inertia.ledger.TERMS`).
LEDGER_TERMS = TERMS
#: Ledger terms that only some runs have (``restart``: with :class:`inertia.optim.EnergyRestart`;
#: ``clipping``: when ``.grad`` is changed between backward and step; absent from older runs).
_OPTIONAL_TERMS = ("restart", "clipping")
#: One colour per ledger term.
LEDGER_COLORS = {
    "friction": "tab:purple",
    "numerical": "tab:red",
    "curvature": "tab:orange",
    "clipping": "tab:green",
    "noise": "tab:cyan",
    "schedule": "tab:olive",
    "metric": "tab:pink",
    "decay": "tab:brown",
    "restart": "tab:gray",
}
_NONFINITE = {"color": "crimson", "marker": "v", "markersize": 6, "linestyle": "none", "zorder": 7}
_EPOCH = {"color": "0.55", "linestyle": "--", "linewidth": 0.6, "alpha": 0.7, "zorder": 0}

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
    """A red triangle at the top edge of each panel at every non-finite row (the first one
    labelled with its step); the row's values are not drawn as numbers, and never as 0."""
    bad = cols["step"][~cols["finite"]]
    if not len(bad):
        return
    for ax in axes:
        ax.plot(
            bad,
            np.ones(len(bad)),
            transform=ax.get_xaxis_transform(),
            label=f"non-finite row (first at step {int(bad[0])})",
            clip_on=False,
            **_NONFINITE,
        )


def _no_rows(fig: Figure, axes: np.ndarray, title: str | None) -> Figure:
    for ax in np.ravel(axes):
        ax.text(0.5, 0.5, "no rows recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    return _finish(fig, title)


def _mark_epochs(axes: Sequence[Any], step: np.ndarray, steps_per_epoch: int | None) -> None:
    """Thin grey lines at the epoch boundaries ``e * steps_per_epoch`` inside the steps drawn;
    with more than about 40 epochs, every ``n``-th boundary (the legend says which)."""
    if steps_per_epoch is None or not len(step):
        return
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be None or an integer >= 1, got {steps_per_epoch!r}")
    lo, hi = float(np.nanmin(step)), float(np.nanmax(step))
    n_epochs = int(hi // steps_per_epoch)
    if n_epochs < 1:
        return
    stride = max(1, math.ceil(n_epochs / 40))
    marks = [e * steps_per_epoch for e in range(stride, n_epochs + 1, stride) if e * steps_per_epoch >= lo]
    what = "epoch boundaries" if stride == 1 else f"epoch boundaries (every {stride} epochs)"
    for ax in axes:
        for i, m in enumerate(marks):
            ax.axvline(m, label=what if i == 0 else None, **_EPOCH)


def _window(n: int, max_points: int) -> int:
    """Rows per window so that at most ``max_points`` windows are drawn."""
    return max(1, math.ceil(n / max_points))


def _reduce(values: np.ndarray, size: int, how: str) -> np.ndarray:
    """``sum``, ``mean``, ``max`` or ``min`` over consecutive windows of ``size`` values,
    ignoring NaN (a window with no value is NaN); ``size = 1`` returns ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if size == 1:
        return values
    pad = (-len(values)) % size
    w = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, size)
    empty = np.all(np.isnan(w), axis=1)
    with np.errstate(all="ignore"):
        filled = np.where(empty[:, None], 0.0, w)
        out = {
            "sum": lambda: np.nansum(filled, axis=1),
            "mean": lambda: np.nanmean(filled, axis=1),
            "max": lambda: np.nanmax(filled, axis=1),
            "min": lambda: np.nanmin(filled, axis=1),
        }[how]()
    return np.where(empty, np.nan, out)


def _scale(ax: Any, *arrays: np.ndarray, decades: float = 3.0) -> str:
    """Choose the y scale from the values drawn: ``log`` when they are all positive and span
    more than ``decades`` decades, ``symlog`` when they change sign and more than 5 % of them
    lie ``decades`` decades below the largest magnitude, else linear. Returns the scale."""
    v = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    v = v[np.isfinite(v)]
    a = np.abs(v)
    if not len(v) or a.max() == 0:
        return "linear"
    big = float(a.max())
    nonzero = a[a > 0]
    if np.all(v >= 0):  # exact zeros (a loss that underflowed) are left off a log scale
        if big / float(nonzero.min()) >= 10**decades:
            ax.set_yscale("log")
            return "log"
        return "linear"
    if np.mean(nonzero < big * 10.0**-decades) > 0.05:
        linthresh = max(float(np.percentile(nonzero, 10)), big * 1e-12)
        first, last = math.ceil(math.log10(linthresh)), math.floor(math.log10(big))
        stride = max(1, math.ceil((last - first) / 4))  # at most 5 labelled decades a side
        ax.set_yscale("symlog", linthresh=linthresh, linscale=1.0, base=10.0**stride)
        powers = [10.0**e for e in range(last, first - 1, -stride)]
        ax.yaxis.set_major_locator(FixedLocator([-p for p in powers] + [0.0] + powers[::-1]))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(_power_label))
        return "symlog"
    return "linear"


def _power_label(value: float, _pos: int | None = None) -> str:
    """``0`` or a signed power of ten in mathtext (the symlog axis's tick labels)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    return f"${sign}10^{{{round(math.log10(abs(value)))}}}$"


def _drawn(cols: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Column ``name`` with the values of non-finite rows hidden (NaN: not drawn as numbers)."""
    return np.where(cols["finite"], cols[name], np.nan)


def _line(ax: Any, step: np.ndarray, values: np.ndarray, size: int, **style: Any) -> None:
    """``values`` against ``step``; with windows (``size > 1``) the raw rows faint and the window
    means solid, so that the trend of a long run stays readable."""
    if size == 1:
        ax.plot(step, values, linewidth=1.6, alpha=0.85, marker="." if len(step) <= 60 else None, **style)
        return
    raw = {k: v for k, v in style.items() if k != "label"}
    ax.plot(step, values, linewidth=0.5, alpha=0.18, **raw)
    ax.plot(_reduce(step, size, "mean"), _reduce(values, size, "mean"), linewidth=1.6, alpha=0.95, **style)


def _training_axes(n_rows: int, height: float) -> tuple[Figure, np.ndarray]:
    return _figure(n_rows, 1, width=9.0, height=height, sharex="col")


def _rows_title(size: int) -> str:
    return "" if size == 1 else f"; lines are means over windows of {size} rows, faint lines the rows"


def training_energies(
    history: Any,
    *,
    steps_per_epoch: int | None = None,
    max_points: int = 400,
    title: str | None = None,
) -> Figure:
    """Kinetic, potential and inertia of a tracked training run against ``step``, and its
    learning rate and friction.

    Top: ``potential`` (the loss at ``theta_k`` plus any weight-decay potential), ``kinetic``
    (of the velocity that reached ``theta_k``) and their sum ``inertia``, on a log scale when
    potential and inertia are positive and span more than three decades (a diverging run).
    Middle: ``kinetic``
    on a log scale. Bottom: ``lr`` (left axis) and the friction ``gamma = -ln(mu)/dt`` (right
    axis), each on a log scale when it spans more than two decades. With more than
    ``max_points`` rows the rows are drawn faint and their means over consecutive windows solid.
    Non-finite rows are red triangles at the top edge (their values are not drawn, and never
    as 0); epoch boundaries, when ``steps_per_epoch`` is given, thin grey lines.

    Args:
        history: rows with ``step, kinetic, potential, inertia`` (optional ``lr``, ``gamma``,
            ``finite``).
        steps_per_epoch: optimizer steps per epoch, to mark the epochs (``None``: no marks).
        max_points: the most windows drawn per line.
        title: figure title.
    """
    _check_max("max_points", max_points)
    fig, axes = _training_axes(3, 2.6)
    cols = _history(history, "training_energies", ("step", "kinetic", "potential", "inertia"))
    if len(cols["step"]) == 0:
        return _no_rows(fig, axes, title)
    step = cols["step"]
    size = _window(len(step), max_points)
    top, middle, bottom = axes[0, 0], axes[1, 0], axes[2, 0]
    drawn = {q: _drawn(cols, q) for q in ("potential", "inertia", "kinetic")}
    for q in ("inertia", "potential", "kinetic"):  # the potential on top: often I ~ V
        _line(top, step, drawn[q], size, color=COLORS[q], label=q)
    scale = _scale(top, drawn["potential"], drawn["inertia"])  # kinetic has its own log panel
    top.set_ylabel("energy" + (f" ({scale})" if scale != "linear" else ""))
    kin = drawn["kinetic"]
    positive = np.where(kin > 0, kin, np.nan)
    if np.any(np.isfinite(positive)):
        _line(middle, step, positive, size, color=COLORS["kinetic"], label="kinetic")
        middle.set_yscale("log")
    middle.set_ylabel("kinetic (log)")
    _lr_gamma(bottom, cols, step, size)
    bottom.set_xlabel("step")
    _mark_epochs([top, middle, bottom], step, steps_per_epoch)
    _mark_nonfinite([top, middle, bottom], cols)
    for ax in (top, middle, bottom):
        ax.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    if title is not None:
        title += _rows_title(size)
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


def _lr_gamma(ax: Any, cols: Mapping[str, np.ndarray], step: np.ndarray, size: int) -> None:
    """``lr`` on ``ax`` and ``gamma`` on a twin axis at the right (log scales over two decades)."""
    drew = False
    for name, axis, color in (("lr", ax, COLORS["lr"]), ("gamma", None, COLORS["gamma"])):
        if name not in cols:
            continue
        values = np.where(np.isfinite(cols[name]), cols[name], np.nan)
        if not np.any(np.isfinite(values)):
            continue
        if axis is None:
            axis = ax.twinx()
        # the schedule is a step function of the row: drawn as it is, window means would smear it
        style = "-" if axis is ax else "--"
        axis.plot(step, values, color=color, linewidth=1.4, linestyle=style, label=name)
        axis.set_ylabel(name, color=color)
        _scale(axis, values, decades=2.0)
        if axis is not ax:  # the twin's line in the figure legend
            ax.plot([], [], color=color, linewidth=1.4, linestyle=style, label=name)
        drew = True
    if not drew:
        ax.text(0.5, 0.5, "lr and gamma not recorded", ha="center", va="center", transform=ax.transAxes)


def _check_max(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")


def _ledger_rows(cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows that carry a ledger: a measured change, or a non-finite row (row 0 has neither)."""
    return np.isfinite(cols["delta_inertia"]) | ~cols["finite"]


def training_ledger(
    history: Any,
    *,
    max_bars: int = 150,
    steps_per_epoch: int | None = None,
    title: str | None = None,
) -> Figure:
    """The ledger of a tracked run: cumulative, per window of rows, and each term's share.

    Row ``k`` books ``delta_inertia = I_k - I_{k-1}``, the change made by optimizer step
    ``k - 1``, as the sum of the terms of :data:`LEDGER_TERMS` (``friction + numerical +
    curvature + clipping + noise + schedule + metric + decay + restart``) and ``residual``.
    Three panels, readable from ten rows to a hundred thousand:

    * cumulative: each term summed over the rows up to ``k`` (one line per term), and the
      measured change ``I_k - I_first`` of the inertia column (black): the terms add up to it
      when every step is recorded, and the title says when the rows only sample the run;
    * per window: the rows are summed in at most ``max_bars`` consecutive windows; each window
      is a bar from its first step to its last (a single row of a run recorded every ``n``-th
      step is a bar one step wide: it books that step only), positive terms stacked upwards from 0, negative
      ones downwards, so the net height is their sum; the black line is the measured
      ``delta_inertia`` summed over the same rows;
    * share: ``sum |term| / sum over terms of sum |term|`` per window (stacked to 1): which
      terms carry the energy that flowed.

    The y scale turns symmetric-logarithmic when the values span more than three decades (a
    diverging run, or the early steps of a long one). Non-finite rows are left out of the sums
    and drawn as red triangles at the top edge; a term that is NaN in every row (``noise`` in
    cheap mode) is left out and named in the legend. Epoch boundaries, when
    ``steps_per_epoch`` is given, are thin grey lines.

    Args:
        history: rows with ``step, delta_inertia`` and the ledger terms of :data:`LEDGER_TERMS`
            (missing terms count as not measured), optional ``inertia`` and ``finite``.
        max_bars: the most windows drawn.
        steps_per_epoch: optimizer steps per epoch, to mark the epochs.
        title: figure title (default: says what a window is).
    """
    _check_max("max_bars", max_bars)
    fig, axes = _training_axes(3, 2.7)
    cols = _history(history, "training_ledger", ("step", "delta_inertia"))
    keep = _ledger_rows(cols)
    if not np.any(keep):
        return _no_rows(fig, axes, title)
    cum_ax, bar_ax, share_ax = axes[0, 0], axes[1, 0], axes[2, 0]
    step = cols["step"][keep]
    finite = cols["finite"][keep]
    measured = [t for t in LEDGER_TERMS if t in cols and np.any(np.isfinite(cols[t][keep]) & finite)]
    # the restart term exists only for runs that restart (issue 14): absent, it is not missing
    missing = [t for t in LEDGER_TERMS if t not in measured and (t in cols or t not in _OPTIONAL_TERMS)]
    # a finite row's NaN term is "not defined there" (0 in a sum); a non-finite row books nothing
    terms = {t: np.where(finite, np.nan_to_num(cols[t][keep], nan=0.0), np.nan) for t in measured}
    delta = np.where(finite, cols["delta_inertia"][keep], np.nan)

    # cumulative (terms that are exactly zero in every row are named, not drawn)
    zero = [t for t, v in terms.items() if not np.any(np.nan_to_num(v, nan=0.0))]
    cum = {t: np.cumsum(np.nan_to_num(v, nan=0.0)) for t, v in terms.items() if t not in zero}
    zero = [t for t in zero if t not in _OPTIONAL_TERMS]  # no restarts: nothing to say
    for t, c in cum.items():
        cum_ax.plot(step, c, color=LEDGER_COLORS[t], linewidth=1.5, label=t)
    drawn = list(cum.values())
    if "inertia" in cols:
        inertia = _drawn(cols, "inertia")
        first = np.flatnonzero(np.isfinite(inertia))
        if len(first):
            change = inertia - inertia[first[0]]
            size = _window(len(change), 400)
            _line(cum_ax, cols["step"], change, size, color="black", label="measured I_k - I_first")
            drawn.append(change)
    _scale(cum_ax, *drawn)
    cum_ax.set_ylabel("cumulative")

    # windows; rows that sample the run (every > 1) book one step each: a bar is one step wide
    size = _window(len(step), max_bars)
    right = _reduce(step, size, "max")
    sampled = len(step) > 1 and float(np.max(np.diff(step))) > 1
    left = right - 1.0 if sampled and size == 1 else np.concatenate([[step[0] - 1.0], right[:-1]])
    sums = {t: _reduce(v, size, "sum") for t, v in terms.items()}
    up, down = np.zeros(len(right)), np.zeros(len(right))
    for t, v in sums.items():
        v = np.nan_to_num(v, nan=0.0)
        pos, neg = np.where(v > 0, v, 0.0), np.where(v < 0, v, 0.0)
        for base, h in ((up, pos), (down, neg)):
            bar_ax.bar(
                left, h, width=right - left, bottom=base, align="edge", color=LEDGER_COLORS[t], linewidth=0
            )
        up, down = up + pos, down + neg
    window_delta = _reduce(delta, size, "sum")
    mid = (left + right) / 2
    marker = "." if len(mid) <= 60 else None
    bar_ax.plot(
        mid,
        window_delta,
        color="black",
        linewidth=1.0,
        marker=marker,
        label="measured delta_inertia",
        zorder=6,
    )
    _scale(bar_ax, up, down, window_delta)
    bar_ax.axhline(0.0, color="0.3", linewidth=0.8)
    bar_ax.set_ylabel("per step" if size == 1 else f"per {size} rows")

    # share of the flow
    flows = {t: _reduce(np.abs(v), size, "sum") for t, v in terms.items()}
    total = np.nansum(np.array(list(flows.values())), axis=0) if flows else np.zeros(len(mid))
    base = np.zeros(len(mid))
    with np.errstate(divide="ignore", invalid="ignore"):
        for t, f in flows.items():
            share = np.where(total > 0, np.nan_to_num(f, nan=0.0) / total, 0.0)
            share_ax.bar(
                left,
                share,
                width=right - left,
                bottom=base,
                align="edge",
                color=LEDGER_COLORS[t],
                linewidth=0,
            )
            base = base + share
    share_ax.set_ylim(0.0, 1.0)
    share_ax.set_ylabel("share of sum |terms|")
    share_ax.set_xlabel("step")

    if missing:
        cum_ax.plot([], [], " ", label="not measured: " + ", ".join(missing))
    if zero:
        cum_ax.plot([], [], " ", label="0 in every row: " + ", ".join(zero))
    all_axes = [cum_ax, bar_ax, share_ax]
    _mark_epochs(all_axes, cols["step"], steps_per_epoch)
    _mark_nonfinite(all_axes, cols)
    for ax in all_axes:
        ax.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    if title is None:
        what = "each step k-1 -> k" if size == 1 else f"sums over windows of {size} rows"
        title = f"Ledger of the inertia I = K + V: cumulative; terms stacked ({what}); each term's share"
        if sampled:
            span = int(np.nanmax(cols["step"]) - np.nanmin(cols["step"]))
            title += (
                f"; the rows book {len(step)} of the run's {span} steps, so the sums of the terms "
                "cover those steps only (black: the measured change)"
            )
    return _finish(fig, title)


def training_residual(history: Any, *, max_points: int = 400, title: str | None = None) -> Figure:
    """How well the ledger closes: ``|residual|`` and its size relative to the step's terms.

    Top: ``|residual|`` (measured ``delta_inertia`` minus the sum of the terms) on a log scale.
    Bottom: ``|residual| / sum_i |term_i|`` over the measured ledger terms, the fraction of the
    step's energy flow left unexplained, with the unit roundoff of float32 and float64 dotted
    for scale. Exact zeros are drawn at 1e-17; with more than ``max_points`` rows, the largest
    value of each window of rows is drawn (the worst row counts); non-finite rows are red
    triangles at the top edge.

    Args:
        history: rows with ``step, residual`` and the ledger terms, optional ``finite``.
        max_points: the most windows drawn.
        title: figure title.
    """
    _check_max("max_points", max_points)
    fig, axes = _training_axes(2, 2.9)
    cols = _history(history, "training_residual", ("step", "residual"))
    keep = np.isfinite(cols["residual"]) & cols["finite"]
    if not np.any(keep) and np.all(cols["finite"]):
        return _no_rows(fig, axes, title)
    step = cols["step"]
    flow = np.zeros(len(step))
    for term in LEDGER_TERMS:
        if term in cols:
            flow += np.nan_to_num(np.abs(cols[term]), nan=0.0, posinf=np.inf)
    resid = np.where(keep, np.abs(cols["residual"]), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(flow > 0, resid / flow, np.nan)
    size = _window(int(keep.sum()), max_points)
    x = _reduce(step[keep], size, "max")
    what = "" if size == 1 else f", max per {size} rows"
    top, bottom = axes[0, 0], axes[1, 0]
    marker = "." if len(x) <= 60 else None
    for ax, values, color, label in (
        (top, resid, COLORS["ledger"], "|residual|"),
        (bottom, rel, "tab:green", "|residual| / sum |terms|"),
    ):
        y = _reduce(values[keep], size, "max")
        ax.semilogy(x, np.maximum(y, 1e-17), color=color, linewidth=1.2, marker=marker, label=label)
    for eps, name, style in (
        (float(np.finfo(np.float32).eps) / 2, "float32", ":"),
        (float(np.finfo(np.float64).eps) / 2, "float64", "-."),
    ):
        bottom.axhline(
            eps, color="0.4", linestyle=style, linewidth=1.0, label=f"{name} unit roundoff {eps:.1e}"
        )
    top.set_ylabel("|residual|" + what)
    bottom.set_ylabel("relative" + what)
    bottom.set_xlabel("step")
    _mark_nonfinite([top, bottom], cols)
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
    _shared_legend(fig, axes)
    return _finish(fig, title)


def sharpness(panels: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """Sharpness against the stability threshold, one column per tracked run (issue 12).

    Top (log): ``sharpness`` (dots, the rows where it was measured), ``update_curvature`` (line;
    non-positive values are not drawn) and ``threshold`` (dashed). Bottom (log): the loss
    ``potential``, the ledger's curvature work ``|curvature|`` and ``|curvature_quadratic|``
    (``1/2 dtheta^T H dtheta``, dots). Columns from ``InertiaTracker(..., sharpness_every=n)``
    (:data:`inertia.track.SHARPNESS_COLUMNS`).

    Args:
        panels: run name -> rows with ``step, sharpness, update_curvature, threshold, potential,
            curvature, curvature_quadratic``.
        title: figure title.
    """
    runs = _panels(panels, "sharpness")
    fig, axes = _figure(2, len(runs), width=4.4, height=3.0, sharex="col", min_width=9.0)
    needed = (
        "step",
        "sharpness",
        "update_curvature",
        "threshold",
        "potential",
        "curvature",
        "curvature_quadratic",
    )
    for j, (name, data) in enumerate(runs):
        cols = _history(data, "sharpness", needed)
        top, bottom = axes[0, j], axes[1, j]
        step = cols["step"]
        uc = cols["update_curvature"]
        ok = np.isfinite(uc) & (uc > 0)
        top.semilogy(
            step[ok],
            uc[ok],
            color="tab:orange",
            linewidth=0.8,
            alpha=0.8,
            label="update curvature 2B/|dtheta|_P^2",
        )
        at = np.isfinite(cols["sharpness"])
        top.semilogy(
            step[at],
            cols["sharpness"][at],
            "o-",
            color="tab:blue",
            markersize=2.5,
            linewidth=1.0,
            label="sharpness (Lanczos)",
        )
        top.plot(step, cols["threshold"], **{**_THEORY, "label": "stability threshold"})
        top.set_title(name, fontsize=10)
        loss = cols["potential"]
        bottom.semilogy(
            step, np.where(loss > 0, loss, np.nan), color="tab:green", linewidth=1.2, label="loss V"
        )
        b = np.abs(cols["curvature"])
        bottom.semilogy(
            step,
            np.where(b > 0, b, np.nan),
            color="tab:orange",
            linewidth=0.8,
            alpha=0.8,
            label="|curvature work B|",
        )
        q = np.abs(cols["curvature_quadratic"])
        atq = np.isfinite(q) & (q > 0)
        bottom.semilogy(
            step[atq], q[atq], "o", color="black", markersize=2.2, label="|1/2 dtheta^T H dtheta|"
        )
        bottom.set_xlabel("step")
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("curvature")
    axes[1, 0].set_ylabel("loss, curvature work")
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
