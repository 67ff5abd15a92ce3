"""keras_trpo.evaluate(..., deterministic=False): sampled actions, seeded (issue 27: both evaluation modes per row)."""

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo


class ActionRecorder(gymnasium.Wrapper):
    """Records (observation the action was chosen on, action) for every step of one sub-env."""

    def __init__(self, env, log):
        super().__init__(env)
        self.log, self.last = log, None

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self.last = observation
        return observation, info

    def step(self, action):
        self.log.append((self.last, int(action)))
        observation, *rest = self.env.step(action)
        self.last = observation
        return (observation, *rest)


class FixedStart(gymnasium.Wrapper):
    """Starts every episode from the state of seed 0, whatever seed it is given: only the sampler can differ."""

    def reset(self, *, seed=None, options=None):
        return self.env.reset(seed=0, options=options)


def fixed_start_env(num_envs=4):
    return gymnasium.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync", wrappers=[FixedStart])


def recorded_env(log, num_envs=4):
    return gymnasium.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync",
                              wrappers=[lambda env: ActionRecorder(env, log)])


def test_sampled_actions_follow_the_policy_distribution(varied_cartpole_policy):
    """Each step's action is a draw from the policy's own probabilities (the model's TF distribution, computed
    independently of the numpy sampler): the count of action 1 is within 5 standard deviations of its expectation.
    Catches: the mode taken for deterministic=False, or the flag ignored (the count lands tens of sigmas away)."""
    model, log = varied_cartpole_policy, []
    env = recorded_env(log)
    keras_trpo.evaluate(model, env, episodes=8, seed=5, deterministic=False)
    env.close()
    observations = np.stack([o for o, _ in log]).astype(np.float32)
    actions = np.array([a for _, a in log])
    logits = model.distribution_params(observations)["logits"].numpy()
    p1 = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))
    assert len(actions) > 500
    # Two counts, each a sum of independent Bernoulli draws under correct sampling: of action 1, and of the mode.
    p_mode = np.maximum(p1, 1 - p1)
    for hits, p in ((actions == 1, p1), (actions == (p1 > 0.5), p_mode)):
        sigma = np.sqrt((p * (1 - p)).sum())
        assert abs(hits.sum() - p.sum()) < 5 * sigma, (hits.sum(), p.sum(), sigma)
    # The test tells the mode apart: always taking it would be this many sigmas off.
    assert (len(p_mode) - p_mode.sum()) / np.sqrt((p_mode * (1 - p_mode)).sum()) > 10


@pytest.mark.parametrize("saved", [False, True], ids=["keras", "saved_model"])
def test_a_seeded_sampled_evaluation_repeats_and_another_seed_differs(varied_cartpole_policy, tmp_path, saved):
    """On episodes that all start alike, only the sampler tells two seeds apart.
    Catches: the sampler not seeded with seed (runs differ), or with a constant (seeds agree); for a SavedModel,
    one constant seed fed to its sample signature at every step (seeds agree)."""
    policy = varied_cartpole_policy
    if saved:
        policy = tf.saved_model.load(policy.export(str(tmp_path / "policy")))
    env = fixed_start_env()
    first, again, other = (keras_trpo.evaluate(policy, env, episodes=4, seed=seed, deterministic=False)
                           for seed in (7, 7, 8))
    env.close()
    assert first == again and first != other


def test_a_saved_model_samples_through_its_sample_signature(varied_cartpole_policy, tmp_path):
    """Catches: the SavedModel path falling back to serving_default (the mode), or its seeds not drawn from seed."""
    loaded = tf.saved_model.load(varied_cartpole_policy.export(str(tmp_path / "policy")))
    log = []
    env = recorded_env(log)
    sampled = keras_trpo.evaluate(loaded, env, episodes=8, seed=3, deterministic=False)
    assert sampled == keras_trpo.evaluate(loaded, env, episodes=8, seed=3, deterministic=False)
    env.close()
    observations = np.stack([o for o, _ in log[: len(log) // 2]]).astype(np.float32)
    served_modes = loaded.signatures["serving_default"](observations=observations)["actions"].numpy()
    assert (np.array([a for _, a in log[: len(log) // 2]]) != served_modes).mean() > 0.05


@pytest.mark.parametrize(
    "policy, deterministic, message",
    [
        (lambda o: np.zeros(len(o), np.int64), False, r"^deterministic=False samples actions: model must be a keras_trpo"),
        (None, "no", r"^deterministic must be True or False; got 'no'\."),
    ],
)
def test_what_cannot_sample_is_one_clear_error(varied_cartpole_policy, policy, deterministic, message):
    """Catches: a plain function evaluated with its mode under deterministic=False; a truthy string taken as True."""
    with pytest.raises(TypeError, match=message):
        keras_trpo.evaluate(policy or varied_cartpole_policy, "CartPole-v1", episodes=1, deterministic=deterministic)
