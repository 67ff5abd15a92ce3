"""Saving the best ``.keras`` model by a periodic evaluation."""

from __future__ import annotations

import keras

from keras_trpo.callbacks._monitor import SkipsIterationsWithoutMonitor


class ModelCheckpoint(SkipsIterationsWithoutMonitor, keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` for a value logged on some iterations only, such as ``eval_return``.

    With ``save_best_only=True``, Keras's ``ModelCheckpoint`` treats an
    iteration without the monitored value as one to save: it warns (``Can save
    best model only with eval_return available``) and overwrites the best
    model with that iteration's. This subclass skips those iterations, so the
    file holds the model of the best *evaluated* iteration. If the monitored
    value never appears during ``fit``, one ``UserWarning`` at the end says so.
    Everything else, arguments included, is Keras's; only the defaults differ:
    ``monitor="eval_return"``, ``mode="max"``, ``save_best_only=True``. (To
    serve the best policy with TF Serving, see :class:`ExportBest`.)

    Put it *after* :class:`Evaluation` in the callbacks list.

    Example:

    ```python
    model.fit(rollouts, epochs=97, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
        keras_trpo.callbacks.ModelCheckpoint("best.keras"),   # the best eval_return's model
    ])
    ```
    """

    def __init__(self, filepath, monitor: str = "eval_return", mode: str = "max", save_best_only: bool = True, **kwargs):
        super().__init__(filepath, monitor=monitor, mode=mode, save_best_only=save_best_only, **kwargs)

    def monitors_this_fit(self) -> bool:
        return bool(self.save_best_only)
