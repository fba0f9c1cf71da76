"""Moved to :mod:`inertia.kernels.fused`; this name stays importable as the very same module
(so ``from inertia.integrators import fused`` and attribute patches keep working)."""

import sys

from inertia.kernels import fused as _moved

sys.modules[__name__] = _moved
