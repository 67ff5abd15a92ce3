"""keras_trpo.wrappers: the NoVel envs keep exactly the position entries of their base env (issue 29).

Each test names the one-line bug it catches.
"""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from keras_trpo.wrappers import NoVelocity

# (registered id, base id, the entries the issue asks to keep: positions and angles, no velocities)
CASES = [
    ("keras_trpo/CartPoleNoVel-v1", "CartPole-v1", (0, 2)),  # cart position, pole angle
    ("keras_trpo/PendulumNoVel-v1", "Pendulum-v1", (0, 1)),  # cos θ, sin θ
    ("keras_trpo/MountainCarContinuousNoVel-v0", "MountainCarContinuous-v0", (0,)),  # position
]


@pytest.mark.parametrize("env_id, base_id, keep", CASES)
def test_kept_entries_follow_the_base_env_step_by_step(env_id, base_id, keep):
    """Catches: a wrong index in KEPT_ENTRIES (CartPole (0, 2) -> (0, 1) keeps the cart velocity)."""
    wrapped, base = gymnasium.make(env_id), gymnasium.make(base_id)
    actions = base.action_space
    actions.seed(3)
    obs, _ = wrapped.reset(seed=7)
    full, _ = base.reset(seed=7)
    for _ in range(300):
        assert obs.shape == (len(keep),)
        np.testing.assert_array_equal(obs, full[list(keep)])
        action = actions.sample()
        obs, reward, terminated, truncated, _ = wrapped.step(action)
        full, base_reward, base_terminated, base_truncated, _ = base.step(action)
        assert (reward, terminated, truncated) == (base_reward, base_terminated, base_truncated)
        if terminated or truncated:
            obs, _ = wrapped.reset(seed=11)
            full, _ = base.reset(seed=11)


@pytest.mark.parametrize("env_id, base_id, keep", CASES)
def test_observation_space_bounds_are_the_kept_entries_bounds(env_id, base_id, keep):
    """Catches: the new Box built from the base's low for both bounds (``space.low[self.keep]`` as high)."""
    space, base_space = gymnasium.make(env_id).observation_space, gymnasium.make(base_id).observation_space
    np.testing.assert_array_equal(space.low, base_space.low[list(keep)])
    np.testing.assert_array_equal(space.high, base_space.high[list(keep)])
    assert space.dtype == base_space.dtype


@pytest.mark.parametrize("env_id, base_id, keep", CASES)
def test_the_env_checker_passes(env_id, base_id, keep):
    """Catches: observations no longer in the space (``observation`` casting to float64)."""
    env = NoVelocity(gymnasium.make(base_id).unwrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium's "env is wrapped" advice, not a failure
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("env_id, base_id, keep", CASES)
def test_registered_ids_make_the_wrapped_env_with_the_base_time_limit(env_id, base_id, keep):
    """Catches: registering without ``max_episode_steps`` (the NoVel envs would never truncate)."""
    env = gymnasium.make(env_id)
    assert env.spec.max_episode_steps == gymnasium.spec(base_id).max_episode_steps
    wrapper = env
    while not isinstance(wrapper, NoVelocity):
        wrapper = wrapper.env
    assert tuple(wrapper.keep) == keep
    assert env.spec.max_episode_steps is not None


def test_unknown_env_is_refused_in_one_line_and_keep_is_accepted():
    """Catches: an unknown env silently passed through unwrapped (the ValueError removed)."""
    with pytest.raises(ValueError, match=r"'Acrobot-v1' has no known velocity entries .*CartPole-v1.*keep=") as info:
        NoVelocity(gymnasium.make("Acrobot-v1"))
    assert "\n" not in str(info.value)
    env = NoVelocity(gymnasium.make("Acrobot-v1"), keep=(0, 1, 2, 3))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4,) and env.observation_space.contains(obs)
    with pytest.raises(ValueError, match=r"keep must be distinct ints in \[0, 6\), got \(0, 6\)"):
        NoVelocity(gymnasium.make("Acrobot-v1"), keep=(0, 6))


def test_module_doctest():
    """Catches: the module docstring's example going stale (CartPoleNoVel-v1 keeping 3 entries)."""
    import doctest

    import keras_trpo.wrappers

    assert doctest.testmod(keras_trpo.wrappers).failed == 0
