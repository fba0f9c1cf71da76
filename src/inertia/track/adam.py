"""``torch.optim.Adam`` / ``AdamW`` as heavy ball in a changing diagonal metric.

PyTorch's step ``j`` (``t = j + 1`` after a fresh start; ``lr = eta``, ``betas = (b1, b2)``):
``m_j = b1 m_{j-1} + (1 - b1) g_j``, ``s_j = b2 s_{j-1} + (1 - b2) g_j^2`` (``amsgrad``: the
running maximum), bias corrections ``bc1 = 1 - b1^t``, ``bc2 = 1 - b2^t``, metric
``M_j = diag(sqrt(s_j / bc2) + eps)`` and ``theta_{j+1} = theta_j - (eta / bc1) M_j^{-1} m_j``.
Adam's ``weight_decay`` is added to the gradient (``g = grad L + wd theta``); AdamW (and Adam with
``decoupled_weight_decay``) instead first shrinks ``theta <- (1 - eta wd) theta`` and uses the raw
gradient in the moments.

Mapping. The persistent state is the first moment, a momentum: ``p_{j+1} = -c_j m_j`` with
``c_j^2 = eta / ((1 - b1) bc1_j)`` and ``dt_j^2 = eta (1 - b1) / bc1_j``. Then
``p_{j+1} = b1 r p_j - dt_j g_j`` (``r = c_j / c_{j-1}``) and
``theta_{j+1} = theta_j + dt_j M_j^{-1} p_{j+1}``: heavy ball with ``mu = b1`` in the metric
``M_j``. As ``t -> inf``, ``dt -> sqrt(eta (1 - b1))`` (THEORY.md section 6); before that the bias
correction acts as a step-size schedule. ``K_{j+1} = 1/2 p^T M_j^{-1} p = c_j^2/2 sum m_j^2 / M_j``.

Exact ledger of one step, with the old momentum at the new scale in the old metric
``K~_old = c_j^2/2 sum m_{j-1}^2 / M_{j-1} = r^2 K_j`` (carried forward from the previous step,
per parameter, since parameters unfrozen later have their own step counts) and in the new
metric ``K~_new = c_j^2/2 sum m_{j-1}^2 / M_j``::

    schedule  = K~_old - K_j = (r^2 - 1) K_j
    metric    = K~_new - K~_old = 1/2 (r p_j)^T (M_j^{-1} - M_{j-1}^{-1}) (r p_j)
    friction  = -(1 - b1^2) K~_new
    numerical = -dt_j^2/2 sum g_j^2 / M_j
    decay     = <G_j, delta_j> + wd <theta_j, Delta_adam>   (AdamW only)

The metric term is in momentum form because Adam carries the momentum ``m`` across the change
of metric. THEORY.md writes it as ``+1/2 v^T (M_{j+1} - M_j) v``, which holds when the velocity
is carried; with the momentum carried the exact term is
``1/2 p^T (M_new^{-1} - M_old^{-1}) p = -1/2 v_old^T (M_new - M_old) v_new``, of the opposite sign
to first order. The tests check this form (the ledger closes to rounding error).

AdamW: ``V = L + wd/2 ||theta||^2``, ``G_j = grad L + wd theta_j``; the decoupled shrink
``delta_j = -eta wd theta_j`` is not a force in the metric, so its work is booked separately:
``decay = wd sum theta_j (Delta_adam - eta grad L - eta wd theta_j)`` where
``Delta_adam = -(eta/bc1) M^{-1} m_j``.

Recovered from the state after the step: ``theta_j = theta_{j+1} - Delta_adam`` (AdamW: divided
by ``1 - eta wd``) and ``m_{j-1} = (m_j - (1 - b1) g_j) / b1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inertia.track.mapping import (
    NO_PRESTEP,
    Mapping,
    PreStep,
    StepTerms,
    momentum_terms,
    params_with_grad,
    prior,
)
from inertia.track.reduce import reduce_flat

__all__ = ["AdamMapping", "Moment", "adam_metric", "moment_pairs"]


def _floats(values: list[Any]) -> list[float]:
    """Step counts as Python floats, read in one operation per device (not one per tensor);
    on an accelerator (``capturable``/``fused`` optimizers) that read waits for the device."""
    import torch

    tensors: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            tensors.setdefault(v.device, []).append(i)
    out = [float(v) if not isinstance(v, torch.Tensor) else math.nan for v in values]
    for idx in tensors.values():
        if len(idx) == 1:
            out[idx[0]] = float(values[idx[0]])
            continue
        for i, x in zip(idx, torch.stack([values[i] for i in idx]).reshape(-1).tolist(), strict=True):
            out[i] = float(x)
    return out


def adam_metric(s: Any, bc2: float, eps: float) -> Any:
    """Adam's metric ``M = diag(sqrt(s / (1 - beta2^t)) + eps)`` from ``s`` (``exp_avg_sq``, or
    ``max_exp_avg_sq`` with amsgrad) and ``bc2 = 1 - beta2^t``: the one formula the ledger and
    the preconditioned sharpness (:mod:`inertia.curvature`) share."""
    return s.sqrt() / math.sqrt(bc2) + eps


@dataclass(frozen=True)
class Moment:
    """One slice of an Adam-family step: first moment ``m``, metric ``M``, the gradient ``g``
    the moments used, the raw loss gradient, ``G = grad V``, and ``theta`` after and before the
    step with the adaptive part ``du`` of the update."""

    m: Any
    metric: Any
    g: Any
    raw: Any
    big_g: Any
    theta1: Any
    theta0: Any
    du: Any


def moment_pairs(
    pairs: dict[str, tuple[Any, ...]], x: Moment, c2: float, fwd: float, hp: dict[str, float]
) -> dict[str, tuple[Any, ...]]:
    """The products every Adam-family mapping sums besides its ``gg`` (in ``pairs``): ``K`` and
    the forwarded momentum (weights ``c^2/eta`` of this and the next step), ``<G, dtheta>``,
    the recovered previous moment, decoupled decay's work and the weight-decay potentials."""
    b1, wd, lr = hp["beta1"], hp["weight_decay"], hp["lr"]
    m_over = x.m / x.metric
    pairs.update(kin=(x.m, m_over, c2), fwd=(x.m, m_over, fwd), gd=(x.big_g, x.theta1 - x.theta0))
    if b1 != 0.0:
        m_prev = (x.m - (1.0 - b1) * x.g) / b1
        pairs["kt"] = (m_prev, m_prev / x.metric, c2)
    if wd and hp["decoupled"]:
        pairs["decay"] = (x.theta0, x.du - lr * x.raw - (lr * wd) * x.theta0)
    if wd:
        pairs.update(th0=(x.theta0, x.theta0), th1=(x.theta1, x.theta1))
    return pairs


class AdamMapping(Mapping):
    """``torch.optim.Adam`` and ``AdamW``: amsgrad, maximize, L2 or decoupled weight decay."""

    names = ("kin", "fwd", "kt", "gg", "gd", "decay", "th0", "th1")

    def __init__(self, decoupled: bool | None = None) -> None:
        # None: read ``decoupled_weight_decay`` from the group (AdamW sets it True)
        self.decoupled = decoupled

    def _is_decoupled(self, group: dict[str, Any]) -> bool:
        if self.decoupled is not None:
            return self.decoupled
        return bool(group.get("decoupled_weight_decay", False))

    def writes_grad(self, group: dict[str, Any]) -> bool:
        return False  # every form (for-loop, foreach, fused) leaves .grad as it found it

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        # the step count of the group's first stepped parameter: only for the reported dt (the
        # ledger uses every parameter's own step count)
        step = next((st["step"] for _, _, st in params_with_grad(group, state) if "step" in st), None)
        b1, b2 = group["betas"]
        return {
            "step": math.nan if step is None else float(step),
            "lr": float(group["lr"]),
            "beta1": float(b1),
            "beta2": float(b2),
            "eps": float(group["eps"]),
            "weight_decay": float(group["weight_decay"]),
            "amsgrad": float(bool(group["amsgrad"])),
            "maximize": float(bool(group.get("maximize", False))),
            "decoupled": float(self._is_decoupled(group)),
        }

    # the three places where Adam's relatives (inertia.track.adamax, .radam, .nadam)
    # differ from Adam; the ledger's algebra is the same for all of them
    def second_moment(self, st: dict[str, Any], hp: dict[str, float]) -> Any:
        """The state tensor the metric is built from (``exp_avg_sq``; amsgrad: its maximum)."""
        return st["max_exp_avg_sq"] if hp["amsgrad"] else st["exp_avg_sq"]

    def metric(self, s: Any, t: float, hp: dict[str, float]) -> Any:
        """The diagonal metric ``M`` of a parameter at step count ``t`` (:func:`adam_metric`)."""
        return adam_metric(s, 1.0 - hp["beta2"] ** t, hp["eps"])

    def rate(self, t: float, hp: dict[str, float]) -> float:
        """The factor of the step size at step count ``t``: ``Delta = -(eta rate / bc1) M^{-1} m``
        (1 for Adam)."""
        return 1.0

    def preconditioner(self, group: dict[str, Any], state: Any) -> list[Any]:
        """``P = (1 - beta1^t) M / rate``: the step is ``theta -= eta P^{-1} m`` (Cohen et al.'s
        ``P``; ``rate = 1`` for Adam)."""
        hp = self.snapshot(group, state)
        b1 = hp["beta1"]
        out: list[Any] = []
        for p in group["params"]:
            st = state[p] if p in state else {}
            if "exp_avg" not in st:
                out.append(None)
                continue
            t = float(st["step"])
            out.append((1.0 - b1**t) / self.rate(t, hp) * self.metric(self.second_moment(st, hp), t, hp))
        return out

    def update_norm(self, hp: dict[str, float], terms: StepTerms) -> float:
        """``dtheta^T P dtheta = 2 eta (1 - beta1) K`` with ``P = (1 - beta1^t) M``."""
        return 2.0 * hp["lr"] * (1.0 - hp["beta1"]) * terms.kinetic

    def reduce(
        self,
        group: dict[str, Any],
        state: Any,
        pre: PreStep = NO_PRESTEP,
        hp: dict[str, float] | None = None,
    ) -> Any:
        hp = hp if hp is not None else self.snapshot(group, state)
        lr, b1, wd = hp["lr"], hp["beta1"], hp["weight_decay"]
        maximize, decoupled = bool(hp["maximize"]), bool(hp["decoupled"])
        rows: list[tuple[Any, ...]] = []
        steps: list[Any] = []
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            if "exp_avg" not in st:
                continue
            rows.append((grad, st["exp_avg"], self.second_moment(st, hp), p))
            steps.append(st["step"])
        if ref is None:
            ref = group["params"][0]

        def products(t: float, grad: Any, m: Any, s: Any, p: Any) -> dict[str, tuple[Any, ...]]:
            raw = -grad if maximize else grad
            bc1, rate = 1.0 - b1**t, self.rate(t, hp)
            metric = self.metric(s, t, hp)
            du = (-lr * rate / bc1) * m / metric
            if decoupled:
                theta0 = (p - du) / (1.0 - lr * wd) if wd else p - du
                g = raw
                big_g = raw + wd * theta0 if wd else raw
            else:
                theta0 = p - du
                g = raw + wd * theta0 if wd else raw
                big_g = g
            # per step count t: c^2 / lr = 1 / ((1 - b1) bc1(t)), dt^2 / lr = (1 - b1) / bc1(t);
            # the forwarded momentum uses the next step's bias correction bc1(t + 1)
            c2 = rate / ((1.0 - b1) * bc1)
            fwd = self.rate(t + 1.0, hp) / ((1.0 - b1) * (1.0 - b1 ** (t + 1.0)))
            pairs = {"gg": (g, g / metric, rate * (1.0 - b1) / bc1)}
            return moment_pairs(pairs, Moment(m, metric, g, raw, big_g, p, theta0, du), c2, fwd, hp)

        # parameters with different step counts (bias corrections) are summed in separate chunks
        return reduce_flat(rows, products, self.names, ref, {"decay": ("decay", wd)}, _floats(steps))

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        lr, b1, wd = hp["lr"], hp["beta1"], hp["weight_decay"]
        k_prev, k_old = prior(prev, fresh, lr)
        schedule, metric, friction = momentum_terms(k_prev, k_old, 0.5 * lr * sums["kt"], b1)
        # reported dt: dt^2 = lr (1 - b1) / bc1(t) at the group's step count (-> lr (1 - b1))
        t = hp["step"]
        h2 = (
            lr * self.rate(t, hp) * (1.0 - b1) / (1.0 - b1**t)
            if math.isfinite(t) and t > 0
            else lr * (1.0 - b1)
        )
        return StepTerms(
            kinetic=0.5 * lr * sums["kin"],
            forward=0.5 * sums["fwd"],
            schedule=schedule,
            metric=metric,
            friction=friction,
            numerical=-0.5 * lr * sums["gg"],
            decay=sums["decay"],
            g_dtheta=sums["gd"],
            reg_before=0.5 * wd * sums["th0"],
            reg_after=0.5 * wd * sums["th1"],
            lr=lr,
            dt=math.sqrt(h2),
            momentum=b1,
        )
