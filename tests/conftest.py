"""Fixtures shared by the test modules."""

import keras
import numpy as np
import pytest


@pytest.fixture
def float64():
    """Builds the test's models in float64 (Keras ``floatx`` and dtype policy); float32 again afterwards.

    Yields float64's unit roundoff u = 2**-53. Math compared against an independent float64
    computation after conjugate gradient or several updates is compared in float64: float32
    summation-order differences, amplified by the condition number, differ between CPU models
    (issue 24), while in float64 a bound of many thousand u is still far below any error of the math.
    """
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield np.finfo(np.float64).eps / 2
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
