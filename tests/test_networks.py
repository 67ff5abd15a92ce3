"""Bring-your-own networks: custom policy/value networks and Box/Discrete/MultiBinary/Dict observations.

Each test names the one-line bug it catches. The math is checked against an
independent computation: the network applied by hand to the inputs the
observations module documents (one-hot Discrete, float32 images, dict keyed like the space).
"""

from __future__ import annotations

import os

import gymnasium
import keras
import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo


class ToyDictEnv(gymnasium.Env):
    """Observations of every supported kind; the reward prefers action 1 when ``flag`` is even."""

    observation_space = spaces.Dict({
        "grid": spaces.Box(0, 255, (5, 5, 2), np.uint8),
        "position": spaces.Box(-5.0, 5.0, (2,), np.float32),
        "flag": spaces.Discrete(3, start=1),
        "bits": spaces.MultiBinary(4),
    })
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observation(), {}

    def _observation(self):
        self.current = self.observation_space.sample()
        self.current["position"] = self.np_random.normal(3.0, 0.5, 2).astype(np.float32)
        return self.current

    def step(self, action):
        reward = float(int(action) == int(self.current["flag"] % 2 == 0))
        self.t += 1
        return self._observation(), reward, False, self.t >= 10, {}


def dict_env(num_envs=2):
    return gymnasium.vector.SyncVectorEnv([ToyDictEnv for _ in range(num_envs)])


def dict_network(name):
    """A Functional network over the toy dict: a conv on the grid, the other entries concatenated."""
    inputs = {
        "grid": keras.Input((5, 5, 2), name="grid"),
        "position": keras.Input((2,), name="position"),
        "flag": keras.Input((3,), name="flag"),
        "bits": keras.Input((4,), name="bits"),
    }
    grid = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs["grid"])))
    features = keras.layers.Concatenate()([grid, inputs["position"], inputs["flag"], inputs["bits"]])
    return keras.Model(inputs, keras.layers.Dense(16, activation="tanh")(features), name=name)


def compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


# --------------------------------------------------------------------------
# What a network sees, against an independent computation
# --------------------------------------------------------------------------
def test_a_dict_network_gets_one_hot_discrete_float_images_and_float_entries():
    """Bug caught: Discrete one-hot ignoring ``start`` (flag 1 would be index 1, not 0), or uint8 not cast."""
    env = dict_env()
    model = keras_trpo.TRPO.for_env(env, policy_network=dict_network("p"), value_network=dict_network("v"), seed=0)
    observations, _ = env.reset(seed=3)
    expected_inputs = {
        "grid": observations["grid"].astype(np.float32),
        "position": observations["position"],
        "flag": np.eye(3, dtype=np.float32)[observations["flag"] - 1],
        "bits": observations["bits"].astype(np.float32),
    }
    network, head = model.policy_layers[0], model.policy_output
    expected = head(network(expected_inputs)).numpy()
    np.testing.assert_allclose(model.policy_outputs(observations).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_the_default_mlp_on_a_dict_flattens_and_concatenates_entries_in_key_order():
    """Bug caught: entries concatenated in the space's order instead of tf.nest's sorted key order."""
    env = dict_env()
    model = keras_trpo.TRPO.for_env(env, hidden_units=(8,), value_hidden_units=(8,), seed=0)
    observations, _ = env.reset(seed=4)
    flat = np.concatenate([
        observations["bits"].astype(np.float32),
        np.eye(3, dtype=np.float32)[observations["flag"] - 1],
        observations["grid"].reshape(2, -1).astype(np.float32),
        observations["position"],
    ], axis=1)
    x = flat
    for layer in model.value_layers:
        x = layer(x)
    np.testing.assert_allclose(model.value(observations).numpy(), model.value_output(x).numpy()[:, 0], rtol=1e-5)


def test_discrete_observations_are_one_hot_for_the_default_mlp():
    """Bug caught: a Discrete observation fed as one float instead of a one-hot vector."""
    model = keras_trpo.TRPO(spaces.Discrete(5), spaces.Discrete(2), hidden_units=(4,), seed=0)
    x = np.eye(5, dtype=np.float32)[[0, 3]]
    for layer in model.policy_layers:
        x = layer(x)
    np.testing.assert_allclose(model.policy_outputs(np.array([0, 3])).numpy(), model.policy_output(x).numpy(), rtol=1e-6)


# --------------------------------------------------------------------------
# Training through rollouts, with dtypes kept
# --------------------------------------------------------------------------
def test_dict_observations_train_end_to_end_and_batches_keep_their_dtypes():
    """Bug caught: the rollout buffer in float32 (uint8 images 4x larger, and the dtype contract broken)."""
    env = dict_env()
    model = compiled(keras_trpo.TRPO.for_env(
        env, policy_network=dict_network("p"), value_network=dict_network("v"), normalize_observations=True,
        max_kl=0.05, seed=0))
    rollouts = keras_trpo.Rollouts(env, model, steps=200, seed=0)
    batch = rollouts.collect()
    dtypes = {key: value.dtype.name for key, value in batch["observations"].items()}
    assert dtypes == {"grid": "uint8", "position": "float32", "flag": "int64", "bits": "int8"}
    assert batch["observations"]["grid"].shape == (200, 5, 5, 2)
    history = model.fit(rollouts, epochs=8, verbose=0)
    # The policy learns the flag's parity: a random policy earns 5 per 10-step episode.
    assert history.history["episode_return"][-1] > 6.0, history.history["episode_return"]
    assert min(history.history["step_accepted"]) == 1.0


def test_normalization_sees_only_the_float_box_entries_of_a_dict():
    """Bug caught: the normalizer fed the uint8 grid or the one-hot flag (its size would be 70, not 2)."""
    env = dict_env()
    model = compiled(keras_trpo.TRPO.for_env(env, normalize_observations=True, value_epochs=1, seed=0))
    assert model.normalizer.size == 2
    batch = keras_trpo.Rollouts(env, model, steps=100, seed=0).collect()
    model.train_step(batch)
    positions = batch["observations"]["position"].astype(np.float64)
    count = 100.0
    # Running moments merged from the prior (mean 0, variance 1, count 0): exactly the batch's.
    np.testing.assert_allclose(model.normalizer.mean.numpy(), positions.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(model.normalizer.variance.numpy(), positions.var(axis=0), rtol=1e-4)
    assert float(model.normalizer.count.numpy()) == count


def test_custom_networks_act_through_one_compiled_function_traced_once():
    """Bug caught: an acting function rebuilt per collection (a retrace, ~1 s for a CNN, every iteration)."""
    env = dict_env()
    model = compiled(keras_trpo.TRPO.for_env(env, policy_network=dict_network("p"), value_network=dict_network("v"),
                                             seed=0))
    acting = model.acting_function()
    model.fit(keras_trpo.Rollouts(env, model, steps=40, seed=0), epochs=3, verbose=0)
    assert model.acting_function() is acting
    assert acting.experimental_get_tracing_count() == 1


def test_uint8_images_are_refused_for_observation_normalization():
    """Bug caught: normalize_observations silently normalizing (or ignoring) uint8 images."""
    with pytest.raises(ValueError, match=r"normalize_observations=True needs float Box observations.*Rescaling"):
        keras_trpo.TRPO(spaces.Box(0, 255, (7, 7, 3), np.uint8), spaces.Discrete(3), policy_network="minigrid_cnn",
                        value_network="minigrid_cnn", normalize_observations=True)


# --------------------------------------------------------------------------
# Refused at construction, one clear line each (acceptance 4)
# --------------------------------------------------------------------------
IMAGE = spaces.Box(0, 255, (7, 7, 3), np.uint8)


def _conv(flatten=True, layer=None):
    layers = [layer or keras.layers.Conv2D(4, 2)] + ([keras.layers.Flatten()] if flatten else [])
    return keras.Sequential(layers)


def _same_object():
    net = _conv()
    return keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=net, value_network=net)


def _shared_layer():
    conv = keras.layers.Conv2D(4, 2)
    return keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=_conv(layer=conv), value_network=_conv(layer=conv))


CONSTRUCTION_ERRORS = {
    "the same network for policy and value": (_same_object, ValueError,
                                              r"policy_network and value_network are the same object; pass two"),
    "a layer shared by both networks": (_shared_layer, ValueError,
                                        r"must not share trainable weights, and both hold '.*kernel'"),
    "Text in a Dict": (lambda: keras_trpo.TRPO(spaces.Dict({"image": IMAGE, "mission": spaces.Text(10)}),
                                               spaces.Discrete(3)),
                       TypeError, r"entry 'mission': Text.*FilterObservation"),
    "Tuple in a Dict": (lambda: keras_trpo.TRPO(spaces.Dict({"pair": spaces.Tuple((IMAGE, IMAGE))}), spaces.Discrete(3)),
                        TypeError, r"entry 'pair': Tuple"),
    "a policy network of rank 4": (lambda: keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=_conv(False),
                                                           value_network=_conv()),
                                   ValueError, r"policy_network must map .* to features \[N, F\].*shape \[2, 6, 6, 4\]"),
    "a value network of rank 1": (lambda: keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=_conv(),
                                                          value_network=keras.Sequential([
                                                              _conv(), keras.layers.Lambda(lambda x: x[:, 0])])),
                                  ValueError, r"value_network must map .* \[N, F\].*shape \[2\]"),
    "a network and hidden_units": (lambda: keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=_conv(),
                                                           hidden_units=(32,)),
                                   ValueError, r"either policy_network or hidden_units"),
    "an unknown network name": (lambda: keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network="resnet"),
                                ValueError, r"unknown network 'resnet'.*minigrid_cnn"),
    "a CNN name without images": (lambda: keras_trpo.TRPO(spaces.Box(-1, 1, (4,)), spaces.Discrete(3),
                                                          policy_network="nature_cnn"),
                                  ValueError, r"'nature_cnn' needs image observations.*\(4,\)"),
    "a network that fails on the observations": (
        lambda: keras_trpo.TRPO(spaces.Dict({"image": IMAGE, "direction": spaces.Discrete(4)}), spaces.Discrete(3),
                                policy_network=_conv(), value_network=_conv()),
        ValueError, r"policy_network failed on a batch of observations \{'direction': \[N\] int64, 'image'"),
    "'mlp' on a Dict": (lambda: keras_trpo.TRPO(spaces.Dict({"image": IMAGE}), spaces.Discrete(3), policy_network="mlp"),
                        ValueError, r"'mlp' takes one array of observations"),
    "a network that is not a layer": (lambda: keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=np.tanh),
                                      TypeError, r"policy_network must be a Keras layer"),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCTION_ERRORS))
def test_bad_networks_and_spaces_are_refused_at_construction(case):
    """Bug caught (per row): the check removed — e.g. sharing detected by layer name rather than identity."""
    build, error, message = CONSTRUCTION_ERRORS[case]
    with pytest.raises(error, match=message) as raised:
        build()
    assert "\n" not in str(raised.value)


# --------------------------------------------------------------------------
# .keras round trips
# --------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="tests")
class RegisteredNet(keras.Model):
    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.conv = keras.layers.Conv2D(width, 2)
        self.flatten = keras.layers.Flatten()

    def call(self, x):
        return self.flatten(self.conv(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


class UnregisteredNet(RegisteredNet):
    pass


ROUND_TRIPS = {
    "Sequential": lambda: (_conv(), _conv()),
    "registered subclass": lambda: (RegisteredNet(4), RegisteredNet(6)),
    "by name": lambda: ("minigrid_cnn", "minigrid_cnn"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_custom_networks_round_trip_through_a_keras_file(tmp_path, case):
    """Bug caught: the networks left out of get_config (load would rebuild the default MLP and fail on weights)."""
    policy, value = ROUND_TRIPS[case]()
    model = compiled(keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=policy, value_network=value, seed=0))
    observations = np.random.default_rng(0).integers(0, 10, (4, 7, 7, 3)).astype(np.uint8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.policy_layers[0]) is type(model.policy_layers[0])
    np.testing.assert_array_equal(loaded.policy_outputs(observations).numpy(), model.policy_outputs(observations).numpy())
    np.testing.assert_array_equal(loaded.value(observations).numpy(), model.value(observations).numpy())


def test_a_functional_dict_network_round_trips_and_saving_changes_no_global_state(tmp_path):
    """Bug caught: saving a config that the save-time check deserialized in place (Keras empties a Functional's)."""
    import random

    env = dict_env()
    model = compiled(keras_trpo.TRPO.for_env(env, policy_network=dict_network("p"), value_network=dict_network("v"),
                                             seed=0))
    observations, _ = env.reset(seed=5)
    state = random.getstate()
    model.save(str(tmp_path / "model.keras"))
    assert random.getstate() == state
    loaded = keras.models.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_array_equal(loaded.policy_outputs(observations).numpy(), model.policy_outputs(observations).numpy())


def test_an_unserializable_network_fails_at_save_and_leaves_no_file(tmp_path):
    """Bug caught: save() writing a .keras file whose network cannot be rebuilt at load time."""
    model = keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network=UnregisteredNet(), value_network=_conv())
    path = tmp_path / "model.keras"
    with pytest.raises(ValueError, match=r"'unregistered_net' \(UnregisteredNet\) cannot be saved.*register_keras_serializable"):
        model.save(str(path))
    assert not os.path.exists(path)


CALL_ERRORS = {
    "float pixels for a uint8 image": (lambda m: m.value(np.full((1, 7, 7, 3), 0.5)),
                                       r"has dtype float64; expected \[N, 7, 7, 3\] uint8"),
    "a dict for a Box": (lambda m: m({"image": np.zeros((1, 7, 7, 3), np.uint8)}), r"is a dict with keys \['image'\]"),
    "a wrong image size": (lambda m: m(np.zeros((1, 7, 6, 3), np.uint8)),
                           r"has shape \[1, 7, 6, 3\]; expected \[N, 7, 7, 3\]"),
}


@pytest.mark.parametrize("case", sorted(CALL_ERRORS))
def test_wrong_observations_are_refused_never_cast_or_reshaped(case):
    """Bug caught: float pixels truncated to uint8 (0.5 -> 0) by the cast to the space's dtype."""
    model = keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network="minigrid_cnn", value_network="minigrid_cnn")
    call, message = CALL_ERRORS[case]
    with pytest.raises(ValueError, match=message):
        call(model)


def test_an_env_with_other_discrete_observations_is_refused():
    """Bug caught: Discrete(16) states accepted by a Discrete(3) model (states >= 3 would one-hot to all zeros)."""
    model = keras_trpo.TRPO(spaces.Discrete(3), spaces.Discrete(4))
    env = gymnasium.make_vec("FrozenLake-v1", num_envs=1, vectorization_mode="sync")  # Discrete(16)
    with pytest.raises(ValueError, match=r"env observation space Discrete\(16\) does not match .*Discrete\(3\)"):
        keras_trpo.Rollouts(env, model, steps=8)


def test_dict_keys_that_are_not_signature_names_are_refused_when_the_model_is_built():
    """Bug caught: TF renaming 'agent-pos' to 'agent_pos' silently, so clients' input names would not match.

    Refused by TRPO(...) itself, not first by model.export after training (tests/test_error_messages.py).
    """
    space = spaces.Dict({"agent-pos": spaces.Box(-1, 1, (2,)), "goal": spaces.Box(-1, 1, (2,))})
    with pytest.raises(ValueError, match=r"observation keys \['agent-pos'\] are not valid signature input names"):
        keras_trpo.TRPO(space, spaces.Discrete(2))


def test_named_networks_are_seeded_by_the_model_seed():
    """Bug caught: named networks drawn from the global RNG (two seed=0 models would differ)."""
    a, b = (keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network="minigrid_cnn", value_network="minigrid_cnn",
                            seed=0) for _ in range(2))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    c = keras_trpo.TRPO(IMAGE, spaces.Discrete(3), policy_network="minigrid_cnn", value_network="minigrid_cnn", seed=1)
    assert not np.array_equal(a.policy_layers[0].weights[0].numpy(), c.policy_layers[0].weights[0].numpy())


@pytest.mark.parametrize("module", ["keras_trpo.networks", "keras_trpo.observations"])
def test_docstring_examples_run(module):
    """Bug caught: a docstring example that no longer runs (e.g. a builder's output width changed)."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_two_image_encoders_of_one_named_network_start_from_different_kernels():
    """Bug caught: every encoder of a ``Combined`` seeded with the model's seed (``sub_seed = seed``), so two
    image entries of one Dict start with identical kernels and learn the same features from the start."""
    space = spaces.Dict({"left": IMAGE, "right": IMAGE})
    model = keras_trpo.TRPO(space, spaces.Discrete(3), policy_network="minigrid_cnn", value_network="minigrid_cnn",
                            seed=0)
    for network in (model.policy_layers[0], model.value_layers[0]):
        assert isinstance(network, keras_trpo.networks.Combined) and sorted(network.encoders) == ["left", "right"]
        left, right = (network.encoders[key].weights for key in ("left", "right"))
        kernels = [(a, b) for a, b in zip(left, right) if len(a.shape) > 1]
        assert len(kernels) == 4  # three convolutions and the Dense
        same = [a.path for a, b in kernels if np.array_equal(a.numpy(), b.numpy())]
        assert not same, f"{network.name}: the encoders' kernels {same} are identical to the other encoder's"
