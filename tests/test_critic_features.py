"""The critic computes the default MLP's input features once per pass (issue 26), with the same bits as per minibatch.

The reference below is the critic loop as it was before: ``model.value`` of each minibatch's gathered
observations (cast, one-hot and running normalization redone in every step).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from helpers import assert_bit_identical, snapshot
from keras_trpo import critic
from keras_trpo.distribute import Replicas

OBSERVATION_SPACES = {
    "box, normalized": (spaces.Box(-np.inf, np.inf, (5,), np.float64), {"normalize_observations": True}),
    "dict with a one-hot entry": (spaces.Dict({"x": spaces.Box(-3.0, 3.0, (3,), np.float32),
                                               "k": spaces.Discrete(4)}), {}),
}


def _model_and_batch(space, kwargs, n=48):
    model = keras_trpo.TRPO(space, spaces.Discrete(2), hidden_units=(8,), value_hidden_units=(8,), seed=0,
                            value_epochs=3, value_batch_size=16, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    space.seed(0)
    observations = model.observation_spec.numpy(
        model.observation_spec.structure(np.stack([s[leaf.key] if leaf.key else s for s in
                                                   [space.sample() for _ in range(n)]]).astype(leaf.dtype)
                                         for leaf in model.observation_spec.leaves))
    if model.normalizer is not None:  # statistics far from (0, 1): the normalization changes the inputs
        model.normalizer.update(tf.constant(np.random.default_rng(1).normal(4.0, 3.0, (256, 5)), tf.float32))
    returns = np.random.default_rng(2).normal(size=n).astype(np.float32)
    model.optimizer.build(model.value_variables)
    return model, observations, returns


def _reference_pass(model, observations, returns):
    """The critic loop of 2577edf: ``model.value`` of the gathered observations in every minibatch step."""
    n, size, epochs = int(returns.shape[0]), model.value_batch_size, model.value_epochs
    permutations = tf.argsort(keras.random.uniform((epochs, n), seed=model.seed_generator), axis=-1)
    for epoch in range(epochs):
        for start in range(0, n, size):
            index = permutations[epoch, start:start + size]
            with tf.GradientTape() as tape:
                picked = tf.nest.map_structure(lambda x: tf.gather(x, index), observations)
                loss = tf.reduce_mean(tf.square(model.value(picked) - tf.gather(returns, index)))
            model.optimizer.apply(tape.gradient(loss, model.value_variables), model.value_variables)


@pytest.mark.parametrize("case", sorted(OBSERVATION_SPACES))
def test_one_critic_pass_is_bit_identical_to_recomputing_the_features_per_minibatch(case):
    """Bugs caught: the minibatch's rows not gathered from the precomputed features (``picked = x``: the whole
    batch in every step), or the features computed from another batch than the one regressed on."""
    model, observations, returns = _model_and_batch(*OBSERVATION_SPACES[case])
    written = critic.written_variables(model)
    before = snapshot(written)
    tf.function(lambda o, r: critic.train(model, Replicas(None), o, r, model.value_epochs, model.value_batch_size,
                                          model.seed_generator), autograph=False)(observations, tf.constant(returns))
    after = snapshot(written)
    for variable in written:
        variable.assign(before[variable.path])
    tf.function(lambda o, r: _reference_pass(model, o, r), autograph=False)(observations, tf.constant(returns))
    assert_bit_identical(after, snapshot(written))
