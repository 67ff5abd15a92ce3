"""TensorFlow's intra-op pool set before any op runs (issue 26): a preset's ``intra_op_threads`` (1 for the MLP
presets), applied by ``training.train`` and ``keras-trpo train``, and ``keras-trpo train --intra-op-threads N``."""

import json
import subprocess
import sys
import warnings

import pytest
import tensorflow as tf

from helpers import keras_trpo_script
from keras_trpo import presets, training
from keras_trpo.cli.common import CLIError
from keras_trpo.cli.startup import load_tensorflow

PROBE = ("from keras_trpo.cli.startup import load_tensorflow; load_tensorflow(intra_op_threads={n}); "
         "import tensorflow as tf; print('THREADS', tf.config.threading.get_intra_op_parallelism_threads())")


@pytest.mark.parametrize("threads", [1, 3])
def test_load_tensorflow_sets_the_intra_op_threads_before_tensorflow_runs(threads):
    """Bug caught: ``_load`` ignoring ``intra_op_threads`` (the set call dropped): TensorFlow keeps its default,
    which it reports as 0."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(n=threads)], capture_output=True, text=True, check=True)
    assert f"THREADS {threads}" in out.stdout.splitlines()


def test_a_thread_setting_tensorflow_can_no_longer_take_is_one_cli_error():
    """Bug caught: the RuntimeError of ``set_intra_op_parallelism_threads`` after TensorFlow ran an op let through
    (a traceback instead of one line naming the flag and the fix)."""
    tf.constant(1.0) + 1.0  # this process's TensorFlow is running
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(CLIError, match=r"--intra-op-threads 7: TensorFlow already runs .* new process"):
        load_tensorflow(intra_op_threads=7 if current != 7 else 5)
    load_tensorflow(intra_op_threads=None)  # no setting asked: nothing to refuse


@pytest.mark.parametrize("arguments, recorded", [
    (["--intra-op-threads", "2"], 2), ([], 1), (["--set", "intra_op_threads=null"], None),
], ids=["flag", "preset", "tensorflow-default"])
def test_train_records_its_thread_setting_in_config_json(tmp_path, arguments, recorded):
    """Bugs caught: config.json without ``intra_op_threads`` (a run's floats depend on it: README, Reproducibility),
    the preset's setting not applied by ``keras-trpo train`` (config.json records what TensorFlow runs with), or
    the flag not overriding the preset."""
    out = tmp_path / "run"
    subprocess.run([keras_trpo_script(), "train", "CartPole-v1", "--steps", "1024", *arguments,
                    "--eval-episodes", "1", "--out", str(out)], capture_output=True, text=True, check=True)
    assert json.loads((out / "config.json").read_text())["intra_op_threads"] == recorded


TRAIN_PROBE = ("from keras_trpo import presets, training; preset = presets.load_preset('CartPole-v1'){override}; "
               "training.train(preset, seed=0, total_steps=1024); "
               "import tensorflow as tf; print('THREADS', tf.config.threading.get_intra_op_parallelism_threads())")


@pytest.mark.parametrize("override, threads", [("", 1), (".override({'intra_op_threads': None})", 0)])
def test_training_train_runs_with_the_presets_threads(override, threads):
    """Bug caught: ``training.train`` not applying the preset's ``intra_op_threads`` (the examples, which share
    its flow with ``keras-trpo train``, would run other floats than the CLI), or applying 1 when the preset says
    null (TensorFlow's default, reported as 0)."""
    out = subprocess.run([sys.executable, "-c", TRAIN_PROBE.format(override=override)], capture_output=True,
                         text=True, check=True)
    assert f"THREADS {threads}" in out.stdout.splitlines()


def test_a_presets_thread_setting_tensorflow_can_no_longer_take_warns_and_changes_nothing():
    """Bugs caught: the preset's setting raising in a process whose TensorFlow already runs (a notebook, this test
    process: the in-process CLI tests would fail), or passing silently, or warning on every call (twice per
    in-process ``keras-trpo train``); ``strict`` not raising."""
    tf.constant(1.0) + 1.0
    current = tf.config.threading.get_intra_op_parallelism_threads()
    other = 7 if current != 7 else 5
    with pytest.warns(RuntimeWarning, match=f"intra_op_threads={other}: TensorFlow already runs"):
        training.set_intra_op_threads(other)
    assert tf.config.threading.get_intra_op_parallelism_threads() == current
    with warnings.catch_warnings():  # once per process and setting: the CLI asks before train() asks again
        warnings.simplefilter("error")
        training.set_intra_op_threads(other)
    with pytest.raises(training.ThreadSettingError):
        training.set_intra_op_threads(other, strict=True)
    training.set_intra_op_threads(current, strict=True)  # what it already runs with: nothing to refuse


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "1"])
def test_a_presets_intra_op_threads_is_a_positive_integer_or_null(value):
    """Bug caught: the preset check dropped: ``0`` or ``True`` would reach TensorFlow (0 meaning its default)."""
    with pytest.raises(presets.PresetError, match=f"intra_op_threads must be a positive integer or null.*{value!r}"):
        presets.load_preset("CartPole-v1").override({"intra_op_threads": value})
