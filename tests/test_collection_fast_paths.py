"""The per-step fast paths of collection (issue 26) take the common step cheaply and change no bit.

Each test names the one-line bug it catches; each was checked by making that change once.
"""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo
from helpers import calls_while_collecting
from keras_trpo.buffer import RolloutBuffer, warn_non_finite
from keras_trpo.normalization import RewardScaler, _mean_and_variance
from keras_trpo.observations import ObservationSpec
from keras_trpo.policies import make_head


class Float64Env(gymnasium.Env):
    """MuJoCo's convention: a float64 ``Box`` observation space, observations in float64."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.1, 0.2, 1.0 / 3.0]), {}

    def step(self, action):
        self.t += 1
        return np.array([0.1 * self.t, 1e-9 * self.t, 1.0 / 3.0]), 1.0, False, self.t >= 7, {}


def _check_calls_while_collecting(env, steps=16):
    return calls_while_collecting(ObservationSpec.check.__code__, env, steps)


def test_float64_observations_of_a_float64_space_take_the_fast_path_and_are_stored_as_float32():
    """Bug caught: ``is_exact_batch`` accepting only the leaf dtype (``x.dtype != leaf.dtype``): every step of a
    MuJoCo env (float64 observations, stored as float32) then ran the full ``ObservationSpec.check``.

    The stored observations are the float32 cast of what the env returned, so the fast path stores the same bits.
    """
    env = gymnasium.vector.SyncVectorEnv([Float64Env, Float64Env])
    calls, batch = _check_calls_while_collecting(env)
    assert calls == []
    assert batch["observations"].dtype == np.float32
    expected_first = np.array([0.1, 0.2, 1.0 / 3.0]).astype(np.float32)
    np.testing.assert_array_equal(batch["observations"][0], expected_first)


def test_float64_observations_of_a_float32_space_still_get_the_full_check():
    """Bug caught: the fast path accepting any float dtype (``x.dtype.kind == 'f'``) instead of the space's own:
    an env that promises float32 and sends float64 would no longer be checked (the guard the fast path keeps)."""
    from test_observations import Tampered
    from test_rollouts import ChainEnv

    env = Tampered(gymnasium.vector.SyncVectorEnv([ChainEnv, ChainEnv]), lambda o: o.astype(np.float64))
    calls, _ = _check_calls_while_collecting(env, steps=8)
    assert len(calls) >= 4  # every step (and the reset)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 16, 17, 64, 129])
def test_the_reward_scalers_moments_are_numpys_mean_and_var_bit_for_bit(size):
    """Bug caught: ``_mean_and_variance`` with another reduction (``np.sum(deviation ** 2) / (x.size - 1)``, or a
    Python ``sum``, which adds in another order): reward scaling would no longer reproduce runs bit for bit."""
    rng = np.random.default_rng(size)
    for scale in (1e-6, 1.0, 1e6):
        x = rng.normal(3.0, 1.0, size) * scale
        mean, variance = _mean_and_variance(x)
        assert mean.tobytes() == np.float64(x.mean()).tobytes()
        assert variance.tobytes() == np.float64(x.var()).tobytes()


def test_the_reward_scaler_keeps_its_statistics_finite_past_a_non_finite_reward():
    """Bug caught: the finiteness test taken on the rewards instead of the running returns (or dropped): a NaN
    return entering ``merge_moments`` makes every later scale NaN."""
    scaler = RewardScaler(num_envs=2, gamma=0.9)
    scaler(np.array([1.0, 2.0]), np.array([False, False]))
    before = (scaler.mean, scaler.variance, scaler.count)
    scaler(np.array([np.nan, 1.0]), np.array([False, False]))
    assert (scaler.mean, scaler.variance, scaler.count) == before
    assert scaler.returns.tolist() == [0.0, 2.0 * 0.9 + 1.0]
    assert np.isfinite(scaler(np.array([1.0, 1.0]), np.array([False, False]))).all()


def test_whole_row_steps_stop_once_the_columns_diverge():
    """Bug caught: ``advance`` counting the whole row on (``self._row + 1`` whatever ``cells.row``): after a step
    that stored only sub-env 0, ``next_cells()`` would put both sub-envs in row 1 and overwrite sub-env 1's row."""
    head = make_head(spaces.Discrete(2))
    buffer = RolloutBuffer(ObservationSpec(spaces.Box(-1.0, 1.0, (1,), np.float32)), head, horizon=3, num_envs=2)
    first = buffer.next_cells()
    assert first.row == 0
    buffer.advance(first)
    partial = buffer.next_cells(np.array([True, False]))
    assert partial.row is None and partial.rows.tolist() == [1] and partial.columns.tolist() == [0]
    buffer.advance(partial)
    after = buffer.next_cells()
    assert after.row is None
    assert after.rows.tolist() == [2, 1] and after.columns.tolist() == [0, 1]
    buffer.advance(after)
    assert not buffer.full
    last = buffer.next_cells()
    assert last.rows.tolist() == [2] and last.columns.tolist() == [1]
    buffer.advance(last)
    assert buffer.full


def test_a_whole_row_buffer_is_full_after_horizon_steps_and_not_before():
    """Bug caught: ``full`` on the whole-row path compared with ``>`` (one step too many: an IndexError at ``add``)
    or with ``horizon - 1`` (a row left empty, zeros trained on)."""
    head = make_head(spaces.Discrete(2))
    buffer = RolloutBuffer(ObservationSpec(spaces.Box(-1.0, 1.0, (1,), np.float32)), head, horizon=4, num_envs=3)
    steps = 0
    while not buffer.full:
        cells = buffer.next_cells()
        assert cells.row == steps and cells.rows.tolist() == [steps] * 3
        buffer.add_step(cells, values=np.full(3, float(steps)))
        buffer.advance(cells)
        steps += 1
    assert steps == 4
    np.testing.assert_array_equal(buffer["values"], np.repeat(np.arange(4.0)[:, None], 3, axis=1))


def test_the_reward_scaler_still_takes_returns_whose_sum_overflows_as_finite():
    """Bug caught: finiteness judged on the returns' sum (a one-call shortcut) instead of each return: finite
    returns whose sum overflows would be dropped from the statistics like a NaN reward."""
    scaler, reference = RewardScaler(num_envs=2, gamma=0.0), RewardScaler(num_envs=2, gamma=0.0)
    huge = np.array([1e308, 1e308])
    with np.errstate(over="ignore", invalid="ignore"):  # their mean overflows (numpy says so, as ever)
        scaler(huge, np.array([False, False]))
    assert scaler.count == reference.count + 2
    assert scaler.returns.tolist() == huge.tolist()


@pytest.mark.parametrize("rewards, warns", [
    ([1.0, -2.0], False), ([1e308, 1e308], False), ([np.inf, 1.0], True), ([np.nan, 1.0], True),
    ([np.inf, -np.inf], True), ([-np.inf], True),
])
def test_non_finite_rewards_are_warned_about_once_and_only_they(rewards, warns):
    """Bugs caught: finiteness judged on the rewards' sum (huge finite rewards warned about, and numpy's own
    overflow or invalid-value warning on every such step), or the check dropped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_non_finite(np.array(rewards), t=3)
    assert [str(w.message).split(" returned")[0] for w in caught] == (
        [f"sub-environment(s) {np.flatnonzero(~np.isfinite(rewards)).tolist()}"] if warns else [])


@pytest.mark.parametrize("space", [
    spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Box(-1.0, 1.0, (2, 2), np.float32),
], ids=["box", "box2d"])  # the other heads keep the default sampler, numpy_sample of numpy_params itself
def test_the_acting_sampler_draws_what_numpy_params_and_numpy_sample_draw_bit_for_bit(space):
    """Bugs caught: the Gaussian sampler's std cached as ``log_std`` (no ``exp``), or cached once for the first
    batch size (a batch of another size then fails or takes the wrong std); the acting path would no longer
    reproduce runs bit for bit."""
    head = make_head(space)
    rng = np.random.default_rng(0)
    log_std = rng.normal(0.0, 0.5, head.action_shape).astype(np.float32) if head.has_log_std else None
    sample = head.numpy_sampler(log_std)
    for rows in (2, 5, 2):
        outputs = rng.normal(0.0, 1.0, (rows, head.num_outputs)).astype(np.float32)
        fast = sample(outputs, np.random.default_rng(rows))
        reference = head.numpy_sample(head.numpy_params(outputs, log_std), np.random.default_rng(rows))
        assert fast.dtype == reference.dtype and fast.shape == reference.shape
        assert fast.tobytes() == reference.tobytes()


@pytest.mark.parametrize("value_hidden_units, stacked, num_envs", [
    ((16, 16), True, 3), ((16, 16), True, 1), ((16, 16), True, 9), ((16, 8), False, 3), ((16,), False, 3),
])
def test_the_snapshot_stacks_equal_towers_and_gives_the_separate_towers_outputs_bit_for_bit(
    value_hidden_units, stacked, num_envs,
):  # fmt: skip
    """Bugs caught: the stacked hidden layers handed to the wrong tower's output layer (``hidden[1]`` for the
    policy), or towers of other shapes stacked (np.stack fails) instead of run apart; the acting path would no
    longer reproduce runs bit for bit. numpy computes ``[2, n, k] @ [2, k, m]`` with one matrix product per
    tower, the call it makes for that tower alone (n = 1 takes BLAS's vector path on both sides)."""
    from keras_trpo.acting import PolicySnapshot

    env = gymnasium.vector.SyncVectorEnv([Float64Env] * num_envs)
    model = keras_trpo.TRPO.for_env(env, hidden_units=(16, 16), value_hidden_units=value_hidden_units, seed=0,
                                    normalize_observations=True)
    for layer in model.policy_layers + model.value_layers:  # weights away from the initializer's zero biases
        layer.bias.assign(np.random.default_rng(1).normal(0.0, 0.5, layer.bias.shape))
    snapshot = PolicySnapshot(model)
    assert (snapshot._stacked is not None) == stacked
    observations = np.random.default_rng(2).normal(0.0, 3.0, (num_envs, *env.single_observation_space.shape))
    outputs, values = snapshot.outputs_and_values(observations)
    x = snapshot._features(observations)
    assert outputs.tobytes() == snapshot._mlp(snapshot._policy, x).tobytes()
    assert values.tobytes() == snapshot._mlp(snapshot._value, x)[:, 0].tobytes()
    assert values.tobytes() == snapshot.values(observations).tobytes()
