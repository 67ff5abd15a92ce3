"""Interrupting ``fit`` anywhere leaves the pre- or post-update weights, never a partial update.

A seeded uninterrupted run records the complete model state (every weight, the
update counter, the optimizer's variables, the critic-shuffle seed) after each update. Runs with the same
seed are then interrupted at several points, by an exception or a
``KeyboardInterrupt``, and by ``KeyboardInterrupt``s delivered to the main thread
at arbitrary times (what Ctrl-C does). The interrupted model must equal,
byte for byte, the reference state after as many updates as it has done, and
``fit`` must be able to carry on.
"""

import _thread
import signal
import threading
import time

import gymnasium
import keras
import numpy as np
import pytest

import keras_trpo

from helpers import assert_bit_identical, tiny_trpo, training_state

STEPS = 128
REFERENCE_EPOCHS = 12


class Faulty(gymnasium.Wrapper):
    """CartPole that raises ``error`` at global step ``at`` (if set) and counts its resets."""

    def __init__(self, at=None, error=None):
        super().__init__(gymnasium.make("CartPole-v1"))
        self.count, self.at, self.error, self.resets = 0, at, error, 0

    def step(self, action):
        self.count += 1
        if self.count == self.at:
            raise self.error
        return self.env.step(action)

    def reset(self, **kwargs):
        self.resets += 1
        return self.env.reset(**kwargs)


def make_run(at=None, error=None):
    faulty = Faulty(at, error)
    env = gymnasium.vector.SyncVectorEnv([lambda: faulty])
    model = tiny_trpo(env, normalize_observations=True)
    return faulty, model, keras_trpo.Rollouts(env, model, steps=STEPS, seed=0)


class Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.states = []

    def on_train_begin(self, logs=None):
        self.states.append(training_state(self.model))

    def on_train_batch_end(self, batch, logs=None):
        self.states.append(training_state(self.model))


@pytest.fixture(scope="module")
def reference():
    _, model, rollouts = make_run()
    record = Record()
    model.fit(rollouts, epochs=REFERENCE_EPOCHS, verbose=0, callbacks=[record])
    return record.states, None


class RaiseAt(keras.callbacks.Callback):
    def __init__(self, hook, epoch, error):
        super().__init__()
        self.hook, self.epoch, self.error = hook, epoch, error

    def _maybe(self, hook, epoch):
        if hook == self.hook and epoch == self.epoch:
            raise self.error

    def on_epoch_begin(self, epoch, logs=None):
        self._maybe("on_epoch_begin", epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._maybe("on_train_batch_begin", self.model.policy_version)

    def on_train_batch_end(self, batch, logs=None):
        self._maybe("on_train_batch_end", self.model.policy_version - 1)

    def on_epoch_end(self, epoch, logs=None):
        self._maybe("on_epoch_end", epoch)


# name: (env fault step, env error, callback hook, epoch, callback error, expected exception, updates done)
POINTS = {
    "KeyboardInterrupt in env.step, 3rd batch": (300, KeyboardInterrupt(), None, None, None, KeyboardInterrupt, 2),
    "RuntimeError in env.step, 3rd batch": (300, RuntimeError("boom"), None, None, None, keras_trpo.RolloutError, 2),
    "KeyboardInterrupt in env.step, 1st batch": (5, KeyboardInterrupt(), None, None, None, KeyboardInterrupt, 0),
    "KeyboardInterrupt in on_epoch_begin": (None, None, "on_epoch_begin", 3, KeyboardInterrupt(), KeyboardInterrupt, 3),
    "KeyboardInterrupt before an update": (
        None, None, "on_train_batch_begin", 3, KeyboardInterrupt(), KeyboardInterrupt, 3
    ),
    "KeyboardInterrupt after an update": (None, None, "on_train_batch_end", 3, KeyboardInterrupt(), KeyboardInterrupt, 4),
    "ValueError in on_epoch_end": (None, None, "on_epoch_end", 3, ValueError("callback bug"), ValueError, 4),
}


@pytest.mark.parametrize("name", list(POINTS))
def test_an_interrupted_fit_keeps_whole_updates_and_can_go_on(name, reference):
    states, _ = reference
    at, env_error, hook, epoch, callback_error, expected, updates = POINTS[name]
    faulty, model, rollouts = make_run(at, env_error)
    callbacks = [] if hook is None else [RaiseAt(hook, epoch, callback_error)]
    with pytest.raises(expected):
        model.fit(rollouts, epochs=10, verbose=0, callbacks=callbacks)
    assert model.policy_version == updates
    assert_bit_identical(states[updates], training_state(model))
    if at is not None:
        # The env stopped mid-batch: the next batch starts from a reset, not from a stale observation.
        resets = faulty.resets
        faulty.at = None
        history = model.fit(rollouts, epochs=2, verbose=0)
        assert faulty.resets > resets
    else:
        history = model.fit(rollouts, epochs=2, verbose=0)
    assert history.history["step_accepted"] == [1.0, 1.0]
    assert model.policy_version == updates + 2


class CtrlCDuringEpoch(keras.callbacks.Callback):
    """At the start of epoch ``epoch``, arms a timer that sends the KeyboardInterrupt a Ctrl-C would.

    The delay is ``fraction`` of the median duration of the epochs so far, so the
    interrupt lands at that point of an iteration whatever the machine's speed:
    during collection for small fractions, during the update or the callbacks
    later, or in the next epoch past 1.
    """

    def __init__(self, epoch, fraction):
        super().__init__()
        self.epoch, self.fraction, self.durations, self.timer = epoch, fraction, [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        if epoch == self.epoch:
            # Epoch 0 includes tracing. The median, not the mean: one epoch stalled by a garbage collection of the
            # earlier tests' graphs (seen once in a full-suite run) must not push the interrupt past the last epoch.
            delay = self.fraction * float(np.median(self.durations[1:]))
            self.timer = threading.Timer(delay, _thread.interrupt_main)
            self.timer.start()

    def on_epoch_end(self, epoch, logs=None):
        self.durations.append(time.perf_counter() - self._start)
        if self.timer is not None and epoch > self.epoch:
            # A starved timer thread (a loaded machine) must not let fit finish first: by the end of the
            # next epoch the Ctrl-C has been sent, so an interrupt that never arrives was lost, not late.
            self.timer.join()


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9, 1.4])
def test_ctrl_c_at_an_arbitrary_moment_never_leaves_a_partial_update(fraction, reference):
    """``_thread.interrupt_main`` is how a SIGINT reaches Python: at the next bytecode of the main thread."""
    states, _ = reference
    # A simulated Ctrl-C that lands while a C extension checks for signals and clears them, or while a
    # finalizer runs (where Python prints and drops exceptions), never reaches fit: seen in one of two
    # full-suite CI runs on 2026-12-06 (fraction 0.9; cause not found). That is no partial update, so such a
    # run is tried once more; a second lost interrupt fails.
    for attempt in range(2):
        _, model, rollouts = make_run()
        record = Record()
        ctrl_c = CtrlCDuringEpoch(epoch=6, fraction=fraction)
        interrupted = False
        # A process started in the background by a shell without job control (`nohup cmd &`)
        # inherits SIGINT ignored, and interrupt_main then does nothing: handle it as Python does by default.
        previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            model.fit(rollouts, epochs=REFERENCE_EPOCHS, verbose=0, callbacks=[record, ctrl_c])
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if ctrl_c.timer is not None:
                ctrl_c.timer.cancel()
            signal.signal(signal.SIGINT, previous_handler)
        if interrupted:
            break
    assert interrupted
    updates = model.policy_version
    assert 6 <= updates <= 8, updates
    assert_bit_identical(states[updates], training_state(model))
    for recorded, expected in zip(record.states, states):
        assert_bit_identical(expected, recorded)
    history = model.fit(rollouts, epochs=2, verbose=0)
    assert history.history["step_accepted"] == [1.0, 1.0]
