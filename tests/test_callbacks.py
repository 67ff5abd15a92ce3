"""keras_trpo.callbacks."""

import gymnasium
import keras
import pytest

import keras_trpo
from keras_trpo.callbacks import ProgressLogger


def test_progress_logger_prints_every_n_iterations_with_episode_stats():
    env = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(8,), value_hidden_units=(8,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    lines = []
    model.fit(
        keras_trpo.Rollouts(env, model, steps=128, seed=0),
        epochs=4,
        verbose=0,
        callbacks=[ProgressLogger(every=2, print_fn=lines.append)],
    )
    assert len(lines) == 2
    assert lines[0].startswith("iteration    2 | env steps      256 | episode return")
    assert lines[1].startswith("iteration    4 | env steps      512 |")
    assert "steps/s" in lines[1] and "kl 0.0" in lines[1]


def test_progress_logger_says_when_no_episode_finished():
    lines = []
    logger = ProgressLogger(every=1, print_fn=lines.append)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"episode_return": float("nan"), "env_steps": 10.0, "kl": 0.01})
    assert "no episode finished" in lines[0]


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_progress_logger_rejects_bad_every(every):
    with pytest.raises(ValueError, match="every"):
        ProgressLogger(every=every)
