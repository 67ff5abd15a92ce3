"""Early stopping on a periodic evaluation or a batch statistic: patience counts the iterations that measured it,
and the best weights are those the best value was measured on."""

from __future__ import annotations

from typing import Any

import keras

from keras_trpo.callbacks._logs import Logs, finite
from keras_trpo.callbacks._monitor import SkipsIterationsWithoutMonitor
from keras_trpo.callbacks.best_policy import KeepsWeightsBeforeUpdate


class EarlyStopping(KeepsWeightsBeforeUpdate, SkipsIterationsWithoutMonitor, keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` for ``eval_return`` and for the batch statistics such as ``episode_return``.

    :class:`Evaluation` adds ``eval_return`` to the logs of the iterations it
    evaluates (every ``every``-th). Keras's ``EarlyStopping`` skips the others
    too, but warns on each of them (``Early stopping conditioned on metric
    `eval_return` which is not available``). This subclass skips them quietly,
    so ``patience`` counts evaluations: with ``every=10`` and ``patience=3``,
    training stops after 3 evaluations (30 iterations) without improvement. It
    also skips a NaN (``episode_return`` of a batch in which no episode
    finished). If no finite value appears during ``fit``, one ``UserWarning``
    at the end says so.

    With ``restore_best_weights=True`` and a batch statistic (``episode_return``,
    ``episode_length``, ``episodes``: measured on the batch, collected *before*
    the iteration's update), it restores the weights that collected the best
    batch; Keras's would restore the weights after that batch's update
    (:mod:`keras_trpo.callbacks.best_policy`). ``eval_return`` is measured on
    the updated weights, which are then the ones kept. Everything else,
    arguments included, is Keras's; only the defaults differ:
    ``monitor="eval_return"``, ``mode="max"``.

    Put it *after* :class:`Evaluation` in the callbacks list.

    Example:

    ```python
    model.fit(rollouts, epochs=97, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
        keras_trpo.callbacks.EarlyStopping(patience=3, restore_best_weights=True),  # eval_return, max
    ])
    ```
    """

    best_weights: Any  # Keras' (a list of arrays, or None)

    def __init__(self, monitor: str = "eval_return", mode: str = "max", **kwargs: Any) -> None:
        super().__init__(monitor=monitor, mode=mode, **kwargs)

    def keeps_weights_before_update(self) -> bool:
        return bool(self.restore_best_weights) and super().keeps_weights_before_update()

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        super().on_epoch_end(epoch, logs)
        # Keras copied model.get_weights() (the updated weights) if this epoch is the best so far.
        before = getattr(self, "before_update", None)
        measured = finite((logs or {}).get(self.monitor))
        if before is not None and measured and self.best_weights is not None and self.best_epoch == epoch:
            self.best_weights = before.weights
