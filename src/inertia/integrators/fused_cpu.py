"""Moved to :mod:`inertia.kernels.fused_cpu`; this name stays importable as the very same module
(so ``from inertia.integrators import fused_cpu`` and attribute patches keep working)."""

import sys

from inertia.kernels import fused_cpu as _moved

sys.modules[__name__] = _moved
