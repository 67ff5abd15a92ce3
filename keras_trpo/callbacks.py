"""Keras callbacks for TRPO training."""

from __future__ import annotations

import math
import time

import keras


class ProgressLogger(keras.callbacks.Callback):
    """Prints one compact line every ``every`` iterations (epochs).

    The line shows the iteration, env steps so far, the mean return of the
    episodes finished in that batch (or says that none finished), the KL of the
    step, the line-search shrinks, the critic loss and env steps per second.
    Use it with ``fit(..., verbose=0)``.

    Example:

    ```python
    model.fit(rollouts, epochs=100, verbose=0, callbacks=[keras_trpo.callbacks.ProgressLogger(10)])
    ```
    """

    def __init__(self, every: int = 10, print_fn=print):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1; got {every!r}.")
        self.every = every
        self.print_fn = print_fn

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        logs = logs or {}
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        episode_return = logs.get("episode_return", math.nan)
        returned = "no episode finished" if math.isnan(episode_return) else f"{episode_return:7.1f}"
        env_steps = int(logs.get("env_steps", 0))
        self.print_fn(
            f"iteration {epoch + 1:4d} | env steps {env_steps:8d} | episode return {returned} | "
            f"kl {logs.get('kl', math.nan):.4f} | line search {int(logs.get('line_search_steps', 0))} | "
            f"value loss {logs.get('value_loss', math.nan):.3g} | {env_steps / elapsed:,.0f} steps/s"
        )
