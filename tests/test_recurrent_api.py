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


def test_recurrent_true_on_a_dict_space_steps_the_flattened_entries():
    """Catches: the default recurrent towers fed the structured dict (the MLP's Flatten fails on it)."""
    space = gymnasium.spaces.Dict({"position": gymnasium.spaces.Box(-1, 1, (3,)), "room": gymnasium.spaces.Discrete(4)})
    model = keras_trpo.TRPO(space, gymnasium.spaces.Discrete(2), recurrent=True, hidden_units=[8],
                            value_hidden_units=[8], sequence_length=2, seed=0)
    model.compile(optimizer="adam")
    space.seed(0)
    obs = {key: np.stack([space.sample()[key] for _ in range(4)]) for key in space.spaces}
    actions, state = model(obs, episode_starts=np.array([1, 0, 1, 0], bool))
    assert actions.shape == (4,) and state["policy_h"].shape == (4, 64)
    batch = {"observations": obs, "actions": np.array([0, 1, 1, 0]), "advantages": np.array([1.0, -1, 0.5, 0]),
             "returns": np.zeros(4), sequences.STARTS: np.array([1, 0, 1, 0], bool),
             sequences.MASK: np.ones(4, bool), **{k: np.zeros((4, n), np.float32) for k, n in model.state_sizes().items()}}
    assert float(model.train_step(batch)["step_accepted"]) in (0.0, 1.0)


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


def synthetic_batch(model, rows, rng):
    """``rows`` random steps in whole sequences: observations, actions of the model's space, states, flags."""
    space = model.action_space
    space.seed(0)
    return {"observations": rng.normal(size=(rows, *model.observation_space.shape)).astype(np.float32),
            "actions": np.stack([space.sample() for _ in range(rows)]),
            "advantages": rng.normal(size=rows).astype(np.float32), "returns": rng.normal(size=rows).astype(np.float32),
            sequences.STARTS: rng.random(rows) < 0.2, sequences.MASK: np.arange(rows) % 4 != 3,
            **{k: rng.normal(0, 0.3, (rows, n)).astype(np.float32) for k, n in model.state_sizes().items()}}


@pytest.mark.parametrize("options", [
    {"fvp_fraction": 0.5},  # whole sequences subsampled; the unmasked model's None mask passes through
    {"fisher_product": "gauss_newton"},  # a per-row scale over [N, 2, 2] parameters
    {"fisher_product": "gauss_newton", "fvp_fraction": 0.5},
])
def test_every_fisher_product_option_updates_a_recurrent_model_with_matrix_actions(options):
    """Catches: ``tf.gather`` of the None mask of an unmasked recurrent model's subsample, and a ``[N, 1]`` scale
    that does not broadcast over ``[N, 2, 2]`` Box parameters (both crashed)."""
    model = keras_trpo.TRPO(gymnasium.spaces.Box(-1, 1, (3,)), gymnasium.spaces.Box(-1, 1, (2, 2)), recurrent=True,
                            hidden_units=[8], value_hidden_units=[8], sequence_length=4, seed=0, **options)
    model.compile(optimizer="adam")
    logs = model.train_step(synthetic_batch(model, 32, np.random.default_rng(0)))
    assert np.isfinite(float(logs["cg_residual"])) and float(logs["kl"]) <= model.max_kl * (1 + 1e-5)


def test_a_bidirectional_or_wrapped_rnn_is_refused_in_one_line(env):
    wrapped = keras.Sequential([keras.layers.Bidirectional(keras.layers.LSTM(4))])
    with pytest.raises(ValueError, match="policy_network has recurrent layers keras_trpo cannot step"):
        keras_trpo.TRPO.for_env(env, policy_network=wrapped)
