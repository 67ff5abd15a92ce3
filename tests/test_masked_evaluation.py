"""Evaluation of masked policies (issue 28): ``keras_trpo.evaluate``, the ``Evaluation`` callback and
``keras-trpo evaluate`` read the env's masks as ``Rollouts`` does and act on the legal actions only.

Two masked envs, each asserting in ``step`` that the action is legal (an illegal one fails the test there):
``Targets`` (after /work/s28/md_env.py: a ``Dict`` observation with a ``MultiBinary`` target and its
``action_mask`` entry, ``MultiDiscrete([3, 4])`` actions) and ``Choice`` (``Box`` observations, ``Discrete(6)``
actions, masks from an ``action_masks()`` method). The policies get O(1) random logits, so that their
unmasked mode is illegal in many states.
"""

import contextlib
import io
import json

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo import cli, masking
from keras_trpo.acting import PolicySnapshot

EPISODE = 12


class Targets(gymnasium.Env):
    """/work/s28/md_env.py's env: hit the target of each component; the mask is the targets and 2 random flags."""

    observation_space = spaces.Dict({"target": spaces.MultiBinary(7), "action_mask": spaces.MultiBinary(7)})
    action_space = spaces.MultiDiscrete([3, 4])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self._new()
        return self.obs(), {}

    def obs(self):
        target = np.zeros(7, np.int8)
        target[self.s[0]] = 1
        target[3 + self.s[1]] = 1
        return {"target": target, "action_mask": self.m.astype(np.int8)}

    def _new(self):
        self.s = np.array([self.np_random.integers(3), self.np_random.integers(4)])
        m = np.zeros(7, bool)
        m[self.s[0]] = m[3 + self.s[1]] = True
        m[self.np_random.choice(7, 2)] = True
        self.m = m

    def step(self, action):
        assert self.m[action[0]] and self.m[3 + action[1]], f"illegal action {action} under mask {self.m}"
        reward = float(np.mean(action == self.s))
        self.t += 1
        self._new()
        return self.obs(), reward, False, self.t >= EPISODE, {}


class ChoiceWithoutMasks(gymnasium.Env):
    """Pick the target (one-hot in the observation) among 6 actions; 3 or 4 legal per step, and no mask source."""

    observation_space = spaces.Box(0.0, 1.0, (6,), np.float32)
    action_space = spaces.Discrete(6)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._new(), {}

    def _new(self):
        self.target = int(self.np_random.integers(6))
        self.mask = np.zeros(6, bool)
        self.mask[self.np_random.choice(6, 3, replace=False)] = True
        self.mask[self.target] = True
        return np.eye(6, dtype=np.float32)[self.target]

    def step(self, action):
        assert self.mask[action], f"illegal action {action} under mask {self.mask}"
        reward = float(action == self.target)
        self.t += 1
        return self._new(), reward, False, self.t >= EPISODE, {}


class Choice(ChoiceWithoutMasks):
    """The legal actions from ``action_masks()`` (sb3-contrib's convention)."""

    def action_masks(self):
        return self.mask.copy()


ENVS = {"targets": "keras_trpo_tests/MaskedTargets-v0", "choice": "keras_trpo_tests/MaskedChoice-v0"}
for _id, _cls in ((ENVS["targets"], Targets), (ENVS["choice"], Choice),
                  ("keras_trpo_tests/ChoiceWithoutMasks-v0", ChoiceWithoutMasks)):
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=_cls)


def masked_model(name, seed=0):
    """TRPO.for_env on the env (masks detected), with O(1) random policy logits."""
    env = gymnasium.make_vec(ENVS[name], num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, hidden_units=(16,), value_hidden_units=(16,), seed=seed)
    env.close()
    assert model.action_mask
    kernel = model.policy_output.kernel
    kernel.assign(np.random.default_rng(seed).normal(scale=2.0, size=kernel.shape).astype(np.float32))
    return model


def read_masks(env, observations):
    """The masks by hand: the observation entry, else the sub-envs' action_masks()."""
    if isinstance(observations, dict):
        return observations["action_mask"].astype(bool)
    return np.stack(env.call("action_masks"))


def networks_part(observations):
    """The observations without the ``action_mask`` entry (given as ``action_mask=`` instead)."""
    if isinstance(observations, dict):
        return {key: value for key, value in observations.items() if key != "action_mask"}
    return observations


def hand_loop(name, act, episodes, seed):
    """One episode per sub-env (every episode lasts EPISODE steps), acting with ``act(observations, masks)``."""
    env = gymnasium.make_vec(ENVS[name], num_envs=episodes, vectorization_mode="sync")
    observations, _ = env.reset(seed=seed)
    returns = np.zeros(episodes)
    for _ in range(EPISODE):
        masks = read_masks(env, observations)
        actions = act(observations, masks)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        returns += rewards
    assert truncated.all()
    env.close()
    return returns.tolist()


@pytest.mark.parametrize("name", list(ENVS))
def test_deterministic_masked_evaluation_equals_a_hand_loop_over_the_model(name):
    """Catches: evaluate acting without the masks (the env's step asserts: the unmasked mode is illegal in many
    states), and masks read from another step's observations (other actions, other returns)."""
    model = masked_model(name)
    returns = keras_trpo.evaluate(model, ENVS[name], episodes=4, seed=3)
    expected = hand_loop(name, lambda obs, masks: model(networks_part(obs), action_mask=masks).numpy(), 4, 3)
    assert returns == expected
    # The masks matter: the model's unmasked mode is illegal in the first states (not vacuous).
    env = gymnasium.make_vec(ENVS[name], num_envs=4, vectorization_mode="sync")
    observations, _ = env.reset(seed=3)
    unmasked = model.head.mode(model.distribution_params(model.observation_spec.numpy(observations))).numpy()
    assert not masking.legal(model.action_space, unmasked, read_masks(env, observations)).all()
    env.close()


@pytest.mark.parametrize("name", list(ENVS))
def test_sampled_masked_evaluation_is_legal_and_samples_as_rollouts(name):
    """Catches: deterministic=False sampling without the masks (an illegal draw fails the env's step)."""
    model = masked_model(name)
    returns = keras_trpo.evaluate(model, ENVS[name], episodes=4, seed=5, deterministic=False)
    snapshot, rng = PolicySnapshot(model), np.random.default_rng(5)
    assert returns == hand_loop(name, lambda obs, masks: snapshot.act(obs, rng, masks)[0], 4, 5)


@pytest.mark.parametrize("name", list(ENVS))
def test_a_masked_saved_model_evaluates_as_the_model(name, tmp_path):
    """Catches: the loaded SavedModel's signature called without its action_mask input (a missing-input error),
    or given the masks in another dtype than int8 (refused by the signature)."""
    model = masked_model(name)
    loaded = tf.saved_model.load(model.export(tmp_path / "policy"))
    expected = keras_trpo.evaluate(model, ENVS[name], episodes=4, seed=3)
    assert keras_trpo.evaluate(loaded, ENVS[name], episodes=4, seed=3) == expected
    assert keras_trpo.evaluate(loaded.signatures["serving_default"], ENVS[name], episodes=4, seed=3) == expected
    sampled = keras_trpo.evaluate(loaded, ENVS[name], episodes=4, seed=5, deterministic=False)  # legal: step asserts
    assert sampled == keras_trpo.evaluate(loaded, ENVS[name], episodes=4, seed=5, deterministic=False)


def test_the_evaluation_callback_evaluates_a_masked_model_on_an_env_id():
    """Catches: the Evaluation callback's env id path not reading masks (the env's step asserts)."""
    keras.utils.set_random_seed(0)
    env = gymnasium.make_vec(ENVS["targets"], num_envs=2, vectorization_mode="sync")
    model = masked_model("targets")
    model.compile()
    evaluation = keras_trpo.callbacks.Evaluation(ENVS["targets"], episodes=2, every=1, seed=0)
    model.fit(keras_trpo.Rollouts(env, model, steps=48, seed=0), epochs=1, verbose=0, callbacks=[evaluation])
    env.close()
    assert evaluation.results[0]["returns"] == keras_trpo.evaluate(model, ENVS["targets"], episodes=2, seed=0)


def cli_evaluate(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main([str(a) for a in argv])
    return status, out.getvalue()


@pytest.mark.parametrize("name", list(ENVS))
def test_keras_trpo_evaluate_runs_masked_saved_models_and_keras_files(name, tmp_path):
    """Catches: the CLI's ServingPolicy taking the mask input for an observation (the Choice SavedModel's inputs
    then mismatch the env's), feeding no mask, or the .keras check seeing the env's action_mask entry as an
    observation the model lacks (Targets)."""
    model = masked_model(name)
    model.save(tmp_path / "model.keras")
    saved_model = model.export(tmp_path / "saved_model")
    expected = keras_trpo.evaluate(model, ENVS[name], episodes=3, seed=7)
    for path in (saved_model, tmp_path / "model.keras"):
        status, out = cli_evaluate("evaluate", path, ENVS[name], "--episodes", 3, "--seed", 7, "--json")
        assert status == 0, out
        assert json.loads(out.strip().splitlines()[-1])["returns"] == expected
        status, out = cli_evaluate("evaluate", path, ENVS[name], "--episodes", 3, "--seed", 7, "--stochastic")
        assert status == 0, out


def test_keras_trpo_export_of_a_masked_keras_file_serves_the_masked_policy(tmp_path):
    """The .keras round trip keeps the masking and ``keras-trpo export`` writes the mask input. Catches: a
    model loaded back unmasked (its export then has no action_mask input, and evaluating it takes illegal actions)."""
    model = masked_model("choice")
    model.save(tmp_path / "model.keras")
    status, out = cli_evaluate("export", tmp_path / "model.keras", tmp_path / "exported")
    assert status == 0, out
    loaded = tf.saved_model.load(str(tmp_path / "exported" / "1"))
    assert "action_mask" in loaded.signatures["serving_default"].structured_input_signature[1]
    expected = keras_trpo.evaluate(model, ENVS["choice"], episodes=3, seed=7)
    assert keras_trpo.evaluate(loaded, ENVS["choice"], episodes=3, seed=7) == expected


def test_a_masked_policy_on_an_env_without_masks_is_one_clear_line():
    """Catches: the check dropped (the first env.call('action_masks') then fails inside gymnasium)."""
    model = masked_model("choice")
    with pytest.raises(ValueError, match=r"^the policy masks actions \(action_mask=True\), but the env has no "
                                         r"'action_mask' observation entry and no action_masks\(\) method \(.*\); use "
                                         r"the masked env it was trained on, add one to the env, or build the model "
                                         r"with action_mask=False\.$"):
        keras_trpo.evaluate(model, "keras_trpo_tests/ChoiceWithoutMasks-v0", episodes=2, seed=0)


class GameOverVectorEnv(gymnasium.vector.VectorEnv):
    """A vector env that resets its finished sub-envs itself on their next step (NEXT_STEP, no reset_mask, like
    CartPoleVectorEnv): the game-over observation has an empty mask, and the reset step ignores its action.
    Sub-env i's episodes last LENGTHS[i] steps, reward 1 per (legal) step."""

    LENGTHS = (3, 5)
    metadata = {"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP}

    def __init__(self):
        self.num_envs = len(self.LENGTHS)
        self.single_observation_space = spaces.Dict({"x": spaces.Box(0.0, 1.0, (2,), np.float32),
                                                     "action_mask": spaces.MultiBinary(3)})
        self.single_action_space = spaces.Discrete(3)
        self.observation_space = gymnasium.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def _observations(self):
        return {"x": self.rng.random((self.num_envs, 2)).astype(np.float32), "action_mask": self.mask.astype(np.int8)}

    def _draw(self, rows):
        for i in np.flatnonzero(rows):
            self.mask[i] = self.rng.random(3) < 0.5
            self.mask[i, self.rng.integers(3)] = True

    def reset(self, *, seed=None, options=None):
        self.rng, self.t = np.random.default_rng(seed), np.zeros(self.num_envs, int)
        self.mask, self.over = np.zeros((self.num_envs, 3), bool), np.zeros(self.num_envs, bool)
        self._draw(np.ones(self.num_envs, bool))
        return self._observations(), {}

    def step(self, actions):
        resetting = self.over.copy()
        assert all(self.mask[i, a] for i, a in enumerate(actions) if not resetting[i]), (actions, self.mask)
        self.t = np.where(resetting, 0, self.t + 1)
        self.over = ~resetting & (self.t == np.array(self.LENGTHS))
        self._draw(~self.over)
        self.mask[self.over] = False  # game over: no legal action (the next step only resets)
        return self._observations(), np.where(resetting, 0.0, 1.0), self.over.copy(), np.zeros(self.num_envs, bool), {}


def test_a_sub_env_resetting_on_its_next_step_may_have_an_empty_mask():
    """Catches: evaluate reading the masks without skipping the sub-envs whose next step only resets
    (``skip=resetting`` dropped: a RolloutError on the game-over mask), and the reset step's action taken as a move."""
    env = GameOverVectorEnv()
    model = keras_trpo.TRPO.for_env(env, hidden_units=(8,), seed=0)
    assert model.action_mask
    assert keras_trpo.evaluate(model, env, episodes=4, seed=0) == [3.0, 5.0, 3.0, 5.0]
    assert keras_trpo.evaluate(model, env, episodes=4, seed=0, deterministic=False) == [3.0, 5.0, 3.0, 5.0]


def test_keras_trpo_evaluate_runs_an_unmasked_saved_model_on_the_masked_env_it_was_trained_on(tmp_path):
    """An unmasked policy (``action_mask=False``) of a ``Dict`` env with an ``action_mask`` entry: its SavedModel
    has no mask input and the entry is not its observation. Before: "the policy takes observations {...} but ... has
    {'action_mask': ...}". Catches: ``ServingPolicy`` reading the env's whole space (``network_space(env_space,
    tuple(inputs))`` -> ``env_space``)."""
    import keras_trpo.masked_envs  # noqa: F401 - registers keras_trpo/TicTacToe-v0 (an illegal move loses)

    env_id = "keras_trpo/TicTacToe-v0"
    env = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, action_mask=False, hidden_units=(16,), value_hidden_units=(16,), seed=0)
    env.close()
    saved_model = model.export(tmp_path / "saved_model")
    expected = keras_trpo.evaluate(model, env_id, episodes=3, seed=7)
    status, out = cli_evaluate("evaluate", saved_model, env_id, "--episodes", 3, "--seed", 7, "--json")
    assert status == 0, out
    assert json.loads(out.strip().splitlines()[-1])["returns"] == expected
