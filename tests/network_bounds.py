"""The worst-case float32 gap between two evaluations of a Keras network (Conv2D, MaxPooling2D, Flatten, Dense),
shared by the export parity tests (tests/test_export_onnx.py, tests/test_export_litert.py)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from numerics import ELEMENTWISE_UNITS, U32, gamma


def network_gap(layers, x, error=None):
    """``[N, outputs]``: how far two float32 evaluations of ``layers`` (Conv2D, MaxPooling2D, Flatten, Dense) may differ.

    numerics.dense_stack_error's first-order bound, carried along the network's own float64 values instead of
    magnitudes, so that a saturated tanh or an inactive ReLU passes no error on:
    - a Dense or convolution layer (``n`` terms per output: its fan-in ``kh·kw·c_in``) computes ``z = W x + b``
      from ``x`` known within ``e``: ``|W| e + γ_{n+1} (|W| (|x| + e) + |b|)`` (Higham §3.1);
    - its activation ``f`` passes ``e_z`` on as ``sup |f'|`` over ``[z − e_z, z + e_z]`` times ``e_z`` (ReLU: 0 if
      ``z + e_z < 0``; tanh: ``1 − tanh²(max(|z| − e_z, 0))``) and adds its own rounding, a few ulps of ``|f(z)|``;
    - max-pooling is exact and 1-Lipschitz (``|max a − max b| ≤ max |a − b|``): it pools the errors.
    ``error``: the bound already in ``x`` (the normalizer's). Twice one evaluation's bound, as numerics.mlp_gap.
    """
    x = np.asarray(x, np.float64)
    error = np.zeros_like(x) if error is None else error
    for layer in layers:
        if isinstance(layer, keras.layers.Flatten):
            x, error = (a.reshape(len(a), -1) for a in (x, error))
        elif isinstance(layer, keras.layers.MaxPooling2D):
            pool = lambda a: tf.nn.max_pool2d(a, layer.pool_size, layer.strides, layer.padding.upper()).numpy()  # noqa: B023
            x, error = pool(x), pool(error)
        else:
            kernel, bias = (np.asarray(w.numpy(), np.float64) for w in (layer.kernel, layer.bias))
            if isinstance(layer, keras.layers.Conv2D):
                apply = lambda a, k: tf.nn.conv2d(a, k, layer.strides, layer.padding.upper()).numpy()  # noqa: B023
            else:
                apply = lambda a, k: a @ k
            z = apply(x, kernel) + bias
            fan_in = int(np.prod(kernel.shape[:-1]))
            error_z = apply(error, np.abs(kernel)) + gamma(fan_in + 1) * (apply(np.abs(x) + error, np.abs(kernel))
                                                                           + np.abs(bias))
            activation = keras.activations.serialize(layer.activation)
            if activation == "linear":
                x, error = z, error_z
            elif activation == "relu":
                x, error = np.maximum(z, 0), np.where(z + error_z > 0, error_z, 0) + ELEMENTWISE_UNITS * U32 * np.maximum(z, 0)
            elif activation == "tanh":
                slope = 1 - np.tanh(np.maximum(np.abs(z) - error_z, 0)) ** 2
                x, error = np.tanh(z), slope * error_z + ELEMENTWISE_UNITS * U32 * np.abs(np.tanh(z))
            else:
                raise ValueError(f"network_gap: no bound for activation {activation!r}")
    return 2 * error
