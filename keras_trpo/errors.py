"""Names and messages shared by every layer: why an update was rejected, and the errors users see.

A leaf module: it imports nothing from keras_trpo, so any module may import it.
"""

from __future__ import annotations

#: Why an update was rejected, as reported in the ``rejection_reason`` metric.
REJECTION_REASONS = {
    0: "accepted",
    1: "non-finite values in the batch (observations, actions, advantages or returns)",
    2: "conjugate gradient broke down or the step curvature sᵀFs is not positive: a zero policy "
    "gradient, or a Fisher-vector product with pᵀ(F + damping·I)p ≤ 0 or non-finite (an indefinite "
    "Fisher, e.g. from negative damping)",
    3: "line search found no step with mean KL ≤ max_kl and a positive surrogate improvement",
    4: "stale batch: its policy_version is not the model's (it was collected by other weights)",
}

#: ``rejection_reason`` codes, by name.
ACCEPTED, NON_FINITE, CG_BREAKDOWN, NO_STEP, STALE = 0, 1, 2, 3, 4


class UpdateRejectedWarning(RuntimeWarning):
    """Issued by ``TRPO.fit`` for each rejected update; the message names the cause.

    Silence it with ``warnings.simplefilter("ignore", keras_trpo.UpdateRejectedWarning)``.
    """


class RolloutError(RuntimeError):
    """An environment failed during collection (the message says which and when)."""


class StaleBatchError(ValueError):
    """A batch was collected by other weights than the ones ``train_step`` starts from."""


def stale_batch_message(batch_version: int, model_version: int) -> str:
    """The one-line explanation of a stale batch."""
    return (
        f"Stale batch: it was collected by policy_version {batch_version} but the model is at "
        f"{model_version}. TRPO is on-policy; use one Rollouts batch per epoch and do not set "
        "steps_per_epoch, workers or use_multiprocessing."
    )


def uneven_split_message(steps: int, replicas: int) -> str:
    """The one-line explanation of a batch that does not split evenly over a worker's replicas."""
    lower = max(replicas, steps - steps % replicas)
    return (
        f"a batch of {steps} steps does not split evenly over this worker's {replicas} replicas; "
        f"use steps divisible by {replicas} (e.g. {lower}), the same on every worker."
    )
