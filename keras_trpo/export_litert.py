"""LiteRT (TFLite) export of a TRPO policy: ``TRPO.export("policy.tflite", format="litert")`` (issue 30).

One ``.tflite`` file with several signatures, built from the SavedModel export's own functions
(:class:`keras_trpo.export.ServingModule`) and converted with LiteRT's builtin ops only: no Select-TF
(Flex) op, so the LiteRT runtime runs it without the Flex delegate or TensorFlow (tested with
``ai-edge-litert``'s Python interpreter). The signatures have the SavedModel's input and output names:

| signature               | inputs                        | outputs                                       |
|-------------------------|-------------------------------|-----------------------------------------------|
| ``serving_default``     | ``observations`` ``[N, *obs]`` | ``actions`` (the deterministic action)       |
| ``value``               | ``observations``              | ``values`` float32 ``[N]``                    |
| ``distribution_params`` | ``observations``              | ``mean``, ``log_std`` (Box) or ``logits``     |
| every one, masked       | + ``action_mask`` int8 ``[N, n]`` | (the same)                                |
| every one, recurrent    | + the state, ``episode_start`` | + the next state                             |
| ``get_initial_state``   | ``batch_size`` int32 (recurrent) | zeros ``policy_h``, ...                    |

``Dict`` observation spaces take one input per key, as in the SavedModel. Observation normalization
runs inside (clients send raw observations); ``Box`` actions are clipped to the action space bounds.

``sample`` and ``log_prob`` are left out. Converted with builtins only, the SavedModel's ``sample`` needs
``tf.StatelessMultinomial`` (Discrete, MultiDiscrete), ``tf.StatelessRandomNormalV2`` (Box) or
``tf.StatelessRandomUniformV2`` (MultiBinary), and ``log_prob`` of a Categorical needs
``tf.SparseSoftmaxCrossEntropyWithLogits`` (what TFP's ``Categorical.log_prob`` lowers to): all Select-TF
ops. LiteRT's own random ops (``RANDOM_UNIFORM``, ``RANDOM_STANDARD_NORMAL``, ``MULTINOMIAL``) take their
seed as attributes fixed in the file, not as the ``seed`` input that "same seed, same actions" needs. A
client samples from ``distribution_params`` (a softmax over ``logits``, ``mean + exp(log_std) * noise``).
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid

import tensorflow as tf

from keras_trpo import export

#: The signatures of every ``.tflite`` export; a recurrent model's also has ``get_initial_state``.
SIGNATURE_NAMES = ("serving_default", "value", "distribution_params")
SUFFIX = ".tflite"

_NOT_BUILTIN = re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op")


def export_litert(model, filepath, *, overwrite=False, verbose=False, **kwargs) -> str:
    """Writes ``model`` as a ``.tflite`` file (LiteRT builtin ops only) and returns its absolute path.

    Args:
        model: a built :class:`keras_trpo.TRPO`.
        filepath: the file to write; it must end in ``.tflite``. Its directory is created if missing.
        overwrite: replace an existing file.
        verbose: print the path written.

    Raises:
        TypeError: ``model`` is not a TRPO model, ``filepath`` is not a path, or an unknown argument.
        ValueError: ``filepath`` does not end in ``.tflite`` or is a directory, the model is not built,
            or it needs an op that is not a LiteRT builtin (a custom network's layer).
        FileExistsError: ``filepath`` exists and ``overwrite`` is False.
    """
    if kwargs:
        raise TypeError(f"TRPO.export(format='litert') got unexpected arguments {sorted(kwargs)}; it takes "
                        "overwrite= and verbose=.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool; got {overwrite!r}.")
    export._check_model(model)  # the SavedModel export's check: a TRPO model, built
    target = resolve_tflite_path(filepath, overwrite=overwrite)
    flatbuffer = convert(model)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(staging, "wb") as file:
            file.write(flatbuffer)
        if os.path.exists(target) and not overwrite:  # written by someone else since the check above
            raise FileExistsError(f"filepath {os.fspath(filepath)!r} was created during the export; pass "
                                  "overwrite=True to replace it.")
        os.replace(staging, target)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
    if verbose:
        print(f"Saved the TRPO policy for LiteRT at {target} ({len(flatbuffer)} bytes)")
    return target


def resolve_tflite_path(filepath, *, overwrite: bool = False) -> str:
    """The absolute path ``export_litert`` writes for ``filepath``; one line for anything unusable."""
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(f"filepath must be a str or os.PathLike path ending in {SUFFIX!r}; got "
                        f"{type(filepath).__name__}.")
    path = os.path.abspath(os.fspath(filepath))
    if not path.endswith(SUFFIX):
        raise ValueError(f"filepath must name a {SUFFIX} file for format='litert'; got {os.fspath(filepath)!r}. "
                         f"Pass e.g. {os.path.join(os.fspath(filepath), 'policy' + SUFFIX)!r}.")
    if os.path.isdir(path):
        raise ValueError(f"filepath {os.fspath(filepath)!r} is a directory; format='litert' writes one file.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"filepath {os.fspath(filepath)!r} exists; pass overwrite=True to replace it.")
    return path


def signature_names(module: export.ServingModule) -> tuple[str, ...]:
    """The signatures a ``.tflite`` export of ``module``'s model has (``get_initial_state`` when recurrent)."""
    return (*SIGNATURE_NAMES, *(n for n in module.names if n == "get_initial_state"))


def convert(model) -> bytes:
    """The ``.tflite`` flatbuffer of ``model``'s LiteRT signatures, builtin ops only.

    The SavedModel export's functions (the same inputs, outputs, normalization, masks and state),
    saved without ``sample`` and ``log_prob`` (never traced, so no TFP op is built), then converted
    with ``supported_ops = [TFLITE_BUILTINS]``: an op outside it fails here, in one line.
    """
    serving = export.ServingModule(model)
    names = signature_names(serving)
    lite = tf.Module(name="keras_trpo_litert_policy")
    lite.model_variables = serving.model_variables
    for name in names:
        setattr(lite, name, getattr(serving, name))
    with tempfile.TemporaryDirectory(prefix="keras_trpo_litert_") as folder:
        tf.saved_model.save(lite, folder, signatures={n: getattr(lite, n).get_concrete_function() for n in names})
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=list(names))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        try:
            return converter.convert()
        except Exception as error:  # tf.lite's ConverterError: a long MLIR diagnostic
            raise ValueError(_conversion_error(model, error)) from error


def _conversion_error(model, error: Exception) -> str:
    ops = sorted(set(_NOT_BUILTIN.findall(str(error))))
    if not ops:
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        return f"LiteRT conversion of model {model.name!r} failed: {first}"
    return (f"format='litert' writes LiteRT builtin ops only (no Select-TF/Flex ops), and model {model.name!r} "
            f"needs TensorFlow ops that are not builtins: {', '.join(ops)}. Export it with "
            "format='tf_saved_model', or replace the layers of its networks that use these ops.")
