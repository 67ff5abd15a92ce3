"""Reading the values that ``train_step`` and other callbacks put in the ``logs`` dict."""

from __future__ import annotations

import math


def finite(value) -> bool:
    """True if ``value`` converts to a finite float (``None``, strings, NaN and inf are not)."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
