"""Environment throughput: env steps collected and trained on per second of wall time."""

from __future__ import annotations

import time

import keras

from keras_trpo.callbacks._logs import Logs, finite


class StepsPerSecond(keras.callbacks.Callback):
    """Adds ``steps_per_second``: env steps collected and trained on per second of wall time.

    Reads ``env_steps`` from the logs (``Rollouts`` batches carry it). The first
    iteration reports its own rate, which includes tracing ``train_step``; from
    the second iteration on the rate is measured from the end of the first
    iteration, i.e. the steady-state throughput that predicts how long the rest
    of the run takes. Without ``env_steps`` in the logs nothing is added.

    Place it before ``CSVLogger`` / ``TensorBoard`` to have the rate logged;
    with ``fit(verbose=1)`` the progress bar shows it too.

    Example:

    ```python
    model.fit(rollouts, epochs=100, callbacks=[keras_trpo.callbacks.StepsPerSecond()])
    # Epoch 3/100 ... - env_steps: 3072.0000 - steps_per_second: 8412.3 ...
    ```
    """

    def __init__(self) -> None:
        super().__init__()
        self._previous_steps = 0.0  # env steps at the end of the previous fit
        self.on_train_begin()

    def on_train_begin(self, logs: Logs = None) -> None:
        self._start_time = time.perf_counter()
        self._start_steps: float | None = None  # env steps at the end of the first iteration
        self._first_end_time: float | None = None

    def _rate(self, logs: Logs) -> float | None:
        if not logs or "env_steps" not in logs or not finite(logs["env_steps"]):
            return None
        now = time.perf_counter()
        steps = float(logs["env_steps"])
        if self._first_end_time is None:
            # First iteration of this fit: env steps since the last fit this callback saw.
            self._first_end_time, self._start_steps = now, steps
            done = steps - self._previous_steps if steps > self._previous_steps else steps
            rate = done / max(now - self._start_time, 1e-9)
        else:
            assert self._start_steps is not None  # set with _first_end_time
            rate = (steps - self._start_steps) / max(now - self._first_end_time, 1e-9)
        self._previous_steps = steps
        return rate

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        rate = self._rate(logs)
        if rate is not None and logs is not None:  # a rate comes from logs
            logs["steps_per_second"] = rate
