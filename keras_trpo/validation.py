"""Argument checks shared by the modules that take discount-like parameters."""

from __future__ import annotations

import numpy as np


def check_unit_interval(name: str, value) -> float:
    """Returns ``value`` as a float if it is a number in [0, 1].

    Raises:
        TypeError: ``value`` is not a real number (``bool`` and strings included).
        ValueError: ``value`` is outside [0, 1] or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1]; got {value!r}.")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}.")
    return float(value)
