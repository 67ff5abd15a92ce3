"""Masks and memory together (issue 29, item 4): a recurrent policy on a masked env acts, trains, evaluates and
serves over the legal actions only.

Bugs caught (each checked once by mutating the code): ``PolicySnapshot.act_recurrent`` sampling without the mask
(an illegal action reaches the batch, which train_step refuses); the export's recurrent step without the mask
(``model.step(..., action_mask)`` -> ``None``: the served action is illegal).
"""

from __future__ import annotations

import gymnasium
import keras
import numpy as np
import tensorflow as tf

import keras_trpo
import keras_trpo.masked_envs  # noqa: F401  (registers keras_trpo/InvalidAction-v0)
from keras_trpo import masking, networks, sequences


def test_a_recurrent_masked_policy_samples_trains_evaluates_and_serves_legal_actions(tmp_path):
    env = gymnasium.make_vec("keras_trpo/InvalidAction-v0", num_envs=4, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, policy_network=networks.recurrent(networks.mlp((32,), seed=0), units=16,
                                                                           seed=0),
                                    recurrent=True, sequence_length=8, seed=0)
    assert model.action_mask and model.is_recurrent
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=512, seed=0)
    batch = rollouts[0]
    masks, actions = batch[masking.BATCH_KEY], batch["actions"]
    assert masks[np.arange(len(actions)), actions].all()  # every sampled action is legal
    assert (~masks).sum() > 0.8 * masks.size  # 17 of 20 actions are illegal at every step
    history = model.fit(rollouts, epochs=12, verbose=0).history
    assert history["step_accepted"][-1] == 1.0

    # The update's old distribution over the stored masks: illegal logits at MASK_LOGIT.
    tensors = {k: tf.constant(v) for k, v in rollouts[0].items()}
    memory = {"episode_starts": tensors[sequences.STARTS], "states": {k: tensors[k] for k in model.state_sizes()}}
    logits = model.distribution_params(tensors["observations"], tensors[masking.BATCH_KEY], memory)["logits"].numpy()
    np.testing.assert_array_equal(logits[~rollouts[0][masking.BATCH_KEY]], masking.MASK_LOGIT)

    returns = keras_trpo.evaluate(model, "keras_trpo/InvalidAction-v0", episodes=4, seed=1)
    assert len(returns) == 4 and min(returns) >= 0

    path = model.export(str(tmp_path / "masked_recurrent"))
    signature = tf.saved_model.load(path).signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert {"action_mask", "episode_start", *model.state_sizes()} <= set(inputs)
    obs, _ = env.reset(seed=3)
    state, starts = model.initial_state(4), np.ones(4, bool)
    for _ in range(20):
        mask = np.stack(env.call("action_masks"))
        want, state_next = model(obs, action_mask=mask, state=state, episode_starts=starts)
        served = signature(observations=tf.constant(obs), action_mask=tf.constant(mask.astype(np.int8)),
                           episode_start=tf.constant(starts.astype(np.int8)), **state)
        np.testing.assert_array_equal(served["actions"].numpy(), want.numpy())
        assert mask[np.arange(4), served["actions"].numpy()].all()
        state = {k: served[k] for k in model.state_sizes()}
        obs, _, terminated, truncated, _ = env.step(served["actions"].numpy())
        starts = terminated | truncated
