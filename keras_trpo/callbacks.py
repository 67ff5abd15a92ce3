"""Keras callbacks for TRPO training.

TRPO trains through ``model.fit`` with one batch (one TRPO iteration) per
epoch, so epoch-level callbacks see every iteration. Keras's own callbacks work
as usual on the metrics ``train_step`` logs (``episode_return``, ``kl``,
``line_search_steps``, ``value_loss``, ``env_steps``, ...): ``TensorBoard``,
``CSVLogger``, ``EarlyStopping(monitor="episode_return", mode="max")``,
``ModelCheckpoint``, ``BackupAndRestore`` and ``LearningRateScheduler`` (the
critic's learning rate). ``TerminateOnNaN`` watches ``loss``, which is the
critic's loss, or NaN once any weight is non-finite; a non-finite *batch* does
not stop it (``train_step`` rejects the batch and changes nothing).

This module adds:

- :class:`RejectedUpdateWarnings`: one warning per rejected update (``TRPO.fit`` adds it);
- :class:`ProgressLogger`: one compact line every ``n`` iterations, for ``verbose=0``;
- :class:`StepsPerSecond`: adds ``steps_per_second`` (env steps per second) to the logs;
- :class:`LineSearchMonitor`: line-search statistics; warns after repeated rejections;
- :class:`TrustRegionSchedule`: sets ``max_kl`` before each iteration, like
  ``keras.callbacks.LearningRateScheduler``;
- :class:`Evaluation`: periodic deterministic evaluation on a separate env, adds ``eval_return``;
- :class:`ExportBest`: exports a SavedModel whenever ``eval_return`` improves.

Callbacks run in list order and share one ``logs`` dict per epoch, so put the
callbacks that *add* keys (``Evaluation``, ``StepsPerSecond``,
``LineSearchMonitor``, ``TrustRegionSchedule``) before those that *read* them
(``EarlyStopping``, ``ModelCheckpoint``, ``ExportBest``, ``CSVLogger``,
``TensorBoard``). Keras appends its progress bar and ``History`` after all of
them, so they see every key.

Example:

```python
import keras, keras_trpo
from keras_trpo import callbacks

model.fit(
    rollouts,
    epochs=100,
    callbacks=[
        callbacks.LineSearchMonitor(patience=3),
        callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
        callbacks.ExportBest("saved_models/cartpole"),
        keras.callbacks.EarlyStopping(monitor="eval_return", mode="max", patience=3),
        keras.callbacks.CSVLogger("metrics.csv"),
    ],
)
```
"""

from __future__ import annotations

import inspect
import math
import os
import pickle
import time
import warnings
from collections import deque

import keras
import numpy as np

from keras_trpo.model import REJECTION_REASONS, UpdateRejectedWarning

__all__ = [
    "ProgressLogger",
    "StepsPerSecond",
    "LineSearchMonitor",
    "TrustRegionSchedule",
    "Evaluation",
    "ExportBest",
    "REJECTION_HINTS",
]


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}.")
    return int(value)


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------
# Throughput and progress
# ----------------------------------------------------------------------
class StepsPerSecond(keras.callbacks.Callback):
    """Adds ``steps_per_second``: env steps collected and trained on per second of wall time.

    Reads ``env_steps`` from the logs (``Rollouts`` batches carry it). The first
    iteration reports its own rate, which includes tracing ``train_step``; from
    the second iteration on the rate is measured from the end of the first
    iteration, i.e. the steady-state throughput that predicts how long the rest
    of the run takes. Without ``env_steps`` in the logs nothing is added.

    Place it before ``CSVLogger`` / ``TensorBoard`` to have the rate logged;
    with ``fit(verbose=1)`` the progress bar shows it too.

    Example:

    ```python
    model.fit(rollouts, epochs=100, callbacks=[keras_trpo.callbacks.StepsPerSecond()])
    # Epoch 3/100 ... - env_steps: 3072.0000 - steps_per_second: 8412.3 ...
    ```
    """

    def __init__(self):
        super().__init__()
        self._previous_steps = 0.0  # env steps at the end of the previous fit
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self._start_time = time.perf_counter()
        self._start_steps = None  # env steps at the end of the first iteration
        self._first_end_time = None

    def _rate(self, logs) -> float | None:
        if not logs or "env_steps" not in logs or not _finite(logs["env_steps"]):
            return None
        now = time.perf_counter()
        steps = float(logs["env_steps"])
        if self._first_end_time is None:
            # First iteration of this fit: env steps since the last fit this callback saw.
            self._first_end_time, self._start_steps = now, steps
            done = steps - self._previous_steps if steps > self._previous_steps else steps
            rate = done / max(now - self._start_time, 1e-9)
        else:
            rate = (steps - self._start_steps) / max(now - self._first_end_time, 1e-9)
        self._previous_steps = steps
        return rate

    def on_epoch_end(self, epoch, logs=None):
        rate = self._rate(logs)
        if rate is not None:
            logs["steps_per_second"] = rate


class ProgressLogger(StepsPerSecond):
    """Prints one compact line every ``every`` iterations (epochs).

    The line shows the iteration, env steps so far, the mean return of the
    episodes finished in that batch (or says that none finished), the KL of the
    step, the line-search shrinks, the critic loss and env steps per second,
    plus ``eval_return`` and ``max_kl`` when other callbacks put them in the
    logs before it. Use it with ``fit(..., verbose=0)``. Like
    :class:`StepsPerSecond` it adds ``steps_per_second`` to the logs of every
    iteration.

    Args:
        every: print every this many iterations.
        print_fn: where lines go (``print`` by default; e.g. ``logging.info``).

    Example:

    ```python
    model.fit(rollouts, epochs=100, verbose=0, callbacks=[keras_trpo.callbacks.ProgressLogger(10)])
    # iteration   10 | env steps    10240 | episode return    45.3 | kl 0.0152 | line search 0 | ...
    ```
    """

    def __init__(self, every: int = 10, print_fn=print):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1; got {every!r}.")
        self.every = every
        self.print_fn = print_fn

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        rate = self._rate(logs)
        if rate is not None:
            logs["steps_per_second"] = rate
        if (epoch + 1) % self.every:
            return
        episode_return = float(logs.get("episode_return", math.nan))
        returned = "no episode finished" if math.isnan(episode_return) else f"{episode_return:7.1f}"
        env_steps = int(logs.get("env_steps", 0))
        line = (
            f"iteration {epoch + 1:4d} | env steps {env_steps:8d} | episode return {returned} | "
            f"kl {logs.get('kl', math.nan):.4f} | line search {int(logs.get('line_search_steps', 0))} | "
            f"value loss {logs.get('value_loss', math.nan):.3g} | {logs.get('steps_per_second', math.nan):,.0f} steps/s"
        )
        if "eval_return" in logs:
            line += f" | eval return {float(logs['eval_return']):.1f}"
        if "max_kl" in logs:
            line += f" | max_kl {float(logs['max_kl']):.4g}"
        self.print_fn(line)


# ----------------------------------------------------------------------
# Line search
# ----------------------------------------------------------------------
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


class RejectedUpdateWarnings(keras.callbacks.Callback):
    """Issues one :class:`keras_trpo.UpdateRejectedWarning` per rejected update.

    ``TRPO.fit`` adds it by itself. The message names the update (its
    ``policy_version``) and the cause (:data:`keras_trpo.REJECTION_REASONS`),
    and says that the weights were left unchanged. :attr:`rejections` keeps
    ``(policy_version, reason)`` pairs.
    """

    def __init__(self):
        super().__init__()
        self.rejections: list[tuple[int, int]] = []

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "step_accepted" not in logs or float(logs["step_accepted"]) > 0.5:
            return
        reason = int(round(float(logs.get("rejection_reason", 1.0))))
        version = self.model.policy_version - 1  # the weights that collected the batch
        self.rejections.append((version, reason))
        warnings.warn(
            f"TRPO update at policy_version {version} rejected (reason {reason}): "
            f"{REJECTION_REASONS.get(reason, 'unknown')}. Policy, critic and normalizer are unchanged; "
            "training continues with the next batch.",
            UpdateRejectedWarning,
            stacklevel=2,
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
    ``fit``. (Every single rejection is also warned about by
    :class:`RejectedUpdateWarnings`; ``keras.callbacks.TerminateOnNaN`` stops
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
        self, patience: int = 3, window: int = 10, stop_training: bool = False, verbose: int = 0, print_fn=print
    ):
        super().__init__()
        self.patience = _check_positive_int("patience", patience)
        self.window = _check_positive_int("window", window)
        self.stop_training = bool(stop_training)
        self.verbose = verbose
        self.print_fn = print_fn
        self.history: dict[str, list[float]] = {key: [] for key in ("epoch", *_LINE_SEARCH_KEYS)}
        self.warnings: list[str] = []
        self._recent = deque(maxlen=self.window)
        self._streak: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "step_accepted" not in logs:
            return
        self.history["epoch"].append(epoch)
        for key in _LINE_SEARCH_KEYS:
            self.history[key].append(float(logs.get(key, math.nan)))
        accepted = float(logs["step_accepted"]) > 0.5
        self._recent.append(accepted)
        reason = int(round(float(logs.get("rejection_reason", 0.0)))) if _finite(logs.get("rejection_reason")) else 0
        if accepted:
            self._streak = []
        else:
            self._streak.append(reason)
        expected = float(logs.get("expected_improvement", math.nan))
        actual = float(logs.get("surrogate_improvement", math.nan))
        logs["acceptance_rate"] = float(np.mean(self._recent))
        logs["consecutive_rejections"] = float(len(self._streak))
        logs["improvement_ratio"] = actual / expected if _finite(expected) and expected != 0 else math.nan
        if len(self._streak) == self.patience:
            self._warn(epoch)
            if self.stop_training:
                self.model.stop_training = True

    def _warn(self, epoch):
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
        reasons = [int(r) for r, a in zip(self.history["rejection_reason"], accepted) if not a and _finite(r)]
        counts = ", ".join(f"reason {r}: {reasons.count(r)}" for r in sorted(set(reasons)))
        text = f"{n} updates, {int(accepted.sum())} accepted ({accepted.mean():.0%})"
        if accepted.any():
            text += f", mean line-search shrinks {shrinks.mean():.2f}, mean kl {kls.mean():.4g}"
        if reasons:
            text += f"; rejections by reason: {counts}"
        return text

    def on_train_end(self, logs=None):
        if self.verbose:
            self.print_fn(f"Line search: {self.summary()}")


# ----------------------------------------------------------------------
# Trust-region schedule
# ----------------------------------------------------------------------
class TrustRegionSchedule(keras.callbacks.Callback):
    """Sets the trust-region radius ``max_kl`` before every iteration, like ``LearningRateScheduler``.

    ``schedule`` takes the epoch index (0-based) and, optionally, the current
    ``max_kl``, and returns the new ``max_kl`` (a finite number > 0). The model
    keeps ``max_kl`` in a variable, so changing it does not retrace
    ``train_step``. The value used by each iteration is added to the logs as
    ``max_kl``.

    Args:
        schedule: ``f(epoch) -> max_kl`` or ``f(epoch, max_kl) -> max_kl``.
        verbose: 1 prints a line whenever the value changes.
        print_fn: where that line goes.

    Example:

    ```python
    # Linear decay from 0.02 to 0.005 over 100 iterations.
    schedule = keras_trpo.callbacks.TrustRegionSchedule(lambda epoch: 0.02 - 0.015 * min(epoch, 99) / 99)
    # Or halve it every 20 iterations, from whatever the model has.
    schedule = keras_trpo.callbacks.TrustRegionSchedule(
        lambda epoch, max_kl: max_kl / 2 if epoch and epoch % 20 == 0 else max_kl
    )
    model.fit(rollouts, epochs=100, callbacks=[schedule])
    ```
    """

    def __init__(self, schedule, verbose: int = 0, print_fn=print):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable as schedule(epoch[, max_kl]); got {schedule!r}.")
        self.schedule = schedule
        self.verbose = verbose
        self.print_fn = print_fn
        self._takes_current = _takes_two_arguments(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self.model, "max_kl"):
            raise ValueError("TrustRegionSchedule needs a keras_trpo.TRPO model (it sets model.max_kl).")
        current = self.model.max_kl
        value = self.schedule(epoch, current) if self._takes_current else self.schedule(epoch)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"The max_kl schedule returned {value!r} for epoch {epoch}; it must return a number > 0."
            ) from None
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"The max_kl schedule returned {value!r} for epoch {epoch}; it must return a finite number > 0.")
        self.model.max_kl = value
        if self.verbose and value != current:
            self.print_fn(f"Epoch {epoch + 1}: TrustRegionSchedule setting max_kl to {value:.6g}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["max_kl"] = self.model.max_kl


def _takes_two_arguments(function) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in parameters)
    return varargs or len(positional) >= 2


# ----------------------------------------------------------------------
# Evaluation and export
# ----------------------------------------------------------------------
class Evaluation(keras.callbacks.Callback):
    """Deterministic evaluation on a separate environment every ``every`` iterations; adds ``eval_return``.

    Runs :func:`keras_trpo.evaluate` (the mode of the policy, no exploration)
    for ``episodes`` episodes after the first iteration, after every
    ``every``-th one and after the last one of ``fit``, and puts the mean
    return in the logs as ``eval_return`` for those iterations only. Evaluating
    the first iteration gives loggers that fix their columns there
    (``CSVLogger``) an ``eval_return`` column. Every result is kept in
    :attr:`results`.

    Put it *before* the callbacks that read ``eval_return`` (``EarlyStopping``,
    ``ModelCheckpoint``, :class:`ExportBest`, ``CSVLogger``, ``TensorBoard``):
    callbacks share one ``logs`` dict in list order. They ignore (with a
    warning from Keras) the iterations without an evaluation.

    Args:
        env: an env id (``episodes`` sync copies are made at the start of
            ``fit`` and closed at its end), or a gymnasium ``Env`` /
            ``VectorEnv`` (used as given, not closed). Never the training env.
        episodes: episodes per evaluation.
        every: evaluate every this many iterations.
        seed: if set, every evaluation resets with this seed, so successive
            evaluations start from the same states and compare policies only.
        verbose: 1 prints each result.
        print_fn: where those lines go.

    Example:

    ```python
    model.fit(
        rollouts,
        epochs=100,
        callbacks=[
            keras_trpo.callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0),
            keras.callbacks.EarlyStopping(monitor="eval_return", mode="max", patience=3,
                                          restore_best_weights=True),
        ],
    )
    ```
    """

    def __init__(self, env, episodes: int = 10, every: int = 10, seed: int | None = None, verbose: int = 0, print_fn=print):
        super().__init__()
        self.env = env
        self.episodes = _check_positive_int("episodes", episodes)
        self.every = _check_positive_int("every", every)
        self.seed = seed
        self.verbose = verbose
        self.print_fn = print_fn
        #: One dict per evaluation: ``epoch``, ``env_steps``, ``returns``, ``mean``.
        self.results: list[dict] = []
        self._env = None

    def on_train_begin(self, logs=None):
        if isinstance(self.env, str):
            import gymnasium

            self._env = gymnasium.make_vec(self.env, num_envs=self.episodes, vectorization_mode="sync")
        else:
            self._env = self.env

    def on_train_end(self, logs=None):
        if isinstance(self.env, str) and self._env is not None:
            self._env.close()
        self._env = None

    def should_evaluate(self, epoch: int) -> bool:
        """True after the first iteration, every ``every``-th iteration and the last one."""
        last = self.params.get("epochs") if self.params else None
        return epoch == 0 or (epoch + 1) % self.every == 0 or (last is not None and epoch + 1 == last)

    def on_epoch_end(self, epoch, logs=None):
        if not self.should_evaluate(epoch):
            return
        from keras_trpo.evaluation import evaluate

        if self._env is None:  # on_epoch_end called outside fit
            self.on_train_begin()
        returns = evaluate(self.model, self._env, episodes=self.episodes, seed=self.seed)
        mean = float(np.mean(returns))
        env_steps = float(logs.get("env_steps", math.nan)) if logs else math.nan
        self.results.append({"epoch": epoch, "env_steps": env_steps, "returns": returns, "mean": mean})
        if logs is not None:
            logs["eval_return"] = mean
        if self.verbose:
            self.print_fn(
                f"Epoch {epoch + 1}: deterministic evaluation over {len(returns)} episodes: "
                f"mean return {mean:.2f} (min {min(returns):.1f}, max {max(returns):.1f})"
            )


class ExportBest(keras.callbacks.Callback):
    """Exports a TF Serving SavedModel (``model.export``) whenever ``eval_return`` improves.

    Each improvement writes the next integer version under ``filepath``
    (``filepath/1``, ``filepath/2``, ...), so TF Serving watching ``filepath``
    always serves the best policy so far. Iterations whose logs lack the
    monitored value, or where it is NaN, are skipped; put :class:`Evaluation`
    before this callback. The best value and path are kept across ``fit``
    calls.

    Args:
        filepath: the model's base directory for TF Serving.
        monitor: the log key to maximize (or minimize with ``mode="min"``).
        mode: ``"max"`` or ``"min"``.
        min_delta: minimum change that counts as an improvement.
        max_to_keep: keep only this many most recent versions written by this
            callback (older ones are deleted); ``None`` keeps all.
        verbose: 1 prints a line per export.
        print_fn: where those lines go.

    Attributes:
        best: the best monitored value so far (``None`` before the first).
        best_path: the version directory holding the best policy.
        exported: ``(epoch, value, path)`` of every export.

    Example:

    ```python
    model.fit(rollouts, epochs=100, callbacks=[
        keras_trpo.callbacks.Evaluation("CartPole-v1", every=5, seed=0),
        keras_trpo.callbacks.ExportBest("saved_models/cartpole", verbose=1),
    ])
    ```
    """

    def __init__(
        self,
        filepath,
        monitor: str = "eval_return",
        mode: str = "max",
        min_delta: float = 0.0,
        max_to_keep: int | None = None,
        verbose: int = 0,
        print_fn=print,
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}.")
        if max_to_keep is not None:
            _check_positive_int("max_to_keep", max_to_keep)
        self.filepath = filepath
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.max_to_keep = max_to_keep
        self.verbose = verbose
        self.print_fn = print_fn
        self.best = None
        self.best_path = None
        self.exported: list[tuple[int, float, str]] = []
        self._seen = False

    def on_train_begin(self, logs=None):
        self._seen = False

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        if not logs or self.monitor not in logs:
            return
        self._seen = True
        value = float(logs[self.monitor])
        if not math.isfinite(value) or not self._improved(value):
            return
        path = self.model.export(self.filepath)
        previous = self.best
        self.best, self.best_path = value, path
        self.exported.append((epoch, value, path))
        if self.verbose:
            before = "" if previous is None else f" (was {previous:.4g})"
            self.print_fn(f"Epoch {epoch + 1}: {self.monitor} improved to {value:.4g}{before}; exported {path}")
        if self.max_to_keep is not None:
            import shutil

            for _, _, old in self.exported[: -self.max_to_keep]:
                shutil.rmtree(old, ignore_errors=True)

    def on_train_end(self, logs=None):
        if not self._seen:
            warnings.warn(
                f"ExportBest never found {self.monitor!r} in the logs, so nothing was exported. Put "
                "keras_trpo.callbacks.Evaluation before ExportBest in the callbacks list.",
                UserWarning,
                stacklevel=2,
            )


class RolloutsBackup(keras.callbacks.Callback):
    """Saves the rollouts' state next to BackupAndRestore's files; list it *after* BackupAndRestore.

    On ``on_train_begin`` (after BackupAndRestore has restored the weights) it restores the
    env, RNG and counters, and drops any batch collected before (on Keras' ``tf.data`` path a
    batch is read before ``on_train_begin`` to infer the dataset structure, by the unrestored
    model).

    The state file is a Python pickle (the env object is part of the state), and
    unpickling runs code: restore only backup directories you wrote yourself
    (docs/safe-loading.md).
    """

    def __init__(self, rollouts, backup_dir):
        super().__init__()
        self.rollouts, self.path = rollouts, os.path.join(backup_dir, "rollouts_state.pkl")

    def on_train_begin(self, logs=None):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            state = pickle.load(f)
        self.rollouts.set_state(state)

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path + ".tmp", "wb") as f:
            pickle.dump(self.rollouts.get_state(), f)
        os.replace(self.path + ".tmp", self.path)

    def on_train_end(self, logs=None):
        if os.path.exists(self.path):
            os.remove(self.path)
