"""Periodic deterministic evaluation on a separate environment during ``fit``."""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import keras
import numpy as np

from keras_trpo.callbacks._logs import Logs, PrintFn
from keras_trpo.envs import check_not_collecting
from keras_trpo.evaluation import EnvLike, evaluate
from keras_trpo.validation import check_int


class Evaluation(keras.callbacks.Callback):
    """Deterministic evaluation on a separate environment every ``every`` iterations; adds ``eval_return``.

    Runs :func:`keras_trpo.evaluate` (the mode of the policy, no exploration)
    for ``episodes`` episodes after the first iteration, after every
    ``every``-th one and after the last one of ``fit``, and puts the mean
    return in the logs as ``eval_return`` for those iterations only. Evaluating
    the first iteration gives loggers that fix their columns there
    (``CSVLogger``) an ``eval_return`` column. Every result is kept in
    :attr:`results`. A masked model acts on the legal actions only: the masks
    are read from ``env`` as :func:`keras_trpo.evaluate` reads them.

    Put it *before* the callbacks that read ``eval_return`` (:class:`EarlyStopping`,
    :class:`ModelCheckpoint`, :class:`ExportBest`, ``CSVLogger``, :class:`TensorBoard`):
    callbacks share one ``logs`` dict in list order. To monitor ``eval_return``
    use this package's :class:`EarlyStopping` and :class:`ModelCheckpoint`,
    which skip the iterations without an evaluation: Keras's own warn on each
    of them, and ``keras.callbacks.ModelCheckpoint(save_best_only=True)`` saves
    them as if they were the best.

    Args:
        env: an env id (``episodes`` sync copies are made at the start of
            ``fit`` and closed at its end), or a gymnasium ``Env`` /
            ``VectorEnv`` (used as given, not closed; pass one for envs that need
            wrappers, e.g. MiniGrid's ``ImgObsWrapper``). Never the training env.
        episodes: episodes per evaluation.
        every: evaluate every this many iterations.
        seed: if set, every evaluation resets with this seed, so successive
            evaluations start from the same states and compare policies only.
        verbose: 1 prints each result.
        print_fn: where those lines go.

    Example:

    ```python
    evaluation = keras_trpo.callbacks.Evaluation("CartPole-v1", episodes=10, every=10, seed=0)
    stop = keras_trpo.callbacks.EarlyStopping("eval_return", mode="max", patience=3, restore_best_weights=True)
    model.fit(rollouts, epochs=100, callbacks=[evaluation, stop])  # evaluation first: it adds eval_return
    ```
    """

    def __init__(
        self, env: EnvLike, episodes: int = 10, every: int = 10, seed: int | None = None, verbose: int = 0,
        print_fn: PrintFn = print,
    ) -> None:
        super().__init__()
        self.env = env
        self.episodes = check_int("episodes", episodes)
        self.every = check_int("every", every)
        self.seed = seed
        self.verbose = verbose
        self.print_fn = print_fn
        #: One dict per evaluation: ``epoch``, ``env_steps``, ``returns``, ``mean``.
        self.results: list[dict[str, Any]] = []
        self._env: gymnasium.Env | gymnasium.vector.VectorEnv | None = None

    def on_train_begin(self, logs: Logs = None) -> None:
        check_not_collecting(self.env)  # before the first iteration, not at the first evaluation
        if isinstance(self.env, str):
            self._env = gymnasium.make_vec(self.env, num_envs=self.episodes, vectorization_mode="sync")
        else:
            self._env = self.env

    def on_train_end(self, logs: Logs = None) -> None:
        if isinstance(self.env, str) and self._env is not None:
            self._env.close()
        self._env = None

    def should_evaluate(self, epoch: int) -> bool:
        """True after the first iteration, every ``every``-th iteration and the last one."""
        last = self.params.get("epochs") if self.params else None
        return epoch == 0 or (epoch + 1) % self.every == 0 or (last is not None and epoch + 1 == last)

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if not self.should_evaluate(epoch):
            return
        if self._env is None:  # on_epoch_end called outside fit
            self.on_train_begin()
        assert self._env is not None  # on_train_begin set it
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
