"""The default networks: MLPs with orthogonal initialization, as plain Keras layers.

A leaf module: it imports nothing from keras_trpo.

Orthogonal initialization with a small policy output layer (sb3; Engstrom et
al. 2020, "Implementation Matters in Deep Policy Gradients"): initial actions are
near-uniform or near-zero mean, so the first KL steps are well scaled.

Example:

>>> hidden, output, _ = dense_stack((64, 64), "tanh", 2, output_gain=0.01, prefix="policy", seed=0)
>>> [layer.name for layer in (*hidden, output)]
['policy_hidden_0', 'policy_hidden_1', 'policy_output']
"""

from __future__ import annotations

import math

import keras

HIDDEN_GAIN = math.sqrt(2.0)


def dense_stack(units, activation, output_units, *, output_gain, prefix, seed=None):
    """Hidden ``Dense`` layers of widths ``units`` and an output ``Dense(output_units)``.

    Kernels are orthogonal with gain √2 (hidden) and ``output_gain`` (output);
    biases are zero. ``seed`` seeds the first kernel and each next kernel gets
    ``seed + 1``, ...; the next free seed is returned so that stacks built one
    after the other draw distinct kernels.

    Returns:
        ``(hidden_layers, output_layer, next_seed)``.
    """

    def dense(width, gain, act, name):
        nonlocal seed
        kernel = keras.initializers.Orthogonal(gain=gain, seed=seed)
        if seed is not None:
            seed += 1
        return keras.layers.Dense(width, activation=act, kernel_initializer=kernel, name=name)

    hidden = [dense(u, HIDDEN_GAIN, activation, f"{prefix}_hidden_{i}") for i, u in enumerate(units)]
    output = dense(output_units, output_gain, None, f"{prefix}_output")
    return hidden, output, seed


def build_stack(layers, input_width: int) -> None:
    """Builds ``Dense`` layers applied in order to inputs of ``input_width`` features."""
    for layer in layers:
        layer.build((None, input_width))
        input_width = layer.units
