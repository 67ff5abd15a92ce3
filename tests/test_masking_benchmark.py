"""benchmarks/masking.py's bookkeeping: the evaluation's counts, the one-hot wrapper, the summary's thresholds."""

import os
import sys

import numpy as np
import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCHMARKS)
try:
    import masking
finally:
    sys.path.remove(BENCHMARKS)  # benchmarks/minigrid.py would shadow the minigrid package


def first_illegal(masks):
    return np.argmin(masks, axis=1)  # an illegal action whenever the row has one


def _oracle(obs, masks):
    return obs["target"] if isinstance(obs, dict) else obs


def _first_component_illegal(obs, masks):
    actions = obs["target"].copy()
    actions[:, 0] = np.argmin(masks[:, :5], axis=1)  # nvec (5, 5, 5): component 0's illegal value
    return actions


@pytest.mark.parametrize(
    "env, policy, expected",
    [
        ("InvalidAction", _oracle, dict(mean_return=50.0, win_rate=1.0, illegal_rate=0.0)),
        ("InvalidAction", lambda obs, masks: first_illegal(masks),
         dict(mean_return=0.0, win_rate=0.0, illegal_rate=1.0)),
        ("InvalidActionMultiDiscrete", _oracle, dict(mean_return=50.0, win_rate=1.0, illegal_rate=0.0)),
        # one illegal component makes the action illegal; the other two still score 2/3 a step
        ("InvalidActionMultiDiscrete", _first_component_illegal,
         dict(mean_return=pytest.approx(50 * 2 / 3), win_rate=0.0, illegal_rate=1.0)),
    ],
)
def test_evaluate_counts_optimum_and_illegal_actions(env, policy, expected):
    result = masking.evaluate(env, policy, episodes=4)
    assert {key: result[key] for key in expected} == expected


def test_evaluate_game_rates_match_playing_the_same_games():
    def first_legal(obs, masks):
        return np.argmax(masks, axis=1)

    result = masking.evaluate("TicTacToe-random", first_legal, episodes=20)
    outcomes = []
    for i in range(20):  # the same games, played one by one on the same env seeds
        env = masking.make_env("TicTacToe-random")
        obs, _ = env.reset(seed=10_000 + i)
        done = False
        while not done:
            obs, reward, done, _, _ = env.step(int(np.argmax(obs["action_mask"])))
        outcomes.append(reward)
    outcomes = np.array(outcomes)
    assert result["mean_return"] == pytest.approx(outcomes.mean())
    assert (result["win_rate"], result["draw_rate"], result["loss_rate"]) == pytest.approx(
        ((outcomes > 0).mean(), (outcomes == 0).mean(), (outcomes < 0).mean())
    )


def test_one_hot_observation_encodes_each_target_component():
    env = masking.make_env("InvalidActionMultiDiscrete", one_hot=True)
    plain = masking.make_env("InvalidActionMultiDiscrete")
    obs, _ = env.reset(seed=0)
    twin, _ = plain.reset(seed=0)  # the same env without the wrapper: its targets as integers
    for _ in range(5):
        assert obs["target"].shape == (15,) and obs["target"].sum() == 3
        assert np.array_equal(np.flatnonzero(obs["target"]), twin["target"] + np.array([0, 5, 10]))
        assert env.observation_space.contains(obs)
        obs, *_ = env.step(twin["target"])
        twin, *_ = plain.step(twin["target"])


def test_summary_row_reports_first_evaluation_at_threshold_per_seed():
    def rows(returns):
        return [dict(env_steps=1000.0 * i, mean_return=r, win_rate=0.0, draw_rate=0.0, loss_rate=0.0,
                     illegal_rate=0.0, wall_s=float(i), train_s=float(i)) for i, r in enumerate(returns)]

    runs = {0: rows([10, 47.5, 50]), 1: rows([10, 20, 30]), 2: rows([48, 49, 40])}
    row = masking.summary_row("InvalidAction", "trpo", runs)
    assert row[9] == "1,000, never, 0"  # 47.5 itself counts; seed 2 at its first evaluation
    assert row[4] == "40.000 / 30.000" and row[5] == "43.000 / 30.000"  # final and best: mean / worst
