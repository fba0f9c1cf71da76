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

Every built-in method declares its step once, as a scheme (:attr:`Method.scheme`), and every
kernel of :mod:`inertia.kernels` executes any declared scheme. Add a splitting with
:func:`register_splitting` (it then runs on every fast path), or any other step with
:func:`register` (generic loop only, unless it declares a scheme).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from inertia.integrators._base import IntegratorState, Method, Scheme, StepContext, StepFn, StepResult
from inertia.integrators.euler import EULER_STEP, make_euler_step
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
    "Scheme",
    "StepContext",
    "StepFn",
    "StepResult",
    "get_method",
    "register",
    "register_splitting",
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


def _grad_evals(scheme: Scheme) -> int:
    """Gradient evaluations per step once the cache is warm: a ``B`` evaluates after an ``A``."""
    steps = scheme + scheme  # the second copy starts from the first's cache
    fresh, count = False, 0
    for i, (letter, _) in enumerate(steps):
        if letter == "A":
            fresh = False
        elif letter == "B" and not fresh:
            fresh = True
            count += i >= len(scheme)
    return count


def register_splitting(
    name: str,
    scheme: Sequence[tuple[str, float]],
    *,
    order: int,
    weak_order: int | None = None,
    noise: bool = True,
    description: str = "",
) -> Method:
    """Register a splitting method given as its sequence of exact flows, and return it.

    ``scheme`` is a sequence of ``(letter, c)``: ``A`` (drift ``theta <- theta + c dt v``),
    ``B`` (kick ``v <- v - c dt M^{-1} grad L``) and ``O`` (exact friction and noise over
    ``c dt``, see :mod:`inertia.integrators.splitting`). For a consistent step the ``A``
    fractions sum to 1, the ``B`` fractions sum to 1, and the ``O`` fractions (which carry the
    time: they tile ``[t_n, t_n + dt]`` in order) sum to 1. The method is conformal symplectic
    (a composition of exact flows) and runs on every kernel of :mod:`inertia.kernels` (the
    generic loop, the in-place and fused ensemble kernels on NumPy, torch CPU and CUDA, the
    compiled single path) with no other code.

    Args:
        name: the ``method=`` name (a new one).
        scheme: the flows, e.g. ``[("A", 0.5), ("B", 1.0), ("A", 0.5)]`` plus ``O`` sub-steps.
        order: global order of the deterministic dynamics (``>= 1``, the user's claim: it is
            recorded, not verified).
        weak_order: weak order with noise (``None``: unknown).
        noise: whether ``sigma > 0`` is allowed.
        description: one line for tables and ``--help``.

    Example:
        >>> from inertia.integrators import register_splitting, METHODS
        >>> m = register_splitting("aboba_doc", [("A", .5), ("B", .5), ("O", 1.), ("B", .5), ("A", .5)],
        ...                        order=2, weak_order=2)
        >>> m.grad_evals_per_step, m.symplectic
        (1, True)
        >>> del METHODS["aboba_doc"]
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"`name` must be a non-empty string, got {name!r}")
    flows: list[tuple[str, float]] = []
    for item in scheme:
        try:
            letter, c = item
            c = float(c)
        except (TypeError, ValueError):
            raise ValueError(
                f"`scheme` must be a sequence of (letter, fraction) pairs, got {item!r}"
            ) from None
        if letter not in ("A", "B", "O"):
            raise ValueError(f"`scheme` letters must be 'A', 'B' or 'O', got {letter!r}")
        if not math.isfinite(c) or c == 0.0 or (letter == "O" and c < 0.0):
            raise ValueError(
                f"`scheme` fractions must be finite and non-zero ('O' ones > 0), got {letter!r}: {c!r}"
            )
        flows.append((letter, c))
    for letter in "ABO":
        total = math.fsum(c for flow, c in flows if flow == letter)
        if abs(total - 1.0) > 1e-12:
            raise ValueError(
                f"`scheme`: the {letter!r} fractions must sum to 1 (a consistent step), got {total!r}"
            )
    order = int(order)
    if order < 1:
        raise ValueError(f"`order` must be >= 1, got {order}")
    frozen: Scheme = tuple(flows)
    return register(
        Method(
            name,
            order,
            weak_order if noise else None,
            True,
            bool(noise),
            _grad_evals(frozen),
            make_splitting_step(frozen),
            description or f"splitting {' '.join(f'{letter}({c:g})' for letter, c in frozen)}",
            scheme=frozen,
        )
    )


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
        scheme=EULER_STEP,
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
        scheme=EULER_STEP,
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
        scheme=SYMPLECTIC_EULER,
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
        scheme=LEAPFROG,
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
        scheme=YOSHIDA4,
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
        scheme=BAOAB,
    )
)
