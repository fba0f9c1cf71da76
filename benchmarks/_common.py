"""Helpers shared by the benchmark scripts of issue 4 (``single_path.py``, ``accuracy.py``,
``scaling.py``): peer detection, fresh worker processes, medians, machine information, strict
JSON output and goal verdicts.

The scripts run as ``python benchmarks/<name>.py``, so this directory is on ``sys.path`` and they
``import _common``. Nothing here measures anything.

Peers (jax, diffrax, torchsde: the ``bench`` extra; torch: the ``torch`` extra) are looked up with
:func:`available`, which also honours the environment variable ``INERTIA_BENCH_HIDE``: a
comma-separated list of module names to treat as not installed (``all`` hides every optional
module). The scripts' ``--no-peers`` flag sets it, and the tests use it to check that a missing
peer is reported as skipped rather than failing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

SKIPPED_BENCH = "skipped: not installed (pip install .[bench])"
SKIPPED_TORCH = "skipped: not installed (pip install .[torch])"
HIDE_ENV = "INERTIA_BENCH_HIDE"
OPTIONAL = ("torch", "jax", "diffrax", "equinox", "torchsde")


def hidden() -> set[str]:
    """Module names that :func:`available` reports as missing (from ``INERTIA_BENCH_HIDE``)."""
    names = {n.strip() for n in os.environ.get(HIDE_ENV, "").split(",") if n.strip()}
    return set(OPTIONAL) if "all" in names else names


def hide_peers(modules: Iterable[str]) -> None:
    """Treat ``modules`` as not installed in this process and in the workers it spawns."""
    names = hidden() | set(modules)
    os.environ[HIDE_ENV] = ",".join(sorted(names))


def available(*modules: str) -> bool:
    """True when every module is importable and not hidden by ``INERTIA_BENCH_HIDE``."""
    hide = hidden()
    return all(m not in hide and importlib.util.find_spec(m) is not None for m in modules)


def spawn_worker(script: str, argv: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``python script *argv`` in a fresh process and parse the JSON of its last stdout line.

    A failing worker gives ``{"error": ...}`` with the last error line of its stderr, never an
    exception: one broken variant must not lose the others' figures.
    """
    cmd = [sys.executable, os.path.abspath(script), *argv]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"worker timed out after {timeout} s"}
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        errors = [
            ln for ln in lines if ln and not ln.startswith(" ") and ("Error" in ln or "Exception" in ln)
        ]
        tail = (errors or lines or ["(no message)"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the values themselves."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / b


def finite_or_null(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(v) for v in obj]
    return obj


def emit(doc: dict[str, Any], out: str | None) -> None:
    """Print ``doc`` as strict JSON to stdout and, when ``out`` is given, write it there too."""
    text = json.dumps(finite_or_null(doc), indent=2, allow_nan=False)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")


def goal(label: str, value: float | None, target: float, *, at_most: bool = True, unit: str = "") -> dict:
    """A goal verdict: ``value <= target`` (or ``>=``), with a one-line text for stderr."""
    op = "<=" if at_most else ">="
    if value is None or not math.isfinite(value):
        text = f"{label}: not measured, goal {op} {target:g}{unit}"
        return {"value": None, "goal": target, "met": None, "verdict": text}
    met = value <= target if at_most else value >= target
    text = f"{label}: {value:.3g}{unit}, goal {op} {target:g}{unit}: {'met' if met else 'NOT met'}"
    return {"value": value, "goal": target, "met": met, "verdict": text}


def machine_info() -> dict[str, Any]:
    """Python, NumPy, SciPy, numba and optional peer versions, CPU model and count, load average."""
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "loadavg": list(os.getloadavg()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if models:
            info["cpu_model"] = models[0]
    except OSError:
        pass
    for mod in ("scipy", "numba", *OPTIONAL):
        if available(mod):
            info[mod] = getattr(__import__(mod), "__version__", "?")
    hide = hidden()
    if hide:
        info["hidden_modules"] = sorted(hide)
    return info


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {value}")
    return value


def float_list(text: str) -> list[float]:
    """argparse type: comma-separated finite floats > 0, e.g. ``0.1,0.05``."""
    return [positive_float(t) for t in text.split(",") if t.strip()] or _empty(text)


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1; ``1e4`` style is accepted."""
    out = []
    for t in text.split(","):
        if not t.strip():
            continue
        value = float(t) if any(c in t for c in "eE.") else positive_int(t)
        if value != int(value) or value < 1:
            import argparse

            raise argparse.ArgumentTypeError(f"must be integers >= 1, got {t!r}")
        out.append(int(value))
    return out or _empty(text)


def _empty(text: str) -> Any:
    import argparse

    raise argparse.ArgumentTypeError(f"must be a non-empty comma-separated list, got {text!r}")


def variant_list(allowed: Sequence[str]) -> Any:
    """An argparse ``type`` for a comma-separated subset of ``allowed``, returned in the order of
    ``allowed`` (``ArgumentTypeError`` naming the allowed values otherwise)."""
    import argparse

    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"variants must be among {', '.join(allowed)}, got {text!r}")
        return [n for n in allowed if n in names]

    return parse
