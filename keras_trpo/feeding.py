"""How the batches of one ``fit`` call reach the train function (the role of Keras' ``EpochIterator``).

``TRPO.fit`` builds one :class:`Feed` for its ``x`` and trains inside
:meth:`Feed.serving`; :class:`keras_trpo.trainer.TrainFunction` only asks the
feed for the next batch. The feed is one of three kinds:

* **direct** (a one-batch ``PyDataset`` such as ``Rollouts``, one device): Keras
  gets a one-element placeholder dataset, so each epoch is one step, and each
  call reads ``x[0]`` itself, in the calling thread, right before the update:
  nothing is collected ahead, and an exception raised while collecting
  (``RolloutError``, ``KeyboardInterrupt``) reaches the caller as itself;
* **distributed** (under a ``tf.distribute`` strategy): each batch is split over
  the replicas (:func:`keras_trpo.distribute.distribute_py_dataset`) and read on a
  ``tf.data`` thread; an exception raised there reaches the caller as itself too,
  not as TensorFlow's ``UnknownError``;
* **Keras' iterator** (anything else: a ``tf.data`` dataset, a longer
  ``PyDataset``, ``train_on_batch``): the next element Keras gives.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from keras_trpo import distribute, validation
from keras_trpo.distribute import Replicas


class Fed(Protocol):
    """What a feed is installed in: the train function (its ``feed`` attribute)."""

    feed: Feed


class Feed:
    """The input of one ``fit`` call: what Keras iterates over, and where each batch is read.

    Args:
        keras_input: what ``keras.Model.fit`` receives as ``x``.
        source: the one-batch ``PyDataset`` read directly by :meth:`next_batch`, or ``None``
            to read Keras' iterator.
        distributed: whether batches come from a strategy's ``tf.data`` pipeline.
    """

    def __init__(self, keras_input: Any = None, source: keras.utils.PyDataset | None = None, distributed: bool = False):
        self.keras_input = keras_input
        self.source = source
        self.distributed = distributed
        self.error: BaseException | None = None  # raised by the source on a tf.data thread

    @classmethod
    def for_fit(cls, x: Any, replicas: Replicas, steps_per_epoch: int | None = None) -> Feed:
        """The feed of ``fit(x, steps_per_epoch=...)`` for a model that trains on ``replicas``.

        Under a strategy this reads the first batch (to know its structure), as
        :func:`~keras_trpo.distribute.distribute_py_dataset` does.
        """
        feed = cls(keras_input=x, distributed=replicas.distributed)
        if replicas.strategy is not None:
            feed.keras_input = distribute.distribute_py_dataset(x, replicas.strategy, feed.record_error)
        elif isinstance(x, keras.utils.PyDataset) and len(x) == 1 and steps_per_epoch is None:
            # One step per Keras epoch; the train function reads the real batch from the PyDataset
            # (no tf.data generator per epoch).
            feed.source, feed.keras_input = x, tf.data.Dataset.from_tensors(np.zeros((), np.int8))
        return feed

    @property
    def in_order(self) -> bool:
        """Whether Keras must not shuffle ``keras_input`` (``fit``'s ``shuffle`` defaults to False then)."""
        return self.distributed or self.source is not None

    def record_error(self, error: BaseException) -> None:
        """Keeps the exception the source raised on a ``tf.data`` thread, for :meth:`serving` to raise."""
        self.error = error

    def next_batch(self, iterator: Iterator[Any]) -> Any:
        """The batch of this update: read from the source now, or the next element of Keras' iterator."""
        return validation.unwrap(self.source[0] if self.source is not None else next(iterator))

    @contextlib.contextmanager
    def serving(self, train_function: Fed) -> Iterator[None]:
        """Installs this feed in ``train_function`` for the duration of one ``fit``.

        Under a strategy, Keras' "Your input ran out of data" warning is silenced (each
        epoch's input ends after its one batch: that is how it stays on-policy), and a
        ``tf.errors.OpError`` caused by an exception of the source is replaced by that exception.
        """
        train_function.feed, self.error = self, None
        try:
            with warnings.catch_warnings():
                if self.distributed:
                    warnings.filterwarnings("ignore", message="Your input ran out of data")
                yield
        except tf.errors.OpError:
            original, self.error = self.error, None
            if original is None:
                raise
            raise original from original.__cause__
        finally:
            train_function.feed = KERAS_ITERATOR


#: The feed outside ``fit`` (``train_on_batch``, a train function called by hand): Keras' iterator.
KERAS_ITERATOR = Feed()
