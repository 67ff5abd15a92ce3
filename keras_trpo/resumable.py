"""Resuming ``Rollouts``: :class:`Resumable`, the ``get_state``/``set_state`` half of :class:`keras_trpo.Rollouts`.

``callbacks.RolloutsBackup`` saves :meth:`Resumable.get_state` next to the model's weights; a
resumed ``fit`` continues from it (bit for bit when the env pickles with its state).
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from keras_trpo.envs import env_snapshot, mark_collecting, release, reset_seed, resume_seed
from keras_trpo.masking import keep_mask_entry


class Resumable:
    """The resumption methods of :class:`keras_trpo.Rollouts` (a mixin: the attributes are Rollouts')."""

    env: Any
    model: Any
    masks: Any
    carry: Any
    seed: Any
    num_envs: int
    env_steps: int
    episode_returns: list[float]
    episode_lengths: list[int]
    reward_scaler: Any
    _cached: Any

    def get_state(self) -> dict[str, Any]:
        """Everything besides the model that decides the next batches, as picklable values.

        With the model's weights (``BackupAndRestore``) and this state, a resumed ``fit``
        continues bit for bit like an uninterrupted one when the env can be saved
        (:func:`keras_trpo.envs.env_snapshot`: cloudpickled with its whole state, e.g. any
        ``gymnasium.make_vec`` sync or default-mode env, with wrappers), together with the current
        observations, running episode statistics, the action-sampling RNG and the counters.
        Otherwise (``AsyncVectorEnv``; envs that pickle as their constructor arguments, such as
        gymnasium's MuJoCo, Box2D and Atari envs) ``"env"`` is None and :meth:`set_state` restarts
        the episodes from a seeded reset. ``policy_version`` records which weights it belongs to.
        """
        env, why = env_snapshot(self.env)
        return {
            "policy_version": self.model.policy_version,
            "rng": self._rng.bit_generator.state,
            "env": env,
            "env_not_saved": why,
            "observations": None if self._observations is None else keep_mask_entry(
                self.model.observation_spec.numpy(self._observations, copy=True), self._observations, self.masks),
            "was_reset": self._was_reset,
            "resetting": self._resetting.copy(),
            "episode_return": self._episode_return.copy(),
            "episode_length": self._episode_length.copy(),
            "env_steps": self.env_steps,
            "episode_returns": list(self.episode_returns),
            "episode_lengths": list(self.episode_lengths),
            "reward_scaler": None if self.reward_scaler is None else self.reward_scaler.get_state(),
            "carry": None if self.carry is None else self.carry.get_state(),  # a recurrent model's state
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`get_state`; a batch collected before the restore is never served.

        Without a saved env (``state["env"] is None``) this env is reset, seeded from ``seed`` and
        ``env_steps`` (unseeded if ``seed`` is None), and the episodes that were running are dropped
        (neither their returns nor their reward-scaler returns carry over); the RNG, the counters,
        the finished episodes and the reward scaler's statistics are restored.
        """
        saved_envs = len(state["episode_return"])
        if state["policy_version"] != self.model.policy_version or saved_envs != self.num_envs:
            raise ValueError(
                f"rollouts state of policy_version {state['policy_version']} with {saved_envs} sub-environments, but "
                f"the model is at {self.model.policy_version} and these Rollouts have {self.num_envs}: restore the "
                "model's weights first (BackupAndRestore), and resume with the env the state was saved with."
            )
        saved_env = None if state["env"] is None else pickle.loads(state["env"])  # before anything changes
        self._rng.bit_generator.state = state["rng"]
        self.env_steps = state["env_steps"]
        self.episode_returns = list(state["episode_returns"])
        self.episode_lengths = list(state["episode_lengths"])
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            self.reward_scaler.set_state(state["reward_scaler"])
        self._cached = None
        if saved_env is not None:  # it replaces this one, which is closed
            replaced, self.env = self.env, saved_env
            release(replaced)
            if self.masks is not None:  # an action_masks() method is called on the env collected with
                self.masks.env = self.env
            mark_collecting(self.env)
            self._observations = state["observations"]
            self._was_reset = state.get("was_reset", self._observations is not None)
            self._resetting = state.get("resetting", np.zeros(self.num_envs, bool)).copy()
            self._episode_return = state["episode_return"].copy()
            self._episode_length = state["episode_length"].copy()
            if self.carry is not None and state.get("carry") is not None:
                self.carry.set_state(state["carry"])
            return
        seed = None if self.seed is None else reset_seed(self.env, resume_seed(self.seed, self.env_steps))
        self._observations, _ = self._call_env(lambda: self.env.reset(seed=seed), "reset", 0)
        self._was_reset, self._resetting[:] = True, False
        if self.carry is not None:
            self.carry.reset()
        self._episode_return[:], self._episode_length[:] = 0.0, 0
        if self.reward_scaler is not None:
            self.reward_scaler.returns[:] = 0.0

