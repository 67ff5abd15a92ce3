"""A schedule for the trust-region radius ``max_kl``, like ``keras.callbacks.LearningRateScheduler``."""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import keras

from keras_trpo.callbacks._logs import Logs, PrintFn


class TrustRegionSchedule(keras.callbacks.Callback):
    """Sets the trust-region radius ``max_kl`` before every iteration, like ``LearningRateScheduler``.

    ``schedule`` takes the epoch index (0-based) and, optionally, the current
    ``max_kl``, and returns the new ``max_kl`` (a finite number > 0). The model
    keeps ``max_kl`` in a variable, so changing it does not retrace
    ``train_step``. The value used by each iteration is added to the logs as
    ``max_kl``.

    Args:
        schedule: ``f(epoch) -> max_kl`` or ``f(epoch, max_kl) -> max_kl``.
        verbose: 1 prints a line whenever the value changes.
        print_fn: where that line goes.

    Example:

    ```python
    # Linear decay from 0.02 to 0.005 over 100 iterations.
    schedule = keras_trpo.callbacks.TrustRegionSchedule(lambda epoch: 0.02 - 0.015 * min(epoch, 99) / 99)
    # Or halve it every 20 iterations, from whatever the model has.
    schedule = keras_trpo.callbacks.TrustRegionSchedule(
        lambda epoch, max_kl: max_kl / 2 if epoch and epoch % 20 == 0 else max_kl
    )
    model.fit(rollouts, epochs=100, callbacks=[schedule])
    ```
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0, print_fn: PrintFn = print) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable as schedule(epoch[, max_kl]); got {schedule!r}.")
        self.schedule = schedule
        self.verbose = verbose
        self.print_fn = print_fn
        self._takes_current = _takes_two_arguments(schedule)

    def on_epoch_begin(self, epoch: int, logs: Logs = None) -> None:
        if not hasattr(self.model, "max_kl"):
            raise ValueError("TrustRegionSchedule needs a keras_trpo.TRPO model (it sets model.max_kl).")
        current = self.model.max_kl
        value = self.schedule(epoch, current) if self._takes_current else self.schedule(epoch)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"The max_kl schedule returned {value!r} for epoch {epoch}; it must return a number > 0."
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"The max_kl schedule returned {value!r} for epoch {epoch}; it must return a finite number > 0.")
        self.model.max_kl = value
        if self.verbose and value != current:
            self.print_fn(f"Epoch {epoch + 1}: TrustRegionSchedule setting max_kl to {value:.6g}.")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if logs is not None:
            logs["max_kl"] = self.model.max_kl


def _takes_two_arguments(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    return varargs or len(positional) >= 2
