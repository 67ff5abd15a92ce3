"""What a ``train_step`` batch of :class:`keras_trpo.TRPO` holds, and the checks made on it before any compute.

:class:`Batches` is a mixin of ``TRPO`` (its members declared on the class are what it reads): the
batch's keys, shapes and dtypes (:meth:`Batches.batch_spec`, checked by
:func:`keras_trpo.validation.validate_batch`), the host-side value checks (a masked model's actions
legal under their masks, :mod:`keras_trpo.masking`; a recurrent model's whole sequences,
:mod:`keras_trpo.sequences`), and a recurrent batch's memory for the update.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from keras_trpo import distribute, masking, sequences, validation


class Batches:
    """``batch_spec``, the value checks and the recurrent memory of a ``train_step`` batch."""

    head: Any
    observation_spec: Any
    action_space: Any
    action_mask: bool
    sequence_length: int
    distribute_strategy: Any
    replicas: Any

    @property
    def is_recurrent(self) -> bool: ...

    def state_sizes(self) -> dict[str, int]: ...

    def batch_spec(self) -> dict[str, Any]:
        """``{key: (per-sample shape, dtype description)}`` of a valid ``train_step`` batch."""
        masks = {masking.BATCH_KEY: ((self.head.num_outputs,), "mask")} if self.action_mask else {}
        memory = {} if not self.is_recurrent else {
            sequences.STARTS: ((), "mask"), sequences.MASK: ((), "mask"),
            **{name: ((units,), "floating") for name, units in self.state_sizes().items()},
        }
        return {
            "observations": self.observation_spec,
            "actions": (self.head.action_shape, "integer" if self.head.integer_actions else "floating"),
            "advantages": ((), "floating"),
            "returns": ((), "floating"),
            **masks,
            **memory,
        }

    def check_batch_values(self, data: Any) -> None:
        """Host-side checks before any compute: a masked model's actions legal under their own masks; a
        recurrent model's batch made of whole sequences."""
        data = validation.unwrap(data)
        if self.action_mask:
            masking.check_batch(data, self.action_space, self.distribute_strategy)
        if self.is_recurrent and isinstance(data, Mapping) and "returns" in data:
            returns = data["returns"]
            shares = self.distribute_strategy.experimental_local_results(returns) \
                if distribute.is_per_replica(returns) else [returns]
            for share in shares:  # under a strategy, each replica's share holds whole sequences
                if share.shape[0] is not None:
                    sequences.check_rows(int(share.shape[0]), self.sequence_length, len(shares))

    def _memory(self, batch: Mapping[str, Any]) -> tuple[Any, Any]:
        """A recurrent batch's ``(memory, weights)`` for the update (:mod:`keras_trpo.forward`); ``(None, None)``."""
        if not self.is_recurrent:
            return None, None
        memory = {"episode_starts": batch[sequences.STARTS], "states": {k: batch[k] for k in self.state_sizes()}}
        return memory, self.replicas.run(lambda m: tf.cast(m, validation.float_dtype()), batch[sequences.MASK])

    def _validated_batch(self, data: Any) -> dict[str, Any]:
        return validation.validate_batch(data, self.batch_spec(), self.head.cast_actions)
