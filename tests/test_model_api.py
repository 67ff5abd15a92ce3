"""The public construction API of ``TRPO`` and how ``fit``'s input reaches the update.

* ``TRPO.for_env`` shows the constructor's options (same names, same defaults) and passes each on;
* ``TRPO.build(input_shape)`` accepts the observation space's shape only;
* under a ``tf.distribute`` strategy, an exception raised while collecting on a ``tf.data``
  thread reaches the caller as itself (``keras_trpo.feeding``), not as TensorFlow's ``UnknownError``.
"""

import inspect
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo

CARTPOLE = spaces.Box(-1.0, 1.0, (4,), np.float32)
DICT = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32), "flag": spaces.Discrete(3)})


def keyword_options(function):
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }


def test_for_env_shows_every_option_of_the_constructor_with_its_default():
    """Catches: an option missing from for_env, or a default that differs from TRPO.__init__'s.

    Except the masks: for_env detects them (``action_mask=None``) and decides whether the networks see them.
    """
    for_env, init = keyword_options(keras_trpo.TRPO.for_env), keyword_options(keras_trpo.TRPO.__init__)
    assert (for_env.pop("action_mask"), for_env.pop("observe_action_mask"), init.pop("action_mask")) == (None, False, False)
    assert for_env == init


def test_for_env_passes_every_option_on():
    """Catches: for_env passing an option under another name (e.g. damping=max_kl), or not at all."""
    options = {
        # max_kl and damping live in float32 variables: values exact in float32.
        "hidden_units": (6,), "value_hidden_units": (5,), "activation": "relu", "max_kl": 0.015625, "damping": 0.25,
        "cg_iterations": 4, "backtrack_coefficient": 0.6, "backtrack_iterations": 3, "fvp_fraction": 0.5,
        "fisher_product": "gauss_newton", "normalize_advantages": False, "value_epochs": 2, "value_batch_size": 16, "log_std_init": -0.5,
        "normalize_observations": True, "seed": 7, "recurrent": True, "sequence_length": 8, "use_sde": True,
        "sde_sample_freq": 4,
    }
    # action_mask needs a Discrete action space: tests/test_masking.py checks that for_env passes it on.
    assert set(options) | {"policy_network", "value_network", "action_mask"} == set(
        keyword_options(keras_trpo.TRPO.__init__))
    env = gymnasium.make_vec("Pendulum-v1", num_envs=1, vectorization_mode="sync")
    config = keras_trpo.TRPO.for_env(env, name="pendulum", **options).get_config()
    expected = keras_trpo.TRPO(env.single_observation_space, env.single_action_space, name="pendulum",
                               **options).get_config()
    assert config == expected
    assert {key: config[key] for key in options} == {**options, "hidden_units": [6], "value_hidden_units": [5]}


@pytest.mark.parametrize(
    "space, shape",
    [
        (CARTPOLE, (None, 5)),
        (CARTPOLE, (None, 4, 1)),
        (CARTPOLE, 4),
        (DICT, {"position": (None, 2)}),
        (DICT, {"position": (None, 3), "flag": (None,)}),
        (DICT, (None, 2)),
    ],
)
def test_build_refuses_a_shape_other_than_the_observation_space(space, shape):
    """Catches: build ignoring input_shape (it rebuilt the space's networks whatever it was given)."""
    model = keras_trpo.TRPO(space, spaces.Discrete(2), hidden_units=(4,), value_hidden_units=(4,), seed=0)
    with pytest.raises(ValueError, match=r"^TRPO.build got input_shape=.*the observation space gives"):
        model.build(shape)


@pytest.mark.parametrize("space, shape", [(CARTPOLE, (None, 4)), (CARTPOLE, [32, 4]),
                                          (DICT, {"flag": [None], "position": (8, 2)})])
def test_build_accepts_the_observation_space_shape_with_any_batch_dimension(space, shape):
    model = keras_trpo.TRPO(space, spaces.Discrete(2), hidden_units=(4,), value_hidden_units=(4,), seed=0)
    before = [w.numpy().copy() for w in model.weights]
    model.build(shape)
    assert model.built
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())


# Run in a fresh process: the 2 logical CPUs of a MirroredStrategy are fixed when TensorFlow starts
# (a one-replica strategy gives train_step plain tensors, which it refuses).
BREAKING_FIT = """
import gymnasium, keras, tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
import keras_trpo


class BreaksAt(gymnasium.Wrapper):
    def __init__(self, at):
        super().__init__(gymnasium.make("CartPole-v1"))
        self.count, self.at = 0, at

    def step(self, action):
        self.count += 1
        if self.count == self.at:
            raise RuntimeError("the simulator broke")
        return self.env.step(action)


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
env = gymnasium.vector.SyncVectorEnv([lambda: BreaksAt(at=100)])
with strategy.scope():
    model = keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_hidden_units=(4,), value_epochs=1, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
rollouts = keras_trpo.Rollouts(env, model, steps=32, seed=0)
try:
    model.fit(rollouts, epochs=5, verbose=0)
except BaseException as error:
    print("RAISED", type(error).__name__, "CAUSE", repr(error.__cause__), "VERSION", model.policy_version)
"""


def test_under_a_strategy_fit_raises_the_collection_error_itself():
    """Catches: distribute_py_dataset no longer reporting the source's exception (fit raised UnknownError)."""
    done = subprocess.run([sys.executable, "-c", BREAKING_FIT], check=False, capture_output=True, text=True, timeout=600)
    # Batch 1 (env steps 1-32) is read by fit itself; batches 2-4 on a tf.data thread, and the 4th breaks.
    assert "RAISED RolloutError CAUSE RuntimeError('the simulator broke') VERSION 3" in done.stdout, done.stderr[-3000:]
