"""Bad arguments fail at the boundary with a message naming the argument and what is allowed.

One table per entry point; each row is (what is wrong, how to build it, error type, message regex).
"""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo

OBS = spaces.Box(-np.inf, np.inf, (3,), np.float32)


def trpo(**kwargs):
    return lambda: keras_trpo.TRPO(OBS, spaces.Discrete(2), **kwargs)


TRPO_CASES = {
    "max_kl = 0": (trpo(max_kl=0.0), ValueError, r"max_kl must be a number > 0; got 0.0"),
    "max_kl < 0": (trpo(max_kl=-0.01), ValueError, r"max_kl must be a number > 0"),
    "max_kl nan": (trpo(max_kl=float("nan")), ValueError, r"max_kl must be a number > 0"),
    "max_kl string": (trpo(max_kl="0.01"), TypeError, r"max_kl must be a number > 0; got '0.01' of type str"),
    "damping < 0": (trpo(damping=-0.1), ValueError, r"damping must be a number >= 0; got -0.1"),
    "cg_iterations = 0": (trpo(cg_iterations=0), ValueError, r"cg_iterations must be an integer >= 1; got 0"),
    "cg_iterations float": (trpo(cg_iterations=2.5), TypeError, r"cg_iterations must be an integer >= 1"),
    "backtrack_coefficient = 1": (trpo(backtrack_coefficient=1.0), ValueError,
                                  r"backtrack_coefficient must be a number in the open interval \(0, 1\)"),
    "backtrack_coefficient = 0": (trpo(backtrack_coefficient=0.0), ValueError, r"backtrack_coefficient .*\(0, 1\)"),
    "backtrack_coefficient > 1": (trpo(backtrack_coefficient=1.5), ValueError, r"backtrack_coefficient .*\(0, 1\)"),
    "backtrack_iterations = 0": (trpo(backtrack_iterations=0), ValueError, r"backtrack_iterations must be an integer >= 1"),
    "fvp_fraction = 0": (trpo(fvp_fraction=0.0), ValueError, r"fvp_fraction must be a number in \(0, 1\]; got 0.0"),
    "fvp_fraction > 1": (trpo(fvp_fraction=1.5), ValueError, r"fvp_fraction must be a number in \(0, 1\]"),
    "value_epochs < 0": (trpo(value_epochs=-1), ValueError, r"value_epochs must be an integer >= 0"),
    "value_batch_size = 0": (trpo(value_batch_size=0), ValueError, r"value_batch_size must be an integer >= 1"),
    "action space Dict": (lambda: keras_trpo.TRPO(OBS, spaces.Dict({"a": spaces.Discrete(2)})), TypeError,
                          r"Unsupported action space Dict .*Supported action spaces: Discrete, Box, MultiDiscrete, MultiBinary"),
    "action space Tuple": (lambda: keras_trpo.TRPO(OBS, spaces.Tuple((spaces.Discrete(2),))), TypeError,
                           r"Unsupported action space Tuple .*Supported action spaces"),
    "action space Text": (lambda: keras_trpo.TRPO(OBS, spaces.Text(5)), TypeError, r"Unsupported action space Text"),
    "action space Graph": (lambda: keras_trpo.TRPO(OBS, spaces.Graph(spaces.Discrete(2), None)), TypeError,
                           r"Unsupported action space Graph"),
    "action space Sequence": (lambda: keras_trpo.TRPO(OBS, spaces.Sequence(spaces.Discrete(2))), TypeError,
                              r"Unsupported action space Sequence"),
    "integer Box actions": (lambda: keras_trpo.TRPO(OBS, spaces.Box(0, 3, (2,), np.int64)), TypeError,
                            r"Box action spaces must have a floating dtype"),
    "observation space Tuple": (lambda: keras_trpo.TRPO(spaces.Tuple((OBS, OBS)), spaces.Discrete(2)), TypeError,
                                r"Unsupported observation space: Tuple .*Supported: Box \(any shape\), Discrete"),
    "observation space Text": (lambda: keras_trpo.TRPO(spaces.Text(5), spaces.Discrete(2)), TypeError,
                               r"Unsupported observation space: Text"),
    "for_env on a non-env": (lambda: keras_trpo.TRPO.for_env(object()), TypeError,
                             r"env must be a gymnasium Env or VectorEnv"),
}


@pytest.mark.parametrize("case", sorted(TRPO_CASES))
def test_trpo_arguments(case):
    build, error, message = TRPO_CASES[case]
    with pytest.raises(error, match=message):
        build()


def test_max_kl_setter_validates_too():
    model = keras_trpo.TRPO(OBS, spaces.Discrete(2))
    with pytest.raises(ValueError, match="max_kl must be a number > 0"):
        model.max_kl = -1.0
    assert model.max_kl == pytest.approx(0.01)


def cartpole_model():
    return keras_trpo.TRPO.for_env(gymnasium.make("CartPole-v1"), hidden_units=(4,), value_hidden_units=(4,))


def rollouts(env_id="CartPole-v1", num_envs=4, model=None, **kwargs):
    def build():
        env = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
        return keras_trpo.Rollouts(env, model or cartpole_model(), **kwargs)

    return build


ROLLOUT_CASES = {
    "steps = 0": (rollouts(steps=0), ValueError, r"steps must be an integer >= 1; got 0"),
    "steps < 0": (rollouts(steps=-8), ValueError, r"steps must be an integer >= 1"),
    "steps float": (rollouts(steps=64.0), TypeError, r"steps must be an integer >= 1"),
    "steps not a multiple of num_envs": (rollouts(steps=30), ValueError,
                                         r"steps must be a multiple of the number of sub-environments \(4\); got 30\. "
                                         r"Use steps=28 or steps=32"),
    "gamma > 1": (rollouts(gamma=1.01), ValueError, r"gamma must be in \[0, 1\]; got 1.01"),
    "gamma < 0": (rollouts(gamma=-0.5), ValueError, r"gamma must be in \[0, 1\]"),
    "gae_lambda > 1": (rollouts(gae_lambda=2), ValueError, r"gae_lambda must be in \[0, 1\]; got 2"),
    "gae_lambda < 0": (rollouts(gae_lambda=-0.1), ValueError, r"gae_lambda must be in \[0, 1\]"),
    "gae_lambda string": (rollouts(gae_lambda="0.9"), TypeError, r"gae_lambda must be a number"),
    "observation space of another env": (rollouts("Acrobot-v1"), ValueError,
                                         r"env observation space Box.*\(6,\).* does not match the model's observation "
                                         r"space .*expected observations \[N, 4\] float32"),
    "action space of another env": (
        rollouts(model=keras_trpo.TRPO(spaces.Box(-1.0, 1.0, (4,), np.float32), spaces.Discrete(3))),
        ValueError, r"env action space Discrete\(2\) does not match the model's action space Discrete\(3\)"),
    "normalize_rewards not a bool": (rollouts(normalize_rewards="yes"), TypeError,
                                     r"normalize_rewards must be True or False; got 'yes'"),
    "not an env": (lambda: keras_trpo.Rollouts("CartPole-v1", cartpole_model()), TypeError,
                   r"env must be a gymnasium Env or VectorEnv; got str"),
}


@pytest.mark.parametrize("case", sorted(ROLLOUT_CASES))
def test_rollouts_arguments(case):
    build, error, message = ROLLOUT_CASES[case]
    with pytest.raises(error, match=message):
        build()


GAE_ARGS = dict(rewards=np.zeros((3, 2)), values=np.zeros((3, 2)), terminated=np.zeros((3, 2), bool),
                truncated=np.zeros((3, 2), bool), final_values=np.zeros((3, 2)))

GAE_CASES = {
    "gamma > 1": ({"gamma": 1.5}, ValueError, r"gamma must be in \[0, 1\]"),
    "lam < 0": ({"lam": -0.1}, ValueError, r"lam must be in \[0, 1\]"),
    "gamma string": ({"gamma": "0.9"}, TypeError, r"gamma must be a number in \[0, 1\]; got '0.9'"),
    "1-D rewards": ({"rewards": np.zeros(3)}, ValueError, r"rewards must have shape \[T, num_envs\]"),
    "values shape": ({"values": np.zeros((3, 3))}, ValueError, r"values has shape \[3, 3\]; expected \[T, num_envs\] = \[3, 2\]"),
    "float terminated": ({"terminated": np.full((3, 2), 0.5)}, TypeError, r"terminated must be bool"),
}


@pytest.mark.parametrize("case", sorted(GAE_CASES))
def test_compute_gae_arguments(case):
    override, error, message = GAE_CASES[case]
    with pytest.raises(error, match=message):
        keras_trpo.compute_gae(**{**GAE_ARGS, **override})


def test_evaluate_episodes_must_be_positive():
    with pytest.raises(ValueError, match="episodes must be an integer >= 1"):
        keras_trpo.evaluate(cartpole_model(), "CartPole-v1", episodes=0)
