"""Generalized advantage estimation (Schulman et al., 2016, arXiv:1506.02438)."""

from __future__ import annotations

import numpy as np

from keras_trpo.validation import check_unit_interval


def compute_gae(
    rewards,
    values,
    terminated,
    truncated,
    final_values,
    gamma: float = 0.99,
    lam: float = 0.97,
    *,
    autoreset=None,
):
    """GAE(γ, λ) advantages and value targets for a time-major batch.

    Every array is ``[T, num_envs]``; row ``t`` describes the step taken from
    observation ``s_t``:

    * ``rewards[t]``: reward of that step;
    * ``values[t]``: ``V(s_t)``;
    * ``terminated[t]`` / ``truncated[t]``: the step ended the episode by a
      terminal state / by a time limit (or the env was cut off);
    * ``final_values[t]``: ``V`` of the *true* next observation returned by the
      step (before any reset). It is read only where it is needed: on truncated
      steps (a time limit is not a terminal state, so the episode is
      bootstrapped from its real last observation, not from the reset one) and
      on the last row, which bootstraps the part of the episode that continues
      into the next batch. Other entries are ignored and may hold anything.
    * ``autoreset[t]`` (optional): rows that are not real transitions, such as
      the step after an episode end under gymnasium's ``NEXT_STEP`` autoreset,
      where the env only resets. They get advantage 0 and return ``values[t]``,
      and never leak into their neighbours.

    The recursion (TRPO notes §6)::

        next_value_t = final_values[t]                if truncated_t or t == T-1
                       values[t+1]                    otherwise
        δ_t = r_t + γ·next_value_t·(1 − terminated_t) − V(s_t)
        Â_t = δ_t + γλ·(1 − done_t)·Â_{t+1},   done_t = terminated_t or truncated_t
        R_t = Â_t + V(s_t)

    Args:
        rewards, values, terminated, truncated, final_values: ``[T, num_envs]``.
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1].
        autoreset: optional bool ``[T, num_envs]`` mask of rows to drop.

    Returns:
        ``(advantages, returns)``, both float32 ``[T, num_envs]``.

    Example:

    >>> adv, ret = compute_gae([[1.0], [1.0]], [[0.0], [0.0]], [[False], [True]],
    ...                        [[False], [False]], [[0.0], [0.0]], gamma=0.5, lam=1.0)
    >>> adv[:, 0].tolist()
    [1.5, 1.0]
    """
    rewards = _as_2d("rewards", rewards, np.float64)
    shape = rewards.shape
    if shape[0] == 0:
        raise ValueError("rewards has T = 0 rows; compute_gae needs at least one step per env.")
    values = _as_2d("values", values, np.float64, shape)
    terminated = _as_2d("terminated", terminated, bool, shape)
    truncated = _as_2d("truncated", truncated, bool, shape)
    final_values = _as_2d("final_values", final_values, np.float64, shape)
    autoreset = np.zeros(shape, bool) if autoreset is None else _as_2d("autoreset", autoreset, bool, shape)
    gamma, lam = check_unit_interval("gamma", gamma), check_unit_interval("lam", lam)

    done = terminated | truncated
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = final_values[-1]
    next_values = np.where(truncated, final_values, next_values)
    # np.where rather than a multiplication by (1 − terminated): a terminal step
    # never reads its bootstrap value, even a non-finite one.
    deltas = rewards + gamma * np.where(terminated, 0.0, next_values) - values

    advantages = np.zeros_like(values)
    running = np.zeros(shape[1])
    for t in range(shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * (~done[t]) * running
        running = np.where(autoreset[t], 0.0, running)
        advantages[t] = running
    returns = advantages + values
    return advantages.astype(np.float32), returns.astype(np.float32)


def _as_2d(name, array, dtype, shape=None):
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape [T, num_envs]; got shape {list(array.shape)}.")
    if shape is not None and array.shape != shape:
        raise ValueError(
            f"{name} has shape {list(array.shape)}; expected [T, num_envs] = {list(shape)} like rewards."
        )
    if dtype is bool and array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{name} must be bool (or 0/1 integers); got dtype {array.dtype}.")
        array = array != 0
    return array.astype(dtype, copy=False)
