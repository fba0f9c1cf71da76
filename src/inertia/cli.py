"""The ``inertia`` command line: ``demo``, ``verify``, ``track``, ``report`` and ``--version``.

This is the only module of the package that prints. Bad arguments exit with status 2 and a
usage message (argparse); ``verify`` exits with 1 when any law check fails.

Examples::

    inertia demo                      # every law, drawn over simulation, in runs/demo-<time>/
    inertia demo --quick --out /tmp/d # a much smaller version, into a new or empty directory
    inertia verify --quick            # table: law | predicted | measured | tolerance | pass
    inertia verify --json             # the same as JSON on stdout
    inertia track                     # train an MLP on digits, track I = K + V, runs/track-<time>/
    inertia track --optimizer adam --mode exact --epochs 5 --out /tmp/t
    inertia report runs/demo-...      # redraw figures and report.html from a run's CSV tables
    inertia report runs/track-...     # the same for a tracked run, from its rows
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _version() -> str:
    from inertia import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inertia",
        description="Computational inertia I = 1/2 v^T M v + L(theta) of second-order learning "
        "dynamics: run the demo, verify the laws, track real training, render reports.",
    )
    parser.add_argument("--version", action="version", version=f"inertia {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run every regime, draw theory over simulation, write a run directory",
        description="Run the demo scenarios (frictionless, damped, heating, Langevin, a real "
        "network, integrators, energy restarts) and write manifest.json, CSV tables, PNG figures "
        "and report.html into a new run directory.",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="run directory; must not exist or be empty (default: runs/demo-<YYYYmmdd-HHMMSS>)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="a much smaller version (seconds), for tests and smoke checks"
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--seed", type=_seed, default=0, help="base noise seed (default 0)")

    verify = sub.add_parser(
        "verify",
        help="check every law against simulation; exit 1 if any check fails",
        description="Run the law-versus-simulation checks of inertia.verify and print "
        "law | predicted | measured | tolerance | pass.",
    )
    verify.add_argument("--quick", action="store_true", help="smaller, faster checks")
    verify.add_argument("--json", action="store_true", help="print the results as JSON")

    _track_parser(sub)

    report = sub.add_parser(
        "report",
        help="redraw the figures and report.html of a saved demo or track run",
        description="Redraw the figures and report.html of a run directory from its data: a demo "
        "run from its CSV tables, a track run from its rows (history.parquet, or rows.csv if the "
        "run did not finish). The data and the manifest are only read.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a demo or track run directory")
    return parser


def _finite_float(text: str, *, strict: bool) -> float:
    """A finite number > 0 (``strict``) or >= 0, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
        rule = "> 0" if strict else ">= 0"
        raise argparse.ArgumentTypeError(f"must be a finite number {rule}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text, strict=True)


def _nonnegative_float(text: str) -> float:
    return _finite_float(text, strict=False)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    """A seed: an integer in [0, 2**32 - 1] (what NumPy and scikit-learn accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text!r}")
    return value


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated widths like 64,64, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be integers >= 1, got {text!r}")
    return widths


def _track_parser(sub: Any) -> None:
    track = sub.add_parser(
        "track",
        help="train an MLP on scikit-learn's digits and track its computational inertia",
        description="Train a multilayer perceptron on scikit-learn's bundled handwritten digits "
        "(no download) with a torch.optim optimizer, track I = K + V and its per-step ledger "
        "with InertiaTracker, and write a run directory: manifest.json, rows.csv (flushed as it "
        "goes), history.parquet, metrics.csv, figures and report.html.",
    )
    track.add_argument(
        "--optimizer",
        choices=("sgd", "adam", "adamw", "rmsprop", "nadam", "radam", "adamax", "adagrad"),
        default="sgd",
        help="default sgd",
    )
    track.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate (default: 0.05 for sgd, 0.001 for adam, adamw, rmsprop and radam, "
        "0.002 for nadam and adamax, 0.01 for adagrad)",
    )
    track.add_argument(
        "--momentum",
        type=_nonnegative_float,
        default=None,
        help="SGD's and RMSprop's momentum, beta1 of adam, adamw, nadam, radam, adamax (default 0.9; "
        "adagrad has none)",
    )
    track.add_argument("--weight-decay", type=_nonnegative_float, default=0.0, help="default 0")
    track.add_argument("--epochs", type=_positive_int, default=20, help="default 20")
    track.add_argument("--batch-size", type=_positive_int, default=32, help="default 32")
    track.add_argument("--hidden", type=_hidden, default=(64, 64), help="hidden widths (default 64,64)")
    track.add_argument("--activation", choices=("tanh", "relu"), default="tanh", help="default tanh")
    track.add_argument(
        "--mode",
        choices=("cheap", "exact"),
        default="cheap",
        help="cheap: no extra forward, curvature carries the minibatch noise; exact: re-evaluate each "
        "batch after its step to separate noise from curvature (default cheap)",
    )
    track.add_argument("--every", type=_positive_int, default=1, help="record every N-th step (default 1)")
    track.add_argument(
        "--sharpness-every",
        type=_positive_int,
        default=None,
        metavar="N",
        help="every N steps (a multiple of --every) add the top Hessian eigenvalue of the batch loss "
        "(preconditioned for adam/adamw/rmsprop), its stability threshold and their ratio to the rows "
        "(Lanczos on Hessian-vector products; default off)",
    )
    track.add_argument(
        "--clip-grad-norm",
        type=_positive_float,
        default=None,
        metavar="C",
        help="clip the gradients' total 2-norm to at most C between backward and step "
        "(torch.nn.utils.clip_grad_norm_); its work goes to the ledger's `clipping` column "
        "(default off)",
    )
    track.add_argument(
        "--scheduler",
        choices=("none", "step", "cosine"),
        default="none",
        help="learning-rate schedule: step (x0.3 after each third), cosine (to 0, per step); default none",
    )
    track.add_argument(
        "--nan-policy",
        choices=("raise", "flag", "stop"),
        default="raise",
        help="on a NaN/inf loss or state: raise (end the run, exit 1), flag (record and go on), stop "
        "(record and end cleanly); the rows keep the NaN/inf values (default raise)",
    )
    track.add_argument(
        "--seed", type=_seed, default=0, help="split, initial weights, batch order (default 0)"
    )
    track.add_argument(
        "--threads", type=_positive_int, default=1, help="torch threads while training (default 1)"
    )
    track.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        default=None,
        help="run directory; must not exist or be empty (default: runs/track-<YYYYmmdd-HHMMSS>)",
    )
    track.add_argument("--no-progress", action="store_true", help="no progress bar")
    track.add_argument(
        "--allow-divergence",
        action="store_true",
        help="exit 0 even when the run is flagged as diverging (its inertia grows geometrically "
        "while staying finite; status 'diverging'); without it such a run exits 1",
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from inertia.demo import run_demo
    from inertia.runs import create_run

    try:  # claim the directory first, so that a bad --out is a usage error (exit 2)
        run = create_run("demo", args.out)
    except ValueError as exc:
        print(f"inertia demo: error: argument --out: {exc}", file=sys.stderr)
        return 2
    path = run_demo(out=run, progress=not args.no_progress, quick=args.quick, seed=args.seed)
    print(f"run directory: {path}")
    print(f"report:        {path / 'report.html'}")
    return 0


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return str(x)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    sep = "-+-".join("-" * w for w in widths)
    body = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, sep, *body])


def _as_dict(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return {k: getattr(result, k) for k in ("law", "predicted", "measured", "tolerance", "passed", "detail")}


def _json_value(x: Any) -> Any:
    """Plain JSON values: NumPy scalars become Python ones, NaN/inf become strings."""
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()  # np.float64, np.bool_, 0-d arrays
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no NaN/inf: keep them visible as strings
    return x


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        verify = importlib.import_module("inertia.verify")
    except ImportError as exc:
        print(
            f"inertia verify: error: the checks module inertia.verify is not available ({exc})",
            file=sys.stderr,
        )
        return 2

    def progress(law: str) -> None:
        print(f"checking: {law}", file=sys.stderr, flush=True)

    results = list(verify.run_checks(quick=args.quick, progress=progress))
    failed = [r for r in results if not bool(r.passed)]
    if args.json:
        data = [{k: _json_value(v) for k, v in _as_dict(r).items()} for r in results]
        print(
            json.dumps(
                {"passed": not failed, "n_checks": len(results), "n_failed": len(failed), "checks": data},
                indent=2,
            )
        )
    else:
        rows = [
            [
                r.law,
                _fmt(float(r.predicted)),
                _fmt(float(r.measured)),
                _fmt(float(r.tolerance)),
                "PASS" if bool(r.passed) else "FAIL",
            ]
            for r in results
        ]
        print(_table(rows, ["law", "predicted", "measured", "tolerance", "pass"]))
        for r in failed:
            print(f"FAILED: {r.law}: {r.detail}")
        print(f"{len(results) - len(failed)} of {len(results)} checks passed")
    return 1 if failed else 0


def _cmd_track(args: argparse.Namespace) -> int:
    from inertia.runs import create_run

    try:
        from inertia.track_run import TrackConfig, run_track
    except ImportError as exc:
        print(f"inertia track: error: needs torch and scikit-learn ({exc})", file=sys.stderr)
        return 2
    try:
        config = TrackConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            epochs=args.epochs,
            batch_size=args.batch_size,
            hidden=args.hidden,
            activation=args.activation,
            mode=args.mode,
            every=args.every,
            sharpness_every=args.sharpness_every,
            clip_grad_norm=args.clip_grad_norm,
            scheduler=args.scheduler,
            nan_policy=args.nan_policy,
            seed=args.seed,
            threads=args.threads,
        )
    except ValueError as exc:
        print(f"inertia track: error: {exc}", file=sys.stderr)
        return 2
    try:  # claim the directory first, so that a bad --out is a usage error (exit 2)
        run = create_run("track", args.out)
    except ValueError as exc:
        print(f"inertia track: error: argument --out: {exc}", file=sys.stderr)
        return 2
    from inertia.track import NonFiniteError

    try:
        result = run_track(config, run, progress=not args.no_progress)
    except NonFiniteError as exc:
        print(f"inertia track: {exc}", file=sys.stderr)
        print(f"run directory: {run.path}")
        print(f"report:        {run.path / 'report.html'}")
        return 1
    print(f"run directory: {result.path}")
    print(f"report:        {result.report}")
    bad = (
        ""
        if result.first_nonfinite_step is None
        else f", first non-finite step {result.first_nonfinite_step}"
    )
    print(
        f"status {result.status}: {result.n_rows} rows, test accuracy {result.test_accuracy:.4f}, "
        f"training {result.seconds:.1f} s{bad}"
    )
    if result.status == "diverging" and not args.allow_divergence:
        print(
            f"inertia track: the run is diverging from step {result.diverging_step} (its inertia grows "
            f"geometrically while staying finite); exit 1 (--allow-divergence: exit 0)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from inertia.runs import read_manifest

    try:
        if not args.run_dir.is_dir():
            what = "a file" if args.run_dir.exists() else "missing"
            raise FileNotFoundError(
                f"RUN_DIR must be a run directory (holding manifest.json), got {str(args.run_dir)!r}, "
                f"which is {what}"
            )
        kind = read_manifest(args.run_dir).get("kind")
        if kind == "demo":
            from inertia.demo import render

            path = render(args.run_dir)
        elif kind == "track":
            from inertia.report import render_track

            path = render_track(args.run_dir)
        else:
            raise ValueError(
                f"`run_dir` must be a demo run directory or a track run directory (manifest kind "
                f"'demo' or 'track'), got kind {kind!r} in {str(args.run_dir)!r}"
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"inertia report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``inertia`` command line; returns the exit status.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 when ``verify`` finds a failing check, 2 for usage errors.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {"demo": _cmd_demo, "verify": _cmd_verify, "track": _cmd_track, "report": _cmd_report}
    return commands[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
