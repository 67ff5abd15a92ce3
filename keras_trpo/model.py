"""The TRPO Keras model: an actor-critic whose ``train_step`` is one TRPO iteration.

The update's math is in :mod:`keras_trpo.update`, the train function in
:mod:`keras_trpo.trainer`; docs/architecture.md has the module map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from keras_trpo import (
    actor_critic,
    batches,
    critic,
    deploy,
    distribute,
    envs,
    exploration,
    export,
    forward,
    masking,
    networks,
    ops,
    recurrent,
    sequences,
    trainer,
    update,
    validation,
)
from keras_trpo.observations import ObservationSpec
from keras_trpo.policies import make_head
from keras_trpo.recurrent import check_state_names
from keras_trpo.spaces import space_from_config, space_to_config

Constant = keras.initializers.Constant
#: A space, or its JSON config (:mod:`keras_trpo.spaces`).
Space = gymnasium.spaces.Space | Mapping[str, Any]
#: A Keras layer or model, a network's name (``"nature_cnn"``, ...), its serialized config, or None.
Network = Any


@keras.saving.register_keras_serializable(package="keras_trpo")
class TRPO(forward.Forward, batches.Batches, trainer.Trainer):
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
        fisher_product: how CG's Fisher-vector products are computed: ``"double_backprop"`` through
            the mean KL (the default), or ``"gauss_newton"``, ``Jᵀ M J v`` (J: Jacobian of the
            distribution parameters, M: the KL's Hessian in them; the exact Hessian of the KL at θ_old,
            Martens 2014; Schulman et al. 2015, appendix C): the same products to ~1e-7 and a ~1.5x
            faster policy step, but not the default: on the Hopper-v5 preset it trained worse over 5
            seeds (final return 2045 against 3165; benchmarks/README.md, "Gauss–Newton products").
        normalize_advantages: standardize advantages per batch.
        value_epochs: passes over the batch for the critic.
        value_batch_size: critic minibatch size.
        log_std_init: initial log standard deviation (``Box`` actions; with ``use_sde``, of every entry of its matrix).
        use_sde: state-dependent exploration for ``Box`` actions (gSDE, :mod:`keras_trpo.exploration`): the
            noise ``φ(s)·E``, ``φ`` the policy network's features and ``E`` a matrix drawn every
            ``sde_sample_freq`` env steps; the policy is ``Normal(mean(s), σ(s))`` with a state-dependent σ.
        sde_sample_freq: env steps between exploration matrices with ``use_sde`` (``-1``: one per batch).
        normalize_observations: keep running observation mean and variance in
            a layer of the model (:class:`~keras_trpo.normalization.RunningNormalization`),
            updated by ``train_step`` from each batch after the update.
        seed: seeds weight initialization and critic minibatch shuffling.
        action_mask: mask illegal actions (``Discrete`` and ``MultiDiscrete`` actions; :mod:`keras_trpo.masking`).
            Batches then carry ``action_masks [N, n]``, and acting takes ``model(observations, action_mask=...)``
            (or a dict of observations with an ``action_mask`` entry). ``TRPO.for_env`` detects it.
        recurrent: policies with memory (:mod:`keras_trpo.recurrent`): ``None`` detects a recurrent network
            (``keras_trpo.networks.recurrent(...)``, or a Sequential with an LSTM/GRU layer); ``True`` also puts an
            LSTM(64) after a network without one (after an MLP of ``hidden_units``, default (64,), when none is
            given); ``False`` refuses recurrent networks. Acting then carries a state:
            ``actions, state = model(observations, state=..., episode_starts=...)``, ``model.initial_state(n)``.
        sequence_length: steps per training sequence of a recurrent model (:mod:`keras_trpo.sequences`).
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
        observation_space: Space,
        action_space: Space,
        *,
        policy_network: Network = None,
        value_network: Network = None,
        hidden_units: Sequence[int] | None = None,
        value_hidden_units: Sequence[int] | None = None,
        activation: str | Callable[[tf.Tensor], tf.Tensor] = "tanh",
        max_kl: float = 0.01,
        damping: float = 0.1,
        cg_iterations: int = 10,
        backtrack_coefficient: float = 0.8,
        backtrack_iterations: int = 10,
        fvp_fraction: float = 1.0,
        fisher_product: str = "double_backprop",
        normalize_advantages: bool = True,
        value_epochs: int = 10,
        value_batch_size: int = 128,
        log_std_init: float = 0.0,
        normalize_observations: bool = False,
        seed: int | None = None,
        action_mask: bool = False,
        recurrent: bool | None = None,
        sequence_length: int = sequences.DEFAULT_LENGTH,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        **kwargs: Any,
    ):
        validation.check_float_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.observation_space = space_from_config(observation_space)
        self.action_space = space_from_config(action_space)
        self.observation_spec = ObservationSpec(self.observation_space)
        self.observation_spec.check_signature_names()  # model.export would refuse them, after training
        self.use_sde = validation.check_bool("use_sde", use_sde)
        self.head = exploration.make(self.action_space, self.use_sde, sde_sample_freq) or make_head(self.action_space)
        self.sde_sample_freq = int(sde_sample_freq)  # checked by exploration.make (a NumPy integer is JSON-unsafe)
        self.action_mask = validation.check_bool("action_mask", action_mask)
        if self.action_mask:
            masking.mask_size(self.action_space)  # a TypeError naming a Box or MultiBinary action space
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
        self.fisher_product = update.check_fisher_product(fisher_product)
        self.normalize_advantages = bool(normalize_advantages)
        self.value_epochs = int(value_epochs)
        self.value_batch_size = int(value_batch_size)
        self.log_std_init = float(log_std_init)
        self.normalize_observations = bool(normalize_observations)
        self.seed = seed
        self.recurrent = None if recurrent is None else validation.check_bool("recurrent", recurrent)
        self.sequence_length = validation.check_int("sequence_length", sequence_length)
        self.policy_layers, self.policy_output, self.value_layers, self.value_output = actor_critic.make(
            self.observation_spec, self.head.num_outputs, policy_network=self._networks[0],
            value_network=self._networks[1], hidden_units=self.hidden_units, value_hidden_units=self.value_hidden_units,
            activation=activation, seed=None if seed is None else int(seed), recurrent=self.recurrent,
        )
        self.recurrent_towers = actor_critic.recurrent_towers(self.policy_layers, self.value_layers)
        check_state_names(self.observation_spec.keys, self.state_sizes(), export.START_KEY)
        self._add_state(max_kl, damping, seed)
        self.build(self._batch_shape())

    def _add_state(self, max_kl: float, damping: float, seed: int | None) -> None:
        """The model's variables besides the networks', and the critic's shuffle stream, in this order."""
        # Trust-region hyperparameters live in variables so that callbacks can
        # change them between iterations without retracing train_step.
        self._max_kl = self.add_weight(shape=(), initializer=Constant(max_kl), trainable=False, name="max_kl")
        self._damping = self.add_weight(shape=(), initializer=Constant(damping), trainable=False, name="damping")
        self.log_std = None
        if self.head.has_log_std and not self.head.state_dependent:
            self.log_std = self.add_log_std((self.head.num_outputs,))
        self.normalizer = actor_critic.make_normalizer(self.observation_spec) if self.normalize_observations else None
        self._add_training_state(seed)

    # ------------------------------------------------------------------
    # Construction and serialization
    # ------------------------------------------------------------------
    @classmethod
    def for_env(
        cls,
        env: gymnasium.Env | gymnasium.vector.VectorEnv,
        *,
        policy_network: Network = None,
        value_network: Network = None,
        hidden_units: Sequence[int] | None = None,
        value_hidden_units: Sequence[int] | None = None,
        activation: str | Callable[[tf.Tensor], tf.Tensor] = "tanh",
        max_kl: float = 0.01,
        damping: float = 0.1,
        cg_iterations: int = 10,
        backtrack_coefficient: float = 0.8,
        backtrack_iterations: int = 10,
        fvp_fraction: float = 1.0,
        fisher_product: str = "double_backprop",
        normalize_advantages: bool = True,
        value_epochs: int = 10,
        value_batch_size: int = 128,
        log_std_init: float = 0.0,
        normalize_observations: bool = False,
        seed: int | None = None,
        action_mask: bool | None = None,
        observe_action_mask: bool = False,
        recurrent: bool | None = None,
        sequence_length: int = sequences.DEFAULT_LENGTH,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        **kwargs: Any,
    ) -> TRPO:
        """Builds a model for a gymnasium ``Env`` or ``VectorEnv`` (its ``single_*`` spaces).

        The options and their defaults are :class:`TRPO`'s; ``kwargs`` go to ``keras.Model`` (e.g. ``name``).
        ``action_mask``: ``None`` masks illegal actions when the env has masks (a ``Dict`` observation entry
        ``action_mask``, or an ``action_masks()`` method: :mod:`keras_trpo.masking`); ``True`` requires them;
        ``False`` ignores them. The networks see the ``action_mask`` entry only with ``observe_action_mask=True``.
        """
        observation_space, action_space = envs.spaces_of(env)
        where = masking.source(env, observation_space, action_mask, action_space)
        if masking.observation_has_mask(observation_space) and not validation.check_bool(
                "observe_action_mask", observe_action_mask):
            observation_space = masking.without_mask(observation_space)
        return cls(
            observation_space, action_space, policy_network=policy_network, value_network=value_network,
            hidden_units=hidden_units, value_hidden_units=value_hidden_units, activation=activation,
            max_kl=max_kl, damping=damping, cg_iterations=cg_iterations, backtrack_coefficient=backtrack_coefficient,
            backtrack_iterations=backtrack_iterations, fvp_fraction=fvp_fraction, fisher_product=fisher_product,
            normalize_advantages=normalize_advantages, value_epochs=value_epochs, value_batch_size=value_batch_size,
            log_std_init=log_std_init, normalize_observations=normalize_observations, seed=seed,
            action_mask=where is not None, recurrent=recurrent, sequence_length=sequence_length, use_sde=use_sde,
            sde_sample_freq=sde_sample_freq, **kwargs,
        )

    _CONFIG_KEYS = (
        "hidden_units", "value_hidden_units", "activation", "max_kl", "damping", "cg_iterations",
        "backtrack_coefficient", "backtrack_iterations", "fvp_fraction", "fisher_product", "normalize_advantages",
        "value_epochs", "value_batch_size", "log_std_init", "normalize_observations", "seed", "action_mask", "recurrent", "sequence_length",
        "use_sde", "sde_sample_freq", "name",
    )

    def get_config(self) -> dict[str, Any]:
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
    def from_config(cls, config: Mapping[str, Any]) -> TRPO:
        return cls(**config)

    def check_saveable(self) -> None:
        for network, which in zip(self._networks, ("policy_network", "value_network")):
            networks.check_serializable(network, which)

    def export(
        self, filepath: Any, format: str = "tf_saved_model", *, overwrite: bool = False, verbose: bool = False,
        warmup: Any = False, **kwargs: Any,
    ) -> Any:
        """Writes the policy and critic for serving; returns the version directory or file written.

        ``format="tf_saved_model"`` (the default): a TF Serving SavedModel whose signatures
        ``serving_default``, ``sample``, ``value``, ``log_prob`` and ``distribution_params``
        take and return flat dicts of named tensors; loading needs TensorFlow only. A
        ``filepath`` ending in an integer is written as that version (a non-empty one needs
        ``overwrite=True``); otherwise it is the base directory and the next version is
        created in it (:mod:`keras_trpo.export`). ``warmup=True`` (or an env) adds TF
        Serving's warmup requests (:mod:`keras_trpo.export_warmup`). ``format="litert"``
        writes a ``.tflite`` file, ``format="onnx"`` an ``.onnx`` file (:mod:`keras_trpo.deploy`).
        Example: ``model.export("saved_models/cartpole")`` → ``".../saved_models/cartpole/1"``.
        """
        return deploy.export_model(self, filepath, format, overwrite=overwrite, verbose=verbose, warmup=warmup, **kwargs)

    # ------------------------------------------------------------------
    # Networks (the forward pass: keras_trpo.forward)
    # ------------------------------------------------------------------
    def __call__(self, observations: Any, *args: Any, action_mask: Any = None, **kwargs: Any) -> Any:
        # Checked before Keras' __call__, which would wrap the error in a multi-line report.
        keys = self.observation_spec.keys
        observations, action_mask = masking.split(observations, action_mask, keys, self.action_mask)
        n = self.observation_spec.check(observations)
        if action_mask is not None or self.action_mask:
            kwargs["action_mask"] = masking.check_call_mask(action_mask, self.action_mask, self.head.num_outputs, n)
        if self.is_recurrent or kwargs.get("state") is not None or kwargs.get("episode_starts") is not None:
            recurrent.check_call_state(kwargs.get("state"), kwargs.get("episode_starts"), self.state_sizes(), n)
        return super().__call__(observations, *args, **kwargs)

    # ------------------------------------------------------------------
    # One TRPO iteration (fit, compile and the train function: keras_trpo.trainer.Trainer)
    # ------------------------------------------------------------------
    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
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
        replicas = self.replicas
        if replicas.distributed and not any(map(distribute.is_per_replica, tf.nest.flatten(data))):
            raise RuntimeError("Under a tf.distribute strategy, TRPO trains through model.fit, which splits each "
                               "batch over the replicas and runs the update cross-replica (keras_trpo.distribute).")
        self.check_batch_values(data)
        batch = replicas.run(self._validated_batch, data)
        trainer.check_fresh(self, data)
        replicas.assert_equal_shares(batch["returns"])
        observations, actions, returns = batch["observations"], batch["actions"], batch["returns"]
        memory, weights = self._memory(batch)
        refused = update.rejection_before_update(replicas, batch, self.head, self._policy_version)
        max_kl = tf.convert_to_tensor(self._max_kl)

        def iteration() -> update.Metrics:
            advantages = batch["advantages"]
            if self.normalize_advantages:
                advantages = update.normalized(replicas, advantages, weights)
            # 1. The old distribution: the weights that collected the batch, held constant (a recurrent model's
            #    recomputed from the stored sequence start states).
            objective = update.Objective(self, replicas, observations, actions, advantages,
                                         batch.get(masking.BATCH_KEY), memory, weights)
            # 2. The surrogate mean(ratio · Â) and its gradient g.
            surrogate_old, g = objective.surrogate_and_gradient()
            # 3. Conjugate gradient on (F + λI) s = g, F the Hessian of the mean KL(old‖new) (by double backprop,
            #    or as Jᵀ M J with fisher_product='gauss_newton').
            rows = update.fvp_rows(replicas, returns, self.fvp_fraction, self.seed_generator, self._policy_version,
                                   self.sequence_length if memory else 1)
            fvp = objective.fisher_vector_product(rows, self._damping, self.fisher_product)
            direction, cg_info = ops.conjugate_gradient(fvp, g, self.cg_iterations)
            # 4. The full step √(2δ / sᵀ(F + λI)s) · s.
            step = update.full_step(fvp, direction, cg_info, max_kl)
            # 5. Backtracking line search: KL ≤ δ and a positive improvement, else restore θ_old.
            search = update.line_search(objective, step, surrogate_old, max_kl, self.backtrack_coefficient,
                                        self.backtrack_iterations)
            policy = update.policy_metrics(objective, surrogate_old, g, cg_info, step, search)
            # 6. Critic regression, kept only after an accepted policy step (it runs alongside 1-5).
            value = critic.train_kept_if_accepted(search.accepted, self, replicas, observations, returns, memory,
                                                  weights)
            return {**policy, **value}

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
