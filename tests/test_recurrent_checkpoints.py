"""A recurrent model's checkpoints and the CLI's SavedModel evaluation (issue 29).

Bugs caught (each checked once by mutating the code):
- resume: the rollouts' carried state left out of ``get_state`` (``"carry": None``): the resumed run's first
  batch starts from zeroed states and diverges;
- ``.keras``: ``Recurrent.get_config`` without its ``after`` layer (the loaded critic lacks it; its weights do
  not load);
- the CLI's ``ServingPolicy`` of a recurrent SavedModel feeding ``episode_start`` as all zeros (its returns differ
  from the model's).
"""

from __future__ import annotations

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo
from keras_trpo import networks, wrappers  # noqa: F401  (registers the NoVel envs)
from keras_trpo.cli.policies import ServingPolicy, load_serving
from helpers import Crash, fit_resumable

EPOCHS, CRASH_AT = 5, 3


def build(seed=0):
    keras.utils.set_random_seed(seed)
    env = gymnasium.make_vec("keras_trpo/CartPoleNoVel-v1", num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, policy_network=networks.recurrent(networks.mlp((16,), seed=0), units=8,
                                                                          seed=0),
                                    value_network=networks.recurrent(None, units=8, cell="gru", seed=1,
                                                                     after=keras.layers.Dense(4, activation="tanh")),
                                    normalize_observations=True, sequence_length=8, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return env, model


def run(backup=None, crash=None):
    env, model = build()
    rollouts = keras_trpo.Rollouts(env, model, steps=2 * 36, seed=0)  # 36 = 4 sequences of 8 + 4 steps padded
    return model, rollouts, fit_resumable(model, rollouts, EPOCHS, backup, crash)


def test_a_resumed_recurrent_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    expected, expected_rollouts, expected_history = run()
    backup = str(tmp_path / "backup")
    with pytest.raises(Crash):
        run(backup, crash=CRASH_AT)
    model, rollouts, history = run(backup)
    assert len(history["kl"]) == EPOCHS - CRASH_AT
    for key in ("kl", "episode_return", "value_loss"):
        np.testing.assert_array_equal(history[key], expected_history[key][CRASH_AT:], err_msg=key)
    for got, want in zip(model.weights, expected.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
    for name, value in expected_rollouts.carry.state.items():  # the carried state too
        np.testing.assert_array_equal(rollouts.carry.state[name], value, err_msg=name)


def test_a_keras_file_round_trips_a_recurrent_model(tmp_path):
    env, model = build()
    model.fit(keras_trpo.Rollouts(env, model, steps=2 * 16, seed=0), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.recurrent_towers == (True, True) and loaded.state_sizes() == model.state_sizes()
    obs, _ = env.reset(seed=4)
    state, starts = model.initial_state(2), np.array([True, False])
    for _ in range(5):
        want, state_want = model(obs, state=state, episode_starts=starts)
        got, state_got = loaded(obs, state=state, episode_starts=starts)
        np.testing.assert_array_equal(got.numpy(), want.numpy())
        for name in state_want:
            np.testing.assert_array_equal(state_got[name].numpy(), state_want[name].numpy())
        state, starts = state_want, np.array([False, False])
        obs, *_ = env.step(want.numpy())


def test_the_clis_savedmodel_policy_carries_the_state_as_evaluate_does(tmp_path):
    env, model = build()
    model.fit(keras_trpo.Rollouts(env, model, steps=2 * 32, seed=0), epochs=3, verbose=0)
    loaded, serving, inputs, outputs = load_serving(model.export(str(tmp_path / "saved")))
    eval_env = gymnasium.make_vec("keras_trpo/CartPoleNoVel-v1", num_envs=4, vectorization_mode="sync")
    policy = ServingPolicy(serving, inputs, outputs["actions"], eval_env.single_observation_space,
                           eval_env.single_action_space, "keras_trpo/CartPoleNoVel-v1",
                           sampler=loaded.signatures["sample"], initial=loaded.signatures["get_initial_state"])
    assert policy.is_recurrent
    # One call from a non-zero state with two episode starts: the actions and next state are the model's.
    obs, _ = eval_env.reset(seed=2)
    rng = np.random.default_rng(0)
    state = {k: rng.normal(0, 1, (4, n)).astype(np.float32) for k, n in model.state_sizes().items()}
    starts = np.array([True, False, True, False])
    want_actions, want_state = model(obs, state=state, episode_starts=starts)
    got_actions, got_state = policy(obs, state=state, episode_starts=starts)
    np.testing.assert_array_equal(got_actions.numpy(), want_actions.numpy())
    for name in want_state:
        np.testing.assert_allclose(got_state[name].numpy(), want_state[name].numpy(), atol=1e-6)
    want = keras_trpo.evaluate(model, eval_env, episodes=8, seed=11)
    got = keras_trpo.evaluate(policy, eval_env, episodes=8, seed=11)
    assert got == want and len(set(want)) > 1
    sampled = keras_trpo.evaluate(policy, eval_env, episodes=4, seed=11, deterministic=False)
    assert sampled == keras_trpo.evaluate(policy, eval_env, episodes=4, seed=11, deterministic=False)
    # keras_trpo.evaluate of the loaded SavedModel itself, and of its signatures, carries the state the same way.
    assert keras_trpo.evaluate(loaded, eval_env, episodes=8, seed=11) == want
    assert keras_trpo.evaluate(loaded.signatures["serving_default"], eval_env, episodes=8, seed=11) == want
    assert len(keras_trpo.evaluate(loaded, eval_env, episodes=4, seed=11, deterministic=False)) == 4
    assert tf.saved_model.contains_saved_model(str(tmp_path / "saved" / "1"))
