"""Potentials ``V(theta) = L(theta)``: the protocol, synthetic systems, and torch adapters.

A potential maps parameters ``theta`` of shape ``(..., d)`` (``(n_paths, d)`` for ensembles) to
values of shape ``(...)`` and gradients of shape ``(..., d)``. The synthetic systems here are
written once against the Array API, so NumPy arrays and torch tensors (CPU or CUDA) go through
the same code; :func:`from_torch` and :func:`from_module` wrap any differentiable torch loss.

The formulas of :class:`Quadratic`, :class:`DoubleWell`, :class:`QuarticChain` and
:class:`Rosenbrock` also exist as numba kernels in :mod:`inertia.kernels.compiled` (the
compiled loop for long single paths reads each potential's public parameters); they evaluate the
same expressions in the same order, ``tests/test_single_path.py`` pins them equal bit for bit, and
a change here must be made there too.

Example:
    >>> import numpy as np
    >>> from inertia import potentials
    >>> pot = potentials.Quadratic([0.1, 1.0, 10.0])
    >>> float(pot.value(np.array([1.0, 1.0, 1.0])))
    5.55
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from inertia._backend import Array, array_namespace, constant_like, is_torch, to_numpy
from inertia._validate import real_array

__all__ = [
    "DoubleWell",
    "Potential",
    "Quadratic",
    "QuarticChain",
    "Rosenbrock",
    "TorchPotential",
    "from_module",
    "from_torch",
]


class Potential:
    """Base class and protocol of a potential ``V(theta)``.

    Subclasses implement :meth:`value` and :meth:`grad` (or :meth:`value_and_grad`). ``dim`` is
    the dimension ``d`` when fixed (``None`` for any ``d``); ``eigenvalues`` is the Hessian
    spectrum when the potential is a quadratic (used for stability warnings and closed forms),
    otherwise ``None``; ``minimum`` is ``inf V`` when known.
    """

    dim: int | None = None
    eigenvalues: np.ndarray | None = None
    minimum: float | None = None

    def value(self, theta: Array) -> Array:
        """``V(theta)``, shape ``theta.shape[:-1]``."""
        return self.value_and_grad(theta)[0]

    def grad(self, theta: Array) -> Array:
        """``grad V(theta)``, shape ``theta.shape``."""
        return self.value_and_grad(theta)[1]

    def value_and_grad(self, theta: Array) -> tuple[Array, Array]:
        """``(V(theta), grad V(theta))`` in one call (subclasses may share work)."""
        return self.value(theta), self.grad(theta)

    def prepare(self, theta: Array) -> Array:
        """Return ``theta`` in the backend this potential evaluates in (identity by default)."""
        return theta

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description for manifests."""
        return {"name": type(self).__name__, "dim": self.dim}


def _as_vector(name: str, values: Any) -> np.ndarray:
    """A copy (the potential must not alias its input) as a non-empty finite float64 vector;
    integers are promoted, booleans and complex numbers refused (:func:`real_array`)."""
    arr = np.array(to_numpy(real_array(name, values)), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite, got {arr.tolist()}")
    return arr


def _real(name: str, value: Any) -> float:
    """``value`` as a float if it is a real number (not a bool, a string or complex), else
    ``TypeError`` naming the argument; range checks are the caller's."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


class Quadratic(Potential):
    """``L(theta) = 1/2 theta^T A theta``, with ``A = diag(eigenvalues)`` or a given SPD matrix.

    ``grad L = A theta``; the Hessian is ``A`` everywhere, so ``eigenvalues`` (ascending) are the
    ``lambda_i`` of THEORY.md section 4 and ``eigenvectors`` (columns) the ``Q`` of
    ``A = Q diag(lambda) Q^T``.

    Args:
        eigenvalues: the diagonal ``lambda_i > 0`` (``A = diag(lambda)``).
        matrix: a symmetric positive-definite ``(d, d)`` matrix ``A`` (instead of eigenvalues).

    Example:
        >>> import numpy as np
        >>> pot = Quadratic(matrix=[[2.0, 1.0], [1.0, 2.0]])
        >>> pot.eigenvalues.tolist()
        [1.0, 3.0]
        >>> pot.grad(np.array([1.0, 0.0])).tolist()
        [2.0, 1.0]
    """

    minimum = 0.0

    def __init__(self, eigenvalues: Any = None, *, matrix: Any = None) -> None:
        if (eigenvalues is None) == (matrix is None):
            raise ValueError("give exactly one of `eigenvalues` and `matrix`")
        if matrix is None:
            lam = _as_vector("eigenvalues", eigenvalues)
            if not np.all(lam > 0):
                raise ValueError(f"`eigenvalues` must all be > 0, got {lam.tolist()}")
            self.diagonal: np.ndarray | None = lam
            self.matrix = np.diag(lam)
            order = np.argsort(lam)
            self.eigenvalues = lam[order]
            self.eigenvectors = np.eye(lam.size)[:, order]
        else:
            a = np.array(to_numpy(real_array("matrix", matrix)), dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
                raise ValueError(f"`matrix` must be square (d, d), got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError("`matrix` must be finite")
            if not np.allclose(a, a.T, rtol=1e-12, atol=1e-12 * np.abs(a).max()):
                i, j = np.unravel_index(int(np.argmax(np.abs(a - a.T))), a.shape)
                raise ValueError(
                    f"`matrix` must be symmetric (to 1e-12 relative), got matrix[{i}, {j}] = "
                    f"{float(a[i, j])!r} but matrix[{j}, {i}] = {float(a[j, i])!r} (largest asymmetry "
                    f"{abs(a[i, j] - a[j, i]):.3g})"
                )
            a = 0.5 * (a + a.T)
            lam, q = np.linalg.eigh(a)
            if not np.all(lam > 0):
                raise ValueError(f"`matrix` must be positive definite, got eigenvalues {lam.tolist()}")
            self.diagonal = None
            self.matrix = a
            self.eigenvalues, self.eigenvectors = lam, q
        self.dim = int(self.matrix.shape[0])
        self._cache: dict[tuple[str, str, str], Array] = {}

    def _coef(self, theta: Array) -> Array:
        key = (type(theta).__module__, str(getattr(theta, "device", "cpu")), str(theta.dtype))
        coef = self._cache.get(key)
        if coef is None:
            coef = constant_like(self.diagonal if self.diagonal is not None else self.matrix, theta)
            self._cache[key] = coef
        return coef

    def grad(self, theta: Array) -> Array:
        coef = self._coef(theta)
        return coef * theta if self.diagonal is not None else theta @ coef

    def value_and_grad(self, theta: Array) -> tuple[Array, Array]:
        xp = array_namespace(theta)
        g = self.grad(theta)
        return 0.5 * xp.sum(theta * g, axis=-1), g

    def value(self, theta: Array) -> Array:
        return self.value_and_grad(theta)[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": "Quadratic",
            "dim": self.dim,
            "eigenvalues": np.asarray(self.eigenvalues).tolist(),
            "diagonal": self.diagonal is not None,
        }


class DoubleWell(Potential):
    """``L(theta) = barrier (theta_0^2 - 1)^2 + stiffness/2 sum_{i>=1} theta_i^2``.

    Two minima ``L = 0`` at ``theta = (+-1, 0, ...)``, a saddle of height ``barrier`` at 0.
    ``dL/dtheta_0 = 4 barrier theta_0 (theta_0^2 - 1)``, ``dL/dtheta_i = stiffness theta_i``.
    """

    minimum = 0.0

    def __init__(self, dim: int = 2, *, barrier: float = 1.0, stiffness: float = 1.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"`dim` must be an integer >= 1, got {dim!r}")
        if not (np.isfinite(_real("barrier", barrier)) and barrier > 0):
            raise ValueError(f"`barrier` must be finite and > 0, got {barrier!r}")
        if not (np.isfinite(_real("stiffness", stiffness)) and stiffness > 0):
            raise ValueError(f"`stiffness` must be finite and > 0, got {stiffness!r}")
        self.dim, self.barrier, self.stiffness = dim, float(barrier), float(stiffness)

    def value_and_grad(self, theta: Array) -> tuple[Array, Array]:
        xp = array_namespace(theta)
        x0, rest = theta[..., :1], theta[..., 1:]
        w = x0 * x0 - 1.0
        value = self.barrier * (w * w)[..., 0] + 0.5 * self.stiffness * xp.sum(rest * rest, axis=-1)
        grad = xp.concat([4.0 * self.barrier * x0 * w, self.stiffness * rest], axis=-1)
        return value, grad

    def describe(self) -> dict[str, Any]:
        return {"name": "DoubleWell", "dim": self.dim, "barrier": self.barrier, "stiffness": self.stiffness}


class Rosenbrock(Potential):
    """``L(theta) = sum_{i<d-1} b (theta_{i+1} - theta_i^2)^2 + (a - theta_i)^2``; min 0 at ``(a, a^2, ...)``
    for d = 2 (and at all-ones for ``a = 1``)."""

    minimum = 0.0

    def __init__(self, dim: int = 2, *, a: float = 1.0, b: float = 100.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"`dim` must be an integer >= 2, got {dim!r}")
        if not (np.isfinite(_real("b", b)) and b > 0):
            raise ValueError(f"`b` must be finite and > 0, got {b!r}")
        if not np.isfinite(_real("a", a)):
            raise ValueError(f"`a` must be finite, got {a!r}")
        self.dim, self.a, self.b = dim, float(a), float(b)

    def value_and_grad(self, theta: Array) -> tuple[Array, Array]:
        xp = array_namespace(theta)
        x, y = theta[..., :-1], theta[..., 1:]
        r = y - x * x
        s = self.a - x
        value = xp.sum(self.b * r * r + s * s, axis=-1)
        zero = xp.zeros_like(theta[..., :1])
        left = -4.0 * self.b * r * x - 2.0 * s  # d/dx_i of term i
        right = 2.0 * self.b * r  # d/dx_{i+1} of term i
        grad = xp.concat([left, zero], axis=-1) + xp.concat([zero, right], axis=-1)
        return value, grad

    def describe(self) -> dict[str, Any]:
        return {"name": "Rosenbrock", "dim": self.dim, "a": self.a, "b": self.b}


class QuarticChain(Potential):
    """A nonlinear coupled chain (Fermi-Pasta-Ulam-Tsingou beta type):

    ``L(theta) = 1/2 sum_i lambda_i theta_i^2 + beta/4 sum_{i<d-1} (theta_{i+1} - theta_i)^4``.

    With ``D_i = theta_{i+1} - theta_i``: ``dL/dtheta_i = lambda_i theta_i - beta D_i^3 + beta D_{i-1}^3``.
    Quartic with cross terms, so an integrator bug cannot hide behind decoupled linear modes.
    """

    minimum = 0.0

    def __init__(self, eigenvalues: Any = (1.0, 2.0), *, beta: float = 1.0) -> None:
        lam = _as_vector("eigenvalues", eigenvalues)
        if not np.all(lam > 0):
            raise ValueError(f"`eigenvalues` must all be > 0, got {lam.tolist()}")
        if lam.size < 2:
            raise ValueError(f"QuarticChain needs dim >= 2, got {lam.size} eigenvalues")
        if not (np.isfinite(_real("beta", beta)) and beta >= 0):
            raise ValueError(f"`beta` must be finite and >= 0, got {beta!r}")
        self.lam, self.beta, self.dim = lam, float(beta), int(lam.size)
        self._quadratic = Quadratic(lam)

    def value_and_grad(self, theta: Array) -> tuple[Array, Array]:
        xp = array_namespace(theta)
        v2, g2 = self._quadratic.value_and_grad(theta)
        d = theta[..., 1:] - theta[..., :-1]
        d3 = d * d * d
        zero = xp.zeros_like(theta[..., :1])
        grad = g2 + self.beta * (xp.concat([zero, d3], axis=-1) - xp.concat([d3, zero], axis=-1))
        return v2 + 0.25 * self.beta * xp.sum(d3 * d, axis=-1), grad

    def describe(self) -> dict[str, Any]:
        return {"name": "QuarticChain", "dim": self.dim, "eigenvalues": self.lam.tolist(), "beta": self.beta}


class TorchPotential(Potential):
    """A potential from a torch function ``loss_fn(theta) -> scalar`` of a flat ``(d,)`` vector.

    Gradients come from ``torch.func.grad_and_value``; ensembles ``(n_paths, d)`` are evaluated
    with ``torch.func.vmap`` (no Python loop over paths), ``chunk_size`` paths at a time when
    given. NumPy inputs are converted to torch (``dtype``, ``device``) by :meth:`prepare`.

    Small networks on CPU are dominated by per-op overhead: when other processes hold the
    cores, ``torch.set_num_threads(1)`` can be many times faster than torch's default.
    """

    def __init__(
        self,
        loss_fn: Callable[[Any], Any],
        *,
        dim: int | None = None,
        dtype: Any = None,
        device: Any = None,
        chunk_size: int | None = None,
    ) -> None:
        import torch
        from torch import func

        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn
        self.dim = dim
        self.dtype = dtype if dtype is not None else torch.float64
        self.device = torch.device(device) if device is not None else None
        self._single = func.grad_and_value(loss_fn)
        self._batched = func.vmap(self._single, chunk_size=chunk_size)
        self._value_batched = func.vmap(loss_fn, chunk_size=chunk_size)

    def prepare(self, theta: Array) -> Array:
        import torch

        if is_torch(theta):
            return theta.to(device=self.device) if self.device is not None else theta
        return torch.as_tensor(np.asarray(theta), dtype=self.dtype, device=self.device)

    def value_and_grad(self, theta: Array) -> tuple[Array, Array]:
        if theta.ndim == 1:
            g, v = self._single(theta)
        else:
            g, v = self._batched(theta)
        return v.detach(), g.detach()

    def value(self, theta: Array) -> Array:
        import torch

        with torch.no_grad():
            out = self.loss_fn(theta) if theta.ndim == 1 else self._value_batched(theta)
        return out.detach()

    def describe(self) -> dict[str, Any]:
        return {
            "name": "TorchPotential",
            "dim": self.dim,
            "loss_fn": getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__),
        }


def from_torch(
    loss_fn: Callable[[Any], Any],
    *,
    dim: int | None = None,
    dtype: Any = None,
    device: Any = None,
    chunk_size: int | None = None,
) -> TorchPotential:
    """Wrap a differentiable torch loss of a flat parameter vector as a :class:`Potential`.

    ``loss_fn(theta)`` takes a ``(d,)`` tensor and returns a scalar tensor; it must be
    functional (no in-place updates of captured state, no ``.item()``) so that
    ``torch.func.vmap`` can evaluate ensembles.

    Example:
        >>> import torch
        >>> pot = from_torch(lambda th: 0.5 * (th ** 2).sum(), dim=3)
        >>> pot.grad(torch.ones(3, dtype=torch.float64)).tolist()
        [1.0, 1.0, 1.0]
    """
    return TorchPotential(loss_fn, dim=dim, dtype=dtype, device=device, chunk_size=chunk_size)


class ModuleLoss(TorchPotential):
    """The training loss of a ``torch.nn.Module`` as a function of its flattened parameters.

    ``L(theta) = loss_fn(module(inputs; theta), targets) + weight_decay/2 ||theta||^2``, with
    ``theta`` the concatenation of ``module.named_parameters()`` (in that order) and the module
    evaluated by ``torch.func.functional_call``. ``theta0`` holds the module's current parameters.
    """

    def __init__(
        self,
        module: Any,
        loss_fn: Callable[[Any, Any], Any],
        inputs: Any,
        targets: Any,
        *,
        weight_decay: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        import torch
        from torch.func import functional_call

        if not (np.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"`weight_decay` must be finite and >= 0, got {weight_decay!r}")
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("`module` has no trainable parameters")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        dtype, device = named[0][1].dtype, named[0][1].device
        self.theta0 = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        self.weight_decay = float(weight_decay)
        self.n_examples = int(inputs.shape[0])

        def flat_loss(theta: Any) -> Any:
            params = {
                name: chunk.reshape(shape)
                for name, chunk, shape in zip(
                    self.names, torch.split(theta, self.sizes), self.shapes, strict=True
                )
            }
            out = loss_fn(functional_call(module, params, (inputs,)), targets)
            if self.weight_decay:
                out = out + 0.5 * self.weight_decay * (theta * theta).sum()
            return out

        super().__init__(
            flat_loss, dim=int(self.theta0.numel()), dtype=dtype, device=device, chunk_size=chunk_size
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": "ModuleLoss",
            "dim": self.dim,
            "parameters": self.names,
            "weight_decay": self.weight_decay,
            "n_examples": self.n_examples,
        }


def from_module(
    module: Any,
    loss_fn: Callable[[Any, Any], Any],
    inputs: Any,
    targets: Any,
    *,
    weight_decay: float = 0.0,
    chunk_size: int | None = None,
) -> ModuleLoss:
    """The full-batch loss of ``module`` on ``(inputs, targets)`` as a potential of its flat parameters.

    ``L(theta) = loss_fn(module(inputs; theta), targets) + weight_decay/2 ||theta||^2``; start a
    simulation from ``pot.theta0`` (the module's current parameters).
    """
    return ModuleLoss(module, loss_fn, inputs, targets, weight_decay=weight_decay, chunk_size=chunk_size)
