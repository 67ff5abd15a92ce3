"""Small environments with action masks, for issue 28 (masked TRPO) and its benchmarks.

Three ``gymnasium.Env`` classes, registered when this module is imported:

* ``keras_trpo/InvalidAction-v0``: :class:`InvalidActionEnv`, mask from ``action_masks()``;
* ``keras_trpo/InvalidActionMultiDiscrete-v0``: :class:`InvalidActionMultiDiscreteEnv`, mask in
  ``observation["action_mask"]`` and from ``action_masks()``;
* ``keras_trpo/TicTacToe-v0``: :class:`TicTacToe`, mask in ``observation["action_mask"]`` and from
  ``action_masks()``.

``action_masks()`` is sb3-contrib's ``MaskablePPO`` convention (a bool array, one entry per action;
for ``MultiDiscrete`` the per-component masks concatenated); the ``"action_mask"`` observation entry is
PettingZoo's. The first two are built like sb3-contrib's ``InvalidActionEnvDiscrete`` and have a known
optimum: an episode return of ``episode_length``. :class:`TicTacToe` needs PettingZoo
(``pip install "keras-trpo[games]"``).

This module imports only gymnasium and numpy (PettingZoo inside :class:`TicTacToe`), no other
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

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["InvalidActionEnv", "InvalidActionMultiDiscreteEnv", "TicTacToe", "heuristic_move"]

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


class TicTacToe(gymnasium.Env):
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

    metadata = {"render_modes": []}

    def __init__(self, opponent: str = "random", agent_first: bool = True):
        if opponent not in OPPONENTS:
            raise ValueError(f"opponent must be one of {OPPONENTS}, got {opponent!r}; pass opponent='random'.")
        if not isinstance(agent_first, (bool, np.bool_)):
            raise ValueError(f"agent_first must be a bool, got {agent_first!r}; pass agent_first=True or False.")
        try:
            from pettingzoo.classic import tictactoe_v3
        except ImportError as error:
            raise ImportError(f'TicTacToe needs PettingZoo ({error}): pip install "keras-trpo[games]"') from error
        self.opponent, self.agent_first = opponent, bool(agent_first)
        self._game = tictactoe_v3.env()
        self._agent, self._other = ("player_1", "player_2") if self.agent_first else ("player_2", "player_1")
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(0, 1, (3, 3, 2), np.int8),
                "action_mask": spaces.Box(0, 1, (9,), np.int8),
            }
        )
        self.action_space = spaces.Discrete(9)
        self._over = True

    def _observe(self) -> dict:
        observed = self._game.observe(self._agent)
        mask = np.ones(9, np.int8) if self._over else observed["action_mask"].astype(np.int8)
        return {"observation": observed["observation"].astype(np.int8), "action_mask": mask}

    def _cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Bool ``[9]`` vectors of the agent's and the opponent's cells, in action numbering."""
        planes = self._game.observe(self._agent)["observation"].reshape(9, 2).astype(bool)
        return planes[:, 0], planes[:, 1]

    def _opponent_move(self) -> int:
        mine, theirs = self._cells()
        if self.opponent == "heuristic":
            return heuristic_move(theirs, mine, self.np_random)
        return int(self.np_random.choice(np.flatnonzero(~(mine | theirs))))

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
            raise RuntimeError("TicTacToe.step after the game ended; call reset() first.")
        action = int(action)
        if not 0 <= action < 9 or not self.action_masks()[action]:
            self._over = True
            return self._observe(), -1.0, True, False, {"result": -1.0, "illegal": True}
        result = self._play(action)
        if result is None:
            result = self._play(self._opponent_move())
        if result is None:
            return self._observe(), 0.0, False, False, {}
        return self._observe(), result, True, False, {"result": result}

    def action_masks(self) -> np.ndarray:
        """Bool ``[9]``: the empty cells (all ones once the game is over)."""
        return self._observe()["action_mask"].astype(bool)


for _id, _cls in (
    ("keras_trpo/InvalidAction-v0", InvalidActionEnv),
    ("keras_trpo/InvalidActionMultiDiscrete-v0", InvalidActionMultiDiscreteEnv),
    ("keras_trpo/TicTacToe-v0", TicTacToe),
):
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=f"{__name__}:{_cls.__name__}")
