"""Track computational inertia in real PyTorch training (needs torch).

``InertiaTracker(optimizer)`` reads the kinetic energy hidden in the optimizer's state, pairs it
with the loss, and books every step's change of ``I = K + V`` into friction, numerical
dissipation, curvature work, minibatch noise, learning-rate schedule and (for preconditioned
methods) metric drift, with the residual reported. Supported optimizers and their derivations:
:mod:`inertia.track.sgd`, :mod:`inertia.track.adam`, :mod:`inertia.track.rmsprop`,
:mod:`inertia.track.nadam`, :mod:`inertia.track.radam`, :mod:`inertia.track.adamax`,
:mod:`inertia.track.adagrad`; add one with
:func:`register_mapping`.
"""

from __future__ import annotations

import torch

from inertia.track.adagrad import AdagradMapping
from inertia.track.adam import AdamMapping
from inertia.track.adamax import AdamaxMapping
from inertia.track.divergence import DivergenceRule, DivergenceWarning
from inertia.track.log import RunLog, TensorBoardSink, read_history, run_status
from inertia.track.mapping import MAPPINGS, Mapping, StepTerms, mapping_for, register_mapping
from inertia.track.nadam import NAdamMapping
from inertia.track.radam import RAdamMapping
from inertia.track.rmsprop import RMSpropMapping
from inertia.track.sgd import SGDMapping
from inertia.track.sharpness import SHARPNESS_COLUMNS, SharpnessMonitor, StabilityWarning
from inertia.track.tracker import COLUMNS, InertiaTracker, NonFiniteError, Sink

__all__ = [
    "COLUMNS",
    "MAPPINGS",
    "SHARPNESS_COLUMNS",
    "AdagradMapping",
    "AdamMapping",
    "AdamaxMapping",
    "DivergenceRule",
    "DivergenceWarning",
    "InertiaTracker",
    "Mapping",
    "NAdamMapping",
    "NonFiniteError",
    "RAdamMapping",
    "RMSpropMapping",
    "RunLog",
    "SGDMapping",
    "SharpnessMonitor",
    "Sink",
    "StabilityWarning",
    "StepTerms",
    "TensorBoardSink",
    "mapping_for",
    "read_history",
    "register_mapping",
    "run_status",
]

register_mapping(torch.optim.SGD, SGDMapping())
register_mapping(torch.optim.Adam, AdamMapping())
register_mapping(torch.optim.AdamW, AdamMapping())
register_mapping(torch.optim.RMSprop, RMSpropMapping())
register_mapping(torch.optim.NAdam, NAdamMapping())
register_mapping(torch.optim.RAdam, RAdamMapping())
register_mapping(torch.optim.Adamax, AdamaxMapping())
register_mapping(torch.optim.Adagrad, AdagradMapping())
