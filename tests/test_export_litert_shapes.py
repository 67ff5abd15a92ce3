"""A ``.tflite`` export refuses inputs of the wrong shape, as the SavedModel does (issue 30).

LiteRT's signature runner resizes every input to whatever array it is given, and the converter drops the
SavedModel's ``tf.ensure_shape``: without ``export_litert.shape_checked`` a ``[1, 8]`` observation of a
4-wide space runs as two rows, a ``[4]`` one as one row, and a recurrent state or mask of another batch
size broadcasts. Each bad call below must raise in a fresh process with ``ai_edge_litert`` only, and the
right-shaped call beside it must run (so an export that refuses everything cannot pass).
"""

import json

import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo
from keras_trpo import networks
from test_export import run_fresh_python

pytest.importorskip("ai_edge_litert", reason="LiteRT tests need ai-edge-litert (pip install 'keras-trpo[litert]')")

OBS = spaces.Box(-5.0, 5.0, (4,), np.float32)
UNITS = 8

FRESH_PROCESS = """
    import json, sys
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    root, calls = sys.argv[1], json.loads(sys.argv[2])
    outcome = []
    for model, signature, inputs in calls:
        runner = Interpreter(model_path=f"{root}/{model}.tflite").get_signature_runner(signature)
        feeds = {name: np.array(value, dtype) for name, (value, dtype) in inputs.items()}
        try:
            runner(**feeds)
            outcome.append("ran")
        except Exception as error:
            outcome.append(f"refused: {str(error).splitlines()[0][:80]}")
    print(json.dumps({"outcome": outcome, "forbidden_modules": forbidden_modules()}))
"""


def models():
    plain = keras_trpo.TRPO(OBS, spaces.Discrete(2), hidden_units=(8,), value_hidden_units=(8,), seed=0)
    masked = keras_trpo.TRPO(OBS, spaces.Discrete(5), hidden_units=(8,), value_hidden_units=(8,), seed=0,
                             action_mask=True)
    recurrent = keras_trpo.TRPO(OBS, spaces.Box(-1.0, 1.0, (2,), np.float32), seed=0,
                                policy_network=networks.recurrent(networks.mlp((8,), seed=0), units=UNITS, seed=0),
                                value_network=networks.recurrent(None, units=UNITS, seed=1))
    return {"plain": plain, "masked": masked, "recurrent": recurrent}


def zeros(*shape, dtype="float32"):
    return [np.zeros(shape).tolist(), dtype]


def state(batch, width=UNITS):
    return {name: zeros(batch, width) for name in ("policy_h", "policy_c", "value_h", "value_c")}


def recurrent_inputs(obs_batch=2, state_batch=2, start_batch=2, width=UNITS):
    return {"observations": zeros(obs_batch, 4), "episode_start": zeros(start_batch, dtype="int8"),
            **state(state_batch, width)}


#: (model, signature, inputs, whether a right shape): each bad call is paired with the right one before it.
CALLS = [
    *[("plain", signature, {"observations": zeros(2, 4)}, True)
      for signature in ("serving_default", "value", "distribution_params")],
    ("plain", "sample", {"observations": zeros(2, 4), "seed": [[1, 2], "int32"]}, True),
    *[("plain", signature, {"observations": zeros(*shape)}, False)
      for signature in ("serving_default", "value", "distribution_params") for shape in ((1, 8), (4,), (2, 5), (2, 1, 4))],
    ("plain", "sample", {"observations": zeros(1, 8), "seed": [[1, 2], "int32"]}, False),
    ("masked", "serving_default", {"observations": zeros(2, 4), "action_mask": zeros(2, 5, dtype="int8")}, True),
    ("masked", "serving_default", {"observations": zeros(2, 4), "action_mask": zeros(2, 6, dtype="int8")}, False),
    ("masked", "serving_default", {"observations": zeros(2, 4), "action_mask": zeros(1, 5, dtype="int8")}, False),
    ("masked", "serving_default", {"observations": zeros(2, 4), "action_mask": zeros(10, dtype="int8")}, False),
    ("recurrent", "serving_default", recurrent_inputs(), True),
    ("recurrent", "serving_default", recurrent_inputs(state_batch=1), False),
    ("recurrent", "serving_default", recurrent_inputs(start_batch=3), False),
    ("recurrent", "serving_default", recurrent_inputs(width=UNITS + 1), False),
    ("recurrent", "value", recurrent_inputs(state_batch=1), False),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("litert_shapes")
    for name, model in models().items():
        model.export(str(root / f"{name}.tflite"), format="litert")
    report = run_fresh_python(FRESH_PROCESS, root, json.dumps([call[:3] for call in CALLS]))
    assert report["forbidden_modules"] == []
    return report["outcome"]


def test_right_shapes_run_and_every_wrong_shape_is_refused(outcomes):
    """Catches: export_litert.convert without ``shape_checked`` (a [1, 8] observation answered as two rows, a
    recurrent state of batch 1 broadcast over a batch of 2, a mask of another width or batch accepted)."""
    for (model, signature, inputs, right), outcome in zip(CALLS, outcomes):
        shapes = {name: np.shape(value) for name, (value, _) in inputs.items()}
        if right:
            assert outcome == "ran", (model, signature, shapes, outcome)
        else:
            assert outcome.startswith("refused"), (model, signature, shapes, outcome)
