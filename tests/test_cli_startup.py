"""Start-up of ``keras-trpo`` (issue 15, item 8): ``--help`` and ``presets`` do not import TensorFlow;
the commands that do keep TensorFlow's C++ start-up lines off the terminal unless ``--tf-logs``.

Each check runs in a fresh Python process: what is imported, and what reaches file descriptor 2,
depends on what the process has already loaded.
"""

import re
import subprocess
import sys
import time

import pytest

from helpers import keras_trpo_script

# TensorFlow's C++ start-up lines: "I0000 00:00:... port.cc:153] oneDNN custom operations are on ...",
# "... cudart_stub.cc:31] Could not find cuda drivers ...", "E0000 ... failed call to cuInit: ...",
# absl's "WARNING: All log messages before absl::InitializeLog() ..." and the CPU-instructions note.
TF_LINE = re.compile(r"^[EWIF]\d{4} |cuInit|oneDNN|absl::InitializeLog|rebuild TensorFlow with the appropriate")


def tf_lines(text):
    return [line for line in text.splitlines() if TF_LINE.search(line)]


def python(code, env=None, timeout=240):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def imported_modules(importtime_stderr):
    """The modules ``python -X importtime`` lists as imported."""
    return {line.rpartition("|")[2].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["evaluate", "--help"], ["export", "--help"], ["info", "--help"],
     ["plot", "--help"], ["presets"], ["presets", "CartPole-v1"]],
)
def test_help_and_presets_do_not_import_tensorflow(argv):
    """Every command's --help, and presets, ran after importing TensorFlow (4.4-4.9 s, 7-10 C++ lines).
    The console script itself, under ``python -X importtime``, which lists every module imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", keras_trpo_script(), *argv],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "keras_trpo.cli.parser" in modules  # the listing is complete
    assert not {"tensorflow", "keras", "tensorflow_probability", "keras_trpo.model"} & modules
    assert tf_lines(result.stderr) == []


def test_keras_trpo_help_is_quick_and_quiet():
    script = keras_trpo_script()
    subprocess.run([script, "--help"], capture_output=True, timeout=60)  # warm the file cache and .pyc files
    started = time.perf_counter()
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    print(f"keras-trpo --help: {seconds:.2f} s")  # 0.2 s here (4.5 s when it imported TensorFlow)
    assert result.returncode == 0 and result.stdout.startswith("usage: keras-trpo")
    assert "--tf-logs" in result.stdout
    assert result.stderr == ""


def test_in_the_keras_trpo_process_the_public_names_load_when_first_used():
    code = """
import os, sys
os.environ["KERAS_TRPO_LAZY_IMPORT"] = "1"  # what the keras-trpo console script sets before importing keras_trpo
import keras_trpo
assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "import keras_trpo loaded Keras"
assert keras_trpo.__version__
from keras_trpo import TRPO, Rollouts, evaluate, callbacks
assert keras_trpo.TRPO is TRPO and TRPO.__module__ == "keras_trpo.model"
assert callbacks.Evaluation and keras_trpo.ops.conjugate_gradient and keras_trpo.policies
assert {"TRPO", "Rollouts", "callbacks"} <= set(dir(keras_trpo))
try:
    keras_trpo.no_such_name
except AttributeError as error:
    assert "has no attribute 'no_such_name'" in str(error)
print("ok")
"""
    result = python(code)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-3000:]


def test_a_non_tensorflow_keras_backend_is_refused_at_import_with_the_same_message():
    import os

    result = python("import keras_trpo", env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ImportError: keras_trpo needs the TensorFlow Keras backend; KERAS_BACKEND is 'jax'. "
        "Set KERAS_BACKEND=tensorflow."
    )


def test_train_shows_no_tensorflow_start_up_line_unless_tf_logs(tmp_path):
    """`keras-trpo train CartPole-v1 --steps 2048` printed 9 lines from TensorFlow's C++ runtime on stderr,
    among them "E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)" on a machine without a GPU."""
    script = keras_trpo_script()
    commands = {
        "default": [script, "train", "CartPole-v1", "--steps", "2048", "--out", str(tmp_path / "quiet")],
        "tf-logs": [script, "train", "CartPole-v1", "--steps", "2048", "--out", str(tmp_path / "logs"), "--tf-logs"],
    }
    processes = {
        name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, argv in commands.items()
    }
    results = {name: (process.wait(timeout=300), *process.communicate()) for name, process in processes.items()}
    status, out, quiet = results["default"]
    assert status == 0 and tf_lines(quiet) == [], quiet
    status, out, logs = results["tf-logs"]
    assert status == 0 and any(line.startswith("I0000 ") and "oneDNN" in line for line in tf_lines(logs)), logs
    for name, (_, out, _) in results.items():
        assert out.startswith("Training TRPO on CartPole-v1 with preset CartPole-v1 (tuned): 2 iterations x 1,024 env "
                              "steps = 2,048 env steps, 8 envs, seed 0"), (name, out)


@pytest.mark.parametrize("show", [False, True])
def test_python_output_after_start_up_reaches_stderr(show):
    code = f"""
import os, sys, warnings
os.environ["KERAS_TRPO_LAZY_IMPORT"] = "1"  # as in the console script's process: keras_trpo does not load TensorFlow
from keras_trpo.cli.startup import load_tensorflow
load_tensorflow(show_logs={show})
warnings.warn("a Python warning after start-up")
print("a Python line on stderr", file=sys.stderr, flush=True)
os.write(2, b"a C++-level line on fd 2\\n")
"""
    result = python(code)
    assert result.returncode == 0, result.stderr
    for text in ("UserWarning: a Python warning after start-up", "a Python line on stderr", "a C++-level line on fd 2"):
        assert text in result.stderr, result.stderr
    assert bool(tf_lines(result.stderr)) == show, result.stderr


def test_what_tensorflow_printed_is_shown_when_loading_fails():
    code = """
import os, sys
os.environ["KERAS_TRPO_LAZY_IMPORT"] = "1"
from keras_trpo.cli import startup

def failing_load():
    os.write(2, b"F0000 00:00:0.0 1 loader.cc:1] what TensorFlow said before failing\\n")
    raise ImportError("libtensorflow_framework.so.2: cannot open shared object file")

startup._load = failing_load
try:
    startup.load_tensorflow()
except ImportError as error:
    print(error)
"""
    result = python(code)
    assert result.returncode == 0
    assert result.stdout == "libtensorflow_framework.so.2: cannot open shared object file\n"
    assert "what TensorFlow said before failing" in result.stderr
