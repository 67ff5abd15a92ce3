"""Observations as structures of arrays (keras_trpo/observations.py): key order, checks, network inputs.

Each test names the one-line bug it catches. Expected network outputs are computed in float64 numpy
from the layers' weights on inputs built by hand as the module documents them (entries in sorted key
order, float ``Box`` entries normalized with their own statistics); the tolerances are the derived
bounds of tests/numerics.py.
"""

from collections import OrderedDict

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from numerics import U32, dense_stack_error, mlp_gap, normalization_error
from test_numerics import float64_forward


def randomized(model, seed=0):
    """O(1) policy weights: the default 0.01-gain output layer would make every logit nearly 0."""
    rng = np.random.default_rng(seed)
    for variable in model.policy_variables:
        variable.assign(rng.normal(scale=1.0 / np.sqrt(variable.shape[0]), size=variable.shape).astype(np.float32))
    return model


def assert_within(actual, expected, bound, what):
    error = np.abs(np.asarray(actual, np.float64) - expected)
    assert np.all(error <= bound), f"{what}: off by up to {error.max():.3g} (derived bound {np.max(bound):.1e})"


# --------------------------------------------------------------------------
# Dict entries in sorted key order, whatever the space's order
# --------------------------------------------------------------------------
def test_an_ordered_dict_space_feeds_the_default_mlp_in_sorted_key_order():
    """Catches: the leaves taken in the space's key order (``for key in space.spaces``) instead of sorted.

    gymnasium sorts a plain dict's keys but keeps an OrderedDict's order, here (b, a). The model's
    features must still be ``[a, b]``, the order in which tf.nest (and so ``model.export``, Keras and
    every other consumer of the structure) flattens a dict; otherwise the exported model feeds b where the
    network learned a.
    """
    space = spaces.Dict(OrderedDict([("b", spaces.Box(-5.0, 5.0, (2,), np.float32)),
                                     ("a", spaces.Box(-5.0, 5.0, (3,), np.float32))]))
    assert list(space.spaces) == ["b", "a"]  # the premise: gymnasium kept the order
    model = randomized(keras_trpo.TRPO(space, spaces.Discrete(3), hidden_units=(8,), seed=0))
    rng = np.random.default_rng(1)
    observations = {"a": rng.normal(size=(16, 3)).astype(np.float32), "b": rng.normal(size=(16, 2)).astype(np.float32)}
    flat = np.concatenate([observations["a"], observations["b"]], axis=1)
    assert_within(model.distribution_params(observations)["logits"].numpy(), float64_forward(model, flat),
                  mlp_gap(model, flat)["policy"] / 2, "logits")


# --------------------------------------------------------------------------
# The per-step fast path refuses what the full check refuses
# --------------------------------------------------------------------------
class ByteEnv(gymnasium.Env):
    """uint8 observations [3, 4], every step; episodes never end."""

    observation_space = spaces.Box(0, 255, (2,), np.uint8)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([3, 4], np.uint8), {}

    def step(self, action):
        return np.array([3, 4], np.uint8), 0.0, False, False, {}


class Tampered(gymnasium.vector.VectorObservationWrapper):
    """A vector env whose batched observations (of reset and step) pass through ``change``."""

    def __init__(self, env, change):
        super().__init__(env)
        self.change = change

    def observations(self, observations):
        return self.change(observations)


FAST_PATH_CASES = {
    # Catches: the fast path's row count dropped (``x.shape[1:] != leaf.shape``): the batch of 1 passed, and
    # the error surfaced at env.step as "zip() argument 2 is shorter than argument 1".
    "one row for two sub-envs": (lambda o: o[:1], r"env\.reset's observations have \[1\] rows; expected num_envs = 2"),
    # Catches: the fast path's dtype check dropped (``x.dtype != leaf.dtype``): 3.7 and 4.7 were stored as 3 and 4
    # in the uint8 buffer, without a word.
    "floats for a uint8 space": (lambda o: o.astype(np.float64) + 0.7,
                                 r"env\.reset's observations has dtype float64; expected \[N, 2\] uint8"),
}


@pytest.mark.parametrize("case", sorted(FAST_PATH_CASES))
def test_observations_that_the_fast_path_cannot_take_as_they_are_are_refused_at_once(case):
    """Bug caught (per row, see FAST_PATH_CASES): ``ObservationSpec.is_exact_batch`` accepting a batch that
    ``ObservationSpec.check`` and the row count refuse."""
    change, message = FAST_PATH_CASES[case]
    env = Tampered(gymnasium.vector.SyncVectorEnv([ByteEnv, ByteEnv]), change)
    model = keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_hidden_units=(4,), seed=0)
    rollouts = keras_trpo.Rollouts(env, model, steps=4, seed=0)
    with pytest.raises(keras_trpo.RolloutError, match=message):
        rollouts.collect()


# --------------------------------------------------------------------------
# Normalized float entries: for custom networks too, each with its own statistics
# --------------------------------------------------------------------------
def test_a_custom_network_receives_normalized_float_observations():
    """Catches: ``network_inputs`` not applying the normalization (custom networks got raw floats).

    Statistics mean ≈ 5, std ≈ 2, observations near them: the normalized inputs are O(1), the raw ones
    O(5). The expected logits are the network's Dense and the head applied in float64 to
    ``(x − mean) / std``.
    """
    dense = keras.layers.Dense(4, name="custom_dense")
    model = keras_trpo.TRPO(spaces.Box(-np.inf, np.inf, (3,), np.float32), spaces.Discrete(3),
                            policy_network=keras.Sequential([dense]), normalize_observations=True, seed=0)
    rng = np.random.default_rng(0)
    for variable in (dense.kernel, dense.bias, model.policy_output.kernel, model.policy_output.bias):
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    model.normalizer.update(tf.constant(rng.normal(5.0, 2.0, size=(256, 3)).astype(np.float32)))
    x = rng.normal(5.0, 2.0, size=(16, 3)).astype(np.float32)
    norm = model.normalizer
    mean = np.asarray(norm.mean.numpy(), np.float64)
    std = np.sqrt(np.asarray(norm.variance.numpy(), np.float64) + norm.epsilon)
    expected = (x - mean) / std
    for layer in (dense, model.policy_output):
        expected = expected @ np.asarray(layer.kernel.numpy(), np.float64) + np.asarray(layer.bias.numpy(), np.float64)
    bound = dense_stack_error([dense, model.policy_output], None, *normalization_error(norm, x))
    assert_within(model.policy_outputs(x).numpy(), expected, bound, "logits")


def test_two_equal_size_float_entries_each_get_their_own_statistics():
    """Catches: the float parts taken in reverse order, in ``float_features`` (the normalizer's input) or in
    ``_replace_float`` (where the normalized parts go back): a gets b's mean and std and b gets a's.

    a ≈ N(10, 1) and b ≈ N(−5, 3), both of size 2. The normalizer's statistics must be ``[a, b]`` (numpy's
    moments of the data), and the default MLP's logits those of ``[(a − mean_a)/std_a, (b − mean_b)/std_b]``.
    """
    box = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    model = randomized(keras_trpo.TRPO(spaces.Dict({"a": box, "b": box}), spaces.Discrete(3), hidden_units=(8,),
                                       normalize_observations=True, seed=0))
    rng = np.random.default_rng(0)

    def sample(n):
        return {"a": rng.normal(10.0, 1.0, size=(n, 2)).astype(np.float32),
                "b": rng.normal(-5.0, 3.0, size=(n, 2)).astype(np.float32)}

    data = sample(512)
    # What TRPO.train_step does after an accepted update (update.normalizer_step), on one device.
    model.normalizer.update(model.observation_spec.float_features(data))
    flat_data = np.concatenate([data["a"], data["b"]], axis=1).astype(np.float64)
    # Moments of float32 data taken in float64, then stored as float32: one rounding, relative u.
    np.testing.assert_allclose(model.normalizer.mean.numpy(), flat_data.mean(axis=0), rtol=2 * U32)
    np.testing.assert_allclose(model.normalizer.variance.numpy(), flat_data.var(axis=0), rtol=2 * U32)
    observations = sample(16)
    flat = np.concatenate([observations["a"], observations["b"]], axis=1)
    assert_within(model.distribution_params(observations)["logits"].numpy(), float64_forward(model, flat),
                  mlp_gap(model, flat)["policy"] / 2, "logits")
