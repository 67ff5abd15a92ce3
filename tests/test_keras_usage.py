"""What a Keras user tries first, and the one clear line each gets (issue 15, items 1, 2, 4, 5, 9).

Each test names the old silent or misleading behaviour it guards against.
"""

import re

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo

from helpers import Batches, assert_bit_identical, bit_differences, cartpole_env, tiny_trpo, training_state


@pytest.fixture
def cartpole():
    env = cartpole_env()
    model = tiny_trpo(env, value_epochs=1)
    yield model, env
    env.close()


# --------------------------------------------------------------------------
# 1. A wrong observation width is an error, never extra rows
# --------------------------------------------------------------------------
WRONG_OBSERVATIONS = {
    "call, width 8": (lambda m: m(np.zeros((1, 8), np.float32)), r"\[1, 8\]; expected \[N, 4\]"),
    "predict, 3 rows of width 8": (lambda m: m.predict(np.zeros((3, 8), np.float32), verbose=0), r"\[.*8\]; expected \[N, 4\]"),
    "distribution, width 2": (lambda m: m.distribution(np.zeros((5, 2), np.float32)), r"\[5, 2\]; expected \[N, 4\]"),
    "value, one observation without batch axis": (lambda m: m.value(np.zeros(4, np.float32)), r"\[4\]; expected \[N, 4\]"),
}


@pytest.mark.parametrize("case", sorted(WRONG_OBSERVATIONS))
def test_a_wrong_observation_shape_is_refused_at_the_model_boundary(cartpole, case):
    """Before: model(np.zeros((1, 8))) on a 4-feature CartPole model returned 2 actions."""
    model, _ = cartpole
    call, message = WRONG_OBSERVATIONS[case]
    with pytest.raises(ValueError, match=message) as error:
        call(model)
    assert "Box(" in str(error.value)  # names the model's observation space
    assert model(np.zeros((3, 4), np.float32)).shape == (3,)  # the right shape still works


def test_evaluate_on_an_env_with_other_observations_names_both_spaces(cartpole):
    """Before: keras_trpo.evaluate(cartpole_model, 'Acrobot-v1') failed with a 1,471-character reshape error."""
    model, _ = cartpole
    with pytest.raises(ValueError, match=r"env observation space Box\(.*\(6,\).* does not match the model's"):
        keras_trpo.evaluate(model, "Acrobot-v1", episodes=2)


# --------------------------------------------------------------------------
# 2. Mixed precision is refused at construction, in one line
# --------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["global policy", "dtype argument"])
def test_mixed_precision_is_refused_at_construction(how):
    """Before: the model built, then the first fit failed deep in autograph (float32 vs float16 Mul)."""
    env = gymnasium.make("CartPole-v1")
    try:
        if how == "global policy":
            keras.config.set_dtype_policy("mixed_float16")
            kwargs = {}
        else:
            kwargs = {"dtype": "mixed_bfloat16"}
        with pytest.raises(ValueError, match=r"TRPO computes in float32 \(or float64\); the dtype policy is 'mixed_b?float16'"):
            keras_trpo.TRPO.for_env(env, **kwargs)
    finally:
        keras.config.set_dtype_policy("float32")
    keras_trpo.TRPO.for_env(env, dtype="float32")  # float32 still builds


def test_a_float64_model_trains_acts_and_exports_in_float64(tmp_path):
    """Catches: a float32 cast left in the update (a batch, a line-search fraction, a metric): the
    float64 train_step fails with 'expected a double tensor but is a float tensor'; a float64
    dtype policy under floatx float32, which would mix the two, being accepted; and float32 clip
    bounds applied to a float64 Box action at export (TypeError in Minimum)."""
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    with pytest.raises(ValueError, match=r"dtype policy is 'float64' with floatx 'float32'"):
        keras_trpo.TRPO.for_env(env, dtype="float64")
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(8,), value_hidden_units=(8,),
                                        value_epochs=1, normalize_observations=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(keras_trpo.Rollouts(env, model, steps=64, seed=0), epochs=2, verbose=0).history
        observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
        logits_dtype = model.distribution(observations).logits.dtype
        exported = tf.saved_model.load(model.export(str(tmp_path / "m")))
        served = exported.signatures["serving_default"](observations=tf.constant(observations))["actions"]
        pendulum = keras_trpo.TRPO.for_env(gymnasium.make("Pendulum-v1"), seed=0, hidden_units=(8,))  # Box actions
        box_served = tf.saved_model.load(pendulum.export(str(tmp_path / "p"))).signatures["serving_default"](
            observations=tf.constant(observations[:, :3]))["actions"]
        box_expected = pendulum(observations[:, :3]).numpy()
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    assert history["step_accepted"] == [1.0, 1.0]
    assert {w.dtype for w in model.weights if "float" in w.dtype} == {"float64"}
    assert logits_dtype == "float64"
    np.testing.assert_array_equal(served.numpy(), model(observations).numpy())
    # Box actions: served as float32 (the signature's dtype), the float64 model's clipped mode rounded once.
    assert box_served.dtype == tf.float32
    np.testing.assert_array_equal(box_served.numpy(), np.clip(box_expected, -2.0, 2.0).astype(np.float32))


# --------------------------------------------------------------------------
# 4, 5. fit and evaluate refuse what TRPO cannot use, pointing to what to do
# --------------------------------------------------------------------------
FIT_MISUSES = {
    "numpy array": (lambda m, env: m.fit(np.zeros((8, 4)), epochs=1), TypeError, r"keras_trpo\.Rollouts\(env, model"),
    "the env itself": (lambda m, env: m.fit(env, epochs=1), TypeError, r"not an environment: model\.fit\(keras_trpo\.Rollouts"),
    "targets": (lambda m, env: m.fit(keras_trpo.Rollouts(env, m, steps=8), np.zeros(8)), ValueError, r"no targets \(y\)"),
    "steps_per_epoch": (lambda m, env: m.fit(keras_trpo.Rollouts(env, m, steps=8), steps_per_epoch=5), ValueError,
                        r"steps_per_epoch=5: one epoch of Rollouts is one TRPO iteration"),
    "validation_data": (lambda m, env: m.fit(keras_trpo.Rollouts(env, m, steps=8), validation_data=np.zeros(3)),
                        ValueError, r"validation_data.*callbacks\.Evaluation"),
    "model.evaluate": (lambda m, env: m.evaluate(np.zeros((8, 4))), TypeError, r"keras_trpo\.evaluate\(model"),
}


@pytest.mark.parametrize("case", sorted(FIT_MISUSES))
def test_fit_and_evaluate_refuse_what_trpo_cannot_use(cartpole, case):
    """Before: SymbolicTensor TypeErrors, 'Unrecognized data type', steps_per_epoch silently ignored, 'No loss to compute'."""
    model, env = cartpole
    call, error, message = FIT_MISUSES[case]
    with pytest.raises(error, match=message):
        call(model, env)
    assert model.policy_version == 0  # refused before any update


# --------------------------------------------------------------------------
# 9. A readable progress bar by default; every value still in History
# --------------------------------------------------------------------------
def test_the_progress_bar_shows_a_few_metrics_and_history_keeps_all(cartpole, capsys):
    """Before: verbose=1 printed all 19 metrics, ~800 characters per line."""
    model, env = cartpole
    history = model.fit(keras_trpo.Rollouts(env, model, steps=64, seed=0), epochs=3, verbose=1)
    out = capsys.readouterr().out
    bar = [line for line in out.splitlines() if "kl:" in line]
    assert bar, out
    for line in bar:
        assert "episode_return" in line and "line_search_steps" in line and "value_loss" in line
        assert "cg_residual" not in line and "explained_variance" not in line
    assert "steps_per_second" in out  # env steps per second, from the second epoch on
    assert {"cg_residual", "explained_variance", "entropy", "env_steps"} <= set(history.history)
    visible = [re.sub(r"\x1b\[[0-9;]*m|.\x08", "", line).split("\r")[-1] for line in out.splitlines()]
    assert max(len(line) for line in visible) < 200, visible


# --------------------------------------------------------------------------
# A vector env that cannot reset one sub-env: its reset steps are stepped through, never reset all
# --------------------------------------------------------------------------
def test_a_vector_env_that_ignores_reset_mask_is_stepped_through_not_reset(cartpole):
    """Before: make_vec('CartPole-v1') (gymnasium's CartPoleVectorEnv) restarted every sub-env whenever one
    finished, so running episodes were cut without a done: episode_return reached 2914 on CartPole (max 500);
    then both Rollouts and evaluate refused it. Now both step through its reset steps (issue 24); the exact
    checks, with an env that records its own episodes, are in tests/test_vector_envs.py."""
    model, _ = cartpole
    native = gymnasium.make_vec("CartPole-v1", num_envs=2)  # make_vec's default: the vectorized implementation
    assert not isinstance(native.unwrapped, gymnasium.vector.SyncVectorEnv)
    # Rollouts leaves the env's reset steps out of the batch (tests/test_vector_envs.py).
    assert keras_trpo.Rollouts(native, model, steps=64).skips_reset_steps
    returns = keras_trpo.evaluate(model, gymnasium.make_vec("CartPole-v1", num_envs=2), episodes=8, seed=0)
    assert len(returns) == 8 and all(0 < r <= 500 for r in returns)
    native.close()
    same_step = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync",
                                   vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP})
    keras_trpo.Rollouts(same_step, model, steps=64)  # never reset by the caller: accepted


def test_train_on_batch_is_one_trpo_iteration_like_fit():
    """``model.train_on_batch(batch)`` (Keras packs it as ``(batch, None, None)``) is one update, the one ``fit`` makes.

    Catches: ``validation.unwrap`` taking only 1-tuples, so ``train_on_batch`` raised
    "train_step expects a dict; got tuple" (found by the issue-25 mutation pass).
    """
    env = cartpole_env()
    by_batch, by_fit = tiny_trpo(env), tiny_trpo(env)
    batch = keras_trpo.Rollouts(env, by_batch, steps=64, seed=0)[0]
    logs = by_batch.train_on_batch(batch, return_dict=True)
    by_fit.fit(Batches([batch]), epochs=1, verbose=0)
    assert by_batch.policy_version == by_fit.policy_version == 1
    assert float(logs["step_accepted"]) == 1.0
    # The same compiled train function on the same batch from the same weights: bit for bit.
    assert_bit_identical(training_state(by_batch), training_state(by_fit))
    assert bit_differences(training_state(by_batch), training_state(tiny_trpo(env)))  # the update moved something
