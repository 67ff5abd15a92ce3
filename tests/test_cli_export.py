"""``keras-trpo export CHECKPOINT OUT [--format ...] [--warmup]`` (issue 30), run in process on a small .keras file.

The warmup file itself is tested in tests/test_export_warmup.py; here: the flag reaches ``model.export``, and
its errors (``--warmup`` with another format, the missing ``serving`` extra) are one line on stderr naming the
flags and the pip command, before the model is loaded or anything is written.
"""

import sys

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo import export_warmup
from test_cli import call_main
from test_export_warmup import read_requests


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = keras_trpo.TRPO(spaces.Box(-5.0, 5.0, (4,), np.float32), spaces.Discrete(2), hidden_units=(8,),
                            value_hidden_units=(8,), seed=0)
    path = tmp_path_factory.mktemp("cli_export") / "policy.keras"
    model.save(path)
    return path


def test_warmup_flag_writes_the_warmup_file_into_the_new_version(checkpoint, tmp_path, capsys):
    """Catches: --warmup not passed on to model.export (a SavedModel without the warmup file)."""
    assert call_main(["export", checkpoint, tmp_path / "served", "--format", "saved_model", "--warmup"]) == 0
    version = tmp_path / "served" / "1"
    assert capsys.readouterr().out.splitlines() == [
        f"Exported {checkpoint} as a SavedModel for TF Serving: {version}",
        f"TF Serving warmup requests: {version / export_warmup.WARMUP_PATH}",
    ]
    requests = read_requests(version)
    signatures = tf.saved_model.load(str(version)).signatures
    assert sorted({name for name, _ in requests}) == sorted(signatures)
    assert len(requests) == len(signatures) * len(export_warmup.BATCH_SIZES)
    # Without the flag: no warmup file, as before issue 30.
    assert call_main(["export", checkpoint, tmp_path / "served"]) == 0
    assert not (tmp_path / "served" / "2" / export_warmup.WARMUP_PATH).exists()


def test_warmup_with_another_format_is_one_line_naming_the_flags(checkpoint, tmp_path, capsys):
    """Catches: --warmup with --format litert reported as the Python API's ``warmup=``/``format=`` error (or
    ignored), after the model is loaded."""
    assert call_main(["export", checkpoint, tmp_path / "policy.tflite", "--format", "litert", "--warmup"]) == 1
    assert capsys.readouterr().err == (
        "keras-trpo: error: --warmup is for --format saved_model (TF Serving's warmup file); got --format litert. "
        "Drop --warmup, or export a SavedModel\n")
    assert not (tmp_path / "policy.tflite").exists()


def test_a_missing_serving_extra_is_one_line_on_stderr_before_anything_is_written(checkpoint, tmp_path, capsys,
                                                                                   monkeypatch):
    """Catches: the missing tensorflow-serving-api reaching the user as the CLI's generic 'ImportError: ... (run
    with --debug for the traceback)' line, or found after the base directory was made."""
    for module in [m for m in sys.modules if m.split(".")[0] == "tensorflow_serving"] + ["tensorflow_serving"]:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were not installed
    assert call_main(["export", checkpoint, tmp_path / "served", "--warmup"]) == 1
    assert capsys.readouterr().err == (
        "keras-trpo: error: --warmup writes TF Serving's PredictionLog records with tensorflow-serving-api, which is "
        'not installed (the \'serving\' extra): pip install "keras-trpo[serving]"\n')
    assert not (tmp_path / "served").exists()


@pytest.mark.parametrize("fmt, name, label", [("litert", "policy.tflite", "LiteRT (TFLite)"), ("onnx", "policy.onnx", "ONNX")])
def test_format_flag_writes_that_format(checkpoint, tmp_path, capsys, fmt, name, label):
    """Catches: --format not passed on to model.export (a SavedModel directory written at OUT instead of the file)."""
    out = tmp_path / name
    assert call_main(["export", checkpoint, out, "--format", fmt]) == 0
    assert capsys.readouterr().out.splitlines() == [f"Exported {checkpoint} as {label}: {out}"]
    head = out.read_bytes()[:8]
    # A .tflite is a FlatBuffer whose file identifier "TFL3" sits at bytes 4-8; an .onnx is a protobuf ModelProto
    # whose first field is ir_version (field 1, varint: tag byte 0x08).
    assert head[4:8] == b"TFL3" if fmt == "litert" else head[:1] == b"\x08"


def test_a_missing_onnx_extra_is_one_line_naming_the_extra(checkpoint, tmp_path, capsys, monkeypatch):
    """Catches: a missing tf2onnx reaching the user as a traceback, or a file written anyway."""
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import fails as if the package were not installed
    assert call_main(["export", checkpoint, tmp_path / "policy.onnx", "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "keras-trpo[onnx]"' in err and "tf2onnx" in err
    assert not (tmp_path / "policy.onnx").exists()


def test_out_is_checked_before_loading_in_the_flags_words(checkpoint, tmp_path, capsys):
    """Catches: OUT of a one-file format checked only by model.export after the model is loaded (the message then
    says overwrite=True, not --overwrite), and a .tflite OUT without --format made into a SavedModel directory."""
    (tmp_path / "policy.tflite").write_bytes(b"old")
    assert call_main(["export", checkpoint, tmp_path / "policy.tflite", "--format", "litert"]) == 1
    assert capsys.readouterr().err == (f"keras-trpo: error: OUT {str(tmp_path / 'policy.tflite')!r} exists; pass "
                                       "--overwrite to replace it, or another path\n")
    assert call_main(["export", checkpoint, tmp_path / "policy.tfl", "--format", "litert"]) == 1
    assert "OUT must name a new .tflite file for --format litert" in capsys.readouterr().err
    assert call_main(["export", checkpoint, tmp_path / "new.onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names a .onnx file" in err and "pass --format onnx" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.tflite"]
    assert (tmp_path / "policy.tflite").read_bytes() == b"old"


def test_evaluate_and_info_say_a_tflite_or_onnx_export_runs_in_its_own_runtime(checkpoint, tmp_path, capsys):
    """Catches: a .tflite/.onnx export given to evaluate or info reported as 'neither a .keras file nor a
    SavedModel' (the new-user trial's confusion), with no word of where it does run."""
    out = tmp_path / "policy.onnx"
    assert call_main(["export", checkpoint, out, "--format", "onnx"]) == 0
    capsys.readouterr()
    for command in (["info", out], ["evaluate", out, "CartPole-v1"]):
        assert call_main(command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is a .onnx export, which keras-trpo does not load" in err, err
