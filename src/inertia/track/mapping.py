"""Optimizer mappings: how a ``torch.optim`` step is a step of the dynamics of THEORY.md.

A mapping reads one parameter group right after ``optimizer.step()`` (step ``j``, which took
``theta_j`` to ``theta_{j+1}`` with gradient ``g_j``) and returns, in two stages:

1. :meth:`Mapping.reduce`: a vector of sums over the group's parameters, computed on the
   parameters' device (no host sync); sharded optimizer state is summed across ranks later;
2. :meth:`Mapping.assemble`: pure Python on those sums and the group's hyper-parameters, giving
   the kinetic energy ``K_{j+1}`` of the velocity that reached ``theta_{j+1}`` and every term of
   the exact one-step ledger (:class:`StepTerms`).

Every term is computed from optimizer state, gradients and parameters on its own; the tracker
compares their sum with the measured ``I_{j+1} - I_j`` and reports the difference as the
residual. Quantities the step overwrote (``theta_j``, the previous buffer) are recovered exactly
(up to rounding) by inverting the update, so no copy of any state is kept.

The common pattern (derivations in each optimizer's module): momentum ``p = M v`` evolves as
``p_{j+1} = mu r p_j - dt_j g_j`` and ``theta_{j+1} = theta_j + dt_j M_j^{-1} p_{j+1}``, where
``r = c_j / c_{j-1}`` rescales the velocity when the step size changes. Then exactly::

    I_{j+1} - I_j = schedule + metric + friction + numerical + decay + curvature (+ noise)
    schedule  = (r^2 - 1) K_j                       learning-rate schedule (and Adam's bias correction)
    metric    = K~_j(M_j) - r^2 K_j                  change of the metric (preconditioners)
    friction  = -(1 - mu^2) K~_j(M_j)                kinetic energy the momentum decay removes
    numerical = -dt_j^2 / 2 g^T M_j^{-1} g           the scheme's own dissipation
    decay     = decoupled weight decay's work        (AdamW)
    curvature = V(theta_{j+1}) - V(theta_j) - <G_j, theta_{j+1} - theta_j>   (Bregman remainder)

with ``K~_j(M) = 1/2 (r p_j)^T M^{-1} (r p_j)``. ``V`` is the loss plus ``wd/2 ||theta||^2``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from inertia.ledger import StepTerms

__all__ = [
    "MAPPINGS",
    "Mapping",
    "PreStep",
    "StepTerms",
    "mapping_for",
    "register_mapping",
]


@dataclass(frozen=True)
class PreStep:
    """What the tracker saw just before the step (cheap: Python bookkeeping, no device work).

    ``new``: ids of parameters that had no optimizer state (their first step: e.g. SGD's
    ``b_0 = g_0``); ``mutated``: ids of parameters whose ``.grad`` the step modified in place
    (PyTorch's foreach Nesterov SGD adds ``momentum * buf`` to it).
    """

    new: frozenset[int] = frozenset()
    mutated: frozenset[int] = frozenset()


#: nothing known about the step (a mapping called outside the tracker)
NO_PRESTEP = PreStep()


def params_with_grad(group: dict[str, Any], state: Any) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """``(param, grad, state)`` for the parameters the optimizer stepped (state ``{}`` if it keeps
    none, like SGD without momentum)."""
    for p in group["params"]:
        grad = p.grad  # a property: read once
        if grad is None:
            continue
        if grad.is_sparse:
            raise ValueError("sparse gradients are not supported by the inertia tracker")
        if p.is_complex():
            raise ValueError("complex parameters are not supported by the inertia tracker")
        st = state.get(p)  # one hash; ``get`` never inserts into the optimizer's defaultdict
        yield p, grad, {} if st is None else st


def hyper(group: dict[str, Any], key: str) -> float:
    """A hyper-parameter as a Python float (learning rates may be tensors)."""
    return float(group[key])


class Mapping(ABC):
    """How one optimizer family maps onto the dynamics.

    Subclasses declare ``names`` (the sums :meth:`reduce` returns, in order) and implement
    :meth:`reduce` and :meth:`assemble`. Register with :func:`register_mapping`.
    """

    #: names of the sums returned by :meth:`reduce`
    names: tuple[str, ...] = ()

    @abstractmethod
    def reduce(
        self,
        group: dict[str, Any],
        state: Any,
        pre: PreStep = NO_PRESTEP,
        hp: dict[str, float] | None = None,
    ) -> Any:
        """Sums over the group's parameters as a float64 tensor of ``len(names)`` (no sync).

        ``hp`` is the group's :meth:`snapshot` when the caller already took it (else it is taken).
        """

    def writes_grad(self, group: dict[str, Any]) -> bool:
        """Whether a step of ``group`` may write into ``.grad`` in place; the tracker then watches
        the gradients' version counters (:attr:`PreStep.mutated`). The default, ``True``, is the
        safe answer for a new mapping; the built-in ones say exactly when."""
        return True

    def preconditioner(self, group: dict[str, Any], state: Any) -> list[Any]:
        """The diagonal ``P`` of the step's metric for each parameter of ``group`` (``None``:
        the identity, or no state yet), used by :mod:`inertia.curvature` for the
        preconditioned sharpness ``lambda_max(P^{-1/2} H P^{-1/2})``. The default (SGD) is the
        identity; adaptive mappings return the metric their ledger uses."""
        return [None for _ in group["params"]]

    def update_norm(self, hp: dict[str, float], terms: StepTerms) -> float:
        """``dtheta^T P dtheta`` of the step (``P`` of :meth:`preconditioner`), from its terms.

        For every heavy-ball form ``dtheta = dt v`` with ``K = 1/2 v^T M v``, so
        ``dtheta^T M dtheta = 2 dt^2 K`` (the default); a mapping whose step is not of that form
        (Nesterov) or whose ``P`` differs from ``M`` (Adam) overrides it. Gives the ledger's free
        curvature along the update, ``2 B / dtheta^T P dtheta`` (:mod:`inertia.track.sharpness`).
        """
        return 2.0 * terms.dt**2 * terms.kinetic

    def has_stepped(self, optimizer: Any) -> bool:
        """Whether ``optimizer`` has taken a step already (issue 9): by default, whether it holds
        any state; an optimizer that creates its state in its constructor (Adagrad) says so
        from its step counts."""
        return len(optimizer.state) > 0

    @abstractmethod
    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        """The hyper-parameters of the step just taken (read before a scheduler changes them)."""

    @abstractmethod
    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        """The ledger terms of the step from its sums.

        ``prev`` is the group's terms of the previous step (its ``kinetic`` is ``K_j``, its
        ``forward`` gives ``K~_old``); ``None`` with ``fresh`` means this is the optimizer's first
        step (``K_j = 0``), ``None`` without ``fresh`` that ``K_j`` is unknown (the tracker was
        attached mid-run): terms that need it are NaN.
        """


def prior(prev: StepTerms | None, fresh: bool, lr: float) -> tuple[float, float]:
    """``(K_j, K~_old)``: the previous kinetic energy and the previous momentum at this step's
    scale in the old metric (``lr * prev.forward``); zero on a fresh optimizer's first step, NaN
    when unknown."""
    if prev is not None:
        return prev.kinetic, lr * prev.forward
    return (0.0, 0.0) if fresh else (math.nan, math.nan)


def momentum_terms(k_prev: float, k_old: float, k_new: float, mu: float) -> tuple[float, float, float]:
    """``(schedule, metric, friction)`` of a momentum step.

    ``schedule = K~_old - K_j`` (rescaling the carried momentum to the new step size),
    ``metric = K~_new - K~_old`` (changing the metric under it) and
    ``friction = -(1 - mu^2) K~_new``. With ``mu = 0`` all of ``K_j`` is discarded:
    ``friction = -K_j``.
    """
    if mu == 0.0:
        return 0.0, 0.0, -k_prev
    return k_old - k_prev, k_new - k_old, -(1.0 - mu * mu) * k_new


MAPPINGS: dict[type, Mapping] = {}


def register_mapping(optimizer_type: type, mapping: Mapping) -> None:
    """Teach the tracker an optimizer: ``register_mapping(MyOptimizer, MyMapping())``.

    A subclass of a registered optimizer that keeps its ``step`` is found without registering
    (:func:`mapping_for`); one that overrides ``step`` must be registered, e.g. with the
    parent's mapping if its update rule is the parent's.
    """
    if not isinstance(optimizer_type, type):
        raise TypeError(f"`optimizer_type` must be a class, got {optimizer_type!r}")
    if not isinstance(mapping, Mapping):
        raise TypeError(f"`mapping` must be an inertia.track.Mapping, got {type(mapping).__name__}")
    MAPPINGS[optimizer_type] = mapping


def _same_step(cls: type, base: type) -> bool:
    """Whether ``cls`` runs ``base``'s ``step`` (torch wraps ``step`` per class: unwrap it)."""
    import inspect

    return inspect.unwrap(cls.step) is inspect.unwrap(base.step)  # type: ignore[attr-defined]


#: why an optimizer without a mapping has none, for the error message (issue 9)
_WHY = {
    "LBFGS": "its step runs a line search over several closure evaluations along a quasi-Newton "
    "direction built from a history of curvature pairs; no state of it is a momentum, so there "
    "is no velocity or kinetic energy to read",
}


def mapping_for(optimizer: Any) -> Mapping:
    """The mapping of ``optimizer``: that of its exact type, else that of the nearest registered
    base class whose ``step`` it runs unchanged; otherwise a ``TypeError`` that says why there
    is none, lists the supported optimizers and shows how to register one."""
    cls = type(optimizer)
    mapping = MAPPINGS.get(cls)
    if mapping is not None:
        return mapping
    overridden = None
    for base in cls.__mro__[1:]:
        if base in MAPPINGS:
            if _same_step(cls, base):  # a subclass that keeps torch's step
                return MAPPINGS[base]
            overridden = base
            break
    supported = ", ".join(sorted(f"{t.__module__}.{t.__qualname__}" for t in MAPPINGS))
    name = cls.__qualname__
    if overridden is not None:
        why = (
            f"{name} overrides the step of {overridden.__qualname__}, so the update rule the "
            f"mapping was derived for may no longer hold"
        )
    else:
        why = _WHY.get(name, "no mapping derives its update rule as a step of the dynamics")
    raise TypeError(
        f"the inertia tracker has no mapping for {name}: {why}. Supported: {supported}. To add "
        f"one, subclass inertia.track.Mapping (see inertia/track/sgd.py for a derivation and "
        f"its sums) and call inertia.track.register_mapping({name}, YourMapping()); if the "
        f"update rule is that of a supported optimizer, register its mapping, e.g. "
        f"register_mapping({name}, inertia.track.AdamMapping())."
    )
