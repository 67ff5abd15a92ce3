"""Deterministic evaluation of a policy on a separate environment."""

from __future__ import annotations

import gymnasium
import numpy as np
import tensorflow as tf

from keras_trpo.envs import action_bounds, as_vector_env, autoreset_mode, check_partial_reset, check_spaces
from keras_trpo.validation import check_int


def evaluate(model, env, episodes: int = 10, seed: int | None = None) -> list[float]:
    """Runs ``episodes`` episodes with the deterministic action (the mode) and returns their returns.

    Args:
        model: a :class:`keras_trpo.TRPO` (its observations keep their dtypes and
            ``Dict`` structure), or anything callable on a float32 batch of ``Box``
            observations returning actions (or with an ``observation_spec`` like TRPO's).
        env: an env id (evaluated on ``episodes`` parallel copies, with no wrappers: pass
            an env object for wrapped envs such as MiniGrid's ``ImgObsWrapper``), a gymnasium
            ``Env`` or a ``VectorEnv``. Use an env that is not the one training.
        episodes: number of episodes, split evenly over the sub-environments.
        seed: seeds the first reset.

    Returns:
        The undiscounted return of each episode.

    Example:

    ```python
    returns = keras_trpo.evaluate(model, "CartPole-v1", episodes=10, seed=123)
    ```
    """
    episodes = check_int("episodes", episodes)
    owned = isinstance(env, str)
    if owned:
        env = gymnasium.make_vec(env, num_envs=int(episodes), vectorization_mode="sync")
    env = as_vector_env(env)
    try:
        if hasattr(model, "observation_space"):  # a TRPO model; the CLI also passes a SavedModel's function
            check_spaces(env, model)
        check_partial_reset(env)
    except ValueError:
        if owned:
            env.close()
        raise
    act = tf.function(lambda observations: model(observations), reduce_retracing=True)
    spec = getattr(model, "observation_spec", None)  # a TRPO model: observations keep their dtypes
    prepare = (lambda o: tf.convert_to_tensor(o, tf.float32)) if spec is None else spec.numpy
    low, high = action_bounds(env)
    reset_finished = autoreset_mode(env) != gymnasium.vector.AutoresetMode.SAME_STEP
    quota = np.full(env.num_envs, episodes // env.num_envs)
    quota[: episodes % env.num_envs] += 1
    returns: list[float] = []
    running = np.zeros(env.num_envs)
    finished = np.zeros(env.num_envs, dtype=np.int64)
    observations, _ = env.reset(seed=seed)
    try:
        while (finished < quota).any():
            actions = act(prepare(observations)).numpy()
            if low is not None:
                actions = np.clip(actions, low, high)
            observations, rewards, terminated, truncated, _ = env.step(actions)
            running += rewards
            done = terminated | truncated
            for i in np.flatnonzero(done):
                if finished[i] < quota[i]:
                    returns.append(float(running[i]))
                    finished[i] += 1
            running[done] = 0.0
            if done.any() and reset_finished:
                observations, _ = env.reset(options={"reset_mask": done})
    finally:
        if owned:
            env.close()
    return returns
