"""Doctest collection of ``src/inertia``: leave out the framework adapters whose framework is not
installed (``inertia.integrations.lightning`` needs the ``lightning`` extra,
``inertia.integrations.transformers`` the ``transformers`` one); their tests skip with a message."""

from __future__ import annotations

import importlib.util

collect_ignore = [
    path
    for module, path in (
        ("lightning", "inertia/integrations/lightning.py"),
        ("transformers", "inertia/integrations/transformers.py"),
    )
    if importlib.util.find_spec(module) is None
]
