"""Vector envs whose reset ignores ``reset_mask`` (issue 24, item 3): gymnasium's ``CartPoleVectorEnv``.

Under ``NEXT_STEP`` autoreset such an env resets a finished sub-env on its next ``step`` (action
ignored, reward 0, no done). ``Rollouts`` leaves those reset steps out: every batch row is a real
transition, each sub-env's rows are consecutive transitions of that sub-env, and truncated rows and
each sub-env's last row bootstrap from the observation that followed them.
"""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import keras_trpo
from helpers import tiny_trpo
from numerics import gae_and_bound


class CounterVectorEnv(gymnasium.vector.VectorEnv):
    """A deterministic NEXT_STEP vector env that, like CartPoleVectorEnv, resets every sub-env on ``reset``.

    Sub-env ``i`` observes ``[t, episode, i]`` (steps into the episode, episodes started so far); a real
    step moves ``t`` to ``t + 1`` with reward ``t + 1 + action / 2``; the episode terminates at ``t ==
    terminate_at[i]`` or is truncated at ``t == limits[i]``. Every real transition is recorded per sub-env
    as ``(observation, action, reward, terminated, truncated, next observation)``; reset steps are counted.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, limits, terminate_at=None):
        self.num_envs = len(limits)
        self.limits = np.array(limits)
        self.terminate_at = np.array(terminate_at if terminate_at is not None else [10**9] * self.num_envs)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.t = np.zeros(self.num_envs, np.int64)
        self.episode = np.full(self.num_envs, -1)
        self.prev_done = np.zeros(self.num_envs, bool)
        self.records = [[] for _ in range(self.num_envs)]
        self.reset_steps = 0

    def _obs(self):
        return np.stack([self.t, self.episode, np.arange(self.num_envs)], axis=1).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        self.t[:] = 0
        self.episode += 1
        self.prev_done[:] = False
        return self._obs(), {}

    def step(self, actions):
        before = self._obs()
        resetting = self.prev_done.copy()
        self.t = np.where(resetting, 0, self.t + 1)
        self.episode = self.episode + resetting
        rewards = np.where(resetting, 0.0, self.t + np.asarray(actions) / 2)
        terminated = ~resetting & (self.t == self.terminate_at)
        truncated = ~resetting & (self.t == self.limits) & ~terminated
        after = self._obs()
        for i in np.flatnonzero(~resetting):
            self.records[i].append((before[i], int(actions[i]), rewards[i], terminated[i], truncated[i], after[i]))
        self.reset_steps += int(resetting.sum())
        self.prev_done = terminated | truncated
        return after, rewards, terminated, truncated, {}


class StepBudget(gymnasium.vector.VectorWrapper):
    """Raises after ``steps`` vector steps, so a loop that never ends fails instead of hanging."""

    def __init__(self, env, steps):
        super().__init__(env)
        self.left = steps

    def step(self, actions):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("step budget exhausted: the episodes never finished")
        return self.env.step(actions)


def test_batch_rows_are_each_sub_envs_consecutive_real_transitions_with_exact_gae():
    """Catches: reset steps stored as rows (``stepped = np.ones(...)``); a truncated row or a sub-env's last row
    bootstrapped from another observation than the one that followed it; episode lengths counting reset steps;
    ``env_steps`` counting reset steps."""
    gamma, lam, horizon = 0.9, 0.8, 7
    # Truncations at 3 and 5 steps, a termination at 2; sub-envs fill their columns at different env steps.
    env = CounterVectorEnv(limits=[3, 5, 50], terminate_at=[10**9, 10**9, 2])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=3 * horizon, gamma=gamma, gae_lambda=lam, seed=0)
    assert rollouts.skips_reset_steps
    for _ in range(2):  # the second batch goes on from where the env is after the first
        start = [len(r) for r in env.records]
        batch = rollouts.collect()
        assert batch["observations"].shape == (3 * horizon, 3)
        obs = batch["observations"].reshape(horizon, 3, 3)
        actions = batch["actions"].reshape(horizon, 3)
        advantages = batch["advantages"].reshape(horizon, 3)
        for i in range(3):
            # Column i = sub-env i's next `horizon` real transitions, in order: no reset step, no gap.
            record = env.records[i][start[i] : start[i] + horizon]
            np.testing.assert_array_equal(obs[:, i], [r[0] for r in record], err_msg=f"sub-env {i}")
            np.testing.assert_array_equal(actions[:, i], [r[1] for r in record], err_msg=f"sub-env {i}")
            # GAE computed independently, with its derived bound (tests/numerics.py).
            expected, bound, terminated, truncated = gae_and_bound(model, record, gamma, lam)
            assert np.all(np.abs(advantages[:, i] - expected) <= bound), f"sub-env {i}"
            assert truncated.any() or terminated.any()
    # Episodes: lengths of real transitions only; every real transition made counts in env_steps.
    assert set(rollouts.episode_lengths) == {3, 5, 2}
    assert rollouts.env_steps == sum(len(r) for r in env.records) > 2 * 3 * horizon
    assert env.reset_steps > 0


def test_the_next_batch_continues_after_a_reset_step_left_pending_at_the_batch_end():
    """Every sub-env ends an episode on the batch's last step, so the next step only resets them all.

    Catches: the pending reset steps not carried into the next batch or not saved by ``get_state``
    (a restored run then stores the reset step as a transition).
    """
    env = CounterVectorEnv(limits=[4, 4])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=8, seed=0)
    rollouts.collect()
    state = rollouts.get_state()
    expected = rollouts.collect()
    first_rows = expected["observations"][:2]
    np.testing.assert_array_equal(first_rows, [[0, 1, 0], [0, 1, 1]])  # the next episodes' first observations
    restored = keras_trpo.Rollouts(CounterVectorEnv(limits=[4, 4]), model, steps=8, seed=0)
    restored.set_state(state)
    again = restored.collect()
    for key in ("observations", "actions", "advantages", "returns", "env_steps"):
        np.testing.assert_array_equal(again[key], expected[key], err_msg=key)


def test_reward_scaling_sees_real_transitions_only():
    """Catches: the reward scaler fed the reset steps (their reward 0 would enter its statistics)."""
    env = CounterVectorEnv(limits=[2, 3])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=20, seed=0, normalize_rewards=True)
    rollouts.collect()
    assert env.reset_steps > 0
    assert rollouts.reward_scaler.count == pytest.approx(rollouts.env_steps + 1e-4)  # the scaler's prior: 1e-4


def test_cartpole_vector_env_trains_and_its_episodes_are_whole():
    """make_vec's default CartPole env: refused on ce456b1. CartPole pays 1 per real step, so an episode's
    return equals its length unless a reset step (reward 0) was counted; no episode exceeds 500 steps."""
    env = gymnasium.make_vec("CartPole-v1", num_envs=4)
    assert type(env.unwrapped).__name__ == "CartPoleVectorEnv"
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=256, seed=0)
    history = model.fit(rollouts, epochs=3, verbose=0)
    assert history.history["step_accepted"] == [1.0] * 3
    assert len(rollouts.episode_lengths) > 10
    assert rollouts.episode_returns == [float(n) for n in rollouts.episode_lengths]
    assert max(rollouts.episode_lengths) <= 500
    assert history.history["env_steps"][-1] == rollouts.env_steps >= 3 * 256
    env.close()


def test_a_disabled_autoreset_env_that_ignores_reset_mask_is_refused_at_construction():
    env = CounterVectorEnv(limits=[3, 3])
    env.metadata = {"autoreset_mode": AutoresetMode.DISABLED}
    model = tiny_trpo(CounterVectorEnv(limits=[3, 3]))
    with pytest.raises(ValueError, match=r"^CounterVectorEnv with autoreset_mode DISABLED cannot reset only .* "
                       r"use its NEXT_STEP autoreset mode .* or gymnasium\.make_vec\(.*vectorization_mode='sync'\)\.$"):
        keras_trpo.Rollouts(env, model, steps=6)


def test_the_cartpole_preset_learns_on_cartpole_vector_env():
    """The CartPole-v1 preset's settings on make_vec's default env, 30 of its 97 iterations (~5 s here).

    Measured here with seeds 0-4 after 30 iterations: deterministic evaluation means 500, 500, 500, 453.8
    and 500 (the full 97 iterations: 500 for seeds 0-2); an untrained policy scores ~10-30, and one whose
    batch rows pair sub-env i's observations with another sub-env's actions stays at 12.
    """
    from keras_trpo.presets import load_preset

    preset = load_preset("CartPole-v1")
    env = gymnasium.make_vec("CartPole-v1", num_envs=preset.num_envs)
    model = preset.build_model(env, seed=0)
    model.fit(preset.build_rollouts(env, model, seed=0), epochs=30, verbose=0)
    env.close()
    assert np.mean(keras_trpo.evaluate(model, "CartPole-v1", episodes=10, seed=123)) >= 400


def test_evaluate_steps_through_reset_steps_and_returns_each_episodes_own_rewards():
    """Catches: evaluate resetting finished sub-envs with reset(reset_mask) on such an env, which restarts
    the running ones too: sub-env 1 (limit 5) is then cut every 3 steps and never finishes (the step
    budget turns that endless loop into an error)."""
    env = CounterVectorEnv(limits=[3, 5])
    model = tiny_trpo(env)
    returns = keras_trpo.evaluate(model, StepBudget(env, steps=100), episodes=6, seed=0)
    episodes = {}  # the env's own record: (sub-env, episode) -> rewards of its real transitions
    for i, records in enumerate(env.records):
        for observation, _, reward, terminated, truncated, _ in records:
            episodes.setdefault((i, int(observation[1])), []).append((reward, terminated or truncated))
    finished = {key: sum(r for r, _ in steps) for key, steps in episodes.items() if steps[-1][1]}
    assert sorted(returns) == sorted(finished[(i, k)] for i, k in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
    assert env.reset_steps > 0
