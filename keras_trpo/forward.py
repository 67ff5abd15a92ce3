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

from keras_trpo.observations import ObservationSpec


class Forward:
    """The policy and value networks' outputs, distribution and variables."""

    observation_spec: ObservationSpec
    head: Any  # a keras_trpo.policies head
    normalizer: Any  # a RunningNormalization layer, or None
    log_std: Any  # the state-independent log standard deviation (Box actions), or None
    policy_layers: list[Any]
    policy_output: Any
    value_layers: list[Any]
    value_output: Any
    _networks: tuple[Any, Any]  # what the constructor got for each network (None: the default MLP)
    _acting_function: Callable[[Any], tuple[tf.Tensor, tf.Tensor]] | None = None

    @property
    def custom_networks(self) -> tuple[bool, bool]:
        """``(policy, value)``: whether each is a given network rather than the default MLP."""
        policy, value = self._networks
        return policy is not None, value is not None

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

    def _inputs(self, observations: Any, custom: bool) -> Any:
        """The input of a network: flat features for the default MLP, structured ones for a custom network."""
        spec = self.observation_spec
        spec.check(observations)
        if custom:
            return spec.network_inputs(observations, self.normalizer)
        return spec.flat_features(observations, self.normalizer)

    def policy_outputs(self, observations: Any) -> tf.Tensor:
        """Raw outputs of the policy network, ``[N, head.num_outputs]``."""
        x = self._inputs(observations, self.custom_networks[0])
        for layer in self.policy_layers:
            x = layer(x)
        return self.policy_output(x)

    def distribution_params(self, observations: Any, action_mask: Any = None) -> dict[str, tf.Tensor]:
        """Named parameters of the policy distribution (``logits`` or ``mean``/``log_std``).

        ``action_mask``: ``[N, n]`` legal-action flags of a masked model (:mod:`keras_trpo.masking`).
        """
        return self.head.params(self.policy_outputs(observations), self.log_std, action_mask)

    def distribution(self, observations: Any, action_mask: Any = None) -> tfp.distributions.Distribution:
        """The policy distribution π(·|s) with batch shape ``[N]`` (over the legal actions, given ``action_mask``)."""
        return self.head.distribution(self.distribution_params(observations, action_mask))

    def value(self, observations: Any) -> tf.Tensor:
        """State values ``V(s)``, shape ``[N]``: :meth:`value_from_features` of :meth:`value_features`."""
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

    def call(self, observations: Any, action_mask: Any = None) -> tf.Tensor:
        """Deterministic action (the distribution's mode; the most probable legal one given ``action_mask``)."""
        return self.head.mode(self.distribution_params(observations, action_mask))

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
