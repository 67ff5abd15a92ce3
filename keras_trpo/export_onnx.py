"""ONNX export of a TRPO policy (issue 30): in progress."""

from __future__ import annotations


def export_onnx(model, filepath, *, overwrite=False, verbose=False, **kwargs) -> str:
    raise NotImplementedError("format='onnx' is being studied (issue 30).")
