"""Action masking during collection (issue 28): what ``Rollouts`` stores, refuses, and resumes.

The env is tests/test_masking.py's ``MaskedEnv`` (a fresh random mask every step, from a ``Dict``
observation entry or from ``action_masks()``), which logs every action it receives with the mask it
was chosen under, so the stored batch can be compared with what the env saw, step by step.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

import keras_trpo
from helpers import tiny_trpo
from keras_trpo.errors import RolloutError
from test_masking import MASKED_ACTIONS, STATE, MaskedEnv, illegal_rows, masked_run, random_masks


@pytest.mark.parametrize("source", ["observation", "method"])
@pytest.mark.parametrize("action", MASKED_ACTIONS)
def test_stored_masks_are_the_envs_masks_step_by_step_and_no_stored_action_is_illegal(action, source):
    """Two batches of 3 sub-envs whose episodes end at different steps (the envs reset alone, by reset_mask).
    Catches: the masks not stored (``buffer.add_step(cells, action_masks=masks)`` -> ``pass``: all-False rows);
    acting without the masks (``policy.act(observations, self._rng, masks)`` -> ``(observations, self._rng)``)."""
    model, rollouts = masked_run(action, source, steps=3 * 10, num_envs=3)
    envs = rollouts.env.envs
    size = envs[0].size
    for index in range(2):
        batch = rollouts.collect()
        assert batch["action_masks"].dtype == bool and batch["action_masks"].shape == (30, size)
        masks = batch["action_masks"].reshape(10, 3, size)
        actions = np.asarray(batch["actions"]).reshape(10, 3, -1)
        for i, env in enumerate(envs):
            logged = env.log[10 * index:10 * (index + 1)]
            np.testing.assert_array_equal(masks[:, i], np.stack([mask for mask, _ in logged]), err_msg=f"sub-env {i}")
            np.testing.assert_array_equal(actions[:, i], np.stack([a for _, a in logged]).reshape(10, -1))
        assert illegal_rows(model.action_space, batch["actions"], batch["action_masks"]).size == 0
    assert sum(env.illegal for env in envs) == 0
    assert len(rollouts.episode_returns) > 3  # episodes ended (and the sub-envs were reset) during the batches


def _vector(*envs):
    return gymnasium.vector.SyncVectorEnv([lambda env=env: env for env in envs])


@pytest.mark.parametrize("source", ["observation", "method"])
def test_an_all_illegal_mask_is_a_rollout_error_naming_the_sub_env(source):
    """Catches: ``MaskReader`` without its empty-row check (``if empty.any():`` -> ``if False:``), or naming the
    wrong index (``np.flatnonzero(empty)`` -> ``np.flatnonzero(~empty)``)."""
    env = _vector(MaskedEnv(source=source, length=50), MaskedEnv(source=source, length=50),
                  MaskedEnv(source=source, length=50, empty_at=3))
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=30, seed=0)
    with pytest.raises(RolloutError, match=r"^sub-environment\(s\) \[2\] returned an action mask with no legal "
                                           r"action; every state the policy acts in needs at least one legal action"):
        rollouts.collect()
    assert [len(e.log) for e in env.envs] == [3, 3, 3]  # refused before acting on the empty mask


class ResetStepVectorEnv(gymnasium.vector.VectorEnv):
    """A NEXT_STEP vector env whose ``reset`` restarts every sub-env (ignores ``reset_mask``, like
    CartPoleVectorEnv), with a ``Dict`` observation ``{"state", "action_mask"}`` over ``Discrete(4)``.

    Sub-env ``i``'s episodes last ``lengths[i]`` steps and terminate; the observation they end on has an
    all-illegal mask (a finished game: no legal move). The following step only resets the sub-env (action
    ignored, reward 0). Every other mask is drawn at random with a legal action. ``received`` logs each real
    transition's ``(mask, action)`` per sub-env.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, lengths):
        self.num_envs = len(lengths)
        self.lengths = np.array(lengths)
        self.single_action_space = spaces.Discrete(4)
        self.single_observation_space = spaces.Dict({"state": STATE, "action_mask": spaces.MultiBinary(4)})
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.rng = np.random.default_rng(0)
        self.received = [[] for _ in range(self.num_envs)]
        self.terminal_masks_seen = 0

    def _observe(self, ended):
        self.masks = random_masks(self.single_action_space, self.num_envs, self.rng)
        self.masks[ended] = False
        state = self.rng.uniform(-1, 1, (self.num_envs, 3)).astype(np.float32)
        return {"state": state, "action_mask": self.masks.astype(np.int8)}

    def reset(self, *, seed=None, options=None):
        self.t = np.zeros(self.num_envs, np.int64)
        self.ended = np.zeros(self.num_envs, bool)
        return self._observe(self.ended), {}

    def step(self, actions):
        resetting = self.ended
        self.terminal_masks_seen += int(resetting.sum())
        for i in np.flatnonzero(~resetting):
            self.received[i].append((self.masks[i].copy(), int(actions[i])))
        self.t = np.where(resetting, 0, self.t + 1)
        terminated = ~resetting & (self.t == self.lengths)
        self.ended = terminated
        rewards = np.where(resetting, 0.0, 1.0)
        return self._observe(terminated), rewards, terminated, np.zeros(self.num_envs, bool), {}


def test_a_reset_step_may_follow_an_all_illegal_terminal_mask():
    """A sub-env whose episode ended on an all-illegal mask only resets on its next step: no error, nothing stored.
    Catches: ``MaskReader`` ignoring ``skip`` (``if skip is not None:`` -> ``if False:``), or ``Rollouts`` not
    passing it (``skip=self._resetting`` dropped)."""
    env = ResetStepVectorEnv(lengths=[2, 3, 5])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=3 * 8, seed=0)
    assert rollouts.skips_reset_steps
    batch = rollouts.collect()
    assert env.terminal_masks_seen > 3  # the collection went through several terminal masks
    masks = batch["action_masks"].reshape(8, 3, 4)
    assert masks.any(axis=2).all()  # the empty masks are no rows of the batch
    for i in range(3):
        received = env.received[i][:8]
        np.testing.assert_array_equal(masks[:, i], np.stack([m for m, _ in received]))
        np.testing.assert_array_equal(batch["actions"].reshape(8, 3)[:, i], [a for _, a in received])
    assert illegal_rows(model.action_space, batch["actions"], batch["action_masks"]).size == 0


def _batches_equal(a, b):
    for key in ("actions", "action_masks", "advantages", "returns"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in a["observations"]:
        np.testing.assert_array_equal(a["observations"][key], b["observations"][key], err_msg=key)


@pytest.mark.parametrize("source", ["observation", "method"])
def test_a_resumed_masked_collection_continues_bit_for_bit(source):
    """``get_state`` after one batch, ``set_state`` on fresh ``Rollouts`` (a fresh env): the next batch is the
    uninterrupted run's. Catches: the ``action_mask`` entry left out of the saved observations
    (``keep_mask_entry(...)`` -> its first argument: KeyError 'action_mask'); the method's masks read from the
    env ``set_state`` replaced and closed (``self.masks.env = self.env`` removed from ``Rollouts.set_state``; before
    this test found it: AttributeError from the replaced, never reset env)."""
    model, rollouts = masked_run("MultiDiscrete", source, steps=16, num_envs=2)
    rollouts.collect()
    state = rollouts.get_state()
    expected = rollouts.collect()
    resumed = keras_trpo.Rollouts(gymnasium.vector.SyncVectorEnv([lambda: MaskedEnv(source=source)] * 2), model,
                                  steps=16, seed=1)
    resumed.set_state(state)
    got = resumed.collect()
    if source == "method":
        got["observations"] = {"state": got["observations"]}
        expected["observations"] = {"state": expected["observations"]}
    _batches_equal(expected, got)
    assert sum(env.illegal for env in resumed.env.envs) == 0
