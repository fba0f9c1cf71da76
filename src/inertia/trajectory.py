"""The result of :func:`inertia.simulate`: :class:`Trajectory` (energies at the saved steps, final
state, status, counters) with its tables and files, and :class:`DivergenceError`."""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inertia._backend import to_numpy
from inertia._files import atomic_write_bytes, refuse_symlink

__all__ = ["DivergenceError", "Trajectory", "finish"]

log = logging.getLogger("inertia.simulate")


class DivergenceError(RuntimeError):
    """Raised at the end of a run that blew up; ``.trajectory`` holds the partial result."""

    def __init__(self, message: str, trajectory: Trajectory) -> None:
        super().__init__(message)
        self.trajectory = trajectory


@dataclass(frozen=True, repr=False)
class Trajectory:
    """The result of :func:`simulate`.

    Attributes:
        t: times of the saved steps, shape ``(n_saved,)``.
        step: step indices of the saved steps, shape ``(n_saved,)``.
        kinetic, potential, inertia, dissipated: NumPy arrays ``(n_saved, n_paths)``.
        theta, v: the final state ``(n_paths, d)`` in the backend of the inputs.
        status: ``"success"`` or ``"diverged"``.
        message: a human-readable account of how the run ended.
        first_bad_step: the first step at which ``theta``, ``v`` or the kinetic energy is
            non-finite, or the potential is, where it was evaluated (every step for the methods
            that end a step with a gradient: leapfrog, yoshida4, baoab; saved steps otherwise);
            ``None`` if none. The in-place ensemble loop (``simulate(..., fast=True)`` on a
            diagonal quadratic) checks the per-path kinetic energy after every step and the
            potential (hence ``theta``) at saved steps; it flags the same step as the generic
            loop unless ``theta`` overflows at an unsaved step while ``v`` stays finite. The
            chunked kernels (on CUDA, :mod:`inertia.kernels.fused`, chunks of up to 8 steps;
            on CPU without noise, :mod:`inertia.kernels.fused_cpu`, up to 128) check the
            kinetic energy once per chunk (and ``K + L`` of the saved steps in it) and, when it
            is not finite, replay the chunk step by step as the in-place loop: the same step,
            assuming a kinetic energy that became non-finite stays so to the end of the chunk.
        n_steps: steps taken; n_grad_evals: gradient evaluations.
        method: the integrator; config: the arguments of the run (JSON-serialisable), with
            ``config["kernel"]`` the kernel of :mod:`inertia.kernels` that stepped it (saved in
            the ``.npz`` metadata and in :meth:`to_pandas`'s ``attrs``).
    """

    t: np.ndarray
    step: np.ndarray
    kinetic: np.ndarray
    potential: np.ndarray
    inertia: np.ndarray
    dissipated: np.ndarray
    theta: Any
    v: Any
    status: str
    message: str
    first_bad_step: int | None
    n_steps: int
    n_grad_evals: int
    method: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when the run finished without divergence."""
        return self.status == "success"

    @property
    def n_paths(self) -> int:
        return int(self.kinetic.shape[1])

    @property
    def n_saved(self) -> int:
        return int(self.t.shape[0])

    def __repr__(self) -> str:
        """A one-line summary (not the arrays: ``print(traj)`` stays short for any size)."""
        with np.errstate(all="ignore"):
            first = float(np.mean(self.inertia[0])) if self.inertia.size else float("nan")
            last = float(np.mean(self.inertia[-1])) if self.inertia.size else float("nan")
        return (
            f"Trajectory(status={self.status!r}, method={self.method!r}, n_steps={self.n_steps}, "
            f"n_paths={self.n_paths}, n_saved={self.n_saved}, mean inertia {first:.6g} -> {last:.6g})"
        )

    def to_pandas(self, *, paths: Any = None) -> Any:
        """A long table: one row per saved step and path.

        Columns ``step, t, path, kinetic, potential, inertia, dissipated``; ``paths`` selects a
        subset of path indices (default: all). ``DataFrame.attrs`` carries the run's ``method``,
        ``kernel`` (the :mod:`inertia.kernels` kernel that stepped it), ``status`` and ``config``.
        """
        import pandas as pd

        idx = np.arange(self.n_paths) if paths is None else np.atleast_1d(np.asarray(paths))
        n_t, n_p = self.n_saved, idx.size
        df = pd.DataFrame(
            {
                "step": np.repeat(self.step, n_p),
                "t": np.repeat(self.t, n_p),
                "path": np.tile(idx, n_t),
                "kinetic": self.kinetic[:, idx].reshape(-1),
                "potential": self.potential[:, idx].reshape(-1),
                "inertia": self.inertia[:, idx].reshape(-1),
                "dissipated": self.dissipated[:, idx].reshape(-1),
            }
        )
        df.attrs.update(
            method=self.method, kernel=self.config.get("kernel"), status=self.status, config=dict(self.config)
        )
        return df

    def save(self, path: str | Path) -> Path:
        """Write the trajectory: ``.npz`` (all arrays and the config), ``.csv`` or ``.parquet``
        (the long table of :meth:`to_pandas`).

        The write is atomic (:func:`inertia._files.atomic_write_bytes`): an existing ``path`` is
        never overwritten (``FileExistsError``; of several processes saving to one path exactly
        one succeeds), a symbolic link at ``path`` is refused, and no fixed temporary name is
        used, so nothing else in the folder is touched.
        """
        path = refuse_symlink(path, "path")
        if os.path.lexists(path):
            raise FileExistsError(f"`path` already exists, refusing to overwrite: {path}")
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".csv", ".parquet"):
            raise ValueError(f"`path` must end in .npz, .csv or .parquet, got {path.name!r}")
        if suffix == ".npz":
            meta = {
                k: getattr(self, k)
                for k in ("status", "message", "first_bad_step", "n_steps", "n_grad_evals", "method")
            }
            meta["config"] = self.config
            buf = io.BytesIO()
            np.savez(
                buf,
                t=self.t,
                step=self.step,
                kinetic=self.kinetic,
                potential=self.potential,
                inertia=self.inertia,
                dissipated=self.dissipated,
                theta=to_numpy(self.theta),
                v=to_numpy(self.v),
                meta=np.asarray(json.dumps(meta)),
            )
            data = buf.getvalue()
        elif suffix == ".csv":
            data = self.to_pandas().to_csv(index=False).encode()
        else:
            buf = io.BytesIO()
            self.to_pandas().to_parquet(buf, index=False)
            data = buf.getvalue()
        return atomic_write_bytes(path, data, overwrite=False)

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save` as ``.npz`` (never unpickles)."""
        with np.load(Path(path), allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {
                k: f[k] for k in ("t", "step", "kinetic", "potential", "inertia", "dissipated", "theta", "v")
            }
        config = meta.pop("config")
        return cls(**arrays, **meta, config=config)


def finish(
    *,
    steps: np.ndarray,
    kinetic: np.ndarray,
    potential: np.ndarray,
    dissipated: np.ndarray,
    theta: Any,
    v: Any,
    first_bad: int | None,
    taken: int,
    n_grad: int,
    method: str,
    t0: float,
    dt: float,
    config: dict[str, Any],
    on_divergence: str,
) -> Trajectory:
    """How every time loop of :func:`inertia.simulate` ends: the :class:`Trajectory` of the saved
    rows (``inertia = kinetic + potential``, ``t = t0 + step dt``), its status and message, and
    a :class:`DivergenceError` carrying it when the run blew up and ``on_divergence == "raise"``."""
    if first_bad is not None:
        status = "diverged"
        message = (
            f"non-finite state or energy at step {first_bad} "
            f"(t = {t0 + first_bad * dt:g}); the run stopped there and the trajectory "
            f"up to it is kept. Reduce `dt` or check the potential."
        )
        log.warning("simulate: %s", message)
    else:
        status, message = "success", f"completed {taken} steps"
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged row stays non-finite
        total = kinetic + potential
    traj = Trajectory(
        t=t0 + steps * dt,
        step=steps,
        kinetic=kinetic,
        potential=potential,
        inertia=total,
        dissipated=dissipated,
        theta=theta,
        v=v,
        status=status,
        message=message,
        first_bad_step=first_bad,
        n_steps=taken,
        n_grad_evals=n_grad,
        method=method,
        config=config,
    )
    if status == "diverged" and on_divergence == "raise":
        raise DivergenceError(message, traj)
    return traj
