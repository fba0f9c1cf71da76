"""The integrator registry: each method with its order and structure.

=================  =====  ==========  ==========  =====  ==============================================
method             order  weak order  symplectic  noise  scheme
=================  =====  ==========  ==========  =====  ==============================================
euler              1      1           no          yes    explicit Euler (the non-symplectic baseline)
euler_maruyama     1      1           no          yes    the same step, named for the stochastic case
symplectic_euler   1      1           yes         yes    O(1) B(1) A(1): PyTorch heavy-ball SGD
leapfrog           2      2           yes         yes    O(1/2) B(1/2) A(1) B(1/2) O(1/2): velocity Verlet
yoshida4           4      --          yes         no     leapfrog composed with weights (w1, w0, w1)
baoab              2      2           yes         yes    B(1/2) A(1/2) O(1) A(1/2) B(1/2) (L-M)
=================  =====  ==========  ==========  =====  ==============================================

Register another with :func:`register`.
"""

from __future__ import annotations

from inertia.integrators._base import IntegratorState, Method, StepContext, StepFn, StepResult
from inertia.integrators.euler import make_euler_step
from inertia.integrators.splitting import (
    BAOAB,
    LEAPFROG,
    SYMPLECTIC_EULER,
    YOSHIDA4,
    make_splitting_step,
)

__all__ = [
    "METHODS",
    "IntegratorState",
    "Method",
    "StepContext",
    "StepFn",
    "StepResult",
    "get_method",
    "register",
]

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (an existing name raises ``ValueError``)."""
    if method.name in METHODS:
        raise ValueError(f"an integrator named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """Look up a registered integrator by name; unknown names list what is available."""
    if not isinstance(name, str):
        raise TypeError(f"`method` must be a string, got {type(name).__name__}")
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"`method` must be one of {sorted(METHODS)}, got {name!r}") from None


register(
    Method(
        "euler",
        1,
        1,
        False,
        True,
        1,
        make_euler_step,
        "explicit Euler: non-symplectic baseline, energy grows by (1 + lambda dt^2) per step",
        exact_friction=False,
    )
)
register(
    Method(
        "euler_maruyama",
        1,
        1,
        False,
        True,
        1,
        make_euler_step,
        "Euler-Maruyama: the stochastic baseline (weak order 1)",
        exact_friction=False,
    )
)
register(
    Method(
        "symplectic_euler",
        1,
        1,
        True,
        True,
        1,
        make_splitting_step(SYMPLECTIC_EULER),
        "conformal symplectic Euler (exact friction, kick, drift) = PyTorch heavy-ball SGD",
    )
)
register(
    Method(
        "leapfrog",
        2,
        2,
        True,
        True,
        1,
        make_splitting_step(LEAPFROG),
        "velocity Verlet with exact friction half-steps",
    )
)
register(
    Method(
        "yoshida4",
        4,
        None,
        True,
        False,
        3,
        make_splitting_step(YOSHIDA4),
        "4th-order Yoshida / Forest-Ruth composition of leapfrog (deterministic only)",
    )
)
register(
    Method(
        "baoab",
        2,
        2,
        True,
        True,
        1,
        make_splitting_step(BAOAB),
        "BAOAB Langevin splitting with the exact Ornstein-Uhlenbeck step",
    )
)
