"""LiteRT (TFLite) export of a TRPO policy (issue 30): in progress."""

from __future__ import annotations


def export_litert(model, filepath, *, overwrite=False, verbose=False, **kwargs) -> str:
    raise NotImplementedError("format='litert' is being built (issue 30).")
