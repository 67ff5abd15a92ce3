"""Training sequences of a recurrent model: the batch cut per sub-env into runs of ``sequence_length`` steps.

A leaf module (numpy only).

``Rollouts`` collects time-major (row ``t·E + i`` is sub-env ``i``'s step ``t``) and stores, per
step, the recurrent state the step started from and whether an episode started at its
observation. :func:`to_sequences` reorders every ``[T·E, ...]`` column of the batch sequence-major:
sub-env ``i``'s ``T`` steps, in order, are cut into ``K = ⌈T / L⌉`` sequences of ``L`` rows, the last
one padded (a copy of the sub-env's last step) when ``L`` does not divide ``T``. Rows
``s·L … s·L + L − 1`` are sequence ``s``. The update unrolls each sequence from the state stored at
its first row, resets the state at every ``episode_starts`` flag inside it (RecurrentPPO's masking),
and weighs every mean by ``sequence_mask`` (False on padding), so padding never enters a mean.

``DEFAULT_LENGTH`` (16): long enough to infer velocities from positions (the NoVel tasks need 2–3
steps), short enough that the unrolled graph of the Fisher-vector product stays small; the stored
start states carry memory across sequence boundaries (R2D2's "stored state", Kapturowski et al. 2019).
benchmarks/README.md ("Recurrent update cost") measures the cost against the length.

Example:

>>> import numpy as np
>>> batch = {"x": np.arange(6)}              # T = 3 steps of E = 2 sub-envs, time-major
>>> out = to_sequences(batch, horizon=3, num_envs=2, length=2)
>>> out["x"].tolist(), out[MASK].tolist()
([0, 2, 4, 4, 1, 3, 5, 5], [True, True, True, False, True, True, True, False])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

#: Steps per training sequence when ``TRPO(sequence_length=...)`` is not given.
DEFAULT_LENGTH = 16
#: The batch keys of a recurrent model besides its state entries (``policy_h``, ...).
STARTS = "episode_starts"
MASK = "sequence_mask"


def padded_length(horizon: int, length: int) -> int:
    """Rows per sub-env after padding: ``⌈horizon / length⌉ · length``."""
    return -(-int(horizon) // int(length)) * int(length)


def _reorder(array: np.ndarray, horizon: int, num_envs: int, length: int) -> np.ndarray:
    """One ``[T·E, ...]`` time-major column as sequence-major ``[E·K·L, ...]`` rows (edge-padded)."""
    array = np.asarray(array)
    per_env = array.reshape(horizon, num_envs, *array.shape[1:]).swapaxes(0, 1)  # [E, T, ...]
    pad = padded_length(horizon, length) - horizon
    if pad:
        widths = [(0, 0), (0, pad)] + [(0, 0)] * (array.ndim - 1)
        per_env = np.pad(per_env, widths, mode="edge")
    return np.ascontiguousarray(per_env.reshape(-1, *array.shape[1:]))


def to_sequences(batch: Mapping[str, Any], horizon: int, num_envs: int, length: int) -> dict[str, Any]:
    """The batch with every column sequence-major (a dict column, e.g. ``Dict`` observations, per key), and
    :data:`MASK`: True on the collected steps, False on padding."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Mapping):
            out[key] = {k: _reorder(v, horizon, num_envs, length) for k, v in value.items()}
        else:
            out[key] = _reorder(value, horizon, num_envs, length)
    real = np.arange(padded_length(horizon, length)) < horizon
    out[MASK] = np.tile(real, num_envs)
    return out


def check_rows(rows: int, length: int, replicas: int = 1) -> None:
    """A recurrent batch (each replica's share of it) has whole sequences: ``rows`` a multiple of ``length``."""
    if rows % length == 0:
        return
    if replicas > 1:
        raise ValueError(f"a recurrent batch splits over the {replicas} replicas by whole sequences of sequence_length="
                         f"{length} rows, but a replica's share has {rows} rows: collect a number of sequences "
                         f"(num_envs x ceil(steps per env / {length})) that is a multiple of {replicas}.")
    raise ValueError(f"a recurrent model's batch has whole sequences of sequence_length={length} rows; got "
                     f"{rows} rows. Build it with keras_trpo.Rollouts, or keras_trpo.sequences.to_sequences.")


class Carry:
    """The recurrent state ``Rollouts`` carries per sub-env across steps and batches, and the episode-start flags.

    ``state``: ``{name: [num_envs, units]}`` float32, the state the next step starts from (before its reset);
    ``starts``: ``[num_envs]`` bool, whether the next observation starts an episode. :meth:`reset`
    (a reset of every sub-env) zeroes the state and sets every flag.
    """

    def __init__(self, sizes: Mapping[str, int], num_envs: int, dtype: Any = np.float32) -> None:
        self.sizes, self.num_envs, self.dtype = dict(sizes), int(num_envs), np.dtype(dtype)
        self.reset()

    def reset(self) -> None:
        self.state = {name: np.zeros((self.num_envs, units), self.dtype) for name, units in self.sizes.items()}
        self.starts = np.ones(self.num_envs, bool)

    def stored(self) -> dict[str, np.ndarray]:
        """What the buffer stores for this step: the flags and the state the step starts from."""
        return {STARTS: self.starts, **self.state}

    def advance(self, next_state: Mapping[str, np.ndarray], starts: np.ndarray) -> None:
        self.state, self.starts = dict(next_state), np.asarray(starts, bool).copy()

    def subset(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The state of the sub-envs ``rows``."""
        return {name: value[rows] for name, value in self.state.items()}

    def get_state(self) -> dict[str, Any]:
        return {"state": {name: value.copy() for name, value in self.state.items()}, "starts": self.starts.copy()}

    def set_state(self, saved: Mapping[str, Any]) -> None:
        """Restores :meth:`get_state`; one ValueError line if it holds other state entries or shapes."""
        shapes = {name: np.shape(value) for name, value in saved["state"].items()}
        expected = {name: (self.num_envs, units) for name, units in self.sizes.items()}
        if shapes != expected or np.shape(saved["starts"]) != (self.num_envs,):
            raise ValueError(f"the saved recurrent state has entries {shapes}; these Rollouts' model and env carry "
                             f"{expected}: resume with the model and env the state was saved with.")
        self.advance({name: np.asarray(value, self.dtype) for name, value in saved["state"].items()}, saved["starts"])
