"""Environment faults during collection: clear errors, unchanged weights, kept statistics."""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo

from helpers import tiny_trpo


class FaultyEnv(gymnasium.Env):
    """Episodes of 3 steps; raises at `fail_at` (counted over the env's lifetime) if set."""

    observation_space = spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, fail_at=None, bad_obs_at=None):
        self.fail_at, self.bad_obs_at, self.calls, self.t = fail_at, bad_obs_at, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.calls += 1
        self.t += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError("simulator diverged")
        obs = np.full(2, self.t, np.float32)
        if self.bad_obs_at is not None and self.calls >= self.bad_obs_at:
            obs = np.zeros(3, np.float32)  # wrong shape
        return obs, 1.0, False, self.t >= 3, {}


def test_env_error_names_sub_env_and_step_and_keeps_state():
    # Sub-env 2 of 3 fails on its 8th step: the second batch (5 steps per env), its 3rd step.
    env = gymnasium.vector.SyncVectorEnv([lambda: FaultyEnv(), lambda: FaultyEnv(), lambda: FaultyEnv(fail_at=8)])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=15, seed=0)
    model.fit(rollouts, epochs=1, verbose=0)
    weights = [v.numpy().copy() for v in model.weights]
    episodes_before = len(rollouts.episode_returns)
    with pytest.raises(keras_trpo.RolloutError, match=r"sub-environment 2 raised RuntimeError in step at step 2 "
                       r"of this batch \(after 21 env steps in all\): simulator diverged"):
        model.fit(rollouts, epochs=1, verbose=0)
    for before, variable in zip(weights, model.weights):
        np.testing.assert_array_equal(before, variable.numpy())
    # The first batch finished 3 episodes (one per env, at step 3); the second batch finished
    # 3 more at its step 1 (t=6) before failing at step 2: all 6 are kept.
    assert episodes_before == 3
    assert rollouts.episode_returns == [3.0] * 6


def test_async_env_error_names_the_worker():
    env = gymnasium.vector.AsyncVectorEnv([lambda: FaultyEnv(), lambda: FaultyEnv(fail_at=2)])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=8, seed=0)
    with pytest.raises(keras_trpo.RolloutError, match="sub-environment 1 raised RuntimeError in step at step 1"):
        rollouts.collect()
    env.close(terminate=True)


def test_wrong_observation_shape_names_the_space():
    env = gymnasium.vector.SyncVectorEnv([lambda: FaultyEnv(bad_obs_at=2)])
    rollouts = keras_trpo.Rollouts(env, tiny_trpo(env), steps=4, seed=0)
    with pytest.raises(keras_trpo.RolloutError, match=r"observation space Box\(-10.0, 10.0, \(2,\), float32\)"):
        rollouts.collect()


class UncheckedEnv(FaultyEnv):
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(2, 99.0, np.float32), {}  # outside the observation space


def test_check_env_runs_gymnasium_checker():
    keras_trpo.Rollouts(FaultyEnv(), tiny_trpo(FaultyEnv()), steps=4, check_env=True)  # a valid env passes
    with pytest.raises(AssertionError, match="observation"):
        keras_trpo.Rollouts(UncheckedEnv(), tiny_trpo(FaultyEnv()), steps=4, check_env=True)
    vector = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="async")
    keras_trpo.Rollouts(vector, tiny_trpo(vector), steps=4, check_env=True)  # re-made from the spec
    vector.close()
