"""Partially observed classic control, for issue 29 (recurrent policies) and its benchmarks.

:class:`NoVelocity` is a ``gymnasium.ObservationWrapper`` that keeps only the position-like entries of a
known env's ``Box`` observation (or the entries given by ``keep=``), so that a policy needs memory to act
well. Registered when this module is imported, each with its base env's ``max_episode_steps``:

* ``keras_trpo/CartPoleNoVel-v1``: ``CartPole-v1`` keeping cart position and pole angle (indices 0, 2);
* ``keras_trpo/PendulumNoVel-v1``: ``Pendulum-v1`` keeping cos θ and sin θ (0, 1), dropping θ̇;
* ``keras_trpo/MountainCarContinuousNoVel-v0``: ``MountainCarContinuous-v0`` keeping the position (0).

Against rl-baselines3-zoo (``rl_zoo3/wrappers.py``, ``MaskVelocityWrapper``, commit 22e3ff2): the same
velocity entries are hidden for these three envs (CartPole 1 and 3, Pendulum 2, MountainCarContinuous 1),
but rl-zoo multiplies them by zero and keeps the observation's shape, while ``NoVelocity`` drops them
(CartPole 2 entries instead of 4, Pendulum 2 instead of 3, MountainCarContinuous 1 instead of 2). A policy
sees the same information either way; the network's input width differs. rl-zoo's registered
``CartPoleNoVel-v1`` etc. have the same episode limits, as here.

This module imports only gymnasium and numpy, no other keras_trpo module.

>>> import gymnasium, keras_trpo.wrappers
>>> env = gymnasium.make("keras_trpo/CartPoleNoVel-v1")
>>> env.observation_space.shape, env.spec.max_episode_steps
((2,), 500)
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

__all__ = ["KEPT_ENTRIES", "NoVelocity"]

#: The observation entries ``NoVelocity`` keeps for each known env id.
KEPT_ENTRIES: dict[str, tuple[int, ...]] = {
    "CartPole-v1": (0, 2),
    "Pendulum-v1": (0, 1),
    "MountainCarContinuous-v0": (0,),
}


def _env_id(env: gymnasium.Env) -> str | None:
    spec = env.unwrapped.spec if env.unwrapped.spec is not None else env.spec
    return None if spec is None else spec.id


class NoVelocity(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """Keeps the entries ``keep`` of a 1-D ``Box`` observation (default: :data:`KEPT_ENTRIES` of the env id)."""

    def __init__(self, env: gymnasium.Env, keep: tuple[int, ...] | None = None):
        gymnasium.utils.RecordConstructorArgs.__init__(self, keep=keep)  # lets gymnasium recreate the env from its spec
        gymnasium.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"NoVelocity: env must have a 1-D Box observation space, got {space}; wrap a "
                             "vector-observation env.")
        env_id = _env_id(env)
        if keep is None:
            if env_id not in KEPT_ENTRIES:
                raise ValueError(f"NoVelocity: env {env_id!r} has no known velocity entries (known: "
                                 f"{', '.join(KEPT_ENTRIES)}); pass keep=(indices to keep).")
            keep = KEPT_ENTRIES[env_id]
        keep = tuple(keep)
        size = space.shape[0]
        if not keep or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < size
                           for i in keep) or len(set(keep)) != len(keep):
            raise ValueError(f"NoVelocity: keep must be distinct ints in [0, {size}), got {keep!r}; pass the "
                             "indices of the observation entries to keep.")
        self.keep = np.asarray(keep, dtype=np.intp)
        self.observation_space = spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation)[self.keep]


def make_no_velocity(base_id: str, **kwargs) -> gymnasium.Env:
    """The registered envs' entry point: ``gymnasium.make(base_id)`` wrapped in :class:`NoVelocity`."""
    return NoVelocity(gymnasium.make(base_id, **kwargs).unwrapped)


for _base in KEPT_ENTRIES:
    _name, _version = _base.split("-v")
    _id = f"keras_trpo/{_name}NoVel-v{_version}"
    if _id not in gymnasium.registry:
        gymnasium.register(_id, entry_point=f"{__name__}:make_no_velocity",
                           max_episode_steps=gymnasium.spec(_base).max_episode_steps, kwargs={"base_id": _base})
