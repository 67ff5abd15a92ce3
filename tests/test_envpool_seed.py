"""``Rollouts(envpool_env, model, seed=...)`` seeds only the action sampling, and ``evaluate`` does not pass its
seed on: EnvPool is seeded when it is made.

EnvPool's ``reset(seed=...)`` ignores the seed with a ``UserWarning``; ``Rollouts`` passes none to an EnvPool env,
on the first reset and on a resume without a saved env (``set_state``).
"""

import warnings

import numpy as np
import pytest

import keras_trpo
from helpers import tiny_trpo

envpool = pytest.importorskip("envpool")
pytestmark = pytest.mark.filterwarnings("ignore:.*precision lowered by casting:UserWarning")  # EnvPool's float64 Box


def test_an_envpool_env_is_reset_without_a_seed_on_start_and_on_resume():
    """Bug caught: ``_start`` (or ``set_state``) passing ``self.seed`` to an EnvPool env's reset regardless
    (``seed = None if self._was_reset else self.seed``): EnvPool then warns on every run and every resume."""
    env = envpool.make_gymnasium("CartPole-v1", num_envs=2, seed=3)
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=8, seed=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Ss]eed.*")
        batch = rollouts.collect()
        state = rollouts.get_state()
        assert state["env"] is None  # EnvPool cannot be pickled: set_state resets it
        rollouts.set_state(state)
        rollouts.collect()
    assert np.isfinite(batch["advantages"]).all()


def test_the_seed_still_makes_an_envpool_run_reproducible():
    """Bug caught: the action-sampling RNG left unseeded along with the reset (``default_rng(None)`` for
    EnvPool): two runs with the same seeds would sample different actions."""
    batches = []
    for _ in range(2):
        env = envpool.make_gymnasium("CartPole-v1", num_envs=2, seed=3)
        model = tiny_trpo(env)
        batches.append(keras_trpo.Rollouts(env, model, steps=16, seed=0).collect())
    np.testing.assert_array_equal(batches[0]["actions"], batches[1]["actions"])
    np.testing.assert_array_equal(batches[0]["observations"], batches[1]["observations"])


def test_evaluate_on_an_envpool_env_says_once_that_its_seed_is_not_used():
    """Bug caught: ``evaluate`` passing ``seed`` to an EnvPool env's reset (EnvPool's own warning, with no word of
    evaluate), or dropping it silently (no warning at all). The episodes are those of the unseeded reset."""
    returns = []
    for seed in (5, None):
        env = envpool.make_gymnasium("CartPole-v1", num_envs=2, seed=3)
        model = tiny_trpo(env)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            returns.append(keras_trpo.evaluate(model, env, episodes=2, seed=seed))
        messages = [str(w.message) for w in caught if "precision lowered" not in str(w.message)]
        assert messages == (["keras_trpo.evaluate: an EnvPool env is seeded when it is made (envpool.make_gymnasium"
                             "(..., seed=S)); seed=5 does not seed its resets."] if seed is not None else [])
    assert returns[0] == returns[1]
