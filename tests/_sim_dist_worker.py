"""Spawned ranks for ``test_simulate_distributed.py``: ``simulate(distributed=True)`` scenarios.

Each scenario is a dict of :func:`inertia.simulate` arguments (``theta0``/``v0`` built from a
fixed seed, the same on every rank and in the single-process reference); each rank writes what
its run returned to ``rank<r>.npz`` (energies of all paths, its slice of the final state, the
status, counters and config as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from _dist_worker import init_gloo, start_ranks

WORLD = 2
D = 5
LAM = np.array([0.5, 1.0, 2.0, 3.0, 4.0])

#: name -> (backend, dtype, simulate keyword arguments); 9 paths: slices of 4 and 5
SCENARIOS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "numpy_noisy": ("numpy", "float64", dict(method="baoab", gamma=0.5, sigma=0.3, n_steps=40, save_every=7)),
    "numpy_noise_free": ("numpy", "float64", dict(method="leapfrog", gamma=0.2, n_steps=30, save_every=4)),
    "torch_noisy_f32": (
        "torch",
        "float32",
        dict(method="baoab", gamma=0.5, sigma=0.3, n_steps=25, save_every=5),
    ),
    "torch_functional": (
        "torch",
        "float64",
        dict(method="euler_maruyama", gamma=0.3, sigma=0.2, n_steps=20, save_every=3, fast=False),
    ),
    "numpy_inplace_every1": (
        "numpy",
        "float64",
        dict(method="symplectic_euler", gamma=0.4, sigma=0.1, n_steps=12, save_every=1, numba=False),
    ),
    "diverges": (
        "numpy",
        "float64",
        dict(method="leapfrog", gamma=0.0, n_steps=400, save_every=50, dt=0.9, on_divergence="stop"),
    ),
}
N_PATHS = 9


def inputs(backend: str, dtype: str, diverges: bool = False) -> tuple[Any, Any]:
    rng = np.random.default_rng(3)
    theta0 = rng.normal(size=(N_PATHS, D))
    v0 = rng.normal(size=(N_PATHS, D))
    if diverges:  # only the last path (on rank 1) carries the stiff mode
        theta0[:, -1] = 0.0
        v0[:, -1] = 0.0
        theta0[-1, -1] = 1.0
    if backend == "torch":
        import torch

        return torch.as_tensor(theta0, dtype=getattr(torch, dtype)), torch.as_tensor(
            v0, dtype=getattr(torch, dtype)
        )
    return theta0.astype(dtype), v0.astype(dtype)


def run(name: str, *, distributed: bool) -> Any:
    import warnings

    import inertia
    from inertia import potentials
    from inertia.kernels import compiled

    backend, dtype, kw = SCENARIOS[name]
    kw = {"dt": 0.05, "seed": 11, **kw}
    lam = LAM.copy()
    if name == "diverges":
        lam[-1] = 100.0  # dt 0.9 is above leapfrog's bound 2 / sqrt(100) for this mode
    use_numba = kw.pop("numba", True)
    available = compiled.available
    if not use_numba:
        compiled.available = lambda: False  # type: ignore[assignment]
    try:
        theta0, v0 = inputs(backend, dtype, diverges=name == "diverges")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return inertia.simulate(potentials.Quadratic(lam), theta0, v0, distributed=distributed, **kw)
    finally:
        compiled.available = available  # type: ignore[method-assign]


def _rank_main(rank: int, folder: str, world: int) -> None:
    import torch.distributed as dist

    from inertia._backend import to_numpy

    out = init_gloo(rank, folder, world)
    arrays: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    try:
        for name in SCENARIOS:
            traj = run(name, distributed=True)
            for field in ("step", "kinetic", "potential", "dissipated"):
                arrays[f"{name}.{field}"] = getattr(traj, field)
            arrays[f"{name}.theta"] = to_numpy(traj.theta)
            arrays[f"{name}.v"] = to_numpy(traj.v)
            meta[name] = {
                "status": traj.status,
                "first_bad_step": traj.first_bad_step,
                "n_steps": traj.n_steps,
                "n_grad_evals": traj.n_grad_evals,
                "config": traj.config,
            }
        try:
            run("numpy_noisy", distributed=False)
            meta["plain_run_on_a_rank"] = "ok"
        except Exception as exc:  # pragma: no cover - reported to the test
            meta["plain_run_on_a_rank"] = repr(exc)
    finally:
        np.savez(out / f"rank{rank}.npz", **arrays)
        (out / f"rank{rank}.json").write_text(json.dumps(meta))
        dist.destroy_process_group()


def spawn(folder: Path, timeout: float = 200.0) -> list[tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Run every scenario on ``WORLD`` spawned gloo ranks; each rank's arrays and metadata."""
    start_ranks(_rank_main, (str(folder), WORLD), WORLD, timeout)
    results = []
    for r in range(WORLD):
        with np.load(folder / f"rank{r}.npz") as f:
            arrays = {k: f[k] for k in f.files}
        results.append((arrays, json.loads((folder / f"rank{r}.json").read_text())))
    return results
