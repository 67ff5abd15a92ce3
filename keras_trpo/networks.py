"""Networks for TRPO's policy and value: plain Keras models mapping observations to features ``[N, F]``.

A leaf module: it imports only :mod:`keras_trpo.recurrent` (another leaf) from keras_trpo.

``TRPO(policy_network=..., value_network=...)`` takes any Keras layer or model
(Sequential, Functional or subclassed) that maps a batch of observations to
features ``[N, F]``; the model appends the distribution head and the value head
``Dense(1)``. What a network receives is described in :mod:`keras_trpo.observations`
(float32, shaped like the space; a dict of tensors for a ``Dict`` space). The
builders here are ready-made ones, also usable by name (``policy_network="nature_cnn"``,
``keras-trpo train ... --set model.policy_network=nature_cnn``):

- :func:`mlp`: the default when no network is given (64×64 tanh in the default MLP);
- :func:`nature_cnn`: Mnih et al. 2015, "Human-level control through deep reinforcement learning";
- :func:`minigrid_cnn`: a small CNN for MiniGrid's 7×7×3 partial views;
- :class:`Combined`: one encoder per ``Dict`` entry, concatenated (sb3's ``CombinedExtractor``);
- :func:`recurrent`: an LSTM or GRU core after any of them (:mod:`keras_trpo.recurrent`).

Orthogonal initialization with a small policy output layer (sb3; Engstrom et
al. 2020, "Implementation Matters in Deep Policy Gradients"): initial actions are
near-uniform or near-zero mean, so the first KL steps are well scaled.

Example:

>>> hidden, output, _ = dense_stack((64, 64), "tanh", 2, output_gain=0.01, prefix="policy", seed=0)
>>> [layer.name for layer in (*hidden, output)]
['policy_hidden_0', 'policy_hidden_1', 'policy_output']
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import keras

from keras_trpo.recurrent import Recurrent, recurrent  # noqa: F401  public here: keras_trpo.networks.recurrent(...)

HIDDEN_GAIN = math.sqrt(2.0)

#: Seed distance between the CNNs that :func:`from_name` builds for the image entries of a ``Dict``
#: space: the ``i``-th (in key order) is seeded ``seed + ENCODER_SEED_STRIDE * i`` and seeds its own
#: kernels ``+ 0, + 1, ...`` (:func:`_hidden_kernels`; each builder has at most 4), so no two encoders'
#: kernels share a seed and draw the same initial weights. Changing it changes every seeded
#: initialization of such a network.
ENCODER_SEED_STRIDE = 10

#: A Keras activation: its name (``"tanh"``), a callable, or ``None`` (linear).
Activation = Union[str, Callable[..., Any], None]
#: The per-sample shape of one observation array.
Shape = Sequence[int]


def _orthogonal(gain: float, seed: int | None) -> keras.initializers.Initializer:
    return keras.initializers.Orthogonal(gain=gain, seed=seed)


def _hidden_kernels(seed: int | None) -> Callable[[int], keras.initializers.Initializer]:
    """``i -> Orthogonal(√2)`` seeded ``seed + i`` (unseeded for ``seed=None``)."""
    return lambda i: _orthogonal(HIDDEN_GAIN, None if seed is None else seed + i)


def dense_stack(
    units: Sequence[int], activation: Activation, output_units: int, *, output_gain: float, prefix: str,
    seed: int | None = None,
) -> tuple[list[keras.layers.Dense], keras.layers.Dense, int | None]:
    """Hidden ``Dense`` layers of widths ``units`` and an output ``Dense(output_units)``.

    Kernels are orthogonal with gain √2 (hidden) and ``output_gain`` (output);
    biases are zero. ``seed`` seeds the first kernel and each next kernel gets
    ``seed + 1``, ...; the next free seed is returned so that stacks built one
    after the other draw distinct kernels.

    Returns:
        ``(hidden_layers, output_layer, next_seed)``.
    """

    def dense(width: int, gain: float, act: Activation, name: str) -> keras.layers.Dense:
        nonlocal seed
        kernel = _orthogonal(gain, seed)
        if seed is not None:
            seed += 1
        return keras.layers.Dense(width, activation=act, kernel_initializer=kernel, name=name)

    hidden = [dense(u, HIDDEN_GAIN, activation, f"{prefix}_hidden_{i}") for i, u in enumerate(units)]
    output = dense(output_units, output_gain, None, f"{prefix}_output")
    return hidden, output, seed


def build_stack(layers: Sequence[keras.layers.Dense], input_width: int) -> None:
    """Builds ``Dense`` layers applied in order to inputs of ``input_width`` features."""
    for layer in layers:
        layer.build((None, input_width))
        input_width = layer.units


def mlp(
    units: Sequence[int] = (64, 64), activation: Activation = "tanh", *, seed: int | None = None, name: str = "mlp",
) -> keras.Sequential:
    """A ``keras.Sequential`` of ``Flatten`` and ``Dense`` layers (orthogonal, gain √2).

    Example:

    >>> net = mlp((32, 32), "relu", seed=0)
    >>> tuple(net(keras.ops.zeros((5, 4))).shape)
    (5, 32)
    """
    kernel = _hidden_kernels(seed)
    layers = [keras.layers.Flatten()]
    for i, width in enumerate(units):
        layers.append(keras.layers.Dense(int(width), activation=activation, kernel_initializer=kernel(i)))
    return keras.Sequential(layers, name=name)


def nature_cnn(
    features: int = 512, *, channels_first: bool = False, scale: float = 1.0 / 255.0, seed: int | None = None,
    name: str = "nature_cnn",
) -> keras.Sequential:
    """The DQN CNN of Mnih et al. 2015: 32×8×8/4, 64×4×4/2, 64×3×3/1 (ReLU), then ``Dense(features)``.

    Args:
        features: width of the last layer (512 in the paper).
        channels_first: observations are ``[N, C, H, W]`` (gymnasium's
            ``FrameStackObservation`` of grey frames gives ``[N, 4, 84, 84]``); a ``Permute``
            makes them channels-last, which TensorFlow's CPU convolutions need.
        scale: a ``Rescaling`` applied first (``uint8`` pixels become [0, 1]); the network owns
            the scaling, so batches stay ``uint8``.
        seed: seeds the orthogonal kernels (gain √2, as sb3's ``NatureCNN``).

    Example:

    >>> net = nature_cnn(seed=0)
    >>> tuple(net(keras.ops.zeros((2, 84, 84, 4))).shape)
    (2, 512)
    """
    kernel = _hidden_kernels(seed)
    layers = [keras.layers.Permute((2, 3, 1))] if channels_first else []
    layers += [
        keras.layers.Rescaling(scale),
        keras.layers.Conv2D(32, 8, strides=4, activation="relu", kernel_initializer=kernel(0)),
        keras.layers.Conv2D(64, 4, strides=2, activation="relu", kernel_initializer=kernel(1)),
        keras.layers.Conv2D(64, 3, strides=1, activation="relu", kernel_initializer=kernel(2)),
        keras.layers.Flatten(),
        keras.layers.Dense(features, activation="relu", kernel_initializer=kernel(3)),
    ]
    return keras.Sequential(layers, name=name)


def minigrid_cnn(features: int = 64, *, seed: int | None = None, name: str = "minigrid_cnn") -> keras.Sequential:
    """A small CNN for MiniGrid's 7×7×3 egocentric view (the one of Farama's rl-starter-files).

    Conv 16×2×2, max-pool 2×2, Conv 32×2×2, Conv 64×2×2 (ReLU), flattened (64 features for a
    7×7 view), then ``Dense(features, tanh)``. MiniGrid's cells hold small integer codes
    (object, colour, state), fed unscaled.

    Example:

    >>> net = minigrid_cnn(seed=0)
    >>> tuple(net(keras.ops.zeros((3, 7, 7, 3))).shape)
    (3, 64)
    """
    kernel = _hidden_kernels(seed)
    return keras.Sequential(
        [
            keras.layers.Conv2D(16, 2, activation="relu", kernel_initializer=kernel(0)),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 2, activation="relu", kernel_initializer=kernel(1)),
            keras.layers.Conv2D(64, 2, activation="relu", kernel_initializer=kernel(2)),
            keras.layers.Flatten(),
            keras.layers.Dense(features, activation="tanh", kernel_initializer=kernel(3)),
        ],
        name=name,
    )


@keras.saving.register_keras_serializable(package="keras_trpo")
class Combined(keras.layers.Layer):
    """Encodes each entry of a dict of observations and concatenates the features.

    Entries without an encoder are flattened. The counterpart of sb3's
    ``CombinedExtractor`` (``MultiInputPolicy``).

    Args:
        encoders: ``{key: Keras layer}`` for the entries that need one (an image: a CNN).

    Example:

    >>> net = Combined({"image": minigrid_cnn(seed=0)})
    >>> tuple(net({"image": keras.ops.zeros((2, 7, 7, 3)), "direction": keras.ops.zeros((2, 4))}).shape)
    (2, 68)
    """

    def __init__(self, encoders: Mapping[str, keras.layers.Layer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoders = dict(encoders)
        self.flatten = keras.layers.Flatten()

    def build(self, input_shape: Mapping[str, Shape]) -> None:
        for key, encoder in self.encoders.items():
            if not encoder.built:
                encoder.build(input_shape[key])
        self.built = True

    def call(self, inputs: Mapping[str, Any]) -> Any:
        parts = [self.encoders[key](inputs[key]) if key in self.encoders else self.flatten(inputs[key])
                 for key in sorted(inputs)]
        return keras.ops.concatenate(parts, axis=-1)

    def get_config(self) -> dict[str, Any]:
        encoders = {key: keras.saving.serialize_keras_object(layer) for key, layer in self.encoders.items()}
        return {**super().get_config(), "encoders": encoders}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Combined:
        config = dict(config)
        config["encoders"] = {k: keras.saving.deserialize_keras_object(v) for k, v in config["encoders"].items()}
        return cls(**config)


#: The builders usable by name.
BUILDERS: dict[str, Callable[..., keras.Sequential]] = {
    "mlp": mlp, "nature_cnn": nature_cnn, "minigrid_cnn": minigrid_cnn,
}


def from_name(
    name: str, input_shapes: Shape | dict[str, Shape], *, seed: int | None = None, prefix: str = "",
) -> keras.layers.Layer:
    """Builds the network called ``name`` for inputs of per-sample shapes ``input_shapes``.

    ``input_shapes`` is one shape, or ``{key: shape}`` for a ``Dict`` space: then the CNN
    encodes the image entries (rank 3) and the other entries are flattened (:class:`Combined`).
    ``nature_cnn`` takes channels-first frames when the first dimension is the smallest.
    The network is named ``prefix + name`` (``policy_nature_cnn``).

    Raises:
        ValueError: an unknown name, or a CNN for a space without an image.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown network {name!r}; networks by name: {sorted(BUILDERS)}, or pass a Keras layer.")
    builder = BUILDERS[name]
    if name == "mlp":
        if isinstance(input_shapes, dict):
            raise ValueError("network 'mlp' takes one array of observations; for a Dict space leave the network "
                             "out (the default MLP flattens and concatenates the entries).")
        return builder(seed=seed, name=prefix + name)

    def cnn(shape: Shape, offset: int = 0, full_name: str = prefix + name) -> keras.Sequential:
        sub_seed = None if seed is None else seed + offset
        if name == "nature_cnn":
            return builder(channels_first=shape[0] < shape[-1], seed=sub_seed, name=full_name)
        return builder(seed=sub_seed, name=full_name)

    if isinstance(input_shapes, dict):
        images = sorted(key for key, shape in input_shapes.items() if len(shape) == 3)
        if not images:
            raise ValueError(f"network {name!r} needs an image entry (a Box of rank 3); the observation entries "
                             f"have shapes {input_shapes}.")
        encoders = {key: cnn(input_shapes[key], ENCODER_SEED_STRIDE * i, f"{prefix}{key}_{name}")
                    for i, key in enumerate(images)}
        return Combined(encoders, name=f"{prefix}combined_{name}")
    if len(input_shapes) != 3:
        raise ValueError(f"network {name!r} needs image observations (a Box of rank 3); they have shape "
                         f"{tuple(input_shapes)}.")
    return cnn(input_shapes)


def serialize(network: keras.layers.Layer | str | None) -> dict[str, Any] | str | None:
    """A network as stored in ``TRPO.get_config``: its name, or ``keras.saving.serialize_keras_object``."""
    if network is None or isinstance(network, str):
        return network
    return keras.saving.serialize_keras_object(network)


def serialize_pair(
    policy: keras.layers.Layer | str | None, value: keras.layers.Layer | str | None,
) -> tuple[dict[str, Any] | str | None, dict[str, Any] | str | None]:
    """``(serialize(policy), serialize(value))``, such that a (frozen) layer in both stays one layer on load.

    Under ``model.save`` Keras serializes inside its object-sharing scope: an object met a second
    time gets a ``shared_object_id``, and ``load_model`` builds it once and reuses it. It cannot
    mark the first occurrence, whose config was already copied into the policy network's, so the
    shared layer would load as two copies, the second without weights ("expected 2 variables, but
    received 0"). Serializing the policy once more, after the value network, marks it there too.
    Outside ``save`` no ids are written. tests/test_error_messages.py round-trips such a model.
    """
    policy_config = serialize(policy)
    value_config = serialize(value)
    if isinstance(policy_config, dict) and isinstance(value_config, dict):
        policy_config = serialize(policy)
    return policy_config, value_config


def check_serializable(network: keras.layers.Layer | str | None, which: str = "network") -> None:
    """Raises ValueError unless ``network`` can be rebuilt from :func:`serialize` (``TRPO.save`` calls it).

    Rebuilds it once from a copy of its config (Keras empties a Functional config while
    deserializing it), without running ``Lambda`` code checks (``load_model(safe_mode=False)``
    is the user's choice at load time) and leaving Python's global RNG as it was (unseeded
    initializers draw a seed from it). The message names the class that cannot be rebuilt
    (a custom layer inside a Sequential, not the Sequential). ``which``: the argument's name.
    """
    if network is None or isinstance(network, str):
        return
    config = serialize(network)
    state = random.getstate()
    try:
        keras.saving.deserialize_keras_object(copy.deepcopy(config), safe_mode=False)
    except Exception as error:  # noqa: BLE001 - re-raised with the fix
        where = f"{which} {network.name!r} ({type(network).__name__}) cannot be saved"
        fix = ("decorate {} with @keras.saving.register_keras_serializable() and give it a get_config() returning "
               "its __init__ arguments.")
        missing = unregistered_classes(config)
        if missing:
            name = missing[0]["class_name"]
            kind = "its class" if missing[0] is config else "its layer class"
            raise ValueError(f"{where}: {kind} {name} is not registered for serialization, so load_model could "
                             f"not rebuild it; {fix.format(name)}") from error
        raise ValueError(f"{where}: it cannot be rebuilt from its config ({_innermost(error)}); "
                         f"{fix.format('each custom class')}") from error
    finally:
        random.setstate(state)


#: Packages whose classes Keras finds without registration (``serialization_lib._retrieve_class_or_fn``).
_KERAS_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp", "builtins"}


def unregistered_classes(config: Any) -> list[dict[str, Any]]:
    """The serialized objects in ``config`` whose class Keras cannot find in this process, outermost first.

    A class outside Keras is found only by its registered name
    (``@keras.saving.register_keras_serializable``), in the global registry or the
    ``custom_objects`` of the ``load_model`` call (``keras.saving.get_registered_object``
    reads both).
    """
    found = []

    def visit(node: Any) -> None:
        nodes: Iterable[Any]
        if isinstance(node, dict):
            module, name = node.get("module"), node.get("registered_name")
            # Keras writes module None for a class it does not know (unregistered, defined in __main__).
            custom = module.split(".")[0] not in _KERAS_PACKAGES if isinstance(module, str) else bool(name)
            if custom and isinstance(node.get("class_name"), str) and "config" in node \
                    and node["class_name"] != "function" \
                    and keras.saving.get_registered_object(name or node["class_name"]) is None:
                found.append(node)
            nodes = node.values()
        else:
            nodes = node if isinstance(node, (list, tuple)) else ()
        for child in nodes:
            visit(child)

    visit(config)
    return found


def deserialize(config: Any, which: str = "network") -> Any:
    """Inverse of :func:`serialize` (a name stays a name).

    Raises:
        ValueError: the config names a class that is not registered in this process (the module
            defining it was not imported), naming the class first. A ValueError, not Keras'
            TypeError: ``keras.models.load_model`` calls ``TRPO.from_config``, and Keras
            (``serialization_lib.deserialize_keras_object``) wraps a TypeError raised there in
            its own "could not be deserialized properly" text with the cause at the end of a long
            message, while any other exception reaches the caller as raised.
    """
    if not isinstance(config, dict):
        return config  # a name, a layer, None (or a wrong type, which TRPO reports)
    try:
        return keras.saving.deserialize_keras_object(config)
    except Exception as error:
        missing = unregistered_classes(config)
        if not missing:
            raise
        node = missing[0]  # the first one Keras looks up (it deserializes outer objects first)
        name, module = node["class_name"], node.get("module")
        if module in ("__main__", None):
            fix = (f"it was defined in the script that saved the model, not in a module: move {name} to a module "
                   "and import the module that registers it before loading (with the CLI: --import MODULE)")
        else:
            name = f"{name} (registered as {node.get('registered_name')!r} by module {module})"
            fix = (f"import the module that registers it before loading (import {module}; with the CLI: "
                   f"--import {module})")
        raise ValueError(f"{which}: class {name} is not registered in this process, so the model cannot be "
                         f"rebuilt; {fix}.") from error


def _innermost(error: BaseException) -> str:
    """The first line of the innermost cause in Keras' nested "could not be deserialized" messages."""
    text = str(error).rsplit("Exception encountered: ", 1)[-1].strip()
    return (text.splitlines()[0] if text else type(error).__name__).split(". ")[0].rstrip(".")
