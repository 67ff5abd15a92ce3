"""``keras-trpo train --intra-op-threads N``: TensorFlow's intra-op pool set before any op runs (issue 26)."""

import json
import subprocess
import sys

import pytest
import tensorflow as tf

from helpers import keras_trpo_script
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


def test_train_records_its_thread_setting_in_config_json(tmp_path):
    """Bug caught: config.json without ``intra_op_threads`` (a run's floats depend on it: README, Reproducibility)."""
    out = tmp_path / "run"
    subprocess.run([keras_trpo_script(), "train", "CartPole-v1", "--steps", "1024", "--intra-op-threads", "1",
                    "--eval-episodes", "1", "--out", str(out)], capture_output=True, text=True, check=True)
    assert json.loads((out / "config.json").read_text())["intra_op_threads"] == 1
