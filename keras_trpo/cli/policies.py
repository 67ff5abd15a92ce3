"""The trained policy that ``keras-trpo evaluate``, ``export`` and ``info`` take: finding, loading and
checking it against an environment.

:func:`resolve_model` finds the model in a SavedModel (directory or base directory), a .keras file or a
run directory; :func:`load_keras` and :func:`load_serving` load it. A SavedModel is evaluated through
:class:`ServingPolicy`: its ``serving_default`` signature takes one input per observation array
(``observations``, or one per ``Dict`` key) in the observation space's dtype. Mismatches with the
environment are one-line :class:`~keras_trpo.cli.common.CLIError` messages. TensorFlow and gymnasium
are imported by the functions that need them.
"""

from __future__ import annotations

import os
import re

from keras_trpo.cli.common import KERAS_FILE, SAVED_MODEL_DIR, CLIError
from keras_trpo.cli.imports import USAGE


# ----------------------------------------------------------------------
# Finding and loading the model
# ----------------------------------------------------------------------
def resolve_model(path: str, prefer: str = "saved_model") -> tuple[str, str]:
    """``("saved_model" | "keras", resolved path)`` for a SavedModel, .keras file or run directory.

    A run directory resolves to its newest SavedModel, or with ``prefer="keras"`` to its model.keras.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CLIError(f"no such file or directory: {path!r}")
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return "keras", path
        if path.endswith((".tflite", ".onnx")):  # an export of keras-trpo export --format litert/onnx
            raise CLIError(f"{path!r} is a {os.path.splitext(path)[1]} export, which keras-trpo does not load: run it "
                           "with its runtime (docs/serving.md), or pass the run directory, .keras file or SavedModel")
        raise CLIError(f"{path!r} is neither a .keras file nor a SavedModel directory")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "saved_model", path
    versions = [
        int(name)
        for name in os.listdir(path)
        if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
    ]
    if versions:
        return "saved_model", os.path.join(path, str(max(versions)))
    if prefer == "keras" and os.path.isfile(os.path.join(path, KERAS_FILE)):
        return "keras", os.path.join(path, KERAS_FILE)
    if os.path.isdir(os.path.join(path, SAVED_MODEL_DIR)):
        return resolve_model(os.path.join(path, SAVED_MODEL_DIR))
    if os.path.isfile(os.path.join(path, KERAS_FILE)):
        return "keras", os.path.join(path, KERAS_FILE)
    raise CLIError(
        f"{path!r} is not a SavedModel directory (no saved_model.pb, no integer version sub-directory), "
        "a .keras file or a run directory"
    )


def load_keras(path: str):
    """The TRPO model saved in the .keras file ``path`` (uncompiled)."""
    import keras

    from keras_trpo.model import TRPO  # noqa: F401 - registers TRPO for deserialization

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001
        message = str(error)
        missing = re.search(r"Could not locate class '([^']+)'", message)
        if missing and "--import" not in message:  # first: the message is cut at 600 characters
            raise CLIError(f"cannot load {path!r}: Keras cannot find the class {missing.group(1)!r}; if it is yours, "
                           f"import the module that registers it with {USAGE}. Keras said: {message}") from None
        raise CLIError(f"cannot load {path!r} as a keras_trpo model: {message}") from None


def load_saved_model(path: str):
    """``tf.saved_model.load(path)``, failing with a one-line CLIError."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001
        raise CLIError(f"cannot load the SavedModel {path!r}: {error}") from None
    return loaded


def signature_specs(function):
    """``(inputs, outputs)`` of a SavedModel signature: dicts of ``tf.TensorSpec`` by name."""
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    return inputs, outputs


def spec_text(spec) -> str:
    """A ``tf.TensorSpec`` as ``float32 [N, 4]`` (N: the batch dimension)."""
    shape = "[" + ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d))
                            for i, d in enumerate(spec.shape.as_list())) + "]"
    return f"{spec.dtype.name} {shape}"


def load_serving(path: str, sampling: bool = False):
    """``(loaded SavedModel, its serving_default, the signature's inputs, its outputs)`` for the SavedModel at
    ``path``, checked to map observations to actions (as ``TRPO.export`` writes it), and with ``sampling``
    to have a ``sample`` signature (``keras-trpo evaluate --stochastic``).

    Keep the loaded SavedModel referenced while calling the signature: it owns the variables.
    """
    loaded = load_saved_model(path)
    if "serving_default" not in loaded.signatures:
        raise CLIError(f"the SavedModel {path!r} has no serving_default signature")
    if sampling and "sample" not in loaded.signatures:
        raise CLIError(f"the SavedModel {path!r} has no sample signature, so --stochastic cannot sample from it; "
                       "evaluate its .keras file instead")
    serving = loaded.signatures["serving_default"]
    inputs, outputs = signature_specs(serving)
    if "actions" not in outputs or not inputs or any(k in inputs for k in ("seed", "actions")):
        raise CLIError(
            f"the serving_default signature of {path!r} takes {sorted(inputs)} and returns {sorted(outputs)}; "
            "expected observations -> actions (a SavedModel written by TRPO.export)"
        )
    return loaded, serving, inputs, outputs


# ----------------------------------------------------------------------
# Checking the policy against the environment
# ----------------------------------------------------------------------
def check_keras_policy(policy, env_space, env_actions, env_id) -> None:
    """Raises :class:`CLIError` unless the TRPO model ``policy`` takes the env's observations and actions (an
    ``action_mask`` entry its networks do not see is the masks' source, not an observation)."""
    from keras_trpo.masking import network_space

    env_space = network_space(env_space, policy.observation_spec.keys)
    if env_actions != policy.action_space:
        raise CLIError(
            f"the policy acts in {policy.action_space} but {env_id} has actions {env_actions}; "
            "evaluate it on the environment it was trained on"
        )
    if not policy.observation_spec.matches(env_space):
        spec = policy.observation_spec
        shape = None if spec.structured else list(spec.leaves[0].shape)
        raise CLIError(observation_mismatch(spec.describe(), shape, env_space, env_id))


class ServingPolicy:
    """The ``serving_default`` signature of a SavedModel, called the way :func:`keras_trpo.evaluate` calls
    a TRPO model: it has the ``observation_spec`` and spaces of the environment (checked against the
    signature here, once) and feeds each observation array to its input, cast to the input's dtype.

    A masked SavedModel (its signatures take ``action_mask``) has ``action_mask = True``: it is called with the masks
    :func:`keras_trpo.evaluate` reads from the env, fed as that input (an env's ``action_mask`` entry is fed there
    too, with the same values).

    A recurrent SavedModel (it has ``get_initial_state``: ``initial``) has ``is_recurrent = True``: called with
    ``state`` and ``episode_starts`` (as :func:`keras_trpo.evaluate` carries them), it returns the actions and
    the next state."""

    def __init__(self, serving, inputs, actions, env_space, env_actions, env_id, sampler=None, initial=None):
        from keras_trpo.export import START_KEY
        from keras_trpo.masking import MASK_KEY, network_space
        from keras_trpo.observations import ObservationSpec

        self.initial, self.is_recurrent = initial, initial is not None
        self.state_names = sorted(initial.structured_outputs) if initial is not None else []
        inputs = {key: value for key, value in inputs.items() if key not in {START_KEY, *self.state_names}}

        try:  # an action_mask entry that the policy takes no input for is not its observation (an unmasked policy)
            spec = ObservationSpec(network_space(env_space, tuple(inputs)))
        except TypeError as error:
            raise CLIError(f"{env_id} has observations that a keras_trpo policy cannot take: {error}") from None
        names = list(spec.keys) if spec.structured else ["observations"]
        self.action_mask = MASK_KEY in inputs  # keras_trpo.evaluate passes the masks it reads
        self.mask_dtype = inputs[MASK_KEY].dtype if self.action_mask else None
        inputs = {key: value for key, value in inputs.items() if key != MASK_KEY or key in names}
        taken = _describe_inputs(inputs)
        shape = inputs["observations"].shape.as_list()[1:] if list(inputs) == ["observations"] else None
        if sorted(inputs) != sorted(names):
            raise CLIError(observation_mismatch(taken, shape, env_space, env_id))
        for name, leaf in zip(names, spec.leaves):
            wanted = inputs[name]
            integer_input = wanted.dtype.is_integer or wanted.dtype.is_bool
            if wanted.shape.as_list()[1:] != list(leaf.shape) or (integer_input and leaf.is_float):
                raise CLIError(observation_mismatch(taken, shape, env_space, env_id))
        if not _actions_match(actions, env_actions):
            raise CLIError(f"the policy returns actions {spec_text(actions)} but {env_id} has actions {env_actions}; "
                           "evaluate it on the environment it was trained on")
        self.serving, self.inputs, self.names = serving, inputs, names
        self.sampler = sampler  # the SavedModel's ``sample`` signature (same observation inputs, and a seed)
        self.observation_spec, self.observation_space, self.action_space = spec, env_space, env_actions

    def __call__(self, observations, action_mask=None, state=None, episode_starts=None):
        return self._actions(self.serving, self._feed(observations, action_mask), state, episode_starts)

    def initial_state(self, batch_size):
        """A recurrent SavedModel's zero state for ``batch_size`` rows (its ``get_initial_state`` signature)."""
        import tensorflow as tf

        return self.initial(batch_size=tf.constant(batch_size, tf.int32))

    def sample(self, observations, seed, action_mask=None, state=None, episode_starts=None):
        """Sampled actions through the SavedModel's ``sample`` signature (``keras-trpo evaluate --stochastic``;
        ``load_serving(path, sampling=True)`` refused a SavedModel without one); with the next state if recurrent."""
        import tensorflow as tf

        feed = {**self._feed(observations, action_mask), "seed": tf.constant(seed, tf.int32)}
        return self._actions(self.sampler, feed, state, episode_starts)

    def _actions(self, signature, feed, state, episode_starts):
        """``signature``'s actions for ``feed``; a recurrent SavedModel's also take the state and the episode-start
        flags, and come with the next state."""
        if not self.is_recurrent:
            return signature(**feed)["actions"]
        import tensorflow as tf

        from keras_trpo.export import START_KEY

        out = signature(**feed, **state, **{START_KEY: tf.cast(episode_starts, tf.int8)})
        return out["actions"], {name: out[name] for name in self.state_names}

    def _feed(self, observations, action_mask=None):
        """Each observation array by its signature input name, cast to the input's dtype; the masks as ``action_mask``."""
        import tensorflow as tf

        from keras_trpo.masking import MASK_KEY

        arrays = self.observation_spec.flatten(observations)
        feed = {name: tf.cast(x, self.inputs[name].dtype) for name, x in zip(self.names, arrays)}
        if action_mask is not None:
            feed[MASK_KEY] = tf.cast(action_mask, self.mask_dtype)
        return feed


def _describe_inputs(inputs) -> str:
    """A signature's observation inputs as ObservationSpec.describe() writes a space: ``[N, 4] float32``
    or ``{'direction': [N] int64, 'image': [N, 7, 7, 3] uint8}``."""

    def one(spec):
        return "[" + ", ".join(["N"] + ["?" if d is None else str(d) for d in spec.shape.as_list()[1:]]) + \
            f"] {spec.dtype.name}"

    if list(inputs) == ["observations"]:
        return one(inputs["observations"])
    return "{" + ", ".join(f"{key!r}: {one(inputs[key])}" for key in sorted(inputs)) + "}"


def observation_mismatch(taken: str, taken_shape, env_space, env_id) -> str:
    """One line: what the policy takes (``taken``; ``taken_shape`` when it is one array), what the env gives."""
    from keras_trpo.observations import ObservationSpec

    hint = "evaluate it on the environment it was trained on (with the wrappers of its preset: --preset)"
    try:
        spec = ObservationSpec(env_space)
    except TypeError:
        return f"the policy takes observations {taken} but {env_id} has {env_space}; {hint}"
    if taken_shape is not None and not spec.structured and list(taken_shape) != list(spec.leaves[0].shape):
        return (f"the policy takes observations of shape {list(taken_shape)} but {env_id} has "
                f"{list(spec.leaves[0].shape)}; {hint}")
    return f"the policy takes observations {taken} but {env_id} has {spec.describe()}; {hint}"


def _actions_match(spec, space) -> bool:
    """Whether a signature's ``actions`` output (float32 for Box, int32 otherwise) fits the action space."""
    import gymnasium

    shape = spec.shape.as_list()[1:]
    if isinstance(space, gymnasium.spaces.Box):
        return spec.dtype.is_floating and shape == list(space.shape)
    if isinstance(space, gymnasium.spaces.Discrete):
        return spec.dtype.is_integer and shape == []
    if isinstance(space, (gymnasium.spaces.MultiDiscrete, gymnasium.spaces.MultiBinary)):
        return spec.dtype.is_integer and shape == list(space.shape)
    return True  # keras_trpo.evaluate reports what it cannot run
