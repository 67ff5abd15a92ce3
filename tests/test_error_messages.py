"""Errors a Keras user hits with their own networks, observations and exports: one true line each.

Issue 24, item 4. Each row of ``CASES`` is a mistake that used to surface as a TensorFlow or
Keras internal (``AttributeError: 'dict' object has no attribute 'shape'``, ``Cannot convert a
symbolic tf.Tensor``, ``expected a float tensor but is a double tensor``), blamed the wrong
object (``Sequential`` for an unregistered layer inside it), or refused something valid (a frozen
encoder shared by both networks). Each row asserts the exception type, the key words of the
message (the argument, what was received, the fix) and that the message is one line. The tests
after the table check that what is now allowed works: a frozen shared encoder trains and
round-trips, and a float64 ``Box`` exports with a float64 signature.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras  # a dependency of keras_trpo (tensorflow-probability imports it): Keras 2
import gymnasium
import keras
from gymnasium import spaces

import keras_trpo
from keras_trpo import networks

from helpers import cartpole_env, tiny_trpo

CARTPOLE = spaces.Box(-1.0, 1.0, (4,), np.float32)
TWO = spaces.Discrete(2)


def trpo(policy_network=None, value_network=None, observation_space=CARTPOLE, **kwargs):
    return keras_trpo.TRPO(observation_space, TWO, policy_network=policy_network, value_network=value_network,
                           **kwargs)


class DictFeatures(keras.layers.Layer):
    def call(self, x):
        return {"a": x, "b": x}


class TupleFeatures(keras.layers.Layer):
    def call(self, x):
        return x, x


class MyDenseU(keras.layers.Layer):
    """A custom layer without registration (``@keras.saving.register_keras_serializable``)."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units))

    def call(self, x):
        return x @ self.kernel

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="test_error_messages")
class NetR(keras.Model):
    """A registered network; the load case unregisters it, as a process that did not import this module."""

    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, activation="tanh")

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def save_unregistered_layer(tmp_path):
    trpo(keras.Sequential([MyDenseU(8)])).save(str(tmp_path / "m.keras"))


def load_without_the_registering_module(tmp_path):
    path = str(tmp_path / "m.keras")
    trpo(NetR(), NetR()).save(path)
    # keras.saving.get_custom_objects() is Keras' live global registry: removing the entry is what a
    # fresh process that never imported this module sees.
    registry = keras.saving.get_custom_objects()
    entry = registry.pop("test_error_messages>NetR")
    try:
        keras.models.load_model(path)
    finally:
        registry["test_error_messages>NetR"] = entry


def shared_encoder(trainable):
    encoder = keras.Sequential([keras.layers.Dense(16, activation="tanh")], name="encoder")
    encoder.build((None, 4))
    encoder.trainable = trainable
    return (keras.Sequential([encoder, keras.layers.Dense(8, activation="tanh")]),
            keras.Sequential([encoder, keras.layers.Dense(8, activation="tanh")]), encoder)


def unfreeze_then_compile(tmp_path):
    policy, value, encoder = shared_encoder(trainable=False)
    model = trpo(policy, value)
    encoder.trainable = True
    model.compile(optimizer="adam")


def predict_after_relaxed_traces(tmp_path):
    model = trpo()
    for n in (1, 2, 3):  # Keras' predict function relaxes its trace to free dimensions (reduce_retracing)
        model.predict(np.zeros((n, 4), np.float32), verbose=0)
    model.predict(np.zeros((3, 5), np.float32), verbose=0)


def compiled():
    return tiny_trpo(cartpole_env())


def fit_with(**kwargs):
    model = compiled()
    model.fit(keras_trpo.Rollouts(cartpole_env(), model, steps=8), epochs=1, verbose=0, **kwargs)


DICT_SPACE = spaces.Dict({"position": CARTPOLE, "flag": spaces.Discrete(3)})

#: name -> (call(tmp_path), exception type, regex of the key words; ``^`` where the start matters).
CASES = {
    # 1. a network that returns a dict or a tuple
    "a network returning a dict": (
        lambda tmp: trpo(DictFeatures()), ValueError,
        r"^policy_network must return one tensor \[N, F\]; .* it returned a dict with keys \['a', 'b'\]\. Return one"),
    "a network returning a tuple": (
        lambda tmp: trpo(None, TupleFeatures()), ValueError,
        r"^value_network must return one tensor \[N, F\]; .* it returned a tuple of 2\. Return one tensor"),
    # 2. an unregistered layer inside a Sequential, at save
    "an unregistered layer in a Sequential": (
        save_unregistered_layer, ValueError,
        r"^policy_network 'sequential\w*' \(Sequential\) cannot be saved: its layer class MyDenseU is not registered"
        r".*decorate MyDenseU with @keras\.saving\.register_keras_serializable\(\) and give it a get_config\(\)"),
    # 3. load_model without the module that registers the network's class
    "load_model without the registering module": (
        load_without_the_registering_module, ValueError,
        r"^policy_network: class NetR \(registered as 'test_error_messages>NetR' by module [\w.]*test_error_messages"
        r"\) is not registered in this process.*import the module that registers it before loading "
        r"\(import [\w.]*test_error_messages; with the CLI: --import [\w.]*test_error_messages\)"),
    # 4. trainable weights shared by the networks (frozen ones are allowed: see the tests below)
    "a trainable shared encoder": (
        lambda tmp: trpo(*shared_encoder(trainable=True)[:2]), ValueError,
        r"must not share trainable weights, and both hold 'encoder/dense\w*/kernel'.*freeze the shared layer "
        r"\(layer\.trainable = False\)"),
    "a shared encoder unfrozen after the model was built": (
        unfreeze_then_compile, ValueError,
        r"must not share trainable weights, and both hold 'encoder/dense\w*/kernel'"),
    # 5. Keras 2 networks
    "a tf_keras Sequential": (
        lambda tmp: trpo(tf_keras.Sequential([tf_keras.layers.Dense(4)])), TypeError,
        r"^policy_network is a Keras 2 \(tf_keras\) network \(tf_keras\.[\w.]*Sequential\); keras_trpo needs Keras 3: "
        r"build the network with `import keras` \(keras>=3\)"),
    "a tf_keras layer subclass": (
        lambda tmp: trpo(None, type("Legacy", (tf_keras.layers.Layer,), {})()), TypeError,
        r"^value_network is a Keras 2 \(tf_keras\) network \(.*Legacy\); keras_trpo needs Keras 3"),
    # 6. predict and call on observations that are not one batch [N, 4]
    "predict on a list of observations": (
        lambda tmp: trpo().predict([np.zeros(4, np.float32)] * 3, verbose=0), ValueError,
        r"^model\.predict x is a list of 3 items \(shape \[3, 4\]\); expected one batch \[N, 4\] float32 .*"
        r"pass np\.stack\(x\)"),
    "predict on one observation as a list": (
        lambda tmp: trpo().predict([0.1, 0.2, 0.3, 0.4], verbose=0), ValueError,
        r"^model\.predict x is a list of 4 items \(shape \[4\]\); expected one batch \[N, 4\].*"
        r"np\.asarray\(x\)\[None\]"),
    "predict on one observation without the batch axis": (
        lambda tmp: trpo().predict(np.zeros(4, np.float32), verbose=0), ValueError,
        r"^model\.predict x has shape \[4\]; expected \[N, 4\] float32 .*add the batch axis .*\(x\[None\]\)"),
    "predict on a scalar": (
        lambda tmp: trpo().predict(np.float32(1.0), verbose=0), ValueError,
        r"^model\.predict x has shape \[\]; expected \[N, 4\] float32"),
    "predict on an unbatched tf.data.Dataset": (
        lambda tmp: trpo().predict(tf.data.Dataset.from_tensor_slices(np.zeros((3, 4), np.float32)), verbose=0),
        ValueError, r"^model\.predict x \(a tf\.data\.Dataset\) element has shape \[4\]; expected \[N, 4\].*"
        r"batch the dataset \(dataset\.batch\(32\)\)"),
    "predict on a wrong width after relaxed traces": (
        predict_after_relaxed_traces, ValueError, r"^model\.predict x has shape \[3, 5\]; expected \[N, 4\] float32"),
    "predict on one Dict observation": (
        lambda tmp: trpo(observation_space=DICT_SPACE).predict(
            {"position": np.zeros(4, np.float32), "flag": np.int64(1)}, verbose=0), ValueError,
        r"^model\.predict x\['flag'\] has shape \[\]; expected \{'flag': \[N\] int64, 'position': \[N, 4\] float32\}"
        r".*add the batch axis for one observation \(\{k: v\[None\] for k, v in x\.items\(\)\}\)"),
    "predict_on_batch on a list": (
        lambda tmp: trpo().predict_on_batch([np.zeros(4, np.float32)] * 2), ValueError,
        r"^model\.predict_on_batch x is a list of 2 items .*pass np\.stack\(x\)"),
    "model(obs) without the batch axis": (
        lambda tmp: trpo()(np.zeros(4, np.float32)), ValueError,
        r"^observations has shape \[4\]; expected \[N, 4\] float32 .*add the batch axis .*\(x\[None\]\)"),
    # 8. Dict keys that cannot name a signature input: refused when the model is built
    "a Dict key 'actions'": (
        lambda tmp: trpo(observation_space=spaces.Dict({"actions": CARTPOLE})), ValueError,
        r"^observation_space: observation keys \['actions'\] clash, ignoring case \(TensorFlow lowercases signature "
        r"input names\), with each other or the inputs 'seed' and 'actions' of model\.export; rename them with a "
        r"gymnasium\.ObservationWrapper before building the model"),
    "a Dict key 'seed' (for_env)": (
        lambda tmp: keras_trpo.TRPO.for_env(DictEnv()), ValueError,
        r"^observation_space: observation keys \['seed'\] clash, ignoring case"),
    "a Dict key 'Seed' (TensorFlow lowercases it)": (
        lambda tmp: trpo(observation_space=spaces.Dict({"Seed": CARTPOLE, "pos": CARTPOLE})), ValueError,
        r"^observation_space: observation keys \['Seed'\] clash, ignoring case"),
    "Dict keys 'img' and 'IMG'": (
        lambda tmp: trpo(observation_space=spaces.Dict({"img": CARTPOLE, "IMG": CARTPOLE})), ValueError,
        r"^observation_space: observation keys \['IMG', 'img'\] clash, ignoring case"),
    "a non-ASCII Dict key": (
        lambda tmp: trpo(observation_space=spaces.Dict({"é": CARTPOLE})), ValueError,
        r"^observation_space: observation keys \['é'\] are not valid signature input names for model\.export "
        r"\(an ASCII identifier not starting with '_'\); rename them"),
    # Others in the same files
    "a network class instead of an instance": (
        lambda tmp: trpo(keras.Sequential), TypeError,
        r"^policy_network must be a Keras layer or model.*; got the class Sequential: pass an instance, "
        r"policy_network=Sequential\(\.\.\.\)"),
    "a builder function not called": (
        lambda tmp: trpo(None, networks.mlp), TypeError,
        r"^value_network must be a Keras layer .*; got the function mlp: call it, "
        r"value_network=keras_trpo\.networks\.mlp\(\.\.\.\), or pass its name 'mlp'"),
    "a float16 layer in a network": (  # its float32 last layer returns float32: fit failed in a concat of both
        lambda tmp: trpo(keras.Sequential([keras.layers.Dense(4, dtype="float16"), keras.layers.Dense(4)])),
        ValueError,
        r"^policy_network computes in lower precision: its weight '.*kernel' is float16; .*need float32.*"
        r"Build it with dtype='float32'"),
    # From the new-user trial of issue 24
    "hidden_units as one int": (
        lambda tmp: trpo(hidden_units=64), ValueError,
        r"^hidden_units must be a list of layer widths such as \(64, 64\); got 64: use \(64,\) for one hidden layer"),
    "fit on rollouts of another model": (
        lambda tmp: compiled().fit(keras_trpo.Rollouts(cartpole_env(), compiled(), steps=8), epochs=1, verbose=0),
        ValueError, r"^TRPO\.fit got Rollouts that act with another model .*build them for this model, "
        r"Rollouts\(env, model\)"),
    "fit with class_weight": (
        lambda tmp: fit_with(class_weight={0: 1.0, 1: 2.0}), ValueError,
        r"^TRPO\.fit does not take class_weight: .*Rollouts\(steps=\.\.\.\).*TRPO\(value_batch_size=\.\.\.\)"),
    "fit with batch_size": (
        lambda tmp: fit_with(batch_size=64), ValueError, r"^TRPO\.fit does not take batch_size: "),
    "a mixed_float16 layer before a float32 one": (  # float32 weights and output: only its policy tells
        lambda tmp: trpo(keras.Sequential([keras.layers.Dense(8, dtype="mixed_float16"), keras.layers.Dense(4)])),
        ValueError, r"^policy_network computes in lower precision: its layer 'dense.*' computes in float16; "),
    "a mixed_float16 network": (  # trained before, its KL and Fisher-vector products through float16 logits
        lambda tmp: trpo(keras.Sequential([keras.layers.Dense(4, dtype="mixed_float16")])), ValueError,
        r"^policy_network computes in lower precision: its layer 'dense.*' computes in float16; "
        r".*Build it with dtype='float32'"),
}


class DictEnv(gymnasium.Env):
    observation_space = spaces.Dict({"seed": CARTPOLE})
    action_space = TWO


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_mistake_gets_one_line_naming_the_argument_and_the_fix(case, tmp_path):
    """Bug caught (per row): the check or its wording removed, e.g. ``check_input`` no longer called by predict."""
    call, error, words = CASES[case]
    with pytest.raises(error) as raised:
        call(tmp_path)
    message = str(raised.value)
    assert "\n" not in message, message
    assert raised.type is error, f"{raised.type.__name__}: {message}"
    assert re.search(words, message), message


def test_a_frozen_encoder_shared_by_both_networks_trains_and_stays_bit_for_bit(tmp_path):
    """Bug caught: frozen shared weights refused, or moved by the critic's optimizer or the trust-region step."""
    keras.utils.set_random_seed(0)
    policy, value, encoder = shared_encoder(trainable=False)
    env = cartpole_env()
    model = keras_trpo.TRPO.for_env(env, policy_network=policy, value_network=value, seed=0, value_epochs=2)
    frozen = [w.numpy().copy() for w in encoder.weights]
    ids = {name: {id(v) for v in getattr(model, name)} for name in ("policy_variables", "value_variables")}
    assert not ids["policy_variables"] & ids["value_variables"]
    assert not {id(v) for v in encoder.weights} & (ids["policy_variables"] | ids["value_variables"])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    moved = [w.numpy().copy() for w in model.policy_variables + model.value_variables]
    history = model.fit(keras_trpo.Rollouts(env, model, steps=64, seed=0), epochs=2, verbose=0)
    assert model.policy_version == 2
    assert sum(history.history["step_accepted"]) >= 1  # the update ran, so the frozen weights had a chance to move
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(moved, model.policy_variables + model.value_variables))
    for before, weight in zip(frozen, encoder.weights):
        np.testing.assert_array_equal(weight.numpy(), before)

    # A .keras file keeps it one layer (Keras would otherwise rebuild it twice, the second copy without weights).
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    shared = loaded.policy_layers[0].layers[0]
    assert shared is loaded.value_layers[0].layers[0]
    assert not {id(v) for v in shared.weights} & {id(v) for v in loaded.policy_variables + loaded.value_variables}
    observations = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.policy_outputs(observations).numpy(),
                                  model.policy_outputs(observations).numpy())
    np.testing.assert_array_equal(loaded.value(observations).numpy(), model.value(observations).numpy())


def test_a_float64_box_exports_a_float64_signature_that_takes_raw_env_observations(tmp_path):
    """Bug caught: the signature fixed at float32, so float64 env observations fail with 'double tensor'."""
    model = keras_trpo.TRPO(spaces.Box(-1.0, 1.0, (3,), np.float64), spaces.Box(-1.0, 1.0, (2,), np.float32),
                            normalize_observations=True, seed=0)
    model.normalizer.update(tf.constant(np.random.default_rng(1).normal(0.3, 2.0, (64, 3)), tf.float32))
    observations = np.random.default_rng(0).uniform(-1.0, 1.0, (6, 3))  # float64, as the env gives them
    expected = model.predict(observations, verbose=0)
    path = model.export(str(tmp_path / "policy"))

    serving = tf.saved_model.load(path).signatures["serving_default"]
    assert serving.structured_input_signature[1]["observations"].dtype == tf.float64
    np.testing.assert_array_equal(serving(observations=tf.constant(observations))["actions"].numpy(), expected)

    # What TF Serving does: the TF1 loader, fed by the SignatureDef's tensor names.
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], path).signature_def["serving_default"]
        assert tf.dtypes.as_dtype(signature.inputs["observations"].dtype) == tf.float64
        actions = session.run(signature.outputs["actions"].name, {signature.inputs["observations"].name: observations})
    np.testing.assert_array_equal(actions, expected)
