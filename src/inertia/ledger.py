"""The ledger of computational inertia: its term names, its columns and one row's arithmetic.

Pure Python on floats: no torch, no transport, no files. The tracker
(:mod:`inertia.track.tracker`) brings the losses and the mappings' per-group
:class:`StepTerms` to the host and calls :func:`ledger_row`; plots, reports and run
directories read the names from here, so they are written once and in one order.

Row ``k`` pairs ``potential = V(theta_k)`` (the loss of step ``k``, negated under ``maximize``,
plus ``wd/2 ||theta_k||^2``) with ``kinetic = K_k``, and accounts for
``delta_inertia = I_k - I_{k-1}`` (``I = K + V``), the change made by optimizer step ``k - 1``::

    delta_inertia = schedule + metric + friction + numerical + decay + curvature + clipping
                    (+ noise) + restart + residual

where the first five come from the optimizer state (:class:`StepTerms`, summed over parameter
groups), ``clipping = <G_raw - G_applied, theta_k - theta_{k-1}>`` is the work of whatever
changed the gradient between ``backward()`` and ``step()`` (``clip_grad_norm_``, a hook, user
code; ``G_raw`` is the gradient of ``V`` as backward left it, unscaled by a ``GradScaler``'s
scale, ``G_applied`` the one the optimizer used: the tracker's :mod:`inertia.track.clipping`),
``curvature = V(theta_k) - V(theta_{k-1}) - <G_raw, theta_k - theta_{k-1}>``, the Bregman
remainder of the potential (never negative for a convex full-batch loss; ``"cheap"`` mode: from
consecutive minibatch losses; ``"exact"``: from the same batch re-evaluated after the step, and
then ``noise = V_next_batch(theta_k) - V_same_batch(theta_k)``), ``restart`` the kinetic energy
a momentum restart removed (0 without one), and ``residual`` is what the terms leave unexplained
(rounding error on a float64 quadratic).

What the residual checks. ``curvature + clipping = V_k - V_{k-1} - <G_applied, dtheta>`` is the
change of the losses beyond the work of the applied gradient, so the residual compares the
kinetic side (the state terms, from the optimizer's buffers) with ``K + V`` built from the
losses; it cannot see a wrong loss (``10 * loss`` passed to ``record`` is absorbed by
``curvature``): the sharpness rows' ``curvature_quadratic`` (:mod:`inertia.track.sharpness`)
check the potential side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["COLUMNS", "SHARPNESS_COLUMNS", "STATE_TERMS", "TERMS", "StepTerms", "ledger_row"]

#: the ledger's terms, in the one order of the history's columns, the plots and the report
TERMS = (
    "friction",
    "numerical",
    "curvature",
    "clipping",
    "noise",
    "schedule",
    "metric",
    "decay",
    "restart",
)
#: the terms a mapping computes from optimizer state (fields of :class:`StepTerms`)
STATE_TERMS = ("schedule", "metric", "friction", "numerical", "decay")
#: the columns of a tracked row (``InertiaTracker.history``, ``history.csv``), in order
COLUMNS = (
    "step",
    "lr",
    "dt",
    "gamma",
    "kinetic",
    "potential",
    "inertia",
    "delta_inertia",
    *TERMS,
    "residual",
    "skipped",
    "finite",
)
#: the columns ``InertiaTracker(..., sharpness_every=n)`` adds after :data:`COLUMNS` (issue 12;
#: their meaning: :mod:`inertia.track.sharpness`)
SHARPNESS_COLUMNS = (
    "update_curvature",
    "threshold",
    "sharpness",
    "sharpness_ratio",
    "curvature_quadratic",
    "n_hvp",
)


@dataclass(frozen=True)
class StepTerms:
    """One parameter group's part of the ledger of one optimizer step ``j`` (Python floats).

    ``kinetic`` is ``K_{j+1}`` (the velocity that reached ``theta_{j+1}``); ``forward`` is that
    momentum carried to the next step's scale without its learning rate, so that the next step's
    rescaled old kinetic energy is ``K~_old = lr_{j+1} * forward`` (this is how schedules,
    warm-ups from ``lr = 0`` and Adam's per-parameter bias corrections enter the ledger);
    ``g_dtheta = <G_j, theta_{j+1} - theta_j>`` with ``G_j = grad V(theta_j)``;
    ``reg_before``/``reg_after`` are ``wd/2 ||theta_j||^2`` and ``wd/2 ||theta_{j+1}||^2``;
    ``clipping = <G_raw - G_applied, theta_{j+1} - theta_j>`` (filled in by the tracker, not by
    a mapping: 0 when ``.grad`` was not changed between backward and step, NaN when it was and
    the raw gradient was not captured).
    """

    kinetic: float
    forward: float
    schedule: float
    metric: float
    friction: float
    numerical: float
    decay: float
    g_dtheta: float
    reg_before: float
    reg_after: float
    lr: float
    dt: float
    momentum: float
    clipping: float = 0.0


def ledger_row(
    k: int,
    losses: list[float],
    terms: list[StepTerms] | None,
    prev: list[StepTerms] | None,
    *,
    first: list[StepTerms] | None = None,
    fresh: bool,
    exact: bool,
    maximize: bool,
    finite: bool,
    restart: float = 0.0,
    skipped: int = 0,
) -> dict[str, Any]:
    """Row ``k`` of the history (keys :data:`COLUMNS`) from host floats.

    Args:
        k: the step index of the row.
        losses: ``[L_k]`` for ``k = 0``; else ``[L_k, L_{k-1}]`` and, in exact mode, the same
            batch as ``L_{k-1}`` re-evaluated at ``theta_k`` (NaN where not seen).
        terms: the per-group terms of step ``k - 1`` (``None``: not available, no ledger).
        prev: the per-group terms of step ``k - 2`` (their ``kinetic`` is ``K_{k-1}``), or ``None``.
        first: row 0 only: the terms of step 0, for the regulariser ``wd/2 ||theta_0||^2``.
        fresh: the optimizer started at this tracker (``K_0 = 0``).
        exact: ``"exact"`` mode (the third loss is the same-batch re-evaluation).
        maximize: the optimizer ascends the loss; the potential is ``-loss``.
        finite: whether every loss and state sum behind the row was finite.
        restart: the kinetic energy a momentum restart removed after step ``k - 1``, negated
            (``-K_k``; :class:`inertia.optim.EnergyRestart`); ``terms`` are then those at rest.
        skipped: training iterations since the previous row whose optimizer step did not run
            (``torch.amp.GradScaler`` skips a step with non-finite gradients): they changed no
            parameter, so they are counted here and are no part of the ledger.

    The ledger (module docstring): ``delta_inertia = (K_k + V_k) - (K_{k-1} + V_{k-1})``,
    ``clipping = sum(t.clipping)``,
    ``curvature = V_same - V_{k-1} - g_dtheta - clipping`` (cheap: ``V_same = V_k``),
    ``noise = V_k - V_same`` and ``residual = delta_inertia - sum(terms)``, where
    ``curvature + clipping`` enters as the one known number ``V_same - V_{k-1} - g_dtheta``, so
    an unknown ``clipping`` (NaN: the gradient changed and was not captured) makes ``curvature``
    NaN and leaves the residual as it is; ``gamma = -ln(mu) / dt`` (NaN when ``dt = 0``,
    ``inf`` when ``mu = 0``). The state terms of several groups are summed.

    Example:
        >>> t = StepTerms(1.0, 0.0, 0.0, 0.0, -0.5, -0.25, 0.0, -2.0, 0.0, 0.0, 0.1, 0.3, 0.9)
        >>> row = ledger_row(1, [3.0, 5.0], [t], None, fresh=True, exact=False, maximize=False, finite=True)
        >>> row["delta_inertia"], row["curvature"], row["clipping"], row["residual"]
        (-1.0, 0.0, 0.0, -0.25)
        >>> clipped = StepTerms(1.0, 0.0, 0.0, 0.0, -0.5, -0.25, 0.0, -2.0, 0.0, 0.0, 0.1, 0.3, 0.9, 0.5)
        >>> row = ledger_row(
        ...     1, [3.0, 5.0], [clipped], None, fresh=True, exact=False, maximize=False, finite=True
        ... )
        >>> row["curvature"], row["clipping"], row["residual"]
        (-0.5, 0.5, -0.25)
    """
    row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
    row["step"] = k
    sign = -1.0 if maximize else 1.0
    loss_k = sign * losses[0]
    if k == 0:
        reg = sum(t.reg_before for t in first) if first else math.nan
        kinetic = 0.0 if fresh else math.nan
        row.update(kinetic=kinetic, potential=loss_k + reg, inertia=kinetic + loss_k + reg)
    elif terms is not None:
        k_prev = sum(t.kinetic for t in prev) if prev is not None else (0.0 if fresh and k == 1 else math.nan)
        kinetic = sum(t.kinetic for t in terms)
        v_prev = sign * losses[1] + sum(t.reg_before for t in terms)
        v_k = loss_k + sum(t.reg_after for t in terms)
        g_dtheta = sum(t.g_dtheta for t in terms)
        clipping = sum(t.clipping for t in terms)
        state = (
            {name: getattr(terms[0], name) for name in STATE_TERMS}
            if len(terms) == 1
            else {name: sum(getattr(t, name) for t in terms) for name in STATE_TERMS}
        )
        if exact:
            v_same = sign * losses[2] + sum(t.reg_after for t in terms)
            # the losses' change beyond the applied gradient's work: curvature + clipping
            beyond, noise = v_same - v_prev - g_dtheta, v_k - v_same
        else:
            beyond, noise = v_k - v_prev - g_dtheta, math.nan
        delta = (kinetic + v_k) - (k_prev + v_prev)
        explained = sum(state.values()) + beyond + (noise if exact else 0.0) + restart
        t0 = terms[0]
        if t0.dt == 0.0:  # lr = 0 (e.g. a warm-up): time does not advance, gamma undefined
            gamma = math.nan
        else:
            gamma = -math.log(t0.momentum) / t0.dt if t0.momentum > 0 else math.inf
        row.update(
            lr=t0.lr,
            dt=t0.dt,
            gamma=gamma,
            kinetic=kinetic,
            potential=v_k,
            inertia=kinetic + v_k,
            delta_inertia=delta,
            curvature=beyond - clipping,
            clipping=clipping,
            noise=noise,
            residual=delta - explained,
            restart=restart,
            **state,
        )
    row["skipped"] = skipped
    row["finite"] = finite
    return row
