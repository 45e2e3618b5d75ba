"""JSON text that is valid JSON: non-finite floats (NaN, +-inf) become ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity``, which no JSON parser but Python's accepts; a
metric over a degenerate split or a label of ``inf`` must not make a results file unreadable.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float inside (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy/torch scalars
        return finite(value.item())
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(value)``, refusing NaN and infinities."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
