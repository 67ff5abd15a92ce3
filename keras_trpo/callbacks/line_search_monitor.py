"""Line-search statistics per TRPO iteration, and a warning when updates keep being rejected."""

from __future__ import annotations

import math
import warnings
from collections import deque

import keras
import numpy as np

from keras_trpo.callbacks._logs import Logs, PrintFn, finite
from keras_trpo.errors import REJECTION_REASONS
from keras_trpo.validation import check_int

#: What to try when updates keep being rejected, by ``rejection_reason``.
REJECTION_HINTS = {
    1: "the batches contain NaN or inf. Check the environment's observations and rewards "
    "(e.g. gymnasium.wrappers.ClipReward, or TRPO(normalize_observations=True) for badly scaled "
    "observations); a diverging critic (growing value_loss) makes the returns non-finite too: "
    "lower the critic optimizer's learning rate.",
    2: "the policy gradient is zero or conjugate gradient broke down. If every advantage is equal "
    "(constant rewards, identical episodes) the batch carries no signal: use more steps per "
    "iteration or reward shaping; otherwise raise model.damping or cg_iterations.",
    3: "no step inside the trust region improved the surrogate. max_kl may be too large for the "
    "quadratic KL model (lower it, e.g. with TrustRegionSchedule), the advantage estimates too "
    "noisy (more steps per iteration, a higher gae_lambda) or the line search too short "
    "(raise backtrack_iterations).",
}

_LINE_SEARCH_KEYS = (
    "step_accepted",
    "rejection_reason",
    "line_search_steps",
    "step_fraction",
    "kl",
    "surrogate_improvement",
    "expected_improvement",
)


class LineSearchMonitor(keras.callbacks.Callback):
    """Keeps per-iteration line-search statistics and warns when updates keep being rejected.

    Every iteration it records ``step_accepted``, ``rejection_reason``,
    ``line_search_steps``, ``step_fraction``, ``kl``, ``surrogate_improvement``
    and ``expected_improvement`` in :attr:`history`, and adds to the logs:

    * ``acceptance_rate``: fraction of the last ``window`` updates that were accepted;
    * ``consecutive_rejections``: rejected updates in a row up to this one;
    * ``improvement_ratio``: ``surrogate_improvement / expected_improvement``,
      the actual over the first-order predicted gain of the step (near 1 when
      the linear model is good; NaN when nothing was predicted).

    After ``patience`` rejections in a row it issues one ``UserWarning`` for
    that streak, naming the most frequent reason
    (:data:`keras_trpo.REJECTION_REASONS`) and what to try
    (:data:`REJECTION_HINTS`), and with ``stop_training=True`` also stops
    ``fit``. (Every single rejection is also warned about during training, with a
    :class:`keras_trpo.UpdateRejectedWarning`; ``keras.callbacks.TerminateOnNaN`` stops
    only when a weight becomes non-finite, since a non-finite batch is skipped
    by ``train_step`` and reported as ``rejection_reason`` 1.)

    Args:
        patience: consecutive rejections before warning.
        window: iterations in ``acceptance_rate``.
        stop_training: also stop training after ``patience`` rejections in a row.
        verbose: 1 prints a summary at the end of training.
        print_fn: where the summary goes.

    Example:

    ```python
    monitor = keras_trpo.callbacks.LineSearchMonitor(patience=3)
    model.fit(rollouts, epochs=50, callbacks=[monitor])
    print(monitor.summary())   # "50 updates, 48 accepted (96%), mean line-search shrinks 0.3, ..."
    ```
    """

    def __init__(
        self, patience: int = 3, window: int = 10, stop_training: bool = False, verbose: int = 0,
        print_fn: PrintFn = print,
    ) -> None:
        super().__init__()
        self.patience = check_int("patience", patience)
        self.window = check_int("window", window)
        self.stop_training = bool(stop_training)
        self.verbose = verbose
        self.print_fn = print_fn
        self.history: dict[str, list[float]] = {key: [] for key in ("epoch", *_LINE_SEARCH_KEYS)}
        self.warnings: list[str] = []
        self._recent: deque[bool] = deque(maxlen=self.window)
        self._streak: list[int] = []

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if logs is None or "step_accepted" not in logs:
            return
        self.history["epoch"].append(epoch)
        for key in _LINE_SEARCH_KEYS:
            self.history[key].append(float(logs.get(key, math.nan)))
        accepted = float(logs["step_accepted"]) > 0.5
        self._recent.append(accepted)
        reason = int(round(float(logs.get("rejection_reason", 0.0)))) if finite(logs.get("rejection_reason")) else 0
        if accepted:
            self._streak = []
        else:
            self._streak.append(reason)
        expected = float(logs.get("expected_improvement", math.nan))
        actual = float(logs.get("surrogate_improvement", math.nan))
        logs["acceptance_rate"] = float(np.mean(self._recent))
        logs["consecutive_rejections"] = float(len(self._streak))
        logs["improvement_ratio"] = actual / expected if finite(expected) and expected != 0 else math.nan
        if len(self._streak) == self.patience:
            self._warn(epoch)
            if self.stop_training:
                self.model.stop_training = True

    def _warn(self, epoch: int) -> None:
        reasons = [r for r in self._streak if r in REJECTION_HINTS] or [3]
        reason = max(set(reasons), key=reasons.count)
        first = epoch + 1 - len(self._streak) + 1
        message = (
            f"TRPO rejected {len(self._streak)} policy updates in a row (iterations {first}-{epoch + 1}; "
            f"the policy did not move). Most frequent reason {reason}: {REJECTION_REASONS.get(reason, 'unknown')}. "
            f"Likely cause: {REJECTION_HINTS[reason]}"
        )
        self.warnings.append(message)
        warnings.warn(message, UserWarning, stacklevel=2)

    def summary(self) -> str:
        """One line: updates, accepted fraction, mean shrinks and KL of the accepted steps, reasons."""
        accepted = np.array(self.history["step_accepted"]) > 0.5
        n = len(accepted)
        if not n:
            return "no TRPO updates recorded"
        shrinks = np.array(self.history["line_search_steps"])[accepted]
        kls = np.array(self.history["kl"])[accepted]
        reasons = [int(r) for r, a in zip(self.history["rejection_reason"], accepted) if not a and finite(r)]
        counts = ", ".join(f"reason {r}: {reasons.count(r)}" for r in sorted(set(reasons)))
        text = f"{n} updates, {int(accepted.sum())} accepted ({accepted.mean():.0%})"
        if accepted.any():
            text += f", mean line-search shrinks {shrinks.mean():.2f}, mean kl {kls.mean():.4g}"
        if reasons:
            text += f"; rejections by reason: {counts}"
        return text

    def on_train_end(self, logs: Logs = None) -> None:
        if self.verbose:
            self.print_fn(f"Line search: {self.summary()}")
