"""Export a :class:`keras_trpo.TRPO` policy as a TensorFlow SavedModel for TF Serving.

``TRPO.export(path)`` (which calls :func:`export_saved_model`) writes a SavedModel
with five signatures. Every signature takes and returns a flat dict of named
tensors; ``N`` is the batch size and may vary from call to call.

| signature               | inputs                                   | outputs                            |
|-------------------------|------------------------------------------|------------------------------------|
| ``serving_default``     | ``observations`` ``[N, *obs]``           | ``actions`` ``[N, *action_shape]`` |
| ``sample``              | ``observations``, ``seed`` int32 ``[2]`` | ``actions``, ``log_probs`` ``[N]`` |
| ``value``               | ``observations``                         | ``values`` float32 ``[N]``         |
| ``log_prob``            | ``observations``, ``actions``            | ``log_probs`` float32 ``[N]``      |
| ``distribution_params`` | ``observations``                         | ``mean`` and ``log_std`` (Box) or  |
|                         |                                          | ``logits`` (other spaces)          |
| every signature, masked | + ``action_mask`` int8 ``[N, n]``        | (the same)                         |
| every one, recurrent    | + ``policy_h``, ... float32 ``[N, u]``,  | + the next ``policy_h``, ...       |
|                         |   ``episode_start`` int8 ``[N]``         |                                    |
| ``get_initial_state``   | ``batch_size`` int32 scalar (recurrent)  | zeros ``policy_h``, ... ``[B, u]`` |

- **State** (a recurrent model, :mod:`keras_trpo.recurrent`; TF-Agents' ``PolicySaver`` convention).
  Every signature takes the model's whole state (``policy_h``, ``policy_c``, ``value_h``, ``value_c``
  for LSTM towers; ``_h`` only for a GRU) and ``episode_start`` (1 where an episode starts at this
  observation: that row's state is zeroed first), and returns the next state under the same names.
  A client starts from ``get_initial_state`` (or zeros) and sends back what the last call returned.

- **Action masks.** A masked model (``model.action_mask``: ``TRPO(..., action_mask=True)``, or
  ``TRPO.for_env`` on an env with masks; :mod:`keras_trpo.masking`) takes one more input in *every*
  signature: ``action_mask`` int8 ``[N, n]``, 1 for a legal action, ``n = model.head.num_outputs``
  (``Discrete(n)``: ``n``; ``MultiDiscrete(nvec)``: ``sum(nvec)``, the components' masks concatenated).
  It is cast to bool inside, and the illegal logits become ``MASK_LOGIT`` (-1e9) as in training:
  ``serving_default`` is the most probable legal action, ``sample`` never draws an illegal one,
  ``log_prob`` of an illegal action is about -1e9 and ``distribution_params`` returns the masked
  logits. ``value`` takes the mask and ignores it, so a client sends one request body to every
  signature. A model that *observes* its ``action_mask`` entry (``observe_action_mask=True``) has that
  observation input only: the entry is the mask, used both ways. Unmasked models export as before,
  without the input.
- Observations keep the observation space's dtype: a float ``Box`` takes its own float
  dtype (float64 for ``Box(..., dtype=np.float64)``, so raw env observations feed as they
  are; cast inside to the model's float type, float32 unless ``keras.config.floatx()`` says otherwise), other spaces their integer dtype (``uint8`` images are sent
  as ``uint8``; ``Discrete`` as int64).
  For a ``Dict`` observation space there is one input per key instead of
  ``observations`` (``image`` uint8 ``[N, 7, 7, 3]``, ``direction`` int64 ``[N]``, ...).
- ``serving_default`` is the deterministic action (the mode of the policy): the
  argmax for ``Discrete`` / ``MultiDiscrete``, ``logits > 0`` for ``MultiBinary``,
  the mean for ``Box``.
- ``sample`` draws one action per row with ``tf.random.stateless_*``: the same
  ``seed`` and observations always give the same actions.
- ``Box`` actions are **clipped to the action space bounds** in ``serving_default``
  and ``sample``. The ``log_probs`` of ``sample`` are those of the *unclipped*
  sample (the quantity TRPO's surrogate uses); ``log_prob`` evaluates whatever
  actions it is given, unclipped.
- Action dtypes: float32 for ``Box``, int32 otherwise (``Discrete`` and
  ``MultiDiscrete`` actions include the space's ``start`` offset).
- Observation normalization (``normalize_observations=True``) runs inside the
  graph with the statistics saved in the model; clients send raw observations.

The SavedModel contains only core TensorFlow ops and variables: loading and calling
it needs ``tensorflow`` alone, neither ``keras_trpo`` nor ``tensorflow_probability``
(and ``tensorflow_model_server`` needs no Python at all).

**Versioned layout.** TF Serving watches ``<base>/<name>/`` and serves the
highest integer sub-directory. ``export(path)`` resolves ``path`` like this:

- the last path component is an integer (``saved_models/cartpole/3``): the model
  is written exactly there. An existing non-empty directory is refused
  (``FileExistsError``) unless ``overwrite=True``;
- otherwise ``path`` is the model's base directory (``saved_models/cartpole``),
  which may be missing, empty, or hold integer version directories (plain files
  such as a README are ignored): the model is written to ``path/<max + 1>``
  (``path/1`` for the first export). A base directory that is itself a SavedModel
  or holds non-integer sub-directories is refused (``ValueError``).

The version directory is written under a temporary name in the same parent and
renamed when complete, so a server polling the base directory never sees a
half-written version. The full version path is returned.
"""

from __future__ import annotations

import os
import shutil
import uuid

import gymnasium
import numpy as np
import tensorflow as tf

from keras_trpo import export_warmup
from keras_trpo.export_paths import resolve_version_dir
from keras_trpo.masking import MASK_KEY
from keras_trpo.recurrent import check_state_names
from keras_trpo.validation import float_dtype

SIGNATURE_NAMES = ("serving_default", "sample", "value", "log_prob", "distribution_params")
#: A recurrent model's signatures' input flagging the rows whose episode starts at this observation.
START_KEY = "episode_start"

def export_saved_model(model, filepath, *, overwrite=False, verbose=False, warmup=False, **kwargs) -> str:
    """Writes ``model`` as a TF Serving SavedModel and returns the version directory.

    Args:
        model: a built :class:`keras_trpo.TRPO`.
        filepath: a model base directory (the next integer version is created in
            it) or a version directory whose last component is an integer; see
            the module docstring for the exact rule.
        overwrite: replace an existing non-empty version directory.
        warmup: ``True`` or a gymnasium env: also write TF Serving's warmup requests,
            ``assets.extra/tf_serving_warmup_requests`` (:mod:`keras_trpo.export_warmup`; needs the
            ``serving`` extra). ``False`` (the default): no warmup file.

    Returns:
        The path of the written version directory (``<base>/<version>``).

    Raises:
        TypeError: ``model`` is not a TRPO model, ``filepath`` is not a path or ``warmup``
            is neither a bool nor a gymnasium env.
        ImportError: ``warmup`` is set and tensorflow-serving-api is not installed.
        ValueError: the model is not built, or ``filepath`` is not a usable base
            directory.
        FileExistsError: the version directory exists, is not empty and
            ``overwrite`` is False.
    """
    export_warmup.check_warmup(warmup)  # a missing `serving` extra fails here, before anything is written
    if kwargs:
        raise TypeError(f"TRPO.export() got unexpected arguments {sorted(kwargs)}; it takes overwrite=.")
    check_model(model)
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(
            f"filepath must be a str or os.PathLike directory path; got {type(filepath).__name__}."
        )
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool; got {overwrite!r}.")
    target = resolve_version_dir(filepath, overwrite=overwrite)
    module = ServingModule(model)
    signatures = module.signatures()
    # Built before anything is written (an env whose observations do not fit fails here).
    warmup_records = (None if warmup is False else
                      export_warmup.warmup_requests(model, signatures, warmup, start_key=START_KEY))
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    # A non-integer name: TF Serving ignores it while it is being written.
    staging = os.path.join(parent, f".tmp-export-{os.path.basename(target)}-{uuid.uuid4().hex}")
    try:
        tf.saved_model.save(module, staging, signatures=signatures)
        if warmup_records is not None:  # in the staging directory: no served version lacks its warmup file
            export_warmup.write_warmup_file(staging, warmup_records)
        if os.path.exists(target):
            if overwrite:
                shutil.rmtree(target)
            else:
                os.rmdir(target)  # empty (checked above); fails if a concurrent export filled it since
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if verbose:
        print(f"Saved the TRPO policy for TF Serving at {target}")
        if warmup_records is not None:
            print(f"with {len(warmup_records)} TF Serving warmup requests in "
                  f"{os.path.join(target, export_warmup.WARMUP_PATH)}")
    return target


def check_model(model):
    """Refuses, in one line, what is not a built :class:`keras_trpo.TRPO` (every export format checks it first)."""
    # Duck-typed, so that this module need not import keras_trpo.model (which imports it for TRPO.export).
    needed = ("head", "policy_outputs", "value", "observation_spec", "policy_layers", "policy_output",
              "value_layers", "value_output", "normalizer", "log_std", "action_space")
    if not all(hasattr(model, name) for name in needed):
        raise TypeError(f"model must be a keras_trpo.TRPO; got {type(model).__name__}.")
    layers = [*model.policy_layers, model.policy_output, *model.value_layers, model.value_output]
    if model.normalizer is not None:
        layers.append(model.normalizer)
    unbuilt = [layer.name for layer in layers if not layer.built]
    if not getattr(model, "built", False) or unbuilt:
        detail = f" (unbuilt layers: {unbuilt})" if unbuilt else ""
        raise ValueError(
            f"Cannot export model {model.name!r}: it is not built{detail}, so it has no weights to save. "
            f"Call it on a batch of observations ({model.observation_spec.describe()}), e.g. "
            "model(model.observation_spec.zeros(1)), then train or load weights before exporting. TRPO(...) "
            "and TRPO.for_env(...) build the model in their constructor; a subclass that overrides build() must call super().build()."
        )


class ServingModule(tf.Module):
    """The ``tf.Module`` that ``export`` saves: the model's variables and five tf.functions.

    The functions call the model's own forward pass (``policy_outputs``,
    ``head.params``, ``head.mode``, ``value``, the head's distribution for
    ``log_prob``), traced once per signature into plain TensorFlow graphs.
    Sampling uses ``tf.random.stateless_*`` on the distribution parameters.

    Every signature is built by :func:`_named_function` from a flat dict of named
    input specs: ``observations`` (one input, in the observation space's own dtype) or,
    for a ``Dict`` space, one input per key (``image`` uint8, ``direction`` int64, ...),
    plus ``seed`` or ``actions`` where the signature takes them.
    """

    def __init__(self, model):
        super().__init__(name="keras_trpo_policy")
        head, spec = model.head, model.observation_spec
        spec.check_signature_names()  # TRPO checks it when built; a model built otherwise is checked here
        observation_inputs = {s.name: s for s in tf.nest.flatten(spec.tensor_specs(space_dtypes=True))}
        mask, mask_inputs = _mask_input(model, observation_inputs)
        memory_inputs, step = _memory_inputs(model, observation_inputs)
        action_dtype = tf.float32 if not head.integer_actions else tf.int32
        action_spec = tf.TensorSpec([None, *head.action_shape], action_dtype, name="actions")
        seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
        clip = clip_actions(model.action_space, head.action_shape)
        # The model's weights as tf.Variables tracked by this module: the functions capture them.
        self.model_variables = [_tf_variable(v) for v in model.weights]
        act_shape = [None, *head.action_shape]

        # Signature calls (TF Serving, ``loaded.signatures[...]``) do not check shapes against
        # the TensorSpecs: without these checks a wrong observation width would fail deep in
        # the graph, or be silently reshaped. ensure_shape fails with a clear message instead.
        def observations(inputs):
            checked = [tf.ensure_shape(inputs[s.name], s.shape, name=f"check_{s.name}_shape")
                       for s in observation_inputs.values()]
            return spec.structure(checked)

        def forward(inputs):
            """``(distribution params, values or None, next state)``; the state is ``{}`` without memory."""
            if step is None:
                return head.params(model.policy_outputs(observations(inputs)), model.log_std, mask(inputs)), None, {}
            return step(observations(inputs), inputs, mask(inputs))

        def serving_default(inputs):
            p, _, state = forward(inputs)
            return {"actions": clip(head.mode(p)), **state}

        def sample(inputs):
            p, _, state = forward(inputs)
            actions = head.stateless_sample(p, inputs["seed"])
            log_probs = head.distribution(p).log_prob(head.cast_actions(actions))
            return {"actions": clip(actions), "log_probs": log_probs, **state}

        def value(inputs):  # a masked model's value takes the mask too (one request body for every signature), unused
            _, values, state = forward(inputs) if step is not None else (None, model.value(observations(inputs)), {})
            return {"values": values, **state}

        def log_prob(inputs):
            p, _, state = forward(inputs)
            actions = head.cast_actions(tf.ensure_shape(inputs["actions"], act_shape, name="check_actions_shape"))
            return {"log_probs": head.distribution(p).log_prob(actions), **state}

        def distribution_params(inputs):
            p, _, state = forward(inputs)
            return {**p, **state}

        inputs = {**observation_inputs, **mask_inputs, **memory_inputs}
        self.serving_default = _named_function(serving_default, inputs)
        self.sample = _named_function(sample, {**inputs, "seed": seed_spec})
        self.value = _named_function(value, inputs)
        self.log_prob = _named_function(log_prob, {**inputs, "actions": action_spec})
        self.distribution_params = _named_function(distribution_params, inputs)
        self.names = SIGNATURE_NAMES if step is None else (*SIGNATURE_NAMES, "get_initial_state")
        if step is not None:  # TF-Agents' PolicySaver convention: the client's first state
            self.get_initial_state = _initial_state_function(model)

    def signatures(self) -> dict:
        return {name: getattr(self, name).get_concrete_function() for name in self.names}


def clip_actions(space, action_shape):
    """``actions -> actions`` clipped to a ``Box`` action space's bounds, as float32 (identity for other spaces)."""
    if not isinstance(space, gymnasium.spaces.Box):
        return lambda a: a
    low = np.broadcast_to(space.low, action_shape).astype(np.float32)
    high = np.broadcast_to(space.high, action_shape).astype(np.float32)
    # Served Box actions are float32 (the actions TensorSpec), also from a float64 model.
    return lambda a: tf.clip_by_value(tf.cast(a, tf.float32), tf.constant(low), tf.constant(high))


def _mask_input(model, observation_inputs: dict):
    """``(inputs -> bool mask [N, n] or None, the signatures' extra input specs)`` for ``model``.

    An unmasked model: no mask, no input. A masked one: an ``action_mask`` int8 ``[N, n]`` input (``n`` the
    head's outputs), or, when the model observes its ``action_mask`` entry, that observation input, used both ways.
    """
    if not getattr(model, "action_mask", False):
        return (lambda inputs: None), {}
    size = model.head.num_outputs
    clash = sorted(name for name in observation_inputs if name.lower() == MASK_KEY and name != MASK_KEY)
    if clash:
        raise ValueError(f"observation keys {clash} clash, ignoring case (TensorFlow lowercases signature input names), "
                         f"with the input {MASK_KEY!r} of a masked model's signatures; rename them with a "
                         "gymnasium.ObservationWrapper before building the model.")
    extra = {} if MASK_KEY in observation_inputs else {MASK_KEY: tf.TensorSpec([None, size], tf.int8, name=MASK_KEY)}

    def mask(inputs):
        checked = tf.ensure_shape(inputs[MASK_KEY], [None, size], name=f"check_{MASK_KEY}_shape")
        return tf.cast(checked, tf.bool)

    return mask, extra


def _memory_inputs(model, observation_inputs: dict):
    """``(a recurrent model's state and episode_start input specs, step)``; ``({}, None)`` without memory.

    ``step(observations, inputs, action_mask)`` is the model's one step from the state inputs
    (``policy_h``, ... float32 ``[N, units]``), zeroed where ``episode_start`` (int8 ``[N]``) is 1:
    ``(distribution params, values, next state)``.
    """
    if not getattr(model, "is_recurrent", False):
        return {}, None
    sizes = model.state_sizes()
    check_state_names(observation_inputs, sizes, START_KEY)
    # The model's float type (float32 unless keras.config.floatx() says otherwise): the state it returns.
    specs = {name: tf.TensorSpec([None, units], float_dtype(), name=name) for name, units in sizes.items()}
    specs[START_KEY] = tf.TensorSpec([None], tf.int8, name=START_KEY)

    def step(observations, inputs, action_mask):
        state = {name: tf.ensure_shape(inputs[name], [None, units], name=f"check_{name}_shape")
                 for name, units in sizes.items()}
        starts = tf.ensure_shape(inputs[START_KEY], [None], name=f"check_{START_KEY}_shape")
        return model.step(observations, state, tf.cast(starts, tf.bool), action_mask)

    return specs, step


def _initial_state_function(model):
    """``get_initial_state``: ``batch_size`` (int32 scalar) -> zeros ``{"policy_h": [B, units], ...}``."""
    return _named_function(lambda i: model.initial_state(i["batch_size"]),
                           {"batch_size": tf.TensorSpec([], tf.int32, "batch_size")})


def _named_function(fn, specs: dict):
    """A ``tf.function`` of positional inputs named by ``specs`` (in order) that calls ``fn({name: tensor})``.

    The SignatureDef inputs take the spec names (what TF Serving's REST ``inputs`` and
    gRPC ``PredictRequest.inputs`` use); the saved function also takes them positionally.
    """
    names = list(specs)
    return tf.function(lambda *args: fn(dict(zip(names, args))), input_signature=list(specs.values()),
                       autograph=False)


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras 3 variable (its ``value``), so that the module tracks it."""
    return variable if isinstance(variable, tf.Variable) else variable.value

