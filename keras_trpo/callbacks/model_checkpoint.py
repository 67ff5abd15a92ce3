"""Keras's ``ModelCheckpoint`` for ``eval_return`` (logged on some iterations only) and for the batch statistics
(measured before the update of their iteration)."""

from __future__ import annotations

import os
from typing import Any

import keras

from keras_trpo.callbacks._logs import Logs
from keras_trpo.callbacks._monitor import SkipsIterationsWithoutMonitor
from keras_trpo.callbacks.best_policy import KeepsWeightsBeforeUpdate


class ModelCheckpoint(KeepsWeightsBeforeUpdate, SkipsIterationsWithoutMonitor, keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` that saves the policy that earned the best value.

    With ``save_best_only=True``, Keras's ``ModelCheckpoint`` treats an
    iteration without the monitored value as one to save: it warns (``Can save
    best model only with eval_return available``) and overwrites the best
    model with that iteration's. This subclass skips those iterations, and
    those where the value is NaN (``episode_return`` when no episode finished),
    so the file holds the model of the best *measured* iteration. If no finite
    value appears during ``fit``, one ``UserWarning`` at the end says so.

    Which weights: ``eval_return`` (:class:`Evaluation`) is measured on the
    weights after the iteration's update, and those are saved. A batch
    statistic (``episode_return``, ``episode_length``, ``episodes``) is measured
    on the batch, collected *before* the update: for those this callback saves
    the model as it was when the batch was collected (weights, optimizer state,
    ``policy_version``), where Keras's would save the model one update later
    (:mod:`keras_trpo.callbacks.best_policy`).

    Everything else, arguments included, is Keras's; only the defaults differ:
    ``monitor="eval_return"``, ``mode="max"``, ``save_best_only=True``. (To
    serve the best policy with TF Serving, see :class:`ExportBest`.)

    Put it *after* :class:`Evaluation` in the callbacks list.

    Example:

    ```python
    model.fit(rollouts, epochs=97, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
        keras_trpo.callbacks.ModelCheckpoint("best.keras"),   # the best eval_return's model
        keras_trpo.callbacks.ModelCheckpoint("best_batch.keras", monitor="episode_return"),  # the policy that collected the best batch
    ])
    ```
    """

    def __init__(
        self, filepath: str | os.PathLike[str], monitor: str = "eval_return", mode: str = "max",
        save_best_only: bool = True, **kwargs: Any,
    ) -> None:
        super().__init__(filepath, monitor=monitor, mode=mode, save_best_only=save_best_only, **kwargs)

    def monitors_this_fit(self) -> bool:
        return bool(self.save_best_only)

    def keeps_weights_before_update(self) -> bool:
        return bool(self.save_best_only) and super().keeps_weights_before_update()

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        if self.save_freq == "epoch":  # Keras saves at on_epoch_end only
            super().on_train_batch_end(batch, logs)
            return
        with self.weights_that_collected_the_batch(logs):
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.save_freq != "epoch":
            super().on_epoch_end(epoch, logs)
            return
        with self.weights_that_collected_the_batch(logs):
            super().on_epoch_end(epoch, logs)
