"""Reading the values that ``train_step`` and other callbacks put in the ``logs`` dict."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional

#: The ``logs`` dict Keras passes to a callback (``None`` when called outside ``fit``).
Logs = Optional[Dict[str, Any]]
#: Where a callback prints its lines (``print``, ``logging.info``, ...).
PrintFn = Callable[[str], Any]


def finite(value: Any) -> bool:
    """True if ``value`` converts to a finite float (``None``, strings, NaN and inf are not)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
