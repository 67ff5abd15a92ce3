"""Running observation normalization, kept inside the model so export carries it."""

from __future__ import annotations

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
        batch_count = tf.cast(tf.shape(x)[0], tf.float64)
        count = tf.convert_to_tensor(self.count)
        mean = tf.cast(self.mean, tf.float64)
        total = count + batch_count
        delta = batch_mean - mean
        new_mean = mean + delta * batch_count / total
        m2 = tf.cast(self.variance, tf.float64) * count + batch_variance * batch_count
        new_variance = (m2 + tf.square(delta) * count * batch_count / total) / total
        self.mean.assign(tf.cast(new_mean, self.mean.dtype))
        self.variance.assign(tf.cast(new_variance, self.variance.dtype))
        self.count.assign(total)

    def numpy_transform(self):
        """Returns a numpy function equal to ``call`` with the current statistics."""
        mean = self.mean.numpy()
        std = np.sqrt(self.variance.numpy() + np.float32(self.epsilon))
        clip = np.float32(self.clip)
        return lambda x: np.clip((x - mean) / std, -clip, clip)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "clip": self.clip, "epsilon": self.epsilon}
