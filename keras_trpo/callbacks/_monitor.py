"""Keras callbacks that monitor a key only some iterations log (``eval_return``), or that is NaN on some
(``episode_return`` of a batch in which no episode finished): skip those iterations quietly."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from keras_trpo.callbacks._logs import Logs, finite

if TYPE_CHECKING:  # to a type checker, the Keras callback it is mixed into (Keras has no stubs: Any)
    from keras.callbacks import MonitorCallback as _MonitorCallback
else:
    _MonitorCallback = object


class SkipsIterationsWithoutMonitor(_MonitorCallback):
    """Mixin for a ``keras.callbacks.MonitorCallback`` subclass: ``on_epoch_end`` runs only when ``monitor`` is
    logged with a finite value.

    Keras's ``EarlyStopping`` warns on every epoch without its ``monitor``, and
    ``ModelCheckpoint(save_best_only=True)`` warns and then *saves* that epoch's
    model as if it were the best. With :class:`~keras_trpo.callbacks.Evaluation`
    adding ``eval_return`` every ``every`` iterations, the iterations in between
    are simply not evaluated: this mixin skips them, as Keras treats epochs
    without validation. A NaN is skipped too (``episode_return`` when no episode
    finished in the batch): Keras takes a NaN at the first epoch as the best
    value, after which nothing is an improvement. If no finite value appears
    during a ``fit``, one warning at its end says so.
    """

    def monitors_this_fit(self) -> bool:
        """False when the callback does not depend on ``monitor`` (it then runs every iteration)."""
        return True

    def on_train_begin(self, logs: Logs = None) -> None:
        super().on_train_begin(logs)
        self._monitor_seen = False
        self._logged_keys: list[str] = []

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.monitors_this_fit() and not finite((logs or {}).get(self.monitor)):
            self._logged_keys = sorted(logs or {})
            return
        self._monitor_seen = True
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs: Logs = None) -> None:
        super().on_train_end(logs)
        if self.monitors_this_fit() and not getattr(self, "_monitor_seen", True):
            hint = (
                "Put keras_trpo.callbacks.Evaluation before it in the callbacks list."
                if self.monitor == "eval_return"
                else f"Logged keys: {', '.join(self._logged_keys)}."
            )
            warnings.warn(
                f"{type(self).__name__} never found a finite {self.monitor!r} in the logs of this fit, so it did "
                f"nothing. {hint}",
                UserWarning,
                stacklevel=2,
            )
