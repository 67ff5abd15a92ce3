"""The preset key max_kl_final: the trust region annealed linearly over the run (issue 27, TRPO+'s lever)."""

import keras
import numpy as np
import pytest

from keras_trpo import presets, training
from keras_trpo.presets.errors import PresetError


class Logs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs))


def test_max_kl_final_anneals_the_bound_each_update_respects():
    """Each iteration's max_kl is the linear interpolation from model.max_kl to max_kl_final, and the update
    keeps every accepted step's KL within it (the bound reaches the line search, not only the logs).
    Catches: the schedule not added by training.train (no max_kl logged), the interpolation over the wrong
    number of iterations (the last value is not max_kl_final), or the schedule added after the metrics are read."""
    preset = presets.load_preset("CartPole-v1").override(
        {"max_kl_final": 0.002, "model.max_kl": 0.05, "rollouts.steps": 256, "model.hidden_units": [16]})
    logs = Logs()
    result = training.train(preset, seed=0, total_steps=5 * 256, callbacks=[logs])
    expected = 0.05 + (0.002 - 0.05) * np.arange(5) / 4
    np.testing.assert_allclose([e["max_kl"] for e in logs.epochs], expected, rtol=1e-6)
    assert result.model.max_kl == pytest.approx(0.002)
    kls = np.array([e["kl"] for e in logs.epochs])
    accepted = np.array([e["step_accepted"] for e in logs.epochs]) > 0.5
    assert accepted.sum() >= 3 and (kls[accepted] <= expected[accepted] * (1 + 1e-5)).all()
    # The first step is not limited by the last bound: annealing changes what the update does.
    assert kls[0] > 0.002


@pytest.mark.parametrize("value", [0, -0.01, True, "0.01", float("inf"), float("nan")])
def test_a_bad_max_kl_final_is_one_preset_error(value):
    """Catches: any of these accepted (a zero or NaN bound would reject every update)."""
    with pytest.raises(PresetError, match=r"^CartPole-v1: max_kl_final must be a finite number > 0 .*; got "):
        presets.load_preset("CartPole-v1").override({"max_kl_final": value})


def test_without_max_kl_final_the_bound_stays_the_models():
    preset = presets.load_preset("CartPole-v1")
    assert preset.max_kl_final is None and preset.kl_schedule(10, 0.02) is None
