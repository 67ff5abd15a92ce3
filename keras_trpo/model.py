"""The TRPO Keras model: an actor-critic whose ``train_step`` is one TRPO iteration."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo import distribute, ops
from keras_trpo.distribute import Replicas
from keras_trpo.normalization import RunningNormalization
from keras_trpo.policies import check_observation_space, make_head
from keras_trpo.spaces import space_from_config, space_to_config

tfd = tfp.distributions

#: Why an update was rejected, as reported in the ``rejection_reason`` metric.
REJECTION_REASONS = {
    0: "accepted",
    1: "non-finite values in the batch (observations, actions, advantages or returns)",
    2: "conjugate gradient broke down or the step curvature sᵀFs is not positive: a zero policy "
    "gradient, or a Fisher-vector product with pᵀ(F + damping·I)p ≤ 0 or non-finite (an indefinite "
    "Fisher, e.g. from negative damping)",
    3: "line search found no step with mean KL ≤ max_kl and a positive surrogate improvement",
}


class UpdateRejectedWarning(RuntimeWarning):
    """Issued by ``TRPO.fit`` for each rejected update; the message names the cause.

    Silence it with ``warnings.simplefilter("ignore", keras_trpo.UpdateRejectedWarning)``.
    """


STALE_BATCH_MESSAGE = (
    "Stale batch: it was collected by another policy version than the one train_step starts from "
    "(values below: batch, model). TRPO is on-policy; use one Rollouts batch per epoch and do not set "
    "steps_per_epoch, workers or use_multiprocessing."
)

BATCH_KEYS = ("observations", "actions", "advantages", "returns")
#: Optional scalar batch entries from ``Rollouts`` that ``train_step`` copies into its logs.
LOG_KEYS = ("episode_return", "episode_length", "episodes", "env_steps")


@keras.saving.register_keras_serializable(package="keras_trpo")
class TRPO(keras.Model):
    """Trust Region Policy Optimization as a Keras model (Schulman et al., 2015).

    The model holds a policy network (a distribution head chosen by the action
    space, see :mod:`keras_trpo.policies`) and a value network. One call of
    :meth:`train_step` is one TRPO iteration on a batch of on-policy data:

    1. the old distribution: the current policy on the batch, stop-gradient;
    2. the surrogate ``L(θ) = mean(π_θ(a|s) / π_old(a|s) · Â)`` and ``g = ∇L``;
    3. conjugate gradient on ``(F + damping·I) s = g`` with Fisher-vector
       products of the mean KL(old‖new) (:func:`keras_trpo.ops.fisher_vector_product`);
    4. the full step ``√(2δ / sᵀFs) · s`` with ``δ = max_kl``;
    5. backtracking line search: the first step ``coefficient**j`` times the full
       step with mean KL ≤ δ and a positive surrogate improvement is kept;
       otherwise the policy weights are restored bit-for-bit;
    6. critic regression on the returns with the optimizer given to ``compile``
       (skipped when the policy step was rejected: a rejected update changes
       nothing, and ``fit`` warns with :class:`UpdateRejectedWarning`).

    The compiled optimizer trains the value network only; the policy moves only
    by the trust-region step.

    Args:
        observation_space: a gymnasium ``Box`` (any shape; flattened).
        action_space: ``Discrete``, ``Box``, ``MultiDiscrete`` or ``MultiBinary``.
        hidden_units: policy MLP widths.
        value_hidden_units: value MLP widths.
        activation: hidden activation of both MLPs.
        max_kl: trust-region radius δ on the mean KL(old‖new).
        damping: λ in ``F + λI``; keeps conjugate gradient well posed.
        cg_iterations: maximum conjugate-gradient steps.
        backtrack_coefficient: line-search shrink factor, in (0, 1).
        backtrack_iterations: line-search trials before giving up.
        fvp_fraction: fraction of the batch used for Fisher-vector products. The
            subsample is every ``round(1/fvp_fraction)``-th sample (the paper
            uses 10%, OpenAI baselines every 5th sample).
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
    env = gymnasium.make_vec("CartPole-v1", num_envs=8)
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
        hidden_units=(64, 64),
        value_hidden_units=(64, 64),
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
        super().__init__(**kwargs)
        self.observation_space = space_from_config(observation_space)
        self.action_space = space_from_config(action_space)
        self.observation_shape = check_observation_space(self.observation_space)
        self.head = make_head(self.action_space)
        _validate_hyperparameters(
            max_kl=max_kl,
            damping=damping,
            cg_iterations=cg_iterations,
            backtrack_coefficient=backtrack_coefficient,
            backtrack_iterations=backtrack_iterations,
            fvp_fraction=fvp_fraction,
            value_epochs=value_epochs,
            value_batch_size=value_batch_size,
        )
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.value_hidden_units = tuple(int(u) for u in value_hidden_units)
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
        #: Times the update body was traced (or run eagerly); see the retracing test.
        self.update_traces = 0

        # Orthogonal initialization with a small policy output layer (sb3 / the
        # "implementation matters" study, Engstrom et al. 2020): initial actions
        # are near-uniform / near-zero mean, so early KL steps are well scaled.
        init_seed = None if seed is None else int(seed)

        def dense(units, gain, act=None, name=None):
            nonlocal init_seed
            kernel = keras.initializers.Orthogonal(gain=gain, seed=init_seed)
            if init_seed is not None:
                init_seed += 1
            return keras.layers.Dense(units, activation=act, kernel_initializer=kernel, name=name)

        hidden_gain = float(np.sqrt(2.0))
        self.policy_layers = [
            dense(u, hidden_gain, activation, f"policy_hidden_{i}") for i, u in enumerate(self.hidden_units)
        ]
        self.policy_output = dense(self.head.num_outputs, 0.01, name="policy_output")
        self.value_layers = [
            dense(u, hidden_gain, activation, f"value_hidden_{i}")
            for i, u in enumerate(self.value_hidden_units)
        ]
        self.value_output = dense(1, 1.0, name="value_output")
        # Trust-region hyperparameters live in variables so that callbacks can
        # change them between iterations without retracing train_step.
        self._max_kl = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(max_kl), trainable=False, name="max_kl"
        )
        self._damping = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(damping), trainable=False, name="damping"
        )
        if self.head.has_log_std:
            self.log_std = self.add_weight(
                shape=(self.head.num_outputs,),
                initializer=keras.initializers.Constant(self.log_std_init),
                trainable=True,
                name="log_std",
            )
        else:
            self.log_std = None
        self.normalizer = (
            RunningNormalization(int(np.prod(self.observation_shape)), name="observation_normalizer")
            if self.normalize_observations
            else None
        )
        # Incremented by every train_step: Rollouts stamps each batch with the
        # version that collected it, and train_step refuses a stale batch.
        self._policy_version = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="policy_version"
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="critic_shuffle_seed")
        self.build((None, *self.observation_shape))

    # ------------------------------------------------------------------
    # Construction and serialization
    # ------------------------------------------------------------------
    @classmethod
    def for_env(cls, env, **kwargs) -> "TRPO":
        """Builds a model for a gymnasium ``Env`` or ``VectorEnv`` (its ``single_*`` spaces)."""
        observation_space = getattr(env, "single_observation_space", None) or getattr(
            env, "observation_space", None
        )
        action_space = getattr(env, "single_action_space", None) or getattr(env, "action_space", None)
        if observation_space is None or action_space is None:
            raise TypeError(
                f"env must be a gymnasium Env or VectorEnv with observation and action spaces; "
                f"got {type(env).__name__}."
            )
        return cls(observation_space, action_space, **kwargs)

    def build(self, input_shape):
        flat = int(np.prod(self.observation_shape))
        if self.normalizer is not None:
            self.normalizer.build((None, flat))
        width = flat
        for layer in self.policy_layers:
            layer.build((None, width))
            width = layer.units
        self.policy_output.build((None, width))
        width = flat
        for layer in self.value_layers:
            layer.build((None, width))
            width = layer.units
        self.value_output.build((None, width))
        self.built = True

    def get_config(self):
        return {
            "observation_space": space_to_config(self.observation_space),
            "action_space": space_to_config(self.action_space),
            "hidden_units": list(self.hidden_units),
            "value_hidden_units": list(self.value_hidden_units),
            "activation": self.activation,
            "max_kl": self.max_kl,
            "damping": self.damping,
            "cg_iterations": self.cg_iterations,
            "backtrack_coefficient": self.backtrack_coefficient,
            "backtrack_iterations": self.backtrack_iterations,
            "fvp_fraction": self.fvp_fraction,
            "normalize_advantages": self.normalize_advantages,
            "value_epochs": self.value_epochs,
            "value_batch_size": self.value_batch_size,
            "log_std_init": self.log_std_init,
            "normalize_observations": self.normalize_observations,
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def export(self, filepath, format="tf_saved_model", *, overwrite=False, verbose=False, **kwargs):
        """Writes a TF Serving SavedModel of the policy and critic; returns the version directory.

        Signatures (flat dicts of named tensors, batch dimension ``N`` free):
        ``serving_default`` (``observations`` → ``actions``, the deterministic action),
        ``sample`` (``observations``, ``seed`` int32 [2] → ``actions``, ``log_probs``; stateless),
        ``value`` (→ ``values``), ``log_prob`` (``observations``, ``actions`` → ``log_probs``) and
        ``distribution_params`` (→ ``mean``, ``log_std`` for Box; ``logits`` otherwise).
        Box actions are clipped to the action bounds in ``serving_default`` and ``sample``;
        the ``log_probs`` of ``sample`` are those of the unclipped sample. Observation
        normalization runs inside the graph. Loading needs TensorFlow only.

        Versioned layout (what TF Serving expects, ``<base>/<name>/<version>/``): if the
        last component of ``filepath`` is an integer, the model is written there (an
        existing non-empty directory needs ``overwrite=True``); otherwise ``filepath`` is
        the model's base directory and the next integer version is created in it
        (``1`` when it is missing or empty). See :mod:`keras_trpo.export`.

        Example:

        ```python
        path = model.export("saved_models/cartpole")   # -> ".../saved_models/cartpole/1"
        ```
        """
        if format != "tf_saved_model":
            raise ValueError(f"format must be 'tf_saved_model' (TF Serving); got {format!r}.")
        if kwargs:
            raise TypeError(f"TRPO.export() got unexpected arguments {sorted(kwargs)}; it takes overwrite=.")
        from keras_trpo.export import export_saved_model

        path = export_saved_model(self, filepath, overwrite=overwrite)
        if verbose:
            print(f"Saved the TRPO policy for TF Serving at {path}")
        return path

    # .keras files and weight checkpoints (BackupAndRestore): TRPO overrides compile(), so
    # Keras will not recompile it on load unless these two are defined; without the
    # optimizer its state (Adam moments, iterations) would not be restored either.
    def get_compile_config(self):
        if getattr(self, "optimizer", None) is None:
            return {}
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config):
        config = dict(config or {})
        if config.get("optimizer") is None:
            return
        self.compile(optimizer=keras.saving.deserialize_keras_object(config["optimizer"]))

    # The critic-shuffle SeedGenerator state is not a Keras weight: store it alongside the
    # model's own variables so that a restored model continues the same random stream.
    _SEED_KEY = "critic_shuffle_seed_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_KEY] = self.seed_generator.state.numpy()

    def load_own_variables(self, store):
        keys = list(store.keys())
        if self._SEED_KEY in keys:
            self.seed_generator.state.assign(store[self._SEED_KEY])
            store = {key: store[key] for key in keys if key != self._SEED_KEY}
        super().load_own_variables(store)

    def compile(self, optimizer="adam", **kwargs):
        """Configures the critic optimizer (the policy is moved by the TRPO step only).

        ``loss`` and ``metrics`` are not used by TRPO and are rejected.
        """
        for unused in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.get(unused) is not None:
                raise ValueError(
                    f"TRPO.compile() got {unused}={kwargs[unused]!r}; TRPO defines its own policy "
                    "and critic objectives. Pass only optimizer= (it trains the value network)."
                )
        super().compile(optimizer=optimizer, **kwargs)
        # Build the optimizer state for the value network only.
        self.optimizer.build(self.value_variables)

    # ------------------------------------------------------------------
    # Hyperparameters that may change between iterations
    # ------------------------------------------------------------------
    @property
    def max_kl(self) -> float:
        return float(self._max_kl.numpy())

    @max_kl.setter
    def max_kl(self, value):
        _validate_hyperparameters(max_kl=value)
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

    def _flat_observations(self, observations):
        return tf.reshape(tf.cast(observations, tf.float32), [-1, int(np.prod(self.observation_shape))])

    def _features(self, observations):
        x = self._flat_observations(observations)
        return x if self.normalizer is None else self.normalizer(x)

    def policy_outputs(self, observations) -> tf.Tensor:
        """Raw outputs of the policy network, ``[N, head.num_outputs]``."""
        x = self._features(observations)
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
        x = self._features(observations)
        for layer in self.value_layers:
            x = layer(x)
        return tf.squeeze(self.value_output(x), axis=-1)

    def call(self, observations):
        """Deterministic action (the distribution's mode), ``[N, *action_shape]``."""
        return self.head.mode(self.distribution_params(observations))

    # ------------------------------------------------------------------
    # One TRPO iteration
    # ------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs):
        """``keras.Model.fit``, plus one :class:`UpdateRejectedWarning` per rejected update.

        A ``PyDataset`` with one batch per epoch (:class:`keras_trpo.Rollouts`)
        is read directly by the train function, right before each update and in
        this thread: no ``tf.data`` iterator per epoch, nothing prefetched. An
        exception raised while a batch is collected (a ``RolloutError`` from the
        env, a ``KeyboardInterrupt``) reaches the caller as itself, also on the
        ``tf.data`` path (other datasets, strategies), where TensorFlow would
        report it as ``tf.errors.UnknownError``. Under a ``tf.distribute`` strategy the batches
        are split over the replicas by
        :func:`keras_trpo.distribute.distribute_py_dataset` (each worker uses
        its own rollouts; docs/scaling.md). The warning (from
        :class:`keras_trpo.callbacks.RejectedUpdateWarnings`, added unless one
        is passed) names the update and the cause from :data:`REJECTION_REASONS`;
        training continues with the next batch.
        """
        from keras_trpo.callbacks import RejectedUpdateWarnings

        callbacks = list(callbacks or [])
        if not any(isinstance(c, RejectedUpdateWarnings) for c in callbacks):
            callbacks.append(RejectedUpdateWarnings())
        source = x
        if hasattr(source, "pending_error"):
            source.pending_error = None
        distributed = not distribute.is_default_strategy(self.distribute_strategy)
        if distributed:
            x = distribute.distribute_py_dataset(x, self.distribute_strategy)
            kwargs.setdefault("shuffle", False)
        elif isinstance(x, keras.utils.PyDataset) and len(x) == 1 and kwargs.get("steps_per_epoch") is None:
            # One batch per epoch (Rollouts): the train function reads it from the PyDataset
            # itself, in this thread, when the update is about to run. Keras only sees a
            # one-element placeholder dataset, so no tf.data generator iterator is built per epoch.
            self._direct_source, x = x, tf.data.Dataset.from_tensors(np.zeros((), np.int8))
            kwargs.setdefault("shuffle", False)
        try:
            with warnings.catch_warnings():
                if distributed:
                    # Each epoch's input ends after its one batch: that is how it stays on-policy.
                    warnings.filterwarnings("ignore", message="Your input ran out of data")
                return super().fit(x, y, batch_size, epochs, verbose, callbacks, **kwargs)
        except tf.errors.OpError:
            # A Rollouts batch is collected on a tf.data thread, which reports any Python exception
            # as UnknownError; give the user the original (RolloutError, KeyboardInterrupt, ...).
            original = getattr(source, "pending_error", None)
            if original is None:
                raise
            source.pending_error = None
            raise original from original.__cause__  # keeps its own cause, drops the UnknownError
        finally:
            self._direct_source = None

    def train_step(self, data):
        """One TRPO policy update plus critic regression on ``data``.

        Args:
            data: dict with ``observations [N, *obs_shape]``, ``actions
                [N, *action_shape]``, ``advantages [N]`` and ``returns [N]``
                (a 1-tuple holding that dict is accepted too, as ``fit`` may pass).

        Returns:
            Dict of scalar metrics:

            * ``kl``: mean KL(old‖new) after the step (0 when rejected);
            * ``surrogate_improvement``: ``L(θ_new) − L(θ_old)``;
            * ``expected_improvement``: ``gᵀΔθ`` for the last step tried;
            * ``line_search_steps``: shrinks before the accepted step
              (``backtrack_iterations`` when none was accepted);
            * ``step_fraction``: ``backtrack_coefficient**line_search_steps``, or 0;
            * ``step_accepted``: 1 or 0; ``rejection_reason``: a key of
              :data:`REJECTION_REASONS`;
            * ``cg_residual``, ``cg_iterations`` and ``cg_breakdown`` (1 when
              pᵀ(F + damping·I)p ≤ 0 or non-finite stopped it; the update is then rejected);
            * ``entropy``: mean entropy of the old policy on the batch;
            * ``value_loss``: mean critic minibatch MSE (for a rejected update:
              the MSE of the unchanged critic); ``explained_variance`` of the
              returns by the values before the critic update;
            * ``loss``: ``value_loss``, except NaN when any weight of the model
              is non-finite after the step, so ``keras.callbacks.TerminateOnNaN``
              stops training (and 0 for a batch skipped as non-finite);
            * plus ``episode_return``, ``episode_length``, ``episodes`` and
              ``env_steps`` when the batch carries them (``Rollouts`` does).

            A rejected update changes nothing: the policy weights are restored
            bit for bit, the critic is not trained (optimizer state included)
            and the normalizer statistics are not updated. A batch with a
            non-finite observation, action, advantage or return is rejected
            before any computation (``rejection_reason`` 1). ``fit`` warns with
            :class:`UpdateRejectedWarning` for each rejected update.

        Raises:
            ValueError: a missing key or a wrong shape or dtype, before any
                computation; ``tf.errors.InvalidArgumentError``: a stale batch
                (its ``policy_version`` is not the model's).
        """
        if getattr(self, "optimizer", None) is None:
            raise RuntimeError("Call model.compile(optimizer=...) before train_step; it trains the critic.")
        batch = self._validate_batch(data)
        self.update_traces += 1
        if "policy_version" in batch:
            tf.debugging.assert_equal(
                batch["policy_version"], tf.convert_to_tensor(self._policy_version), message=STALE_BATCH_MESSAGE
            )
        if not distribute.is_default_strategy(tf.distribute.get_strategy()):
            raise RuntimeError(
                "Under a tf.distribute strategy, TRPO trains through model.fit, which runs the update "
                "in the cross-replica context (keras_trpo.distribute); train_step is the single-device step."
            )
        logs = self._update_all_replicas(tf.distribute.get_strategy(), {key: batch[key] for key in BATCH_KEYS})
        return {**logs, **{key: batch[key] for key in LOG_KEYS if key in batch}}

    def _distributed_train_step(self, data):
        """``train_step`` for a multi-replica strategy, in the cross-replica context.

        ``data`` holds each replica's share of the batch (``PerReplica`` values). The
        shares must be equal in size, so that the mean of the replicas' means is the
        mean over the whole batch.
        """
        replicas = Replicas(self.distribute_strategy)
        batch = replicas.run(self._validate_batch, data)
        self.update_traces += 1
        sizes = replicas.run(lambda o: tf.cast(tf.shape(o)[0], tf.float32), batch["observations"])
        mean_size = replicas.reduce_mean(sizes)
        replicas.run(
            lambda size: tf.debugging.assert_equal(
                size, mean_size, message="The batch does not split into equal shares over the replicas: use the "
                "same number of steps on every worker, divisible by the number of local replicas."
            ),
            sizes,
        )
        if "policy_version" in batch:
            replicas.run(
                lambda version: tf.debugging.assert_equal(
                    version, tf.convert_to_tensor(self._policy_version), message=STALE_BATCH_MESSAGE
                ),
                batch["policy_version"],
            )
        logs = self._update_all_replicas(self.distribute_strategy, {key: batch[key] for key in BATCH_KEYS})
        return {**logs, **{key: replicas.reduce_mean(batch[key]) for key in LOG_KEYS if key in batch}}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (TF backend, under a strategy) reads one batch here to build the model
        # symbolically, and reduces it across replicas, which fails for dict batches under
        # MultiWorkerMirroredStrategy. TRPO builds its networks in __init__ and the critic's
        # optimizer in compile, so there is nothing to build.
        if distribute.is_default_strategy(self.distribute_strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def make_train_function(self, force=False):
        """Keras' train function; under a multi-replica strategy, one that runs the update cross-replica.

        Keras calls ``train_step`` inside ``strategy.run``, i.e. once per replica.
        TRPO's conjugate gradient, line search and critic epochs need cross-replica
        means inside loops, which a replica context does not allow; so with a
        ``tf.distribute`` strategy the train function reads the per-replica batch
        and runs :meth:`_distributed_train_step` in the cross-replica context
        (see :mod:`keras_trpo.distribute`).
        """
        if distribute.is_default_strategy(self.distribute_strategy):
            return self._make_single_device_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution != 1:
            raise ValueError(f"TRPO runs one update per step; got steps_per_execution={self.steps_per_execution}.")

        @tf.function(reduce_retracing=True)
        def train_function(iterator):
            # Past the last batch of an epoch, get_next raises OutOfRangeError, which ends the epoch.
            return self._distributed_train_step(iterator.get_next())

        self.train_function = train_function
        return train_function

    def _make_single_device_train_function(self, force):
        """Keras' train function, plus the direct path for one-batch PyDatasets (see ``fit``).

        On the direct path the batch comes from ``self._direct_source[0]`` (for
        ``Rollouts``: collected now, by the current weights) and goes to one
        ``tf.function`` of :meth:`train_step`, traced once per batch structure.
        Keras' placeholder element is not read: its epoch has exactly one step.
        """
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force)
        keras_train_function = self.train_function

        def train_function(iterator):
            source = getattr(self, "_direct_source", None)
            if source is None:
                return keras_train_function(iterator)
            batch = source[0]
            if self.run_eagerly:
                return self.train_step(batch)
            return self._direct_step(batch)(batch)

        self.train_function = train_function
        return train_function

    def _direct_step(self, batch):
        """The compiled ``train_step`` for batches shaped like ``batch`` (``[None, ...]`` specs)."""
        if not isinstance(batch, Mapping):
            return tf.function(self.train_step)  # train_step raises the TypeError with the expected keys
        spec = {
            key: tf.TensorSpec((None, *np.shape(value)[1:]), tf.as_dtype(np.asarray(value).dtype))
            for key, value in batch.items()
        }
        key = tuple(sorted((k, tuple(v.shape), v.dtype.name) for k, v in spec.items()))
        steps = self.__dict__.setdefault("_direct_steps", {})
        if key not in steps:
            steps[key] = tf.function(self.train_step, input_signature=[spec], jit_compile=bool(self.jit_compile))
        return steps[key]

    def _update_all_replicas(self, strategy, batch):
        replicas = Replicas(strategy)
        float_keys = _float_keys(self.head)
        all_finite = replicas.mean(
            lambda *values: tf.cast(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values]), tf.float32),
            *[batch[k] for k in float_keys],
        )
        logs = tf.cond(all_finite >= 1.0, lambda: self._update(replicas, batch), self._skipped_update_metrics)
        # Inside tf.function, stateful ops on different resources are not ordered: without this
        # dependency the increment (and the weight check) may run before the update.
        with tf.control_dependencies(tf.nest.flatten(logs)):
            self._policy_version.assign_add(1)
            weights_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in self.trainable_weights])
        # ``loss`` is what keras.callbacks.TerminateOnNaN watches: NaN exactly when a weight is
        # non-finite (which the update itself never causes), else the critic's loss (0 for a
        # batch skipped as non-finite, so that fit goes on with the next one).
        value_loss = logs["value_loss"]
        logs["loss"] = tf.where(
            weights_finite, tf.where(tf.math.is_finite(value_loss), value_loss, 0.0), float("nan")
        )
        return logs

    def _update(self, replicas, batch):
        observations, actions = batch["observations"], batch["actions"]
        advantages, returns = batch["advantages"], batch["returns"]
        if self.normalize_advantages:
            mean, variance = replicas.moments(advantages)
            advantages = replicas.run(lambda a: (a - mean) / (tf.sqrt(variance) + 1e-8), advantages)
        policy_metrics = self._policy_step(replicas, observations, actions, advantages)
        accepted = policy_metrics["step_accepted"] > 0

        def critic_and_normalizer():
            value_metrics = self._critic_step(replicas, observations, returns)
            if self.normalizer is not None:
                # After both updates: the "old" policy above is the one that collected the batch.
                with tf.control_dependencies(tf.nest.flatten(value_metrics)):
                    flat = replicas.run(lambda o: tf.cast(self._flat_observations(o), tf.float64), observations)
                    mean, variance = replicas.moments(flat)
                    count = tf.cast(replicas.local_size(flat) * replicas.count, tf.float64)
                    self.normalizer.update_from_moments(mean, variance, count)
            return value_metrics

        # A rejected update changes nothing: no critic step, no new normalizer statistics.
        value_metrics = tf.cond(
            accepted, critic_and_normalizer, lambda: self._value_metrics(replicas, observations, returns)
        )
        return {**policy_metrics, **value_metrics}

    def _policy_step(self, replicas, observations, actions, advantages):
        variables = self.policy_variables
        max_kl = tf.convert_to_tensor(self._max_kl)
        head = self.head

        # 1. Old distribution: the weights that collected the batch, held constant.
        old_params = replicas.run(
            lambda o: tf.nest.map_structure(tf.stop_gradient, self.distribution_params(o)), observations
        )
        old_log_prob = replicas.run(lambda p, a: head.distribution(p).log_prob(a), old_params, actions)

        def local_surrogate_and_kl(o, a, adv, p, old_lp):
            new_dist = self.distribution(o)
            ratio = tf.exp(new_dist.log_prob(a) - old_lp)
            surrogate = tf.reduce_mean(ratio * adv)
            kl = tf.reduce_mean(tfd.kl_divergence(head.distribution(p), new_dist))
            return surrogate, kl

        def surrogate_and_kl():
            return replicas.mean(local_surrogate_and_kl, observations, actions, advantages, old_params, old_log_prob)

        # 2. Surrogate and policy gradient.
        def local_surrogate_and_gradient(*args):
            with tf.GradientTape() as tape:
                surrogate, _ = local_surrogate_and_kl(*args)
            return surrogate, ops.flat_gradient(tape, surrogate, variables)

        surrogate_old, g = replicas.mean(
            local_surrogate_and_gradient, observations, actions, advantages, old_params, old_log_prob
        )

        # 3. Natural gradient direction by CG on Fisher-vector products.
        stride = max(1, int(round(1.0 / self.fvp_fraction)))

        def local_kl_fn(o, p):
            fvp_observations = o[::stride]
            fvp_old_dist = head.distribution(tf.nest.map_structure(lambda q: q[::stride], p))
            return lambda: tf.reduce_mean(tfd.kl_divergence(fvp_old_dist, self.distribution(fvp_observations)))

        if replicas.default:
            # One device: record the FVP tapes once and reuse them in every CG step.
            fvp = ops.fisher_vector_product_fn(local_kl_fn(observations, old_params), variables, self._damping)
        else:

            def fvp(vector):
                return replicas.mean(
                    lambda o, p: ops.fisher_vector_product(local_kl_fn(o, p), variables, vector, self._damping),
                    observations,
                    old_params,
                )

        direction, cg_info = ops.conjugate_gradient(fvp, g, self.cg_iterations)

        # 4. Step size from the quadratic model of the KL. F + damping·I is positive definite by
        # construction; a CG breakdown (pᵀAp ≤ 0) means the quadratic model cannot be trusted.
        curvature = tf.reduce_sum(direction * fvp(direction))
        well_posed = tf.logical_and(curvature > 0, tf.math.is_finite(curvature))
        well_posed = tf.logical_and(well_posed, tf.logical_not(cg_info["breakdown"]))
        scale = tf.sqrt(2.0 * max_kl / tf.where(well_posed, curvature, 1.0))
        full_step = scale * direction

        # 5. Backtracking line search; restore θ_old exactly unless a step is accepted.
        theta_old = ops.flatten(variables)

        def accept(fraction):
            ops.assign_flat(variables, theta_old + fraction * full_step)
            surrogate, kl = surrogate_and_kl()
            finite = tf.logical_and(tf.math.is_finite(surrogate), tf.math.is_finite(kl))
            return tf.logical_and(finite, tf.logical_and(kl <= max_kl, surrogate - surrogate_old > 0))

        accepted, shrinks = tf.cond(
            well_posed,
            lambda: ops.backtracking_line_search(accept, self.backtrack_coefficient, self.backtrack_iterations),
            lambda: (tf.constant(False), tf.constant(self.backtrack_iterations)),
        )
        # The accepted trial left its weights in place; anything else restores θ_old bit for bit.
        tf.cond(accepted, lambda: None, lambda: ops.assign_flat(variables, theta_old))
        surrogate_new, kl_new = surrogate_and_kl()

        last_tried = tf.pow(
            tf.constant(self.backtrack_coefficient, tf.float32),
            tf.cast(tf.minimum(shrinks, self.backtrack_iterations - 1), tf.float32),
        )
        fraction = tf.where(accepted, last_tried, 0.0)
        # First-order prediction gᵀΔθ of the surrogate gain of the last step tried.
        expected_improvement = tf.where(well_posed, last_tried * tf.reduce_sum(g * full_step), 0.0)
        reason = tf.where(accepted, 0, tf.where(well_posed, 3, 2))
        return {
            "kl": kl_new,
            "surrogate_improvement": surrogate_new - surrogate_old,
            "expected_improvement": expected_improvement,
            "line_search_steps": tf.cast(shrinks, tf.float32),
            "step_fraction": fraction,
            "step_accepted": tf.cast(accepted, tf.float32),
            "rejection_reason": tf.cast(reason, tf.float32),
            "cg_residual": cg_info["residual"],
            "cg_iterations": tf.cast(cg_info["iterations"], tf.float32),
            "cg_breakdown": tf.cast(cg_info["breakdown"], tf.float32),
            "entropy": replicas.mean(lambda p: tf.reduce_mean(head.distribution(p).entropy()), old_params),
        }

    def _critic_step(self, replicas, observations, returns):
        """Regresses V(s) on the returns: ``value_epochs`` shuffled passes of minibatches.

        With ``R`` replicas each takes ``value_batch_size // R`` samples of its share per
        minibatch (the same permutation positions on every replica), and the optimizer
        applies the mean of the replicas' gradients.
        """
        variables = self.value_variables
        values_before = replicas.run(self.value, observations)
        n = replicas.local_size(observations)
        batch_size = tf.minimum(max(1, self.value_batch_size // replicas.count), n)
        batches_per_epoch = (n + batch_size - 1) // batch_size
        total = self.value_epochs * batches_per_epoch
        # One independent permutation of the (local) batch per epoch.
        permutations = tf.argsort(
            keras.random.uniform((self.value_epochs, n), seed=self.seed_generator), axis=-1
        )

        def body(k, loss_sum):
            epoch, start = k // batches_per_epoch, (k % batches_per_epoch) * batch_size
            index = permutations[epoch, start : tf.minimum(start + batch_size, n)]

            def local_loss_and_gradients(o, r):
                with tf.GradientTape() as tape:
                    error = self.value(tf.gather(o, index)) - tf.gather(r, index)
                    loss = tf.reduce_mean(tf.square(error))
                return loss, tape.gradient(loss, variables)

            loss, grads = replicas.mean(local_loss_and_gradients, observations, returns)
            replicas.apply_gradients(self.optimizer, grads, variables)
            return k + 1, loss_sum + loss

        _, loss_sum = tf.while_loop(lambda k, _: k < total, body, (tf.constant(0), tf.constant(0.0)))
        return {
            "value_loss": loss_sum / tf.cast(tf.maximum(total, 1), tf.float32),
            "explained_variance": _explained_variance(replicas, values_before, returns),
        }

    def _value_metrics(self, replicas, observations, returns):
        """Critic metrics of the current weights, without training (for a rejected update)."""
        values = replicas.run(self.value, observations)
        return {
            "value_loss": replicas.mean(lambda v, r: tf.reduce_mean(tf.square(v - r)), values, returns),
            "explained_variance": _explained_variance(replicas, values, returns),
        }

    def _skipped_update_metrics(self):
        nan = tf.constant(float("nan"))
        zero = tf.constant(0.0)
        return {
            "kl": zero,
            "surrogate_improvement": zero,
            "expected_improvement": zero,
            "line_search_steps": zero,
            "step_fraction": zero,
            "step_accepted": zero,
            "rejection_reason": tf.constant(1.0),
            "cg_residual": nan,
            "cg_iterations": zero,
            "cg_breakdown": zero,
            "entropy": nan,
            "value_loss": nan,
            "explained_variance": nan,
        }

    # ------------------------------------------------------------------
    # Batch validation (Python, before any TensorFlow computation)
    # ------------------------------------------------------------------
    def batch_spec(self) -> dict:
        """``{key: (per-sample shape, dtype description)}`` of a valid ``train_step`` batch."""
        action_dtype = "integer" if self.head.integer_actions else "floating"
        return {
            "observations": (self.observation_shape, "float or integer"),
            "actions": (self.head.action_shape, action_dtype),
            "advantages": ((), "floating"),
            "returns": ((), "floating"),
        }

    def _validate_batch(self, data) -> dict:
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        spec = self.batch_spec()

        def describe(key):
            shape, dtype = spec[key]
            return f"{key} [N" + "".join(f", {d}" for d in shape) + f"] ({dtype})"

        expected_all = ", ".join(describe(k) for k in BATCH_KEYS)
        if not isinstance(data, Mapping):
            raise TypeError(f"train_step expects a dict with {expected_all}; got {type(data).__name__}.")
        batch, n = {}, None
        for key in BATCH_KEYS:
            if key not in data:
                raise ValueError(f"batch is missing key {key!r}; expected {expected_all}.")
            value = data[key]
            if not hasattr(value, "dtype") or not hasattr(value, "shape"):
                value = np.asarray(value)
            shape = tuple(value.shape)
            expected_shape, expected_dtype = spec[key]
            if len(shape) != 1 + len(expected_shape) or any(
                s is not None and s != e for s, e in zip(shape[1:], expected_shape)
            ):
                raise ValueError(f"batch[{key!r}] has shape {list(shape)}; expected {describe(key)}.")
            if shape[0] is not None:
                if n is None:
                    n = shape[0]
                elif shape[0] != n:
                    raise ValueError(
                        f"batch[{key!r}] has {shape[0]} samples but batch['observations'] has {n}; "
                        f"expected {describe(key)} with the same N for every key."
                    )
            dtype = tf.as_dtype(value.dtype)
            ok = {
                "integer": dtype.is_integer or dtype.is_bool,
                "floating": dtype.is_floating,
                "float or integer": dtype.is_floating or dtype.is_integer,
            }[expected_dtype]
            if not ok:
                raise ValueError(f"batch[{key!r}] has dtype {dtype.name}; expected {describe(key)}.")
            batch[key] = self.head.cast_actions(value) if key == "actions" else tf.cast(value, tf.float32)
        if n == 0:
            raise ValueError(f"batch is empty (N = 0); expected {expected_all} with N >= 1.")
        for key in ("policy_version", *LOG_KEYS):
            if key in data:
                value = data[key]
                shape = tuple(getattr(value, "shape", ()))
                if len(shape) > 1 or shape == (0,):
                    raise ValueError(
                        f"batch[{key!r}] must be a scalar or a vector repeating one value ([1] or [N]); "
                        f"got shape {list(shape)}."
                    )
                value = tf.cast(value, tf.int64 if key == "policy_version" else tf.float32)
                batch[key] = tf.reshape(value, [-1])[0]
        return batch


def explained_variance(predictions, targets):
    """``1 − Var(targets − predictions) / Var(targets)``; NaN when the targets are constant."""
    target_variance = tf.math.reduce_variance(targets)
    return tf.where(
        target_variance > 0,
        1.0 - tf.math.reduce_variance(targets - predictions) / tf.where(target_variance > 0, target_variance, 1.0),
        float("nan"),
    )


def _explained_variance(replicas, predictions, targets):
    """:func:`explained_variance` over the whole batch of per-replica values."""
    if replicas.single:
        return explained_variance(predictions, targets)
    _, target_variance = replicas.moments(targets)
    _, residual_variance = replicas.moments(replicas.run(lambda p, t: t - p, predictions, targets))
    return tf.where(
        target_variance > 0,
        1.0 - residual_variance / tf.where(target_variance > 0, target_variance, 1.0),
        float("nan"),
    )


def _float_keys(head):
    keys = ["observations", "advantages", "returns"]
    if not head.integer_actions:
        keys.append("actions")
    return keys


def _validate_hyperparameters(**values):
    """Raises ValueError/TypeError naming the argument and its allowed range."""
    rules = {
        "max_kl": (lambda v: v > 0, "a number > 0"),
        "damping": (lambda v: v >= 0, "a number >= 0"),
        "cg_iterations": (lambda v: v >= 1, "an integer >= 1"),
        "backtrack_coefficient": (lambda v: 0 < v < 1, "a number in the open interval (0, 1)"),
        "backtrack_iterations": (lambda v: v >= 1, "an integer >= 1"),
        "fvp_fraction": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
        "value_epochs": (lambda v: v >= 0, "an integer >= 0"),
        "value_batch_size": (lambda v: v >= 1, "an integer >= 1"),
    }
    integers = {"cg_iterations", "backtrack_iterations", "value_epochs", "value_batch_size"}
    for name, value in values.items():
        check, allowed = rules[name]
        is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not is_number or (name in integers and not float(value).is_integer()):
            raise TypeError(f"{name} must be {allowed}; got {value!r} of type {type(value).__name__}.")
        if not np.isfinite(value) or not check(value):
            raise ValueError(f"{name} must be {allowed}; got {value!r}.")
