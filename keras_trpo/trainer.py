"""The Keras plumbing of TRPO: ``compile``, ``fit`` and the one train function, for every kind of input.

:class:`Trainer` is the ``keras.Model`` base of :class:`keras_trpo.TRPO`, as
Keras' own ``TensorFlowTrainer`` is of ``keras.Model``; ``TRPO`` itself holds
the networks and ``train_step``. ``make_train_function`` returns a
:class:`TrainFunction`; Keras calls it
with its epoch iterator. One call is one update:

1. the batch: read from a one-batch ``PyDataset`` (``Rollouts``) right now, in
   this thread, when ``TRPO.fit`` has set :attr:`TrainFunction.source`;
   otherwise the next element of Keras' iterator (a ``tf.data`` dataset, or
   the per-replica batch under a ``tf.distribute`` strategy);
2. the stale-batch check, on the host, before any compute;
3. ``train_step`` compiled once per batch structure (``tf.function``, with
   XLA when the model was compiled with ``jit_compile=True``), or eagerly
   under ``run_eagerly=True``; under a strategy it runs in the cross-replica
   context (see :mod:`keras_trpo.distribute`);
4. one :class:`~keras_trpo.errors.UpdateRejectedWarning` if the update was rejected.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from keras_trpo import actor_critic, distribute, errors, validation
from keras_trpo.progbar import ProgressBar


class Trainer(keras.Model):
    """``compile``, ``fit`` and ``make_train_function`` of :class:`keras_trpo.TRPO`.

    Subclasses provide ``train_step``, ``policy_variables``, ``value_variables``, ``policy_version``,
    ``seed_generator``, ``observation_spec`` and ``_replicas`` (a :class:`~keras_trpo.distribute.Replicas`).
    """

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

    def save(self, filepath, *args, **kwargs):
        """``keras.Model.save``, after checking that the config serializes (custom networks).

        Keras would otherwise leave a partly written file behind when a network cannot be rebuilt.
        """
        self.check_saveable()
        return super().save(filepath, *args, **kwargs)

    def check_saveable(self) -> None:
        """Raises ValueError if a ``.keras`` file of this model could not be loaded back."""

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
        # A frozen layer shared by both networks may have been unfrozen since the model was built.
        actor_critic.check_variables_not_shared(self.policy_variables, self.value_variables)
        super().compile(optimizer=optimizer, **kwargs)
        # Build the optimizer state for the value network only.
        self.optimizer.build(self.value_variables)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs):
        """``keras.Model.fit``: one epoch of :class:`keras_trpo.Rollouts` is one TRPO iteration.

        A one-batch ``PyDataset`` is read by the train function itself, right before
        each update, in this thread (:mod:`keras_trpo.trainer`): nothing is prefetched,
        and an exception raised while collecting (``RolloutError``, ``KeyboardInterrupt``)
        reaches the caller as itself. Under a ``tf.distribute`` strategy the batches are
        split over the replicas (:func:`keras_trpo.distribute.distribute_py_dataset`).
        Each rejected update issues one :class:`keras_trpo.UpdateRejectedWarning`.
        """
        _check_fit_arguments(self, x, y, {"batch_size": batch_size, **kwargs})
        validation.warn_about_keras_best_callbacks(callbacks)
        validation.warn_about_backup_without_rollouts(x, callbacks)
        if verbose != 0 and not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks or []):
            callbacks = [*(callbacks or []), ProgressBar()]  # Keras then adds no bar of its own
        train_function, source = self.make_train_function(), x
        if not self._replicas.default:
            x = distribute.distribute_py_dataset(x, self._replicas.strategy)
            kwargs.setdefault("shuffle", False)
        elif isinstance(x, keras.utils.PyDataset) and len(x) == 1 and kwargs.get("steps_per_epoch") is None:
            # Keras gets a one-element placeholder, so its epoch has exactly one step; the train
            # function reads the real batch from the PyDataset (no tf.data generator per epoch).
            train_function.source, x = x, tf.data.Dataset.from_tensors(np.zeros((), np.int8))
            kwargs.setdefault("shuffle", False)
        if hasattr(source, "pending_error"):
            source.pending_error = None
        try:
            with warnings.catch_warnings():
                if not self._replicas.default:
                    # Each epoch's input ends after its one batch: that is how it stays on-policy.
                    warnings.filterwarnings("ignore", message="Your input ran out of data")
                return super().fit(x, y, batch_size, epochs, verbose, callbacks, **kwargs)
        except tf.errors.OpError:
            # Under a strategy a Rollouts batch is collected on a tf.data thread, which reports any
            # Python exception as UnknownError; give the user the original one (RolloutError, ...).
            original = getattr(source, "pending_error", None)
            if original is None:
                raise
            source.pending_error = None
            raise original from original.__cause__
        finally:
            train_function.source = None

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict``, after checking ``x`` in one line (Keras would split a list into inputs)."""
        self.observation_spec.check_input(x, "model.predict x")
        return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        """``keras.Model.predict_on_batch``, after the same check as :meth:`predict`."""
        self.observation_spec.check_input(x, "model.predict_on_batch x")
        return super().predict_on_batch(x)

    def evaluate(self, *args, **kwargs):
        """Not Keras' supervised ``evaluate``: TRPO has no labelled data to score."""
        raise TypeError(
            "TRPO has no loss to evaluate on data. Evaluate the policy on an environment with "
            "keras_trpo.evaluate(model, 'CartPole-v1', episodes=10), or during fit with "
            "keras_trpo.callbacks.Evaluation(env, every=10)."
        )

    def make_train_function(self, force=False):
        """The one train function for every input and strategy: a :class:`TrainFunction`."""
        if self.steps_per_execution != 1:
            raise ValueError(f"TRPO runs one update per step; got steps_per_execution={self.steps_per_execution}.")
        if self.train_function is None or force:
            self.train_function = TrainFunction(self)
        return self.train_function

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Private Keras hook, overridden on purpose: under a strategy Keras reads one batch here to
        # build the model symbolically and reduces it across replicas, which fails for dict batches
        # under MultiWorkerMirroredStrategy. TRPO builds its networks in __init__ and the critic's
        # optimizer in compile, so there is nothing to build. tests/test_trainer.py fails if
        # Keras renames it or stops calling it.
        if self._replicas.default:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _check_fit_arguments(model, x, y, kwargs) -> None:
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
        source: the one-batch ``PyDataset`` read directly by each call, or ``None``
            to read Keras' iterator.
    """

    def __init__(self, model):
        self.model = model
        self.source = None
        self._compiled = {}

    def __call__(self, iterator):
        model = self.model
        batch = validation.unwrap(self.source[0] if self.source is not None else next(iterator))
        check_fresh(model, batch)
        eager = model.run_eagerly and model._replicas.default  # a strategy's update is always compiled
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

    def _step_for(self, batch):
        """The compiled ``train_step`` for batches shaped like ``batch`` (free batch dimension)."""
        options = {"jit_compile": bool(self.model.jit_compile), "input_signature": None}
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
            # branch is on static values, so conversion would change nothing but costs ~3 s of
            # tracing (3.5 s -> 0.6 s for the 64x64 CartPole model). Keras' own train function
            # opts out too (do_not_convert in backend/tensorflow/trainer.py).
            self._compiled[key] = tf.function(self.model.train_step, autograph=False, **options)
        return self._compiled[key]

    def tracing_count(self) -> int:
        """How many times ``train_step`` was traced by this function (1 per batch structure)."""
        return sum(function.experimental_get_tracing_count() for function in self._compiled.values())


def check_fresh(model, batch) -> None:
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
