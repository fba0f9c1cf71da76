"""One benchmark of ``benchmarks/``, run against two source trees in interleaved fresh processes.

A change must keep the figures of an earlier tree ("within 5 % of today's in the same run"): this
script runs the same benchmark script with ``PYTHONPATH`` pointing at the old tree's ``src`` and at
this tree's, alternating the order from round to round, so that drift and load from other
processes hit both alike. Get an old tree with, e.g.::

    mkdir /tmp/old && git archive 0052d4e src benchmarks | tar -x -C /tmp/old

and compare::

    python benchmarks/compare_trees.py --old /tmp/old --rounds 3 -- \\
        ensemble_b1.py --processes 1 --only '*/baoab/simulate_*'

Each tree runs its own copy of the benchmark script (``<tree>/benchmarks/<script>``, so an old
tree is measured by the script that came with it). The benchmark's JSON must hold
``variants: {name: {"element_steps_per_s": {"median": x}}}`` (``ensemble_b1.py``) or
``results: {group: {name: {"us_per_step": {"median": x}}}}`` (``single_path.py``). Output (JSON on
stdout, and to ``--out``): per variant the median over rounds of each tree's figure and
``new_over_old`` (for a rate, > 1 is faster; for ``us_per_step``, < 1 is faster), and every
round's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def figures(doc: dict[str, Any]) -> dict[str, float]:
    """``{variant: figure}`` from a benchmark's JSON document (module docstring)."""
    out: dict[str, float] = {}
    for name, v in (doc.get("variants") or {}).items():
        if isinstance(v, dict) and v.get("status", "ok") == "ok" and "element_steps_per_s" in v:
            out[name] = v["element_steps_per_s"]["median"]
    for group, variants in (doc.get("results") or {}).items():
        for name, v in variants.items() if isinstance(variants, dict) else ():
            if isinstance(v, dict) and "us_per_step" in v:
                out[f"{group}/{name}"] = v["us_per_step"]["median"]
    return out


def run(tree: Path, script: str, args: list[str]) -> dict[str, float]:
    """The benchmark ``script`` of ``tree`` with ``args``, on that tree's sources."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    proc = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return figures(json.loads(proc.stdout))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, type=Path, help="the old tree (holding src/ and benchmarks/)")
    p.add_argument("--new", type=Path, default=HERE.parent, help="the new tree (default: this one)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of one process per tree (default 3)")
    p.add_argument("--out", default=None, help="also write the JSON document to this file")
    p.add_argument("script", help="the benchmark script, e.g. ensemble_b1.py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    a = p.parse_args(argv)
    if a.rounds < 1:
        p.error(f"--rounds must be >= 1, got {a.rounds}")
    for tree in (a.old, a.new):
        if not (tree / "benchmarks" / a.script).is_file() or not (tree / "src").is_dir():
            p.error(f"{tree} must hold src/ and benchmarks/{a.script}")
    args = [x for x in a.args if x != "--"]
    runs: dict[str, dict[str, list[float]]] = {}
    for r in range(a.rounds):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            for variant, x in run(a.old if name == "old" else a.new, a.script, args).items():
                runs.setdefault(variant, {}).setdefault(name, []).append(x)
            print(f"round {r + 1}/{a.rounds}: {name} done", file=sys.stderr, flush=True)
    table = {}
    for variant, by_tree in runs.items():
        if set(by_tree) == {"old", "new"}:
            old, new = statistics.median(by_tree["old"]), statistics.median(by_tree["new"])
            table[variant] = {"old": old, "new": new, "new_over_old": new / old}
    doc = {
        "script": a.script,
        "args": args,
        "old": str(a.old),
        "new": str(a.new),
        "rounds": a.rounds,
        "figures": table,
        "runs": runs,
        "load_average": os.getloadavg(),
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
