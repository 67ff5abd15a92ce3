"""Plain helpers shared by the test modules (the fixtures are in conftest.py).

``from helpers import ...`` works in every test module: pytest puts tests/ on ``sys.path`` (rootdir
conftest.py, no ``__init__.py``), and a script run as ``python tests/x.py`` has tests/ as ``sys.path[0]``.
"""

import shutil
import sys
from pathlib import Path

import gymnasium
import keras
import numpy as np

import keras_trpo


def keras_trpo_script() -> str:
    """The path of the installed ``keras-trpo`` console script."""
    script = Path(sys.executable).with_name("keras-trpo")
    found = str(script) if script.exists() else shutil.which("keras-trpo")
    assert found, "the keras-trpo console script is not installed: pip install -e ."
    return found


def cartpole_env(num_envs=2, mode="sync", **kwargs):
    """CartPole-v1 as a vector env, ``make_vec``'s sync mode unless ``mode`` says otherwise."""
    return gymnasium.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode=mode, **kwargs)


def tiny_trpo(env, hidden=8, *, compile=True, learning_rate=1e-3, jit_compile="auto", **kwargs):
    """``TRPO.for_env`` with one hidden layer of ``hidden`` units in both networks and seed 0 (``kwargs``
    override or add model arguments), compiled with ``Adam(learning_rate)`` unless ``compile=False``."""
    kwargs = {"hidden_units": (hidden,), "value_hidden_units": (hidden,), "seed": 0, **kwargs}
    model = keras_trpo.TRPO.for_env(env, **kwargs)
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    return model


def cartpole_run(num_envs=2, steps=64, seed=0, hidden=8, **model_kwargs):
    """A compiled tiny CartPole model and its ``Rollouts`` (model and rollouts seeded with ``seed``)."""
    env = cartpole_env(num_envs)
    model = tiny_trpo(env, hidden, seed=seed, **model_kwargs)
    return model, keras_trpo.Rollouts(env, model, steps=steps, seed=seed)


class Batches(keras.utils.PyDataset):
    """Fixed batches, one per step. ``Batches([batch])`` serves one batch every epoch: stale from the second on
    (and, without ``policy_version``, batches not tied to a rollout)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        return self.batches[index]


class Crash(Exception):
    """The simulated crash of ``CrashAt``."""


class CrashAt(keras.callbacks.Callback):
    """Simulates a crash: raises ``Crash`` when epoch ``epoch`` is about to start."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Crash(f"crashed at epoch {epoch}")


def snapshot(variables):
    """Copies of the variables' current values, by variable path (in the variables' order)."""
    values = {v.path: np.array(v.numpy(), copy=True) for v in variables}
    assert len(values) == len(variables), "two variables share a path"
    return values


def training_variables(model, *, update_counter=True):
    """Every variable training changes: the model's weights (without the update counter ``policy_version`` if
    ``update_counter=False``), the critic optimizer's variables and the critic-shuffle seed generator's state."""
    weights = [w for w in model.weights if update_counter or "policy_version" not in w.path]
    return [*weights, *model.optimizer.variables, model.seed_generator.state]


def training_state(model, *, update_counter=True):
    """``snapshot`` of ``training_variables``: compare two with ``assert_bit_identical`` or ``bit_differences``."""
    return snapshot(training_variables(model, update_counter=update_counter))


def _values(values):
    if isinstance(values, dict):
        return list(values.values())
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in values]


def bit_differences(before, after):
    """Where two equally long snapshots (or lists of arrays or variables) differ in dtype, shape or any bit,
    compared in order: the paths of ``before`` if it is a snapshot, else the indices. Two models' snapshots
    compare although their paths differ (``trpo/...`` and ``trpo_1/...``)."""
    names = list(before) if isinstance(before, dict) else None
    before, after = _values(before), _values(after)
    assert len(before) == len(after), f"{len(before)} values before, {len(after)} after"
    return [
        names[i] if names else i
        for i, (a, b) in enumerate(zip(before, after))
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes()
    ]


def assert_bit_identical(before, after):
    """Every value of ``after`` is bit for bit the one of ``before`` (see ``bit_differences``)."""
    differ = bit_differences(before, after)
    assert not differ, f"differ bit for bit: {differ}"


def calls_while_collecting(code, env, steps=64):
    """``(calls, batch)``: one ``Rollouts.collect`` of ``steps`` on ``env`` with a tiny model, and the ``what``
    argument of every call of the function whose ``__code__`` is ``code`` during it (a profile hook: it changes
    nothing in the run)."""
    model = keras_trpo.TRPO.for_env(env, seed=0, hidden_units=(4,), value_hidden_units=(4,))
    rollouts = keras_trpo.Rollouts(env, model, steps=steps, seed=0)
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls.append(frame.f_locals.get("what"))

    sys.setprofile(profile)
    try:
        batch = rollouts.collect()
    finally:
        sys.setprofile(None)
    return calls, batch


def fit_resumable(model, rollouts, epochs, backup=None, crash=None):
    """``model.fit(rollouts)`` for ``epochs``; with a ``backup`` directory, with BackupAndRestore and RolloutsBackup
    (a resumable run), and with ``crash``, raising ``Crash`` at the end of that epoch. Returns the history dict."""
    callbacks = [] if backup is None else [keras.callbacks.BackupAndRestore(backup),
                                           keras_trpo.callbacks.RolloutsBackup(rollouts, backup)]
    if crash is not None:
        callbacks.append(CrashAt(crash))
    return model.fit(rollouts, epochs=epochs, verbose=0, callbacks=callbacks).history
