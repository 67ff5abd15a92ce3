"""One call to every deployment format: ``TRPO.export(path, format=...)`` (issue 30).

| ``format``                          | writes                                             | to run it needs                  |
|-------------------------------------|----------------------------------------------------|----------------------------------|
| ``"tf_saved_model"`` (``saved_model``) | a versioned SavedModel directory for TF Serving  | ``tensorflow`` or TF Serving     |
| ``... warmup=True``                 | + ``assets.extra/tf_serving_warmup_requests``      | writing: the ``serving`` extra   |
| ``"litert"`` (``tflite``)           | a ``.tflite`` file, builtin ops only               | ``ai-edge-litert`` (``litert``)  |
| ``"onnx"``                          | a ``.onnx`` file                                   | ``onnxruntime`` (``onnx`` extra) |

The SavedModel is :mod:`keras_trpo.export`; its TF Serving warmup file is :mod:`keras_trpo.export_warmup`;
LiteRT is :mod:`keras_trpo.export_litert`; ONNX is :mod:`keras_trpo.export_onnx`. ``docs/serving.md``
says which signature of which format carries sampling, state, masks and normalization.
"""

from __future__ import annotations

from typing import Any

from keras_trpo import export, export_litert, export_onnx

#: Every format ``TRPO.export`` writes, by its canonical name (Keras 3's names), and the other names accepted.
FORMATS = ("tf_saved_model", "litert", "onnx")
ALIASES = {"saved_model": "tf_saved_model", "tflite": "litert"}


def canonical_format(format: Any) -> str:
    """``format`` by its canonical name; one line naming the accepted names otherwise."""
    name = ALIASES.get(format, format) if isinstance(format, str) else format
    if name not in FORMATS:
        accepted = ", ".join(repr(f) for f in (*FORMATS, *ALIASES))
        raise ValueError(f"format must be one of {accepted}; got {format!r}.")
    return name


def export_model(model, filepath, format: str = "tf_saved_model", *, overwrite: bool = False,
                 verbose: bool = False, warmup: Any = False, **kwargs: Any) -> str:
    """Writes ``model`` in ``format`` and returns what was written (a version directory, or a file).

    ``warmup`` (SavedModel only): ``True`` for requests built from observations drawn from the
    observation space, or a gymnasium env (single or vector) whose resets give the observations;
    see :mod:`keras_trpo.export_warmup`.
    """
    name = canonical_format(format)
    if name != "tf_saved_model" and warmup is not False:
        raise ValueError(f"warmup= is for format='tf_saved_model' (TF Serving's warmup file); got format={format!r}.")
    if name == "tf_saved_model":
        return export.export_saved_model(model, filepath, overwrite=overwrite, verbose=verbose, warmup=warmup,
                                         **kwargs)
    write = export_litert.export_litert if name == "litert" else export_onnx.export_onnx
    return write(model, filepath, overwrite=overwrite, verbose=verbose, **kwargs)
