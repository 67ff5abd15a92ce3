"""LiteRT (TFLite) export of a TRPO policy: ``TRPO.export("policy.tflite", format="litert")`` (issue 30).

One ``.tflite`` file with several signatures, built from the SavedModel export's own functions
(:class:`keras_trpo.export.ServingModule`) and converted with LiteRT's builtin ops only: no Select-TF
(Flex) op, so the LiteRT runtime runs it without the Flex delegate or TensorFlow (tested with
``ai-edge-litert``'s Python interpreter). The signatures have the SavedModel's input and output names:

| signature               | inputs                            | outputs                                          |
|-------------------------|-----------------------------------|--------------------------------------------------|
| ``serving_default``     | ``observations`` ``[N, *obs]``    | ``actions`` (the deterministic action)           |
| ``sample``              | ``observations``, ``seed`` int32 ``[2]`` | ``actions``, ``log_probs`` ``[N]``        |
| ``value``               | ``observations``                  | ``values`` float32 ``[N]``                       |
| ``distribution_params`` | ``observations``                  | ``mean``, ``log_std`` (Box) or ``logits``        |
| every one, masked       | + ``action_mask`` int8 ``[N, n]`` | (the same)                                       |
| every one, recurrent    | + the state, ``episode_start``    | + the next state                                 |
| ``get_initial_state``   | ``batch_size`` int32 (recurrent)  | zeros ``policy_h``, ...                          |

``Dict`` observation spaces take one input per key, as in the SavedModel. Observation normalization
runs inside (clients send raw observations); ``Box`` actions are clipped to the action space bounds.

``sample`` is seeded as the SavedModel's (the same ``seed`` and inputs always give the same actions), but
it is not the same draw: the SavedModel's uses ``tf.StatelessMultinomial`` / ``StatelessRandomNormalV2`` /
``StatelessRandomUniformV2`` (Philox), Select-TF ops that the builtin-only converter refuses, and LiteRT's
own random ops (``RANDOM_UNIFORM``, ``MULTINOMIAL``, ...) take their seed as attributes fixed in the file.
Here :func:`uniform` is a counter-based hash of the seed and each element's position, from builtin integer
ops, and :func:`builtin_sample` turns it into actions (Gumbel-max, Box–Muller, a threshold) and their
log-probabilities. ``log_prob`` is left out: TFP's Categorical ``log_prob`` lowers to
``tf.SparseSoftmaxCrossEntropyWithLogits``, a Select-TF op (Box and MultiBinary ones would convert).
"""

from __future__ import annotations

import re
import tempfile

import numpy as np
import tensorflow as tf

from keras_trpo import export, export_paths
from keras_trpo.policies import BernoulliHead, DiagGaussianHead, MultiCategoricalHead

#: The signatures of every ``.tflite`` export; a recurrent model's also has ``get_initial_state``.
SIGNATURE_NAMES = ("serving_default", "sample", "value", "distribution_params")
SUFFIX = export_paths.SUFFIXES["litert"]

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
    export_paths.check_file_options("litert", kwargs, "overwrite= and verbose=", overwrite=overwrite, verbose=verbose)
    export.check_model(model)  # the SavedModel export's check: a TRPO model, built
    target = resolve_tflite_path(filepath, overwrite=overwrite)
    flatbuffer = convert(model)
    export_paths.write_file(flatbuffer, target, overwrite=overwrite)
    if verbose:
        print(f"Saved the TRPO policy for LiteRT at {target} ({len(flatbuffer)} bytes)")
    return target


def resolve_tflite_path(filepath, *, overwrite: bool = False) -> str:
    """The absolute path ``export_litert`` writes for ``filepath``; one line for anything unusable."""
    return export_paths.resolve_file_path(filepath, suffix=SUFFIX, format="litert", overwrite=overwrite)


def signature_names(module: export.ServingModule) -> tuple[str, ...]:
    """The signatures a ``.tflite`` export of ``module``'s model has (``get_initial_state`` when recurrent)."""
    return (*SIGNATURE_NAMES, *(n for n in module.names if n == "get_initial_state"))


def sample_function(model, serving: export.ServingModule):
    """The LiteRT ``sample`` signature: ``distribution_params``' inputs + ``seed`` int32 ``[2]`` ->
    ``actions`` (clipped to a ``Box``'s bounds), ``log_probs`` of the unclipped draw, and the next state.

    The draw is :func:`builtin_sample` on ``serving.distribution_params``' outputs: a function of the seed,
    the observations (and mask, state) only. It is not the SavedModel's draw for the same seed (Philox).
    """
    specs = {spec.name: spec for spec in serving.distribution_params.input_signature}
    keys = ("mean", "log_std") if isinstance(model.head, DiagGaussianHead) else ("logits",)
    clip = export.clip_actions(model.action_space, model.head.action_shape)

    def sample(*args):
        inputs = dict(zip([*specs, "seed"], args))
        out = serving.distribution_params(*(inputs[name] for name in specs))
        actions, log_probs = builtin_sample(model.head, {k: out[k] for k in keys}, inputs["seed"])
        return {"actions": clip(actions), "log_probs": log_probs, **{k: v for k, v in out.items() if k not in keys}}

    seed = tf.TensorSpec([2], tf.int32, name="seed")
    return tf.function(sample, input_signature=[*specs.values(), seed], autograph=False)


def builtin_sample(head, params: dict, seed) -> tuple:
    """``(actions, log_probs)``: one draw per row from ``uniform(seed)``, with LiteRT builtin ops only.

    Categorical and each MultiDiscrete component: Gumbel-max (``argmax(logits + G)``, ``G = -log(-log U)``);
    MultiBinary: ``U < sigmoid(logits)``; Box: Box–Muller (``sqrt(-2 log U1) cos(2π U2)``). ``log_probs`` from
    ``log_softmax`` / the Gaussian density directly (TFP's Categorical ``log_prob`` is a Select-TF op).
    """
    if isinstance(head, DiagGaussianHead):
        mean, log_std = params["mean"], params["log_std"]
        u = tf.cast(uniform(tf.concat([[2], tf.shape(mean)], 0), seed), mean.dtype)
        noise = tf.sqrt(-2.0 * tf.math.log(u[0])) * tf.cos(2.0 * np.pi * u[1])
        density = -0.5 * tf.square(noise) - log_std - 0.5 * np.log(2.0 * np.pi)
        return mean + tf.exp(log_std) * noise, tf.reduce_sum(tf.reshape(density, [tf.shape(mean)[0], -1]), axis=1)
    logits = params["logits"]
    u = tf.cast(uniform(tf.shape(logits), seed), logits.dtype)
    if isinstance(head, BernoulliHead):
        actions = tf.cast(u < tf.sigmoid(logits), tf.int32)
        # log sigmoid(±l) = min(±l, 0) - log(1 + exp(-|l|)), with ± by the drawn bit.
        signed = tf.where(actions > 0, logits, -logits)
        terms = tf.minimum(signed, 0.0) - tf.math.log(1.0 + tf.exp(-tf.abs(logits)))
        return actions, tf.reduce_sum(tf.reshape(terms, [tf.shape(logits)[0], -1]), axis=1)
    multi = isinstance(head, MultiCategoricalHead)  # else a CategoricalHead: one component
    widths = head.nvec if multi else [head.num_outputs]
    gumbel = -tf.math.log(-tf.math.log(u))
    parts, noisy = tf.split(logits, widths, axis=-1), tf.split(logits + gumbel, widths, axis=-1)
    index = [tf.argmax(part, axis=-1, output_type=tf.int32) for part in noisy]
    log_probs = tf.add_n([tf.reduce_sum(tf.nn.log_softmax(part) * tf.one_hot(i, w, dtype=logits.dtype), axis=-1)
                          for part, i, w in zip(parts, index, widths)])
    actions = tf.stack(index, axis=-1) if multi else index[0]
    return actions + tf.constant(head.start, tf.int32), log_probs


#: The hash's modulus, the Mersenne prime 2^31 − 1: values stay in [1, P) as int64, products below 2^47.
_PRIME = 2**31 - 1
#: Full-period multipliers modulo P (Park & Miller's MINSTD 16807 and 48271; L'Ecuyer's 69621).
_MULTIPLIERS = (48271, 69621, 16807)


def _hash(x):
    """A mix of int64 values in [1, P) into [1, P): per round, a multiplication modulo P, then an xorshift on the
    31-bit value as int32 (LiteRT's BITWISE_XOR and RIGHT_SHIFT have no int64 kernels: int64 ones are Flex ops)."""
    for multiplier in _MULTIPLIERS:
        y = tf.cast(tf.math.floormod(x * multiplier, _PRIME), tf.int32)
        x = tf.math.floormod(tf.cast(tf.bitwise.bitwise_xor(y, tf.bitwise.right_shift(y, 13)), tf.int64), _PRIME - 1) + 1
    return x


def uniform(shape, seed):
    """float32 ``shape`` in (0, 1), a function of ``seed`` (int32 ``[2]``) and each element's position only.

    A counter-based generator from builtin integer ops: ``hash(hash(position) + key(seed))``, 23 bits of it:
    ``(k + 0.5) / 2^23`` is exact in float32 (24 significant bits), so U is never 0 or 1 (2^-24 ≤ U ≤ 1 − 2^-24:
    Box–Muller's normals are cut at 5.8σ). Not Philox: another stream than the SavedModel's.
    """
    seed = tf.cast(seed, tf.int64)
    key = _hash(tf.math.floormod(seed[0], _PRIME - 1) + 1)
    key = _hash(tf.math.floormod(key + seed[1], _PRIME - 1) + 1)
    position = tf.cast(tf.range(tf.reduce_prod(shape)), tf.int64) + 1
    bits = tf.bitwise.right_shift(tf.cast(_hash(tf.math.floormod(_hash(position) + key, _PRIME - 1) + 1), tf.int32), 8)
    return tf.reshape((tf.cast(bits, tf.float32) + 0.5) * 2.0**-23, shape)


def shape_checked(function):
    """``function`` (a ``tf.function`` with an input signature) that fails unless every batched input has its
    spec's shape, ``[N, *spec.shape[1:]]``, with one ``N`` for all of them.

    The SavedModel checks shapes with ``tf.ensure_shape``, which the converter drops, and LiteRT resizes inputs
    freely: without this a ``[1, 8]`` observation of a 4-wide space runs as two rows, a ``[4]`` one as one row,
    and a recurrent state of another batch size broadcasts. LiteRT has no assert op, so the check is data: every
    output's rows are gathered at ``range(rows) + bad * (N + 1)``, out of bounds when any shape is wrong
    (``RuntimeError: gather index out of bounds``). The batched inputs' trailing sizes are left unknown in the
    file's signature (``shape_signature`` ``[-1, -1]``): with them known, the converter folds the comparison to
    true. (A check on the inputs' data does not survive conversion: the converter merges a reshape into the
    next one, folds a gather from one element to that element, and commutes casts, leaving a float64 gather.)
    """
    specs = list(function.input_signature)
    batched = [i for i, spec in enumerate(specs) if spec.shape.rank and spec.shape[0] is None]
    if not batched:
        return function
    open_specs = [tf.TensorSpec([None] * spec.shape.rank, spec.dtype, spec.name) if i in batched else spec
                  for i, spec in enumerate(specs)]

    def checked(*args):
        n = tf.shape(args[batched[0]])[0]
        same = []
        for i in batched:
            dims = [int(d) for d in specs[i].shape[1:]]
            same.append(tf.reduce_all(tf.equal(tf.shape(args[i]), tf.stack([n, *dims]))))
            # The element count too: the converter takes the input's rank as given, so a [4] vector (the runtime
            # resizes to another rank) would pass the comparison above by broadcasting against [4, 4].
            same.append(tf.equal(tf.size(args[i]), n * int(np.prod(dims, dtype=np.int64))))
        bad = tf.cast(tf.logical_not(tf.reduce_all(tf.stack(same))), tf.int32)
        args = [tf.reshape(arg, [-1, *specs[i].shape[1:]]) if i in batched else arg  # the SavedModel function's
                for i, arg in enumerate(args)]                                         # static shapes
        outputs = function(*args)
        return {name: tf.gather(value, tf.range(tf.shape(value)[0]) + bad * (n + 1)) for name, value in outputs.items()}

    return tf.function(checked, input_signature=open_specs, autograph=False)


def convert(model) -> bytes:
    """The ``.tflite`` flatbuffer of ``model``'s LiteRT signatures, builtin ops only.

    The SavedModel export's functions (the same inputs, outputs, normalization, masks and state) and
    :func:`sample_function`, saved without the SavedModel's ``sample`` and ``log_prob`` (never traced, so no
    TFP op is built), then converted with ``supported_ops = [TFLITE_BUILTINS]``: an op outside it fails here,
    in one line.
    """
    serving = export.ServingModule(model)
    names = signature_names(serving)
    lite = tf.Module(name="keras_trpo_litert_policy")
    lite.model_variables = serving.model_variables
    for name in names:
        function = sample_function(model, serving) if name == "sample" else getattr(serving, name)
        setattr(lite, name, shape_checked(function))
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
