"""The progress bar ``TRPO.fit`` shows at ``verbose=1`` and ``2``: a few readable metrics.

Keras' own bar prints every logged value, about 800 characters a line for TRPO's 19.
:class:`ProgressBar` is a ``keras.callbacks.ProgbarLogger`` that shows the episode
return, the KL, the line-search shrinks, the critic's loss, env steps done and per second;
``History``, ``CSVLogger`` and ``TensorBoard`` still get every value. Pass your own
``keras.callbacks.ProgbarLogger()`` in ``callbacks`` to see them all on the bar.

Example:

```python
model.fit(rollouts, epochs=100, verbose=1)
# Epoch 3/100
# 1/1 ━━━━━━━━━━━━━━━━━━━━ 0s 45ms/step - episode_return: 31.2 - kl: 0.0171 - line_search_steps: 0.0000e+00 ...
```
"""

from __future__ import annotations

import time

import keras

#: The metrics on the bar, in order.
SHOWN = ("episode_return", "kl", "line_search_steps", "value_loss", "env_steps", "steps_per_second")


class ProgressBar(keras.callbacks.ProgbarLogger):
    """``ProgbarLogger`` showing only :data:`SHOWN`.

    ``steps_per_second`` (env steps per second of wall time) is computed here from
    ``env_steps`` unless a ``callbacks.StepsPerSecond`` already put it in the logs.
    """

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._last = None  # (time, env_steps) at the end of the previous epoch

    def _shown(self, logs):
        logs = dict(logs or {})
        now, steps = time.perf_counter(), logs.get("env_steps")
        if "steps_per_second" not in logs and steps is not None and self._last is not None:
            if float(steps) > self._last[1]:
                logs["steps_per_second"] = (float(steps) - self._last[1]) / max(now - self._last[0], 1e-9)
        return {key: logs[key] for key in SHOWN if key in logs}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._shown(logs))

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._shown(logs))
        if logs and logs.get("env_steps") is not None:
            self._last = (time.perf_counter(), float(logs["env_steps"]))
