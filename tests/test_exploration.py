"""State-dependent exploration, ``TRPO(use_sde=True)`` (:mod:`keras_trpo.exploration`).

The references are independent: the default MLP's forward pass and the gSDE formulas
(Raffin et al. 2021) written out in float64 numpy, and the collection stream replayed with
``numpy.random.default_rng(seed)``. Bugs caught (each checked once by mutating the code):

- σ(s) from ``exp(log_std)`` instead of ``exp(2·log_std)`` (std and variance mixed up), or without
  the 1e-6 variance floor: ``test_the_policy_std_is_the_state_dependent_formula``;
- collection redrawing the matrices every step, never within a batch, or one matrix for every
  sub-env: ``test_collection_acts_with_features_times_matrices_held_for_sde_sample_freq_steps``;
- matrices drawn with ``exp(2·log_std)``: ``test_the_matrices_noise_has_the_policys_distribution``;
- the features' gradient let into σ (``tf.stop_gradient`` dropped):
  ``test_the_features_enter_the_variance_without_their_gradient``;
- matrices carried from one batch to the next (drawn only when there are none yet): the resumed
  run's first batch draws others, ``test_a_resumed_sde_run_ends_bit_identical_to_an_uninterrupted_one``.
"""

from __future__ import annotations

import json

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo import exploration, wrappers  # noqa: F401  (registers the NoVel envs)
from keras_trpo.acting import PolicySnapshot
from helpers import Crash, fit_resumable

EPS32 = float(np.finfo(np.float32).eps)
OBSERVATIONS = spaces.Box(-2.0, 2.0, (3,), np.float32)
ACTIONS = spaces.Box(-1.0, 1.0, (2,), np.float32)
HIDDEN = 5


def sde_model(**kwargs) -> keras_trpo.TRPO:
    """A one-hidden-layer tanh MLP with random O(1) output weights and log_std entries."""
    model = keras_trpo.TRPO(OBSERVATIONS, ACTIONS, hidden_units=(HIDDEN,), value_hidden_units=(4,), use_sde=True,
                            seed=0, **kwargs)
    rng = np.random.default_rng(1)
    for variable in (*model.policy_output.trainable_weights, model.log_std):
        variable.assign(rng.normal(scale=0.5, size=tuple(variable.shape)).astype(np.float32))
    return model


def numpy_policy(model, observations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features φ, mean, σ)`` in float64 from the weights: ``φ = tanh(x W + b)``, ``σ² = φ² exp(2 L) + 1e-6``."""
    (hidden,), output = model.policy_layers, model.policy_output
    as64 = lambda variable: np.asarray(variable, np.float64)  # noqa: E731
    features = np.tanh(np.asarray(observations, np.float64) @ as64(hidden.kernel) + as64(hidden.bias))
    mean = features @ as64(output.kernel) + as64(output.bias)
    std = np.sqrt(features**2 @ np.exp(2.0 * as64(model.log_std)) + 1e-6)
    return features, mean, std


def test_the_policy_std_is_the_state_dependent_formula():
    model = sde_model()
    assert tuple(model.log_std.shape) == (HIDDEN, 2)
    rng = np.random.default_rng(2)
    # Row 0 is all zeros: φ = tanh(0 + b) = 0 (the bias starts at zero), where σ is the floor's √1e-6 alone.
    observations = np.concatenate([np.zeros((1, 3)), rng.uniform(-2, 2, (7, 3))]).astype(np.float32)
    features, mean, std = numpy_policy(model, observations)
    assert np.all(features[0] == 0.0) and np.all(np.abs(features[1:]) > 1e-3)
    # float32 forward pass: each σ² sums HIDDEN products of values computed in a few float32 operations
    # (tanh, exp, multiply, add), each within 2 ulps: (HIDDEN + 8)·ε relative, ~1e-6, is a bound, not a fit.
    bound = (HIDDEN + 8) * EPS32
    for params in (model.distribution_params(observations), PolicySnapshot(model).distribution_params(observations)):
        np.testing.assert_allclose(np.exp(np.asarray(params["log_std"], np.float64)), std, rtol=bound)
        np.testing.assert_allclose(np.asarray(params["mean"], np.float64), mean, rtol=bound,
                                   atol=bound * np.abs(mean).max())
    assert np.exp(float(model.distribution_params(observations[:1])["log_std"][0, 0])) == pytest.approx(1e-3, rel=1e-5)


def test_collection_acts_with_features_times_matrices_held_for_sde_sample_freq_steps():
    env = gymnasium.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, hidden_units=(HIDDEN,), value_hidden_units=(4,), use_sde=True,
                                    sde_sample_freq=4, seed=0, log_std_init=-0.5)
    horizon = 11  # matrices drawn before steps 0, 4 and 8
    batch = keras_trpo.Rollouts(env, model, steps=2 * horizon, seed=7)[0]
    observations = batch["observations"].reshape(horizon, 2, 3)  # time-major rows
    actions = batch["actions"].reshape(horizon, 2, 1).astype(np.float64)
    rng, log_std = np.random.default_rng(7), np.asarray(model.log_std, np.float64)
    for t in range(horizon):
        if t % 4 == 0:  # the collection stream draws [num_envs, L, d] standard normals, scaled by exp(log_std)
            matrices = rng.standard_normal((2, HIDDEN, 1)).astype(np.float32) * np.exp(log_std)
        features, mean, _ = numpy_policy(model, observations[t])
        expected = mean + np.einsum("nl,nld->nd", features, matrices)
        # A sum of HIDDEN + 1 float32 products of O(1) values: (HIDDEN + 8)·ε of the absolute sum.
        scale = np.abs(mean) + np.einsum("nl,nld->nd", np.abs(features), np.abs(matrices))
        np.testing.assert_array_less(np.abs(actions[t] - expected), (HIDDEN + 8) * EPS32 * scale, err_msg=f"step {t}")


def test_the_matrices_noise_has_the_policys_distribution():
    """Over the draws of E, ``φ(s)·E`` is ``Normal(0, σ(s))``: the standardized noise has mean 0 and variance 1."""
    model = sde_model()
    snapshot, draws = PolicySnapshot(model), 20_000
    observation = np.random.default_rng(3).uniform(-2, 2, (1, 3)).astype(np.float32)
    _, mean, std = numpy_policy(model, observation)
    outputs = np.repeat(snapshot.outputs_and_values(observation)[0], draws, axis=0)
    actions = model.head.explore(outputs, snapshot.exploration_matrices(draws, np.random.default_rng(4)))
    z = (actions - mean) / std  # [draws, 2]
    # 5 standard errors of the sample mean (1/√n) and of the sample variance (√(2/n)) of a unit normal.
    np.testing.assert_array_less(np.abs(z.mean(axis=0)), 5 / np.sqrt(draws))
    np.testing.assert_array_less(np.abs(z.var(axis=0) - 1.0), 5 * np.sqrt(2 / draws))


def test_the_features_enter_the_variance_without_their_gradient():
    """sb3's ``learn_features=False``: σ(s) moves with ``log_std`` only; the mean moves the network."""
    model = sde_model()
    observations = np.random.default_rng(5).uniform(-2, 2, (4, 3)).astype(np.float32)
    hidden = model.policy_layers[0].trainable_weights
    with tf.GradientTape(persistent=True) as tape:
        params = model.distribution_params(observations)
        log_std, mean = tf.reduce_sum(params["log_std"]), tf.reduce_sum(params["mean"])
    assert all(g is None for g in tape.gradient(log_std, hidden))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(log_std, model.log_std)))) > 0.0
    assert all(float(tf.reduce_sum(tf.abs(g))) > 0.0 for g in tape.gradient(mean, hidden))


def test_a_trust_region_step_moves_the_matrix_and_keeps_the_kl_bound():
    """The closed-form KL(old‖new) of the state-dependent Gaussians (float64) is ≤ max_kl and is the logged one."""
    model = sde_model(max_kl=0.02)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    rng = np.random.default_rng(6)
    observations = rng.uniform(-2, 2, (64, 3)).astype(np.float32)
    _, mean, std = numpy_policy(model, observations)
    noise = rng.normal(size=(64, 2))
    batch = {"observations": observations, "actions": (mean + 2.0 * std * noise).astype(np.float32),
             "advantages": (np.sum(noise**2, axis=1) - 2.0).astype(np.float32), "returns": np.zeros(64, np.float32)}
    before = np.asarray(model.log_std).copy()
    logs = model.train_step(batch)
    assert float(logs["step_accepted"]) == 1.0
    assert np.max(np.abs(np.asarray(model.log_std) - before)) > 1e-3  # the [L, d] matrix is a policy variable
    _, new_mean, new_std = numpy_policy(model, observations)
    kl = np.mean(np.sum(np.log(new_std / std) + (std**2 + (mean - new_mean) ** 2) / (2 * new_std**2) - 0.5, axis=1))
    assert 0.0 < kl <= 0.02 * (1 + 1e-4)
    assert float(logs["kl"]) == pytest.approx(kl, rel=1e-3)


EPOCHS, CRASH_AT = 4, 2


def _run(backup=None, crash=None):
    keras.utils.set_random_seed(0)
    env = gymnasium.make_vec("keras_trpo/PendulumNoVel-v1", num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, hidden_units=(8,), value_hidden_units=(8,), recurrent=True,
                                    sequence_length=8, use_sde=True, sde_sample_freq=3, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model, fit_resumable(model, keras_trpo.Rollouts(env, model, steps=2 * 20, seed=0), EPOCHS, backup, crash)


def test_a_resumed_sde_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    expected, expected_history = _run()
    backup = str(tmp_path / "backup")
    with pytest.raises(Crash):
        _run(backup, crash=CRASH_AT)
    model, history = _run(backup)
    for key in ("kl", "episode_return", "value_loss"):
        np.testing.assert_array_equal(history[key], expected_history[key][CRASH_AT:], err_msg=key)
    for got, want in zip(model.weights, expected.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)


def test_a_keras_file_and_a_savedmodel_keep_the_state_dependent_policy(tmp_path):
    model = sde_model(sde_sample_freq=8)
    observations = np.random.default_rng(8).uniform(-2, 2, (5, 3)).astype(np.float32)
    want = {k: v.numpy() for k, v in model.distribution_params(observations).items()}
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert (loaded.use_sde, loaded.sde_sample_freq, tuple(loaded.log_std.shape)) == (True, 8, (HIDDEN, 2))
    for key, value in loaded.distribution_params(observations).items():
        np.testing.assert_array_equal(value.numpy(), want[key], err_msg=key)
    served = tf.saved_model.load(str(model.export(tmp_path / "served")))
    got = served.signatures["distribution_params"](observations=tf.constant(observations))
    for key in ("mean", "log_std"):  # a log_std per row: σ(s)
        np.testing.assert_allclose(got[key].numpy(), want[key], rtol=(HIDDEN + 8) * EPS32, atol=1e-7, err_msg=key)
    actions = served.signatures["serving_default"](observations=tf.constant(observations))["actions"].numpy()
    np.testing.assert_allclose(actions, np.clip(want["mean"], -1.0, 1.0), rtol=(HIDDEN + 8) * EPS32, atol=1e-7)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"use_sde": True, "action_space": spaces.Discrete(3)}, TypeError, "use_sde=True explores a Box action space"),
    ({"use_sde": True, "sde_sample_freq": 0}, ValueError, "sde_sample_freq must be -1"),
    ({"use_sde": False, "sde_sample_freq": 2.5}, ValueError, "got 2.5"),
    ({"use_sde": False, "sde_sample_freq": 4}, ValueError, "pass use_sde=True too"),
    ({"use_sde": True, "sde_sample_freq": np.int64(4)}, None, None),  # accepted, and kept as a JSON-safe int
    ({"use_sde": "yes"}, (TypeError, ValueError), "use_sde"),
])
def test_bad_sde_options_are_refused_in_one_line(kwargs, error, words):
    kwargs = {"action_space": ACTIONS, **kwargs}
    if error is None:
        config = keras_trpo.TRPO(OBSERVATIONS, kwargs.pop("action_space"), **kwargs).get_config()
        assert json.loads(json.dumps(config))["sde_sample_freq"] == 4
        return
    with pytest.raises(error) as raised:
        keras_trpo.TRPO(OBSERVATIONS, kwargs.pop("action_space"), **kwargs)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_litert_and_onnx_files_serve_the_state_dependent_std(tmp_path):
    """Both one-file formats convert the SavedModel's functions: their ``log_std`` is σ(s) per row too."""
    from ai_edge_litert.interpreter import Interpreter
    import onnxruntime

    model = sde_model()
    observations = np.random.default_rng(9).uniform(-2, 2, (4, 3)).astype(np.float32)
    _, mean, std = numpy_policy(model, observations)
    runner = Interpreter(model_path=str(model.export(tmp_path / "m.tflite", format="litert")))
    litert = runner.get_signature_runner("distribution_params")(observations=observations)
    session = onnxruntime.InferenceSession(str(model.export(tmp_path / "m.onnx", format="onnx")))
    onnx = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"observations": observations})))
    for got in (litert, onnx):
        np.testing.assert_allclose(np.exp(got["log_std"].astype(np.float64)), std, rtol=(HIDDEN + 8) * EPS32)
        np.testing.assert_allclose(got["mean"], mean, rtol=(HIDDEN + 8) * EPS32, atol=(HIDDEN + 8) * EPS32)
