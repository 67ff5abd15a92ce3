"""Keras callbacks for TRPO training.

TRPO trains through ``model.fit`` with one batch (one TRPO iteration) per
epoch, so epoch-level callbacks see every iteration. Keras's own callbacks work
as usual on the metrics ``train_step`` logs (``episode_return``, ``kl``,
``line_search_steps``, ``value_loss``, ``env_steps``, ...): ``TensorBoard``,
``CSVLogger``, ``EarlyStopping(monitor="episode_return", mode="max")``,
``ModelCheckpoint``, ``BackupAndRestore`` and ``LearningRateScheduler`` (the
critic's learning rate). ``TerminateOnNaN`` watches ``loss``, which is the
critic's loss, or NaN once any weight is non-finite; a non-finite *batch* does
not stop it (``train_step`` rejects the batch and changes nothing).

One exception: ``episode_return``, ``episode_length`` and ``episodes`` are
measured on the batch, collected *before* the iteration's update, so Keras's
``ModelCheckpoint(save_best_only=True)`` and ``EarlyStopping(restore_best_weights=True)``
on them keep the weights one update after the policy that earned the best
value (``TRPO.fit`` warns). This package's ``ModelCheckpoint``, ``EarlyStopping``
and ``ExportBest`` keep the policy that collected the best batch
(:mod:`keras_trpo.callbacks.best_policy`).

This package adds:

- :class:`ProgressLogger`: one compact line every ``n`` iterations, for ``verbose=0``;
- :class:`StepsPerSecond`: adds ``steps_per_second`` (env steps per second) to the logs;
- :class:`LineSearchMonitor`: line-search statistics; warns after repeated rejections;
- :class:`TrustRegionSchedule`: sets ``max_kl`` before each iteration, like
  ``keras.callbacks.LearningRateScheduler``;
- :class:`Evaluation`: periodic deterministic evaluation on a separate env, adds ``eval_return``;
- :class:`ExportBest`: exports a SavedModel whenever ``eval_return`` improves;
- :class:`EarlyStopping`, :class:`ModelCheckpoint`: Keras's, for ``eval_return``: the
  iterations without an evaluation are skipped without a warning (Keras warns on each, and its
  ``ModelCheckpoint(save_best_only=True)`` saves them as if they were the best); for a batch
  statistic (``episode_return``) they keep the weights that collected the best batch;
- :class:`RolloutsBackup`: saves the rollouts' state next to ``BackupAndRestore``'s files;
- :class:`TensorBoard`: every logged scalar with env steps (not iterations) as the step.

Callbacks run in list order and share one ``logs`` dict per epoch, so put the
callbacks that *add* keys (``Evaluation``, ``StepsPerSecond``,
``LineSearchMonitor``, ``TrustRegionSchedule``) before those that *read* them
(``EarlyStopping``, ``ModelCheckpoint``, ``ExportBest``, ``CSVLogger``,
``TensorBoard``). Keras appends its progress bar and ``History`` after all of
them, so they see every key.

Example:

```python
import keras, keras_trpo
from keras_trpo import callbacks

model.fit(
    rollouts,
    epochs=100,
    callbacks=[
        callbacks.LineSearchMonitor(patience=3),
        callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
        callbacks.ExportBest("saved_models/cartpole"),
        callbacks.EarlyStopping(monitor="eval_return", mode="max", patience=3),  # 3 evaluations
        keras.callbacks.CSVLogger("metrics.csv"),
        callbacks.TensorBoard("logs/run"),                                        # x-axis: env steps
    ],
)
```
"""

from keras_trpo.callbacks.best_policy import BATCH_STATISTICS, warn_about_keras_best_callbacks
from keras_trpo.callbacks.early_stopping import EarlyStopping
from keras_trpo.callbacks.evaluation import Evaluation
from keras_trpo.callbacks.export_best import ExportBest
from keras_trpo.callbacks.line_search_monitor import REJECTION_HINTS, LineSearchMonitor
from keras_trpo.callbacks.model_checkpoint import ModelCheckpoint
from keras_trpo.callbacks.progress_logger import ProgressLogger
from keras_trpo.callbacks.rollouts_backup import RolloutsBackup
from keras_trpo.callbacks.steps_per_second import StepsPerSecond
from keras_trpo.callbacks.tensorboard import TensorBoard
from keras_trpo.callbacks.trust_region_schedule import TrustRegionSchedule

__all__ = [
    "ProgressLogger",
    "StepsPerSecond",
    "LineSearchMonitor",
    "TrustRegionSchedule",
    "Evaluation",
    "ExportBest",
    "EarlyStopping",
    "ModelCheckpoint",
    "RolloutsBackup",
    "TensorBoard",
    "REJECTION_HINTS",
    "BATCH_STATISTICS",
    "warn_about_keras_best_callbacks",
]
