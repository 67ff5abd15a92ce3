"""The train function: the stale-batch check on every path, XLA included; the private Keras/TF hooks we use.

XLA drops ``tf.debugging`` assertions, so a stale-batch check written as an
assertion vanishes in a ``jit_compile=True`` step. These tests feed the same
batch twice, compiled with and without XLA, through ``fit`` and through a
compiled ``train_step``.
"""

import inspect

import pytest
import tensorflow as tf

import keras_trpo
from keras_trpo import errors

from helpers import Batches, assert_bit_identical, cartpole_run, training_state


def cartpole(jit_compile):
    return cartpole_run(value_epochs=1, jit_compile=jit_compile)


def state(model):
    """Every variable training changes but the update counter (the critic optimizer's too)."""
    return training_state(model, update_counter=False)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_refuses_a_stale_batch_before_any_compute(jit_compile):
    """Catches: the host-side check removed from TrainFunction (under XLA the stale batch then moves the policy)."""
    model, rollouts = cartpole(jit_compile)
    source = Batches([rollouts[0]])  # the same batch every epoch: stale from the second
    model.fit(source, epochs=1, verbose=0)
    after_first = state(model)
    with pytest.raises(keras_trpo.StaleBatchError, match="collected by policy_version 0 but the model is at 1"):
        model.fit(source, epochs=1, verbose=0)
    assert_bit_identical(after_first, state(model))
    assert model.policy_version == 1


def test_a_jit_compiled_train_step_rejects_a_stale_batch_and_changes_nothing():
    """Catches: the in-graph freshness test dropped from ``rejection_before_update`` (XLA drops assertions)."""
    model, rollouts = cartpole(jit_compile=True)
    batch = rollouts[0]
    step = tf.function(model.train_step, jit_compile=True)
    first = step(batch)
    assert float(first["step_accepted"]) == 1.0
    before = state(model)
    second = step(batch)  # collected by version 0; the model is at version 1
    assert float(second["step_accepted"]) == 0.0
    assert float(second["rejection_reason"]) == errors.STALE
    assert_bit_identical(before, state(model))
    fresh = rollouts[0]  # collected by the current weights: accepted by the same compiled step
    assert float(step(fresh)["step_accepted"]) == 1.0
    assert step.experimental_get_tracing_count() == 1


# --------------------------------------------------------------------------
# Private Keras/TF attributes keras_trpo relies on: fail loudly if they change
# --------------------------------------------------------------------------
def test_keras_still_calls_the_maybe_symbolic_build_hook_that_trpo_overrides():
    """keras_trpo.trainer.Trainer._maybe_symbolic_build skips Keras' symbolic build under a strategy."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    hook = TensorFlowTrainer._maybe_symbolic_build
    assert list(inspect.signature(hook).parameters) == ["self", "iterator", "data_batch"]
    assert "self._maybe_symbolic_build(iterator=" in inspect.getsource(TensorFlowTrainer.fit)


def test_tensorflow_strategies_still_expose_use_merge_call():
    """keras_trpo.distribute._needs_merge_call reads StrategyExtended._use_merge_call()."""
    from keras_trpo.distribute import _needs_merge_call

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert callable(strategy.extended._use_merge_call)
    assert isinstance(_needs_merge_call(strategy), bool)
