"""Running observation normalization: the graph (``call``) and numpy (``numpy_transform``) twins.

Each test names the one-line bug it catches. Expected values are computed in float64 numpy from the
layer's statistics; tolerances are tests/numerics.py's derived bounds.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_trpo.normalization import RunningNormalization
from numerics import normalization_error

PATHS = {
    "call eagerly": lambda norm, x: norm(tf.constant(x)).numpy(),
    "call in a tf.function": lambda norm, x: tf.function(norm.call, autograph=False)(tf.constant(x)).numpy(),
    "numpy_transform (acting)": lambda norm, x: norm.numpy_transform()(x),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_outliers_are_clipped_to_the_bound_in_the_graph_and_in_numpy(path):
    """Catches: the clip removed from ``call`` (``return x``) or from ``numpy_transform``
    (``lambda x: (x - mean) / std``): acting and the model would then disagree on outliers.

    Statistics mean (1, −2), std (0.5, 2); clip 3. Rows far outside ±3 std must come out as exactly
    ±3, the others as ``(x − mean) / std``, within the derived rounding bound.
    """
    norm = RunningNormalization(2, clip=3.0)
    norm.build((None, 2))
    data = np.random.default_rng(0).normal([1.0, -2.0], [0.5, 2.0], size=(512, 2)).astype(np.float32)
    norm.update(tf.constant(data))
    x = np.array([[1.2, -1.0], [60.0, -300.0], [-40.0, 500.0], [2.0, -7.0], [-0.5, 4.5]], np.float32)
    mean = np.asarray(norm.mean.numpy(), np.float64)
    std = np.sqrt(np.asarray(norm.variance.numpy(), np.float64) + norm.epsilon)
    unclipped = (x - mean) / std
    expected = np.clip(unclipped, -3.0, 3.0)
    assert (np.abs(unclipped) > 3.5).sum() >= 4 and (np.abs(unclipped) < 2.5).sum() >= 3  # both kinds present
    _, bound = normalization_error(norm, x)
    actual = PATHS[path](norm, x)
    assert actual.shape == x.shape
    error = np.abs(actual - expected)
    assert np.all(error <= bound), (
        f"{path}: off by up to {error.max():.3g} (bound {bound.max():.1e}); got {actual.round(3).tolist()}")
