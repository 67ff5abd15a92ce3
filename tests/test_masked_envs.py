"""keras_trpo.masked_envs: the masked envs of issue 28 (gymnasium's checker, masks, optimum, tic-tac-toe rules)."""

from __future__ import annotations

import doctest

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.classic.tictactoe.board import Board  # the test extra has pettingzoo[classic]

import keras_trpo.masked_envs as masked_envs
from keras_trpo.masked_envs import (
    ConnectFour,
    InvalidActionEnv,
    InvalidActionMultiDiscreteEnv,
    TicTacToe,
    connect_four_move,
    heuristic_move,
)


ENV_IDS = [
    "keras_trpo/InvalidAction-v0", "keras_trpo/InvalidActionMultiDiscrete-v0", "keras_trpo/TicTacToe-v0",
    "keras_trpo/ConnectFour-v0",
]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker_passes(env_id):
    env = gymnasium.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    assert repr(first) == repr(again)


def test_module_doctest():
    assert doctest.testmod(masked_envs).failed == 0


@pytest.mark.parametrize("n_actions, n_legal", [(20, 3), (5, 5), (4, 1)])
def test_discrete_mask_holds_target_and_exactly_n_legal(n_actions, n_legal):
    env = InvalidActionEnv(n_actions, n_legal, episode_length=200)
    target, _ = env.reset(seed=0)
    others = np.zeros(n_actions)
    for _ in range(200):
        mask = env.action_masks()
        assert mask.dtype == bool and mask.shape == (n_actions,)
        assert mask[target] and mask.sum() == n_legal
        others += mask
        target, *_ = env.step(0)
    assert (others > 0).sum() == n_actions  # every action is legal some time (the others are drawn)


def test_multidiscrete_mask_per_component():
    env = InvalidActionMultiDiscreteEnv(nvec=(3, 5, 4), n_legal=2, episode_length=100)
    obs, _ = env.reset(seed=0)
    for _ in range(100):
        mask = env.action_masks()
        assert np.array_equal(obs["action_mask"], mask.astype(np.int8))
        for component, (start, stop) in enumerate([(0, 3), (3, 8), (8, 12)]):
            assert mask[start:stop].sum() == 2
            assert mask[start + obs["target"][component]]
        obs, *_ = env.step(np.zeros(3, np.int64))


@pytest.mark.parametrize(
    "env, target_of",
    [
        (InvalidActionEnv(), lambda obs: obs),
        (InvalidActionEnv(n_actions=7, n_legal=2, episode_length=9), lambda obs: obs),
        (InvalidActionMultiDiscreteEnv(), lambda obs: obs["target"]),
    ],
)
def test_oracle_reaches_optimum_and_legal_random_policy_does_not(env, target_of):
    obs, _ = env.reset(seed=1)
    oracle, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(target_of(obs))
        oracle += reward
        done = terminated or truncated
    assert oracle == env.episode_length
    obs, _ = env.reset(seed=1)
    wrong, done = 0.0, False
    while not done:  # never the target (legal or not)
        wrong_action = target_of(obs) + 1
        nvec = getattr(env.action_space, "nvec", None)
        wrong_action = wrong_action % (env.n_actions if nvec is None else nvec)
        obs, reward, terminated, truncated, _ = env.step(wrong_action)
        wrong += reward
        done = terminated or truncated
    assert wrong == 0.0


@pytest.mark.parametrize(
    "opponent, agent_first", [("random", True), ("random", False), ("heuristic", True), ("heuristic", False)]
)
def test_tictactoe_random_games_end_with_a_result(opponent, agent_first):
    env = TicTacToe(opponent, agent_first)
    rng = np.random.default_rng(0)
    results = set()
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        marks = 0 if agent_first else 1
        assert obs["observation"].sum() == marks
        done = False
        while not done:
            empty = ~obs["observation"].reshape(9, 2).any(axis=1)
            assert np.array_equal(obs["action_mask"].astype(bool), empty)  # the mask is the empty cells
            assert np.array_equal(env.action_masks(), empty)
            obs, reward, done, truncated, info = env.step(rng.choice(np.flatnonzero(empty)))
            assert not truncated and (done or reward == 0.0)
        assert reward == info["result"] and reward in (-1.0, 0.0, 1.0)
        planes = obs["observation"].reshape(9, 2).astype(bool)
        won, lost = (any(planes[list(line), side].all() for line in Board.winning_combinations) for side in (0, 1))
        assert reward == (1.0 if won else -1.0 if lost else 0.0)  # the result read off the final board
        results.add(reward)
    # against the random opponent, 30 random games see all three results; the heuristic one rarely loses
    assert results == {-1.0, 0.0, 1.0} if opponent == "random" else {-1.0, 0.0} <= results


def test_tictactoe_heuristic_blocks_an_immediate_win():
    env = TicTacToe("heuristic", agent_first=True)
    env.reset(seed=0)
    # Agent at cells 0 and 1 threatens 2; the heuristic's first reply is the centre (4), so steer it:
    # agent plays 0, heuristic takes 4; agent plays 1 (threatening 2): the heuristic must block at 2.
    obs, *_ = env.step(0)
    assert obs["observation"][..., 1].reshape(9)[4] == 1
    obs, *_ = env.step(1)
    assert obs["observation"][..., 1].reshape(9)[2] == 1


@pytest.mark.parametrize(
    "own, other, expected",
    [
        ([0, 1], [3, 4], 2),  # win beats block
        ([8], [0, 1], 2),  # block
        ([0], [], 4),  # centre
        ([6, 4], [0, 3], 2),  # win on a diagonal
    ],
)
def test_heuristic_move(own, other, expected):
    def cells(indices):
        vector = np.zeros(9, bool)
        vector[indices] = True
        return vector

    assert heuristic_move(cells(own), cells(other), np.random.default_rng(0)) == expected


@pytest.mark.parametrize("game", [TicTacToe, ConnectFour])
def test_illegal_move_loses(game):
    env, rng = game("random", agent_first=True), np.random.default_rng(0)
    for seed in range(100):  # random legal moves until a move is illegal while the game goes on
        obs, _ = env.reset(seed=seed)
        done = False
        while not done and obs["action_mask"].all():
            obs, _, done, _, _ = env.step(rng.choice(np.flatnonzero(obs["action_mask"])))
        if not done:
            break
    illegal = int(np.flatnonzero(obs["action_mask"] == 0)[0])
    obs, reward, terminated, truncated, info = env.step(illegal)
    assert (reward, terminated, truncated, info["illegal"]) == (-1.0, True, False, True)
    assert obs["action_mask"].all()  # a finished game: all ones, never an all-illegal row


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: InvalidActionEnv(n_actions=3, n_legal=4), "n_legal must be <= n_actions"),
        (lambda: InvalidActionEnv(n_legal=0), "n_legal must be an int >= 1"),
        (lambda: InvalidActionMultiDiscreteEnv(nvec=(3, 1)), "nvec must be"),
        (lambda: TicTacToe("minimax"), "opponent must be one of"),
        (lambda: ConnectFour(agent_first=1), "agent_first must be a bool"),
    ],
)
def test_bad_arguments_are_one_line_errors(make, message):
    with pytest.raises(ValueError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("hits", [0, 1, 2, 3])
def test_multidiscrete_reward_is_fraction_of_components_hit(hits):
    env = InvalidActionMultiDiscreteEnv(nvec=(5, 5, 5), n_legal=2, episode_length=4)
    obs, _ = env.reset(seed=2)
    for _ in range(4):
        action = obs["target"].copy()
        action[hits:] = (action[hits:] + 1) % 5
        obs, reward, *_ = env.step(action)
        assert reward == pytest.approx(hits / 3)


def four_in_a_row(board: np.ndarray) -> bool:
    """Any four in a row on a bool ``[6, 7]`` board (every window of 4 along rows, columns, diagonals)."""
    windows = [board[r, c:c + 4] for r in range(6) for c in range(4)]
    windows += [board[r:r + 4, c] for r in range(3) for c in range(7)]
    windows += [np.diagonal(board[r:r + 4, c:c + 4]) for r in range(3) for c in range(4)]
    windows += [np.diagonal(np.fliplr(board[r:r + 4, c:c + 4])) for r in range(3) for c in range(4)]
    return any(window.all() for window in windows)


@pytest.mark.parametrize("opponent, agent_first", [("random", True), ("random", False), ("heuristic", True)])
def test_connect_four_random_games_end_with_a_result(opponent, agent_first):
    env, rng, results = ConnectFour(opponent, agent_first), np.random.default_rng(0), set()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        assert obs["observation"].sum() == (0 if agent_first else 1)
        done = False
        while not done:
            open_columns = ~obs["observation"][0].any(axis=-1)
            assert np.array_equal(obs["action_mask"].astype(bool), open_columns)  # the columns not full
            obs, reward, done, truncated, info = env.step(rng.choice(np.flatnonzero(open_columns)))
            assert not truncated and (done or reward == 0.0)
        planes = obs["observation"].astype(bool)
        won, lost = four_in_a_row(planes[..., 0]), four_in_a_row(planes[..., 1])
        assert reward == info["result"] == (1.0 if won else -1.0 if lost else 0.0)
        results.add(reward)
    assert {-1.0, 1.0} <= results if opponent == "random" else -1.0 in results


def test_connect_four_heuristic_blocks_a_vertical_three():
    env = ConnectFour("heuristic", agent_first=True)
    env.reset(seed=0)
    for _ in range(3):  # the agent stacks column 0; the heuristic takes the centre column until it must block
        obs, *_ = env.step(0)
    assert obs["observation"][2, 0, 1] == 1 and obs["observation"][3:, 3, 1].sum() == 2


def _board(cells):
    board = np.zeros((6, 7), bool)
    for row, col in cells:
        board[row, col] = True
    return board


@pytest.mark.parametrize(
    "own, other, expected",
    [
        ([(5, 0), (5, 1), (5, 2)], [(4, 0), (4, 1), (4, 2)], 3),  # win (row) beats block
        ([(5, 6)], [(5, 0), (4, 0), (3, 0)], 0),  # block a column
        ([(5, 0)], [], 3),  # centre
        # win on the anti-diagonal (5, 1)-(2, 4), over blocking the other's row 5 at column 5
        ([(5, 1), (4, 2), (3, 3), (3, 4)], [(5, 2), (5, 3), (4, 3), (5, 4), (4, 4)], 4),
    ],
)
def test_connect_four_move(own, other, expected):
    assert connect_four_move(_board(own), _board(other), np.random.default_rng(0)) == expected
