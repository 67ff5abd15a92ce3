"""Data-parallel TRPO: batch means computed per replica and averaged across replicas.

Every quantity TRPO needs from a batch is a mean over its samples: the
surrogate, its gradient, the mean KL and its Fisher-vector products, the
critic's loss and gradient, the advantage and observation moments. With the
batch split evenly over ``R`` replicas, the mean over the batch is the mean of
the ``R`` per-replica means. :class:`Replicas` computes exactly that with a
``tf.distribute`` strategy: each local mean inside ``strategy.run``, then
``strategy.reduce(MEAN)``.

Under a strategy, the train function (:class:`keras_trpo.trainer.TrainFunction`)
reads the per-replica batch and runs the whole update in the cross-replica context (Keras would run
``train_step`` once per replica). This is what makes the algorithm's control
flow possible under ``MirroredStrategy``: conjugate gradient, the line search
and the critic epochs are ``tf.while_loop``s whose bodies need cross-replica
means, and a synchronization point inside control flow is not allowed in a
replica context, while ``strategy.run`` inside control flow in the
cross-replica context is. Parameters are then assigned in the cross-replica
context, which updates every replica's copy, so all replicas hold the same
weights after every step by construction.

Without a strategy, ``Replicas(None)`` makes ``run(fn)`` a plain ``fn()`` and
the reduction the identity, so the single-device update is the same code and
runs exactly the same operations as before distribution was added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from keras_trpo import errors, validation


def check_even_split(steps: int, local_replicas: int) -> None:
    """Raises ValueError unless a batch of ``steps`` rows splits evenly over ``local_replicas``.

    Every batch quantity is the mean of the replicas' means, which is the batch
    mean only when every replica holds the same number of rows.
    """
    if steps % local_replicas:
        raise ValueError(errors.uneven_split_message(steps, local_replicas))


def distribute_py_dataset(
    py_dataset: keras.utils.PyDataset,
    strategy: tf.distribute.Strategy,
    on_error: Callable[[BaseException], None] | None = None,
) -> tf.distribute.DistributedDataset:
    """Splits each batch of a ``PyDataset`` (e.g. :class:`keras_trpo.Rollouts`) over the local replicas.

    Uses ``strategy.distribute_datasets_from_function``: every worker builds its
    own input pipeline from *its* ``py_dataset`` (each worker collects its own
    rollouts), and each batch of ``N`` rows becomes ``N / local replicas`` rows
    per local replica. Nothing is read ahead: a batch is collected only when the
    train function asks for it, and an epoch ends when the dataset's batches
    are used up (one per epoch for ``Rollouts``).

    Args:
        py_dataset: a ``keras.utils.PyDataset`` yielding dicts of arrays with a
            common first dimension.
        strategy: the model's ``tf.distribute`` strategy.
        on_error: called with any exception ``py_dataset`` raises while a batch is read
            on a ``tf.data`` thread (which TensorFlow reports as an ``UnknownError``),
            so that ``fit`` can raise the original one (:mod:`keras_trpo.feeding`).

    Returns:
        A ``tf.distribute.DistributedDataset`` for ``keras.Model.fit``.

    Raises:
        TypeError: ``py_dataset`` is not a ``PyDataset`` of dicts.
    """
    if not isinstance(py_dataset, keras.utils.PyDataset):
        raise TypeError(
            "Under a tf.distribute strategy, TRPO.fit takes a keras_trpo.Rollouts (or another "
            f"keras.utils.PyDataset of dict batches); got {type(py_dataset).__name__}."
        )
    first = py_dataset[0]  # Rollouts caches it: it is served again as the first batch
    if not isinstance(first, dict):
        raise TypeError(f"TRPO batches are dicts of arrays; the dataset yields {type(first).__name__}.")
    check_even_split(validation.batch_size(first), len(strategy.extended.worker_devices))
    signature = validation.batch_signature(first)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines

        def shares() -> Iterator[Any]:
            for index in range(len(py_dataset)):
                try:
                    batch = py_dataset[index]
                except BaseException as error:
                    if on_error is not None:
                        on_error(error)
                    raise
                n = validation.batch_size(batch)
                check_even_split(n, local)
                size = n // local
                for k in range(local):
                    # tf.nest: the observations of a Dict space are a dict of arrays.
                    yield tf.nest.map_structure(lambda value: value[k * size : (k + 1) * size], batch)

        return tf.data.Dataset.from_generator(shares, output_signature=signature)

    return strategy.distribute_datasets_from_function(dataset_fn)


def is_per_replica(value: Any) -> bool:
    """Whether ``value`` holds one share per replica (a ``tf.distribute.DistributedValues``)."""
    return isinstance(value, tf.distribute.DistributedValues)


class Replicas:
    """Per-replica computation and cross-replica means for one ``tf.distribute`` strategy.

    Args:
        strategy: the strategy in whose cross-replica context the update runs, or
            ``None`` for one device (then every method is a plain computation).

    Example:

    ```python
    replicas = Replicas(strategy)
    mean_advantage = replicas.mean(tf.reduce_mean, advantages)   # advantages: per-replica values
    ```
    """

    def __init__(self, strategy: tf.distribute.Strategy | None = None):
        self.strategy = strategy
        #: Number of replicas in sync (1 without a strategy); with 1, means over replicas are the values.
        self.count: int = 1 if strategy is None else strategy.num_replicas_in_sync

    @property
    def distributed(self) -> bool:
        """False without a strategy: then ``run`` is a plain call and ``reduce_mean`` the identity."""
        return self.strategy is not None

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn`` on each replica's share of ``args``; returns per-replica values."""
        if self.strategy is None:
            return fn(*args)
        return self.strategy.run(fn, args=args)

    def reduce_mean(self, per_replica: Any) -> Any:
        """The mean over replicas of per-replica values (any nested structure)."""
        if self.strategy is None or (self.count == 1 and not is_per_replica(per_replica)):
            return per_replica
        return tf.nest.map_structure(
            lambda value: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None), per_replica
        )

    def mean(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The mean over replicas of ``fn(*local args)``, for ``fn`` returning local batch means.

        With several replicas the float32 outputs of ``fn`` (a loss and a gradient
        list, say) are packed into one vector, so each call costs one all-reduce
        rather than one per tensor: across workers every all-reduce is a network
        round trip, and the critic makes one call per minibatch.
        """
        if self.strategy is None:
            return fn(*args)
        strategy, spec = self.strategy, {}

        def packed(*local_args: Any) -> tf.Tensor:
            out = fn(*local_args)
            leaves = tf.nest.flatten(out)
            spec["structure"], spec["shapes"] = out, [leaf.shape for leaf in leaves]
            if any(leaf.dtype != leaves[0].dtype or not leaf.dtype.is_floating or not leaf.shape.is_fully_defined() for leaf in leaves):
                raise TypeError("Replicas.mean packs float tensors of one dtype and static shape")
            return tf.concat([tf.reshape(leaf, [-1]) for leaf in leaves], axis=0)

        vector = strategy.reduce(tf.distribute.ReduceOp.MEAN, self.run(packed, *args), axis=None)
        sizes = [shape.num_elements() for shape in spec["shapes"]]
        parts = [tf.reshape(part, shape) for part, shape in zip(tf.split(vector, sizes), spec["shapes"])]
        return tf.nest.pack_sequence_as(spec["structure"], parts)

    def moments(self, values: Any, axes: tuple[int, ...] = (0,)) -> tuple[Any, Any]:
        """Mean and variance over the whole batch of per-replica ``values`` (equal shares).

        Pooled from per-replica ``tf.nn.moments``: ``var = mean_r(var_r + (mean_r − mean)²)``;
        with one replica this is exactly ``tf.nn.moments``.
        """
        local_mean, local_variance = self.run(lambda x: tf.nn.moments(x, axes=list(axes)), values)
        mean = self.reduce_mean(local_mean)
        if self.count == 1:
            return mean, local_variance
        spread = self.run(lambda m, v: v + tf.square(m - mean), local_mean, local_variance)
        return mean, self.reduce_mean(spread)

    def assert_equal_shares(self, values: Any) -> None:
        """Fails unless every replica (on every worker) holds as many rows of ``values`` as the others.

        Every batch quantity is a mean of the replicas' means, which is the batch
        mean only for equal shares. ``check_even_split`` checks one worker's split
        on the host; this checks across workers, in the graph.
        """
        if self.count == 1:
            return
        sizes = self.run(lambda v: tf.cast(tf.shape(v)[0], tf.float32), values)
        mean_size = self.reduce_mean(sizes)
        self.run(
            lambda size: tf.debugging.assert_equal(
                size, mean_size, message="The batch does not split into equal shares over the replicas: use the "
                "same number of steps on every worker, divisible by the number of local replicas."
            ),
            sizes,
        )

    def local_size(self, values: Any) -> tf.Tensor:
        """Number of samples on one replica (all replicas hold the same number)."""
        if self.strategy is None:
            return tf.shape(values)[0]
        return tf.shape(self.strategy.experimental_local_results(values)[0])[0]

    def apply_gradients(
        self, optimizer: keras.optimizers.Optimizer, gradients: list[tf.Tensor], variables: list[keras.Variable]
    ) -> Any:
        """``optimizer.apply`` of gradients that are already means over all replicas.

        A Keras optimizer must be applied in a replica context under a strategy,
        where it sums the gradients over replicas; each replica therefore passes
        ``gradients / R``, so the sum is the mean again.
        """
        if self.strategy is None or not _needs_merge_call(self.strategy):
            # MultiWorkerMirroredStrategy's optimizer update needs no merge_call: apply the mean
            # directly in the cross-replica context, with no second all-reduce.
            return optimizer.apply(gradients, variables)
        count = float(self.count)

        def apply_share() -> Any:
            # Computed inside the replica function, so each share lives on its replica's device
            # (the all-reduce in optimizer.apply reduces to the devices of its inputs).
            return optimizer.apply([tf.identity(g) / count for g in gradients], variables)

        return self.run(apply_share)


def _needs_merge_call(strategy: tf.distribute.Strategy) -> bool:
    """Whether a Keras optimizer must be applied from a replica context under ``strategy``.

    Keras' TF optimizer goes through ``maybe_merge_call``, which calls
    ``merge_call`` unless the strategy can do without (collective-op strategies
    such as ``MultiWorkerMirroredStrategy``); ``MirroredStrategy`` on CPUs needs it.

    Private attribute: ``StrategyExtended._use_merge_call`` is the very test
    Keras' ``maybe_merge_call`` makes, and TensorFlow has no public equivalent.
    ``tests/test_trainer.py`` fails if it disappears.
    """
    return bool(strategy.extended._use_merge_call())
