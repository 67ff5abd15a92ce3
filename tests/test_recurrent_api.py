"""The recurrent model's API (issue 29): what a user passes, what they get, and one-line errors.

Bugs caught (each checked once by mutating the code): ``as_recurrent`` rebuilding the user's cell from its
config instead of using it (the split network loses its trained weights); ``check_call_state`` not checking
the state's width; ``recurrent=False`` accepting an LSTM network.
"""

from __future__ import annotations

import gymnasium
import keras
import numpy as np
import pytest

import keras_trpo
from keras_trpo import networks, sequences, wrappers  # noqa: F401  (registers the NoVel envs)


@pytest.fixture(scope="module")
def env():
    return gymnasium.make_vec("keras_trpo/CartPoleNoVel-v1", num_envs=3, vectorization_mode="sync")


def test_recurrent_true_gives_each_tower_an_mlp_then_an_lstm_with_separate_states(env):
    model = keras_trpo.TRPO.for_env(env, recurrent=True, hidden_units=[8], value_hidden_units=[4], seed=0)
    assert model.recurrent_towers == (True, True) and model.is_recurrent
    assert model.state_sizes() == {"policy_h": 64, "policy_c": 64, "value_h": 64, "value_c": 64}
    policy, value = model.policy_layers[0], model.value_layers[0]
    assert policy.features.layers[-1].units == 8 and value.features.layers[-1].units == 4
    assert not {id(w) for w in policy.weights} & {id(w) for w in value.weights}


def test_a_sequential_with_an_lstm_is_detected_and_stepped_with_its_own_weights(env):
    network = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.LSTM(5),
                                keras.layers.Dense(6)])
    network.build((None, 4, 2))
    kernel = network.layers[1].cell.kernel.numpy()
    model = keras_trpo.TRPO.for_env(env, policy_network=network, seed=0)
    assert model.recurrent_towers == (True, False)  # detected; the critic stays the default MLP
    np.testing.assert_array_equal(model.policy_layers[0].cell.kernel.numpy(), kernel)
    # A one-step call from zeros equals the Keras layer on a length-1 sequence.
    obs = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)
    features = model.policy_layers[0](obs).numpy()
    np.testing.assert_allclose(features, network(obs[:, None, :]).numpy(), atol=1e-6)


def test_a_gru_tower_has_one_state_entry(env):
    model = keras_trpo.TRPO.for_env(env, policy_network=networks.recurrent(None, units=7, cell="gru"), seed=0)
    assert model.state_sizes() == {"policy_h": 7}
    actions, state = model(env.reset(seed=0)[0])
    assert actions.shape == (3,) and sorted(state) == ["policy_h"]


@pytest.mark.parametrize("call, message", [
    (lambda m, o: m(o, state={"policy_h": np.zeros((3, 64), np.float32)}), "state must be a dict with keys"),
    (lambda m, o: m(o, state={k: np.zeros((3, 32), np.float32) for k in m.state_sizes()}),
     r"state\['policy_h'\] has shape \[3, 32\]; expected \[3, 64\]"),
    (lambda m, o: m(o, state={k: np.zeros((2, 64), np.float32) for k in m.state_sizes()}),
     r"has shape \[2, 64\]; expected \[3, 64\]"),
    (lambda m, o: m(o, episode_starts=np.zeros(2, bool)), r"episode_starts has shape \[2\]; expected \[3\]"),
])
def test_a_wrong_state_is_one_line_naming_it(env, call, message):
    model = keras_trpo.TRPO.for_env(env, recurrent=True, seed=0)
    with pytest.raises(ValueError, match=message):
        call(model, env.reset(seed=0)[0])


def test_models_without_memory_refuse_a_state_and_recurrent_false_refuses_an_lstm(env):
    model = keras_trpo.TRPO.for_env(env, seed=0)
    with pytest.raises(ValueError, match="state= and episode_starts= are for a recurrent model"):
        model(env.reset(seed=0)[0], state={})
    with pytest.raises(ValueError, match="policy_network has recurrent layers but recurrent=False"):
        keras_trpo.TRPO.for_env(env, policy_network=networks.recurrent(None, units=4), recurrent=False)
    two = keras.Sequential([keras.layers.LSTM(4, return_sequences=True), keras.layers.LSTM(4)])
    with pytest.raises(ValueError, match="policy_network has recurrent layers keras_trpo cannot step"):
        keras_trpo.TRPO.for_env(env, policy_network=two)


def test_a_batch_of_partial_sequences_is_refused_before_any_compute(env):
    model = keras_trpo.TRPO.for_env(env, recurrent=True, sequence_length=8, seed=0)
    model.compile(optimizer="adam")
    batch = keras_trpo.Rollouts(env, model, steps=3 * 16, seed=0)[0]
    cut = {k: v[:-3] for k, v in batch.items()}
    before = [w.numpy() for w in model.weights]
    with pytest.raises(ValueError, match="whole sequences of sequence_length=8 rows; got 45 rows"):
        model.train_step(cut)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    assert batch[sequences.MASK].all()  # 16 steps per sub-env: two whole sequences, no padding
