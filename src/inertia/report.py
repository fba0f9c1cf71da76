"""A self-contained HTML report of a run directory.

:func:`write_report` writes ``<run>/report.html``: one section per :class:`Section`, each with the
law it shows (the formula), a short explanatory paragraph, its figures embedded as base64 PNG
data URIs and its tables rendered as HTML, followed by a summary of the manifest (configuration,
seed, versions, command line, start and end time). The file needs nothing else: open it in a
browser, mail it, archive it.

The report is a pure function of the run directory's files (PNG figures, CSV tables,
``manifest.json``), so it can be rendered again at any time without re-running anything.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inertia.runs import RunDir, atomic_write_bytes, check_name, read_manifest, read_table

__all__ = ["REPORT", "Section", "write_report"]

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


def _figure_html(path: Path) -> str:
    if not path.is_file():
        return f'<p class="muted">figure {html.escape(path.name)} is missing</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


def _table_html(run: Path, name: str, max_rows: int) -> str:
    if not (run / f"{check_name('table', name)}.csv").is_file():
        return f'<p class="muted">table {html.escape(name)}.csv is missing</p>'
    df = read_table(run, name)
    note = ""
    if len(df) > max_rows:
        note = (
            f'<p class="muted">first {max_rows} of {len(df)} rows; the full table is '
            f"{html.escape(name)}.csv</p>"
        )
        df = df.head(max_rows)
    body = df.to_html(index=False, border=0, float_format=lambda x: f"{x:.6g}", na_rep="")
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
) -> Path:
    """Render ``report.html`` in ``run_dir`` from its figures, tables and manifest.

    Args:
        run_dir: the run directory (a :class:`~inertia.runs.RunDir` or its path).
        title: the page title.
        sections: the sections, in order.
        intro: an opening paragraph.
        max_rows: the most rows shown per table.

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
        parts.extend(_table_html(run, t, max_rows) for t in s.tables)
        parts.append("</section>")
    files = sorted(p.name for p in run.iterdir() if p.suffix in (".csv", ".png", ".json"))
    parts.append('<section id="run"><h2>Run</h2>')
    parts.append(f"<p>Run directory: <code>{html.escape(str(run.resolve()))}</code></p>")
    parts.append(_manifest_html(manifest))
    parts.append(
        "<p>Files: " + ", ".join(f'<a href="{html.escape(f)}">{html.escape(f)}</a>' for f in files) + "</p>"
    )
    parts.append("</section></body></html>")
    return atomic_write_bytes(run / REPORT, "\n".join(parts).encode("utf-8"))
