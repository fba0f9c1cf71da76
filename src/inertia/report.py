"""A self-contained HTML report of a run directory.

:func:`write_report` writes ``<run>/report.html``: one section per :class:`Section`, each with the
law it shows (the formula), a short explanatory paragraph, its figures embedded as base64 PNG
data URIs and its tables rendered as HTML, followed by a summary of the manifest (configuration,
seed, versions, command line, start and end time). The file needs nothing else: open it in a
browser, mail it, archive it.

The report is a pure function of the run directory's files (PNG figures, CSV tables,
``manifest.json``), so it can be rendered again at any time without re-running anything.

:func:`render_track` does this for a tracked training run (manifest kind ``"track"``, written by
:class:`inertia.track.RunLog`): from its rows alone (:func:`inertia.runs.read_history`) it draws
``energies.png``, ``ledger.png`` and ``residual.png``, derives ``summary.csv`` and
``ledger_totals.csv`` and writes the report, naming the first non-finite step if there is one.

Example:
    >>> import tempfile, pandas as pd
    >>> from inertia.runs import create_run
    >>> run = create_run("example", root=tempfile.mkdtemp())
    >>> _ = run.write_table("numbers", pd.DataFrame({"quantity": ["I(0)"], "value": [1.5]}))
    >>> s = Section("numbers", "Numbers", law="I = K + V", text="A table.", tables=("numbers",))
    >>> write_report(run, "Example", [s]).name
    'report.html'
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inertia._files import read_bytes_nofollow
from inertia._process import run_status
from inertia.ledger import TERMS
from inertia.runs import (
    RunDir,
    atomic_write_bytes,
    check_name,
    read_history,
    read_manifest,
    read_table,
)

__all__ = [
    "REPORT",
    "TRACK_FIGURES",
    "Section",
    "ledger_totals",
    "render_track",
    "track_summary",
    "write_report",
]

#: File name of the report inside a run directory.
REPORT = "report.html"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1180px; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #4a7; padding-bottom: .2em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
.law { background: #f4f8f4; border-left: 4px solid #4a7; padding: .5em 1em; font-family: monospace;
       white-space: pre-wrap; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
.meta td { text-align: left; } .muted { color: #777; font-size: .85em; }
details pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .8em; }
nav ol { columns: 2; }
"""


@dataclass(frozen=True)
class Section:
    """One section of a report.

    Attributes:
        key: a plain name, used as the HTML anchor.
        title: the heading.
        law: the law or formula the section shows (rendered verbatim, monospace).
        text: a short explanatory paragraph (plain text; blank lines separate paragraphs).
        figures: names of PNG figures in the run directory (without ``.png``).
        tables: names of CSV tables in the run directory (without ``.csv``), shown in full up to
            ``max_rows`` rows.
    """

    key: str
    title: str
    law: str
    text: str
    figures: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (for storing the report layout in a manifest)."""
        return {
            "key": self.key,
            "title": self.title,
            "law": self.law,
            "text": self.text,
            "figures": list(self.figures),
            "tables": list(self.tables),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Section:
        """Inverse of :meth:`to_dict`."""
        return cls(
            str(data["key"]),
            str(data["title"]),
            str(data["law"]),
            str(data["text"]),
            tuple(data.get("figures", ())),
            tuple(data.get("tables", ())),
        )


def _paragraphs(text: str) -> str:
    parts = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return "\n".join(f"<p>{html.escape(' '.join(p.split()))}</p>" for p in parts)


def _embeddable(path: Path) -> str | None:
    """Why ``path`` is not embedded (missing, a symbolic link, not a regular file), or None.

    A report embeds only regular files that sit in the run directory itself: a link planted
    there (to a file elsewhere) is never followed."""
    if path.is_symlink():
        return "is a symbolic link (not followed)"
    if not path.exists():
        return "is missing"
    if not path.is_file():
        return "is not a regular file"
    return None


def _figure_html(path: Path) -> str:
    why = _embeddable(path)
    if why:
        return f'<p class="muted">figure {html.escape(path.name)} {why}</p>'
    data = base64.b64encode(read_bytes_nofollow(path, "figure")).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


def _table_html(run: Path, name: str, max_rows: int, na_rep: str = "") -> str:
    why = _embeddable(run / f"{check_name('table', name)}.csv")
    if why:
        return f'<p class="muted">table {html.escape(name)}.csv {why}</p>'
    df = read_table(run, name)
    note = ""
    if len(df) > max_rows:
        note = (
            f'<p class="muted">first {max_rows} of {len(df)} rows; the full table is '
            f"{html.escape(name)}.csv</p>"
        )
        df = df.head(max_rows)
    body = df.to_html(index=False, border=0, float_format=lambda x: f"{x:.6g}", na_rep=na_rep)
    return f'<p class="muted">{html.escape(name)}.csv</p>{body}{note}'


def _manifest_html(manifest: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for key in ("kind", "started", "finished", "seed"):
        if key in manifest:
            rows.append((key, str(manifest[key])))
    if "command" in manifest:
        rows.append(("command", " ".join(map(str, manifest["command"]))))
    for name, version in (manifest.get("versions") or {}).items():
        rows.append((f"version: {name}", str(version)))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    config = json.dumps(manifest.get("config", {}), indent=2, sort_keys=True)
    return (
        f'<table class="meta">{table}</table>'
        f"<details><summary>configuration (manifest.json)</summary>"
        f"<pre>{html.escape(config)}</pre></details>"
    )


def write_report(
    run_dir: RunDir | str | Path,
    title: str,
    sections: Sequence[Section],
    *,
    intro: str = "",
    max_rows: int = 40,
    na_rep: str = "",
) -> Path:
    """Render ``report.html`` in ``run_dir`` from its figures, tables and manifest.

    Args:
        run_dir: the run directory (a :class:`~inertia.runs.RunDir` or its path).
        title: the page title.
        sections: the sections, in order.
        intro: an opening paragraph.
        max_rows: the most rows shown per table.
        na_rep: how a missing (NaN) table cell is shown (default: empty).

    Returns:
        The path of ``report.html`` (replaced if it existed: the report is derived data).
    """
    run = run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir)
    for s in sections:
        check_name("section key", s.key)
    try:
        manifest = read_manifest(run)
    except FileNotFoundError:
        manifest = {}
    nav = "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _paragraphs(intro),
        f'<nav><ol>{nav}<li><a href="#run">Run</a></li></ol></nav>',
    ]
    for s in sections:
        parts.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        parts.append(f'<div class="law">{html.escape(s.law)}</div>')
        parts.append(_paragraphs(s.text))
        parts.extend(_figure_html(run / f"{check_name('figure', f)}.png") for f in s.figures)
        parts.extend(_table_html(run, t, max_rows, na_rep) for t in s.tables)
        parts.append("</section>")
    files = sorted(
        p.name
        for p in run.iterdir()
        if p.suffix in (".csv", ".png", ".json", ".parquet") and _embeddable(p) is None
    )
    parts.append('<section id="run"><h2>Run</h2>')
    parts.append(f"<p>Run directory: <code>{html.escape(str(run.resolve()))}</code></p>")
    parts.append(_manifest_html(manifest))
    parts.append(
        "<p>Files: " + ", ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in files) + "</p>"
    )
    parts.append("</section></body></html>")
    return atomic_write_bytes(run / REPORT, "\n".join(parts).encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# tracked training runs (manifest kind "track")

#: The figures of a tracked run's report (``<name>.png``).
TRACK_FIGURES = ("energies", "ledger", "residual")
_LEDGER = TERMS  # the ledger's terms, in their one order (inertia.ledger)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"  # nan, inf and -inf spelled out
    return str(x)


def _first_nonfinite(history: Any) -> int | None:
    if "finite" not in history or len(history) == 0:
        return None
    bad = history.index[~history["finite"].astype(bool)]
    return int(history.loc[bad[0], "step"]) if len(bad) else None


def track_summary(history: Any, manifest: dict[str, Any] | None = None) -> Any:
    """A two-column table (``quantity``, ``value``, as text) summarising a tracked run.

    Status (``interrupted`` for a run whose writer died while ``running``:
    :func:`inertia.track.run_status`), rows and steps, the first non-finite step (or ``none``),
    inertia at the first and last row, the sum of the measured changes beside the measured
    ``I_last - I_first`` and how many of the run's steps the sums cover, the largest
    ``|residual|`` and the median relative residual ``|residual| / sum |terms|`` over finite
    rows, and the scalar entries of the manifest's ``results`` (e.g. the test accuracy of
    ``inertia track``).
    """
    import numpy as np
    import pandas as pd

    manifest = manifest or {}
    rows: list[tuple[str, str]] = [("status", run_status(manifest))]
    if manifest.get("error"):
        rows.append(("error", str(manifest["error"])))
    n = len(history)
    tracked = manifest.get("tracked") or {}
    for key, label in (("optimizer", "optimizer"), ("dtypes", "parameter dtype"), ("every", "every")):
        if key in tracked:
            value = tracked[key]
            rows.append((label, ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    rows.append(("rows", str(n)))
    bad = _first_nonfinite(history)
    rows.append(("first non-finite step", "none" if bad is None else str(bad)))
    if manifest.get("diverging_step") is not None:
        rows.append(("diverging from step", str(manifest["diverging_step"])))
    if n:
        step = history["step"]
        rows.append(("steps", f"{int(step.iloc[0])} .. {int(step.iloc[-1])}"))
        for col in ("inertia", "potential", "kinetic"):
            if col in history:
                rows.append((f"{col}: first row", _fmt(float(history[col].iloc[0]))))
                rows.append((f"{col}: last row", _fmt(float(history[col].iloc[-1]))))
        ok = history[history["finite"].astype(bool)] if "finite" in history else history
        if "delta_inertia" in ok:
            summed = int(ok["delta_inertia"].notna().sum())
            _, steps = _span(history)
            rows.append(("sum of delta_inertia (finite rows)", _fmt(float(np.nansum(ok["delta_inertia"])))))
            rows.append(("measured change I_last - I_first", _fmt(_inertia_change(history))))
            note = "" if summed == steps else ": the sums are over these steps only, a sample of the run"
            rows.append(("steps summed", f"{summed} of {steps}{note}"))
        if "residual" in ok and ok["residual"].notna().any():
            resid = ok["residual"].abs()
            flow = sum(ok[t].abs().fillna(0.0) for t in _LEDGER if t in ok)
            rel = (resid / flow.where(flow > 0)).dropna()
            rows.append(("max |residual| (finite rows)", _fmt(float(resid.max()))))
            if len(rel):
                rows.append(("median |residual| / sum |terms|", _fmt(float(rel.median()))))
    for key, value in (manifest.get("results") or {}).items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            rows.append((str(key), _fmt(value)))
    return pd.DataFrame(rows, columns=["quantity", "value"])


def _span(history: Any) -> tuple[int, int]:
    """``(ledger rows, optimizer steps from the first row to the last)``: each ledger row books
    one step, so fewer rows than steps means the rows sample the run (``every > 1``)."""
    if len(history) == 0 or "step" not in history:
        return 0, 0
    rows = int(history["delta_inertia"].notna().sum()) if "delta_inertia" in history else 0
    return rows, int(history["step"].iloc[-1]) - int(history["step"].iloc[0])


def _inertia_change(history: Any) -> float:
    """``I_last - I_first`` over the rows whose inertia is finite (NaN without two such rows)."""
    import numpy as np

    if "inertia" not in history:
        return math.nan
    values = history["inertia"].to_numpy(dtype=float)
    ok = np.flatnonzero(np.isfinite(values))
    return float(values[ok[-1]] - values[ok[0]]) if len(ok) >= 2 else math.nan


def ledger_totals(history: Any) -> Any:
    """Per ledger term: its ``total`` over the finite rows, ``mean`` per row and ``share``.

    ``share`` is the term's ``sum |term|`` over the total ``sum |term|`` of all terms: how much
    of the energy that flowed went through it. A term that is NaN in every row (``noise`` in
    cheap mode) is reported as NaN with ``measured = False``; the residual and ``delta_inertia``
    follow, and its share is relative to the same total. Non-finite rows are left out. The last
    row, ``inertia_change``, is the measured ``I_last - I_first`` of the run.

    Each row of the history books one optimizer step, so the totals are sums over the
    ``steps_summed`` recorded steps (the finite ledger rows), out of the ``steps`` the run spans
    from its first row to its last. ``sampled`` is True when they differ (``every > 1``, or
    non-finite rows left out): the totals are then a sample of the run, not its sum, and only
    ``inertia_change`` covers the whole run.
    """
    import numpy as np
    import pandas as pd

    ok = history[history["finite"].astype(bool)] if "finite" in history else history
    ok = ok[ok["delta_inertia"].notna()] if "delta_inertia" in ok else ok.iloc[:0]
    flow = sum(float(ok[t].abs().sum()) for t in _LEDGER if t in ok)
    out = []
    for term in (*_LEDGER, "residual", "delta_inertia"):
        col = ok[term] if term in ok else pd.Series(dtype=float)
        if col.notna().any():
            total, mean = float(col.sum()), float(col.mean())
            share = float(col.abs().sum()) / flow if flow > 0 and term != "delta_inertia" else math.nan
        else:
            total = mean = share = math.nan
        out.append((term, total, mean, share))
    _, steps = _span(history)
    change = _inertia_change(history)
    out.append(("inertia_change", change, change / steps if steps else math.nan, math.nan))
    df = pd.DataFrame(out, columns=["term", "total", "mean", "share"])
    df["measured"] = df["total"].notna()
    df["rows"] = np.int64(len(ok))
    df["steps_summed"] = np.int64(len(ok))
    df.loc[df["term"] == "inertia_change", "steps_summed"] = steps
    df["steps"] = np.int64(steps)
    df["sampled"] = df["steps_summed"] != df["steps"]
    return df


_TRACK_INTRO = """Computational inertia I = K + V of a real training run, read out of the
optimizer's state by inertia.track.InertiaTracker. Row k pairs the potential V_k (the loss at
theta_k, plus wd/2 ||theta_k||^2 under coupled weight decay) with the kinetic energy K_k of the
velocity with which the optimizer reached theta_k, and books the change delta_inertia =
I_k - I_{k-1} made by optimizer step k-1 into the terms of its exact ledger; the residual is what
the terms do not explain. Every figure and table here is drawn from the run's rows
(history.parquet, or rows.csv if the run did not finish); "inertia report RUN_DIR" redraws them."""


#: issue 12: the section of a run tracked with ``sharpness_every``
_SHARPNESS_SECTION = Section(
    "sharpness",
    "Sharpness and the edge of stability",
    law="stable iff sharpness < threshold:  2/eta (SGD), 2(1 + mu)/eta (heavy ball), "
    "(2 + 2 beta1)/((1 - beta1) eta) (Adam, preconditioned);  update curvature = 2 B / dtheta^T P dtheta",
    text="""Top: the top eigenvalue of the Hessian of the step's batch loss (dots, every
    sharpness_every steps; for Adam, AdamW and RMSprop of the preconditioned Hessian
    P^-1/2 H P^-1/2) against the optimizer's stability threshold at its current learning rate
    (dashed), and on every row the ledger's free curvature along the update, 2 B / dtheta^T P
    dtheta (line; in cheap mode with minibatches it also carries the change of batch). A run
    whose sharpness reaches the threshold trains at the edge of stability; the tracker warned
    once when the ratio first reached warn_ratio. Bottom: the loss, the ledger's curvature work
    |B| and 1/2 dtheta^T H dtheta (dots) measured beside it.""",
    figures=("sharpness",),
)


def _track_sections(has_metrics: bool, dtype: str) -> list[Section]:
    sections = [
        Section(
            "energies",
            "Kinetic, potential and inertia",
            law="I_k = K_k + V_k;  K_k = 1/2 v_k^T M v_k (the velocity that reached theta_k);  "
            "V_k = L(theta_k) + wd/2 ||theta_k||^2",
            text="""The potential is the minibatch loss the optimizer used at step k; the kinetic
            energy is read from the momentum buffer (and, for Adam and RMSprop, the
            preconditioner that sets the mass). The energy axis turns logarithmic when the
            energies span more than three decades (a diverging run). The bottom panel shows the
            learning rate lr (left axis) and the friction gamma = -ln(mu)/dt (right axis,
            dashed) of each step. In a long run the rows are drawn faint and their means over
            windows of rows solid; dashed grey lines mark the epochs when the run knows them.
            Red triangles at the top edge mark non-finite rows; their values are kept as NaN or
            inf in the data, never drawn as numbers and never replaced by 0.""",
            figures=("energies",),
            tables=("summary",),
        ),
        Section(
            "ledger",
            "The ledger of every step",
            law="delta_inertia = I_k - I_{k-1} = " + " + ".join(_LEDGER) + " + residual",
            text="""friction: the kinetic energy the momentum decay removes; numerical: the
            scheme's own dissipation, -dt^2/2 g^T M^-1 g; curvature: the Bregman remainder of the
            loss along the step, V_k - V_{k-1} - <G_raw, theta_k - theta_{k-1}> with G_raw the
            gradient backward left (large and positive when the step approaches instability);
            clipping: the work of a change of the gradient between backward and step (gradient
            clipping, a hook), <G_raw - G_applied, theta_k - theta_{k-1}>; noise: the change
            from the loss of one minibatch to the next at the same parameters (exact mode
            only; in cheap mode curvature carries it); schedule: the rescaling of
            the velocity when the learning rate (or Adam's bias correction) changes; metric:
            the change of a preconditioner (Adam, RMSprop); decay: the work of decoupled weight
            decay (AdamW); restart: the kinetic energy a momentum restart removed. Top: each
            term summed from the first row on, with the measured change I_k - I_first in
            black. Middle: the terms of each step (of each window of
            rows, in a long run) stacked, positive ones upwards and negative ones downwards,
            with the measured change as the black line. Bottom: each term's share of sum |terms|,
            which terms carry the energy. Axes turn symmetric-logarithmic when the values span
            more than three decades; non-finite rows are left out of every sum and marked by red
            triangles. The table sums each term over the recorded steps (each row books one
            step); when the rows sample the run (every > 1) those sums are a sample, marked
            sampled, and only inertia_change, the measured I_last - I_first, covers the whole
            run.""",
            figures=("ledger",),
            tables=("ledger_totals",),
        ),
        Section(
            "residual",
            "How well the ledger closes",
            law="residual = delta_inertia - (sum of the terms);  relative = |residual| / sum |terms|",
            text=f"""The residual checks the kinetic side of the ledger: the change of the
            kinetic energy read from the optimizer's buffers against friction, numerical,
            schedule, metric and decay and the work of the gradient the optimizer applied, each
            computed on its own from optimizer state, gradients and parameters. The potential
            enters only through curvature + clipping (and noise), together what the losses
            changed beyond that work: clipping is the work of a change of the gradient between
            backward and step (gradient clipping, a hook), curvature the Bregman remainder of
            the loss. So the residual cannot tell whether the loss passed to record() is the one
            whose gradient the step used (a wrong loss lands in curvature); the sharpness
            columns' curvature_quadratic check that side. Where the tracker's assumptions hold
            the residual is rounding error: of the order of the unit roundoff of the
            parameters' precision ({dtype}) relative to the energy that flowed.""",
            figures=("residual",),
        ),
    ]
    if has_metrics:
        sections.append(
            Section(
                "training",
                "Training and test metrics",
                law="per epoch: mean training loss, test loss, test accuracy",
                text="""Written by inertia track at the end of each epoch (metrics.csv).""",
                tables=("metrics",),
            )
        )
    return sections


def _dtype(manifest: dict[str, Any]) -> str:
    """The parameters' dtype(s) the tracker saw (manifest ``tracked``), in words."""
    dtypes = (manifest.get("tracked") or {}).get("dtypes")
    if isinstance(dtypes, list) and dtypes:
        return ("this run's parameters are " if len(dtypes) == 1 else "this run mixes ") + ", ".join(
            map(str, dtypes)
        )
    return "not recorded for this run"


def _steps_per_epoch(manifest: dict[str, Any]) -> int | None:
    """The run's optimizer steps per epoch, if its configuration says (``steps_per_epoch``)."""
    value = (manifest.get("config") or {}).get("steps_per_epoch")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def render_track(run_dir: RunDir | str | Path) -> Path:
    """Draw the figures and write ``report.html`` of a tracked run (manifest kind ``"track"``).

    Reads the rows with :func:`inertia.runs.read_history` (the Parquet file of a finished run,
    the row log of a running or killed one) and the manifest; writes the derived files
    ``energies.png``, ``ledger.png``, ``residual.png``, ``summary.csv``, ``ledger_totals.csv`` and
    ``report.html``, replacing earlier versions of them. The data (manifest, rows, Parquet,
    ``metrics.csv``) are only read.

    Returns:
        The path of ``report.html``.

    Raises:
        FileNotFoundError: no ``manifest.json``.
        ValueError: the run is not of kind ``"track"``.
    """
    from inertia import plots

    run = run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir)
    manifest = read_manifest(run)
    if manifest.get("kind") != "track":
        raise ValueError(
            f"`run_dir` must be a track run directory (manifest kind 'track'), "
            f"got kind {manifest.get('kind')!r} in {str(run)!r}"
        )
    history = read_history(run)
    epoch = _steps_per_epoch(manifest)
    figures = {
        "energies": plots.training_energies(
            history, steps_per_epoch=epoch, title="Energies, learning rate and friction of the tracked run"
        ),
        "ledger": plots.training_ledger(history, steps_per_epoch=epoch),
        "residual": plots.training_residual(history, title="Residual of the ledger"),
    }
    has_sharpness = "sharpness" in history.columns  # rows of sharpness_every
    if has_sharpness:
        figures["sharpness"] = plots.sharpness(
            {run.name: history}, title="Sharpness against the optimizer's stability threshold"
        )
    for name, fig in figures.items():
        plots.save(fig, run / f"{name}.png", overwrite=True)
    for name, table in (
        ("summary", track_summary(history, manifest)),
        ("ledger_totals", ledger_totals(history)),
    ):
        atomic_write_bytes(run / f"{name}.csv", table.to_csv(index=False, na_rep="nan").encode())
    bad = _first_nonfinite(history)
    status = run_status(manifest)
    lines = [_TRACK_INTRO, f"Status: {status}; {len(history)} rows."]
    if status == "interrupted":
        lines.append(
            "The process writing this run ended without closing it (killed, out of memory, or "
            "the machine restarted): the rows are those it wrote before; the report is drawn "
            "from rows.csv."
        )
    if bad is not None:
        policy = (manifest.get("config") or {}).get("nan_policy")
        lines.append(
            f"Non-finite loss or optimizer state: first at step {bad}"
            + (f" (nan_policy {policy!r})" if policy else "")
            + ". Those rows keep their NaN or inf values."
        )
    if manifest.get("diverging_step") is not None:
        lines.append(
            f"Diverging from step {manifest['diverging_step']}: the inertia rose at every recorded "
            "row of a window, by orders of magnitude, above where the run started (the rule of "
            "inertia.track.divergence), while the numbers stayed finite. The energy and ledger "
            "axes are logarithmic where the values span decades."
        )
    if manifest.get("error"):
        lines.append(f"The run ended with an error: {manifest['error']}")
    title = f"inertia track: {run.name}"
    sections = _track_sections(_embeddable(run / "metrics.csv") is None, _dtype(manifest))
    if has_sharpness:
        sections.append(_SHARPNESS_SECTION)
    return write_report(run, title, sections, intro="\n\n".join(lines), na_rep="nan")
