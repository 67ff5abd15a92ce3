"""JSON-friendly (de)serialization of the gymnasium spaces a TRPO model accepts.

``TRPO.get_config`` stores its spaces with :func:`space_to_config` so that
``keras.models.load_model`` can rebuild the model without the environment.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium
import numpy as np

_SPACES = gymnasium.spaces


def space_to_config(space: gymnasium.spaces.Space) -> dict[str, Any]:
    """Returns a dict of plain Python values describing ``space``."""
    if isinstance(space, _SPACES.Box):
        return {
            "class_name": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
        }
    if isinstance(space, _SPACES.Discrete):
        return {"class_name": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, _SPACES.MultiDiscrete):
        return {
            "class_name": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
        }
    if isinstance(space, _SPACES.MultiBinary):
        n = space.n
        return {"class_name": "MultiBinary", "n": n if isinstance(n, int) else list(n)}
    if isinstance(space, _SPACES.Dict):
        return {"class_name": "Dict", "spaces": {key: space_to_config(sub) for key, sub in space.spaces.items()}}
    raise TypeError(
        f"Cannot serialize space {type(space).__name__}; supported: Box, Discrete, "
        "MultiDiscrete, MultiBinary, and a Dict of those."
    )


def space_from_config(config: Mapping[str, Any] | gymnasium.spaces.Space) -> gymnasium.spaces.Space:
    """Inverse of :func:`space_to_config`; passes gymnasium spaces through."""
    if isinstance(config, _SPACES.Space):
        return config
    config = dict(config)
    name = config.pop("class_name")
    if name == "Box":
        dtype = np.dtype(config["dtype"])
        return _SPACES.Box(
            low=np.asarray(config["low"], dtype=dtype),
            high=np.asarray(config["high"], dtype=dtype),
            shape=tuple(config["shape"]),
            dtype=dtype,
        )
    if name == "Discrete":
        return _SPACES.Discrete(config["n"], start=config.get("start", 0))
    if name == "MultiDiscrete":
        return _SPACES.MultiDiscrete(config["nvec"], start=config.get("start"))
    if name == "MultiBinary":
        return _SPACES.MultiBinary(config["n"])
    if name == "Dict":
        return _SPACES.Dict({key: space_from_config(sub) for key, sub in config["spaces"].items()})
    raise ValueError(f"Unknown space class_name {name!r} in config.")
