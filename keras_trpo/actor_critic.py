"""The policy and value networks of a TRPO model: the default MLPs, or any Keras network with TRPO's heads.

``TRPO`` keeps each network as a list of layers applied in order (``policy_layers``,
``value_layers``) followed by an output ``Dense`` (``policy_output``: the distribution
head's raw outputs; ``value_output``: ``Dense(1)``):

- default (no network given): ``Dense`` hidden layers on the flattened observations
  (:meth:`keras_trpo.observations.ObservationSpec.flat_features`), exactly as before
  custom networks existed;
- a network given (a Keras layer or model, or a name from :data:`keras_trpo.networks.BUILDERS`):
  the list holds that network, which receives the observations shaped like the space
  (:meth:`~keras_trpo.observations.ObservationSpec.network_inputs`) and must return ``[N, F]``.

The output layers keep the default initialization (orthogonal, gain 0.01 for the
policy, 1 for the value). Policy and value must not share trainable weights: the
critic's optimizer would move shared weights, and with them the policy, outside the
trust region (Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
section 5, on parameter sharing). Frozen ones (``layer.trainable = False``, e.g. a
pretrained encoder) may be shared: neither the optimizer nor the trust-region step
moves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterator, Sequence, Union

import keras
import numpy as np

from keras_trpo import networks, recurrent as memory
from keras_trpo.normalization import RunningNormalization

if TYPE_CHECKING:
    from keras_trpo.observations import ObservationSpec

#: Default widths when no network is given.
DEFAULT_UNITS = (64, 64)

#: Added to ``seed`` for a network given by name (``policy_network="nature_cnn"``): the output heads
#: take the seeds ``seed, seed + 1`` (:func:`keras_trpo.networks.dense_stack`), and the named
#: network's kernels start this far above them, so no kernel of the network reuses a head's seed.
#: Changing it changes every seeded initialization of a named network.
NAMED_NETWORK_SEED_OFFSET = 1000

#: What ``TRPO(policy_network=...)`` takes: a Keras layer or model, a name from
#: :data:`keras_trpo.networks.BUILDERS`, or ``None`` for the default MLP.
Network = Union[keras.layers.Layer, str, None]
#: One tower: the layers applied in order, then its output ``Dense``.
Tower = tuple[list[keras.layers.Layer], keras.layers.Dense]


#: ``TRPO(recurrent=True)`` without a network: an MLP of these widths (or ``hidden_units``), then an LSTM this wide.
DEFAULT_RECURRENT_FEATURES = (64,)
MEMORY_UNITS = 64


def make(
    spec: ObservationSpec, num_outputs: int, *, policy_network: Network, value_network: Network,
    hidden_units: Sequence[int] | None, value_hidden_units: Sequence[int] | None, activation: networks.Activation,
    seed: int | None, recurrent: bool | None = None,
) -> tuple[list[keras.layers.Layer], keras.layers.Dense, list[keras.layers.Layer], keras.layers.Dense]:
    """The four parts ``(policy_layers, policy_output, value_layers, value_output)``, unbuilt.

    ``recurrent``: ``None`` keeps each network as given (a recurrent one becomes a
    :class:`keras_trpo.recurrent.Recurrent`); ``True`` also puts an LSTM after a network without one
    (after an MLP of ``hidden_units`` widths when none is given); ``False`` refuses recurrent networks.

    Raises:
        ValueError: a network given together with its ``hidden_units``; the same network for both.
        TypeError: a network that is neither a Keras layer nor a known name.
    """
    for network, units, which in ((policy_network, hidden_units, "policy"), (value_network, value_hidden_units, "value")):
        if network is not None and units is not None:
            units_name = "hidden_units" if which == "policy" else "value_hidden_units"
            raise ValueError(f"pass either {which}_network or {units_name}, not both: {units_name} sets the widths "
                             f"of the default MLP, which {which}_network replaces.")
        if network is not None and not isinstance(network, (str, keras.layers.Layer)):
            raise TypeError(_not_a_network(network, f"{which}_network"))
    if policy_network is not None and policy_network is value_network and not isinstance(policy_network, str):
        raise ValueError("policy_network and value_network are the same object; pass two networks (they may share "
                         "frozen layers, layer.trainable = False, but no trainable weights: " + _WHY_NOT_SHARED + ").")
    parts = []
    for network, units, prefix, outputs, gain in (
        (policy_network, hidden_units, "policy", num_outputs, 0.01),
        (value_network, value_hidden_units, "value", 1, 1.0),
    ):
        if network is None and not recurrent:
            units = DEFAULT_UNITS if units is None else units
            hidden, output, seed = networks.dense_stack(units, activation, outputs, output_gain=gain, prefix=prefix,
                                                        seed=seed)
        else:
            named_seed = None if seed is None else seed + NAMED_NETWORK_SEED_OFFSET
            if network is None:
                network = networks.mlp(DEFAULT_RECURRENT_FEATURES if units is None else units, activation,
                                       seed=named_seed, name=f"{prefix}_mlp")
            elif isinstance(network, str):
                network = networks.from_name(network, _input_shapes(spec), seed=named_seed, prefix=f"{prefix}_")
            network = with_memory(network, recurrent, f"{prefix}_network", named_seed, prefix)
            _, output, seed = networks.dense_stack((), activation, outputs, output_gain=gain, prefix=prefix, seed=seed)
            hidden = [network]
        parts += [hidden, output]
    return tuple(parts)


def with_memory(network: keras.layers.Layer, recurrent: bool | None, which: str, seed: int | None,
                prefix: str) -> keras.layers.Layer:
    """``network`` as a :class:`~keras_trpo.recurrent.Recurrent` if it has (or, ``recurrent=True``, gets) memory."""
    if memory.is_recurrent(network):
        if recurrent is False:
            raise ValueError(f"{which} has recurrent layers but recurrent=False; pass recurrent=None (detect) or True, "
                             "or a network without LSTM/GRU layers.")
        return memory.as_recurrent(network, which)
    if recurrent:
        recurrent_seed = None if seed is None else seed + 2 * NAMED_NETWORK_SEED_OFFSET
        return memory.recurrent(network, MEMORY_UNITS, seed=recurrent_seed, name=f"{prefix}_recurrent")
    return network


def recurrent_towers(policy_layers: Sequence[keras.layers.Layer], value_layers: Sequence[keras.layers.Layer]
                     ) -> tuple[bool, bool]:
    """``(policy, value)``: whether each tower is recurrent."""
    return (isinstance(policy_layers[0], memory.Recurrent) if policy_layers else False,
            isinstance(value_layers[0], memory.Recurrent) if value_layers else False)


def build(spec: ObservationSpec, policy_network: bool, value_network: bool, policy: Tower, value: Tower) -> None:
    """Builds both towers: ``policy``/``value`` are ``(layers, output)``; the flags say which is custom.

    A custom network is called once on a zero batch (which builds any Keras layer,
    subclassed ones included) and must return features ``[N, F]``.

    Raises:
        ValueError: a network's output is not ``[N, F]``, or the networks share weights.
    """
    for custom, (layers, output), which in ((policy_network, policy, "policy"), (value_network, value, "value")):
        default_recurrent = not custom and bool(layers) and isinstance(layers[0], memory.Recurrent)  # no network given
        if not custom and not default_recurrent:
            networks.build_stack([*layers, output], spec.flat_size)
            continue
        zeros = spec.flat_features(spec.zeros(2)) if default_recurrent else spec.network_inputs(spec.zeros(2))
        try:
            features = layers[0](zeros)
        except Exception as error:  # noqa: BLE001 - Keras' multi-line report, in one line naming the argument
            first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise ValueError(
                f"{which}_network failed on a batch of observations {spec.describe()} (as float32; Discrete "
                f"entries one-hot, see keras_trpo.observations): {type(error).__name__}: {first.strip()}"
            ) from error
        output.build((None, _feature_width(features, spec, f"{which}_network")))
        if which == "policy":
            _check_full_precision(features, layers[0])
    if policy_network or value_network:
        check_not_shared(policy[0], value[0])


def _feature_width(features: Any, spec: ObservationSpec, which: str) -> int:
    """``F`` of a network's output ``[N, F]`` (N = 2); ValueError if it is not one such tensor."""
    given = f"given observations {spec.describe()} (N = 2) it returned"
    if isinstance(features, dict):
        raise ValueError(f"{which} must return one tensor [N, F]; {given} a dict with keys {sorted(features)}. "
                         "Return one tensor (e.g. keras.layers.Concatenate() of the features).")
    if isinstance(features, (tuple, list)):
        raise ValueError(f"{which} must return one tensor [N, F]; {given} a {type(features).__name__} of "
                         f"{len(features)}. Return one tensor (e.g. keras.layers.Concatenate() of the features).")
    if not keras.ops.is_tensor(features):
        raise ValueError(f"{which} must return one tensor [N, F]; {given} a {type(features).__name__}.")
    shape = tuple(features.shape)
    if len(shape) != 2 or shape[0] != 2 or not shape[1]:
        raise ValueError(f"{which} must map a batch of observations to features [N, F]; {given} shape "
                         f"{list(shape)}. End it with a Flatten or a global pooling layer.")
    return int(shape[1])


def _check_full_precision(features: Any, network: keras.layers.Layer) -> None:
    """ValueError if the policy network has float16 weights or output (the critic may: only Adam sees it)."""
    floatx, output_dtype = keras.config.floatx(), keras.backend.standardize_dtype(features.dtype)
    odd = [(w.path, w.dtype) for w in network.trainable_weights if "float" in str(w.dtype) and w.dtype != floatx]
    # A mixed-precision layer keeps float32 weights but computes in float16: its dtype policy says so.
    lower = [layer.name for layer in _nested_layers(network)
             if "float" in str(getattr(layer, "compute_dtype", floatx)) and layer.compute_dtype != floatx]
    if odd or lower or output_dtype != floatx:
        what = (f"weight {odd[0][0]!r} is {odd[0][1]}" if odd else f"layer {lower[0]!r} computes in float16"
                if lower else f"output is {output_dtype}")
        raise ValueError(f"policy_network computes in lower precision: its {what}; TRPO's KL, Fisher-vector "
                         f"products and line search need {floatx} throughout. Build it with dtype={floatx!r} (no "
                         "float16 or mixed-precision layers).")


def _nested_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """``layer`` and, recursively, the ``layers`` of the models inside it (Sequential, Functional, subclassed)."""
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _nested_layers(inner)


_WHY_NOT_SHARED = ("the critic's optimizer would move shared trainable weights, and so the policy, outside TRPO's "
                   "trust region (the parameter-sharing caveat of the PPO paper)")


def check_not_shared(policy_layers: Sequence[keras.layers.Layer], value_layers: Sequence[keras.layers.Layer]) -> None:
    """Raises ValueError naming the first trainable variable found in both networks (by identity).

    Frozen variables may be shared: neither the critic's optimizer (``TRPO.value_variables``) nor
    the trust-region step (``TRPO.policy_variables``) sees them.
    """
    trainable = {id(_backing(v)) for layer in (*policy_layers, *value_layers) for v in layer.trainable_weights}
    policy = {id(_backing(v)) for layer in policy_layers for v in layer.weights}
    for variable in (v for layer in value_layers for v in layer.weights):
        if id(_backing(variable)) in policy and id(_backing(variable)) in trainable:
            raise ValueError(_shared_message(variable))


def check_variables_not_shared(policy_variables: Sequence[Any], value_variables: Sequence[Any]) -> None:
    """The same check on the trainable variables themselves (``TRPO.compile``: a layer unfrozen since)."""
    policy = {id(_backing(v)) for v in policy_variables}
    for variable in value_variables:
        if id(_backing(variable)) in policy:
            raise ValueError(_shared_message(variable))


def _shared_message(variable: Any) -> str:
    return (f"the policy and value networks must not share trainable weights, and both hold {variable.path!r}: "
            f"{_WHY_NOT_SHARED}. Build two networks, or freeze the shared layer (layer.trainable = False) if its "
            "weights are pretrained and fixed.")


def _not_a_network(network: object, which: str) -> str:
    """Why ``network`` (not a str nor a Keras 3 layer) is refused, and what to pass instead."""
    expected = f"{which} must be a Keras layer or model, or one of the names {sorted(networks.BUILDERS)}"
    cls = network if isinstance(network, type) else type(network)
    keras2 = next((c for c in cls.__mro__ if c.__module__.split(".")[0] == "tf_keras"
                   or c.__module__.startswith(("tensorflow.python.keras", "keras.engine", "keras.src.engine"))), None)
    if keras2 is not None:
        return (f"{which} is a Keras 2 (tf_keras) network{' class' if cls is network else ''} "
                f"({cls.__module__}.{cls.__name__}); keras_trpo needs Keras 3: build the network with `import "
                "keras` (keras>=3), not tf_keras or tf.keras under TF_USE_LEGACY_KERAS=1.")
    if isinstance(network, type) and issubclass(network, keras.layers.Layer):
        return f"{expected}; got the class {network.__name__}: pass an instance, {which}={network.__name__}(...)."
    builder = next((name for name, fn in networks.BUILDERS.items() if fn is network), None)
    if builder is not None:
        return (f"{expected}; got the function {builder}: call it, {which}=keras_trpo.networks.{builder}(...), "
                f"or pass its name {builder!r}.")
    return f"{expected}; got {type(network).__name__}."


def _backing(variable: Any) -> Any:
    # Two Keras variables wrapping one tf.Variable share weights too.
    return getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable


def _input_shapes(spec: ObservationSpec) -> networks.Shape | dict[str, networks.Shape]:
    shapes: dict[Any, networks.Shape] = {leaf.key: leaf.feature_shape for leaf in spec.leaves}  # key None: a Box
    return shapes if spec.structured else shapes[None]


def make_normalizer(spec: ObservationSpec) -> RunningNormalization:
    """The running normalization of the float ``Box`` observations (``normalize_observations=True``).

    Raises:
        ValueError: the space has no float ``Box`` entry (integer observations such as
            ``uint8`` images are scaled by the network, e.g. ``keras.layers.Rescaling``).
    """
    if not spec.float_size:
        raise ValueError(
            f"normalize_observations=True needs float Box observations; the observation space {spec.space} has "
            "none. Integer observations such as uint8 images are not normalized: scale them in the network "
            "(keras.layers.Rescaling)."
        )
    return RunningNormalization(spec.float_size, name="observation_normalizer")


def numpy_mlp(
    layers: Sequence[keras.layers.Dense], output: keras.layers.Dense, activation: Any,
) -> list[tuple[np.ndarray, np.ndarray, Any]]:
    """``[(kernel, bias, activation), ...]`` of a default tower, for the numpy acting path."""
    weights = [(layer.kernel.numpy(), layer.bias.numpy(), activation) for layer in layers]
    return weights + [(output.kernel.numpy(), output.bias.numpy(), None)]


def per_sample(input_shape: Any) -> Any:
    """``input_shape`` without its batch dimension, as tuples (``None`` if it is no batch shape)."""
    try:
        if isinstance(input_shape, Mapping):
            return {key: tuple(shape)[1:] for key, shape in input_shape.items()}
        return tuple(input_shape)[1:]
    except TypeError:
        return None
