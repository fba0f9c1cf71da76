"""``torch.optim.NAdam`` as heavy ball with a look-ahead gradient step, in Adam's metric.

PyTorch's step ``j`` (``t = j + 1`` after a fresh start; ``lr = eta``, ``betas = (b1, b2)``,
``momentum_decay = psi``): ``g_j = grad L + wd theta_j`` (decoupled weight decay instead shrinks
``theta <- (1 - eta wd) theta`` first; ``maximize`` negates the gradient),
``mu_t = b1 (1 - 0.96^(t psi) / 2)``, the running product ``Pi_t = mu_1 ... mu_t``
(``mu_product``), ``m_j = b1 m_{j-1} + (1 - b1) g_j``, ``s_j = b2 s_{j-1} + (1 - b2) g_j^2``,
``M_j = diag(sqrt(s_j / bc2) + eps)`` and::

    theta_{j+1} = theta_j - a_j M_j^{-1} g_j - b_j M_j^{-1} m_j,
    a_j = eta (1 - mu_t) / (1 - Pi_t),   b_j = eta mu_{t+1} / (1 - Pi_t mu_{t+1}).

Mapping. The first moment is the momentum: ``p_{j+1} = -c_j m_j`` with ``c_j^2 = b_j / (1 - b1)``
and ``dt_j = c_j (1 - b1)`` (so ``dt_j c_j = b_j``). Then ``p_{j+1} = b1 r p_j - dt_j g_j``
(``r = c_j / c_{j-1}``; the friction is set by ``b1``, the ``mu_t`` schedule only scales the step)
and ``theta_{j+1} = theta_j + dt_j M_j^{-1} p_{j+1} - a_j M_j^{-1} g_j``: heavy ball plus a plain
preconditioned gradient step. Expanding ``K_{j+1} = 1/2 p_{j+1}^T M_j^{-1} p_{j+1}`` and the work
``<g_j, theta_{j+1} - theta_j>``, the cross terms ``<p_j, M^{-1} g>`` cancel and exactly::

    K_{j+1}   = c_j^2/2 sum m_j^2 / M_j
    schedule  = (r^2 - 1) K_j
    metric    = c_j^2/2 sum m_{j-1}^2 (1/M_j - 1/M_{j-1})
    friction  = -(1 - b1^2) c_j^2/2 sum m_{j-1}^2 / M_j
    numerical = -(dt_j^2/2 + a_j) sum g_j^2 / M_j
    decay     = wd sum theta_j (Delta - eta grad L - eta wd theta_j)   (decoupled weight decay)

with ``Delta = -(a_j g_j + b_j m_j) / M_j``: the look-ahead step adds ``-a_j g^T M^{-1} g`` to the
scheme's dissipation. The forwarded momentum uses ``c_{j+1}^2 / eta_{j+1} = mu_{t+2} /
((1 - b1)(1 - Pi_t mu_{t+1} mu_{t+2}))``, read from each parameter's own ``step`` and
``mu_product``.

Recovered after the step: ``theta_j = theta_{j+1} - Delta`` (decoupled: divided by
``1 - eta wd``; coupled weight decay: ``theta_j = (theta_{j+1} + (a raw + b m) / M) /
(1 - a wd / M)`` since ``g`` holds ``wd theta_j``) and ``m_{j-1} = (m_j - (1 - b1) g_j) / b1``.
"""

from __future__ import annotations

import math
from typing import Any

from inertia.track.adam import AdamMapping, Moment, _floats, adam_metric, moment_pairs
from inertia.track.mapping import NO_PRESTEP, PreStep, StepTerms, params_with_grad
from inertia.track.reduce import reduce_flat

__all__ = ["NAdamMapping", "nadam_mu"]


def nadam_mu(t: float, beta1: float, momentum_decay: float) -> float:
    """NAdam's momentum schedule ``mu_t = beta1 (1 - 0.96^(t psi) / 2)``."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


class NAdamMapping(AdamMapping):
    """``torch.optim.NAdam``: coupled or decoupled weight decay, maximize, for-loop and foreach."""

    def snapshot(self, group: dict[str, Any], state: Any) -> dict[str, float]:
        hp = super().snapshot({**group, "amsgrad": False}, state)
        prod = next(
            (st["mu_product"] for _, _, st in params_with_grad(group, state) if "mu_product" in st), None
        )
        hp.update(
            momentum_decay=float(group["momentum_decay"]),
            mu_product=math.nan if prod is None else float(prod),
        )
        return hp

    def update_norm(self, hp: dict[str, float], terms: StepTerms) -> float:
        """NaN: the step is not of the heavy-ball form ``dtheta = dt v`` (a gradient step is added)."""
        return math.nan

    def reduce(
        self,
        group: dict[str, Any],
        state: Any,
        pre: PreStep = NO_PRESTEP,
        hp: dict[str, float] | None = None,
    ) -> Any:
        hp = hp if hp is not None else self.snapshot(group, state)
        lr, b1, b2, eps, wd, psi = (
            hp["lr"],
            hp["beta1"],
            hp["beta2"],
            hp["eps"],
            hp["weight_decay"],
            hp["momentum_decay"],
        )
        maximize, decoupled = bool(hp["maximize"]), bool(hp["decoupled"])
        rows: list[tuple[Any, ...]] = []
        steps: list[Any] = []
        prods: list[Any] = []
        ref = None
        for p, grad, st in params_with_grad(group, state):
            ref = p
            if "exp_avg" not in st:
                continue
            rows.append((grad, st["exp_avg"], st["exp_avg_sq"], p))
            steps.append(st["step"])
            prods.append(st["mu_product"])
        if ref is None:
            ref = group["params"][0]

        def products(
            key: tuple[float, float], grad: Any, m: Any, s: Any, p: Any
        ) -> dict[str, tuple[Any, ...]]:
            t, prod = key
            raw = -grad if maximize else grad
            mu_t, mu_n, mu_nn = (nadam_mu(t + i, b1, psi) for i in (0.0, 1.0, 2.0))
            a_lr = (1.0 - mu_t) / (1.0 - prod)  # a / eta
            b_lr = mu_n / (1.0 - prod * mu_n)  # b / eta
            metric = adam_metric(s, 1.0 - b2**t, eps)
            if decoupled:
                g = raw
                du = -lr * (a_lr * g + b_lr * m) / metric
                theta0 = (p - du) / (1.0 - lr * wd) if wd else p - du
                big_g = raw + wd * theta0 if wd else raw
            else:
                step = lr * (a_lr * raw + b_lr * m) / metric
                theta0 = (p + step) / (1.0 - lr * a_lr * wd / metric) if wd else p + step
                g = raw + wd * theta0 if wd else raw
                big_g = g
                du = p - theta0
            c2 = b_lr / (1.0 - b1)  # c^2 / eta
            fwd = mu_nn / ((1.0 - b1) * (1.0 - prod * mu_n * mu_nn))
            pairs = {"gg": (g, g / metric, b_lr * (1.0 - b1) + 2.0 * a_lr)}
            return moment_pairs(pairs, Moment(m, metric, g, raw, big_g, p, theta0, du), c2, fwd, hp)

        keys = list(zip(_floats(steps), _floats(prods), strict=True))
        return reduce_flat(rows, products, self.names, ref, {"decay": ("decay", wd)}, keys)

    def assemble(
        self, hp: dict[str, float], sums: dict[str, float], prev: StepTerms | None, fresh: bool
    ) -> StepTerms:
        import dataclasses

        terms = super().assemble(hp, sums, prev, fresh)
        t, prod, b1 = hp["step"], hp["mu_product"], hp["beta1"]
        if not (math.isfinite(t) and math.isfinite(prod)):
            return terms
        mu_n = nadam_mu(t + 1.0, b1, hp["momentum_decay"])
        h2 = hp["lr"] * mu_n / (1.0 - prod * mu_n) * (1.0 - b1)  # dt^2 = b (1 - b1)
        return dataclasses.replace(terms, dt=math.sqrt(h2))
