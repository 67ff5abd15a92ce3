"""Collecting and training a recurrent TRPO (issue 29): the state carried by Rollouts is the one the update unrolls.

Bugs each test catches (each checked once by mutating the code):
- ``test_the_update_recomputes_the_distribution_collection_acted_with``: Rollouts storing a step's state after the
  step rather than before it; episode starts flagged one step late; the update's unroll starting sequences from
  a zero state instead of the stored one;
- ``test_every_accepted_step_keeps_the_mean_kl_over_real_steps_within_max_kl``: the line search's
  ``kl <= max_kl`` condition dropped;
- ``test_padding_rows_are_copies_marked_false``: padding that is not excluded (``sequence_mask`` all True);
- ``test_episode_starts_flag_the_first_step_of_every_episode``: the flags set one step late (at the step after
  the first observation of an episode), or never after the first reset (``done`` dropped from the flags).
"""

from __future__ import annotations

import gymnasium
import keras
import numpy as np
import tensorflow as tf

import keras_trpo
from keras_trpo import networks, sequences, update, wrappers  # noqa: F401  (wrappers registers the NoVel envs)
from keras_trpo.distribute import Replicas

EPS32 = float(np.finfo(np.float32).eps)


def make(num_envs=2, length=16, seed=0, **kwargs):
    env = gymnasium.make_vec("keras_trpo/CartPoleNoVel-v1", num_envs=num_envs, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, policy_network=networks.recurrent(networks.mlp((16,), seed=seed), units=8,
                                                                          seed=seed),
                                    value_network=networks.recurrent(None, units=8, seed=seed + 1),
                                    sequence_length=length, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return env, model


def by_env(array, num_envs, horizon, length):
    """Sequence-major rows back to ``[num_envs, horizon, ...]`` (padding dropped)."""
    padded = sequences.padded_length(horizon, length)
    return np.asarray(array).reshape(num_envs, padded, *np.shape(array)[1:])[:, :horizon]


def test_the_update_recomputes_the_distribution_collection_acted_with():
    num_envs, horizon, length = 2, 90, 16  # 90 = 5 sequences of 16 + one of 10 steps and 6 of padding
    env, model = make(num_envs, length)
    rollouts = keras_trpo.Rollouts(env, model, steps=num_envs * horizon, seed=3)
    rollouts[0]  # the first batch: the second starts from a carried state, not zeros
    model.fit(rollouts, epochs=1, verbose=0)
    batch = rollouts[0]
    names = list(model.state_sizes())
    assert batch[sequences.STARTS].sum() >= 2  # episodes start inside sequences

    # Collection, replayed: the same one-step function on all sub-envs at once, from the batch's first stored
    # state, carrying its own state and zeroing it at the stored episode starts.
    obs = by_env(batch["observations"], num_envs, horizon, length)
    starts = by_env(batch[sequences.STARTS], num_envs, horizon, length)
    stored = {k: by_env(batch[k], num_envs, horizon, length) for k in names}
    state = {k: tf.constant(stored[k][:, 0]) for k in names}
    step, replayed = model.step_function(), []
    assert np.abs(stored["policy_h"][:, 0]).max() > 0  # a carried state, not zeros
    for t in range(horizon):
        for k in names:  # the stored state of each step is the one collection stepped from, bit for bit
            np.testing.assert_array_equal(stored[k][:, t], state[k].numpy(), err_msg=f"{k} at step {t}")
        outputs, _, state = step(tf.constant(obs[:, t]), state, tf.constant(starts[:, t]))
        replayed.append(outputs.numpy())
    replayed = np.stack(replayed, axis=1)  # [E, T, 2] logits

    # The update: every sequence unrolled from its stored start state (the old distribution of step 1).
    tensors = {k: tf.constant(v) for k, v in batch.items()}
    memory = {"episode_starts": tensors[sequences.STARTS], "states": {k: tensors[k] for k in names}}
    weights = tf.cast(tensors[sequences.MASK], tf.float32)
    objective = update.Objective(model, Replicas(), tensors["observations"], tensors["actions"],
                                 tensors["advantages"], None, memory, weights)
    recomputed = by_env(objective.old_params["logits"].numpy(), num_envs, horizon, length)
    # Both are float32 LSTM steps on the same values; only the batch size of the matrix products differs
    # (2 rows per step against 12 sequences), which may round differently: up to L steps of fan-in
    # 16 + 8 + 1 roundings, relative to the logits' scale.
    bound = length * (16 + 8 + 1) * EPS32 * (1.0 + np.abs(replayed).max())
    assert np.abs(recomputed - replayed).max() <= bound, (np.abs(recomputed - replayed).max(), bound)


def test_padding_rows_are_copies_marked_false():
    num_envs, horizon, length = 2, 20, 8  # 20 = 2 sequences of 8 + 4 steps and 4 of padding
    env, model = make(num_envs, length)
    batch = keras_trpo.Rollouts(env, model, steps=num_envs * horizon, seed=0)[0]
    padded = sequences.padded_length(horizon, length)
    assert len(batch["returns"]) == num_envs * padded
    mask = batch[sequences.MASK].reshape(num_envs, padded)
    np.testing.assert_array_equal(mask, np.tile(np.arange(padded) < horizon, (num_envs, 1)))
    obs = batch["observations"].reshape(num_envs, padded, -1)
    np.testing.assert_array_equal(obs[:, horizon:], np.repeat(obs[:, horizon - 1 : horizon], padded - horizon, 1))


def mean_kl(old_logits, new_logits, weights):
    """Mean over the weighted rows of KL(old‖new) of categoricals, float64."""
    old = old_logits.astype(np.float64) - np.logaddexp.reduce(old_logits.astype(np.float64), axis=-1, keepdims=True)
    new = new_logits.astype(np.float64) - np.logaddexp.reduce(new_logits.astype(np.float64), axis=-1, keepdims=True)
    kl = (np.exp(old) * (old - new)).sum(-1)
    return float((kl * weights).sum() / weights.sum())


def test_every_accepted_step_keeps_the_mean_kl_over_real_steps_within_max_kl():
    env, model = make(num_envs=4, length=8, max_kl=0.05, damping=0.0)
    rollouts = keras_trpo.Rollouts(env, model, steps=4 * 60, seed=1)
    names = list(model.state_sizes())
    searched = 0
    for _ in range(8):
        batch = rollouts[0]
        tensors = {k: tf.constant(v) for k, v in batch.items()}
        memory = {"episode_starts": tensors[sequences.STARTS], "states": {k: tensors[k] for k in names}}
        before = model.distribution_params(tensors["observations"], None, memory)["logits"].numpy()
        logs = model.train_step(batch)
        after = model.distribution_params(tensors["observations"], None, memory)["logits"].numpy()
        kl = mean_kl(before, after, batch[sequences.MASK].astype(np.float64))
        # The update's own KL is a float32 mean of the same quantity: a few roundings of relative size ε32.
        assert kl <= 0.05 * (1 + 64 * EPS32), kl
        assert abs(kl - float(logs["kl"])) <= 1e-6 + 1e-4 * kl
        searched += int(logs["line_search_steps"]) > 0
    assert searched >= 1  # some full steps overshot the trust region and were shrunk


def test_episode_starts_flag_the_first_step_of_every_episode():
    env, model = make(num_envs=1, length=16)
    rollouts = keras_trpo.Rollouts(env, model, steps=400, seed=2)
    starts = by_env(rollouts[0][sequences.STARTS], 1, 400, 16)[0]
    flagged = np.flatnonzero(starts)
    assert flagged[0] == 0  # the first reset
    lengths = rollouts.episode_lengths
    assert len(lengths) >= 3
    # Every episode that ended flags the next step (the last one may end on the batch's last step).
    assert len(flagged) >= len(lengths)
    # Each episode starts right after the previous one's last step.
    np.testing.assert_array_equal(np.diff(flagged), lengths[: len(flagged) - 1])
