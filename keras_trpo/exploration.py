"""State-dependent exploration (gSDE) for ``Box`` actions: ``TRPO(use_sde=True)``.

Generalized state-dependent exploration (Raffin, Kober and Stulp, "Smooth Exploration for Robotic
Reinforcement Learning", CoRL 2021, arXiv:2005.05719; sb3's ``StateDependentNoiseDistribution``)
replaces the Gaussian's independent noise per step by a noise that is a function of the state:
with ``φ(s)`` the policy network's features (the input of its output layer, ``L`` wide) and an
exploration matrix ``E [L, d]`` drawn from ``N(0, exp(log_std)²)`` entry by entry,

    action = mean(s) + φ(s) · E.

``E`` is held for ``sde_sample_freq`` env steps (``-1``: a whole batch), so the noise is smooth in
time and the same state gets the same push: on Pendulum this is what rl-zoo's settings use for
TRPO and RecurrentPPO (``use_sde: True, sde_sample_freq: 4``). ``log_std`` is an ``[L, d]``
matrix here instead of a ``[d]`` vector.

Over the draw of ``E``, one step's action is ``Normal(mean(s), σ(s))`` per dimension with

    σ_j(s)² = Σ_i φ_i(s)² · exp(2 · log_std_ij)     (+ 1e-6, as sb3, so that σ > 0 at φ = 0),

and that diagonal Gaussian is the policy TRPO optimizes: the surrogate's ratio, the KL(old‖new) of
the trust region and the Fisher products all use it (the stored actions are scored under it, as in
sb3). The features enter σ without their gradient (sb3's ``learn_features=False``): only the mean
and ``log_std`` move the variance. Deterministic actions are the mean, so evaluation and the
exported ``serving_default`` are unchanged; the exported ``sample`` draws from ``Normal(mean, σ(s))``.

Raw policy outputs: the network's features are appended to the mean, ``[N, d + L]``
(:meth:`keras_trpo.forward.Forward.policy_outputs`), so every path from outputs to parameters
(update, collection, export) goes through :meth:`StateDependentHead.params` alone.
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium
import numpy as np
import tensorflow as tf

from keras_trpo.policies import DiagGaussianHead, PolicyHead

#: Added to σ(s)² (sb3's ``epsilon``), so that the variance stays positive where the features are all zero.
VARIANCE_FLOOR = 1e-6


class StateDependentHead(DiagGaussianHead):
    """``Box(shape)`` → ``Normal(mean(s), σ(s))`` with ``σ(s)² = φ(s)² · exp(2 log_std) + 1e-6``.

    ``num_outputs`` is still the mean's width ``d`` (the output layer's); the raw outputs the head
    reads are ``[mean | φ]``, ``d + L`` wide, ``L`` the policy features' width. ``log_std`` is ``[L, d]``
    (the model creates it once its policy network is built and ``L`` is known).
    """

    state_dependent = True

    def _split(self, outputs: Any) -> tuple[Any, Any]:
        """``(mean, φ)`` of raw outputs ``[N, d + L]`` (tensors or numpy arrays)."""
        return outputs[:, :self.num_outputs], outputs[:, self.num_outputs:]

    def params(self, outputs: Any, log_std: Any = None, action_mask: Any = None) -> dict[str, Any]:
        mean, latent = self._split(outputs)
        latent = tf.stop_gradient(latent)
        variance = tf.matmul(tf.square(latent), tf.exp(2.0 * log_std)) + VARIANCE_FLOOR
        return {"mean": tf.reshape(mean, [-1, *self.action_shape]),
                "log_std": tf.reshape(0.5 * tf.math.log(variance), [-1, *self.action_shape])}

    def numpy_params(
        self, outputs: np.ndarray, log_std: np.ndarray | None = None, action_mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        assert log_std is not None, "a Box head's parameters include the model's log_std"
        mean, latent = self._split(outputs)
        variance = np.square(latent) @ np.exp(2.0 * log_std) + VARIANCE_FLOOR
        return {"mean": mean.reshape(-1, *self.action_shape),
                "log_std": (0.5 * np.log(variance)).reshape(-1, *self.action_shape)}

    def numpy_sampler(self, log_std: np.ndarray | None = None) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        # Without exploration matrices (evaluation with deterministic=False): one independent draw per step. The
        # base head's sampler, not DiagGaussianHead's, which computes σ once per batch shape: here it is per row.
        return PolicyHead.numpy_sampler(self, log_std)

    def exploration_matrices(self, log_std: np.ndarray, num_envs: int, rng: np.random.Generator) -> np.ndarray:
        """``E [num_envs, L, d]``: one matrix per sub-env, entries ``N(0, exp(log_std)²)``."""
        noise = rng.standard_normal((num_envs, *log_std.shape)).astype(log_std.dtype)
        return noise * np.exp(log_std)

    def explore(self, outputs: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """Actions ``mean(s) + φ(s) · E`` of each sub-env (row ``k`` uses ``matrices[k]``)."""
        mean, latent = self._split(outputs)
        noise = np.matmul(latent[:, None, :], matrices)[:, 0, :]
        return (mean + noise).reshape(-1, *self.action_shape)


def make(action_space: gymnasium.spaces.Space, use_sde: bool, sde_sample_freq: int) -> StateDependentHead | None:
    """The head of ``use_sde=True`` (``None`` without it), after checking the space and the frequency.

    Raises:
        TypeError: ``use_sde=True`` with an action space other than ``Box``.
        ValueError: ``sde_sample_freq`` neither -1 nor a positive integer, or other than -1 without ``use_sde``.
    """
    if isinstance(sde_sample_freq, bool) or not isinstance(sde_sample_freq, (int, np.integer)) or not (
            sde_sample_freq == -1 or sde_sample_freq > 0):
        raise ValueError(f"sde_sample_freq must be -1 (one exploration matrix per batch) or a positive number of env "
                         f"steps; got {sde_sample_freq!r}.")
    if not use_sde:
        if sde_sample_freq != -1:  # a forgotten use_sde=True would otherwise leave the noise independent, silently
            raise ValueError(f"sde_sample_freq={sde_sample_freq} sets how often use_sde=True draws new exploration "
                             "matrices; pass use_sde=True too, or leave sde_sample_freq at -1.")
        return None
    if not isinstance(action_space, gymnasium.spaces.Box):
        raise TypeError(f"use_sde=True explores a Box action space (a Gaussian policy); got {action_space!r}. "
                        "Discrete, MultiDiscrete and MultiBinary policies sample their own actions: use_sde=False.")
    return StateDependentHead(action_space)


def resample_now(step: int, sde_sample_freq: int) -> bool:
    """Whether collection draws new exploration matrices before env step ``step`` (0-based) of a batch:
    at the batch's first step, then every ``sde_sample_freq`` steps (never again with ``-1``)."""
    return step == 0 or (sde_sample_freq > 0 and step % sde_sample_freq == 0)


__all__ = ["StateDependentHead", "VARIANCE_FLOOR", "make", "resample_now"]
