"""Gymnasium vector-env helpers shared by collection and evaluation.

* :func:`as_vector_env`, :func:`autoreset_mode`, :func:`action_bounds`, :func:`check_spaces`,
  :func:`skips_reset_steps` (envs whose reset ignores ``reset_mask``); EnvPool's gymnasium vector envs
  (``envpool.make_gymnasium``, :func:`envpool_config`) are accepted in its sync mode;
* :func:`mark_collecting`, :func:`release`, :func:`check_not_collecting`: which envs a ``Rollouts``
  collects with, so that ``evaluate`` refuses them;
* :func:`env_snapshot`, :func:`resume_seed`: the env pickled when its pickle keeps its state, else the
  seed of the reset that restarts it (to resume training);
* :func:`run_env_checker`: gymnasium's ``check_env`` on one sub-environment;
* :func:`call_env`: ``env.step``/``reset`` whose errors become one ``RolloutError`` naming the sub-env
  (:func:`failing_sub_env`, :func:`raised_in`), the step and the space.

Imports only keras_trpo.errors.
"""

from __future__ import annotations

import traceback
import weakref

import cloudpickle
import gymnasium
import numpy as np
from gymnasium.utils import EzPickle
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, VectorEnv

from keras_trpo.errors import RolloutError
from keras_trpo.masking import network_space


def run_env_checker(env):
    """Runs gymnasium's ``check_env`` on ``env`` or, for a vector env, on one sub-environment."""
    if envpool_config(env) is not None:
        raise ValueError(
            "check_env=True runs gymnasium's check_env on one sub-environment, and an EnvPool env's sub-environments "
            f"are C++ objects without the gymnasium Env API (got {type(env).__name__}); check the gymnasium env of "
            "the same id instead (gymnasium.utils.env_checker.check_env(gymnasium.make(...))), or pass check_env=False."
        )
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


def call_env(call, env: VectorEnv, spec, *, what: str, step: int, env_steps: int):
    """``call()`` (``env.step``/``env.reset``) with its observations checked against ``spec``.

    An exception, or observations that do not fit ``spec`` with ``env.num_envs`` rows, becomes a
    ``RolloutError`` naming the sub-env, ``what`` ran at ``step`` of this batch, ``env_steps`` (steps
    made before it) and the observation space.
    """
    try:
        result = call()
    except Exception as error:  # noqa: BLE001 - re-raised with context
        index = failing_sub_env(error)
        where = "a sub-environment" if index is None else f"sub-environment {index}"
        message = (
            f"{where} raised {type(error).__name__} in {what} at step {step} of this batch "
            f"(after {env_steps} env steps in all): {error}"
        )
        if raised_in(error, "concatenate"):
            message += f". Its observation does not fit the observation space {env.single_observation_space}."
        raise RolloutError(message) from error
    if spec.is_exact_batch(result[0], env.num_envs):
        return result
    try:
        spec.check(result[0], what=f"env.{what}'s observations")
        rows = {np.shape(o)[0] for o in spec.flatten(result[0])}
        if rows != {env.num_envs}:
            raise ValueError(f"env.{what}'s observations have {sorted(rows)} rows; expected num_envs = "
                             f"{env.num_envs} rows")
    except (ValueError, KeyError, TypeError) as error:
        raise RolloutError(f"{error} (env observation space {env.single_observation_space})") from None
    return result


def spaces_of(env) -> tuple:
    """``(observation_space, action_space)`` of a gymnasium ``Env`` or ``VectorEnv`` (its ``single_*`` spaces)."""
    observation_space = getattr(env, "single_observation_space", None) or getattr(env, "observation_space", None)
    action_space = getattr(env, "single_action_space", None) or getattr(env, "action_space", None)
    if observation_space is None or action_space is None:
        raise TypeError(
            f"env must be a gymnasium Env or VectorEnv with observation and action spaces; got {type(env).__name__}."
        )
    return observation_space, action_space


#: The envs some ``Rollouts`` collects with (each vector env and its sub-envs): evaluating on one of them
#: would reset it behind the rollouts' back.
_COLLECTING = weakref.WeakSet()


def _every_layer(env):
    """``env``, every wrapper layer of it, and every layer of its sub-envs (a ``SyncVectorEnv``'s ``envs``)."""
    layers = list(_layers(env))
    return [*layers, *(inner for sub in getattr(layers[-1], "envs", ()) for inner in _layers(sub))]


def mark_collecting(env: VectorEnv) -> None:
    """Records that ``env`` (every layer of it and of its sub-envs) is stepped by a ``Rollouts``."""
    _COLLECTING.update(_every_layer(env))


def release(env: VectorEnv) -> None:
    """Closes an env a ``Rollouts`` no longer collects with, and forgets that it did."""
    for layer in _every_layer(env):
        _COLLECTING.discard(layer)
    env.close()


def check_not_collecting(env) -> None:
    """Raises ValueError if ``env``, a layer of it or of its sub-envs is collected with (:func:`mark_collecting`)."""
    if not isinstance(env, str) and any(layer in _COLLECTING for layer in _every_layer(env)):
        raise ValueError(
            "env is the environment a keras_trpo.Rollouts collects with: evaluating on it would reset it behind the "
            "rollouts' back, and the next batch would continue from observations the env no longer has; evaluate "
            "on another env (an env id, or a second gymnasium.make_vec)."
        )


def envpool_config(env):
    """EnvPool's config dict (``num_envs``, ``batch_size``, ``seed``, ...) if ``env`` is an EnvPool env, also under
    gymnasium's wrappers and vector wrappers, else None.

    Recognised by the envpool modules among its class's bases, without importing envpool (an optional extra).
    """
    env = getattr(env, "unwrapped", env)
    if any(base.__module__.startswith("envpool.") for base in type(env).__mro__):
        return dict(getattr(env, "config", None) or {})
    return None


def reset_seed(env, seed):
    """The seed to pass to ``env.reset``: ``seed``, or None for an EnvPool env.

    EnvPool is seeded when it is made (``envpool.make_gymnasium(..., seed=...)``); its ``reset(seed=...)``
    ignores the seed with a warning. ``Rollouts`` and ``evaluate`` reset through this one rule.
    """
    return None if envpool_config(env) is not None else seed


def _check_envpool(env, config) -> None:
    """Raises ValueError for an EnvPool env that ``Rollouts`` and ``evaluate`` cannot step: not a gymnasium
    ``VectorEnv`` (envpool < 1.2), or in async mode (``batch_size`` < ``num_envs``: a step returns only
    ``batch_size`` sub-envs, in the order they finished)."""
    if not isinstance(env, VectorEnv):
        raise ValueError(
            f"env is an EnvPool env ({type(env).__name__}) that is not a gymnasium VectorEnv; keras_trpo takes "
            'envpool.make_gymnasium(...) from envpool >= 1.2 (pip install "keras-trpo[envpool]").'
        )
    batch_size, num_envs = config.get("batch_size", 0), config.get("num_envs")
    if batch_size not in (0, num_envs) or config.get("max_num_players", 1) != 1:
        raise ValueError(
            f"env is an EnvPool env in async mode (batch_size={batch_size}, num_envs={num_envs}): each step would "
            "return only batch_size sub-environments, in the order they finished, and keras_trpo steps every "
            "sub-environment each step; make it with batch_size=num_envs (envpool's default, its sync mode)."
        )


def as_vector_env(env) -> VectorEnv:
    """Returns ``env`` if it is a ``VectorEnv``, else a one-env ``SyncVectorEnv`` around it.

    An EnvPool env (``envpool.make_gymnasium``) is a ``VectorEnv`` and is returned as is in its sync mode
    (``batch_size == num_envs``; it then returns the sub-envs in ``env_id`` order); else ValueError.
    """
    inner = getattr(env, "unwrapped", env)  # also under gymnasium's vector wrappers
    config = envpool_config(inner)
    if config is not None:
        _check_envpool(inner, config)
    if isinstance(env, VectorEnv):
        return env
    if isinstance(env, gymnasium.Env):
        return gymnasium.vector.SyncVectorEnv([lambda: env])
    raise TypeError(f"env must be a gymnasium Env or VectorEnv; got {type(env).__name__}.")


def autoreset_mode(env: VectorEnv) -> AutoresetMode:
    """The vector env's autoreset mode (gymnasium's default, ``NEXT_STEP``, when unset).

    Under ``NEXT_STEP`` and ``DISABLED`` the caller resets finished sub-envs with
    ``env.reset(options={"reset_mask": done})`` (``Rollouts`` and ``evaluate`` do; for envs that
    ignore the mask see :func:`skips_reset_steps`); under ``SAME_STEP`` the env has already reset them.
    """
    return env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)


def action_bounds(env: VectorEnv):
    """``(low, high)`` of a ``Box`` action space, to clip actions to; ``(None, None)`` otherwise."""
    space = env.single_action_space
    if isinstance(space, gymnasium.spaces.Box):
        return space.low, space.high
    return None, None


def _ignores_reset_mask(env: VectorEnv) -> bool:
    """Whether the caller would reset ``env``'s finished sub-envs but cannot reset them alone.

    gymnasium's ``SyncVectorEnv`` and ``AsyncVectorEnv`` honour ``reset(options={"reset_mask": done})``;
    gymnasium's own vectorized implementations (``make_vec``'s default mode for CartPole-v1, e.g.
    ``CartPoleVectorEnv``) ignore it and restart every sub-env. EnvPool resets the masked sub-envs but
    returns only their rows (not the ``num_envs`` rows gymnasium's API returns), so it too is stepped
    through its own resets (its ``NEXT_STEP`` autoreset). ``SAME_STEP`` envs are never reset by the caller.
    """
    return autoreset_mode(env) != AutoresetMode.SAME_STEP and not isinstance(
        env.unwrapped, (gymnasium.vector.SyncVectorEnv, gymnasium.vector.AsyncVectorEnv)
    )


def _sync_hint(env: VectorEnv) -> str:
    if getattr(env.spec, "id", None) is not None:
        return f"gymnasium.make_vec({env.spec.id!r}, num_envs={env.num_envs}, vectorization_mode='sync')"
    return "gymnasium.make_vec(..., vectorization_mode='sync')"


def skips_reset_steps(env: VectorEnv) -> bool:
    """Whether ``Rollouts`` and ``evaluate`` must step through the env's own resets instead of resetting sub-envs.

    True for a ``NEXT_STEP`` vector env whose ``reset`` ignores ``reset_mask`` (gymnasium's
    ``CartPoleVectorEnv``, built by ``gymnasium.make_vec("CartPole-v1", num_envs=8)``; EnvPool): the step
    after a sub-env's episode end is then its reset step (the action is ignored, the observation
    is the next episode's first, reward 0, no ``done``), which is no transition. False for envs the
    caller can reset alone and for ``SAME_STEP`` envs. Raises ValueError for such an env under
    ``DISABLED`` autoreset, where nothing would restart a finished sub-env without cutting the others.
    """
    if not _ignores_reset_mask(env):
        return False
    if autoreset_mode(env) == AutoresetMode.NEXT_STEP:
        return True
    raise ValueError(
        f"{type(env.unwrapped).__name__} with autoreset_mode {autoreset_mode(env).name} cannot reset only its "
        "finished sub-environments (reset ignores options['reset_mask']) and never resets them itself; use "
        f"its NEXT_STEP autoreset mode (gymnasium's default) or {_sync_hint(env)}."
    )


def _layers(env):
    """``env`` and every env it wraps (``.env`` of gymnasium's wrappers and vector wrappers), outermost first."""
    while env is not None:
        yield env
        inner = getattr(env, "env", None)
        env = inner if inner is not env else None


def _why_not_snapshot(env: VectorEnv):
    """Why pickling ``env`` would not keep its state (before trying it), or None."""
    if isinstance(env.unwrapped, gymnasium.vector.AsyncVectorEnv):
        return "AsyncVectorEnv: its sub-environments live in worker processes"
    if envpool_config(env) is not None:
        # Its reset(seed=...) warns and is ignored: the resumed env continues EnvPool's own seed stream.
        return "EnvPool: its sub-environments are C++ objects that do not pickle (seeded once, by envpool.make_gymnasium)"
    for layer in _every_layer(env):
        if isinstance(layer, EzPickle):
            # EzPickle's __setstate__ builds a new object from the constructor's arguments: a fresh
            # env, not the one mid-episode (gymnasium's MuJoCo, Box2D and ale_py's Atari envs).
            return f"{type(layer).__name__} pickles its constructor arguments, not its state (gymnasium.utils.EzPickle)"
    return None


def env_snapshot(env: VectorEnv):
    """``(bytes, None)``: ``env`` pickled with its whole state; or ``(None, why)`` when that is not possible.

    cloudpickle (a gymnasium dependency) pickles local factories by value, such as the
    ``create_single_env`` closures of ``gymnasium.make_vec`` and lambdas given as ``wrappers``.
    Not snapshotted: an ``AsyncVectorEnv`` (sub-envs in other processes), an env any layer of
    which is a ``gymnasium.utils.EzPickle`` (its pickle re-creates it from its constructor
    arguments, losing the episode), and an env whose pickling raises.
    """
    why = _why_not_snapshot(env)
    if why is None:
        try:
            return cloudpickle.dumps(env), None
        except Exception as error:  # noqa: BLE001 - any failure means: resume from a reset
            why = f"pickling it raised {type(error).__name__}: {error}"
    return None, why


def resume_seed(seed: int, env_steps: int) -> int:
    """The seed of the reset that restarts an env resumed without its saved state (a function of both)."""
    return int(np.random.SeedSequence([int(seed), int(env_steps)]).generate_state(1)[0])


def check_spaces(env: VectorEnv, model) -> None:
    """Raises ValueError unless the vector env's spaces are the model's (``observation_space``, ``action_space``)."""
    # An action_mask entry the networks do not see is read by the masks' reader (keras_trpo.masking), not matched.
    obs_space = network_space(env.single_observation_space, model.observation_spec.keys)
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
