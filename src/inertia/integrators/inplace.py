"""Moved to :mod:`inertia.kernels.inplace`; this name stays importable as the very same module
(so ``from inertia.integrators import inplace`` and attribute patches keep working)."""

import sys

from inertia.kernels import inplace as _moved

sys.modules[__name__] = _moved
