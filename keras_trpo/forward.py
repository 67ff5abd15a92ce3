"""The forward pass of :class:`keras_trpo.TRPO`: observations through the policy and value towers.

:class:`Forward` is a mixin of ``TRPO``, which builds the towers in its
constructor (:mod:`keras_trpo.actor_critic`); the members declared on the class
are what it reads. The update (:mod:`keras_trpo.update`) and collection
(:mod:`keras_trpo.acting`) go through these methods only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo import actor_critic, recurrent
from keras_trpo.observations import ObservationSpec

#: What the update passes for a recurrent model: ``{"episode_starts": [N], "states": {name: [N, units]}}``, the
#: rows sequence-major (:mod:`keras_trpo.sequences`); ``None`` for a model without memory.
Memory = Any


class Forward:
    """The policy and value networks' outputs, distribution and variables."""

    observation_spec: ObservationSpec
    head: Any  # a keras_trpo.policies head
    normalizer: Any  # a RunningNormalization layer, or None
    log_std: Any  # the log standard deviation's parameter (Box actions: [d], or [L, d] with use_sde), or None
    log_std_init: float
    add_weight: Callable[..., keras.Variable]  # keras.Model's
    policy_layers: list[Any]
    policy_output: Any
    value_layers: list[Any]
    value_output: Any
    built: bool
    _networks: tuple[Any, Any]  # what the constructor got for each network (None: the default MLP)
    _acting_function: Callable[[Any], tuple[tf.Tensor, tf.Tensor]] | None = None
    _step_function: Callable[..., tuple[Any, Any, Any]] | None = None
    #: ``(policy, value)``: whether each tower is a :class:`keras_trpo.recurrent.Recurrent` (set by the constructor).
    recurrent_towers: tuple[bool, bool] = (False, False)
    #: Steps per training sequence of a recurrent model (:mod:`keras_trpo.sequences`).
    sequence_length: int

    @property
    def custom_networks(self) -> tuple[bool, bool]:
        """``(policy, value)``: whether each is a given network rather than the default (an MLP on the flattened
        observations; with ``recurrent=True`` that MLP, then an LSTM, on the same flat features)."""
        policy, value = self._networks
        return policy is not None, value is not None

    @property
    def is_recurrent(self) -> bool:
        """Whether the policy or the critic has memory (a state carried from step to step)."""
        return any(self.recurrent_towers)

    def state_sizes(self) -> dict[str, int]:
        """``{state name: units}`` of the recurrent towers (``{}`` without memory), in :meth:`initial_state`'s order."""
        sizes = {}
        for which, layers, is_rnn in (("policy", self.policy_layers, self.recurrent_towers[0]),
                                      ("value", self.value_layers, self.recurrent_towers[1])):
            if is_rnn:
                sizes.update(recurrent.prefixed({name: layers[0].units for name in layers[0].state_names}, which))
        return sizes

    def initial_state(self, batch_size: int) -> dict[str, tf.Tensor]:
        """Zeros for every state tensor of the recurrent towers: ``{"policy_h": [batch_size, units], ...}``.

        An LSTM tower has ``h`` and ``c``, a GRU ``h``; the names start with the tower (``policy_``, ``value_``).
        """
        return {name: tf.zeros([batch_size, units], keras.config.floatx()) for name, units in self.state_sizes().items()}

    @property
    def policy_variables(self) -> list[keras.Variable]:
        """Trainable weights moved by the trust-region step."""
        variables = [w for layer in (*self.policy_layers, self.policy_output) for w in layer.trainable_weights]
        if self.log_std is not None:
            variables.append(self.log_std)
        return variables

    @property
    def value_variables(self) -> list[keras.Variable]:
        """Trainable weights of the critic (the compiled optimizer's only targets)."""
        return [w for layer in (*self.value_layers, self.value_output) for w in layer.trainable_weights]

    def _batch_shape(self) -> Any:
        """``(None, *shape)`` of the observations (``{key: (None, *shape)}`` for a ``Dict`` space)."""
        return self.observation_spec.structure((None, *leaf.shape) for leaf in self.observation_spec.leaves)

    def build(self, input_shape: Any) -> None:
        """Builds the networks for batches of observations shaped ``input_shape``.

        ``__init__`` calls it with the observation space's shapes and a free batch
        dimension. The networks' sizes follow from the space: any other per-sample
        shape is refused in one line, and a later call with the right one changes nothing.
        """
        if actor_critic.per_sample(input_shape) != self.observation_shape:
            raise ValueError(
                f"TRPO.build got input_shape={input_shape!r}; the observation space gives {self._batch_shape()!r} "
                "(batch dimension first). The model is built by its constructor: build a TRPO for the new space instead."
            )
        if self.built:
            return
        if self.normalizer is not None:
            self.normalizer.build((None, self.observation_spec.float_size))
        actor_critic.build(self.observation_spec, *self.custom_networks,
                           (self.policy_layers, self.policy_output), (self.value_layers, self.value_output))
        if self.head.state_dependent:  # log_std [L, d]: L, the policy features' width, is known once they are built
            self.log_std = self.add_log_std((int(self.policy_output.kernel.shape[0]), self.head.num_outputs))
        self.built = True

    def add_log_std(self, shape: tuple[int, ...]) -> keras.Variable:
        """The trainable ``log_std`` of a ``Box`` policy, every entry ``log_std_init``."""
        return self.add_weight(shape=shape, initializer=keras.initializers.Constant(self.log_std_init), trainable=True,
                               name="log_std")

    @property
    def observation_shape(self) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
        """Per-sample shape of the observations (``{key: shape}`` for a ``Dict`` space)."""
        return self.observation_spec.structure(leaf.shape for leaf in self.observation_spec.leaves)

    def _inputs(self, observations: Any, custom: bool) -> Any:
        """The input of a network: flat features for the default MLP, structured ones for a custom network."""
        spec = self.observation_spec
        spec.check(observations)
        if custom:
            return spec.network_inputs(observations, self.normalizer)
        return spec.flat_features(observations, self.normalizer)

    def policy_outputs(self, observations: Any) -> tf.Tensor:
        """Raw outputs of the policy network, ``[N, head.num_outputs]`` (``use_sde``: with the features appended)."""
        x = self._inputs(observations, self.custom_networks[0])
        for layer in self.policy_layers:
            x = layer(x)
        return self._policy_head_outputs(x)

    def _policy_head_outputs(self, features: tf.Tensor) -> tf.Tensor:
        """The output layer on the policy's features; a state-dependent head also reads the features themselves
        (:mod:`keras_trpo.exploration`), so they follow the output layer's, ``[N, num_outputs + L]``."""
        outputs = self.policy_output(features)
        if not self.head.state_dependent:
            return outputs
        return tf.concat([outputs, tf.cast(features, outputs.dtype)], axis=-1)

    def _unrolled(self, which: str, x: Any, memory: Memory, length: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """A tower's raw outputs on sequences of ``length`` rows from ``memory``'s states, and its next state."""
        layers, output = (self.policy_layers, self._policy_head_outputs) if which == "policy" else (
            self.value_layers, self.value_output)
        if not self.recurrent_towers[which == "value"]:
            for layer in layers:
                x = layer(x)
            return output(x), {}
        x, state = layers[0].unroll(x, recurrent.part(memory["states"], which), memory["episode_starts"], length)
        return output(x), recurrent.prefixed(state, which)

    def distribution_params(self, observations: Any, action_mask: Any = None, memory: Memory = None) -> dict[str, tf.Tensor]:
        """Named parameters of the policy distribution (``logits`` or ``mean``/``log_std``).

        ``action_mask``: ``[N, n]`` legal-action flags of a masked model (:mod:`keras_trpo.masking`).
        ``memory`` (a recurrent model's batch): the rows are sequences of :attr:`sequence_length` steps. A recurrent
        model called without ``memory`` takes one step from the zero state (each row its own episode start):
        use :meth:`step` (or ``model(observations, state=...)``) to carry a state.
        """
        if memory is None:
            return self.head.params(self.policy_outputs(observations), self.log_std, action_mask)
        x = self._inputs(observations, self.custom_networks[0])
        outputs, _ = self._unrolled("policy", x, memory, self.sequence_length)
        return self.head.params(outputs, self.log_std, action_mask)

    def distribution(self, observations: Any, action_mask: Any = None, memory: Memory = None) -> tfp.distributions.Distribution:
        """The policy distribution π(·|s) with batch shape ``[N]`` (over the legal actions, given ``action_mask``)."""
        return self.head.distribution(self.distribution_params(observations, action_mask, memory))

    def value(self, observations: Any, memory: Memory = None) -> tf.Tensor:
        """State values ``V(s)``, shape ``[N]``: :meth:`value_from_features` of :meth:`value_features`.

        A recurrent critic without ``memory``: one step from the zero state (see :meth:`distribution_params`).
        """
        if memory is not None and self.recurrent_towers[1]:
            x = self._inputs(observations, self.custom_networks[1])
            values, _ = self._unrolled("value", x, memory, self.sequence_length)
            return tf.squeeze(values, axis=-1)
        return self.value_from_features(self.value_features(observations))

    def value_features(self, observations: Any) -> Any:
        """What the value network's first layer sees (cast, one-hot, running normalization), row by row:
        gathering rows of it gives the features of the gathered observations, bit for bit."""
        return self._inputs(observations, self.custom_networks[1])

    def value_from_features(self, features: Any) -> tf.Tensor:
        """``V(s)`` from :meth:`value_features`, shape ``[N]``."""
        x = features
        for layer in self.value_layers:
            x = layer(x)
        return tf.squeeze(self.value_output(x), axis=-1)

    def step(self, observations: Any, state: Any, episode_starts: Any,
             action_mask: Any = None) -> tuple[dict[str, tf.Tensor], tf.Tensor, dict[str, tf.Tensor]]:
        """One step of a recurrent model: ``(distribution params, values, next state)`` from ``state``.

        ``episode_starts [N]``: rows whose episode starts at this observation (their state is zeroed first).
        """
        outputs, values, next_state = self._step_outputs(observations, state, episode_starts)
        return self.head.params(outputs, self.log_std, action_mask), values, next_state

    def _step_outputs(self, observations: Any, state: Any, episode_starts: Any) -> tuple[Any, Any, Any]:
        """``(policy outputs, values, next state)`` of one step (sequences of length 1)."""
        memory = {"episode_starts": episode_starts, "states": state}
        policy, policy_state = self._unrolled("policy", self._inputs(observations, self.custom_networks[0]), memory, 1)
        values, value_state = self._unrolled("value", self._inputs(observations, self.custom_networks[1]), memory, 1)
        return policy, tf.squeeze(values, axis=-1), {**policy_state, **value_state}

    def call(self, observations: Any, action_mask: Any = None, state: Any = None, episode_starts: Any = None) -> Any:
        """Deterministic action (the distribution's mode; the most probable legal one given ``action_mask``).

        A recurrent model returns ``(actions, next_state)``: from ``state`` (default: :meth:`initial_state`),
        zeroed first in the rows whose ``episode_starts`` flag is set (default: none).
        """
        if not self.is_recurrent:
            return self.head.mode(self.distribution_params(observations, action_mask))
        n = tf.shape(tf.nest.flatten(observations)[0])[0]
        state = self.initial_state(n) if state is None else state
        starts = tf.zeros([n], tf.bool) if episode_starts is None else tf.cast(episode_starts, tf.bool)
        params, _, next_state = self.step(observations, state, starts, action_mask)
        return self.head.mode(params), next_state

    def acting_function(self) -> Callable[[Any], tuple[tf.Tensor, tf.Tensor]]:
        """``observations -> (policy outputs, values)`` as one ``tf.function``, traced once.

        Collection uses it for networks without a numpy twin (:mod:`keras_trpo.acting`);
        its input signature has a free batch dimension and the observations' own dtypes
        (a ``uint8`` image is cast inside).
        """
        if self._acting_function is None:
            self._acting_function = tf.function(
                lambda observations: (self.policy_outputs(observations), self.value(observations)),
                input_signature=[self.observation_spec.tensor_specs()], autograph=False,
            )
        return self._acting_function

    def step_function(self) -> Callable[..., tuple[Any, Any, Any]]:
        """``(observations, state, episode_starts) -> (policy outputs, values, next state)``, one ``tf.function``.

        The acting path of a recurrent model (:mod:`keras_trpo.acting`), traced once.
        """
        if self._step_function is None:
            state_specs = {k: tf.TensorSpec([None, units], keras.config.floatx()) for k, units in self.state_sizes().items()}
            self._step_function = tf.function(self._step_outputs, autograph=False, input_signature=[
                self.observation_spec.tensor_specs(), state_specs, tf.TensorSpec([None], tf.bool)])
        return self._step_function
