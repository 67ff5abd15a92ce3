"""Tests for one-line mutations of the refactored core that survived the suite (issue 25, item 9, helper G's pass).

Each test's docstring names the bug it catches; /work/notes/mutations.md ("Refactored core") has the table.
"""

import threading

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

import keras_trpo
from keras_trpo import update
from keras_trpo.distribute import Replicas
from keras_trpo.errors import NO_STEP, NON_FINITE

from helpers import tiny_trpo


class CountingEnv(gymnasium.Env):
    """Observation: the step count of the episode (0 after a reset); no episode ends before ``limit`` steps.

    Counts its resets; raises once at lifetime step ``fail_at`` if set.
    """

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, limit=1000, fail_at=None):
        self.limit, self.fail_at, self.t, self.calls, self.resets = limit, fail_at, 0, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.resets = 0, self.resets + 1
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulator diverged")
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, False, self.t >= self.limit, {}


def test_the_collection_after_an_env_error_starts_from_a_reset():
    """Catches: ``Rollouts.collect`` keeping the observations of a collection that failed (``self._observations =
    None`` dropped from its ``except``): the next batch would start from the stale observation of the failed batch
    while the env is 2 steps further on.

    The env's observation is its episode step, so the first row of the batch after the error must be 0 (a reset)
    and the rows count up from there, one per step.
    """
    env = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv(fail_at=6)])
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=4, seed=0)
    np.testing.assert_array_equal(rollouts.collect()["observations"][:, 0], [0, 1, 2, 3])
    try:
        rollouts.collect()  # its 2nd step is the env's 6th: raises
    except keras_trpo.RolloutError:
        pass
    else:
        raise AssertionError("the env's 6th step should have raised")
    np.testing.assert_array_equal(rollouts.collect()["observations"][:, 0], [0, 1, 2, 3])


class UnpicklableSeededEnv(gymnasium.Env):
    """Reset observation drawn from the reset seed; holds a lock, so the env cannot be snapshotted (pickled)."""

    observation_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.lock = threading.Lock()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(size=1).astype(np.float32), {}

    def step(self, action):
        return self.np_random.uniform(size=1).astype(np.float32), 1.0, False, False, {}


def test_resuming_without_a_saved_env_does_not_replay_the_first_reset():
    """Catches: ``Rollouts.set_state`` resetting an env it could not save with the run's own ``seed`` (``seed =
    resume_seed(self.seed, self.env_steps)`` → ``seed = self.seed``): a resumed run would start again from the very
    first episode start, every resume the same one.

    Independent check: the first observation after restoring differs from that of a reset with ``seed`` (what the
    run began with), is reproducible (seeded), and differs between states saved at other ``env_steps``.
    """

    def make_env():
        return gymnasium.vector.SyncVectorEnv([UnpicklableSeededEnv])

    env = make_env()
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=2, seed=7)
    first_start = rollouts.collect()["observations"][0, 0]
    assert first_start == make_env().reset(seed=7)[0][0, 0]
    states = [rollouts.get_state()]
    rollouts.collect()
    states.append(rollouts.get_state())
    assert all(state["env"] is None for state in states), "the env must not be snapshotted for this test"

    def restored_start(state):
        resumed = keras_trpo.Rollouts(make_env(), model, steps=2, seed=7)
        resumed.set_state(state)
        return resumed.collect()["observations"][0, 0]

    after_two, after_four = restored_start(states[0]), restored_start(states[1])
    assert after_two != first_start
    assert restored_start(states[0]) == after_two
    assert after_four != after_two


def test_an_env_that_resets_in_the_same_step_is_not_reset_again():
    """Catches: ``Rollouts`` calling ``env.reset(reset_mask)`` after a ``SAME_STEP`` env has already reset its
    finished sub-envs (``and self.autoreset_mode != AutoresetMode.SAME_STEP`` dropped in ``_after_episodes``):
    every episode would start twice, the first start thrown away (and its reset's random draws with it).

    Independent count: 2 sub-envs with 3-step episodes over 8 steps each finish 2 episodes, so each is reset
    3 times in all (the first reset and one per finished episode).
    """
    env = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv(limit=3)] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    model = tiny_trpo(env)
    batch = keras_trpo.Rollouts(env, model, steps=16, seed=0).collect()
    assert batch["episodes"][0] == 4
    assert [sub_env.resets for sub_env in env.envs] == [1 + 2, 1 + 2]


class RecordingBatches(keras.utils.PyDataset):
    """Fixed dict batches (no ``policy_version``: not tied to a rollout), recording the indices Keras asks for."""

    def __init__(self, batches):
        super().__init__()
        self.batches, self.read = batches, []

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        self.read.append(index)
        return self.batches[index]


def test_fit_on_a_py_dataset_of_two_batches_updates_on_each_batch():
    """Catches: ``Feed.for_fit`` reading every ``PyDataset`` directly, not only one-batch ones (``len(x) == 1 and``
    dropped): an epoch of a two-batch dataset would be one update, on batch 0 only.

    Keras' rule for ``fit(PyDataset)``: one step per batch, each batch once per epoch.
    """
    env = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv()] * 2)
    model = tiny_trpo(env)
    batch = {key: value for key, value in keras_trpo.Rollouts(env, model, steps=8, seed=0).collect().items()
             if key in ("observations", "actions", "advantages", "returns")}
    dataset = RecordingBatches([batch, {**batch, "advantages": -batch["advantages"]}])
    model.fit(dataset, epochs=1, verbose=0)
    assert model.policy_version == 2
    assert sorted(set(dataset.read)) == [0, 1]


def test_the_train_function_called_after_fit_trains_on_the_batch_it_is_given():
    """Catches: ``Feed.serving`` leaving its feed installed after ``fit`` (``train_function.feed = KERAS_ITERATOR``
    dropped from its ``finally``): the train function called by hand afterwards (``feeding.KERAS_ITERATOR``'s
    case) would ignore the batch of its iterator and collect a fresh one from the ``Rollouts`` that ``fit`` read.

    Independent check: that call steps no env (``env_steps`` stays), and updates once.
    """
    env = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv()] * 2)
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=8, seed=0)
    model.fit(rollouts, epochs=1, verbose=0)
    batch = rollouts.collect()
    env_steps = rollouts.env_steps
    model.make_train_function()(iter([batch]))
    assert rollouts.env_steps == env_steps
    assert model.policy_version == 2


@pytest.mark.parametrize("method", ["value", "distribution_params", "policy_outputs"])
def test_the_forward_methods_refuse_observations_of_another_width(method):
    """Catches: ``Forward._inputs`` without ``spec.check(observations)``: ``model.value`` (and the policy's
    methods, which the update and ``evaluate`` call directly, not through ``model(x)``) would reshape 2 rows
    of 8 values into 4 rows of the model's 4 and answer for observations that were never given.
    """
    env = gymnasium.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync")
    model = tiny_trpo(env)
    width = env.single_observation_space.shape[0]
    with pytest.raises(ValueError, match=rf"has shape \[2, {2 * width}\]"):
        getattr(model, method)(np.zeros((2, 2 * width), np.float32))


def test_a_custom_value_network_beside_the_default_policy_gets_image_shaped_input():
    """Catches: ``Forward.value`` choosing its input by the policy's flag (``self.custom_networks[1]`` →
    ``[0]``): a CNN value network beside the default MLP policy would get the flattened ``[N, 147]`` features
    instead of the ``[N, 7, 7, 3]`` images it was built for.

    Independent computation: the value network's layers applied by hand to the images as floats.
    """
    model = keras_trpo.TRPO(spaces.Box(0, 255, (7, 7, 3), np.uint8), spaces.Discrete(3), hidden_units=(8,),
                            value_network="minigrid_cnn", seed=0)
    images = np.random.default_rng(0).integers(0, 256, (2, 7, 7, 3)).astype(np.uint8)
    x = images.astype(np.float32)
    for layer in [*model.value_layers, model.value_output]:
        x = layer(x)
    # The same float32 ops on the same inputs; rtol 1e-6 (~8 float32 ulps) only allows for a kernel choice.
    np.testing.assert_allclose(model.value(images).numpy(), np.asarray(x)[:, 0], rtol=1e-6, atol=1e-6)


def test_a_batch_refused_for_non_finite_values_logs_a_finite_loss():
    """Catches: ``train_step`` logging the refused batch's NaN ``value_loss`` as ``loss`` (the inner
    ``tf.where(tf.math.is_finite(value_loss), value_loss, 0.0)`` → ``value_loss``): ``keras.callbacks.TerminateOnNaN``
    would stop a run at a batch the update merely skipped, although every weight is finite.

    The rule (``train_step``): ``loss`` is NaN exactly when a weight is non-finite.
    """
    env = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv()] * 2)
    model = tiny_trpo(env)
    batch = keras_trpo.Rollouts(env, model, steps=8, seed=0).collect()
    batch["advantages"][3] = np.nan
    with pytest.warns(keras_trpo.UpdateRejectedWarning):
        logs = model.make_train_function()(iter([batch]))
    assert float(logs["rejection_reason"]) == NON_FINITE
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
    assert np.isfinite(float(logs["loss"]))


def test_a_batch_with_a_non_finite_box_action_is_refused_as_non_finite():
    """Catches: ``rejection_before_update`` leaving Box actions out of its finiteness check (the ``*([] if
    head.integer_actions else [batch["actions"]])`` entry dropped): a NaN action would go through the whole
    update and be rejected by the line search as a CG breakdown or no step (reason 2 or 3), not as
    the non-finite batch it is (reason 1, decided before any compute).
    """
    env = gymnasium.make_vec("Pendulum-v1", num_envs=2, vectorization_mode="sync")
    model = tiny_trpo(env)
    batch = keras_trpo.Rollouts(env, model, steps=8, seed=0).collect()
    batch["actions"][5, 0] = np.nan
    with pytest.warns(keras_trpo.UpdateRejectedWarning):
        logs = model.make_train_function()(iter([batch]))
    assert float(logs["rejection_reason"]) == NON_FINITE


def test_advantages_are_standardized_by_their_standard_deviation():
    """Catches: ``update.normalized`` dividing by the variance (``tf.sqrt(variance)`` → ``variance``). The
    trust-region step is invariant to the advantages' scale, so no learning test sees it; the logged surrogate
    improvements and ``expected_improvement`` scale with it.

    Independent computation: numpy's ``(A − mean) / (std + 1e-8)``, population std.
    """
    advantages = np.random.default_rng(0).normal(3.0, 5.0, 64)
    got = update.normalized(Replicas(None), tf.constant(advantages))
    # float64 throughout; the two reductions over 64 values may round differently by ~64 ulps (1.4e-14).
    np.testing.assert_allclose(got.numpy(), (advantages - advantages.mean()) / (advantages.std() + 1e-8),
                               rtol=1e-12, atol=1e-12)


def test_a_step_too_small_to_change_any_weight_is_not_accepted():
    """Catches: the line search accepting a trial whose surrogate did not improve (``surrogate - surrogate_old
    > 0`` → ``>= 0``): with ``max_kl=1e-30`` the full step is ~1e-15, below float32's resolution of the weights,
    so every trial leaves them as they are and improves nothing. The rule is a positive improvement, so
    the update is rejected with reason 3 (no acceptable step), not logged as an accepted step.
    """
    env = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv()] * 2)
    model = tiny_trpo(env, max_kl=1e-30)
    before = [w.numpy().copy() for w in model.policy_variables]
    batch = keras_trpo.Rollouts(env, model, steps=16, seed=0).collect()
    with pytest.warns(keras_trpo.UpdateRejectedWarning):
        logs = model.make_train_function()(iter([batch]))
    for old, new in zip(before, model.policy_variables):
        np.testing.assert_array_equal(old, new.numpy())
    assert float(logs["step_accepted"]) == 0.0
    assert float(logs["rejection_reason"]) == NO_STEP


def test_an_accepted_update_merges_the_batch_into_the_observation_statistics():
    """Catches: the critic step's ``keep`` never calling ``normalizer_step`` (``if model.normalizer is not None:``
    → ``if False:``): ``normalize_observations=True`` would normalize with the initial mean 0 and variance 1
    for the whole run.

    Independent computation: starting from count 0, the running moments after one accepted update are the
    batch's own (numpy mean and population variance, float64, stored in float32).
    """
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    model = tiny_trpo(env, normalize_observations=True)
    batch = keras_trpo.Rollouts(env, model, steps=64, seed=0).collect()
    logs = model.make_train_function()(iter([batch]))
    assert float(logs["step_accepted"]) == 1.0
    observations = batch["observations"].astype(np.float64)
    assert float(model.normalizer.count.numpy()) == len(observations)
    # The moments are float64 until stored as float32: equal up to float32 rounding (rtol 2**-23 ≈ 1.2e-7, doubled).
    np.testing.assert_allclose(model.normalizer.mean.numpy(), observations.mean(axis=0), rtol=2.4e-7, atol=1e-12)
    np.testing.assert_allclose(model.normalizer.variance.numpy(), observations.var(axis=0), rtol=2.4e-7, atol=1e-12)


@pytest.mark.parametrize("rows, batch_size, epochs", [(24, 10, 2), (24, 8, 3), (24, 32, 1)])
def test_the_critic_makes_one_optimizer_step_per_minibatch_including_the_last_partial_one(rows, batch_size, epochs):
    """Catches: ``critic.train`` rounding the minibatches per epoch down (``(n + minibatch - 1) // minibatch`` →
    ``n // minibatch``): the rows past the last full minibatch would never train the critic (and a batch smaller
    than ``value_batch_size`` would train nothing).

    Independent count: ``epochs · ceil(rows / min(batch_size, rows))`` Adam steps in an accepted update.
    """
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    model = tiny_trpo(env, value_epochs=epochs, value_batch_size=batch_size)
    batch = keras_trpo.Rollouts(env, model, steps=rows, seed=0).collect()
    logs = model.make_train_function()(iter([batch]))
    assert float(logs["step_accepted"]) == 1.0
    assert int(model.optimizer.iterations.numpy()) == epochs * -(-rows // min(batch_size, rows))


def test_the_logged_value_loss_is_the_mean_over_the_critic_minibatches():
    """Catches: ``critic.train`` logging the sum of its minibatch losses (``loss_sum / total`` → ``loss_sum``):
    ``value_loss`` would grow with ``value_epochs`` and the number of minibatches.

    Independent computation: with a learning rate of 0 the critic does not move, so every minibatch of the
    whole batch (one per epoch here) has the loss ``mean((V(s) − R)²)`` of the weights before the update.
    """
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    model = tiny_trpo(env, learning_rate=0.0, value_epochs=3, value_batch_size=64)
    batch = keras_trpo.Rollouts(env, model, steps=24, seed=0).collect()
    expected = np.mean((model.value(batch["observations"]).numpy().astype(np.float64) - batch["returns"]) ** 2)
    logs = model.make_train_function()(iter([batch]))
    assert float(logs["step_accepted"]) == 1.0
    # float32 means over 24 shuffled rows: the summation order changes the result by < 24 ulps (rtol 24·2**-24).
    np.testing.assert_allclose(float(logs["value_loss"]), expected, rtol=24 * 2**-24 + 2**-23)


DICT_SPACE = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32), "goal": spaces.Discrete(3)})


def _dict_model():
    return keras_trpo.TRPO(DICT_SPACE, spaces.Discrete(2), hidden_units=(4,), value_hidden_units=(4,), seed=0)


def _call_with(observations):
    return lambda model: model(observations)


def _train_with_float_actions(model):
    model.compile(optimizer="adam")
    n = 4
    batch = {"observations": {"position": np.zeros((n, 2), np.float32), "goal": np.zeros(n, np.int64)},
             "actions": np.array([0.0, 1.0, 0.7, 1.0], np.float32), "advantages": np.ones(n, np.float32),
             "returns": np.ones(n, np.float32)}
    return model.train_step(batch)


BAD_INPUTS = {
    # ``n = check_rows(...)`` dropped from ObservationSpec.check: entries of different row counts accepted.
    "dict entries of different row counts": (
        _call_with({"position": np.zeros((3, 2), np.float32), "goal": np.zeros(2, np.int64)}),
        r"\['position'\] has 3 rows but other entries have 2"),
    # ``if missing or extra`` → ``if missing``: a key the space does not have silently ignored.
    "an extra dict key": (
        _call_with({"position": np.zeros((2, 2), np.float32), "goal": np.zeros(2, np.int64),
                    "velocity": np.zeros((2, 2), np.float32)}),
        r"unexpected \['velocity'\]"),
    # ``"integer": dtype.is_integer or dtype.is_bool`` also accepting floats: action 0.7 silently truncated to 0.
    "float actions for a Discrete space": (_train_with_float_actions, r"batch\['actions'\] has dtype float32"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_dict_observations_and_float_discrete_actions_are_refused_in_one_line(case):
    """Catches three checks removed from the check paths (one per row of ``BAD_INPUTS``, which names its bug):
    ``ObservationSpec.check`` without the row-count rule between dict entries or without refusing extra keys,
    and ``validate_batch`` accepting float actions for an integer (Discrete) head.
    """
    run, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        run(_dict_model())


def test_a_dict_space_fast_path_answers_no_for_an_array_and_the_full_check_names_it():
    """Catches: ``ObservationSpec.is_exact_batch`` without its first guard (``if self.structured and not
    isinstance(observations, Mapping): return False`` dropped): a ``Dict``-space env returning one array would
    raise numpy's bare ``IndexError`` from the fast path (``call_env`` runs it outside its error handling)
    instead of getting the full check's one line.
    """
    from keras_trpo.observations import ObservationSpec

    spec = ObservationSpec(DICT_SPACE)
    observations = np.zeros((2, 3), np.float32)
    assert spec.is_exact_batch(observations, 2) is False
    with pytest.raises(ValueError, match=r"observations is a ndarray; expected \{'goal'"):
        spec.check(observations)


def test_a_set_without_a_key_is_an_argparse_error():
    """Catches: ``--set`` taking ``=VALUE`` without a key (``if not sep or not key`` → ``if not sep``): the empty
    key would reach the preset, which refuses it later (exit 1, after loading it) as an unknown key ''.
    """
    from keras_trpo.cli.parser import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "CartPole-v1", "--set", "=0.01"])
    assert exit_info.value.code == 2


def test_debug_lets_an_unexpected_error_through_with_its_traceback(tmp_path, capsys):
    """Catches: ``keras_trpo.cli.main`` ignoring ``--debug`` (``if args.debug: raise`` dropped): the one-line
    message says "run with --debug for the traceback", and ``--debug`` must then raise the error itself.

    The unexpected error: ``plot`` reading a run whose config.json is not JSON (``json.JSONDecodeError``).
    """
    from keras_trpo.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("env_steps,episode_return\n1,2\n")
    (tmp_path / "run" / "config.json").write_text("{")
    argv = ["plot", str(tmp_path / "run"), "-o", str(tmp_path / "plot.png")]
    assert main(argv) == 1
    assert "run with --debug for the traceback" in capsys.readouterr().err
    with pytest.raises(ValueError):
        main(["--debug", *argv])


class RecordingDense(keras.layers.Layer):
    """A value network: one Dense layer that records, when run eagerly, the observation rows of each call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, activation="tanh")
        self.calls = []

    def call(self, x):
        if tf.executing_eagerly():
            self.calls.append(np.asarray(x))
        return self.dense(x)


def test_each_critic_epoch_shuffles_the_batch_afresh():
    """Catches: ``critic.train`` slicing every epoch's minibatches from epoch 0's permutation (``permutations[epoch,
    ...]`` → ``permutations[0, ...]``): each epoch would repeat the same minibatches in the same order.

    Observed through a value network that records its inputs (the update run eagerly): 16 rows, minibatches
    of 8, 2 epochs; the two halves of epoch 1 differ from those of epoch 0 (the same split by chance:
    probability 2 / C(16, 8) ≈ 1.6e-4, and the seed is fixed).
    """
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    recorder = RecordingDense()
    model = keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_network=recorder, value_epochs=2,
                                    value_batch_size=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    batch = keras_trpo.Rollouts(env, model, steps=16, seed=0).collect()
    recorder.calls.clear()
    logs = model.make_train_function()(iter([batch]))
    assert float(logs["step_accepted"]) == 1.0
    halves = [frozenset(map(tuple, rows.tolist())) for rows in recorder.calls if len(rows) == 8]
    assert len(halves) == 4 and all(len(h) == 8 for h in halves)
    assert halves[0] | halves[1] == halves[2] | halves[3]  # each epoch covers the batch
    assert {halves[0], halves[1]} != {halves[2], halves[3]}


def test_scaling_the_rewards_of_some_sub_envs_extends_their_returns_only():
    """Catches two bugs of ``buffer.scale_rewards`` on a step where only some sub-envs made a transition (the others
    only reset): ``returns[stepped] = scaler.returns`` dropped (the stepped sub-envs' running returns lose this
    step) and ``if stepped.all()`` → ``if stepped.any()`` (the reset-only sub-envs' returns extended by a reward
    that is no transition, and their reward scaled instead of 0).

    Independent computation: ``R ← γ·R + r`` for the stepped sub-envs that did not finish, 0 for those that did,
    unchanged for the others.
    """
    from keras_trpo.buffer import scale_rewards
    from keras_trpo.normalization import RewardScaler

    gamma = 0.9
    scaler = RewardScaler(4, gamma)
    scaler.returns = np.array([1.0, 2.0, 3.0, 4.0])
    rewards = np.array([0.5, 7.0, -1.0, 2.0])
    stepped = np.array([True, False, True, True])
    done = np.array([False, False, False, True])
    scaled = scale_rewards(scaler, rewards, done, stepped)
    np.testing.assert_array_equal(scaler.returns, [gamma * 1.0 + 0.5, 2.0, gamma * 3.0 - 1.0, 0.0])
    assert scaled[1] == 0.0 and np.all(scaled[stepped] != 0.0)
