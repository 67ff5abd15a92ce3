"""Step 6 of the TRPO update: the critic's regression on the returns, kept only after an accepted policy step.

``TRPO.train_step`` calls :func:`train_kept_if_accepted` after the policy step of
:mod:`keras_trpo.update`; like it, every function takes the model and a
:class:`~keras_trpo.distribute.Replicas`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import keras
import tensorflow as tf

from keras_trpo.distribute import Replicas
from keras_trpo.ops import mean_of, sequence_rows
from keras_trpo.update import ActorCritic, Metrics, weighted_mean, weighted_moments
from keras_trpo.validation import float_dtype


def train_kept_if_accepted(
    accepted: tf.Tensor, model: ActorCritic, replicas: Replicas, observations: Any, returns: Any,
    memory: Any = None, weights: Any = None,
) -> Metrics:
    """Step 6: :func:`train`, kept with the normalizer's new moments if ``accepted``, else undone.

    The critic shares no variable with steps 1–5, so TensorFlow runs it beside them (two
    independent branches of the graph; benchmarks/README.md, "Round 2", measures what this
    saves). After a rejected policy
    step every variable it wrote is restored bit for bit (:func:`written_variables`; the value
    network is called without ``training=True``, so its layers write no other state) and the
    metrics are those of the unchanged critic. Under a ``tf.distribute`` strategy it starts
    after the line search's outcome, so that its all-reduces follow the policy step's on
    every worker (those of the final policy metrics stay in program order through TF's
    collective ordering). A recurrent model's critic trains on whole sequences (``memory``), its
    loss a mean over the real steps (``weights``, 0 on padding).
    """
    written = written_variables(model)
    saved = [tf.identity(v) for v in written]
    ordered = tf.control_dependencies([accepted]) if replicas.distributed else contextlib.nullcontext()
    with ordered, tf.name_scope("critic"):
        metrics = train(
            model, replicas, observations, returns, model.value_epochs, model.value_batch_size, model.seed_generator,
            memory, weights,
        )

    def keep() -> Metrics:
        if model.normalizer is not None:
            # After both updates: the "old" policy of this update was the one that collected the batch.
            normalizer_step(model.normalizer, replicas, observations, model.observation_spec, weights)
        return metrics

    def undo() -> Metrics:
        restore(written, saved)
        return value_metrics(model, replicas, observations, returns, memory, weights)

    return tf.cond(accepted, keep, undo)


def train(model: ActorCritic, replicas: Replicas, observations: Any, returns: Any, epochs: int,
          batch_size: int, seed_generator: keras.random.SeedGenerator, memory: Any = None, weights: Any = None
          ) -> Metrics:
    """Regresses V(s) on the returns: ``epochs`` shuffled passes of minibatches, with ``model.optimizer``.

    With ``R`` replicas each takes ``batch_size // R`` samples of its share per
    minibatch (the same permutation positions on every replica), and the optimizer
    applies the mean of the replicas' gradients. With ``memory`` (a recurrent model) the shuffled
    units are whole sequences of ``model.sequence_length`` rows (``batch_size // L`` per minibatch).
    """
    variables = model.value_variables
    value_of: Callable[[Any], tf.Tensor]
    length, extra = 1, tuple[Any, ...]()
    if memory is not None:
        inputs, value_of = (observations, memory), lambda x: model.value(*x)
        length, extra = model.sequence_length, (weights,)
    elif model.custom_networks[1]:  # e.g. a CNN: whole-batch float images would add to the update's peak memory
        inputs, value_of = observations, model.value
    else:
        # The default MLP's features (cast, normalization) are per row: computed once for the whole batch,
        # not in each of the epochs × minibatches steps; the same inputs bit for bit (issue 26).
        inputs, value_of = replicas.run(model.value_features, observations), model.value_from_features
    values_before = replicas.run(value_of, inputs)
    n = replicas.local_size(returns)
    if length > 1:
        n = n // length
    minibatch = tf.minimum(max(1, batch_size // replicas.count // length), n)
    batches_per_epoch = (n + minibatch - 1) // minibatch
    total = epochs * batches_per_epoch
    # One independent permutation of the (local) batch per epoch.
    permutations = tf.argsort(keras.random.uniform((epochs, n), seed=seed_generator), axis=-1)

    def body(k: tf.Tensor, loss_sum: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        epoch, start = k // batches_per_epoch, (k % batches_per_epoch) * minibatch
        index = permutations[epoch, start : tf.minimum(start + minibatch, n)]
        pooled: tuple[Any, ...] = ()
        if length > 1:  # the rows of the picked sequences; the mean is over their real steps on every replica
            index = sequence_rows(index, length)
            pooled = (replicas.mean(lambda w: tf.reduce_sum(tf.gather(w, index)), weights),)

        def local_loss_and_gradients(x: Any, r: tf.Tensor, w: Any) -> tuple[tf.Tensor, list[tf.Tensor]]:
            with tf.GradientTape() as tape:
                picked = tf.nest.map_structure(lambda t: tf.gather(t, index), (x, w))  # a dict for Dict spaces
                loss = mean_of(tf.square(value_of(picked[0]) - tf.gather(r, index)), *picked[1], *pooled)
            return loss, tape.gradient(loss, variables)

        loss, grads = replicas.mean(local_loss_and_gradients, inputs, returns, extra)
        replicas.apply_gradients(model.optimizer, grads, variables)
        return k + 1, loss_sum + loss

    _, loss_sum = tf.while_loop(lambda k, _: k < total, body, (tf.constant(0), tf.constant(0.0, float_dtype())))
    return {
        "value_loss": loss_sum / tf.cast(tf.maximum(total, 1), float_dtype()),
        "explained_variance": explained_variance(replicas, values_before, returns, weights),
    }


def written_variables(model: ActorCritic) -> list[Any]:
    """Every variable :func:`train` writes: the value network's, its optimizer's, the shuffle seed."""
    return [*model.value_variables, *model.optimizer.variables, model.seed_generator.state]


def restore(variables: list[Any], values: list[tf.Tensor]) -> None:
    """Assigns ``values`` (read before a step) back to ``variables``: the step is undone bit for bit."""
    for variable, value in zip(variables, values):
        variable.assign(value)


def normalizer_step(normalizer: Any, replicas: Replicas, observations: Any, spec: Any, weights: Any = None) -> None:
    """Merges the batch's float observation moments (over all replicas) into the running normalization.

    ``weights`` (a recurrent batch's ``sequence_mask``): the moments and the count are over the real steps.
    """
    flat = replicas.run(lambda o: tf.cast(spec.float_features(o), tf.float64), observations)
    if weights is None:
        mean, variance = replicas.moments(flat)
        normalizer.update_from_moments(mean, variance, tf.cast(replicas.local_size(flat) * replicas.count, tf.float64))
        return
    w = replicas.run(lambda m: tf.cast(m, tf.float64)[:, None], weights)
    total = replicas.mean(lambda m: tf.reduce_sum(m), w)
    mean = replicas.mean(lambda x, m: tf.reduce_sum(x * m, axis=0), flat, w) / total
    variance = replicas.mean(lambda x, m: tf.reduce_sum(tf.square(x - mean) * m, axis=0), flat, w) / total
    normalizer.update_from_moments(mean, variance, total * replicas.count)


def value_metrics(model: ActorCritic, replicas: Replicas, observations: Any, returns: Any,
                  memory: Any = None, weights: Any = None) -> Metrics:
    """Critic metrics of the current weights, without training (for a rejected update)."""
    values = replicas.run(model.value, observations, memory)
    if weights is None:
        loss = replicas.mean(lambda v, r: tf.reduce_mean(tf.square(v - r)), values, returns)
    else:
        loss = weighted_mean(replicas, lambda e: tf.square(e), replicas.run(lambda v, r: v - r, values, returns),
                             weights)
    return {"value_loss": loss, "explained_variance": explained_variance(replicas, values, returns, weights)}


def explained_variance(replicas: Replicas, predictions: Any, targets: Any, weights: Any = None) -> tf.Tensor:
    """``1 − Var(targets − predictions) / Var(targets)`` over the whole batch (over its real steps, given a
    recurrent batch's ``weights``); NaN for constant targets."""
    residuals = replicas.run(lambda p, t: t - p, predictions, targets)
    if weights is None:
        _, target_variance = replicas.moments(targets)
        _, residual_variance = replicas.moments(residuals)
    else:
        target_variance, residual_variance = (weighted_moments(replicas, x, weights)[1] for x in (targets, residuals))
    return tf.where(
        target_variance > 0,
        1.0 - residual_variance / tf.where(target_variance > 0, target_variance, 1.0),
        float("nan"),
    )
