"""Early stopping on a periodic evaluation: patience counts evaluations, not iterations."""

from __future__ import annotations

import keras

from keras_trpo.callbacks._monitor import SkipsIterationsWithoutMonitor


class EarlyStopping(SkipsIterationsWithoutMonitor, keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` for a value logged on some iterations only, such as ``eval_return``.

    :class:`Evaluation` adds ``eval_return`` to the logs of the iterations it
    evaluates (every ``every``-th). Keras's ``EarlyStopping`` skips the others
    too, but warns on each of them (``Early stopping conditioned on metric
    `eval_return` which is not available``). This subclass skips them quietly,
    so ``patience`` counts evaluations: with ``every=10`` and ``patience=3``,
    training stops after 3 evaluations (30 iterations) without improvement. If
    the monitored value never appears during ``fit``, one ``UserWarning`` at
    the end says so. Everything else, arguments included, is Keras's; only
    the defaults differ: ``monitor="eval_return"``, ``mode="max"``.

    Put it *after* :class:`Evaluation` in the callbacks list.

    Example:

    ```python
    model.fit(rollouts, epochs=97, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
        keras_trpo.callbacks.EarlyStopping(patience=3, restore_best_weights=True),  # eval_return, max
    ])
    ```
    """

    def __init__(self, monitor: str = "eval_return", mode: str = "max", **kwargs):
        super().__init__(monitor=monitor, mode=mode, **kwargs)
