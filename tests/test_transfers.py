"""Nothing state-sized crosses between devices (issue 11, item 3), counted on CPU.

On a GPU a copy of the ``(n_paths, d)`` state to the host costs as much as many steps (the front
door's finiteness check used to be 97 % of a short run). Here every call that would move a
state-sized tensor (``numel >= n_paths d``) to the host on a GPU is counted during whole
``simulate`` runs on torch CPU tensors: ``Tensor.cpu``, ``Tensor.to`` a CPU device,
``Tensor.__array__`` (``np.asarray``), ``Tensor.tolist``, and the backend's ``to_numpy``; for the
CUDA kernel's code (run on CPU tensors as ``tests/test_fused.py`` does) ``Tensor.numpy`` too.
Every count must be zero. Allowed and not counted: the recorded energies, ``(n_saved, n_paths)``,
copied to the host once at the end (the runs here keep them smaller than the state), and, on CPU
only, zero-copy NumPy views of CPU tensors used by the CPU kernels and the CPU noise filler.

Power controls: the counter sees the host copy of the old front door
(``np.isfinite(to_numpy(theta))``) and a ``np.asarray`` of the state.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import inertia
from inertia import _backend, potentials
from inertia.kernels import compiled, fused

torch = pytest.importorskip("torch")

N_PATHS, D = 64, 16
STATE = N_PATHS * D
LAM = np.linspace(0.5, 3.0, D)


class Counter:
    """Counts calls that would move a state-sized tensor to the host; :meth:`install` patches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, numpy_views: bool) -> None:
        self.calls: list[str] = []
        self.mp = monkeypatch
        self.numpy_views = numpy_views

    def _big(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.numel() >= STATE

    def _wrap(self, name: str, original: Any, moves: Any = None) -> Any:
        counter = self

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if counter._big(self) and (moves is None or moves(*args, **kwargs)):
                counter.calls.append(f"Tensor.{name}{tuple(self.shape)}")
            return original(self, *args, **kwargs)

        return wrapper

    def install(self) -> Counter:
        def to_cpu(*args: Any, **kwargs: Any) -> bool:
            dev = kwargs.get("device", args[0] if args else None)
            if isinstance(dev, torch.Tensor):
                dev = dev.device
            return dev is not None and not isinstance(dev, torch.dtype) and torch.device(dev).type == "cpu"

        patches = {
            "cpu": None,
            "to": to_cpu,
            "__array__": None,
            "tolist": None,
        }
        if self.numpy_views:
            patches["numpy"] = None
        for name, moves in patches.items():
            self.mp.setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name), moves))
        original = _backend.to_numpy
        counter = self

        def to_numpy(x: Any) -> Any:
            if counter._big(x):
                counter.calls.append(f"to_numpy{tuple(x.shape)}")
            return original(x)

        for module in ("inertia._backend", "inertia.simulate", "inertia.trajectory", "inertia.potentials"):
            mod = importlib.import_module(module)
            if hasattr(mod, "to_numpy"):
                self.mp.setattr(mod, "to_numpy", to_numpy)
        for module in ("inertia.kernels.inplace", "inertia.kernels.functional"):
            self.mp.setattr(importlib.import_module(module), "to_numpy", to_numpy)
        return self


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    yield Counter(monkeypatch, numpy_views=False).install()


def state(dtype: Any = torch.float64, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return (
        torch.as_tensor(rng.normal(size=(N_PATHS, D)), dtype=dtype),
        torch.as_tensor(rng.normal(size=(N_PATHS, D)), dtype=dtype),
    )


RUN = dict(gamma=0.5, sigma=0.1, dt=0.05, n_steps=30, save_every=10, method="baoab")


@pytest.mark.parametrize("kernel", ["inplace", "functional"])
def test_a_torch_ensemble_moves_nothing_state_sized(
    kernel: str, counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compiled, "available", lambda: False)  # the in-place kernel, not numba's
    theta0, v0 = state()
    traj = inertia.simulate(
        potentials.Quadratic(LAM), theta0, v0, mass=np.linspace(1.0, 2.0, D), fast=kernel == "inplace", **RUN
    )
    assert traj.config["kernel"] == kernel and traj.success
    assert isinstance(traj.theta, torch.Tensor)  # the final state stays where it was
    assert counter.calls == []


def test_mixed_inputs_move_only_host_data_to_the_device(
    counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``theta0`` a tensor, ``v0`` a NumPy array: ``v0`` goes host -> device, nothing comes back."""
    monkeypatch.setattr(compiled, "available", lambda: False)
    theta0, v0 = state()
    traj = inertia.simulate(potentials.Quadratic(LAM), theta0, v0.numpy().copy(), **RUN)
    assert traj.config["kernel"] == "inplace" and isinstance(traj.v, torch.Tensor)
    assert counter.calls == []


@pytest.mark.parametrize(("sigma", "save_every"), [(0.1, 10), (0.0, 7), (0.1, 1000)])
def test_the_cuda_kernel_moves_nothing_state_sized(
    sigma: float, save_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused CUDA kernel's code on CPU tensors, ``Tensor.numpy`` counted too (float32: the
    CPU noise filler's zero-copy view is for float64 CPU tensors only; on CUDA the device
    generator fills the buffer)."""
    monkeypatch.setattr(fused, "FUSED_DEVICE_TYPES", ("cpu", "cuda"))
    monkeypatch.setattr(fused, "COMPILE_BACKEND", "aot_eager")
    theta0, v0 = state(torch.float32)
    counter = Counter(monkeypatch, numpy_views=True).install()
    traj = inertia.simulate(
        potentials.Quadratic(LAM), theta0, v0, **{**RUN, "sigma": sigma, "save_every": save_every}
    )
    assert traj.config["kernel"] == "fused_cuda" and traj.success
    assert counter.calls == []


def test_the_counter_sees_the_old_front_door(counter: Counter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Power control: the front door's old finiteness check (``to_numpy`` then ``np.isfinite``
    on the host) is counted, and so is a ``np.asarray`` of the state."""
    sim = importlib.import_module("inertia.simulate")

    def old_check(name: str, x: Any) -> Any:
        if not bool(np.all(np.isfinite(sim.to_numpy(x)))):
            raise ValueError(f"`{name}` must be finite")
        return x

    monkeypatch.setattr(sim, "check_finite", old_check)
    theta0, v0 = state()
    inertia.simulate(potentials.Quadratic(LAM), theta0, v0, **RUN)
    assert counter.calls.count(f"to_numpy{(N_PATHS, D)}") == 2  # theta0 and v0 (and their .cpu())
    np.asarray(theta0)
    assert counter.calls[-1] == f"Tensor.__array__{(N_PATHS, D)}"
