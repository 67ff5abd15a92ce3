"""Fixtures shared by the test modules."""

import keras
import numpy as np
import pytest

import keras_trpo

from helpers import cartpole_env, tiny_trpo


@pytest.fixture
def float64():
    """Builds the test's models in float64 (Keras ``floatx`` and dtype policy); float32 again afterwards.

    Yields float64's unit roundoff u = 2**-53. Math compared against an independent float64
    computation after conjugate gradient or several updates is compared in float64: float32
    summation-order differences, amplified by the condition number, differ between CPU models
    (issue 24), while in float64 a bound of many thousand u is still far below any error of the math.
    """
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield np.finfo(np.float64).eps / 2
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def varied_cartpole_policy():
    """A CartPole policy after 6 iterations of 512 steps: its episodes last 100-300 steps, each seed a
    different length, so a changed seed or episode order shows in the returns. Do not train it further."""
    env = cartpole_env(4)
    keras.utils.set_random_seed(0)
    model = tiny_trpo(env, 16)
    model.fit(keras_trpo.Rollouts(env, model, steps=512, seed=0), epochs=6, verbose=0)
    env.close()
    return model
