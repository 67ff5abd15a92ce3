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
policy, 1 for the value). Policy and value must not share weights: the critic's
optimizer would move shared weights, and with them the policy, outside the trust
region (Schulman et al. 2017, "Proximal Policy Optimization Algorithms", section 5,
on parameter sharing).
"""

from __future__ import annotations

import keras

from keras_trpo import networks
from keras_trpo.normalization import RunningNormalization

#: Default widths when no network is given.
DEFAULT_UNITS = (64, 64)


def make(spec, num_outputs, *, policy_network, value_network, hidden_units, value_hidden_units, activation, seed):
    """The four parts ``(policy_layers, policy_output, value_layers, value_output)``, unbuilt.

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
            raise TypeError(f"{which}_network must be a Keras layer or model, or one of the names "
                            f"{sorted(networks.BUILDERS)}; got {type(network).__name__}.")
    if policy_network is not None and policy_network is value_network and not isinstance(policy_network, str):
        raise ValueError(_SHARED + " policy_network and value_network are the same object; build two networks.")
    parts = []
    for network, units, prefix, outputs, gain in (
        (policy_network, hidden_units, "policy", num_outputs, 0.01),
        (value_network, value_hidden_units, "value", 1, 1.0),
    ):
        if network is None:
            units = DEFAULT_UNITS if units is None else units
            hidden, output, seed = networks.dense_stack(units, activation, outputs, output_gain=gain, prefix=prefix,
                                                        seed=seed)
        else:
            if isinstance(network, str):
                network = networks.from_name(network, _input_shapes(spec), seed=None if seed is None else seed + 1000,
                                             prefix=f"{prefix}_")
            _, output, seed = networks.dense_stack((), activation, outputs, output_gain=gain, prefix=prefix, seed=seed)
            hidden = [network]
        parts += [hidden, output]
    return tuple(parts)


def build(spec, policy_network: bool, value_network: bool, policy, value) -> None:
    """Builds both towers: ``policy``/``value`` are ``(layers, output)``; the flags say which is custom.

    A custom network is called once on a zero batch (which builds any Keras layer,
    subclassed ones included) and must return features ``[N, F]``.

    Raises:
        ValueError: a network's output is not ``[N, F]``, or the networks share weights.
    """
    for custom, (layers, output), which in ((policy_network, policy, "policy"), (value_network, value, "value")):
        if not custom:
            networks.build_stack([*layers, output], spec.flat_size)
            continue
        zeros = spec.network_inputs(spec.zeros(2))
        try:
            features = layers[0](zeros)
        except Exception as error:  # noqa: BLE001 - Keras' multi-line report, in one line naming the argument
            first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise ValueError(
                f"{which}_network failed on a batch of observations {spec.describe()} (as float32; Discrete "
                f"entries one-hot, see keras_trpo.observations): {type(error).__name__}: {first.strip()}"
            ) from error
        shape = tuple(features.shape)
        if len(shape) != 2 or shape[0] != 2 or not shape[1]:
            raise ValueError(
                f"{which}_network must map a batch of observations to features [N, F]; given observations "
                f"{spec.describe()} (N = 2) it returned shape {list(shape)}. End it with a Flatten or a "
                "global pooling layer."
            )
        output.build((None, int(shape[1])))
    if policy_network or value_network:
        check_not_shared(policy[0], value[0])


_SHARED = (
    "the policy and value networks must not share weights: the critic's optimizer would move the shared "
    "weights, and so the policy, outside TRPO's trust region (the parameter-sharing caveat of the PPO paper)."
)


def check_not_shared(policy_layers, value_layers) -> None:
    """Raises ValueError naming the first variable found in both networks (by identity)."""
    policy = {id(_backing(v)): v for layer in policy_layers for v in layer.weights}
    for layer in value_layers:
        for variable in layer.weights:
            if id(_backing(variable)) in policy:
                raise ValueError(f"{_SHARED} Shared variable: {variable.path!r}.")


def _backing(variable):
    # Two Keras variables wrapping one tf.Variable share weights too.
    return getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable


def _input_shapes(spec):
    shapes = {leaf.key: leaf.feature_shape for leaf in spec.leaves}
    return shapes if spec.structured else shapes[None]


def make_normalizer(spec) -> RunningNormalization:
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


def numpy_mlp(layers, output, activation):
    """``[(kernel, bias, activation), ...]`` of a default tower, for the numpy acting path."""
    weights = [(layer.kernel.numpy(), layer.bias.numpy(), activation) for layer in layers]
    return weights + [(output.kernel.numpy(), output.bias.numpy(), None)]
