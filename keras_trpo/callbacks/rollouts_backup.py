"""The rollouts' state (env, RNG, counters) saved and restored next to ``BackupAndRestore``'s files."""

from __future__ import annotations

import os
import pickle
import warnings
from typing import TYPE_CHECKING, Literal

import keras

from keras_trpo.callbacks._logs import Logs
from keras_trpo.envs import env_snapshot
from keras_trpo.validation import check_int

if TYPE_CHECKING:
    from keras_trpo.rollouts import Rollouts


class RolloutsBackup(keras.callbacks.Callback):
    """Saves the rollouts' state next to BackupAndRestore's files; list it *after* BackupAndRestore.

    On ``on_train_begin`` (after BackupAndRestore has restored the weights) it restores the
    env, RNG and counters, and drops any batch collected before (on Keras' ``tf.data`` path a
    batch is read before ``on_train_begin`` to infer the dataset structure, by the unrestored
    model).

    **What is bit-exact.** When the env can be pickled with its whole state
    (:func:`keras_trpo.envs.env_snapshot`: ``gymnasium.make_vec`` in ``"sync"`` or its default
    mode such as ``CartPoleVectorEnv``, with ``wrappers=[...]`` and vector wrappers around it,
    any ``SyncVectorEnv`` of pure-Python envs), a resumed run is bit-identical to an
    uninterrupted one. An ``AsyncVectorEnv`` (its sub-envs live in worker processes) or an env
    that pickles as its constructor arguments (``gymnasium.utils.EzPickle``: gymnasium's MuJoCo
    and Box2D envs, ale_py's Atari envs) is not saved: at resume the new run's env is reset,
    seeded from the ``Rollouts`` seed and ``env_steps``, and the episodes that were running are
    dropped. The weights, optimizer, action-sampling RNG, counters, finished episodes and
    reward-scaler statistics are still restored exactly, and resuming twice from the same
    backup gives the same run; it differs from the uninterrupted run from the resumed epoch on.
    :attr:`bit_exact` says which case applies (checked once, at construction).

    **When it saves.** ``save_freq`` works as ``BackupAndRestore``'s and must be the same: ``"epoch"``
    (the default of both) saves at every epoch end, an integer every ``save_freq`` batches (one batch
    is one iteration; Keras then resumes at the start of the epoch it saved in, so a resumed run makes
    one more iteration than an uninterrupted one, on a batch collected by the restored weights). The state is restored only with the model weights it belongs to (the same
    ``policy_version``); a mismatch is one line naming the likely cause.

    The state file is a Python pickle (the env object, cloudpickled, is part of the state), and
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

    def __init__(
        self, rollouts: Rollouts, backup_dir: str | os.PathLike[str], save_freq: int | Literal["epoch"] = "epoch",
    ) -> None:
        super().__init__()
        if save_freq != "epoch":
            check_int("save_freq", save_freq)
        self.rollouts, self.path = rollouts, os.path.join(backup_dir, "rollouts_state.pkl")
        self.save_freq, self._batches_since_saving = save_freq, 0
        snapshot, why = env_snapshot(rollouts.env)
        #: Whether a resume continues bit for bit (the env is saved); else it restarts from a seeded reset.
        self.bit_exact = snapshot is not None
        #: Why the env is not saved (None when :attr:`bit_exact`).
        self.reason = why
        if why is not None:
            self._warn_not_exact(why)

    @staticmethod
    def _warn_not_exact(why: str) -> None:
        warnings.warn(f"RolloutsBackup cannot save the env ({why}): a resumed run restarts the episodes that were "
                      "running from a seeded reset (weights, RNG and counters are restored exactly), so it is not "
                      "bit-identical to an uninterrupted one.", UserWarning, stacklevel=3)

    def on_train_begin(self, logs: Logs = None) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            state = pickle.load(f)
        saved, version = state["policy_version"], self.rollouts.model.policy_version
        if saved != version:
            raise ValueError(f"RolloutsBackup: {self.path} holds the rollouts of policy_version {saved} but the model "
                             f"is at {version}: {self._mismatch_cause(version)}; or delete that file to resume without it.")
        self.rollouts.set_state(state)

    def _mismatch_cause(self, version: int) -> str:
        if version == 0:
            return ("no weights were restored before it: list it after keras.callbacks.BackupAndRestore, with the same "
                    "backup_dir (callbacks run in list order)")
        return "BackupAndRestore saves at other times: give both the same save_freq"

    def on_train_batch_end(self, batch: int, logs: Logs = None) -> None:
        if self.save_freq != "epoch":
            self._batches_since_saving += 1
            if self._batches_since_saving >= self.save_freq:
                self._batches_since_saving = 0
                self._save()

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self.save_freq == "epoch":
            self._save()

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        state = self.rollouts.get_state()
        if self.bit_exact and state["env_not_saved"] is not None:  # it pickled at construction, not now
            self.bit_exact, self.reason = False, state["env_not_saved"]
            self._warn_not_exact(self.reason)
        with open(self.path + ".tmp", "wb") as f:
            pickle.dump(state, f)
        os.replace(self.path + ".tmp", self.path)

    def on_train_end(self, logs: Logs = None) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)
