"""The rollouts' state (env, RNG, counters) saved and restored next to ``BackupAndRestore``'s files."""

from __future__ import annotations

import os
import pickle

import keras


class RolloutsBackup(keras.callbacks.Callback):
    """Saves the rollouts' state next to BackupAndRestore's files; list it *after* BackupAndRestore.

    On ``on_train_begin`` (after BackupAndRestore has restored the weights) it restores the
    env, RNG and counters, and drops any batch collected before (on Keras' ``tf.data`` path a
    batch is read before ``on_train_begin`` to infer the dataset structure, by the unrestored
    model).

    The state file is a Python pickle (the env object is part of the state), and
    unpickling runs code: restore only backup directories you wrote yourself
    (docs/safe-loading.md).

    Example:

    ```python
    model.fit(rollouts, epochs=100, callbacks=[
        keras.callbacks.BackupAndRestore("backup"),
        keras_trpo.callbacks.RolloutsBackup(rollouts, "backup"),
    ])
    ```
    """

    def __init__(self, rollouts, backup_dir):
        super().__init__()
        self.rollouts, self.path = rollouts, os.path.join(backup_dir, "rollouts_state.pkl")

    def on_train_begin(self, logs=None):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            state = pickle.load(f)
        self.rollouts.set_state(state)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "wb") as f:
            pickle.dump(self.rollouts.get_state(), f)
        os.replace(self.path + ".tmp", self.path)

    def on_train_end(self, logs=None):
        if os.path.exists(self.path):
            os.remove(self.path)
