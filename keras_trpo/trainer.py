"""The Keras plumbing of TRPO: ``compile``, ``fit`` and the one train function, for every kind of input.

:class:`Trainer` is the ``keras.Model`` base of :class:`keras_trpo.TRPO`, as
Keras' own ``TensorFlowTrainer`` is of ``keras.Model``; ``TRPO`` itself holds
the networks and ``train_step``. ``make_train_function`` returns a
:class:`TrainFunction`; Keras calls it
with its epoch iterator. One call is one update:

1. the batch, from the :class:`~keras_trpo.feeding.Feed` that ``fit`` installed: read
   from a one-batch ``PyDataset`` (``Rollouts``) right now, in this thread, or
   the next element of Keras' iterator (a ``tf.data`` dataset, or the
   per-replica batch under a ``tf.distribute`` strategy);
2. the stale-batch check, on the host, before any compute;
3. ``train_step`` compiled once per batch structure (``tf.function``, with
   XLA when the model was compiled with ``jit_compile=True``), or eagerly
   under ``run_eagerly=True``; under a strategy it runs in the cross-replica
   context (see :mod:`keras_trpo.distribute`);
4. one :class:`~keras_trpo.errors.UpdateRejectedWarning` if the update was rejected.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from keras_trpo import actor_critic, distribute, errors, feeding, masking, validation
from keras_trpo.distribute import Replicas
from keras_trpo.observations import ObservationSpec
from keras_trpo.progbar import ProgressBar


class Trainer(keras.Model):
    """``compile``, ``fit`` and ``make_train_function`` of :class:`keras_trpo.TRPO`.

    It owns the state of training: :attr:`replicas` (the devices the update runs on),
    the update counter :attr:`policy_version` and ``seed_generator``, the critic's shuffle
    stream (both created by :meth:`_add_training_state`). Subclasses provide ``train_step``,
    ``observation_spec`` and the ``policy_variables`` and ``value_variables`` properties.
    """

    observation_spec: ObservationSpec
    action_space: gymnasium.spaces.Space
    action_mask: bool  # whether the model masks illegal actions (keras_trpo.masking)
    # keras.Model's own attributes, as this module and TRPO use them.
    train_function: TrainFunction | None
    built: bool

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # Keras' own rule (TensorFlowTrainer.__init__): a model created under a strategy's scope
        # trains with that strategy. Then train_step runs cross-replica (keras_trpo.distribute).
        self._replicas = Replicas(tf.distribute.get_strategy() if tf.distribute.has_strategy() else None)

    def _add_training_state(self, seed: int | None) -> None:
        """Creates the update counter and the critic's shuffle stream; the subclass calls it after its weights."""
        # Incremented by every train_step: Rollouts stamps each batch with the
        # version that collected it, and train_step refuses a stale batch.
        self._policy_version = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="policy_version"
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="critic_shuffle_seed")

    @property
    def replicas(self) -> Replicas:
        """The strategy's replicas the update runs on (``replicas.distributed`` False: one device)."""
        return self._replicas

    @property
    def policy_version(self) -> int:
        """Number of ``train_step`` calls so far: identifies the weights that collect a batch."""
        return int(self._policy_version.numpy())

    # The trust-region radius and the damping are variables (created by the subclass) so that callbacks change
    # them between iterations without retracing train_step.
    _max_kl: keras.Variable
    _damping: keras.Variable

    @property
    def max_kl(self) -> float:
        return float(self._max_kl.numpy())

    @max_kl.setter
    def max_kl(self, value: float) -> None:
        validation.check_hyperparameters(max_kl=value)
        self._max_kl.assign(float(value))

    @property
    def damping(self) -> float:
        return float(self._damping.numpy())

    @damping.setter
    def damping(self, value: float) -> None:
        # Not validated: negative damping is how the reliability tests build an
        # indefinite Fisher. The constructor rejects it.
        self._damping.assign(float(value))


    @property
    def policy_variables(self) -> list[keras.Variable]:
        """Trainable weights moved by the trust-region step."""
        raise NotImplementedError

    @property
    def value_variables(self) -> list[keras.Variable]:
        """Trainable weights of the critic (the compiled optimizer's only targets)."""
        raise NotImplementedError


    # .keras files and weight checkpoints (BackupAndRestore): TRPO overrides compile(), so
    # Keras will not recompile it on load unless these two are defined; without the
    # optimizer its state (Adam moments, iterations) would not be restored either.
    def get_compile_config(self) -> dict[str, Any]:
        if getattr(self, "optimizer", None) is None:
            return {}
        return {"optimizer": keras.saving.serialize_keras_object(self.optimizer)}

    def compile_from_config(self, config: Mapping[str, Any] | None) -> None:
        config = dict(config or {})
        if config.get("optimizer") is None:
            return
        self.compile(optimizer=keras.saving.deserialize_keras_object(config["optimizer"]))

    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """``keras.Model.save``, after checking that the config serializes (custom networks).

        Keras would otherwise leave a partly written file behind when a network cannot be rebuilt.
        """
        self.check_saveable()
        return super().save(filepath, *args, **kwargs)

    def check_saveable(self) -> None:
        """Raises ValueError if a ``.keras`` file of this model could not be loaded back."""

    def check_batch_values(self, data: Any) -> None:
        """Raises ValueError for a batch whose values (not its shapes) are wrong, on the host before any compute."""

    # The critic-shuffle SeedGenerator state is not a Keras weight: store it alongside the
    # model's own variables so that a restored model continues the same random stream.
    _SEED_KEY = "critic_shuffle_seed_state"

    def save_own_variables(self, store: Any) -> None:
        super().save_own_variables(store)
        store[self._SEED_KEY] = self.seed_generator.state.numpy()

    def load_own_variables(self, store: Any) -> None:
        keys = list(store.keys())
        if self._SEED_KEY in keys:
            self.seed_generator.state.assign(store[self._SEED_KEY])
            store = {key: store[key] for key in keys if key != self._SEED_KEY}
        super().load_own_variables(store)

    def compile(self, optimizer: Any = "adam", **kwargs: Any) -> None:
        """Configures the critic optimizer (the policy is moved by the TRPO step only).

        ``loss`` and ``metrics`` are not used by TRPO and are rejected.
        """
        for unused in ("loss", "metrics", "weighted_metrics", "loss_weights"):
            if kwargs.get(unused) is not None:
                raise ValueError(
                    f"TRPO.compile() got {unused}={kwargs[unused]!r}; TRPO defines its own policy "
                    "and critic objectives. Pass only optimizer= (it trains the value network)."
                )
        # A frozen layer shared by both networks may have been unfrozen since the model was built.
        actor_critic.check_variables_not_shared(self.policy_variables, self.value_variables)
        super().compile(optimizer=optimizer, **kwargs)
        # Build the optimizer state for the value network only.
        self.optimizer.build(self.value_variables)

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = None,
        epochs: int = 1,
        verbose: Any = "auto",
        callbacks: list[keras.callbacks.Callback] | None = None,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        """``keras.Model.fit``: one epoch of :class:`keras_trpo.Rollouts` is one TRPO iteration.

        A one-batch ``PyDataset`` is read by the train function itself, right before
        each update, in this thread (:mod:`keras_trpo.trainer`): nothing is prefetched,
        and an exception raised while collecting (``RolloutError``, ``KeyboardInterrupt``)
        reaches the caller as itself. Under a ``tf.distribute`` strategy the batches are
        split over the replicas (:func:`keras_trpo.distribute.distribute_py_dataset`).
        Each rejected update issues one :class:`keras_trpo.UpdateRejectedWarning`.
        How the batches reach the update: :mod:`keras_trpo.feeding`.
        """
        _check_fit_arguments(self, x, y, {"batch_size": batch_size, **kwargs})
        validation.warn_about_keras_best_callbacks(callbacks)
        validation.warn_about_backup_without_rollouts(x, callbacks)
        if verbose != 0 and not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks or []):
            callbacks = [*(callbacks or []), ProgressBar()]  # Keras then adds no bar of its own
        train_function = self.make_train_function()
        feed = feeding.Feed.for_fit(x, self.replicas, kwargs.get("steps_per_epoch"))
        if feed.in_order:
            kwargs.setdefault("shuffle", False)
        with feed.serving(train_function):
            return super().fit(feed.keras_input, y, batch_size, epochs, verbose, callbacks, **kwargs)

    def predict(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        """``keras.Model.predict``, after checking ``x`` in one line (Keras would split a list into inputs).

        A masked model takes its masks as an ``action_mask`` entry of a dict ``x`` (:mod:`keras_trpo.masking`).
        """
        self._check_predict_input(x, "model.predict x")
        return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x: Any) -> Any:
        """``keras.Model.predict_on_batch``, after the same check as :meth:`predict`."""
        self._check_predict_input(x, "model.predict_on_batch x")
        return super().predict_on_batch(x)

    def _check_predict_input(self, x: Any, what: str) -> None:
        observations, mask = masking.split(x, None, self.observation_spec.keys, self.action_mask)
        self.observation_spec.check_input(observations, what)
        if self.action_mask or mask is not None:
            arrays = isinstance(observations, (Mapping, np.ndarray)) or tf.is_tensor(observations)
            n = self.observation_spec.check(observations, what) if arrays else None  # the rows the masks must match
            size = masking.mask_size(self.action_space) if self.action_mask else 0
            masking.check_call_mask(mask, self.action_mask, size, n)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Not Keras' supervised ``evaluate``: TRPO has no labelled data to score."""
        raise TypeError(
            "TRPO has no loss to evaluate on data. Evaluate the policy on an environment with "
            "keras_trpo.evaluate(model, 'CartPole-v1', episodes=10), or during fit with "
            "keras_trpo.callbacks.Evaluation(env, every=10)."
        )

    def make_train_function(self, force: bool = False) -> TrainFunction:
        """The one train function for every input and strategy: a :class:`TrainFunction`."""
        if self.steps_per_execution != 1:
            raise ValueError(f"TRPO runs one update per step; got steps_per_execution={self.steps_per_execution}.")
        if self.train_function is None or force:
            self.train_function = TrainFunction(self)
        return self.train_function

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Private Keras hook, overridden on purpose: under a strategy Keras reads one batch here to
        # build the model symbolically and reduces it across replicas, which fails for dict batches
        # under MultiWorkerMirroredStrategy. TRPO builds its networks in __init__ and the critic's
        # optimizer in compile, so there is nothing to build. tests/test_trainer.py fails if
        # Keras renames it or stops calling it.
        if not self.replicas.distributed:
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _check_fit_arguments(model: Trainer, x: Any, y: Any, kwargs: Mapping[str, Any]) -> None:
    """Refuses what ``fit`` cannot do for TRPO, with one line saying what to do instead."""
    usage = "model.fit(keras_trpo.Rollouts(env, model, steps=2048), epochs=N)"
    if isinstance(x, (gymnasium.Env, gymnasium.vector.VectorEnv)):
        raise TypeError(f"TRPO.fit takes rollouts, not an environment: {usage} (1 epoch = 1 TRPO iteration).")
    if x is None or isinstance(x, (np.ndarray, list, tuple)) or tf.is_tensor(x):
        raise TypeError(
            f"TRPO.fit takes on-policy rollouts, not {type(x).__name__}: {usage}. (A tf.data.Dataset or "
            "PyDataset of dict batches with observations, actions, advantages and returns also works.)"
        )
    if y is not None:
        raise ValueError(f"TRPO.fit takes no targets (y); the batches carry advantages and returns: {usage}.")
    given = [name for name in ("validation_data", "validation_steps") if kwargs.get(name) is not None]
    given += ["validation_split"] if kwargs.get("validation_split") else []
    if given:
        raise ValueError(
            f"TRPO.fit does not take {given[0]}: TRPO has no loss to validate. Evaluate the policy with "
            "callbacks=[keras_trpo.callbacks.Evaluation(env, every=10)] (logs eval_return)."
        )
    weighting = [name for name in ("batch_size", "class_weight", "sample_weight") if kwargs.get(name) is not None]
    if weighting:
        raise ValueError(
            f"TRPO.fit does not take {weighting[0]}: one batch is one TRPO iteration, and each transition counts by "
            "its advantage. Set the batch with Rollouts(steps=...) and the critic's minibatches with "
            "TRPO(value_batch_size=...)."
        )
    collector = getattr(x, "model", None)
    if isinstance(x, keras.utils.PyDataset) and collector is not None and collector is not model:
        raise ValueError(
            f"TRPO.fit got {type(x).__name__} that act with another model ({getattr(collector, 'name', collector)!r}, "
            f"not {model.name!r}), so every batch would be off-policy: build them for this model, Rollouts(env, model)."
        )
    if kwargs.get("steps_per_epoch") is not None and isinstance(x, keras.utils.PyDataset) and len(x) == 1:
        raise ValueError(
            f"TRPO.fit got steps_per_epoch={kwargs['steps_per_epoch']}: one epoch of {type(x).__name__} is one TRPO "
            "iteration on one fresh batch. Use epochs= for the number of iterations and Rollouts(steps=) for "
            "the env steps per iteration."
        )


class TrainFunction:
    """``train_function(iterator) -> logs`` for ``keras.Model.fit``; see the module docstring.

    Attributes:
        feed: where each call reads its batch (:mod:`keras_trpo.feeding`): the feed of the
            running ``fit``, else Keras' iterator.
    """

    def __init__(self, model: Trainer):
        self.model = model
        self.feed: feeding.Feed = feeding.KERAS_ITERATOR
        self._compiled: dict[str, Any] = {}  # a tf.function per batch structure

    def __call__(self, iterator: Iterator[Any]) -> dict[str, tf.Tensor]:
        model = self.model
        batch = self.feed.next_batch(iterator)
        check_fresh(model, batch)
        eager = model.run_eagerly and not model.replicas.distributed  # a strategy's update is always compiled
        if not eager:
            model.check_batch_values(batch)  # train_step makes these checks itself when it runs eagerly
        logs = model.train_step(batch) if eager else self._step_for(batch)(batch)
        if "step_accepted" in logs and float(logs["step_accepted"]) < 0.5:
            reason = int(round(float(logs.get("rejection_reason", errors.NON_FINITE))))
            warnings.warn(
                f"TRPO update at policy_version {model.policy_version - 1} rejected (reason {reason}): "
                f"{errors.REJECTION_REASONS.get(reason, 'unknown')}. Policy, critic and normalizer are "
                "unchanged; training continues with the next batch.",
                errors.UpdateRejectedWarning,
                stacklevel=2,
            )
        return logs

    def _step_for(self, batch: Any) -> Callable[[Any], dict[str, tf.Tensor]]:
        """The compiled ``train_step`` for batches shaped like ``batch`` (free batch dimension)."""
        options: dict[str, Any] = {"jit_compile": bool(self.model.jit_compile), "input_signature": None}
        if not isinstance(batch, Mapping):
            key = "not a dict"  # train_step raises the TypeError naming the expected keys
        elif any(map(distribute.is_per_replica, batch.values())):
            # Specs come from the per-replica values themselves. No XLA: the update's all-reduces
            # run inside strategy.run, which XLA does not compile.
            key, options = "per-replica", {"jit_compile": False, "reduce_retracing": True}
        else:
            signature = validation.batch_signature(batch)
            key = repr(tf.nest.map_structure(lambda v: (tuple(v.shape), v.dtype.name), signature))
            options["input_signature"] = [signature]
        if key not in self._compiled:
            # No autograph: the update's loops are explicit tf.while_loop/tf.cond and every Python
            # branch is on static values, so conversion would change nothing but the tracing time
            # (measured in benchmarks/README.md, "autograph=False"). Keras' own train function
            # opts out too (do_not_convert in backend/tensorflow/trainer.py).
            self._compiled[key] = tf.function(self.model.train_step, autograph=False, **options)
        return self._compiled[key]

    def tracing_count(self) -> int:
        """How many times ``train_step`` was traced by this function (1 per batch structure)."""
        return sum(function.experimental_get_tracing_count() for function in self._compiled.values())


def check_fresh(model: Trainer, batch: Any) -> None:
    """Raises :class:`~keras_trpo.errors.StaleBatchError` if ``batch`` was collected by other weights.

    Reads ``batch["policy_version"]`` on the host: a numpy array, an eager
    tensor, or a per-replica value. Symbolic values (inside ``tf.function``)
    are left to the in-graph check of ``train_step``, which rejects a stale
    batch (``rejection_reason`` 4) even where XLA drops assertions.
    """
    batch = validation.unwrap(batch)
    if not isinstance(batch, Mapping) or "policy_version" not in batch:
        return
    value = batch["policy_version"]
    if distribute.is_per_replica(value):
        value = model.distribute_strategy.experimental_local_results(value)[0]
    if tf.is_tensor(value) and tf.is_symbolic_tensor(value):
        return
    versions = np.reshape(np.asarray(value), [-1])
    if versions.size and int(versions[0]) != model.policy_version:
        raise errors.StaleBatchError(errors.stale_batch_message(int(versions[0]), model.policy_version))
