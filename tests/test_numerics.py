"""The derived float32 tolerances of tests/numerics.py hold against a float64 evaluation of the same network."""

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
import numerics


def float64_forward(model, x):
    """The default MLP policy in float64 numpy (normalizer included): exact to within float64's roundoff."""
    functions = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}
    x = np.asarray(x, np.float64)
    if model.normalizer is not None:
        norm = model.normalizer
        std = np.sqrt(np.asarray(norm.variance.numpy(), np.float64) + norm.epsilon)
        x = np.clip((x - np.asarray(norm.mean.numpy(), np.float64)) / std, -norm.clip, norm.clip)
    layers = [*model.policy_layers, model.policy_output]
    for index, layer in enumerate(layers):
        x = x @ np.asarray(layer.kernel.numpy(), np.float64) + np.asarray(layer.bias.numpy(), np.float64)
        if index < len(layers) - 1:
            x = functions[model.activation](x)
    return x


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_float32_forward_pass_is_within_half_the_derived_gap_of_the_exact_one(activation, normalize):
    """Catches: a bound that leaves out the layers' own rounding (the γ and activation terms), carrying
    only the input's error: wide layers on large inputs then round outside it."""
    model = keras_trpo.TRPO(spaces.Box(-np.inf, np.inf, (6,), np.float32), spaces.Box(-1, 1, (3,), np.float32),
                            hidden_units=(256, 256), activation=activation, normalize_observations=normalize, seed=0)
    rng = np.random.default_rng(0)
    for variable in model.policy_variables:  # O(1) weights: the default 0.01-gain output hides the rounding
        variable.assign(rng.normal(scale=1.0 / np.sqrt(variable.shape[0]), size=variable.shape).astype(np.float32))
    observations = (rng.normal(size=(256, 6)) * 30 + 20).astype(np.float32)
    if normalize:
        model.normalizer.update(tf.constant(observations))
    gap = numerics.mlp_gap(model, observations)
    float32 = model.distribution_params(observations)["mean"].numpy()
    assert np.all(np.abs(float32 - float64_forward(model, observations)) <= gap["policy"] / 2)
