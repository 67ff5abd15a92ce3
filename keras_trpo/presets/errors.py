"""The one error of keras_trpo.presets, in a module of its own so that every module of the package
can raise it.

Import it as ``keras_trpo.presets.PresetError``.
"""

from __future__ import annotations


class PresetError(ValueError):
    """An unknown preset name, an unreadable preset file or an invalid value in one."""
