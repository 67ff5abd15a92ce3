"""Checkpoints: .keras round trips, BackupAndRestore, and bit-exact resumption of training.

What a bit-identical resume needs (also in docs/serving.md, "Checkpoints and resuming"):

- the model's weights, including the non-trainable ones (``policy_version``, ``max_kl``,
  ``damping``, normalization statistics): Keras weights, saved by ``save_weights``;
- the critic optimizer's state (Adam moments, ``iterations``): saved with the weights because
  ``TRPO`` defines ``get_compile_config``/``compile_from_config``;
- the critic-shuffle ``SeedGenerator`` state: not a Keras weight, saved by
  ``TRPO.save_own_variables`` under ``critic_shuffle_seed_state``;
- the ``Rollouts`` state: the action-sampling numpy RNG, the environment (its full state, here
  by pickling a ``SyncVectorEnv`` of deterministic pure-Python envs), the current observations,
  the running episode return/length of every sub-env and the counters: ``Rollouts.get_state()``
  and ``set_state()``, saved next to BackupAndRestore's files by ``keras_trpo.callbacks.RolloutsBackup``.
"""

import functools
import os
import shutil
import tempfile
import threading
import warnings

import gymnasium
import keras
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.envs.classic_control import CartPoleEnv
from gymnasium.utils import EzPickle

import keras_trpo

from helpers import (
    Crash,
    CrashAt,
    assert_bit_identical,
    bit_differences,
    cartpole_env,
    snapshot,
    tiny_trpo,
    training_state,
)


# --------------------------------------------------------------------------
# .keras round trip
# --------------------------------------------------------------------------
def tiny_model(env, **kwargs):
    return tiny_trpo(env, 16, value_epochs=2, value_batch_size=32, **kwargs)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"], ids=["discrete", "box"])
def test_keras_file_round_trips_architecture_weights_optimizer_and_normalization(env_id, tmp_path):
    env = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="sync")
    model = tiny_model(env, normalize_observations=True, max_kl=0.02)
    rollouts = keras_trpo.Rollouts(env, model, steps=128, seed=0)
    model.fit(rollouts, epochs=2, verbose=0)
    model.max_kl = 0.015  # changed by hand (as a callback would): a weight, so it must survive
    path = str(tmp_path / "run.keras")
    model.save(path)

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*compile.*", category=UserWarning)
        loaded = keras.models.load_model(path)  # no custom_objects: the classes are registered
    assert type(loaded) is keras_trpo.TRPO
    assert loaded.get_config() == model.get_config()
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert loaded.policy_version == 2 and loaded.max_kl == pytest.approx(0.015)
    assert float(loaded.normalizer.count.numpy()) == 2 * 128
    np.testing.assert_array_equal(loaded.normalizer.mean.numpy(), model.normalizer.mean.numpy())
    np.testing.assert_array_equal(loaded.normalizer.variance.numpy(), model.normalizer.variance.numpy())
    np.testing.assert_array_equal(loaded.seed_generator.state.numpy(), model.seed_generator.state.numpy())
    # Optimizer: same class and hyperparameters, same slots, same values, same iteration count.
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) > 0
    assert [v.path for v in loaded.optimizer.variables] == [v.path for v in model.optimizer.variables]
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)

    # And the restored state really is the training state: one more identical update on each.
    batch = rollouts.collect()  # collected by version 2, which both models are at
    model.train_step(batch)
    loaded.train_step(batch)
    for a, b in zip(model.weights + model.optimizer.variables, loaded.weights + loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    env.close()


# --------------------------------------------------------------------------
# BackupAndRestore
# --------------------------------------------------------------------------
class EpochRecorder(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_backup_and_restore_resumes_an_interrupted_fit_where_it_stopped(tmp_path):
    backup = str(tmp_path / "backup")
    env = cartpole_env()
    model = tiny_model(env)
    recorder = EpochRecorder()
    with pytest.raises(Crash):
        model.fit(
            keras_trpo.Rollouts(env, model, steps=64, seed=0),
            epochs=5,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(backup), CrashAt(3), recorder],
        )
    assert recorder.epochs == [0, 1, 2] and model.policy_version == 3  # epochs 0-2 finished and saved
    saved = snapshot(model.weights)
    assert os.path.exists(os.path.join(backup, "latest.weights.h5"))

    # A new process would build everything anew: fresh model, optimizer and rollouts.
    env = cartpole_env()
    resumed = tiny_model(env)
    assert resumed.policy_version == 0
    restored = {}

    class Restored(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            restored.update(snapshot(self.model.weights))

    recorder = EpochRecorder()
    history = resumed.fit(
        keras_trpo.Rollouts(env, resumed, steps=64, seed=0),
        epochs=5,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup), Restored(), recorder],
    )
    assert recorder.epochs == [3, 4]  # continues at the interrupted epoch
    assert len(history.history["kl"]) == 2
    assert_bit_identical(saved, restored)
    assert resumed.policy_version == 5  # no Stale batch: each resumed batch matched the restored weights
    assert history.history["step_accepted"] == [1.0, 1.0]
    assert not os.path.exists(os.path.join(backup, "latest.weights.h5"))  # finished: backup removed


# --------------------------------------------------------------------------
# Bit-identical resume
# --------------------------------------------------------------------------
class DeterministicWalk(gymnasium.Env):
    """A deterministic env whose episodes span batch boundaries (its state must be checkpointed).

    Position moves by ±1; reward 1 when the action matches the parity of the step; terminates at
    |position| = 4, truncates after ``limit`` steps.
    """

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, limit=11):
        self.limit, self.t, self.x = limit, 0, 0

    def _obs(self):
        return np.array([self.x, self.t % 2], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.x = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.x += 1 if int(action) == 1 else -1
        reward = float(int(action) == self.t % 2)
        terminated = abs(self.x) >= 4
        truncated = self.t >= self.limit and not terminated
        return self._obs(), reward, terminated, truncated, {}


def walk_env():
    # functools.partial of a module-level class (not a lambda): the vector env pickles.
    envs = [functools.partial(DeterministicWalk, limit=11 + i) for i in range(3)]
    return gymnasium.vector.SyncVectorEnv(envs)


EPOCHS, INTERRUPT_AT = 6, 4


def walk_run(backup=None, interrupt=None, save_rollouts=True, save_freq="epoch", rollouts_backup_first=False):
    """A seeded run on the deterministic env; returns the model, its rollouts and the history."""
    keras.utils.set_random_seed(0)
    env = walk_env()
    model = tiny_trpo(
        env, value_epochs=3, value_batch_size=16, normalize_observations=True, max_kl=0.05, name="walk",
        learning_rate=3e-3,
    )
    rollouts = keras_trpo.Rollouts(env, model, steps=48, gamma=0.9, gae_lambda=0.9, seed=0)
    callbacks = []
    if backup is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(backup, save_freq=save_freq))
        if save_rollouts:
            callbacks.append(keras_trpo.callbacks.RolloutsBackup(rollouts, backup, save_freq=save_freq))
        if rollouts_backup_first:
            callbacks.reverse()
    if interrupt is not None:
        callbacks.append(CrashAt(interrupt))
    history = model.fit(rollouts, epochs=EPOCHS, verbose=0, callbacks=callbacks)
    return model, rollouts, history.history


@pytest.fixture(scope="module")
def uninterrupted():
    model, rollouts, history = walk_run()
    assert sum(history["step_accepted"]) >= EPOCHS - 1  # the weights really move
    assert rollouts.episode_returns  # episodes end, inside and across batches
    return training_state(model), rollouts, history


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(uninterrupted, tmp_path):
    expected, expected_rollouts, expected_history = uninterrupted
    backup = str(tmp_path / "backup")
    with pytest.raises(Crash):
        walk_run(backup, interrupt=INTERRUPT_AT)
    model, rollouts, history = walk_run(backup)  # new model, new env, new rollouts: like a new process
    assert len(history["kl"]) == EPOCHS - INTERRUPT_AT
    for key in ("kl", "episode_return", "value_loss", "env_steps"):
        np.testing.assert_array_equal(history[key], expected_history[key][INTERRUPT_AT:], err_msg=key)
    assert_bit_identical(expected, training_state(model))
    assert rollouts.env_steps == expected_rollouts.env_steps == EPOCHS * 48
    assert rollouts.episode_returns == expected_rollouts.episode_returns


def test_a_resume_saving_every_second_batch_continues_from_the_saved_iteration(uninterrupted, tmp_path):
    """RolloutsBackup(save_freq=2) saves when BackupAndRestore(save_freq=2) does. Catches: the rollouts
    saved at every epoch end whatever save_freq (before: their policy_version is then ahead of the
    restored weights', and every later run refused to resume)."""
    _, _, expected_history = uninterrupted
    backup = str(tmp_path / "backup")
    with pytest.raises(Crash):
        walk_run(backup, interrupt=INTERRUPT_AT + 1, save_freq=2)  # saved after batches 2 and 4; the 5th is lost
    _, _, history = walk_run(backup, save_freq=2)
    # Keras restarts the epoch it saved in (epoch 3, whose update the weights already hold): one iteration
    # more than uninterrupted; the first two continue the uninterrupted run bit for bit.
    assert len(history["kl"]) == EPOCHS - INTERRUPT_AT + 1
    np.testing.assert_array_equal(history["kl"][:2], expected_history["kl"][INTERRUPT_AT:])
    np.testing.assert_array_equal(history["env_steps"][:2], expected_history["env_steps"][INTERRUPT_AT:])


def test_a_rollouts_backup_listed_before_backup_and_restore_says_to_list_it_after(tmp_path):
    """Catches: the bare policy_version mismatch of Rollouts.set_state, which does not say what to do."""
    backup = str(tmp_path / "backup")
    with pytest.raises(Crash):
        walk_run(backup, interrupt=2, rollouts_backup_first=True)
    with pytest.raises(ValueError, match=r"^RolloutsBackup: .* holds the rollouts of policy_version 2 but the model "
                       r"is at 0: .*list it after keras\.callbacks\.BackupAndRestore, with the same backup_dir"):
        walk_run(backup, rollouts_backup_first=True)


def test_backup_and_restore_without_rollouts_backup_is_warned_about():
    """Catches: the warning not given. Without RolloutsBackup a resumed run restarts env_steps at 0."""
    with pytest.warns(UserWarning, match=r"BackupAndRestore restores the model but not the rollouts: .*"
                      r"keras_trpo\.callbacks\.RolloutsBackup\(rollouts, backup_dir\) after it"):
        walk_run(backup=tempfile.mkdtemp(), save_rollouts=False)


def test_without_the_rollouts_state_a_resumed_run_diverges(uninterrupted, tmp_path):
    """Control: the model checkpoint alone is not enough (fresh env, RNG and episode counters)."""
    expected, _, _ = uninterrupted
    backup = str(tmp_path / "backup")
    with pytest.raises(Crash):
        walk_run(backup, interrupt=INTERRUPT_AT, save_rollouts=False)
    model, _, history = walk_run(backup, save_rollouts=False)
    assert len(history["kl"]) == EPOCHS - INTERRUPT_AT  # it did resume ...
    policy_paths = {v.path for v in model.policy_variables}  # the same in both: both models are named "walk"
    differs = set(bit_differences(expected, training_state(model))) & policy_paths
    assert differs  # ... but on other transitions, so it ends elsewhere


# --------------------------------------------------------------------------
# Resume with the envs people build (issue 24, item 2)
# --------------------------------------------------------------------------
def sync_cartpole():
    return cartpole_env(3)


def default_cartpole():
    """make_vec's default mode: gymnasium's CartPoleVectorEnv (its reset steps are left out of the batch)."""
    return gymnasium.make_vec("CartPole-v1", num_envs=3)


def wrapped_cartpole():
    """Local lambdas as sub-env wrappers, and stateful vector wrappers (running reward statistics).

    (Not the vector NormalizeObservation: it refuses ``reset(options={"reset_mask": ...})``.)
    """
    halve = [lambda env: gymnasium.wrappers.TransformReward(env, lambda r: 0.5 * r)]
    env = cartpole_env(3, wrappers=halve)
    return gymnasium.wrappers.vector.RecordEpisodeStatistics(gymnasium.wrappers.vector.NormalizeReward(env))


def wrapped_default_cartpole():
    return gymnasium.wrappers.vector.NormalizeObservation(default_cartpole())


def async_cartpole():
    return cartpole_env(2, "async")


RUN_EPOCHS, COPY_AT, RUN_STEPS = 5, 3, 48


class CopyBackupAt(keras.callbacks.Callback):
    """After epoch ``epochs - 1`` is saved: copies the backup directory, as a run killed right then leaves it."""

    def __init__(self, backup, copy, epochs, rollouts):
        super().__init__()
        self.backup, self.copy, self.epochs, self.rollouts = backup, copy, epochs, rollouts

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epochs - 1:
            shutil.copytree(self.backup, self.copy)
            self.state = self.rollouts.get_state()  # what a resume must restore


def resumable_run(make_env, backup, copy=None, rollouts_class=keras_trpo.Rollouts):
    """A seeded run with BackupAndRestore + RolloutsBackup; ``copy``: keep the backup of epoch COPY_AT."""
    keras.utils.set_random_seed(0)
    env = make_env()
    model = tiny_trpo(env, value_epochs=2, value_batch_size=16, max_kl=0.05, learning_rate=3e-3)
    rollouts = rollouts_class(env, model, steps=RUN_STEPS, seed=0)
    backup_callback = keras_trpo.callbacks.RolloutsBackup(rollouts, backup)
    callbacks = [keras.callbacks.BackupAndRestore(backup), backup_callback]
    if copy is not None:
        callbacks.append(CopyBackupAt(backup, copy, COPY_AT, rollouts))
    history = model.fit(rollouts, epochs=RUN_EPOCHS, verbose=0, callbacks=callbacks)
    rollouts.close()
    return model, rollouts, history.history, callbacks[-1], backup_callback


@pytest.mark.parametrize(
    "make_env",
    [sync_cartpole, default_cartpole, wrapped_cartpole, wrapped_default_cartpole],
    ids=["make_vec-sync", "make_vec-default-CartPoleVectorEnv", "wrapped-sync", "wrapped-CartPoleVectorEnv"],
)
def test_resume_is_bit_identical_with_make_vec_envs(make_env, tmp_path):
    """Catches: the env pickled with ``pickle`` (make_vec's local ``create_single_env``, lambda wrappers:
    AttributeError at the first epoch end), or any state left out of the resume (RNG, observations,
    the vector wrapper's statistics, the reset-step flags of CartPoleVectorEnv)."""
    model, rollouts, history, copier, backup_callback = resumable_run(
        make_env, str(tmp_path / "backup"), copy=str(tmp_path / "killed"))
    assert backup_callback.bit_exact and backup_callback.reason is None
    assert rollouts.episode_returns and sum(history["step_accepted"]) >= RUN_EPOCHS - 1  # episodes end, weights move
    resumed, resumed_rollouts, resumed_history, _, _ = resumable_run(make_env, str(tmp_path / "killed"))
    assert len(resumed_history["kl"]) == RUN_EPOCHS - COPY_AT
    for key in ("kl", "episode_return", "value_loss", "env_steps"):
        np.testing.assert_array_equal(resumed_history[key], history[key][COPY_AT:], err_msg=key)
    assert_bit_identical(training_state(model), training_state(resumed))
    assert resumed_rollouts.env_steps == rollouts.env_steps
    assert resumed_rollouts.episode_returns == rollouts.episode_returns
    assert resumed_rollouts.episode_lengths == rollouts.episode_lengths


def test_async_envs_resume_from_a_seeded_reset_with_rng_and_counters_restored(tmp_path):
    """AsyncVectorEnv cannot be saved (its sub-envs live in worker processes): the resumed run resets it.

    Catches: pickling the AsyncVectorEnv (TypeError at the first epoch end, as on ce456b1), a reset
    seeded with None (two resumes from one backup then differ) and counters or RNG not restored.
    """
    model, rollouts, history, copier, backup_callback = resumable_run(
        async_cartpole, str(tmp_path / "backup"), copy=str(tmp_path / "killed"))
    saved = copier.state
    assert saved["env"] is None and saved["env_steps"] == COPY_AT * RUN_STEPS and saved["episode_returns"]
    shutil.copytree(tmp_path / "killed", tmp_path / "killed-again")
    first = resumable_run(async_cartpole, str(tmp_path / "killed"), rollouts_class=StateRecordingRollouts)
    second = resumable_run(async_cartpole, str(tmp_path / "killed-again"), rollouts_class=StateRecordingRollouts)
    for resumed, resumed_rollouts, resumed_history, _, _ in (first, second):
        assert len(resumed_history["kl"]) == RUN_EPOCHS - COPY_AT and resumed.policy_version == RUN_EPOCHS
        restored = resumed_rollouts.states[0]  # at the first resumed collection
        assert restored["rng"] == saved["rng"] and restored["env_steps"] == saved["env_steps"]
        assert restored["episode_returns"] == saved["episode_returns"]
        assert not restored["episode_length"].any()  # the running episodes restarted from the reset
        assert resumed_rollouts.env_steps == rollouts.env_steps == RUN_EPOCHS * RUN_STEPS
        assert resumed_rollouts.episode_returns[: len(saved["episode_returns"])] == saved["episode_returns"]
    # The reset is seeded (from the Rollouts seed and env_steps): resuming twice gives one run.
    assert_bit_identical(training_state(first[0]), training_state(second[0]))
    assert first[1].episode_returns == second[1].episode_returns
    assert not backup_callback.bit_exact and "AsyncVectorEnv" in backup_callback.reason


class StateRecordingRollouts(keras_trpo.Rollouts):
    """Records ``get_state()`` before each collection and every batch."""

    def collect(self):
        self.states = getattr(self, "states", [])
        self.batches = getattr(self, "batches", [])
        self.states.append(self.get_state())
        self.batches.append(super().collect())
        return self.batches[-1]


class WalkPickledByArguments(DeterministicWalk, EzPickle):
    """DeterministicWalk (observation: position, steps so far) pickled the way gymnasium's MuJoCo,
    Box2D and ale_py's Atari envs are: by its constructor arguments, so an unpickled copy is a new env."""

    def __init__(self, limit=11):
        DeterministicWalk.__init__(self, limit)
        EzPickle.__init__(self, limit)

    def _obs(self):
        return np.array([self.x, self.t], np.float32)


def ezpickle_walk():
    return gymnasium.vector.SyncVectorEnv([functools.partial(WalkPickledByArguments, limit=11 + i) for i in range(3)])


def assert_rows_follow_the_dynamics(batch, num_envs):
    """Each sub-env's consecutive rows: the next observation is the walk's step from the last, or a reset."""
    obs = batch["observations"].reshape(-1, num_envs, 2)
    moves = np.where(batch["actions"].reshape(-1, num_envs) == 1, 1.0, -1.0)
    for k in range(len(obs) - 1):
        stepped = obs[k] + np.stack([moves[k], np.ones(num_envs)], axis=1)
        ok = np.all(obs[k + 1] == stepped, axis=1) | np.all(obs[k + 1] == 0.0, axis=1)
        assert ok.all(), f"row {k} -> {k + 1}: {obs[k].tolist()} -> {obs[k + 1].tolist()} (actions {moves[k]})"


def test_envs_that_pickle_as_constructor_arguments_resume_from_a_reset_not_a_wrong_state(tmp_path):
    """Catches (as on ce456b1): an EzPickle env "restored" as a new env while the rollouts keep the saved
    observations, so the first resumed rows jump from mid-episode states to a fresh episode's."""
    _, _, _, copier, backup_callback = resumable_run(
        ezpickle_walk, str(tmp_path / "backup"), copy=str(tmp_path / "killed"))
    assert copier.state["observations"][:, 1].any()  # some episode is running at the interruption
    _, resumed_rollouts, history, _, _ = resumable_run(
        ezpickle_walk, str(tmp_path / "killed"), rollouts_class=StateRecordingRollouts)
    assert len(history["kl"]) == RUN_EPOCHS - COPY_AT
    for batch in resumed_rollouts.batches:
        assert_rows_follow_the_dynamics(batch, 3)
    assert not backup_callback.bit_exact and "EzPickle" in backup_callback.reason


def test_a_rollouts_state_is_refused_by_rollouts_of_another_number_of_sub_envs():
    """Before: "could not broadcast input array from shape (8,) into shape (4,)" at the next collection
    (new-user trial). Catches: the sub-env count left out of set_state's check."""
    eight, four = (cartpole_env(n) for n in (8, 4))
    model = tiny_model(eight)
    state = keras_trpo.Rollouts(eight, model, steps=16, seed=0).get_state()
    rollouts = keras_trpo.Rollouts(four, model, steps=16, seed=1)
    rng_before = rollouts.get_state()["rng"]
    with pytest.raises(ValueError, match=r"with 8 sub-environments, but .* these Rollouts have 4: .*resume with the env"):
        rollouts.set_state(state)
    assert rollouts.get_state()["rng"] == rng_before  # a refused state changes nothing


def test_set_state_changes_nothing_on_a_bad_env_and_closes_the_env_it_replaces():
    """Catches: the env unpickled after the RNG and counters were set (a failed restore then left the
    Rollouts half-restored), and the replaced env left open (review of issue 24)."""
    model = tiny_model(cartpole_env())
    saved = keras_trpo.Rollouts(cartpole_env(), model,
                                steps=8, seed=0)
    saved.collect()
    state = saved.get_state()
    target_env = cartpole_env()
    target = keras_trpo.Rollouts(target_env, model, steps=8, seed=1)
    before = target.get_state()
    with pytest.raises(Exception):
        target.set_state({**state, "env": b"not a pickle"})
    assert target.get_state()["rng"] == before["rng"] and target.env_steps == before["env_steps"] == 0
    target.set_state(state)
    assert target.env is not target_env and target_env.closed and target.env_steps == state["env_steps"] == 8


class LocksOnReset(CartPoleEnv):
    """Pickles at construction; after its first reset it holds a lock, which does not pickle."""

    def reset(self, **kwargs):
        self.lock = threading.Lock()
        return super().reset(**kwargs)


def test_rollouts_backup_warns_when_the_env_cannot_be_saved_at_construction_or_later(tmp_path):
    """Catches: no word that a resume will not be bit-identical (an AsyncVectorEnv at construction; an env
    whose pickling starts failing later, before: bit_exact stayed True and the env was silently not saved)."""
    env = gymnasium.vector.SyncVectorEnv([LocksOnReset, LocksOnReset])
    model = tiny_model(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backup = keras_trpo.callbacks.RolloutsBackup(rollouts, str(tmp_path))  # pickles now: no warning
    assert backup.bit_exact
    with pytest.warns(UserWarning, match=r"RolloutsBackup cannot save the env \(pickling it raised TypeError"):
        model.fit(rollouts, epochs=1, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path)), backup])
    assert not backup.bit_exact and "TypeError" in backup.reason
    with pytest.warns(UserWarning, match=r"RolloutsBackup cannot save the env \(AsyncVectorEnv: its sub-environments"):
        keras_trpo.callbacks.RolloutsBackup(keras_trpo.Rollouts(async_cartpole(), model, steps=8), str(tmp_path))
