"""One batch of transitions as ``[horizon, num_envs]`` arrays, and the batch dict ``Rollouts`` serves."""

from __future__ import annotations

import warnings

import numpy as np

from keras_trpo.advantages import compute_gae


class Transitions:
    """The ``[horizon, num_envs]`` storage of one batch; column ``i`` holds sub-env ``i``'s transitions in order.

    ``final_values[t, i]`` is ``V`` of the observation that followed row ``t`` of sub-env ``i``
    (read on truncated rows and on the last row, see :func:`keras_trpo.advantages.compute_gae`).
    """

    def __init__(self, spec, head, horizon, num_envs):
        self.spec, self.head = spec, head
        # In the space's dtypes: uint8 images stay uint8 (a quarter of float32's memory).
        self.observations = spec.buffer(horizon, num_envs)
        self.actions = np.empty(
            (horizon, num_envs, *head.action_shape), np.float32 if not head.integer_actions else np.int64
        )
        self.rewards = np.zeros((horizon, num_envs))
        self.values = np.zeros((horizon, num_envs))
        self.final_values = np.zeros((horizon, num_envs))
        self.terminated = np.zeros((horizon, num_envs), bool)
        self.truncated = np.zeros((horizon, num_envs), bool)

    def put_observations(self, index, observations):
        """Stores a batch of observations in row ``index`` (an int) or in the cells ``index = (rows, columns)``."""
        if self.spec.structured:
            self.spec.map(lambda _, buffer, o: buffer.__setitem__(index, o), self.observations, observations)
        else:
            self.observations[index] = observations

    def batch(self, gamma, gae_lambda, *, policy_version, finished_returns, finished_lengths, env_steps) -> dict:
        """GAE(γ, λ) per column and the batch dict: ``[horizon · num_envs, ...]`` rows, time-major."""
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rewards were warned about
            advantages, returns = compute_gae(
                self.rewards, self.values, self.terminated, self.truncated, self.final_values, gamma, gae_lambda
            )
        n = self.rewards.size
        action_shape = self.head.action_shape
        return {
            "observations": self.spec.map(lambda leaf, o: o.reshape(n, *leaf.shape), self.observations),
            "actions": self.actions.reshape(n, *action_shape),
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
            # Scalars travel as [N] columns of one repeated value: Keras datasets need rank >= 1, and
            # under a tf.distribute strategy every replica's share of the batch then carries them.
            "policy_version": np.full(n, policy_version, np.int64),
            "episode_return": np.full(n, np.mean(finished_returns) if finished_returns else np.nan, np.float32),
            "episode_length": np.full(n, np.mean(finished_lengths) if finished_lengths else np.nan, np.float32),
            "episodes": np.full(n, len(finished_returns), np.float32),
            "env_steps": np.full(n, env_steps, np.float32),
        }


def scale_rewards(scaler, rewards, done, stepped):
    """``scaler(rewards, done)`` on the sub-envs in the mask ``stepped`` only; the others' rewards come back 0.

    For steps where some sub-envs only reset (``Rollouts`` with a ``NEXT_STEP`` env that ignores
    ``reset_mask``): those are no transitions, so they neither extend the running discounted return
    nor enter its statistics. Uses the scaler's public ``returns`` (one running return per sub-env).
    """
    if stepped.all():
        return scaler(rewards, done)
    scaled = np.zeros(len(rewards))
    if stepped.any():
        returns = scaler.returns
        scaler.returns = returns[stepped]
        try:
            scaled[stepped] = scaler(np.asarray(rewards)[stepped], np.asarray(done)[stepped])
            returns[stepped] = scaler.returns
        finally:
            scaler.returns = returns
    return scaled


def warn_non_finite(rewards, t):
    """A ``RuntimeWarning`` naming the sub-envs whose reward at step ``t`` of the batch is NaN or infinite."""
    if not np.all(np.isfinite(rewards)):
        bad = np.flatnonzero(~np.isfinite(rewards)).tolist()
        warnings.warn(
            f"sub-environment(s) {bad} returned a non-finite reward {np.asarray(rewards)[bad].tolist()} at "
            f"step {t} of this batch; TRPO.train_step will reject the batch and leave the model unchanged.",
            RuntimeWarning,
            stacklevel=3,  # Rollouts.collect
        )
