"""keras_trpo.callbacks, and Keras's own callbacks on real CartPole/Pendulum fits with tiny networks."""

import csv
import glob
import math
import os
import subprocess
import sys
import warnings

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo
from keras_trpo.callbacks import (
    REJECTION_HINTS,
    Evaluation,
    ExportBest,
    LineSearchMonitor,
    ProgressLogger,
    StepsPerSecond,
    TensorBoard,
    TrustRegionSchedule,
)
from helpers import Crash, CrashAt, cartpole_env, cartpole_run, tiny_trpo
from numerics import mlp_gap


def cartpole(num_envs=2, steps=128, seed=0, **model_kwargs):
    return cartpole_run(num_envs, steps, seed, hidden=16, **model_kwargs)


def read_scalars(log_dir):
    """{tag: {step: value}} from the one TensorBoard event file in ``log_dir``."""
    (event_file,) = glob.glob(f"{log_dir}/events.out.tfevents.*")
    scalars = {}
    for record in tf.data.TFRecordDataset(event_file):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


class Recorder(keras.callbacks.Callback):
    """Copies of the logs and the policy weights at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.logs, self.epochs, self.weights = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.logs.append(dict(logs))
        self.weights.append([v.numpy().copy() for v in self.model.policy_variables])


# --------------------------------------------------------------------------
# ProgressLogger, StepsPerSecond, verbose
# --------------------------------------------------------------------------
def test_progress_logger_prints_every_n_iterations_with_episode_stats():
    model, rollouts = cartpole_run(steps=128)
    lines = []
    history = model.fit(
        rollouts,
        epochs=4,
        verbose=0,
        callbacks=[ProgressLogger(every=2, print_fn=lines.append)],
    )
    assert len(lines) == 2
    assert lines[0].startswith("iteration    2 | env steps      256 | episode return")
    assert lines[1].startswith("iteration    4 | env steps      512 |")
    assert "steps/s" in lines[1] and "kl 0.0" in lines[1]
    # The logger also puts the rate in the logs of every iteration.
    assert len(history.history["steps_per_second"]) == 4
    assert all(rate > 0 for rate in history.history["steps_per_second"])


def test_progress_logger_says_when_no_episode_finished():
    lines = []
    logger = ProgressLogger(every=1, print_fn=lines.append)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"episode_return": float("nan"), "env_steps": 10.0, "kl": 0.01})
    assert "no episode finished" in lines[0]


def test_progress_logger_shows_eval_return_and_max_kl_when_present():
    lines = []
    logger = ProgressLogger(every=1, print_fn=lines.append)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"episode_return": 20.0, "env_steps": 10.0, "eval_return": 123.4, "max_kl": 0.02})
    assert "eval return 123.4" in lines[0] and "max_kl 0.02" in lines[0]


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_progress_logger_rejects_bad_every(every):
    with pytest.raises(ValueError, match="every"):
        ProgressLogger(every=every)


def test_steps_per_second_measures_env_steps_over_wall_time():
    rate = StepsPerSecond()
    rate.on_train_begin()
    logs = {"env_steps": 1000.0}
    rate.on_epoch_end(0, logs)
    first = logs["steps_per_second"]
    assert first > 0
    # After the first iteration: steps since the end of the first iteration over the time since then.
    rate._first_end_time -= 2.0  # two seconds ago
    logs = {"env_steps": 3000.0}
    rate.on_epoch_end(1, logs)
    assert logs["steps_per_second"] == pytest.approx(1000.0, rel=0.05)
    no_steps = {}
    rate.on_epoch_end(2, no_steps)
    assert "steps_per_second" not in no_steps


def test_verbose_behaves_as_in_keras_and_the_progress_bar_shows_the_trpo_metrics(capsys):
    model, rollouts = cartpole()
    model.fit(rollouts, epochs=2, verbose=0, callbacks=[StepsPerSecond()])
    assert capsys.readouterr().out == ""
    model.fit(rollouts, epochs=2, verbose=2, callbacks=[StepsPerSecond()])
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 2 and "Epoch 2/2" in out
    epoch_lines = [line for line in out.splitlines() if "episode_return:" in line]
    assert len(epoch_lines) == 2  # verbose=2: one line per epoch, no bar
    for key in ("episode_return", "kl", "line_search_steps", "value_loss", "env_steps", "steps_per_second"):
        assert f"{key}: " in epoch_lines[-1], key
    model.fit(rollouts, epochs=1, verbose=1, callbacks=[StepsPerSecond()])
    out = capsys.readouterr().out
    assert "1/1" in out and "━" in out and "steps_per_second: " in out  # the progress bar


# --------------------------------------------------------------------------
# LineSearchMonitor
# --------------------------------------------------------------------------
def _logs(accepted, reason=0, shrinks=0.0, kl=0.01, expected=0.02, actual=0.018):
    return {
        "step_accepted": float(accepted),
        "rejection_reason": float(reason),
        "line_search_steps": shrinks,
        "step_fraction": 0.8**shrinks if accepted else 0.0,
        "kl": kl if accepted else 0.0,
        "surrogate_improvement": actual if accepted else 0.0,
        "expected_improvement": expected,
    }


@pytest.mark.parametrize("reason,hint_word", [(1, "NaN or inf"), (2, "damping"), (3, "max_kl")])
def test_line_search_monitor_warns_once_per_streak_with_the_cause(reason, hint_word):
    monitor = LineSearchMonitor(patience=3, window=4)
    sequence = [_logs(True), _logs(False, reason), _logs(False, reason), _logs(False, reason), _logs(False, reason)]
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch, logs in enumerate(sequence):
            monitor.on_epoch_end(epoch, logs)
            seen.append(logs)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert len(messages) == 1  # at the third rejection in a row, not again at the fourth
    assert "3 policy updates in a row (iterations 2-4" in messages[0]
    assert keras_trpo.REJECTION_REASONS[reason] in messages[0] and hint_word in messages[0]
    assert REJECTION_HINTS[reason] in messages[0]
    assert [logs["consecutive_rejections"] for logs in seen] == [0, 1, 2, 3, 4]
    assert [logs["acceptance_rate"] for logs in seen] == [1.0, 0.5, pytest.approx(1 / 3), 0.25, 0.0]
    assert seen[0]["improvement_ratio"] == pytest.approx(0.9)
    # An accepted update ends the streak; a new streak warns again.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch, logs in enumerate([_logs(True)] + [_logs(False, reason)] * 3, start=5):
            monitor.on_epoch_end(epoch, logs)
    assert len([w for w in caught if w.category is UserWarning]) == 1
    assert monitor.history["step_accepted"].count(1.0) == 2
    assert "9 updates, 2 accepted (22%)" in monitor.summary()


def test_line_search_monitor_on_a_real_fit_whose_updates_are_all_rejected():
    model, rollouts = cartpole()
    model.damping = -1e3  # F − 1000·I is negative definite: every update is rejected (reason 2)
    monitor = LineSearchMonitor(patience=2, stop_training=True)
    with pytest.warns(UserWarning, match=r"rejected 2 policy updates in a row.*reason 2.*damping"):
        history = model.fit(rollouts, epochs=5, verbose=0, callbacks=[monitor])
    assert len(history.history["kl"]) == 2  # stop_training=True stopped fit at the warning
    assert history.history["consecutive_rejections"] == [1.0, 2.0]
    assert history.history["acceptance_rate"] == [0.0, 0.0]
    assert monitor.history["rejection_reason"] == [2.0, 2.0]


@pytest.mark.parametrize("kwargs", [{"patience": 0}, {"window": -1}, {"patience": 1.5}])
def test_line_search_monitor_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        LineSearchMonitor(**kwargs)


# --------------------------------------------------------------------------
# TrustRegionSchedule
# --------------------------------------------------------------------------
def test_trust_region_schedule_sets_max_kl_per_epoch_without_retracing():
    model, rollouts = cartpole()
    values = [0.001, 0.03, 0.005]
    history = model.fit(rollouts, epochs=3, verbose=0, callbacks=[TrustRegionSchedule(lambda epoch: values[epoch])])
    assert history.history["max_kl"] == pytest.approx(values)
    assert model.max_kl == pytest.approx(values[-1])
    assert model.train_function.tracing_count() == 1  # max_kl is a variable: one trace for all three values
    for kl, max_kl in zip(history.history["kl"], values):
        assert 0 < kl <= max_kl * (1 + 1e-5)
    assert history.history["kl"][1] > values[0] * 2  # the larger radius was really used


def test_trust_region_schedule_may_take_the_current_value():
    model, rollouts = cartpole(max_kl=0.04)
    lines = []
    schedule = TrustRegionSchedule(lambda epoch, max_kl: max_kl / 2, verbose=1, print_fn=lines.append)
    history = model.fit(rollouts, epochs=2, verbose=0, callbacks=[schedule])
    assert history.history["max_kl"] == pytest.approx([0.02, 0.01])
    assert lines == ["Epoch 1: TrustRegionSchedule setting max_kl to 0.02.", "Epoch 2: TrustRegionSchedule setting max_kl to 0.01."]


@pytest.mark.parametrize("bad", [0.0, -0.01, float("nan"), "big", None])
def test_trust_region_schedule_rejects_bad_values(bad):
    model, _ = cartpole()
    schedule = TrustRegionSchedule(lambda epoch: bad)
    schedule.set_model(model)
    with pytest.raises(ValueError, match="max_kl schedule returned"):
        schedule.on_epoch_begin(0)
    with pytest.raises(TypeError, match="callable"):
        TrustRegionSchedule(0.01)


# --------------------------------------------------------------------------
# Evaluation and ExportBest
# --------------------------------------------------------------------------
def test_evaluation_adds_eval_return_for_callbacks_after_it_and_export_best_serves_the_best(tmp_path):
    model, rollouts = cartpole()
    evaluation = Evaluation("CartPole-v1", episodes=3, every=2, seed=7)
    recorder = Recorder()
    export_best = ExportBest(tmp_path / "best")
    checkpoint = keras.callbacks.ModelCheckpoint(
        tmp_path / "best.keras", monitor="eval_return", mode="max", save_best_only=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ModelCheckpoint warns on the epochs without an evaluation
        history = model.fit(rollouts, epochs=4, verbose=0, callbacks=[evaluation, recorder, export_best, checkpoint])
    # After the first epoch, every 2nd one and the last one.
    assert [r["epoch"] for r in evaluation.results] == [0, 1, 3]
    assert [e for e, logs in zip(recorder.epochs, recorder.logs) if "eval_return" in logs] == [0, 1, 3]
    assert history.history["eval_return"] == [r["mean"] for r in evaluation.results]
    assert evaluation.results[-1]["env_steps"] == 512
    # Deterministic and seeded: the last result is what keras_trpo.evaluate says for the final weights.
    assert evaluation.results[-1]["returns"] == keras_trpo.evaluate(model, "CartPole-v1", episodes=3, seed=7)
    assert evaluation._env is None  # the env it made was closed
    # ExportBest: one export per improvement, each a new version; the best one is the newest.
    means = [r["mean"] for r in evaluation.results]
    improvements = [i for i, m in enumerate(means) if m > max(means[:i], default=-math.inf)]
    assert len(export_best.exported) == len(improvements)
    assert export_best.best == max(means)
    assert sorted(os.listdir(tmp_path / "best")) == [str(i + 1) for i in range(len(improvements))]
    assert export_best.best_path == str(tmp_path / "best" / str(len(improvements)))
    assert os.path.isfile(tmp_path / "best.keras")
    # The newest version holds the weights of the best evaluated epoch.
    best_epoch = evaluation.results[improvements[-1]]["epoch"]
    for variable, weights in zip(model.policy_variables, recorder.weights[best_epoch]):
        variable.assign(weights)
    observations = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    serving = tf.saved_model.load(export_best.best_path).signatures["serving_default"]
    np.testing.assert_array_equal(serving(observations=observations)["actions"].numpy(), model(observations).numpy())
    logits = tf.saved_model.load(export_best.best_path).signatures["distribution_params"](observations=observations)
    gap = mlp_gap(model, observations)["policy"]  # derived: two float32 evaluations (tests/numerics.py)
    assert np.all(np.abs(logits["logits"].numpy() - model.distribution_params(observations)["logits"].numpy()) <= gap)


def test_export_best_exports_on_improvement_only_and_keeps_max_to_keep(tmp_path):
    model, _ = cartpole()
    export_best = ExportBest(str(tmp_path / "served"), max_to_keep=1, verbose=1, print_fn=lambda line: None)
    export_best.set_model(model)
    export_best.on_train_begin()
    for epoch, value in enumerate([1.0, 0.5, float("nan"), 2.0, 2.0]):
        export_best.on_epoch_end(epoch, {"eval_return": value})
    export_best.on_epoch_end(5, {"kl": 0.01})  # no eval_return: skipped
    assert [(epoch, value) for epoch, value, _ in export_best.exported] == [(0, 1.0), (3, 2.0)]
    assert os.listdir(tmp_path / "served") == ["2"]  # version 1 removed by max_to_keep=1
    assert export_best.best_path == str(tmp_path / "served" / "2")
    with pytest.warns(UserWarning, match="never found 'eval_return'"):
        unused = ExportBest(str(tmp_path / "unused"))
        unused.set_model(model)
        unused.on_train_begin()
        unused.on_epoch_end(0, {"kl": 0.0})
        unused.on_train_end()
    assert not os.path.exists(tmp_path / "unused")
    with pytest.raises(ValueError, match="mode"):
        ExportBest(str(tmp_path), mode="best")


# --------------------------------------------------------------------------
# Keras built-in callbacks on a real fit
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    """One 4-iteration CartPole fit with TensorBoard, CSVLogger, ModelCheckpoint, TerminateOnNaN, LearningRateScheduler."""
    directory = tmp_path_factory.mktemp("builtins")
    model, rollouts = cartpole(seed=3)
    recorder = Recorder()
    # Keras's ModelCheckpoint on a batch statistic keeps the updated weights: fit says so.
    with pytest.warns(UserWarning, match=r"keras.callbacks.ModelCheckpoint\(monitor='episode_return'"):
        history = model.fit(
            rollouts,
            epochs=4,
            verbose=0,
            callbacks=[
                StepsPerSecond(),
                recorder,
                keras.callbacks.TensorBoard(str(directory / "tb"), write_graph=False),
                keras.callbacks.CSVLogger(str(directory / "metrics.csv")),
                keras.callbacks.ModelCheckpoint(
                    str(directory / "best.keras"), monitor="episode_return", mode="max", save_best_only=True
                ),
                keras.callbacks.TerminateOnNaN(),
                keras.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-3 * 0.5**epoch),  # the critic's
            ],
        )
    return directory, model, history, recorder


def test_tensorboard_event_file_holds_the_trpo_scalars(builtin_run):
    directory, _, history, _ = builtin_run
    scalars = read_scalars(directory / "tb" / "train")
    for key in ("episode_return", "kl", "line_search_steps", "value_loss", "env_steps", "steps_per_second"):
        assert sorted(scalars[f"epoch_{key}"]) == [0, 1, 2, 3], key
        np.testing.assert_allclose(
            [scalars[f"epoch_{key}"][step] for step in range(4)], history.history[key], rtol=1e-6
        )
    assert [scalars["epoch_env_steps"][step] for step in range(4)] == [128, 256, 384, 512]
    # LearningRateScheduler drives the critic optimizer; TensorBoard logs its learning rate too.
    np.testing.assert_allclose([scalars["epoch_learning_rate"][step] for step in range(4)], [1e-3 * 0.5**e for e in range(4)])


def test_csv_logger_writes_one_row_per_iteration(builtin_run):
    directory, _, history, _ = builtin_run
    with open(directory / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3]
    assert [float(row["env_steps"]) for row in rows] == [128, 256, 384, 512]
    np.testing.assert_allclose([float(row["episode_return"]) for row in rows], history.history["episode_return"])
    np.testing.assert_allclose([float(row["kl"]) for row in rows], history.history["kl"])


def test_keras_model_checkpoint_on_episode_return_saves_the_weights_after_the_best_batch(builtin_run):
    """What keras_trpo's warning says of Keras's ModelCheckpoint: it saves the weights at the end of the best
    iteration, one update after the policy that collected the best batch (keras_trpo.callbacks.ModelCheckpoint
    saves the latter: test_best_callbacks_keep_the_policy_that_collected_the_best_batch)."""
    directory, model, history, recorder = builtin_run
    returns = np.array(history.history["episode_return"])
    best = int(np.nanargmax(returns))
    restored = keras.models.load_model(directory / "best.keras")
    assert isinstance(restored, keras_trpo.TRPO) and restored.get_config() == model.get_config()
    assert restored.policy_version == best + 1  # the batch was collected by version `best`
    for saved, variable in zip(recorder.weights[best], restored.policy_variables):
        np.testing.assert_array_equal(saved, variable.numpy())


def test_terminate_on_nan_keeps_training_through_batches_without_a_finished_episode():
    # Pendulum episodes last 200 steps: 64-step batches finish none, so episode_return is NaN.
    env = gymnasium.make_vec("Pendulum-v1", num_envs=1, vectorization_mode="sync")
    model = tiny_trpo(env, 16)
    history = model.fit(
        keras_trpo.Rollouts(env, model, steps=64, seed=0),
        epochs=3,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert len(history.history["kl"]) == 3
    assert all(math.isnan(r) for r in history.history["episode_return"])
    assert all(math.isfinite(v) for v in history.history["value_loss"])
    assert history.history["step_accepted"] == [1.0, 1.0, 1.0]


def test_early_stopping_on_episode_return():
    model, rollouts = cartpole()
    # An unreachable baseline: no epoch counts as an improvement, so fit stops after `patience` epochs.
    stopper = keras.callbacks.EarlyStopping(monitor="episode_return", mode="max", patience=2, baseline=1e9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing monitor key would warn
        history = model.fit(rollouts, epochs=10, verbose=0, callbacks=[stopper])
    assert len(history.history["episode_return"]) == 2
    assert stopper.stopped_epoch == 1
    assert rollouts.env_steps == 2 * 128


def test_keras_early_stopping_restores_the_weights_after_the_best_batch():
    """What keras_trpo's warning says of Keras's EarlyStopping(restore_best_weights=True) on episode_return."""
    model, rollouts = cartpole(seed=1)
    recorder = Recorder()
    stopper = keras.callbacks.EarlyStopping(
        monitor="episode_return", mode="max", patience=2, baseline=1e9, restore_best_weights=True
    )
    with pytest.warns(UserWarning, match=r"keras.callbacks.EarlyStopping\(monitor='episode_return'"):
        history = model.fit(rollouts, epochs=10, verbose=0, callbacks=[recorder, stopper])
    best = int(np.nanargmax(history.history["episode_return"]))
    assert model.policy_version == best + 1
    for saved, variable in zip(recorder.weights[best], model.policy_variables):
        np.testing.assert_array_equal(saved, variable.numpy())


def test_backup_and_restore_resumes_an_interrupted_run(tmp_path):
    backup = str(tmp_path / "backup")
    model, rollouts = cartpole(seed=2)
    recorder = Recorder()
    with pytest.raises(Crash):
        model.fit(rollouts, epochs=4, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), recorder, CrashAt(2)])
    assert recorder.epochs == [0, 1] and os.listdir(backup)

    # A new process would build the same model from scratch: the backup brings back epoch 2's start.
    resumed, resumed_rollouts = cartpole(seed=2)
    resumed_recorder = Recorder()

    class FirstBatchWeights(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if not hasattr(self, "weights"):
                self.epoch = epoch
                self.version = self.model.policy_version
                self.weights = [v.numpy().copy() for v in self.model.policy_variables]

    first = FirstBatchWeights()
    history = resumed.fit(
        resumed_rollouts,
        epochs=4,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup), first, resumed_recorder],
    )
    assert first.epoch == 2 and first.version == 2
    for saved, restored in zip(recorder.weights[1], first.weights):
        np.testing.assert_array_equal(saved, restored)
    assert resumed_recorder.epochs == [2, 3] and len(history.history["kl"]) == 2
    assert resumed.policy_version == 4
    assert not os.path.exists(backup)  # removed after the run completed


# --------------------------------------------------------------------------
# EarlyStopping and ModelCheckpoint on eval_return (the README's examples run in tests/test_readme.py)
# --------------------------------------------------------------------------
README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def readme_for_keras_users_example() -> str:
    with open(README, encoding="utf-8") as f:
        section = f.read().split("## For Keras users", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_keras_early_stopping_warns_on_iterations_without_eval_return_and_ours_does_not():
    model, _ = cartpole()
    logs = [{"eval_return": 10.0}, {}, {}, {"eval_return": 50.0}, {}, {}, {"eval_return": 40.0}, {}, {}, {"eval_return": 45.0}]

    def run(stopper):
        stopper.set_model(model)
        model.stop_training = False
        stopper.on_train_begin()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for epoch, epoch_logs in enumerate(logs):
                stopper.on_epoch_end(epoch, {"kl": 0.01, **epoch_logs})
                if model.stop_training:
                    break
            stopper.on_train_end()
        return [str(w.message) for w in caught]

    keras_messages = run(keras.callbacks.EarlyStopping(monitor="eval_return", mode="max", patience=2))
    assert len(keras_messages) == 6 and "`eval_return` which is not available" in keras_messages[0]
    stopper = keras_trpo.callbacks.EarlyStopping(patience=2)  # defaults: eval_return, max
    assert run(stopper) == []
    # Patience counts evaluations: 50 at epoch 3, then 40 and 45 without improvement -> stop at epoch 9.
    assert stopper.stopped_epoch == 9 and stopper.best == 50.0 and model.stop_training
    never = keras_trpo.callbacks.EarlyStopping(patience=2)
    never.set_model(model)
    never.on_train_begin()
    never.on_epoch_end(0, {"kl": 0.01})
    with pytest.warns(UserWarning, match=r"EarlyStopping never found a finite 'eval_return'.*Put keras_trpo.callbacks.Evaluation before it"):
        never.on_train_end()


def test_model_checkpoint_on_eval_return_keeps_the_best_evaluated_iteration(tmp_path):
    model, rollouts = cartpole(seed=4)
    evaluation = Evaluation("CartPole-v1", episodes=3, every=3, seed=7)  # iterations 1, 3, 6
    recorder = Recorder()
    checkpoint = keras_trpo.callbacks.ModelCheckpoint(tmp_path / "best.keras")  # eval_return, max, best only
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # Keras's warns "Can save best model only with eval_return available"
        model.fit(rollouts, epochs=6, verbose=0, callbacks=[evaluation, recorder, checkpoint])
    means = [r["mean"] for r in evaluation.results]
    assert [r["epoch"] for r in evaluation.results] == [0, 2, 5]
    best_epoch = evaluation.results[int(np.argmax(means))]["epoch"]  # first of equals: later ones are no improvement
    # Not the last iteration: keras.callbacks.ModelCheckpoint would have overwritten it at the unevaluated ones after it.
    assert best_epoch != 5
    restored = keras.models.load_model(tmp_path / "best.keras")
    for saved, variable in zip(recorder.weights[best_epoch], restored.policy_variables):
        np.testing.assert_array_equal(saved, variable.numpy())
    assert checkpoint.best == max(means)


# --------------------------------------------------------------------------
# "Best" callbacks on a batch statistic: the policy that collected the best batch (issue 24, item 5)
# --------------------------------------------------------------------------
class CollectorRollouts(keras_trpo.Rollouts):
    """Rollouts that keep the version and a copy of every weight of the model each time they collect a batch."""

    def collect(self):
        self.collectors = getattr(self, "collectors", [])
        self.collectors.append((self.model.policy_version, self.model.get_weights()))
        return super().collect()


def assert_same_weights(expected, actual):
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual):
        np.testing.assert_array_equal(want, got)


def test_best_callbacks_keep_the_policy_that_collected_the_best_batch(tmp_path):
    """episode_return is measured on the batch, collected before the update of its iteration: the best model
    is the one that collected the best batch. Catches: saving, restoring or exporting the weights at
    on_epoch_end (after the update), as Keras's callbacks do and keras_trpo's did (ce456b1)."""
    env = cartpole_env()
    model = tiny_trpo(env, 16)
    rollouts = CollectorRollouts(env, model, steps=128, seed=0)
    checkpoint = keras_trpo.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="episode_return")
    stopper = keras_trpo.callbacks.EarlyStopping(monitor="episode_return", patience=100, restore_best_weights=True)
    export_best = ExportBest(tmp_path / "served", monitor="episode_return")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        history = model.fit(rollouts, epochs=6, verbose=0, callbacks=[checkpoint, stopper, export_best])
    returns = history.history["episode_return"]
    best = int(np.nanargmax(returns))  # the first of equals: later ones are no improvement
    version, weights = rollouts.collectors[best]
    assert version == best and history.history["step_accepted"][best] == 1.0  # its update changed the weights
    # ModelCheckpoint: the .keras file is the model that collected the best batch.
    saved = keras.models.load_model(tmp_path / "best.keras")
    assert saved.policy_version == best and checkpoint.best == max(returns)
    assert_same_weights(weights, saved.get_weights())
    # EarlyStopping(restore_best_weights=True): the model ends with those weights.
    assert stopper.best_epoch == best
    assert_same_weights(weights, model.get_weights())
    # ExportBest: the newest version serves them (the model holds them now).
    assert export_best.exported[-1][0] == best
    observations = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    signatures = tf.saved_model.load(export_best.best_path).signatures
    np.testing.assert_array_equal(signatures["serving_default"](observations=observations)["actions"].numpy(),
                                  model(observations).numpy())
    served = signatures["distribution_params"](observations=observations)["logits"].numpy()
    gap = mlp_gap(model, observations)["policy"]  # derived: two float32 evaluations (tests/numerics.py)
    assert np.all(np.abs(served - model.distribution_params(observations)["logits"].numpy()) <= gap)
    after_update = rollouts.collectors[best + 1][1] if best + 1 < len(rollouts.collectors) else None
    if after_update is not None:  # the weights after the best update give other logits: the check can tell them apart
        model.set_weights(after_update)
        assert not np.all(np.abs(served - model.distribution_params(observations)["logits"].numpy()) <= gap)


def test_best_callbacks_skip_batches_in_which_no_episode_finished(tmp_path):
    """Pendulum episodes last 200 steps: with 64-step batches only the 4th one finishes an episode, the others
    log episode_return NaN. Keras takes the first NaN as the best (nothing beats NaN afterwards): its
    ModelCheckpoint keeps iteration 1's model and its EarlyStopping(patience=1) stops at iteration 2.
    Catches: a NaN counted as a measured value."""
    env = gymnasium.make_vec("Pendulum-v1", num_envs=1, vectorization_mode="sync")
    model = tiny_trpo(env)
    rollouts = CollectorRollouts(env, model, steps=64, seed=0)
    checkpoint = keras_trpo.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="episode_return")
    stopper = keras_trpo.callbacks.EarlyStopping(monitor="episode_return", patience=1)
    history = model.fit(rollouts, epochs=5, verbose=0, callbacks=[checkpoint, stopper])
    finished = [i for i, r in enumerate(history.history["episode_return"]) if math.isfinite(r)]
    assert finished == [3] and len(history.history["kl"]) == 5  # no early stop on NaN
    saved = keras.models.load_model(checkpoint.filepath)
    assert saved.policy_version == 3
    assert_same_weights(rollouts.collectors[3][1], saved.get_weights())


def _keras_checkpoint(directory, **kwargs):
    return keras.callbacks.ModelCheckpoint(directory / "best.keras", **kwargs)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: _keras_checkpoint(d, monitor="episode_return", mode="max", save_best_only=True),
         "keras.callbacks.ModelCheckpoint(monitor='episode_return', save_best_only=True) saves the weights after the "
         "update of the best iteration, not the policy that collected its batch (episode_return is measured on the "
         "batch, before the update). Use keras_trpo.callbacks.ModelCheckpoint(monitor='episode_return', ...), "),
        (lambda d: keras.callbacks.EarlyStopping(monitor="episode_length", mode="min", restore_best_weights=True),
         "keras.callbacks.EarlyStopping(monitor='episode_length', restore_best_weights=True) restores the weights "
         "after the update of the best iteration"),
        (lambda d: _keras_checkpoint(d, monitor="episode_return", mode="max"), None),  # saves every iteration
        (lambda d: keras.callbacks.EarlyStopping(monitor="episode_return", mode="max"), None),  # keeps no weights
        (lambda d: _keras_checkpoint(d, monitor="eval_return", mode="max", save_best_only=True), None),  # after the update
        (lambda d: keras_trpo.callbacks.ModelCheckpoint(d / "b.keras", monitor="episode_return"), None),
        (lambda d: keras_trpo.callbacks.EarlyStopping(monitor="episode_return", restore_best_weights=True), None),
        (lambda d: keras.callbacks.CSVLogger(d / "m.csv"), None),
    ],
    ids=["keras-checkpoint-best-only", "keras-early-stopping-restore", "keras-checkpoint-every-iteration",
         "keras-early-stopping-no-restore", "keras-checkpoint-eval-return", "ours-checkpoint", "ours-early-stopping",
         "csv-logger"],
)
def test_keras_best_callbacks_on_a_batch_statistic_are_warned_about_once(make, message, tmp_path):
    """Catches: a Keras callback that keeps the updated policy for a batch statistic passing silently, a
    warning for one that keeps the right weights, or the warning repeated at every fit."""
    callback = make(tmp_path)
    check = keras_trpo.callbacks.best_policy.warn_about_keras_best_callbacks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check([keras.callbacks.History(), callback])
        check([callback])  # a second fit with the same callback
    messages = [str(w.message) for w in caught]
    if message is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith(message), messages
        assert messages[0].endswith("or monitor eval_return (keras_trpo.callbacks.Evaluation), measured on the "
                                    "updated weights.")


def test_fit_warns_about_a_keras_model_checkpoint_on_episode_return(tmp_path):
    """TRPO.fit calls warn_about_keras_best_callbacks. Catches: the check not being called by fit."""
    model, rollouts = cartpole()
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="episode_return", mode="max",
                                                 save_best_only=True)
    with pytest.warns(UserWarning, match=r"keras.callbacks.ModelCheckpoint\(monitor='episode_return'") as caught:
        model.fit(rollouts, epochs=1, verbose=0, callbacks=[checkpoint])
    assert caught[0].filename == __file__  # points at the fit call


def test_a_keras_file_loads_in_a_fresh_process_after_import_keras_trpo(tmp_path):
    code = readme_for_keras_users_example()
    (save_line,) = [line for line in code.splitlines() if "model.save(" in line]
    assert "import keras_trpo" in save_line and "keras.models.load_model" in save_line
    model, _ = cartpole()
    path = str(tmp_path / "cartpole.keras")
    model.save(path)
    load = f"print(type(keras.models.load_model({path!r})).__name__)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # One process: without keras_trpo the load fails; after `import keras_trpo` (Keras imported first) it works.
    without_then_with = f"""
import keras
try:
    {load}
except Exception as error:
    print("FAILED:", error)
import keras_trpo
{load}
"""
    # Another: keras_trpo imported before Keras.
    outputs = []
    for code in (without_then_with, f"import keras_trpo; import keras; {load}"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, code + result.stderr[-1000:]
        assert result.stdout.strip().splitlines()[-1] == "TRPO"
        outputs.append(result.stdout)
    without = outputs[0].split("FAILED:", 1)[1]  # the load before import keras_trpo failed ...
    assert "Could not locate class 'TRPO'" in without
    assert "'registered_name': 'keras_trpo>TRPO'" in without  # the only hint Keras's message gives


# --------------------------------------------------------------------------
# keras_trpo.callbacks.TensorBoard: env steps on the x-axis
# --------------------------------------------------------------------------
def test_tensorboard_writes_every_logged_scalar_at_env_steps(tmp_path):
    model, rollouts = cartpole(num_envs=2, steps=64, hidden_units=(8,), value_hidden_units=(8,))
    history = model.fit(rollouts, epochs=3, verbose=0, callbacks=[StepsPerSecond(), TensorBoard(tmp_path / "tb")])
    scalars = read_scalars(tmp_path / "tb")
    assert history.history["env_steps"] == [64, 128, 192]
    # Every key of History, at env steps 64, 128, 192; a NaN (no episode finished) is left out.
    for key, values in history.history.items():
        finite = {step: value for step, value in zip((64, 128, 192), values) if math.isfinite(value)}
        assert scalars.get(key, {}) == pytest.approx(finite, rel=1e-6), key
    for key in ("kl", "value_loss", "line_search_steps", "steps_per_second", "env_steps"):
        assert sorted(scalars[key]) == [64, 128, 192], key
    assert scalars["learning_rate"] == pytest.approx({64: 1e-3, 128: 1e-3, 192: 1e-3})


def test_tensorboard_leaves_out_nan_and_refuses_logs_without_env_steps(tmp_path):
    board = TensorBoard(tmp_path)
    board.on_train_begin()
    board.on_epoch_end(0, {"env_steps": 100.0, "episode_return": float("nan"), "kl": np.float32(0.01)})
    with pytest.raises(ValueError, match="needs env_steps in the logs.*keras.callbacks.TensorBoard"):
        board.on_epoch_end(1, {"kl": 0.02})
    board.on_train_end()
    assert read_scalars(tmp_path) == {"env_steps": {100: 100.0}, "kl": {100: pytest.approx(0.01)}}
