"""Rollouts: on-policy batches through model.fit, env handling, the numpy acting path."""


import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

import keras_trpo
from keras_trpo.acting import PolicySnapshot
from helpers import tiny_trpo, calls_while_collecting
from numerics import U32, mlp_gap


class CountingEnv(gymnasium.Wrapper):
    """Counts real env.step calls (reset-only steps are not transitions)."""

    steps = 0

    def step(self, action):
        CountingEnv.steps += 1
        return super().step(action)


class ChainEnv(gymnasium.Env):
    """Deterministic tiny env: observation is the step count; ends by termination or time limit.

    reward = 1 every step; terminates when the action is 0 at step >= `terminate_after`,
    truncates at `limit` steps.
    """

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, limit=5, terminate_after=1000):
        self.limit, self.terminate_after, self.t = limit, terminate_after, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = bool(action == 0 and self.t >= self.terminate_after)
        truncated = self.t >= self.limit and not terminated
        return np.array([float(self.t)], np.float32), 1.0, terminated, truncated, {}


def cartpole_model(env, **kwargs):
    return tiny_trpo(env, 16, **kwargs)


class RecordingRollouts(keras_trpo.Rollouts):
    """Keeps a copy of the policy weights used for each collected batch."""

    def collect(self):
        self.collected_with = getattr(self, "collected_with", [])
        self.collected_with.append([v.numpy().copy() for v in self.model.policy_variables])
        return super().collect()


class WeightsAtUpdate(keras.callbacks.Callback):
    """Policy weights after each update (= the weights the next train_step starts from)."""

    def on_train_begin(self, logs=None):
        self.weights = [[v.numpy().copy() for v in self.model.policy_variables]]

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.policy_variables])


# --------------------------------------------------------------------------
# On-policy guarantee
# --------------------------------------------------------------------------
def test_every_batch_is_collected_by_the_weights_train_step_starts_from():
    env = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    model = cartpole_model(env)
    rollouts = RecordingRollouts(env, model, steps=256, seed=0)
    recorder = WeightsAtUpdate()
    history = model.fit(rollouts, epochs=5, verbose=0, callbacks=[recorder])
    assert history.history["step_accepted"] == [1.0] * 5  # the weights really move every update
    # One collection per update: the batch Keras reads to infer specs is reused, not wasted.
    assert len(rollouts.collected_with) == 5
    for k, collected in enumerate(rollouts.collected_with):
        # Batch k was collected by the weights after update k-1, which train_step k starts from.
        for a, b in zip(collected, recorder.weights[k]):
            np.testing.assert_array_equal(a, b)
        if k:
            assert any(not np.array_equal(a, b) for a, b in zip(collected, rollouts.collected_with[k - 1]))
    assert model.policy_version == 5


def test_a_stale_batch_is_refused():
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    model = cartpole_model(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=64, seed=0)
    batch = rollouts[0]
    model.train_step(batch)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(keras_trpo.StaleBatchError, match="Stale batch: it was collected by policy_version 0 but the model is at 1"):
        model.train_step(batch)  # collected by version 0, model now at version 1
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_fit_consumes_exactly_epochs_times_steps_transitions():
    CountingEnv.steps = 0
    env = gymnasium.vector.SyncVectorEnv(
        [lambda: CountingEnv(gymnasium.make("CartPole-v1")) for _ in range(4)]
    )
    model = cartpole_model(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=128, seed=0)
    history = model.fit(rollouts, epochs=3, verbose=0)
    assert CountingEnv.steps == 3 * 128
    assert rollouts.env_steps == 3 * 128
    assert history.history["env_steps"] == [128.0, 256.0, 384.0]


@pytest.mark.parametrize(
    "make_env",
    [
        lambda: gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync"),
        lambda: gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async"),
        lambda: gymnasium.make("CartPole-v1"),
        lambda: gymnasium.make_vec(
            "CartPole-v1", num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}
        ),
        lambda: gymnasium.make_vec(
            "CartPole-v1", num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
        ),
    ],
    ids=["sync4", "async2", "plain-env", "same-step", "autoreset-disabled"],
)
def test_fit_runs_on_every_kind_of_env(make_env):
    env = make_env()
    model = cartpole_model(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=256, seed=0)
    history = model.fit(rollouts, epochs=3, verbose=0)
    assert history.history["episodes"][0] > 0  # CartPole episodes finish in a 256-step batch
    assert all(np.isfinite(history.history["episode_return"]))
    assert history.history["step_accepted"] == [1.0] * 3
    rollouts.close()


# --------------------------------------------------------------------------
# Episode boundaries: truncation bootstraps from the true last observation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_truncated_episodes_bootstrap_from_their_last_observation(mode):
    gamma = 0.9
    env = gymnasium.vector.SyncVectorEnv([lambda: ChainEnv(limit=3)] * 2, autoreset_mode=mode)
    model = tiny_trpo(env, 4)
    rollouts = keras_trpo.Rollouts(env, model, steps=2 * 7, gamma=gamma, gae_lambda=0.0, seed=0)
    batch = rollouts.collect()
    obs = batch["observations"].reshape(7, 2)
    # Every row is a real transition: observations cycle 0, 1, 2, 0, 1, 2, 0 (no reset-only rows).
    np.testing.assert_array_equal(obs[:, 0], [0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(obs[:, 1], obs[:, 0])
    value = lambda s: model.value(np.array([[s]], np.float32)).numpy()[0]  # noqa: E731
    advantages = batch["advantages"].reshape(7, 2)
    # lambda = 0: A_t = r + gamma * V(next) - V(s); the truncated step (s=2) uses V(3), the true
    # last observation, not V(0) of the reset observation. The last row bootstraps from V(1).
    expected = [1 + gamma * value(s + 1) - value(s) for s in (0, 1, 2, 0, 1, 2)] + [1 + gamma * value(1) - value(0)]
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert batch["episodes"][0] == 4 and batch["episode_return"][0] == 3.0 and batch["episode_length"][0] == 3


def test_episode_statistics_say_when_no_episode_finished():
    env = gymnasium.vector.SyncVectorEnv([lambda: ChainEnv(limit=100)])
    model = tiny_trpo(env, 4)
    history = model.fit(keras_trpo.Rollouts(env, model, steps=30, seed=0), epochs=4, verbose=0)
    # 120 steps of a 100-step episode: one finishes in the 4th batch, none before.
    assert np.isnan(history.history["episode_return"][:3]).all()
    assert history.history["episodes"] == [0.0, 0.0, 0.0, 1.0]
    assert history.history["episode_return"][3] == 100.0


# --------------------------------------------------------------------------
# The numpy acting path equals the TensorFlow model
# --------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "gelu"])
@pytest.mark.parametrize(
    "action_space",
    [spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.MultiDiscrete([2, 3]), spaces.MultiBinary(2)],
    ids=["discrete", "box", "multidiscrete", "multibinary"],
)
def test_numpy_snapshot_matches_the_model(activation, action_space):
    obs_space = spaces.Box(-5.0, 5.0, (4,), np.float32)
    model = keras_trpo.TRPO(obs_space, action_space, activation=activation, normalize_observations=True, seed=3)
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32) * 3
    model.normalizer.update(tf.constant(obs * 2 + 1))  # non-trivial statistics
    snapshot = PolicySnapshot(model)
    expected = {k: v.numpy() for k, v in model.distribution_params(obs).items()}
    gap = mlp_gap(model, obs)  # derived: two float32 evaluations of the same network (tests/numerics.py)
    for key, value in snapshot.distribution_params(obs).items():
        assert np.all(np.abs(value - expected[key]) <= (0.0 if key == "log_std" else gap["policy"])), key
    assert np.all(np.abs(snapshot.values(obs) - model.value(obs).numpy()) <= gap["value"])
    actions, values = snapshot.act(obs, np.random.default_rng(0))
    assert actions.shape == (32, *action_space.shape)
    assert np.isfinite(model.distribution(obs).log_prob(model.head.cast_actions(actions)).numpy()).all()


# --------------------------------------------------------------------------
# Observation normalization
# --------------------------------------------------------------------------
def test_normalization_statistics_follow_the_data_but_never_change_the_old_policy():
    env = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    model = cartpole_model(env, normalize_observations=True)
    collected = []  # (normalizer mean when collecting, batch observations)

    class StatsRollouts(keras_trpo.Rollouts):
        def collect(self):
            mean = model.normalizer.mean.numpy().copy()
            batch = super().collect()
            collected.append((mean, batch["observations"]))
            return batch

    after_update = [model.normalizer.mean.numpy().copy()]

    class Stats(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            after_update.append(model.normalizer.mean.numpy().copy())

    model.fit(StatsRollouts(env, model, steps=256, seed=0), epochs=3, verbose=0, callbacks=[Stats()])
    assert len(collected) == 3
    for k, (mean_at_collection, _) in enumerate(collected):
        # The statistics that acted are the ones train_step k starts from (they move only after it).
        np.testing.assert_array_equal(mean_at_collection, after_update[k])
    all_observations = np.concatenate([obs for _, obs in collected])
    assert float(model.normalizer.count.numpy()) == len(all_observations) == 3 * 256
    np.testing.assert_allclose(model.normalizer.mean.numpy(), all_observations.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.normalizer.variance.numpy(), all_observations.var(0), rtol=1e-3)


def test_normalizer_running_moments_match_numpy():
    data = np.random.default_rng(0).normal(loc=3.0, scale=2.0, size=(1000, 3)).astype(np.float32)
    norm = keras_trpo.RunningNormalization(3)
    norm.build((None, 3))
    for chunk in np.array_split(data, 7):
        norm.update(tf.constant(chunk))
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.variance.numpy(), data.var(0), rtol=1e-4)
    out = norm(tf.constant(data)).numpy()
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-3)


# --------------------------------------------------------------------------
# Reproducibility and validation
# --------------------------------------------------------------------------
def _train(seed):
    keras.utils.set_random_seed(seed)
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    model = cartpole_model(env)
    history = model.fit(keras_trpo.Rollouts(env, model, steps=128, seed=seed), epochs=4, verbose=0)
    return history.history, [v.numpy() for v in model.weights]


def test_same_seed_same_returns_and_weights():
    first, weights_a = _train(7)
    second, weights_b = _train(7)
    assert first["episode_return"] == second["episode_return"]
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    third, _ = _train(8)
    assert third["episode_return"] != first["episode_return"]


def direct_reward_scaling(rewards, done, gamma, clip=10.0):
    """``(scaled [T, num_envs], last scale)``: each step's rewards over the std of every discounted return so far.

    The reference keeps all returns (each restarting at 0 after ``done``) and computes their variance
    directly, pooled with RewardScaler's prior (one pseudo-sample of weight 1e-4 at mean 0, variance 1).
    """
    seen, running, scaled = [], np.zeros(rewards.shape[1]), np.empty(rewards.shape)
    for t in range(len(rewards)):
        running = gamma * running + rewards[t]
        seen.extend(running.tolist())
        values = np.array(seen)
        prior = 1e-4
        mean = values.sum() / (len(values) + prior)
        variance = (prior * (1.0 + mean**2) + np.sum((values - mean) ** 2)) / (len(values) + prior)
        scale = np.sqrt(variance + 1e-8)
        scaled[t] = np.clip(rewards[t] / scale, -clip, clip)
        running = np.where(done[t], 0.0, running)
    return scaled, scale


def test_reward_scaler_matches_a_direct_computation():
    """RewardScaler against the pooled variance of every discounted return seen so far (direct_reward_scaling)."""
    from keras_trpo.normalization import RewardScaler

    rng = np.random.default_rng(0)
    num_envs, steps, gamma = 3, 60, 0.9
    rewards = rng.normal(2.0, 5.0, size=(steps, num_envs))
    done = rng.random((steps, num_envs)) < 0.1
    expected, scale = direct_reward_scaling(rewards, done, gamma, clip=3.0)
    scaler = RewardScaler(num_envs, gamma, clip=3.0)
    for t in range(steps):
        np.testing.assert_allclose(scaler(rewards[t], done[t]), expected[t], rtol=1e-9)
    assert scaler.scale == pytest.approx(scale, rel=1e-9)


def test_reward_normalization_scales_the_batch_but_not_the_reported_returns():
    def run(normalize_rewards):
        env = gymnasium.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
        model = keras_trpo.TRPO.for_env(env, hidden_units=(8,), value_hidden_units=(8,), seed=0)
        rollouts = keras_trpo.Rollouts(env, model, steps=800, seed=0, normalize_rewards=normalize_rewards)
        return rollouts, rollouts.collect()

    raw_rollouts, raw = run(False)
    scaled_rollouts, scaled = run(True)
    np.testing.assert_array_equal(raw["observations"], scaled["observations"])
    assert raw_rollouts.episode_returns == scaled_rollouts.episode_returns  # raw units in both
    assert scaled_rollouts.reward_scaler.scale > 10  # Pendulum returns have a std far above 1
    assert np.abs(scaled["returns"]).max() < np.abs(raw["returns"]).max() / 5
    assert scaled_rollouts.reward_scaler.count == pytest.approx(800 + 1e-4)  # every step, every sub-env


class NarrowBoxEnv(gymnasium.Env):
    """Actions in Box(-0.1, 0.1, (2,)); records every action ``step`` receives. Truncates every 7 steps."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = spaces.Box(-0.1, 0.1, (2,), np.float32)

    def __init__(self):
        self.received, self.t = [], 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.received.append(np.array(action, copy=True))
        self.t += 1
        return np.full(3, 0.1 * self.t, np.float32), 0.0, False, self.t >= 7, {}


def test_box_batches_store_the_unclipped_sample_and_the_env_gets_it_clipped():
    """Catches: Rollouts storing the clipped action (``act_buf[t] = env_actions``) instead of the sample.

    The update uses the stored action's log-prob, which must be that of the sample.

    σ = e ≈ 2.7 against bounds ±0.1: most samples are out of bounds. Each batch row
    t·num_envs + e must be the raw sample, and sub-env e must have received exactly
    that sample clipped to the bounds at its step t.
    """
    envs = [NarrowBoxEnv() for _ in range(3)]
    vector_env = gymnasium.vector.SyncVectorEnv([lambda env=env: env for env in envs])
    model = keras_trpo.TRPO.for_env(
        vector_env, hidden_units=(8,), value_hidden_units=(8,), log_std_init=1.0, seed=0
    )
    horizon = 10
    rollouts = keras_trpo.Rollouts(vector_env, model, steps=3 * horizon, seed=0)
    low, high = NarrowBoxEnv.action_space.low, NarrowBoxEnv.action_space.high
    for _ in range(2):  # a second batch too: rows restart at 0, the env records go on
        already = [len(env.received) for env in envs]
        actions = rollouts.collect()["actions"]
        assert actions.shape == (3 * horizon, 2)
        assert np.any((actions < low) | (actions > high)), (
            "no stored action is out of bounds (σ ≈ 2.7, bounds ±0.1): the batch holds clipped actions"
        )
        for e, env in enumerate(envs):
            received = np.array(env.received[already[e] :], np.float32)
            assert received.shape == (horizon, 2)
            np.testing.assert_array_equal(received, np.clip(actions[e::3], low, high), err_msg=f"sub-env {e}")


# --------------------------------------------------------------------------
# Surviving mutations of rollouts (issue 25, item 9)
# --------------------------------------------------------------------------
def chain_values(model):
    """``(V(s), derived gap)`` for the ChainEnv states s = 0..5, by the Keras model (acting uses numpy)."""
    states = np.arange(6, dtype=np.float32)[:, None]
    return model.value(states).numpy().astype(np.float64), mlp_gap(model, states)["value"]


def one_step_advantage_bound(gamma, gap, states, expected):
    """How far a batch's λ = 0 advantage ``r + γ V(s + 1) − V(s)`` may be from ``expected`` (computed in float64
    from the Keras model's values): the values' derived gaps, and the batch's float32 rounding of the result."""
    return gamma * gap[states + 1] + gap[states] + U32 * np.abs(expected)


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED])
def test_a_truncation_on_the_last_row_bootstraps_from_the_true_last_observation(mode):
    """Catches: the batch's last row bootstrapped from the current observation unless it terminated
    (``running = ~terminated[-1]``): a truncation on the last row then bootstraps from the reset observation.

    Episodes of 3 steps, 6 rows: the last row is a truncation at s = 2 whose true next observation is 3, while
    the env has already moved on to the reset observation 0. With λ = 0 every row's advantage is
    ``1 + γ V(s + 1) − V(s)``.
    """
    gamma, horizon = 0.9, 6
    env = gymnasium.vector.SyncVectorEnv([lambda: ChainEnv(limit=3)] * 2, autoreset_mode=mode)
    model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(4,), value_hidden_units=(4,))
    batch = keras_trpo.Rollouts(env, model, steps=2 * horizon, gamma=gamma, gae_lambda=0.0, seed=0).collect()
    states = batch["observations"].reshape(horizon, 2).astype(np.int64)
    np.testing.assert_array_equal(states.T, [[0, 1, 2, 0, 1, 2]] * 2)
    values, gap = chain_values(model)
    expected = 1.0 + gamma * values[states + 1] - values[states]
    bound = one_step_advantage_bound(gamma, gap, states, expected)
    assert gamma * abs(values[3] - values[0]) > 100 * bound.max()  # V(0) instead of V(3) would show
    error = np.abs(batch["advantages"].reshape(horizon, 2) - expected)
    assert np.all(error <= bound), (
        f"advantages off by {error.max(axis=1).round(4).tolist()} per row (bound {bound.max():.1e})")


def test_reward_scaling_restarts_the_discounted_return_at_truncations():
    """Catches: the reward scaler told only of terminations (``self.reward_scaler(rewards[t], terminated[t])``):
    its discounted return then runs on across time-limit truncations, and so does its variance.

    Reward 1 each step, episodes truncated every 3 steps. The expected scaled rewards are
    direct_reward_scaling's with the return restarting after each truncation; λ = 0, so each advantage is
    ``r̃ + γ V(s + 1) − V(s)``. The float64 scaler and its direct reference agree to ~1e-13 relative
    (test_reward_scaler_matches_a_direct_computation), far inside one float32 rounding of r̃.
    """
    gamma, horizon = 0.9, 9
    env = gymnasium.vector.SyncVectorEnv([lambda: ChainEnv(limit=3)])
    model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(4,), value_hidden_units=(4,))
    rollouts = keras_trpo.Rollouts(env, model, steps=horizon, gamma=gamma, gae_lambda=0.0, seed=0,
                                   normalize_rewards=True)
    batch = rollouts.collect()
    states = batch["observations"][:, 0].astype(np.int64)
    np.testing.assert_array_equal(states, [0, 1, 2] * 3)
    scaled, scale = direct_reward_scaling(np.ones((horizon, 1)), (states == 2)[:, None], gamma)
    values, gap = chain_values(model)
    expected = scaled[:, 0] + gamma * values[states + 1] - values[states]
    bound = one_step_advantage_bound(gamma, gap, states, expected) + U32 * scaled[:, 0]
    error = np.abs(batch["advantages"] - expected)
    assert np.all(error <= bound), f"advantages off by {error.round(4).tolist()} (bound {bound.max():.1e})"
    assert rollouts.reward_scaler.scale == pytest.approx(scale, rel=1e-9)


def test_observations_that_are_exact_batches_skip_the_full_check_on_every_step():
    """Catches: the per-step fast path never taken (``if spec.is_exact_batch(...)`` → ``if False``): the full
    structural check (``ObservationSpec.check``, with its messages and the row count) then runs on every step.

    Observed with a profile hook, which changes nothing: no call of ``ObservationSpec.check`` while
    collecting float32 ``[2, 1]`` observations; one per step (and per reset) for the same observations
    sent as float64, which the buffer converts, so the count itself is shown to work.
    """
    from keras_trpo.observations import ObservationSpec
    from test_observations import Tampered

    def checks_while_collecting(env):
        return calls_while_collecting(ObservationSpec.check.__code__, env)[0]

    assert checks_while_collecting(gymnasium.vector.SyncVectorEnv([lambda: ChainEnv(limit=5)] * 2)) == []
    float64 = Tampered(gymnasium.vector.SyncVectorEnv([lambda: ChainEnv(limit=5)] * 2), lambda o: o.astype(np.float64))
    assert len(checks_while_collecting(float64)) >= 32  # 32 steps, and the first reset
