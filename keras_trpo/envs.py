"""Gymnasium vector-env helpers shared by collection and evaluation.

* :func:`as_vector_env`, :func:`autoreset_mode`, :func:`action_bounds`, :func:`check_spaces`,
  :func:`check_partial_reset`;
* :func:`run_env_checker`: gymnasium's ``check_env`` on one sub-environment;
* :func:`failing_sub_env`, :func:`raised_in`: which sub-env raised, for ``RolloutError`` messages.

Imports nothing from keras_trpo.
"""

from __future__ import annotations

import traceback

import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv


def run_env_checker(env):
    """Runs gymnasium's ``check_env`` on ``env`` or, for a vector env, on one sub-environment."""
    if isinstance(env, VectorEnv):
        if hasattr(env, "envs"):
            single = env.envs[0]
        elif env.spec is not None:
            single = gymnasium.make(env.spec.id)  # the spec's kwargs are the vector env's
        else:
            raise ValueError(
                "check_env=True needs a gymnasium Env, a SyncVectorEnv, or a vector env created with "
                "gymnasium.make_vec (so its spec can be re-made); got "
                f"{type(env).__name__} without a spec."
            )
    else:
        single = env
    check_env(single.unwrapped, skip_render_check=True)


def failing_sub_env(error):
    """The index of the sub-env that raised, read from gymnasium's vector env frames.

    Gymnasium's own locals, on purpose: ``SyncVectorEnv.step``/``reset`` loop over
    sub-envs with ``i`` and ``AsyncVectorEnv._raise_if_errors`` holds ``index``, and
    neither exception says which sub-env failed. ``tests/test_env_faults.py`` checks
    the index for both, so a gymnasium change fails loudly there.
    """
    for frame, _ in traceback.walk_tb(error.__traceback__):
        name, local = frame.f_code.co_name, frame.f_locals
        if name in ("step", "reset") and isinstance(local.get("self"), gymnasium.vector.SyncVectorEnv):
            if isinstance(local.get("i"), (int, np.integer)):
                return int(local["i"])
        if name == "_raise_if_errors" and isinstance(local.get("index"), (int, np.integer)):
            return int(local["index"])
    return None


def raised_in(error, function_name) -> bool:
    """Whether ``error`` passed through a function whose name contains ``function_name``."""
    return any(function_name in frame.f_code.co_name for frame, _ in traceback.walk_tb(error.__traceback__))


def spaces_of(env) -> tuple:
    """``(observation_space, action_space)`` of a gymnasium ``Env`` or ``VectorEnv`` (its ``single_*`` spaces)."""
    observation_space = getattr(env, "single_observation_space", None) or getattr(env, "observation_space", None)
    action_space = getattr(env, "single_action_space", None) or getattr(env, "action_space", None)
    if observation_space is None or action_space is None:
        raise TypeError(
            f"env must be a gymnasium Env or VectorEnv with observation and action spaces; got {type(env).__name__}."
        )
    return observation_space, action_space


def as_vector_env(env) -> VectorEnv:
    """Returns ``env`` if it is a ``VectorEnv``, else a one-env ``SyncVectorEnv`` around it."""
    if isinstance(env, VectorEnv):
        return env
    if isinstance(env, gymnasium.Env):
        return gymnasium.vector.SyncVectorEnv([lambda: env])
    raise TypeError(f"env must be a gymnasium Env or VectorEnv; got {type(env).__name__}.")


def autoreset_mode(env: VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode (gymnasium's default, ``NEXT_STEP``, when unset).

    Under ``NEXT_STEP`` and ``DISABLED`` the caller resets finished sub-envs with
    ``env.reset(options={"reset_mask": done})`` (``Rollouts`` and ``evaluate`` do);
    under ``SAME_STEP`` the env has already reset them.
    """
    return env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)


def action_bounds(env: VectorEnv):
    """``(low, high)`` of a ``Box`` action space, to clip actions to; ``(None, None)`` otherwise."""
    space = env.single_action_space
    if isinstance(space, gymnasium.spaces.Box):
        return space.low, space.high
    return None, None


def check_partial_reset(env: VectorEnv) -> None:
    """Raises ValueError for a vector env that cannot reset only its finished sub-envs.

    Under the ``NEXT_STEP`` and ``DISABLED`` autoreset modes, ``Rollouts`` and
    ``evaluate`` reset the finished sub-envs at once with
    ``env.reset(options={"reset_mask": done})``. gymnasium's ``SyncVectorEnv`` and
    ``AsyncVectorEnv`` honour the mask; gymnasium's own vectorized implementations
    (``make_vec``'s default mode for CartPole-v1, e.g. ``CartPoleVectorEnv``) ignore
    it and restart every sub-env, so the episodes still running would be cut
    without a ``done`` and the batch would silently hold wrong transitions.
    ``SAME_STEP`` envs are never reset by the caller.
    """
    base = env.unwrapped
    if autoreset_mode(env) == AutoresetMode.SAME_STEP or isinstance(
        base, (gymnasium.vector.SyncVectorEnv, gymnasium.vector.AsyncVectorEnv)
    ):
        return
    make = f"gymnasium.make_vec({env.spec.id!r}, num_envs={env.num_envs}, " if env.spec is not None else "gymnasium.make_vec(..., "
    raise ValueError(
        f"{type(base).__name__} cannot reset only its finished sub-environments (reset ignores "
        f"options['reset_mask']), so every running episode would be cut short; use {make}"
        "vectorization_mode='sync') or 'async'."
    )


def check_spaces(env: VectorEnv, model) -> None:
    """Raises ValueError unless the vector env's spaces are the model's (``observation_space``, ``action_space``)."""
    obs_space = env.single_observation_space
    if not model.observation_spec.matches(obs_space):
        raise ValueError(
            f"env observation space {obs_space} does not match the model's observation space "
            f"{model.observation_space} (expected observations {model.observation_spec.describe()})."
        )
    if env.single_action_space != model.action_space:
        raise ValueError(
            f"env action space {env.single_action_space} does not match the model's action space "
            f"{model.action_space}."
        )
