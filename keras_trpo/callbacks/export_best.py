"""Export of the best policy so far as a TF Serving SavedModel."""

from __future__ import annotations

import math
import os
import shutil
import warnings

import keras

from keras_trpo.callbacks._logs import Logs, PrintFn
from keras_trpo.callbacks.best_policy import KeepsWeightsBeforeUpdate
from keras_trpo.validation import check_int


class ExportBest(KeepsWeightsBeforeUpdate, keras.callbacks.Callback):
    """Exports a TF Serving SavedModel (``model.export``) whenever ``eval_return`` improves.

    Each improvement writes the next integer version under ``filepath``
    (``filepath/1``, ``filepath/2``, ...), so TF Serving watching ``filepath``
    always serves the best policy so far. Iterations whose logs lack the
    monitored value, or where it is NaN, are skipped; put :class:`Evaluation`
    before this callback. The best value and path are kept across ``fit``
    calls.

    ``eval_return`` is measured on the weights after the iteration's update,
    and those are exported. A batch statistic (``monitor="episode_return"``,
    ``episode_length``, ``episodes``) is measured on the batch, collected
    before the update: for those the export holds the weights that collected
    the best batch (:mod:`keras_trpo.callbacks.best_policy`).

    Args:
        filepath: the model's base directory for TF Serving.
        monitor: the log key to maximize (or minimize with ``mode="min"``).
        mode: ``"max"`` or ``"min"``.
        min_delta: minimum change that counts as an improvement.
        max_to_keep: keep only this many most recent versions written by this
            callback (older ones are deleted); ``None`` keeps all.
        verbose: 1 prints a line per export.
        print_fn: where those lines go.

    Attributes:
        best: the best monitored value so far (``None`` before the first).
        best_path: the version directory holding the best policy.
        exported: ``(epoch, value, path)`` of every export.

    Example:

    ```python
    model.fit(rollouts, epochs=100, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", every=5, seed=0),
        keras_trpo.callbacks.ExportBest("saved_models/cartpole", verbose=1),
    ])
    ```
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str],
        monitor: str = "eval_return",
        mode: str = "max",
        min_delta: float = 0.0,
        max_to_keep: int | None = None,
        verbose: int = 0,
        print_fn: PrintFn = print,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}.")
        if max_to_keep is not None:
            check_int("max_to_keep", max_to_keep)
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.max_to_keep = max_to_keep
        self.verbose = verbose
        self.print_fn = print_fn
        self.best: float | None = None
        self.best_path: str | None = None
        self.exported: list[tuple[int, float, str]] = []
        self._seen = False

    def on_train_begin(self, logs: Logs = None) -> None:
        super().on_train_begin(logs)
        self._seen = False

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if not logs or self.monitor not in logs:
            return
        self._seen = True
        value = float(logs[self.monitor])
        if not math.isfinite(value) or not self._improved(value):
            return
        with self.weights_that_collected_the_batch(logs):
            path = self.model.export(self.filepath)
        previous = self.best
        self.best, self.best_path = value, path
        self.exported.append((epoch, value, path))
        if self.verbose:
            before = "" if previous is None else f" (was {previous:.4g})"
            self.print_fn(f"Epoch {epoch + 1}: {self.monitor} improved to {value:.4g}{before}; exported {path}")
        if self.max_to_keep is not None:
            for _, _, old in self.exported[: -self.max_to_keep]:
                shutil.rmtree(old, ignore_errors=True)

    def on_train_end(self, logs: Logs = None) -> None:
        if not self._seen:
            warnings.warn(
                f"ExportBest never found {self.monitor!r} in the logs, so nothing was exported. Put "
                "keras_trpo.callbacks.Evaluation before ExportBest in the callbacks list.",
                UserWarning,
                stacklevel=2,
            )
