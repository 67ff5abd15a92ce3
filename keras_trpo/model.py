"""The TRPO Keras model: an actor-critic whose ``train_step`` is one TRPO iteration.

The update's math is in :mod:`keras_trpo.update`, the train function in
:mod:`keras_trpo.trainer`; docs/architecture.md has the module map.
"""

from __future__ import annotations


import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo import actor_critic, distribute, envs, export, networks, ops, trainer, update, validation
from keras_trpo.distribute import Replicas
from keras_trpo.observations import ObservationSpec
from keras_trpo.policies import make_head
from keras_trpo.spaces import space_from_config, space_to_config

tfd = tfp.distributions
Constant = keras.initializers.Constant


@keras.saving.register_keras_serializable(package="keras_trpo")
class TRPO(trainer.Trainer):
    """Trust Region Policy Optimization as a Keras model (Schulman et al., 2015).

    A policy network with a distribution head chosen by the action space
    (:mod:`keras_trpo.policies`) and a value network. :meth:`train_step` is one
    TRPO iteration on a batch of on-policy data, its six steps in order. The
    optimizer given to ``compile`` trains the value network only; the policy
    moves only by the trust-region step, and a rejected update changes nothing.

    Args:
        observation_space: a gymnasium ``Box`` (any shape), ``Discrete``, ``MultiBinary``, or a
            ``Dict`` of those (:mod:`keras_trpo.observations`: how each reaches the networks).
        action_space: ``Discrete``, ``Box``, ``MultiDiscrete`` or ``MultiBinary``.
        policy_network: any Keras layer or model mapping a batch of observations to
            features ``[N, F]`` (or a name: ``"nature_cnn"``, ``"minigrid_cnn"``, ``"mlp"``);
            the distribution head is appended (:mod:`keras_trpo.actor_critic`). ``None``:
            the default MLP on flattened observations (``hidden_units``, ``activation``).
        value_network: the same for the critic (``Dense(1)`` appended). It must not share
            trainable weights with ``policy_network`` (frozen layers may be in both).
        hidden_units: default policy MLP widths (``(64, 64)``); not with ``policy_network``.
        value_hidden_units: default value MLP widths (``(64, 64)``); not with ``value_network``.
        activation: hidden activation of the default MLPs.
        max_kl: trust-region radius δ on the mean KL(old‖new), the KL summed over action
            dimensions. sb3-contrib's ``target_kl`` is a mean over them: for ``d`` action
            dimensions the same step is ``max_kl = d·target_kl``, ``damping = d·cg_damping``.
        damping: λ in ``F + λI``; keeps conjugate gradient well posed.
        cg_iterations: maximum conjugate-gradient steps.
        backtrack_coefficient: line-search shrink factor, in (0, 1).
        backtrack_iterations: line-search trials before giving up.
        fvp_fraction: fraction of the batch used for Fisher-vector products: a
            fresh random subset of rows each update (the paper uses 10%).
        normalize_advantages: standardize advantages per batch.
        value_epochs: passes over the batch for the critic.
        value_batch_size: critic minibatch size.
        log_std_init: initial log standard deviation (``Box`` actions).
        normalize_observations: keep running observation mean and variance in
            a layer of the model (:class:`~keras_trpo.normalization.RunningNormalization`),
            updated by ``train_step`` from each batch after the update.
        seed: seeds weight initialization and critic minibatch shuffling.
        **kwargs: passed to ``keras.Model`` (e.g. ``name``).

    Example:

    ```python
    import gymnasium, keras, keras_trpo
    env = gymnasium.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, max_kl=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = model.train_step(batch)   # batch: observations, actions, advantages, returns
    ```
    """

    def __init__(
        self,
        observation_space,
        action_space,
        *,
        policy_network=None,
        value_network=None,
        hidden_units=None,
        value_hidden_units=None,
        activation="tanh",
        max_kl=0.01,
        damping=0.1,
        cg_iterations=10,
        backtrack_coefficient=0.8,
        backtrack_iterations=10,
        fvp_fraction=1.0,
        normalize_advantages=True,
        value_epochs=10,
        value_batch_size=128,
        log_std_init=0.0,
        normalize_observations=False,
        seed=None,
        **kwargs,
    ):
        validation.check_float_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.observation_space = space_from_config(observation_space)
        self.action_space = space_from_config(action_space)
        self.observation_spec = ObservationSpec(self.observation_space)
        self.observation_spec.check_signature_names()  # model.export would refuse them, after training
        self.head = make_head(self.action_space)
        validation.check_hyperparameters(
            max_kl=max_kl, damping=damping, cg_iterations=cg_iterations, fvp_fraction=fvp_fraction,
            backtrack_coefficient=backtrack_coefficient, backtrack_iterations=backtrack_iterations,
            value_epochs=value_epochs, value_batch_size=value_batch_size,
        )
        self.hidden_units = validation.layer_widths("hidden_units", hidden_units)
        self.value_hidden_units = validation.layer_widths("value_hidden_units", value_hidden_units)
        # What the constructor got (a name, a layer or None).
        self._networks = (networks.deserialize(policy_network, "policy_network"),
                          networks.deserialize(value_network, "value_network"))
        self.activation = activation
        self.cg_iterations = int(cg_iterations)
        self.backtrack_coefficient = float(backtrack_coefficient)
        self.backtrack_iterations = int(backtrack_iterations)
        self.fvp_fraction = float(fvp_fraction)
        self.normalize_advantages = bool(normalize_advantages)
        self.value_epochs = int(value_epochs)
        self.value_batch_size = int(value_batch_size)
        self.log_std_init = float(log_std_init)
        self.normalize_observations = bool(normalize_observations)
        self.seed = seed
        # Keras' own rule (TensorFlowTrainer.__init__): a model created under a strategy's scope
        # trains with that strategy. Then train_step runs cross-replica (keras_trpo.distribute).
        self._replicas = Replicas(tf.distribute.get_strategy() if tf.distribute.has_strategy() else None)
        self._acting_function = None

        self.policy_layers, self.policy_output, self.value_layers, self.value_output = actor_critic.make(
            self.observation_spec, self.head.num_outputs, policy_network=self._networks[0],
            value_network=self._networks[1], hidden_units=self.hidden_units, value_hidden_units=self.value_hidden_units,
            activation=activation, seed=None if seed is None else int(seed),
        )
        # Trust-region hyperparameters live in variables so that callbacks can
        # change them between iterations without retracing train_step.
        self._max_kl = self.add_weight(shape=(), initializer=Constant(max_kl), trainable=False, name="max_kl")
        self._damping = self.add_weight(shape=(), initializer=Constant(damping), trainable=False, name="damping")
        self.log_std = None
        if self.head.has_log_std:
            self.log_std = self.add_weight(
                shape=(self.head.num_outputs,), initializer=Constant(self.log_std_init), trainable=True, name="log_std"
            )
        self.normalizer = actor_critic.make_normalizer(self.observation_spec) if self.normalize_observations else None
        # Incremented by every train_step: Rollouts stamps each batch with the
        # version that collected it, and train_step refuses a stale batch.
        self._policy_version = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="policy_version"
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="critic_shuffle_seed")
        self.build(self.observation_spec.structure((None, *leaf.shape) for leaf in self.observation_spec.leaves))

    # ------------------------------------------------------------------
    # Construction and serialization
    # ------------------------------------------------------------------
    @classmethod
    def for_env(cls, env, **kwargs) -> "TRPO":
        """Builds a model for a gymnasium ``Env`` or ``VectorEnv`` (its ``single_*`` spaces)."""
        return cls(*envs.spaces_of(env), **kwargs)

    def build(self, input_shape):
        if self.normalizer is not None:
            self.normalizer.build((None, self.observation_spec.float_size))
        actor_critic.build(self.observation_spec, *self.custom_networks,
                           (self.policy_layers, self.policy_output), (self.value_layers, self.value_output))
        self.built = True

    @property
    def custom_networks(self) -> tuple:
        """``(policy, value)``: whether each is a given network rather than the default MLP."""
        return tuple(network is not None for network in self._networks)

    @property
    def observation_shape(self):
        """Per-sample shape of the observations (``{key: shape}`` for a ``Dict`` space)."""
        return self.observation_spec.structure(leaf.shape for leaf in self.observation_spec.leaves)

    _CONFIG_KEYS = (
        "hidden_units", "value_hidden_units", "activation", "max_kl", "damping", "cg_iterations",
        "backtrack_coefficient", "backtrack_iterations", "fvp_fraction", "normalize_advantages",
        "value_epochs", "value_batch_size", "log_std_init", "normalize_observations", "seed", "name",
    )

    def get_config(self):
        config = {name: getattr(self, name) for name in self._CONFIG_KEYS}
        for key in ("hidden_units", "value_hidden_units"):
            config[key] = None if config[key] is None else list(config[key])
        config["policy_network"], config["value_network"] = networks.serialize_pair(*self._networks)
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            **config,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def check_saveable(self) -> None:
        for network, which in zip(self._networks, ("policy_network", "value_network")):
            networks.check_serializable(network, which)

    def export(self, filepath, format="tf_saved_model", *, overwrite=False, verbose=False, **kwargs):
        """Writes a TF Serving SavedModel of the policy and critic; returns the version directory.

        Signatures ``serving_default``, ``sample``, ``value``, ``log_prob`` and
        ``distribution_params`` take and return flat dicts of named tensors; loading
        needs TensorFlow only. A ``filepath`` ending in an integer is written as that
        version (a non-empty one needs ``overwrite=True``); otherwise it is the base
        directory and the next version is created in it. See :mod:`keras_trpo.export`.
        Example: ``model.export("saved_models/cartpole")`` → ``".../saved_models/cartpole/1"``.
        """
        return export.export_saved_model(self, filepath, format=format, overwrite=overwrite, verbose=verbose, **kwargs)

    @property
    def max_kl(self) -> float:
        return float(self._max_kl.numpy())

    @max_kl.setter
    def max_kl(self, value):
        validation.check_hyperparameters(max_kl=value)
        self._max_kl.assign(float(value))

    @property
    def policy_version(self) -> int:
        """Number of ``train_step`` calls so far: identifies the weights that collect a batch."""
        return int(self._policy_version.numpy())

    @property
    def damping(self) -> float:
        return float(self._damping.numpy())

    @damping.setter
    def damping(self, value):
        # Not validated: negative damping is how the reliability tests build an
        # indefinite Fisher. The constructor rejects it.
        self._damping.assign(float(value))

    # ------------------------------------------------------------------
    # Networks
    # ------------------------------------------------------------------
    @property
    def policy_variables(self) -> list:
        """Trainable weights moved by the trust-region step."""
        variables = [w for layer in (*self.policy_layers, self.policy_output) for w in layer.trainable_weights]
        if self.log_std is not None:
            variables.append(self.log_std)
        return variables

    @property
    def value_variables(self) -> list:
        """Trainable weights of the critic (the compiled optimizer's only targets)."""
        return [w for layer in (*self.value_layers, self.value_output) for w in layer.trainable_weights]

    def _inputs(self, observations, custom: bool):
        """The input of a network: flat features for the default MLP, structured ones for a custom network."""
        spec = self.observation_spec
        spec.check(observations)
        if custom:
            return spec.network_inputs(observations, self.normalizer)
        return spec.flat_features(observations, self.normalizer)

    def policy_outputs(self, observations) -> tf.Tensor:
        """Raw outputs of the policy network, ``[N, head.num_outputs]``."""
        x = self._inputs(observations, self.custom_networks[0])
        for layer in self.policy_layers:
            x = layer(x)
        return self.policy_output(x)

    def distribution_params(self, observations) -> dict:
        """Named parameters of the policy distribution (``logits`` or ``mean``/``log_std``)."""
        return self.head.params(self.policy_outputs(observations), self.log_std)

    def distribution(self, observations) -> tfd.Distribution:
        """The policy distribution π(·|s) with batch shape ``[N]``."""
        return self.head.distribution(self.distribution_params(observations))

    def value(self, observations) -> tf.Tensor:
        """State values ``V(s)``, shape ``[N]``."""
        x = self._inputs(observations, self.custom_networks[1])
        for layer in self.value_layers:
            x = layer(x)
        return tf.squeeze(self.value_output(x), axis=-1)

    def __call__(self, observations, *args, **kwargs):
        # Checked before Keras' __call__, which would wrap the error in a multi-line report.
        self.observation_spec.check(observations)
        return super().__call__(observations, *args, **kwargs)

    def call(self, observations):
        """Deterministic action (the distribution's mode), ``[N, *action_shape]``."""
        return self.head.mode(self.distribution_params(observations))

    def acting_function(self):
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

    # ------------------------------------------------------------------
    # One TRPO iteration (fit, compile and the train function: keras_trpo.trainer.Trainer)
    # ------------------------------------------------------------------
    def train_step(self, data):
        """One TRPO iteration on ``data``: a policy step in the trust region, then critic regression.

        ``data``: dict with ``observations [N, *obs_shape]``, ``actions [N,
        *action_shape]``, ``advantages [N]``, ``returns [N]`` and optionally
        ``policy_version`` (``Rollouts`` batches carry it). Returns the scalar
        metrics of :data:`keras_trpo.update.METRICS`, plus ``loss`` and the batch's
        episode statistics. A rejected update (``step_accepted`` 0,
        ``rejection_reason`` a key of :data:`keras_trpo.REJECTION_REASONS`) changes
        nothing: policy and critic restored bit for bit, no new normalizer
        statistics. Raises ``ValueError`` for a bad batch and ``StaleBatchError`` for
        a batch collected by other weights, before any compute; inside a compiled
        function (where XLA drops assertions) a stale batch is rejected instead.
        """
        if getattr(self, "optimizer", None) is None:
            raise RuntimeError("Call model.compile(optimizer=...) before train_step; it trains the critic.")
        replicas = self._replicas
        if not replicas.default and not any(map(distribute.is_per_replica, tf.nest.flatten(data))):
            raise RuntimeError("Under a tf.distribute strategy, TRPO trains through model.fit, which splits each "
                               "batch over the replicas and runs the update cross-replica (keras_trpo.distribute).")
        batch = replicas.run(self._validated_batch, data)
        trainer.check_fresh(self, data)
        replicas.assert_equal_shares(batch["returns"])
        observations, actions, returns = batch["observations"], batch["actions"], batch["returns"]
        refused = update.rejection_before_update(replicas, batch, self.head, self._policy_version)
        max_kl = tf.convert_to_tensor(self._max_kl)

        def iteration():
            advantages = batch["advantages"]
            if self.normalize_advantages:
                advantages = update.normalized(replicas, advantages)
            # 1. The old distribution: the weights that collected the batch, held constant.
            objective = update.Objective(self, replicas, observations, actions, advantages)
            # 2. The surrogate mean(ratio · Â) and its gradient g.
            surrogate_old, g = objective.surrogate_and_gradient()
            # 3. Conjugate gradient on (F + λI) s = g, F by double backprop through the mean KL(old‖new).
            rows = update.fvp_rows(replicas, returns, self.fvp_fraction, self.seed_generator, self._policy_version)
            fvp = objective.fisher_vector_product(rows, self._damping)
            direction, cg_info = ops.conjugate_gradient(fvp, g, self.cg_iterations)
            # 4. The full step √(2δ / sᵀ(F + λI)s) · s.
            step, well_posed = update.full_step(fvp, direction, cg_info, max_kl)
            # 5. Backtracking line search: KL ≤ δ and a positive improvement, else restore θ_old.
            policy = update.line_search(objective, g, step, surrogate_old, max_kl, well_posed, cg_info,
                                        self.backtrack_coefficient, self.backtrack_iterations)
            # 6. Critic regression, kept only after an accepted policy step (it runs alongside 1-5).
            critic = update.critic_kept_if(policy["step_accepted"] > 0, self, replicas, observations, returns)
            return {**policy, **critic}

        logs = tf.cond(refused == 0, iteration, lambda: update.rejected_metrics(refused))
        # Stateful ops on different resources are not ordered inside tf.function: the version
        # increment and the weight check must wait for the update.
        with tf.control_dependencies(tf.nest.flatten(logs)):
            self._policy_version.assign_add(1)
            weights_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in self.trainable_weights])
        # ``loss`` is what keras.callbacks.TerminateOnNaN watches: NaN exactly when a weight is
        # non-finite (which the update itself never causes), else the critic's loss (0 for a refused batch).
        value_loss = logs["value_loss"]
        logs["loss"] = tf.where(weights_finite, tf.where(tf.math.is_finite(value_loss), value_loss, 0.0), np.nan)
        return {**logs, **{key: replicas.reduce_mean(batch[key]) for key in validation.LOG_KEYS if key in batch}}

    def batch_spec(self) -> dict:
        """``{key: (per-sample shape, dtype description)}`` of a valid ``train_step`` batch."""
        return {
            "observations": self.observation_spec,
            "actions": (self.head.action_shape, "integer" if self.head.integer_actions else "floating"),
            "advantages": ((), "floating"),
            "returns": ((), "floating"),
        }

    def _validated_batch(self, data) -> dict:
        return validation.validate_batch(data, self.batch_spec(), self.head.cast_actions)
