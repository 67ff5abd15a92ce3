"""Guards for the performance work: one trace per shape, flat memory."""

import gc
import resource

import gymnasium
import keras
import numpy as np
import pytest

import keras_trpo

from helpers import cartpole_env, tiny_trpo


def rss_mb():
    """Resident set size of this process in MB, after a garbage collection."""
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _fit(activation, epochs, steps=256):
    env = cartpole_env(4)
    model = tiny_trpo(env, 32, activation=activation)
    rollouts = keras_trpo.Rollouts(env, model, steps=steps, seed=0)
    return model, rollouts, model.fit(rollouts, epochs=epochs, verbose=0)


def test_numpy_acting_path_never_traces_and_the_update_traces_once():
    model, _, history = _fit("tanh", epochs=5)
    assert len(history.history["kl"]) == 5
    assert model.train_function.tracing_count() == 1
    assert model.acting_function().experimental_get_tracing_count() == 0  # numpy forward: no TF in collection


def test_tensorflow_acting_fallback_traces_once():
    # gelu has no numpy twin: collection uses one compiled TF call per vector step.
    model, _, history = _fit("gelu", epochs=5)
    assert len(history.history["kl"]) == 5
    assert model.train_function.tracing_count() == 1
    assert model.acting_function().experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_memory_stays_flat_over_50_iterations():
    env = gymnasium.make_vec("CartPole-v1", num_envs=4, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=512, seed=0)
    model.fit(rollouts, epochs=5, verbose=0)  # warm-up: tracing, allocator pools
    samples = []

    class Sample(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch % 10 == 9:
                samples.append(rss_mb())

    before = rss_mb()
    model.fit(rollouts, epochs=50, verbose=0, callbacks=[Sample()])
    growth = max(samples) - before
    assert growth < 50, (before, samples)
    assert np.all(np.isfinite([w for v in model.weights if v.dtype.startswith("float") for w in np.ravel(v.numpy())]))


@pytest.mark.slow
def test_300_iterations_with_a_wide_trust_region_stay_finite_with_flat_memory():
    """Long-run soak (issue #9): CartPole, max_kl=0.05, 8 envs x 2048 steps, 300 iterations.

    Every iteration: all weights finite. Every 10 iterations: RSS. Memory must be
    flat after warm-up (tracing, allocator pools, tf.data buffers).
    """

    env = gymnasium.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, max_kl=0.05, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=2048, seed=0)
    samples, non_finite = [], []

    class Soak(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if not all(np.isfinite(w.numpy()).all() for w in self.model.weights):
                non_finite.append(epoch)
            if epoch % 10 == 9:
                samples.append(rss_mb())

    history = model.fit(rollouts, epochs=300, verbose=0, callbacks=[Soak()])
    assert non_finite == []
    accepted = np.mean(history.history["step_accepted"])
    assert accepted > 0.9, accepted  # the weights stayed finite while actually moving
    assert len(samples) == 30
    settled = np.array(samples[5:])  # from iteration 60 on
    slope = np.polyfit(np.arange(len(settled)) * 10, settled, 1)[0]  # MB per iteration
    print(f"RSS every 10 iterations (MB): {np.round(samples, 1).tolist()}; slope {slope:.4f} MB/iteration")
    assert settled.max() - settled[0] < 30, samples
    assert slope < 0.05, (slope, samples)
