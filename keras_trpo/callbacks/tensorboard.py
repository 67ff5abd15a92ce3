"""TensorBoard scalars against env steps, the x-axis RL curves are compared on."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import keras
import tensorflow as tf

from keras_trpo.callbacks._logs import Logs


class TensorBoard(keras.callbacks.Callback):
    """Writes every logged scalar to TensorBoard with the env steps done so far as the step.

    ``keras.callbacks.TensorBoard`` puts the epoch (one TRPO iteration) on the
    x-axis; RL curves are compared against env steps, as stable-baselines3 logs
    them (``num_timesteps``). This callback writes each numeric value of an
    iteration's logs (``episode_return``, ``kl``, ``value_loss``, ...) as a
    scalar of the same name at ``step = logs["env_steps"]``, plus the critic's
    ``learning_rate``, into one event file under ``log_dir``. Runs trained with
    different ``steps`` per iteration or ``num_envs`` line up.

    Non-finite values are left out (``episode_return`` is NaN for an iteration
    in which no episode finished), so the curves have no gaps or spikes.
    Without ``env_steps`` in the logs (a dataset other than
    :class:`keras_trpo.Rollouts`) it raises ``ValueError`` at the first
    iteration; use ``keras.callbacks.TensorBoard`` there. Put it after the
    callbacks that add keys (:class:`Evaluation`, :class:`StepsPerSecond`, ...)
    to have them written too.

    Args:
        log_dir: directory of the event file; ``tensorboard --logdir`` on it
            or on a parent.

    Example:

    ```python
    model.fit(rollouts, epochs=97, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", every=10, seed=0),
        keras_trpo.callbacks.TensorBoard("logs/cartpole"),   # x-axis: env steps
    ])
    # tensorboard --logdir logs
    ```
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer: tf.summary.SummaryWriter | None = None

    def on_train_begin(self, logs: Logs = None) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_end(self, logs: Logs = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _learning_rate(self) -> float | None:
        optimizer: Any = getattr(self.model, "optimizer", None)
        try:
            return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (AttributeError, TypeError, ValueError):
            return None

    def scalars(self, logs: Logs) -> dict[str, float]:
        """The finite numeric values of ``logs`` (and the critic's ``learning_rate``) that get written."""
        values: dict[str, float] = {}
        for key, value in (logs or {}).items():
            if isinstance(value, numbers.Real) or (hasattr(value, "shape") and not tuple(value.shape)):
                values[key] = float(value)
        if "learning_rate" not in values and self.model is not None:
            rate = self._learning_rate()
            if rate is not None:
                values["learning_rate"] = rate
        return {key: value for key, value in values.items() if math.isfinite(value)}

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        logs = logs or {}
        env_steps = logs.get("env_steps")
        if env_steps is None or not math.isfinite(float(env_steps)):
            raise ValueError(
                "keras_trpo.callbacks.TensorBoard needs env_steps in the logs (keras_trpo.Rollouts batches "
                f"carry it); got keys {sorted(logs)}. Use keras.callbacks.TensorBoard for iterations on the x-axis."
            )
        if self._writer is None:  # on_epoch_end called outside fit
            self.on_train_begin()
        assert self._writer is not None  # on_train_begin made it
        step = int(round(float(env_steps)))
        with self._writer.as_default(step=step):
            for key, value in self.scalars(logs).items():
                tf.summary.scalar(key, value)
        self._writer.flush()
