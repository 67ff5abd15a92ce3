"""The rollout buffer: one batch's transitions, time-major ``[horizon, num_envs, ...]``, and the batch dict.

``Rollouts`` steps the env and keeps the episodes; the buffer owns the storage (written with
:meth:`RolloutBuffer.add`), the advantages (:func:`keras_trpo.advantages.compute_gae`) and the
batch dict (:meth:`RolloutBuffer.batch`), like sb3's ``RolloutBuffer``. Every stored array is
declared once, in :func:`stored_fields`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from keras_trpo.advantages import compute_gae
from keras_trpo.normalization import RewardScaler
from keras_trpo.observations import ObservationSpec
from keras_trpo.policies import PolicyHead


@dataclasses.dataclass(frozen=True)
class Field:
    """One stored array: its per-step ``shape`` and ``dtype``; ``in_batch``: served as ``batch[name]``."""

    shape: tuple
    dtype: np.dtype
    in_batch: bool = False


def stored_fields(spec: ObservationSpec, head: PolicyHead, mask_size: int = 0,
                  state_sizes: Mapping[str, int] | None = None, state_dtype: Any = np.float32,
                  ) -> dict[str, Field | dict[str, Field]]:
    """Every array the buffer stores per transition, by name: the one place to declare one.

    A new field is one entry here, and its value passed to :meth:`RolloutBuffer.add`; with
    ``in_batch=True`` it is also served in the batch, ``[horizon · num_envs, *shape]``, time-major.
    Observations are in the space's dtypes (``uint8`` images stay ``uint8``), one array per key
    of a ``Dict`` space. ``final_values[t, i]`` is ``V`` of the observation that followed row ``t``
    of sub-env ``i``; GAE reads it on truncated rows and on each column's last row. With ``mask_size``
    (a masked model, :mod:`keras_trpo.masking`) each step's legal-action flags are ``action_masks``.
    With ``state_sizes`` (a recurrent model, :mod:`keras_trpo.sequences`) each step's state before it
    (``policy_h``, ...) and whether an episode started at its observation (``episode_starts``).
    """
    observations = spec.structure(Field(leaf.shape, leaf.dtype, in_batch=True) for leaf in spec.leaves)
    masks = {"action_masks": Field((mask_size,), np.dtype(bool), True)} if mask_size else {}
    if state_sizes:
        masks["episode_starts"] = Field((), np.dtype(bool), True)
        masks.update({name: Field((units,), np.dtype(state_dtype), True) for name, units in state_sizes.items()})
    return {
        "observations": observations,
        "actions": Field(head.action_shape, np.dtype(np.int64 if head.integer_actions else np.float32), True),
        "values": Field((), np.dtype(np.float64)),
        "rewards": Field((), np.dtype(np.float64)),
        "terminated": Field((), np.dtype(bool)),
        "truncated": Field((), np.dtype(bool)),
        "final_values": Field((), np.dtype(np.float64)),
        **masks,
    }


def _per_key(fn, field, *values):
    """``fn(field, *arrays)``, key by key when ``field`` is a dict (a ``Dict`` observation space)."""
    if isinstance(field, Mapping):
        return {key: fn(field[key], *(value[key] for value in values)) for key in field}
    return fn(field, *values)


class Cells(NamedTuple):
    """Where one env step's transitions go (:meth:`RolloutBuffer.next_cells`): sub-env ``columns[j]`` in row ``rows[j]``.

    ``row`` is that one row when every sub-env stores in it (a whole-row write, the step of most envs), else None.
    """

    rows: np.ndarray
    columns: np.ndarray
    row: int | None


class RolloutBuffer:
    """The ``[horizon, num_envs, ...]`` storage of one batch: column ``i`` holds sub-env ``i``'s transitions in order.

    Args:
        spec: the model's observation spec.
        head: the model's action head (action shape and dtype).
        horizon: rows per sub-env (``steps / num_envs``).
        num_envs: columns, one per sub-env.
        fields: what is stored, by name; :func:`stored_fields` by default.
        mask_size: the width of an action mask (0: no masks stored).
        state_sizes: ``{state name: units}`` of a recurrent model (``None``: no states stored), in ``state_dtype``
            (the model's float type).

    Attributes:
        fields: the stored fields.
        storage: one zero-initialized array per field (a dict of arrays for ``Dict`` observations).
        kept: ``[num_envs]``, the rows filled per sub-env (:meth:`advance`).
    """

    def __init__(
        self, spec: ObservationSpec, head: PolicyHead, horizon: int, num_envs: int,
        fields: dict[str, Field | dict[str, Field]] | None = None, mask_size: int = 0,
        state_sizes: Mapping[str, int] | None = None, state_dtype: Any = np.float32,
    ) -> None:  # fmt: skip
        self.horizon, self.num_envs = int(horizon), int(num_envs)
        self.fields = stored_fields(spec, head, mask_size, state_sizes, state_dtype) if fields is None else dict(fields)
        self.storage = {
            name: _per_key(lambda f: np.zeros((self.horizon, self.num_envs, *f.shape), f.dtype), field)
            for name, field in self.fields.items()
        }
        self.kept = np.zeros(self.num_envs, np.int64)
        # The per-step bookkeeping is paid once per vector step (with 2 MuJoCo envs, a third of the env's own
        # cost): while every column has the same number of rows (always, unless reset-only steps are left out),
        # that number is kept as a Python int and the cells of the next row are views of constant arrays.
        self._row: int | None = 0
        self._columns = np.arange(self.num_envs)
        self._row_cells = np.repeat(np.arange(self.horizon + 1)[:, None], self.num_envs, axis=1)

    def __getitem__(self, name: str) -> np.ndarray | dict[str, np.ndarray]:
        """The ``[horizon, num_envs, ...]`` array of a field (a dict of them for ``Dict`` observations)."""
        return self.storage[name]

    @property
    def full(self) -> bool:
        """Whether every sub-env has ``horizon`` rows."""
        if self._row is not None:
            return self._row >= self.horizon
        return bool((self.kept >= self.horizon).all())

    def next_cells(self, mask: np.ndarray | None = None) -> Cells:
        """The next free row of each sub-env in the bool ``mask`` (``None``: every sub-env) that has one."""
        if mask is None and self._row is not None and self._row < self.horizon:
            return Cells(self._row_cells[self._row], self._columns, self._row)
        columns = self._columns if mask is None else np.flatnonzero(np.asarray(mask, bool))
        columns = columns[self.kept[columns] < self.horizon]
        rows = self.kept[columns]
        whole_row = len(columns) == self.num_envs and bool((rows == rows[0]).all())
        return Cells(rows, columns, int(rows[0]) if whole_row else None)

    def advance(self, cells: Cells) -> None:
        """Marks the cells' rows filled (after their :meth:`add` calls)."""
        self.kept[cells.columns] += 1
        self._row = None if cells.row is None or self._row is None else self._row + 1

    def add(self, index: int | tuple[np.ndarray, np.ndarray], **values) -> None:
        """Writes ``storage[name][index] = value`` for each field given, key by key for ``Dict`` observations.

        ``index`` is a row ``t`` (values ``[num_envs, ...]``, one per sub-env) or the cells
        ``(rows, columns)`` (values ``[len(columns), ...]``: sub-env ``columns[j]``'s in row ``rows[j]``).
        Values are cast to the field's dtype.
        """
        for name, value in values.items():  # once per env step: plain loops, no per-field closures
            array = self.storage.get(name)
            if array is None:
                unknown = sorted(set(values) - set(self.fields))
                raise TypeError(f"RolloutBuffer.add got fields {unknown}; declared fields: {sorted(self.fields)} (add "
                                "one in keras_trpo.buffer.stored_fields).")
            if isinstance(array, dict):
                for key, part in array.items():
                    part[index] = value[key]
            else:
                array[index] = value

    def add_step(self, cells: Cells, **values) -> None:
        """:meth:`add` of one env step's ``[num_envs, ...]`` values at ``cells`` (:meth:`next_cells`).

        Only the sub-envs in ``cells``' columns are stored. When every sub-env stores in the same
        row (every step of most envs) that is one row write, without copying the parts out first.
        """
        if cells.row is not None:
            self.add(cells.row, **values)
            return
        rows, columns, _ = cells
        self.add((rows, columns), **{
            name: _per_key(lambda _, value: value[columns], self.fields.get(name), value)
            for name, value in values.items()
        })  # fmt: skip

    def advantages_and_returns(self, gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
        """GAE(γ, λ) advantages and value targets per column, float32 ``[horizon, num_envs]``."""
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rewards were warned about
            return compute_gae(
                self["rewards"], self["values"], self["terminated"], self["truncated"], self["final_values"],
                gamma, gae_lambda,
            )  # fmt: skip

    def batch(
        self, gamma: float, gae_lambda: float, *, policy_version: int, finished_returns: list[float],
        finished_lengths: list[int], env_steps: int,
    ) -> dict:  # fmt: skip
        """The batch dict: the ``in_batch`` fields, advantages, returns, statistics; ``horizon · num_envs`` rows.

        Time-major: row ``t · num_envs + i`` is sub-env ``i``'s row ``t``. The statistics are
        ``[N]`` columns of one repeated value: the episodes that finished in this batch (means; NaN
        when none did) and ``env_steps``.
        """
        advantages, returns = self.advantages_and_returns(gamma, gae_lambda)
        n = self.horizon * self.num_envs
        batch = {
            name: _per_key(lambda f, array: array.reshape(n, *f.shape), field, self.storage[name])
            for name, field in self.fields.items()
            if all(f.in_batch for f in (field.values() if isinstance(field, Mapping) else [field]))
        }
        return batch | {
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
            # Scalars travel as [N] columns of one repeated value: Keras datasets need rank >= 1, and
            # under a tf.distribute strategy every replica's share of the batch then carries them.
            "policy_version": np.full(n, policy_version, np.int64),
            "episode_return": np.full(n, np.mean(finished_returns) if finished_returns else np.nan, np.float32),
            "episode_length": np.full(n, np.mean(finished_lengths) if finished_lengths else np.nan, np.float32),
            "episodes": np.full(n, len(finished_returns), np.float32),
            "env_steps": np.full(n, env_steps, np.float32),
        }


def scale_rewards(
    scaler: RewardScaler, rewards: np.ndarray, done: np.ndarray, stepped: np.ndarray | None,
) -> np.ndarray:  # fmt: skip
    """``scaler(rewards, done)`` on the sub-envs in the mask ``stepped`` (``None``: all) only; the others' rewards come back 0.

    For steps where some sub-envs only reset (``Rollouts`` with a ``NEXT_STEP`` env that ignores
    ``reset_mask``): those are no transitions, so they neither extend the running discounted return
    nor enter its statistics. Uses the scaler's public ``returns`` (one running return per sub-env).
    """
    if stepped is None or stepped.all():
        return scaler(rewards, done)
    scaled = np.zeros(len(rewards))
    if stepped.any():
        returns = scaler.returns
        scaler.returns = returns[stepped]
        try:
            scaled[stepped] = scaler(np.asarray(rewards)[stepped], np.asarray(done)[stepped])
            returns[stepped] = scaler.returns
        finally:
            scaler.returns = returns
    return scaled


def warn_non_finite(rewards: np.ndarray, t: int, stacklevel: int = 3) -> None:
    """A ``RuntimeWarning`` naming the sub-envs whose reward at step ``t`` of the batch is NaN or infinite."""
    if not np.isfinite(rewards).all():
        bad = np.flatnonzero(~np.isfinite(rewards)).tolist()
        warnings.warn(
            f"sub-environment(s) {bad} returned a non-finite reward {np.asarray(rewards)[bad].tolist()} at "
            f"step {t} of this batch; TRPO.train_step will reject the batch and leave the model unchanged.",
            RuntimeWarning,
            stacklevel=stacklevel,
        )
