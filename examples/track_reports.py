"""Render the reports of a short, a long and a diverging tracked run, and screenshot them.

The readability check of the tracked-run report (issue 9, item 7): three runs of the
``inertia track`` job (:func:`inertia.track_run.run_track`) are trained and reported:

* ``short``: one epoch in batches of 64 (22 rows);
* ``long``: about 20,000 steps (batches of 8, cosine schedule), one row per step;
* ``diverging``: ``lr = 3`` with ReLU, whose energies grow by decades while staying finite;
* ``nonfinite``: ``lr = 10`` with ReLU and ``nan_policy="flag"``, whose losses turn NaN and stay so.

Each report is written in its run directory; with ``--screenshots`` headless Chromium (if it is
installed: ``chromium``, ``chromium-browser`` or ``google-chrome``) also writes ``<name>.png``
of the whole page into ``--out``, to be looked at. One JSON line per run goes to stdout.

Run it with::

    .venv/bin/python examples/track_reports.py --out /tmp/reports --screenshots
    .venv/bin/python examples/track_reports.py --steps 2000 --only long   # a shorter long run
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

from inertia.track_run import TrackConfig, run_track

N_TRAIN = 1347  # training digits (test_size 0.25)


def configs(steps: int) -> dict[str, TrackConfig]:
    """The runs: name -> configuration (``steps`` sets the long run's length)."""
    per_epoch = math.ceil(N_TRAIN / 8)
    return {
        "short": TrackConfig(epochs=1, batch_size=64),
        "long": TrackConfig(epochs=max(1, round(steps / per_epoch)), batch_size=8, scheduler="cosine"),
        "diverging": TrackConfig(lr=3.0, activation="relu", epochs=3, nan_policy="flag"),
        "nonfinite": TrackConfig(lr=10.0, activation="relu", epochs=1, nan_policy="flag"),
    }


def screenshot(html: Path, png: Path, height: int = 5200) -> bool:
    """Headless Chromium's screenshot of ``html`` into ``png``; False if there is no Chromium."""
    exe = next((e for e in ("chromium", "chromium-browser", "google-chrome") if shutil.which(e)), None)
    if exe is None:
        return False
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={png}",
        f"--window-size=1400,{height}",
        html.resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    return png.is_file()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=f"runs/track-reports-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--steps", type=int, default=20_000, help="length of the long run")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    parser.add_argument("--screenshots", action="store_true", help="screenshot each report")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs(args.steps).items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        result = run_track(cfg, out=out / name, progress=False)
        shot = out / f"{name}.png"
        taken = args.screenshots and result.report is not None and screenshot(result.report, shot)
        record = {
            "run": name,
            "status": result.status,
            "rows": result.n_rows,
            "first_nonfinite_step": result.first_nonfinite_step,
            "diverging_step": result.diverging_step,
            "seconds": round(time.perf_counter() - t0, 2),
            "report": str(result.report),
            "screenshot": str(shot) if taken else None,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
