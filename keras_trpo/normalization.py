"""Running normalization: observations (a layer inside the model, so export carries it)
and rewards (a numpy scaler inside :class:`keras_trpo.Rollouts`)."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="keras_trpo")
class RunningNormalization(keras.layers.Layer):
    """``clip((x − mean) / sqrt(var + epsilon), −clip, clip)`` with running statistics.

    The statistics are weights of the layer (saved, restored and exported with
    the model) and change only through :meth:`update`, never inside ``call``.
    ``TRPO.train_step`` calls :meth:`update` with the batch's observations
    *after* the policy and critic updates, so the policy that ``train_step``
    treats as "old" is exactly the one that collected the batch; the next
    collection then uses the new statistics (same scheme as sb3's
    ``VecNormalize``, which updates them during collection).

    Args:
        size: number of features (observations are flattened first).
        clip: bound on the normalized values.
        epsilon: added to the variance.

    Example:

    >>> norm = RunningNormalization(2)
    >>> norm.build((None, 2))
    >>> norm.update(tf.constant([[1.0, 10.0], [3.0, 30.0]]))
    >>> norm(tf.constant([[2.0, 20.0]])).numpy().tolist()
    [[0.0, 0.0]]
    """

    def __init__(self, size, clip=10.0, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.clip = float(clip)
        self.epsilon = float(epsilon)

    def build(self, input_shape=None):
        self.mean = self.add_weight(shape=(self.size,), initializer="zeros", trainable=False, name="mean")
        self.variance = self.add_weight(shape=(self.size,), initializer="ones", trainable=False, name="variance")
        # float64: a float32 count stops growing exactly after 2**24 samples.
        self.count = self.add_weight(shape=(), initializer="zeros", dtype="float64", trainable=False, name="count")
        self.built = True

    def call(self, x):
        x = (x - self.mean) / tf.sqrt(self.variance + self.epsilon)
        return tf.clip_by_value(x, -self.clip, self.clip)

    def update(self, x):
        """Merges the moments of ``x [N, size]`` into the running ones (Chan et al., 1979)."""
        x = tf.cast(tf.reshape(x, [-1, self.size]), tf.float64)
        batch_mean, batch_variance = tf.nn.moments(x, axes=[0])
        self.update_from_moments(batch_mean, batch_variance, tf.cast(tf.shape(x)[0], tf.float64))

    def update_from_moments(self, batch_mean, batch_variance, batch_count):
        """Merges a batch given by its float64 moments (``TRPO`` pools them across replicas)."""
        new_mean, new_variance, total = merge_moments(
            tf.cast(self.mean, tf.float64),
            tf.cast(self.variance, tf.float64),
            tf.convert_to_tensor(self.count),
            batch_mean,
            batch_variance,
            batch_count,
        )
        self.mean.assign(tf.cast(new_mean, self.mean.dtype))
        self.variance.assign(tf.cast(new_variance, self.variance.dtype))
        self.count.assign(total)

    def numpy_transform(self):
        """Returns a numpy function equal to ``call`` with the current statistics."""
        mean = self.mean.numpy()
        std = np.sqrt(self.variance.numpy() + np.float32(self.epsilon))
        clip = np.float32(self.clip)

        def transform(x):
            x = x - mean
            x /= std
            return _clip_in_place(x, clip)

        return transform

    def get_config(self):
        return {**super().get_config(), "size": self.size, "clip": self.clip, "epsilon": self.epsilon}


def merge_moments(mean, variance, count, batch_mean, batch_variance, batch_count):
    """Merges running moments with a batch's (Chan, Golub & LeVeque, 1979).

    Pure arithmetic, so it serves numpy arrays and TF tensors alike.

    Returns:
        ``(mean, variance, count)`` of the union of both samples.
    """
    total = count + batch_count
    delta = batch_mean - mean
    new_mean = mean + delta * batch_count / total
    m2 = variance * count + batch_variance * batch_count + delta * delta * count * batch_count / total
    return new_mean, m2 / total, total


def _clip_in_place(x: np.ndarray, bound: float) -> np.ndarray:
    """``np.clip(x, -bound, bound)`` written into ``x``: the same values for ``bound > 0`` (NaN kept), in two ufunc
    calls without ``np.clip``'s Python wrapper; the normalizer and the reward scaler run it on every env step."""
    return np.minimum(np.maximum(x, -bound, out=x), bound, out=x)


def _mean_and_variance(x: np.ndarray) -> tuple[np.floating, np.floating]:
    """``(x.mean(), x.var())`` of a 1-D float64 array with the same reductions (bit for bit), without
    ``np.var``'s Python-level argument handling: it runs once per env step in :class:`RewardScaler`."""
    mean = np.add.reduce(x) / x.size
    deviation = x - mean
    return mean, np.add.reduce(deviation * deviation) / x.size


class RewardScaler:
    """Divides rewards by the running standard deviation of the discounted return.

    The scheme of sb3's ``VecNormalize(norm_reward=True)`` and of the "reward
    scaling" studied by Engstrom et al., *Implementation Matters in Deep Policy
    Gradients* (ICLR 2020, https://arxiv.org/abs/2005.12729): per sub-env a
    discounted return ``R ← γ·R + r`` is accumulated, its running variance is
    updated every step, and the reward becomes ``clip(r / sqrt(var + ε), ±clip)``.
    ``R`` restarts at 0 when an episode ends. Rewards are not centred, so their
    sign (and the meaning of a termination) is kept.

    The critic then learns returns in the scaled units; the episode returns that
    :class:`keras_trpo.Rollouts` reports are always the raw ones.

    Args:
        num_envs: number of sub-environments.
        gamma: the discount of the accumulated return.
        clip: bound on the scaled rewards.
        epsilon: added to the variance.

    Example:

    >>> scaler = RewardScaler(num_envs=2, gamma=0.0)
    >>> scaler(np.array([1.0, 3.0]), np.array([False, False])).round(3).tolist()
    [1.0, 3.0]
    """

    def __init__(self, num_envs, gamma, clip=10.0, epsilon=1e-8):
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.epsilon = float(epsilon)
        self.returns = np.zeros(int(num_envs))
        # sb3's RunningMeanStd start: a tiny prior count, so the first steps set the statistics.
        self.mean, self.variance, self.count = 0.0, 1.0, 1e-4

    @property
    def scale(self) -> float:
        """The current divisor ``sqrt(var + ε)``."""
        return math.sqrt(self.variance + self.epsilon)

    def __call__(self, rewards, done):
        """Scales one step's ``rewards [num_envs]``; ``done [num_envs]`` ends episodes after it.

        Runs on every env step, so the statistics are Python floats (the same double-precision operations
        as numpy scalars, without their overhead) and the clip is :func:`_clip_in_place`.
        """
        rewards = np.asarray(rewards, np.float64)
        returns = self.returns * self.gamma + rewards
        finite = np.isfinite(returns)
        # A non-finite reward must not poison the statistics for good; the update rejects the batch.
        if finite.all():
            batch_mean, batch_variance = _mean_and_variance(returns)
            self.mean, self.variance, self.count = merge_moments(
                self.mean, self.variance, self.count, float(batch_mean), float(batch_variance), returns.size
            )
            self.returns = np.where(done, 0.0, returns)
        else:
            self.returns = np.where(done | ~finite, 0.0, returns)
        return _clip_in_place(rewards / self.scale, self.clip)

    def get_state(self) -> dict:
        return {"returns": self.returns.copy(), "mean": self.mean, "variance": self.variance, "count": self.count}

    def set_state(self, state: dict) -> None:
        self.returns = np.array(state["returns"], np.float64)
        self.mean, self.variance, self.count = state["mean"], state["variance"], state["count"]
