"""One training run of a preset: the flow that ``keras-trpo train`` and ``examples/*.py`` share.

```python
from keras_trpo import presets, training

result = training.train(presets.load_preset("CartPole-v1"), seed=0)
print(result.message(f"mean return {result.mean:.1f}"))
```

:func:`train` sets TensorFlow's intra-op threads to the preset's ``intra_op_threads``
(:func:`set_intra_op_threads`), seeds Python, NumPy and TensorFlow (``keras.utils.set_random_seed``), builds the
vector env, the compiled :class:`~keras_trpo.TRPO` and its :class:`~keras_trpo.Rollouts` from the
preset, fits ``preset.iterations(total_steps)`` TRPO iterations (one ``fit`` epoch each), closes
the env and evaluates the deterministic policy on a fresh copy of the environment seeded with
``seed + 10_000``, episodes the training never saw, then the sampling policy on the same episodes' seeds
(its sampler seeded with the same number). Both envs come from :meth:`Preset.make_env`, so the
evaluation sees what training saw (the preset's ``env_kwargs`` and ``wrappers``). The callers add what is theirs around it:
``keras-trpo train`` its run directory (config.json before the first iteration, model.keras and the
SavedModel after the last, results.json at the end), the examples their command line and ``--export``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable

import gymnasium
import keras
import numpy as np
import tensorflow as tf

from keras_trpo.callbacks import ProgressLogger, StepsPerSecond, TrustRegionSchedule
from keras_trpo.evaluation import evaluate
from keras_trpo.presets import Preset

#: The final evaluation is seeded with the training seed plus this.
EVAL_SEED_OFFSET = 10_000
#: The evaluations during training (``keras-trpo train --eval-every``) are seeded with the training seed plus this.
PERIODIC_EVAL_SEED_OFFSET = 20_000


class EnvCreationError(gymnasium.error.Error):
    """gymnasium cannot create the training environment (its error is the cause and the message)."""


class ThreadSettingError(RuntimeError):
    """TensorFlow already ran an op in this process with another intra-op thread setting, which it then keeps.

    Attributes:
        current: TensorFlow's setting (0: its default, one thread per core).
    """

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


def set_intra_op_threads(threads: int | None, *, strict: bool = False, stacklevel: int = 2) -> None:
    """Runs each TensorFlow op on ``threads`` intra-op threads (``None``: TensorFlow's own setting, one per core).

    The presets of the 64×64 MLPs ask for 1 (their ``intra_op_threads``): their ops are small, and an
    update's policy and critic steps already run side by side on two cores (README, "Speed on a CPU").
    The setting changes a run's floats, not its algorithm. TensorFlow takes it only before its first op;
    after that a different request raises :class:`ThreadSettingError` if ``strict`` (``keras-trpo train
    --intra-op-threads``), else warns once per process and setting, and leaves TensorFlow's setting as it
    is (a notebook, a test process). ``None`` asks for nothing: it does not undo an earlier setting.
    """
    current = tf.config.threading.get_intra_op_parallelism_threads()
    if threads is None or current == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already ran an op in this process
        message = (f"intra_op_threads={threads}: TensorFlow already runs in this process with {current or 'its default'}"
                   " intra-op threads, and keeps them (the same algorithm, other floats than a new process)")
        if strict:
            raise ThreadSettingError(message, current) from None
        if (threads, current) not in _WARNED:
            _WARNED.add((threads, current))
            warnings.warn(f"{message}; set it before TensorFlow's first op, or train in a new process.",
                          RuntimeWarning, stacklevel=stacklevel + 1)


#: ``(asked, current)`` thread settings already warned about in this process.
_WARNED: set[tuple[int, int]] = set()


def intra_op_threads() -> int | None:
    """TensorFlow's intra-op threads in this process (``None``: its own setting, one per core)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or None


class ModelBuildError(ValueError):
    """The preset's TRPO or Rollouts cannot be built for the environment (their error is the cause and the message)."""


@dataclasses.dataclass(frozen=True)
class TrainingResult:
    """What :func:`train` returns."""

    model: keras.Model  #: the trained keras_trpo.TRPO
    env_id: str
    seed: int
    iterations: int  #: TRPO iterations planned (fewer ran if interrupted)
    env_steps: int  #: env steps collected and trained on
    train_seconds: float  #: wall time of ``fit``
    interrupted: bool  #: Ctrl-C ended ``fit`` early (only with ``on_interrupt``)
    eval_seed: int
    returns: list  #: undiscounted return of each final evaluation episode (the deterministic policy)
    #: the same episodes' seeds with sampled actions (``evaluate(..., deterministic=False)``, sampler seeded with eval_seed)
    stochastic_returns: list

    @property
    def mean(self) -> float:
        """Mean return of the final evaluation."""
        return float(np.mean(self.returns))

    @property
    def stochastic_mean(self) -> float:
        """Mean return of the final evaluation with sampled actions."""
        return float(np.mean(self.stochastic_returns))

    def message(self, returns_summary: str) -> str:
        """``Trained N env steps in T s. Deterministic evaluation over K episodes: <summary>; with sampled actions: mean M``."""
        return (
            f"Trained {self.env_steps} env steps in {self.train_seconds:.1f} s. Deterministic evaluation over "
            f"{len(self.returns)} episodes: {returns_summary}; with sampled actions: mean {self.stochastic_mean:.1f}"
        )


def make_env(preset: Preset, env_id: str | None = None, **kwargs):
    """``preset.make_env(env_id, **kwargs)`` with gymnasium's errors (and the ``TypeError`` of an
    environment argument it does not take) as :class:`EnvCreationError`."""
    try:
        return preset.make_env(env_id=env_id, **kwargs)
    except (gymnasium.error.Error, TypeError) as error:
        raise EnvCreationError(str(error)) from error


def progress_callback(iterations: int, verbose: int = 0) -> keras.callbacks.Callback:
    """How a run reports progress: for ``verbose=0`` a :class:`ProgressLogger` line every tenth of the
    ``iterations``; otherwise Keras prints and :class:`StepsPerSecond` adds ``steps_per_second`` to its lines."""
    if verbose == 0:
        return ProgressLogger(every=max(1, iterations // 10))
    return StepsPerSecond()


def train(
    preset: Preset,
    env_id: str | None = None,
    *,
    seed: int,
    total_steps: int | None = None,
    callbacks: list | None = None,
    verbose: int = 0,
    before_fit: Callable | None = None,
    after_fit: Callable | None = None,
    on_interrupt: Callable | None = None,
) -> TrainingResult:
    """Trains TRPO on ``env_id`` with ``preset`` through ``model.fit``, then evaluates it: its mode, then sampled actions.

    Args:
        preset: the hyperparameters (overrides already applied).
        env_id: the environment; the preset's by default.
        seed: seeds Python, NumPy and TensorFlow, the model and the rollouts; the final evaluation
            uses ``seed + EVAL_SEED_OFFSET``.
        total_steps: env steps to train (the preset's by default); at least one iteration runs.
        callbacks: the ``fit`` callbacks, in order; by default ``[progress_callback(iterations, verbose)]``.
            Callers that pass their own include that one where it belongs (after the callbacks
            that add to the logs, before those that write them).
        verbose: ``fit``'s verbosity.
        before_fit: called with the model once the env, model and rollouts exist, before the first iteration.
        after_fit: called with the model after training (and after the env is closed), before the evaluation.
        on_interrupt: with it, Ctrl-C during ``fit`` ends training instead of raising: it is called
            with the env steps trained and the run goes on (``after_fit``, the evaluation) with
            ``interrupted=True``. Without it the KeyboardInterrupt propagates.

    Raises:
        EnvCreationError: gymnasium cannot create ``env_id`` (or the environment rejects an ``env_kwargs`` entry).
        ModelBuildError: the preset's model or rollouts do not build for it (e.g. an invalid hyperparameter).
        PresetError: a module or wrapper class the preset names cannot be imported.
    """
    env_id = env_id or preset.env_id
    iterations = preset.iterations(total_steps)
    if callbacks is None:
        callbacks = [progress_callback(iterations, verbose)]
    set_intra_op_threads(preset.intra_op_threads, stacklevel=3)
    keras.utils.set_random_seed(seed)
    env = make_env(preset, env_id)
    try:
        try:
            model = preset.build_model(env, seed=seed)
            rollouts = preset.build_rollouts(env, model, seed=seed)
        except (ValueError, TypeError) as error:
            raise ModelBuildError(str(error)) from error
        kl_schedule = preset.kl_schedule(iterations, model.max_kl)  # from the validated max_kl
        if kl_schedule is not None:  # first: each iteration's max_kl is set before the others see the epoch
            callbacks = [TrustRegionSchedule(kl_schedule), *callbacks]
        if before_fit is not None:
            before_fit(model)
        interrupted = False
        start = time.perf_counter()
        try:
            model.fit(rollouts, epochs=iterations, verbose=verbose, callbacks=callbacks)
        except KeyboardInterrupt:
            if on_interrupt is None:
                raise
            interrupted = True
            on_interrupt(rollouts.env_steps)
        train_seconds = time.perf_counter() - start
    finally:
        env.close()
    if after_fit is not None:
        after_fit(model)
    eval_seed = seed + EVAL_SEED_OFFSET
    eval_env = make_env(preset, env_id, num_envs=preset.eval_episodes, vectorization_mode="sync")
    try:
        returns = evaluate(model, eval_env, episodes=preset.eval_episodes, seed=eval_seed)
        stochastic = evaluate(model, eval_env, episodes=preset.eval_episodes, seed=eval_seed, deterministic=False)
    finally:
        eval_env.close()
    return TrainingResult(
        model=model,
        env_id=env_id,
        seed=seed,
        iterations=iterations,
        env_steps=int(rollouts.env_steps),
        train_seconds=train_seconds,
        interrupted=interrupted,
        eval_seed=eval_seed,
        returns=returns,
        stochastic_returns=stochastic,
    )
