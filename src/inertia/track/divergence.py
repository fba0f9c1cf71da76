"""Blow-ups that stay finite: a documented rule on the recorded rows, and its warning.

A run whose learning rate is past the stability threshold does not always produce a NaN: its
energies can grow by twenty decades and come back down (the friction removes what the
curvature pumped in) while every number stays finite. :class:`DivergenceMonitor` watches the
inertia of the recorded rows and flags such a run.

The rule (:class:`DivergenceRule`, defaults ``window = 6``, ``growth = 1e3``). Row ``k`` is
diverging when, over the ``window + 1`` consecutive finite rows ``k - window, ..., k``:

1. the inertia ``I`` is positive at the start of the window and increases at every row
   (``I_{j} > I_{j-1}`` for each row ``j`` of the window): the friction removes less than the
   step pumps in, row after row;
2. it has grown geometrically: ``I_k >= growth * I_{k-window}`` (with the defaults, a factor of
   at least ``1000^(1/6) ~ 3.2`` per row on average);
3. it is above where the run started: ``I_k > I_first`` (the first finite row's inertia), so a
   loss that climbs back from a tiny value late in training is not mistaken for a blow-up.

Ordinary training decreases ``I`` or keeps it within a small factor of its start, and its
minibatch noise breaks monotone runs, so the rule stays silent there (the test suite, the demo
and the examples count zero alarms); a step past the stability bound grows ``I`` by orders of
magnitude per row and trips it within ``window`` rows. The first row that satisfies it is
reported once, by a :class:`DivergenceWarning` naming the step; the tracker then sets its
status to ``"diverging"``.

Example:
    >>> monitor = DivergenceMonitor(DivergenceRule(window=3, growth=100.0))
    >>> [monitor.update(k, i) for k, i in enumerate([2.0, 1.5, 9.0, 300.0, 4e4])]
    [False, False, False, False, True]
    >>> monitor.step
    4
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["DivergenceMonitor", "DivergenceRule", "DivergenceWarning"]


class DivergenceWarning(RuntimeWarning):
    """The recorded inertia grows geometrically: the run is diverging (while staying finite)."""


@dataclass(frozen=True)
class DivergenceRule:
    """When a run counts as diverging (the module docstring states the rule).

    Attributes:
        window: consecutive recorded rows over which the inertia must rise (an integer >= 2).
        growth: the factor by which it must grow over them (a finite number > 1).
    """

    window: int = 6
    growth: float = 1e3

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise ValueError(f"`window` must be an integer >= 2, got {self.window!r}")
        if not isinstance(self.growth, (int, float)) or not (math.isfinite(self.growth) and self.growth > 1):
            raise ValueError(f"`growth` must be a finite number > 1, got {self.growth!r}")


class DivergenceMonitor:
    """Applies a :class:`DivergenceRule` row by row; :attr:`step` is the first flagged step."""

    def __init__(self, rule: DivergenceRule) -> None:
        self.rule = rule
        self.step: int | None = None
        self._first: float | None = None
        self._recent: deque[float] = deque(maxlen=rule.window + 1)

    def update(self, step: int, inertia: float, finite: bool = True) -> bool:
        """Take row ``step``; True the first time the rule holds (never again after that)."""
        if self.step is not None:
            return False
        if not (finite and math.isfinite(inertia)):
            self._recent.clear()  # a non-finite row is the NaN policy's business
            return False
        if self._first is None:
            self._first = inertia
        if self._recent and inertia <= self._recent[-1]:
            self._recent.clear()  # the rise must be unbroken
        self._recent.append(inertia)
        if len(self._recent) <= self.rule.window:
            return False
        start = self._recent[0]
        if start > 0 and inertia >= self.rule.growth * start and inertia > self._first:
            self.step = step
            return True
        return False
