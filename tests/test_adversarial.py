"""Adversarial batches: each is rejected inside ``fit``, changes nothing, warns, and fit goes on.

Every case runs a real ``model.fit`` over two batches collected from a real
CartPole env: the adversarial one, then a clean one. After the first, every
weight of the model (policy, critic, normalizer statistics, critic-shuffle seed
state) and the optimizer state must be bit-identical to before; the warning must
name the cause; the second batch must be accepted.
"""

import math
import warnings

import gymnasium
import keras
import numpy as np
import pytest

import keras_trpo
from keras_trpo.errors import REJECTION_REASONS

from helpers import Batches, assert_bit_identical, bit_differences, cartpole_env, tiny_trpo, training_state

CLEAN_KEYS = ("observations", "actions", "advantages", "returns")


def cartpole_model(**kwargs):
    env = cartpole_env()
    return env, tiny_trpo(env, **{"normalize_observations": True, **kwargs})


def collect(env, model, steps=256, seed=0, **kwargs):
    batch = keras_trpo.Rollouts(env, model, steps=steps, seed=seed, **kwargs).collect()
    return {key: np.array(batch[key], copy=True) for key in CLEAN_KEYS}


def state(model):
    """Every variable but the update counter: policy, critic, normalizer, seed state, optimizer."""
    return training_state(model, update_counter=False)


class AfterEachBatch(keras.callbacks.Callback):
    def __init__(self, between=None):
        super().__init__()
        self.states, self.logs, self.between = [], [], between

    def on_train_batch_end(self, batch, logs=None):
        self.states.append(state(self.model))
        self.logs.append({k: float(v) for k, v in logs.items()})
        if self.between is not None and batch == 0:
            self.between(self.model)


def with_nan(key, index, value):
    def transform(batch, model):
        batch[key] = batch[key].astype(np.float32)
        batch[key].reshape(-1)[index] = value
        return batch

    return transform


def zero_advantages(batch, model):
    batch["advantages"] = np.zeros_like(batch["advantages"])
    return batch


def negative_damping(damping):
    def transform(batch, model):
        model.damping = damping
        return batch

    return transform


def explicit_fisher_eigenvalues(model, batch):
    """Eigenvalues of the Hessian of mean KL(old‖new) at the current weights, by jacobian."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    from keras_trpo import ops

    variables = model.policy_variables
    observations = tf.constant(batch["observations"])
    old = model.head.distribution(tf.nest.map_structure(tf.stop_gradient, model.distribution_params(observations)))
    theta = ops.flatten(variables)

    def mean_kl(flat):
        ops.assign_flat(variables, flat)
        return tf.reduce_mean(tfp.distributions.kl_divergence(old, model.distribution(observations)))

    flat = tf.Variable(theta)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            ops.assign_flat(variables, flat)
            kl = tf.reduce_mean(tfp.distributions.kl_divergence(old, model.distribution(observations)))
        grad = ops.flat_gradient(inner, kl, variables)
    hessian = outer.jacobian(grad, variables)
    hessian = tf.concat([tf.reshape(h, [grad.shape[0], -1]) for h in hessian], axis=1)
    ops.assign_flat(variables, theta)
    del mean_kl
    return np.linalg.eigvalsh(0.5 * (hessian.numpy() + hessian.numpy().T))


def indefinite_damping(batch, model):
    """Damping = −(median Fisher eigenvalue): F + damping·I has eigenvalues of both signs."""
    eigenvalues = explicit_fisher_eigenvalues(model, batch)
    positive = eigenvalues[eigenvalues > 1e-6]
    model.damping = -float(np.median(positive))
    return batch


def restore_damping(model):
    model.damping = 0.1


CASES = {
    # name: (transform, expected reason, cause named in the warning, restore between batches)
    "nan observation": (with_nan("observations", 17, np.nan), 1, "non-finite values in the batch", None),
    "inf observation": (with_nan("observations", 3, np.inf), 1, "non-finite values in the batch", None),
    "nan advantage": (with_nan("advantages", 100, np.nan), 1, "non-finite values in the batch", None),
    "-inf advantage": (with_nan("advantages", 0, -np.inf), 1, "non-finite values in the batch", None),
    "nan return": (with_nan("returns", 255, np.nan), 1, "non-finite values in the batch", None),
    "inf return": (with_nan("returns", 7, np.inf), 1, "non-finite values in the batch", None),
    "all-zero advantages": (zero_advantages, 2, "step curvature", None),
    "negative-definite damping (CG breaks down at once)": (
        negative_damping(-1e3), 2, "conjugate gradient broke down", restore_damping
    ),
    "indefinite Fisher (CG breaks down later)": (indefinite_damping, 2, "indefinite", restore_damping),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_adversarial_batch_is_rejected_changes_nothing_and_fit_goes_on(name):
    transform, reason, cause, restore = CASES[name]
    env, model = cartpole_model()
    clean = collect(env, model, seed=0)
    following = collect(env, model, seed=1)
    bad = transform({k: v.copy() for k, v in clean.items()}, model)
    before = state(model)
    recorder = AfterEachBatch(between=restore)
    with pytest.warns(keras_trpo.UpdateRejectedWarning, match=f"reason {reason}") as caught:
        model.fit(Batches([bad, following]), epochs=1, verbose=0, shuffle=False, callbacks=[recorder])
    messages = [str(w.message) for w in caught if issubclass(w.category, keras_trpo.UpdateRejectedWarning)]
    assert len(messages) == 1 and cause in messages[0], messages
    first, second = recorder.logs
    assert first["step_accepted"] == 0.0 and first["rejection_reason"] == reason, (first, REJECTION_REASONS)
    assert_bit_identical(before, recorder.states[0])  # policy, critic, normalizer, seed and optimizer: untouched
    assert math.isfinite(first["loss"])  # TerminateOnNaN would not stop here
    assert second["step_accepted"] == 1.0
    assert bit_differences(before, recorder.states[1])  # fit went on and updated
    if reason == 2 and "damping" in name or "Fisher" in name:
        assert first["cg_breakdown"] == 1.0
    if "later" in name:
        # The breakdown came after at least one good CG step: the truncated iterate is refused too.
        assert first["cg_iterations"] >= 2


class NonFiniteRewardAt(gymnasium.Wrapper):
    """A real env whose reward at one global step is ``value``."""

    def __init__(self, env, step, value):
        super().__init__(env)
        self.count, self.step_at, self.value = 0, step, value

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        return observation, (self.value if self.count == self.step_at else reward), terminated, truncated, info


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_reward_from_the_env_skips_one_iteration_and_fit_continues(value):
    # 128 steps per batch on one env: the bad reward at step 200 lands in the second batch.
    env = gymnasium.vector.SyncVectorEnv([lambda: NonFiniteRewardAt(gymnasium.make("CartPole-v1"), 200, value)])
    model = tiny_trpo(env)
    recorder = AfterEachBatch()
    with (
        pytest.warns(RuntimeWarning, match=r"sub-environment\(s\) \[0\] returned a non-finite reward"),
        pytest.warns(keras_trpo.UpdateRejectedWarning, match="policy_version 1 rejected .reason 1.: non-finite"),
    ):
        history = model.fit(
            keras_trpo.Rollouts(env, model, steps=128, seed=0),
            epochs=4,
            verbose=0,
            callbacks=[recorder, keras.callbacks.TerminateOnNaN()],
        )
    assert history.history["step_accepted"] == [1.0, 0.0, 1.0, 1.0]
    assert_bit_identical(recorder.states[0], recorder.states[1])
    assert all(math.isfinite(loss) for loss in history.history["loss"])


def flat_policy(model):
    return np.concatenate([w.numpy().ravel() for w in model.policy_variables])


class FirstStep(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = flat_policy(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.step = flat_policy(self.model) - self.start


@pytest.mark.parametrize("normalize_advantages", [True, False])
def test_rewards_scaled_by_1e6_give_the_same_policy_step_and_finite_weights(normalize_advantages):
    """Scaled rewards are valid data, not an attack: the update must neither overflow nor reject.

    With normalized advantages the surrogate is scale-free; without, the CG
    direction grows by 1e6 and the step scale √(2δ/sᵀFs) shrinks by 1e6, so the
    full step is the same either way. (Only the critic's share of the
    advantages, V(s) against returns 1e6 times larger, differs slightly.)
    """
    steps = {}
    for scale in (1.0, 1e6):
        env = gymnasium.vector.SyncVectorEnv(
            [lambda: gymnasium.wrappers.TransformReward(gymnasium.make("CartPole-v1"), lambda r: r * scale)]
        )
        model = tiny_trpo(env, normalize_advantages=normalize_advantages)
        first = FirstStep()
        history = model.fit(
            keras_trpo.Rollouts(env, model, steps=256, seed=0), epochs=3, verbose=0, callbacks=[first]
        )
        assert history.history["step_accepted"] == [1.0, 1.0, 1.0], history.history["rejection_reason"]
        assert max(history.history["kl"]) <= model.max_kl * (1 + 1e-5)
        assert all(np.isfinite(w.numpy()).all() for w in model.weights)
        assert all(math.isfinite(v) for v in history.history["value_loss"])
        steps[scale] = first.step
    small, large = steps[1.0], steps[1e6]
    cosine = small @ large / (np.linalg.norm(small) * np.linalg.norm(large))
    assert cosine > 0.99, cosine
    assert np.linalg.norm(large) == pytest.approx(np.linalg.norm(small), rel=0.1)


def test_reward_normalization_makes_a_1e6_reward_scale_invisible_to_the_batch():
    batches, episode_returns = {}, {}
    for scale in (1.0, 1e6):
        env = gymnasium.vector.SyncVectorEnv(
            [lambda: gymnasium.wrappers.TransformReward(gymnasium.make("Pendulum-v1"), lambda r: r * scale)] * 2
        )
        model = tiny_trpo(env, compile=False)
        rollouts = keras_trpo.Rollouts(env, model, steps=512, seed=0, normalize_rewards=True)
        batches[scale] = rollouts.collect()
        episode_returns[scale] = np.array(rollouts.episode_returns)
    np.testing.assert_array_equal(batches[1.0]["observations"], batches[1e6]["observations"])
    for key in ("advantages", "returns"):
        np.testing.assert_allclose(batches[1e6][key], batches[1.0][key], rtol=1e-2, atol=1e-4)
    # The reported episode returns stay in the env's own units.
    assert len(episode_returns[1.0]) == 2
    np.testing.assert_allclose(episode_returns[1e6], 1e6 * episode_returns[1.0], rtol=1e-6)


def test_terminate_on_nan_stops_fit_once_a_weight_is_non_finite():
    """Nothing in the update makes weights non-finite; corrupt one from outside and training stops."""

    class CorruptAtEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                variable = self.model.value_variables[0]
                variable.assign(np.full(variable.shape, np.nan, np.float32))

    for terminate, expected_epochs in ((True, 3), (False, 5)):
        env, model = cartpole_model(normalize_observations=False)
        callbacks = [CorruptAtEpoch()] + ([keras.callbacks.TerminateOnNaN()] if terminate else [])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", keras_trpo.UpdateRejectedWarning)
            history = model.fit(
                keras_trpo.Rollouts(env, model, steps=128, seed=0), epochs=5, verbose=0, callbacks=callbacks
            )
        assert len(history.history["loss"]) == expected_epochs, history.history["loss"]
        assert all(math.isfinite(v) for v in history.history["loss"][:2])
        assert math.isnan(history.history["loss"][2])
