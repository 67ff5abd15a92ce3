"""Small environments with action masks, for issue 28 (masked TRPO) and its benchmarks.

Four ``gymnasium.Env`` classes, registered when this module is imported:

* ``keras_trpo/InvalidAction-v0``: :class:`InvalidActionEnv`, mask from ``action_masks()``;
* ``keras_trpo/InvalidActionMultiDiscrete-v0``: :class:`InvalidActionMultiDiscreteEnv`, mask in
  ``observation["action_mask"]`` and from ``action_masks()``;
* ``keras_trpo/TicTacToe-v0``: :class:`TicTacToe`, mask in ``observation["action_mask"]`` and from
  ``action_masks()``;
* ``keras_trpo/ConnectFour-v0``: :class:`ConnectFour`, the same with PettingZoo's connect four.

``action_masks()`` is sb3-contrib's ``MaskablePPO`` convention (a bool array, one entry per action;
for ``MultiDiscrete`` the per-component masks concatenated); the ``"action_mask"`` observation entry is
PettingZoo's. The first two are built like sb3-contrib's ``InvalidActionEnvDiscrete`` and have a known
optimum: an episode return of ``episode_length``. :class:`TicTacToe` and :class:`ConnectFour` need PettingZoo
(``pip install "keras-trpo[games]"``).

This module imports only gymnasium and numpy (PettingZoo inside the games' constructors), no other
keras_trpo module.

>>> import gymnasium, numpy as np, keras_trpo.masked_envs
>>> env = gymnasium.make("keras_trpo/InvalidAction-v0", n_actions=10, n_legal=3, episode_length=5)
>>> target, _ = env.reset(seed=0)
>>> mask = env.unwrapped.action_masks()
>>> bool(mask[target]), int(mask.sum())
(True, 3)
>>> _, reward, terminated, truncated, _ = env.step(target)
>>> reward, terminated, truncated
(1.0, False, False)
"""

from __future__ import annotations

import importlib

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = [
    "ConnectFour", "InvalidActionEnv", "InvalidActionMultiDiscreteEnv", "TicTacToe", "connect_four_move",
    "heuristic_move",
]

#: The eight lines of three cells of a tic-tac-toe board (any fixed numbering of its 9 cells).
WINNING_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
OPPONENTS = ("random", "heuristic")


def _check_int(name: str, value, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}; {fix}.")
    return int(value)


def _legal_with(rng: np.random.Generator, n: int, target: int, n_legal: int) -> np.ndarray:
    """Bool ``[n]``: ``target`` and ``n_legal - 1`` other actions drawn without replacement."""
    others = np.delete(np.arange(n), target)
    mask = np.zeros(n, bool)
    mask[target] = True
    mask[rng.choice(others, n_legal - 1, replace=False)] = True
    return mask


class InvalidActionEnv(gymnasium.Env):
    """``n_actions`` actions, ``n_legal`` of them legal per step; reward 1 for the target action.

    The state is a target action drawn uniformly each step, and it is the observation
    (``Discrete(n_actions)``). The legal actions are the target and ``n_legal - 1`` other actions
    drawn at random, given by :meth:`action_masks`. Reward 1 for choosing the target, 0 for any other
    action, legal or not (an illegal action is not rewarded and the state moves on as usual). The
    episode is truncated after ``episode_length`` steps, so the optimum return is ``episode_length``;
    a uniform legal policy gets ``episode_length / n_legal``, a uniform policy over all actions
    ``episode_length / n_actions``. Random numbers come from ``self.np_random`` (``reset(seed=...)``).
    """

    metadata = {"render_modes": []}

    def __init__(self, n_actions: int = 20, n_legal: int = 3, episode_length: int = 50):
        self.n_actions = _check_int("n_actions", n_actions, 2, "pass the number of actions, e.g. n_actions=20")
        self.n_legal = _check_int("n_legal", n_legal, 1, "pass e.g. n_legal=3")
        if self.n_legal > self.n_actions:
            raise ValueError(f"n_legal must be <= n_actions ({n_actions}), got {n_legal}; lower n_legal.")
        self.episode_length = _check_int("episode_length", episode_length, 1, "pass e.g. episode_length=50")
        self.observation_space = spaces.Discrete(self.n_actions)
        self.action_space = spaces.Discrete(self.n_actions)
        self._target = 0
        self._mask = np.ones(self.n_actions, bool)
        self._t = 0

    def _draw(self) -> int:
        self._target = int(self.np_random.integers(self.n_actions))
        self._mask = _legal_with(self.np_random, self.n_actions, self._target, self.n_legal)
        return self._target

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action):
        reward = float(int(action) == self._target)
        self._t += 1
        return self._draw(), reward, False, self._t >= self.episode_length, {}

    def action_masks(self) -> np.ndarray:
        """Bool ``[n_actions]``: the legal actions of the current state (a copy)."""
        return self._mask.copy()


class InvalidActionMultiDiscreteEnv(gymnasium.Env):
    """The ``MultiDiscrete(nvec)`` twin of :class:`InvalidActionEnv`: one target per component.

    Each step draws a target per component and, per component, ``n_legal`` legal values (its target
    and ``n_legal - 1`` others). Observation: ``{"target": MultiDiscrete(nvec), "action_mask":
    MultiBinary(sum(nvec))}``, the mask being the per-component masks concatenated (sb3-contrib's
    layout), also returned by :meth:`action_masks`. Reward: the fraction of components that hit their
    target, so the optimum return is ``episode_length`` (truncated after ``episode_length`` steps).
    """

    metadata = {"render_modes": []}

    def __init__(self, nvec=(5, 5, 5), n_legal: int = 2, episode_length: int = 50):
        nvec = np.asarray(nvec)
        if nvec.ndim != 1 or nvec.size == 0 or not np.issubdtype(nvec.dtype, np.integer) or (nvec < 2).any():
            raise ValueError(
                f"nvec must be a non-empty sequence of ints >= 2, got {nvec.tolist()!r}; pass e.g. (5, 5, 5)."
            )
        self.nvec = nvec.astype(np.int64)
        self.n_legal = _check_int("n_legal", n_legal, 1, "pass e.g. n_legal=2")
        if self.n_legal > self.nvec.min():
            raise ValueError(f"n_legal must be <= min(nvec) ({self.nvec.min()}), got {n_legal}; lower n_legal.")
        self.episode_length = _check_int("episode_length", episode_length, 1, "pass e.g. episode_length=50")
        self.observation_space = spaces.Dict(
            {"target": spaces.MultiDiscrete(self.nvec), "action_mask": spaces.MultiBinary(int(self.nvec.sum()))}
        )
        self.action_space = spaces.MultiDiscrete(self.nvec)
        self._target = np.zeros(len(self.nvec), np.int64)
        self._mask = np.ones(int(self.nvec.sum()), bool)
        self._t = 0

    def _draw(self) -> dict:
        self._target = np.array([self.np_random.integers(n) for n in self.nvec], np.int64)
        masks = [_legal_with(self.np_random, int(n), int(t), self.n_legal) for n, t in zip(self.nvec, self._target)]
        self._mask = np.concatenate(masks)
        return {"target": self._target.copy(), "action_mask": self._mask.astype(np.int8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action):
        reward = float(np.mean(np.asarray(action).reshape(-1) == self._target))
        self._t += 1
        return self._draw(), reward, False, self._t >= self.episode_length, {}

    def action_masks(self) -> np.ndarray:
        """Bool ``[sum(nvec)]``: the per-component legal values, concatenated (a copy)."""
        return self._mask.copy()


def heuristic_move(own: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> int:
    """The heuristic opponent's move on a board given as two bool ``[9]`` cell vectors.

    Win if it can (complete a line of ``own``), else block (the cell that completes a line of
    ``other``), else the centre (cell 4), else a uniformly random empty cell.
    """
    empty = ~(own | other)
    for player in (own, other):
        for line in WINNING_LINES:
            cells = list(line)
            if player[cells].sum() == 2 and empty[cells].any():
                return cells[int(np.flatnonzero(empty[cells])[0])]
    if empty[4]:
        return 4
    return int(rng.choice(np.flatnonzero(empty)))


def _lands(column: np.ndarray) -> int:
    """The row where a piece dropped into ``column`` (bool ``[rows]``, True = occupied, row 0 on top) lands."""
    return int(np.flatnonzero(~column)[-1])


def _connects_four(board: np.ndarray, row: int, col: int) -> bool:
    """Whether the piece at ``board[row, col]`` (bool ``[6, 7]``) is part of four in a row."""
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        count = 1
        for sign in (1, -1):
            r, c = row + sign * dr, col + sign * dc
            while 0 <= r < board.shape[0] and 0 <= c < board.shape[1] and board[r, c]:
                count, r, c = count + 1, r + sign * dr, c + sign * dc
        if count >= 4:
            return True
    return False


def connect_four_move(own: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> int:
    """The heuristic opponent's column on a connect-four board given as two bool ``[6, 7]`` arrays (row 0 on top).

    Win if a drop makes four of ``own``, else block a drop that would make four of ``other``, else the
    centre column (3), else a uniformly random open column.
    """
    occupied = own | other
    legal = np.flatnonzero(~occupied[0])
    for player in (own, other):
        for col in legal:
            board = player.copy()
            row = _lands(occupied[:, col])
            board[row, col] = True
            if _connects_four(board, row, col):
                return int(col)
    if 3 in legal:
        return 3
    return int(rng.choice(legal))


class _BoardGame(gymnasium.Env):
    """A two-player PettingZoo classic game as a single-agent env against a fixed opponent (see the subclasses)."""

    metadata = {"render_modes": []}
    #: The pettingzoo.classic module, the board planes' shape and the number of actions.
    _module, _shape, _n = "", (), 0

    def __init__(self, opponent: str = "random", agent_first: bool = True):
        if opponent not in OPPONENTS:
            raise ValueError(f"opponent must be one of {OPPONENTS}, got {opponent!r}; pass opponent='random'.")
        if not isinstance(agent_first, (bool, np.bool_)):
            raise ValueError(f"agent_first must be a bool, got {agent_first!r}; pass agent_first=True or False.")
        name = type(self).__name__
        try:
            game = importlib.import_module(f"pettingzoo.classic.{self._module}")
        except ImportError as error:
            raise ImportError(f'{name} needs PettingZoo ({error}): pip install "keras-trpo[games]"') from error
        self.opponent, self.agent_first = opponent, bool(agent_first)
        self._game = game.env()
        first, second = self._game.possible_agents
        self._agent, self._other = (first, second) if self.agent_first else (second, first)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(0, 1, self._shape, np.int8),
                "action_mask": spaces.Box(0, 1, (self._n,), np.int8),
            }
        )
        self.action_space = spaces.Discrete(self._n)
        self._over = True

    def _observe(self) -> dict:
        observed = self._game.observe(self._agent)
        mask = np.ones(self._n, np.int8) if self._over else observed["action_mask"].astype(np.int8)
        return {"observation": observed["observation"].astype(np.int8), "action_mask": mask}

    def _heuristic(self, own: np.ndarray, other: np.ndarray) -> int:
        raise NotImplementedError

    def _opponent_move(self) -> int:
        """The opponent's move, from the boards (plane 0 the agent's pieces, plane 1 the opponent's)."""
        planes = self._game.observe(self._agent)["observation"].astype(bool)
        mine, theirs = planes[..., 0], planes[..., 1]
        if self.opponent == "heuristic":
            return self._heuristic(theirs, mine)
        return int(self.np_random.choice(np.flatnonzero(self._game.observe(self._other)["action_mask"])))

    def _play(self, action: int) -> float | None:
        """Plays one move; the agent's reward if that ended the game, else None."""
        self._game.step(action)
        if self._game.terminations[self._agent]:
            self._over = True
            return float(self._game.rewards[self._agent])
        return None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._game.reset()
        self._over = False
        if not self.agent_first:
            self._play(self._opponent_move())
        return self._observe(), {}

    def step(self, action):
        if self._over:
            raise RuntimeError(f"{type(self).__name__}.step after the game ended; call reset() first.")
        action = int(action)
        if not 0 <= action < self._n or not self.action_masks()[action]:
            self._over = True
            return self._observe(), -1.0, True, False, {"result": -1.0, "illegal": True}
        result = self._play(action)
        if result is None:
            result = self._play(self._opponent_move())
        if result is None:
            return self._observe(), 0.0, False, False, {}
        return self._observe(), result, True, False, {"result": result}

    def action_masks(self) -> np.ndarray:
        """Bool ``[n]``: the legal moves (all ones once the game is over)."""
        return self._observe()["action_mask"].astype(bool)


class TicTacToe(_BoardGame):
    """PettingZoo's tic-tac-toe (``tictactoe_v3``) as a single-agent env against a fixed opponent.

    The agent plays the first mover (``agent_first=True``) or the second; the opponent, ``"random"``
    (a uniformly random empty cell) or ``"heuristic"`` (:func:`heuristic_move`: win, else block, else
    centre, else random), plays the other side with moves drawn from ``self.np_random``, so an episode
    is reproducible from ``reset(seed=...)``. Observation: the agent's PettingZoo observation
    ``{"observation": Box(0, 1, (3, 3, 2), int8), "action_mask": Box(0, 1, (9,), int8)}`` (plane 0 the
    agent's marks, plane 1 the opponent's; the mask is the empty cells, also :meth:`action_masks`).
    At the end of a game the mask is all ones: the game is over and the action that a vector env's
    ``NEXT_STEP`` autoreset step ignores must not face an all-illegal row. Reward at the end: +1 win,
    -1 loss, 0 draw; ``info["result"]`` is the same number. An illegal action by the agent (an
    occupied cell, only possible without the mask) ends the episode at once with reward -1 and
    ``info["illegal"] = True``.
    """

    _module, _shape, _n = "tictactoe_v3", (3, 3, 2), 9

    def _heuristic(self, own: np.ndarray, other: np.ndarray) -> int:
        return heuristic_move(own.reshape(9), other.reshape(9), self.np_random)


class ConnectFour(_BoardGame):
    """PettingZoo's connect four (``connect_four_v3``) against a fixed opponent: :class:`TicTacToe`'s design.

    Actions: the 7 columns; observation ``{"observation": Box(0, 1, (6, 7, 2), int8), "action_mask":
    Box(0, 1, (7,), int8)}`` (the mask: the columns not full). The ``"heuristic"`` opponent is
    :func:`connect_four_move` (win, else block, else the centre column, else random). Rewards, the
    mask at the end of a game and illegal moves (-1, the episode ends) as in :class:`TicTacToe`.
    """

    _module, _shape, _n = "connect_four_v3", (6, 7, 2), 7

    def _heuristic(self, own: np.ndarray, other: np.ndarray) -> int:
        return connect_four_move(own, other, self.np_random)


for _id, _cls in (
    ("keras_trpo/InvalidAction-v0", InvalidActionEnv),
    ("keras_trpo/InvalidActionMultiDiscrete-v0", InvalidActionMultiDiscreteEnv),
    ("keras_trpo/TicTacToe-v0", TicTacToe),
    ("keras_trpo/ConnectFour-v0", ConnectFour),
):
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=f"{__name__}:{_cls.__name__}")
