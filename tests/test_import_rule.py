"""What ``import keras_trpo`` imports follows one plain rule (issue 25, item 5): everything, TRPO registered for
``keras.models.load_model``, unless ``KERAS_TRPO_LAZY_IMPORT=1``, which the ``keras-trpo`` console script's entry
point (``keras_trpo_command``, outside the package) sets. Nothing depends on ``sys.argv``.

Each check runs in a fresh Python process: what ``import keras_trpo`` did depends on what was imported before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_TRPO_LAZY_IMPORT"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                          env={**environment, **env})


@pytest.mark.parametrize("argv0", ["-c", "/venv/bin/keras-trpo"])
def test_import_keras_trpo_registers_trpo_for_load_model_whatever_the_process_is_called(argv0):
    """Bug caught: ``import keras_trpo`` left lazy (TRPO unregistered: load_model fails with "Could not locate
    class 'TRPO'") when the variable is unset, or the choice still made from sys.argv[0]."""
    code = f"""
import sys
sys.argv[0] = {argv0!r}
import keras_trpo
assert "keras_trpo.model" in sys.modules and "TRPO" in vars(keras_trpo)  # loaded by the import, not on first use
import keras  # after keras_trpo
from keras_trpo.model import TRPO
assert keras.saving.get_registered_object("keras_trpo>TRPO") is TRPO
print("ok")
"""
    result = python(code)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-3000:]


def test_with_the_variable_import_keras_trpo_loads_neither_keras_nor_tensorflow():
    """Bug caught: the variable ignored (every keras-trpo --help would import TensorFlow again, 4-5 s)."""
    code = """
import sys
import keras_trpo
assert not {"keras", "tensorflow", "keras_trpo.model"} & set(sys.modules), "import keras_trpo loaded TensorFlow"
print("ok")
"""
    result = python(code, KERAS_TRPO_LAZY_IMPORT="1")
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr[-3000:]


def test_the_console_script_entry_point_sets_the_variable_before_importing_keras_trpo():
    """Bug caught: the entry point importing keras_trpo (so TensorFlow) before it sets the variable, or not
    setting it; run as ``python -m keras_trpo_command`` (the same main as the console script)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        module, _, function = tomllib.load(f)["project"]["scripts"]["keras-trpo"].partition(":")
    code = f"""
import sys
import {module}
assert not any(name == "keras_trpo" or name.startswith("keras_trpo.") for name in sys.modules)
sys.argv[1:] = ["presets"]
status = {module}.{function}()
assert status == 0, status
assert "keras_trpo.cli" in sys.modules and not {{"keras", "tensorflow"}} & set(sys.modules)
print("ok")
"""
    result = python(code)
    assert result.returncode == 0 and result.stdout.endswith("ok\n"), result.stderr[-3000:]
    assert "CartPole-v1" in result.stdout  # the presets listing ran
    result = subprocess.run([sys.executable, "-m", module, "presets"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "CartPole-v1" in result.stdout, result.stderr[-3000:]
