"""Loading saved models executes no code from the file (docs/safe-loading.md).

``.keras`` files are a zip of JSON config, JSON metadata and HDF5 weights,
loaded with Keras' ``safe_mode`` (the default): a config that smuggles in a
Python lambda is refused, and the lambda's code never runs. A SavedModel is a
graph of TensorFlow ops: loading and calling it runs no Python from the file,
and our exports contain no op that could call back into Python.
"""

import base64
import json
import marshal
import subprocess
import sys
import zipfile

import gymnasium
import keras
import pytest
import tensorflow as tf

import keras_trpo  # noqa: F401 - registers its Keras serializables before any load

from helpers import tiny_trpo


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("safe")
    env = gymnasium.make("CartPole-v1")
    model = tiny_trpo(env, 4)
    model.save(directory / "model.keras")
    exported = model.export(str(directory / "saved_model"))
    return directory, exported


def payload_lambda(marker):
    """A serialized lambda whose code, if ever run, creates ``marker``."""
    code = compile(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]", "<payload>", "eval")
    function = eval(code)  # noqa: S307 - the payload we want Keras to refuse
    encoded = base64.b64encode(marshal.dumps(function.__code__)).decode("ascii")
    return {"class_name": "__lambda__", "config": {"value": [encoded, None, None]}}


def tamper(source, target, edit):
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as tampered:
        for name in original.namelist():
            data = original.read(name)
            if name == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            tampered.writestr(name, data)
    return target


def test_a_keras_file_holds_only_json_and_hdf5_no_pickle(saved):
    saved, _ = saved
    with zipfile.ZipFile(saved / "model.keras") as archive:
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        json.loads(archive.read("config.json"))
        json.loads(archive.read("metadata.json"))
        assert archive.read("model.weights.h5")[:8] == b"\x89HDF\r\n\x1a\n"


@pytest.fixture
def lambda_activation(saved, tmp_path):
    """Our own TRPO file with its ``activation`` replaced by a payload lambda; returns (file, marker)."""
    saved, _ = saved
    marker = tmp_path / "pwned"

    def edit(config):
        config["config"]["activation"] = payload_lambda(marker)
        return config

    return tamper(saved / "model.keras", tmp_path / "tampered.keras", edit), marker


def test_a_lambda_smuggled_into_the_trpo_config_is_refused_and_never_runs(lambda_activation):
    path, marker = lambda_activation
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(path)
    assert not marker.exists()


def test_a_lambda_layer_model_in_place_of_ours_is_refused_and_never_runs(saved, tmp_path):
    saved, _ = saved
    marker = tmp_path / "pwned"
    lambda_layer = keras.saving.serialize_keras_object(keras.layers.Lambda(lambda x: x))
    lambda_layer["config"]["function"] = payload_lambda(marker)

    def edit(config):
        return {
            "module": "keras",
            "class_name": "Sequential",
            "config": {"name": "seq", "layers": [{"class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
                                                  lambda_layer]},
            "registered_name": None,
        }

    path = tamper(saved / "model.keras", tmp_path / "tampered.keras", edit)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(path)
    assert not marker.exists()


def test_the_cli_refuses_a_tampered_file_with_one_error_line(lambda_activation):
    path, marker = lambda_activation
    result = subprocess.run(
        [sys.executable, "-m", "keras_trpo.cli", "info", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "keras-trpo: error: cannot load" in result.stderr and "safe_mode" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def test_the_saved_model_graph_has_no_op_that_calls_python(saved):
    _, exported = saved
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(f"{exported}/saved_model.pb", "rb").read())
    op_types = set()
    for meta_graph in proto.meta_graphs:
        op_types.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            op_types.update(node.op for node in function.node_def)
    assert "MatMul" in op_types  # the walk does see the policy's ops
    assert not op_types & PYTHON_OPS, op_types & PYTHON_OPS


def test_a_py_function_is_not_carried_by_a_saved_model(tmp_path):
    """The mechanism behind the guarantee: Python bodies are not serialized into SavedModels."""
    marker = tmp_path / "ran"

    class WithPython(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
        def __call__(self, x):
            def side_effect(v):
                marker.touch()
                return v

            return tf.py_function(side_effect, [x], tf.float32)

    tf.saved_model.save(WithPython(), str(tmp_path / "m"))
    script = (
        "import tensorflow as tf, sys\n"
        f"m = tf.saved_model.load({str(tmp_path / 'm')!r})\n"
        "try:\n    m(tf.constant(1.0))\nexcept Exception as e:\n    print('refused:', type(e).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "refused:" in result.stdout, result.stdout + result.stderr[-2000:]
    assert not marker.exists()
