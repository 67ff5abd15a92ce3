"""Which policy a "best model" callback keeps: the weights a monitored value was measured on.

A TRPO iteration (one ``fit`` epoch) collects a batch with the current weights, then updates
them. The keys that come from the batch, :data:`BATCH_STATISTICS` (``episode_return``,
``episode_length``, ``episodes``), were therefore measured on the weights *before* the update
of their iteration, while at ``on_epoch_end`` the model already holds the updated ones. So
``keras.callbacks.ModelCheckpoint(monitor="episode_return", save_best_only=True)`` and
``keras.callbacks.EarlyStopping(monitor="episode_return", restore_best_weights=True)`` keep the
policy one update *after* the one that earned the best return: the best batch came from
``policy_version`` 4, and the file holds version 5. ``eval_return``
(:class:`~keras_trpo.callbacks.Evaluation`) is measured at ``on_epoch_end`` on the updated
weights, so Keras's callbacks keep the right weights for it.

keras_trpo's :class:`~keras_trpo.callbacks.ModelCheckpoint`,
:class:`~keras_trpo.callbacks.EarlyStopping` and :class:`~keras_trpo.callbacks.ExportBest`
keep the right policy for both kinds of keys: when they monitor a batch statistic they copy the
model's state at ``on_train_batch_begin`` (the weights about to collect and train on the batch;
``train_step`` refuses a batch collected by other weights), and save, restore or export that copy
when the statistic improves. :func:`keras_trpo.validation.warn_about_keras_best_callbacks` (called by ``TRPO.fit``)
warns once per callback when a Keras callback would keep the updated policy instead.

An episode that finishes in a batch may have started in an earlier one, under earlier weights:
``episode_return`` credits the weights that collected the batch it finished in.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

from keras_trpo.callbacks._logs import Logs, finite
from keras_trpo.validation import BATCH_STATISTICS, measured_before_update, warn_about_keras_best_callbacks

__all__ = ["BATCH_STATISTICS", "KeepsWeightsBeforeUpdate", "ModelState", "measured_before_update",
           "warn_about_keras_best_callbacks"]

if TYPE_CHECKING:  # to a type checker, the Keras callback it is mixed into (Keras has no stubs: Any)
    from keras.callbacks import Callback as _Callback
else:
    _Callback = object


class ModelState:
    """A copy of everything ``model.save`` writes that an update changes: the model's weights (networks,
    normalizer, ``policy_version``, ...), the critic optimizer's variables and the critic-shuffle seed."""

    def __init__(self, model: Any) -> None:
        self.weights = model.get_weights()
        optimizer = getattr(model, "optimizer", None)
        self.optimizer = [v.numpy() for v in optimizer.variables] if optimizer is not None else None
        seed_generator = getattr(model, "seed_generator", None)
        self.seed = seed_generator.state.numpy() if seed_generator is not None else None

    def restore(self, model: Any) -> None:
        model.set_weights(self.weights)
        if self.optimizer is not None:
            for variable, value in zip(model.optimizer.variables, self.optimizer):
                variable.assign(value)
        if self.seed is not None:
            model.seed_generator.state.assign(self.seed)


class KeepsWeightsBeforeUpdate(_Callback):
    """Mixin for a callback with a ``monitor``: copies the model's state at every ``on_train_batch_begin``
    when :meth:`keeps_weights_before_update` (by default: ``monitor`` is a batch statistic)."""

    def keeps_weights_before_update(self) -> bool:
        return measured_before_update(self.monitor)

    def on_train_begin(self, logs: Logs = None) -> None:
        super().on_train_begin(logs)
        self.before_update: ModelState | None = None

    def on_train_batch_begin(self, batch: int, logs: Logs = None) -> None:
        super().on_train_batch_begin(batch, logs)
        # The weights that collect this batch (collection happens in the train function, after this).
        self.before_update = ModelState(self.model) if self.keeps_weights_before_update() else None

    @contextlib.contextmanager
    def weights_that_collected_the_batch(self, logs: Logs) -> Iterator[None]:
        """Inside the ``with``, the model holds the weights that collected the batch whose statistics
        are in ``logs`` (when the monitored value is a finite batch statistic); afterwards, its own again."""
        before = getattr(self, "before_update", None)
        if before is None or not finite((logs or {}).get(self.monitor)):
            yield
            return
        after = ModelState(self.model)
        before.restore(self.model)
        try:
            yield
        finally:
            after.restore(self.model)
