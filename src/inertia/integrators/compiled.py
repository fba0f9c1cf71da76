"""Moved to :mod:`inertia.kernels.compiled`; this name stays importable as the very same module
(so ``from inertia.integrators import compiled`` and attribute patches keep working)."""

import sys

from inertia.kernels import compiled as _moved

sys.modules[__name__] = _moved
