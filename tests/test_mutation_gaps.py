"""Tests for behaviour that one-line mutations of the stable modules changed without a failing test.

Issue 25, item 9 (second half): a mutation pass over advantages, normalization, ops, policies,
envs, export, evaluation, acting, distribute, callbacks and presets (table in the session
notes, mutations.md). Each test below names the mutation it catches.
"""

import math
import os
import time

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo
from keras_trpo import ops
from keras_trpo.acting import PolicySnapshot
from keras_trpo import presets
from keras_trpo.advantages import compute_gae
from keras_trpo.callbacks import ExportBest, ModelCheckpoint, StepsPerSecond
from keras_trpo.evaluation import evaluate
from keras_trpo.export import export_saved_model, resolve_version_dir
from keras_trpo.normalization import RunningNormalization
from keras_trpo.policies import BernoulliHead
from numerics import dense_stack_error
from keras_trpo.normalization import RewardScaler


def test_compute_gae_refuses_an_empty_batch_in_one_line():
    """Catches: advantages.py dropping the ``T == 0`` check (an IndexError from numpy instead of the message)."""
    empty = np.zeros((0, 2))
    with pytest.raises(ValueError, match=r"^rewards has T = 0 rows"):
        compute_gae(empty, empty, empty.astype(bool), empty.astype(bool), empty)


def test_a_non_finite_reward_leaves_the_reward_statistics_unchanged():
    """Catches two mutations of RewardScaler.__call__.

    * ``if np.all(np.isfinite(self.returns))`` -> ``if True``: the moments of a NaN return are merged,
      the running mean and variance become NaN for good and every later reward is scaled to NaN;
    * ``done | ~np.isfinite(self.returns)`` -> ``done``: the NaN return is kept, so the statistics
      are never updated again.
    """
    scaler = RewardScaler(num_envs=2, gamma=0.9)
    scaler(np.array([1.0, 2.0]), np.array([False, False]))
    before = scaler.get_state()
    scaled = scaler(np.array([np.nan, 1.0]), np.array([False, False]))
    after = scaler.get_state()
    assert (after["mean"], after["variance"], after["count"]) == (before["mean"], before["variance"], before["count"])
    assert math.isnan(scaled[0]) and np.isfinite(scaled[1])
    assert after["returns"][0] == 0.0  # the non-finite return restarts
    assert np.all(np.isfinite(scaler(np.array([1.0, 1.0]), np.array([False, False]))))
    assert scaler.count == after["count"] + 2  # the statistics move again


B = np.array([1.0, -2.0, 0.5])


def test_conjugate_gradient_stops_on_zero_curvature_and_keeps_the_last_good_iterate():
    """Catches: ops.conjugate_gradient's breakdown test ``pz > 0`` -> ``pz >= 0``.

    A zero ``pᵀAp`` (here A = 0, as for a direction the KL does not depend on, without damping)
    is a breakdown; under the mutation the step is ``rᵀr / 0`` and ``x`` becomes infinite.
    """
    x, info = ops.conjugate_gradient(lambda v: 0.0 * v, tf.constant(B), 5)
    np.testing.assert_array_equal(x.numpy(), np.zeros_like(B))
    assert bool(info["breakdown"]) and int(info["iterations"]) == 1
    assert float(info["residual"]) == np.sqrt(np.sum(B * B))


def test_conjugate_gradient_stops_on_infinite_curvature_with_a_finite_residual():
    """Catches: ops.conjugate_gradient's breakdown test losing ``tf.math.is_finite(pz)``.

    An overflowing ``A p`` (``pᵀAp = +inf``) is a breakdown; under the mutation the step is taken
    with ``alpha = 0`` and the residual becomes ``0·inf = NaN``. Also catches the breakdown's
    ``tf.where(bad, old, new)`` -> ``new`` (the NaN residual of the refused step is kept).
    """
    b = np.abs(B)  # same signs, so pᵀAp = +inf rather than inf − inf = NaN (which ``pz > 0`` alone refuses)
    x, info = ops.conjugate_gradient(lambda v: tf.fill(tf.shape(v), tf.constant(np.inf, v.dtype)), tf.constant(b), 3)
    np.testing.assert_array_equal(x.numpy(), np.zeros_like(b))
    assert bool(info["breakdown"]) and int(info["iterations"]) == 1
    assert float(info["residual"]) == np.sqrt(np.sum(b * b))


def test_conjugate_gradient_stops_when_the_residual_equals_the_tolerance():
    """Catches: ops.conjugate_gradient's stop test ``rᵀr <= residual_tol`` -> ``rᵀr < residual_tol``.

    With A = 2·I every product is exact, so one step leaves ``rᵀr = 0``; with ``residual_tol=0``
    that is done (the docstring's "≤"). Under the mutation CG takes a second step along ``p = 0``,
    sees ``pᵀAp = 0`` and reports a breakdown after 2 iterations.
    """
    x, info = ops.conjugate_gradient(lambda v: 2.0 * v, tf.constant(B), 5, residual_tol=0.0)
    np.testing.assert_array_equal(x.numpy(), B / 2)
    assert int(info["iterations"]) == 1 and not bool(info["breakdown"])
    assert float(info["residual"]) == 0.0


def test_stateless_bernoulli_samples_are_one_with_the_probability_of_the_logit():
    """Catches: BernoulliHead.stateless_sample's ``uniform < sigmoid(logits)`` -> ``uniform > sigmoid(logits)``.

    The exported ``sample`` signature draws MultiBinary actions with it. Over n rows the frequency of
    ones is within 6 binomial standard deviations of sigmoid(logit); the flipped comparison gives
    1 − sigmoid(logit), 0.76 away for logits ±2.
    """
    head = BernoulliHead(gymnasium.spaces.MultiBinary(2))
    n = 4000
    logits = np.tile(np.array([[2.0, -2.0]], np.float32), (n, 1))
    samples = head.stateless_sample(head.params(tf.constant(logits)), tf.constant([1, 2])).numpy()
    p = 1 / (1 + np.exp(-logits[0]))
    assert set(np.unique(samples)) <= {0, 1}
    assert np.all(np.abs(samples.mean(axis=0) - p) <= 6 * np.sqrt(p * (1 - p) / n))


def test_numpy_acting_snapshot_of_a_box_model_with_custom_networks_equals_the_model():
    """Catches: acting.PolicySnapshot dropping ``or any(model.custom_networks)``.

    A custom network on a flat Box observation must act through the model's TensorFlow function:
    the numpy copy knows only the default MLP (under the mutation the snapshot raises AttributeError).
    """
    networks = {name: keras.Sequential([keras.layers.Dense(8, activation="relu")]) for name in ("policy", "value")}
    model = keras_trpo.TRPO(gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32), gymnasium.spaces.Discrete(3),
                            policy_network=networks["policy"], value_network=networks["value"], seed=0)
    obs = np.random.default_rng(0).uniform(-1, 1, size=(16, 4)).astype(np.float32)
    snapshot = PolicySnapshot(model)
    x = np.abs(obs.astype(np.float64))
    # Derived: two float32 evaluations of Dense(relu) then the output Dense (tests/numerics.py).
    gap = {name: 2 * dense_stack_error([networks[name].layers[0], output], "relu", x, np.zeros_like(x))
           for name, output in (("policy", model.policy_output), ("value", model.value_output))}
    logits = model.distribution_params(obs)["logits"].numpy()
    assert np.all(np.abs(snapshot.distribution_params(obs)["logits"] - logits) <= gap["policy"])
    assert np.all(np.abs(snapshot.values(obs) - model.value(obs).numpy()) <= gap["value"][:, 0])


class DropsARow(gymnasium.vector.VectorWrapper):
    """A faulty vector env: its step returns one observation row fewer than it has sub-environments."""

    def step(self, actions):
        observations, *rest = self.env.step(actions)
        return (observations[:-1], *rest)


def test_a_step_with_too_few_observation_rows_is_a_rollout_error_naming_num_envs():
    """Catches: envs.call_env dropping its rows check (``if rows != {env.num_envs}`` -> ``if False``).

    Every row is a valid observation, so only the row count shows the fault.
    """
    env = DropsARow(gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync"))
    model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(8,), value_hidden_units=(8,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=4, seed=0)
    with pytest.raises(keras_trpo.RolloutError, match=r"observations have \[1\] rows; expected num_envs = 2 rows"):
        rollouts.collect()


def test_hidden_directories_in_a_model_base_directory_are_not_versions(tmp_path):
    """Catches: export.resolve_version_dir dropping ``or entry.startswith(".")``.

    A ``.tmp-export-*`` directory left by an interrupted export (or any hidden directory) is skipped:
    the next version is written beside it instead of the export being refused.
    """
    (tmp_path / "1").mkdir()
    (tmp_path / ".tmp-export-2-0123abcd").mkdir()
    assert resolve_version_dir(tmp_path) == str(tmp_path / "2")


def _small_model(env):
    model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(8,), value_hidden_units=(8,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def test_export_refuses_an_object_with_only_some_trpo_attributes():
    """Catches: export.check_model's ``all(hasattr(...))`` -> ``any(...)``.

    A gymnasium env has ``action_space`` (one of the attributes the check lists), and must still get
    the one-line TypeError instead of an AttributeError from inside the export.
    """
    env = gymnasium.make("CartPole-v1")
    with pytest.raises(TypeError, match=r"^model must be a keras_trpo.TRPO; got "):
        export_saved_model(env, "unused")


class RewardIsTheAction(gymnasium.Env):
    """One-step episodes whose reward is the action taken, in a Box(-1, 1) action space."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), float(np.asarray(action).reshape(-1)[0]), True, False, {}


def test_evaluate_clips_box_actions_to_the_action_space():
    """Catches: evaluation._run_episodes dropping its clip (``if low is not None`` -> ``if False``).

    A plain function's actions are not clipped by anything else; outside the space they must be
    clipped to it before env.step (here the reward is the action: 1.0, not 5.0).
    """
    def policy(observations):
        return np.full((len(observations), 1), 5.0, np.float32)

    assert evaluate(policy, RewardIsTheAction(), episodes=2, seed=0) == [1.0, 1.0]


def test_export_best_in_min_mode_exports_on_decrease_only(tmp_path):
    """Catches: ExportBest._improved's min branch ``value < best - min_delta`` -> ``value > best - min_delta``."""
    model = _small_model(gymnasium.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync"))
    export_best = ExportBest(str(tmp_path / "served"), monitor="value_loss", mode="min")
    export_best.set_model(model)
    export_best.on_train_begin()
    for epoch, value in enumerate([3.0, 5.0, 1.0]):
        export_best.on_epoch_end(epoch, {"value_loss": value})
    assert [(epoch, value) for epoch, value, _ in export_best.exported] == [(0, 3.0), (2, 1.0)]
    assert sorted(os.listdir(tmp_path / "served")) == ["1", "2"]


def test_steps_per_second_counts_only_this_fits_steps_in_its_first_iteration():
    """Catches: StepsPerSecond's first-iteration count ``steps - previous_steps`` -> ``steps``.

    A second fit continues the env-step counter (3000 after the first fit, 4000 after its first
    iteration): the rate is over its own 1000 steps. The 0.2 s sleep bounds the rate by 1000 / 0.2;
    counting all 4000 steps exceeds that bound unless the process stalls for 0.6 s more.
    """
    rate = StepsPerSecond()
    rate.on_train_begin()
    rate.on_epoch_end(0, {"env_steps": 3000.0})
    rate.on_train_begin()
    time.sleep(0.2)
    logs = {"env_steps": 4000.0}
    rate.on_epoch_end(0, logs)
    assert 0 < logs["steps_per_second"] <= 1000.0 / 0.2


@pytest.mark.parametrize("key", ["gamma", "gae_lambda"])
@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.9"])
def test_preset_discount_and_lambda_must_be_numbers_in_the_unit_interval(key, bad):
    """Catches: Preset.validate's ``not 0 <= value <= 1`` -> ``not 0 <= value`` (a gamma of 1.5 accepted)."""
    preset = presets.load_preset("CartPole-v1")
    with pytest.raises(presets.PresetError, match=rf"rollouts\.{key} must be (a number )?in \[0, 1\]; got {bad!r}"):
        preset.override({f"rollouts.{key}": bad})


def test_a_preset_override_of_a_network_and_its_hidden_units_keeps_both():
    """Catches: Preset.override dropping ``and f"model.{other}" not in values``.

    Setting ``model.policy_network`` alone clears ``model.hidden_units`` (one replaces the other);
    setting both keeps both. Under the mutation each clears the other and both end up None.
    """
    preset = presets.load_preset("CartPole-v1").override(
        {"model.policy_network": "mlp", "model.hidden_units": [32, 32]}
    )
    assert (preset.model["policy_network"], preset.model["hidden_units"]) == ("mlp", [32, 32])
    alone = presets.load_preset("CartPole-v1").override({"model.policy_network": "mlp"})
    assert (alone.model["policy_network"], alone.model["hidden_units"]) == ("mlp", None)


def test_numpy_normalization_of_a_constant_feature_is_zero_like_the_layers():
    """Catches: RunningNormalization.numpy_transform dropping ``+ epsilon`` under the square root.

    A feature that never varied has variance 0: the layer maps its value to 0, and the numpy copy
    the acting path uses must too (without epsilon it computes 0 / 0 = NaN).
    """
    norm = RunningNormalization(2)
    norm.build((None, 2))
    norm.update(tf.constant([[1.0, 0.0], [1.0, 2.0]]))
    x = np.array([[1.0, 1.0]], np.float32)
    with np.errstate(all="raise"):
        numpy_out = norm.numpy_transform()(x)
    assert numpy_out[0, 0] == 0.0 == float(norm(tf.constant(x))[0, 0])


def test_the_mode_of_a_bernoulli_action_at_logit_zero_is_zero():
    """Catches: BernoulliHead.mode's ``logits > 0`` -> ``logits >= 0``.

    At p = 0.5 both values are modes; the tie goes to 0, as Categorical's argmax gives the first of
    equal logits, so deterministic MultiBinary actions (and their exports) stay what they were.
    """
    head = BernoulliHead(gymnasium.spaces.MultiBinary(3))
    mode = head.mode(head.params(tf.constant([[0.0, 1e-30, -1e-30]]))).numpy()
    assert mode.tolist() == [[0, 1, 0]]


def test_model_checkpoint_saving_every_iteration_saves_iterations_without_the_monitored_value(tmp_path):
    """Catches: SkipsIterationsWithoutMonitor skipping iterations even when the callback does not monitor.

    (``if self.monitors_this_fit() and not finite(...)`` -> ``if not finite(...)``.) With
    ``save_best_only=False`` the monitored value plays no part, so an iteration whose ``eval_return``
    is missing is saved like any other.
    """
    model = _small_model(gymnasium.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync"))
    checkpoint = ModelCheckpoint(str(tmp_path / "iteration-{epoch}.keras"), save_best_only=False)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    checkpoint.on_epoch_end(0, {"episode_return": 1.0})
    assert os.listdir(tmp_path) == ["iteration-1.keras"]


@pytest.mark.parametrize(
    "override, message",
    [
        ({"eval_episodes": 0}, r"eval_episodes must be an integer >= 1; got 0"),
        ({"total_steps": 0}, r"total_steps must be an integer >= 1; got 0"),
        ({"vectorization_mode": "threads"}, r"vectorization_mode must be 'sync' or 'async'; got 'threads'"),
    ],
)
def test_preset_counts_and_vectorization_mode_are_checked(override, message):
    """Catches: presets._as_int's ``value < 1`` -> ``value < 0`` (0 accepted), and Preset.validate
    dropping its vectorization_mode check."""
    with pytest.raises(presets.PresetError, match=message):
        presets.load_preset("CartPole-v1").override(override)
