"""The pure ledger (:mod:`inertia.ledger`, issue 8 item 5): one row's arithmetic on host floats,
the term names defined once and used everywhere in one order, and the layering of ``track/``."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from inertia import ledger
from inertia.ledger import COLUMNS, STATE_TERMS, TERMS, StepTerms, ledger_row


def terms(**kw: float) -> StepTerms:
    base = dict.fromkeys(StepTerms.__dataclass_fields__, 0.0)
    base.update(lr=0.1, dt=0.3, momentum=0.9)
    base.update(kw)
    return StepTerms(**base)  # type: ignore[arg-type]


def test_row_by_hand() -> None:
    """Two groups; every number below is computed by hand from the docstring's formulas."""
    a = terms(kinetic=1.0, friction=-0.5, numerical=-0.25, g_dtheta=-2.0, reg_before=0.5, reg_after=0.25)
    b = terms(kinetic=0.5, schedule=0.125, metric=0.0625, decay=-0.03125, g_dtheta=-1.0)
    prev = [terms(kinetic=2.0), terms(kinetic=1.0)]
    row = ledger_row(4, [3.0, 5.0], [a, b], prev, fresh=True, exact=False, maximize=False, finite=True)
    v_k, v_prev = 3.0 + 0.25, 5.0 + 0.5
    assert row["kinetic"] == 1.5 and row["potential"] == v_k and row["inertia"] == 1.5 + v_k
    assert row["delta_inertia"] == (1.5 + v_k) - (3.0 + v_prev)
    assert row["curvature"] == v_k - v_prev + 3.0
    state = -0.5 - 0.25 + 0.125 + 0.0625 - 0.03125
    assert row["residual"] == pytest.approx(row["delta_inertia"] - state - row["curvature"], abs=1e-15)
    assert math.isnan(row["noise"])
    assert row["gamma"] == pytest.approx(-math.log(0.9) / 0.3)
    assert list(row) == list(COLUMNS) and row["step"] == 4 and row["finite"] is True


def test_exact_mode_maximize_and_first_row() -> None:
    t = terms(kinetic=1.0, g_dtheta=-2.0)
    row = ledger_row(1, [-3.0, -5.0, -4.0], [t], None, fresh=True, exact=True, maximize=True, finite=False)
    # potentials are -loss; V_same = 4; curvature = V_same - V_prev - g_dtheta; noise = V_k - V_same
    assert row["curvature"] == 4.0 - 5.0 + 2.0 and row["noise"] == 3.0 - 4.0
    assert row["delta_inertia"] == (1.0 + 3.0) - (0.0 + 5.0) and row["finite"] is False
    first = ledger_row(0, [2.0], None, None, first=[terms(reg_before=0.5)], fresh=False, exact=False,
                       maximize=False, finite=True)  # fmt: skip
    assert first["potential"] == 2.5 and math.isnan(first["kinetic"]) and math.isnan(first["delta_inertia"])
    # no terms (the step's sums were not seen): the row has energies NaN, no ledger
    none = ledger_row(3, [2.0, 1.0], None, None, fresh=True, exact=False, maximize=False, finite=True)
    assert all(math.isnan(none[c]) for c in ("kinetic", "delta_inertia", "residual"))


def test_gamma_edge_cases() -> None:
    for dt, mu, want in ((0.0, 0.9, math.nan), (0.3, 0.0, math.inf)):
        row = ledger_row(1, [1.0, 1.0], [terms(dt=dt, momentum=mu)], None, fresh=True, exact=False,
                         maximize=False, finite=True)  # fmt: skip
        assert row["gamma"] == want or (math.isnan(want) and math.isnan(row["gamma"]))


def test_names_are_defined_once_and_used_in_one_order() -> None:
    from inertia import plots, report
    from inertia.track import COLUMNS as TRACK_COLUMNS

    assert set(STATE_TERMS) < set(TERMS) and set(STATE_TERMS) <= set(StepTerms.__dataclass_fields__)
    assert TRACK_COLUMNS is COLUMNS
    assert plots.LEDGER_TERMS is TERMS and report._LEDGER is TERMS
    assert [c for c in COLUMNS if c in TERMS] == list(TERMS)


def test_the_ledger_and_track_import_no_plotting_or_report() -> None:
    code = (
        "import sys, inertia.ledger; assert 'torch' not in sys.modules, 'ledger imports torch';"
        "import inertia.track, inertia.track.log, inertia.track.sharpness;"
        "bad = [m for m in ('inertia.report', 'inertia.plots', 'matplotlib') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ledger.__doc__ and "no torch" in ledger.__doc__
