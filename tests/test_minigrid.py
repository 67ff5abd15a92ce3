"""Bring your own networks on a Dict observation space (MiniGrid image uint8 + direction), end to end.

A Functional Keras model on ``{"image", "direction"}`` for policy and value, 2 TRPO iterations of
256 env steps, then export. The exported SavedModels (this Dict model and a default-MLP CartPole
model) are checked in one fresh Python process that never imports keras_trpo or
tensorflow_probability: through ``tf.saved_model.load`` and through the TF-Serving-like TF1 path
(``tf.compat.v1.Session`` + ``tf.compat.v1.saved_model.loader.load``, feeding and fetching the
tensor names listed in the SignatureDef).
"""

import json
import os
import subprocess
import sys
import textwrap

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import keras_trpo

minigrid = pytest.importorskip("minigrid", reason="MiniGrid tests need the minigrid package (pip install minigrid)")

STEPS = 256
NUM_ENVS = 4
ROWS = [0, 51, 102, 170, 255]  # the 5 observations compared with model(obs)

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    def session_run(path, feeds):
        # What TF Serving does: the TF1 loader, then the tensor names listed in the SignatureDef.
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
            meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
            signature = meta_graph.signature_def["serving_default"]
            inputs = {key: tf.dtypes.as_dtype(info.dtype).name for key, info in signature.inputs.items()}
            outputs = {key: info.name for key, info in signature.outputs.items()}
            if set(inputs) != set(feeds):
                return {"inputs": inputs, "outputs": sorted(outputs), "actions": None}
            values = sess.run(outputs, {signature.inputs[key].name: feeds[key] for key in feeds})
            return {"inputs": inputs, "outputs": sorted(outputs), "actions": values["actions"].tolist()}

    def load_run(path, feeds):
        serving_default = tf.saved_model.load(path).signatures["serving_default"]
        return serving_default(**{key: tf.constant(value) for key, value in feeds.items()})["actions"].numpy().tolist()

    def attempt(fn, *args):
        # An error is reported, not raised: each test then fails on its own assertion.
        try:
            return fn(*args)
        except Exception as error:
            return {"error": f"{type(error).__name__}: {str(error)[:1500]}"}

    result = {}
    for name, path, npz in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
        feeds = dict(np.load(npz))
        result[name] = {"load_actions": attempt(load_run, path, feeds), "session": attempt(session_run, path, feeds)}
    result["forbidden"] = sorted(m for m in sys.modules if m.split(".")[0] in ("keras_trpo", "tensorflow_probability"))
    print(json.dumps(result))
    """
)


def run_fresh_python(*args, timeout=180):
    """Runs FRESH_PROCESS in a new interpreter; returns its last stdout line as JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def network():
    """A small Functional model on the Dict observation; direction arrives one-hot, float32 [N, 4]."""
    image = keras.Input((7, 7, 3), name="image")
    direction = keras.Input((4,), name="direction")
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    return keras.Model({"image": image, "direction": direction}, keras.layers.Concatenate()([features, direction]))


def make_env(max_steps):
    """MiniGrid with observations {"image": uint8 [7, 7, 3], "direction": Discrete(4)} (Text 'mission' dropped).

    Each sub-env gets its own ``max_steps``: truncations fall on different steps, so collection
    also calls the acting function on sub-batches (bootstrapping the truncated sub-envs).
    """
    env = gymnasium.make("MiniGrid-Empty-5x5-v0", max_steps=max_steps)
    return gymnasium.wrappers.FilterObservation(env, filter_keys=["image", "direction"])


class RecordingRollouts(keras_trpo.Rollouts):
    """Rollouts that keep every batch they collect."""

    batches = None

    def collect(self):
        batch = super().collect()
        self.batches = [*(self.batches or []), batch]
        return batch


def randomize_policy_head(model, seed):
    """O(1) logits instead of the near-uniform initial policy, so argmaxes are not near ties."""
    kernel = model.policy_output.kernel
    kernel.assign(np.random.default_rng(seed).normal(size=kernel.shape).astype(np.float32))


@pytest.fixture(scope="module")
def dict_run(tmp_path_factory):
    """The Dict model after 2 fit iterations, its batches, its acting function and its export."""
    keras.utils.set_random_seed(0)
    env = gymnasium.vector.SyncVectorEnv([lambda k=k: make_env(max_steps=9 + k) for k in range(NUM_ENVS)])
    model = keras_trpo.TRPO.for_env(env, policy_network=network(), value_network=network(), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    acting = model.acting_function()
    rollouts = RecordingRollouts(env, model, steps=STEPS, seed=0)
    model.fit(rollouts, epochs=2, verbose=0)
    tracing_count = acting.experimental_get_tracing_count()
    env.close()
    randomize_policy_head(model, 0)
    collected = rollouts.batches[-1]["observations"]
    # In the space's dtypes whatever the batch holds: the export tests do not depend on Rollouts.
    observations = {"image": collected["image"][ROWS].astype(np.uint8),
                    "direction": collected["direction"][ROWS].astype(np.int64)}
    path = model.export(str(tmp_path_factory.mktemp("minigrid") / "policy"))
    expected = model(observations).numpy()
    assert len(np.unique(expected)) > 1, "all 5 observations get the same action: the comparison would be weak"
    return {"model": model, "acting": acting, "tracing_count": tracing_count, "batches": rollouts.batches,
            "observations": observations, "expected": expected, "path": path}


@pytest.fixture(scope="module")
def cartpole_export(tmp_path_factory):
    """A default-MLP CartPole model (float32 'observations') and its export."""
    model = keras_trpo.TRPO.for_env(gymnasium.make("CartPole-v1"), seed=0)
    randomize_policy_head(model, 1)
    observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    path = model.export(str(tmp_path_factory.mktemp("cartpole") / "policy"))
    expected = model(observations).numpy()
    assert len(np.unique(expected)) > 1, "all 5 observations get the same action: the comparison would be weak"
    return {"observations": observations, "expected": expected, "path": path}


@pytest.fixture(scope="module")
def fresh(dict_run, cartpole_export, tmp_path_factory):
    """Both SavedModels loaded and called in one fresh process (one TensorFlow start-up)."""
    folder = tmp_path_factory.mktemp("feeds")
    np.savez(folder / "dict.npz", **dict_run["observations"])
    np.savez(folder / "cartpole.npz", observations=cartpole_export["observations"])
    return run_fresh_python("dict", dict_run["path"], folder / "dict.npz",
                            "cartpole", cartpole_export["path"], folder / "cartpole.npz")


def test_rollouts_keep_observation_dtypes(dict_run):
    """Catches: Rollouts casting observations to float32 (a uint8 image batch 4× larger, int64 direction lost)."""
    assert len(dict_run["batches"]) == 2
    for batch in dict_run["batches"]:
        image, direction = batch["observations"]["image"], batch["observations"]["direction"]
        assert sorted(batch["observations"]) == ["direction", "image"]
        assert image.dtype == np.uint8 and image.shape == (STEPS, 7, 7, 3)
        assert direction.dtype == np.int64 and direction.shape == (STEPS,)
        assert image.max() > 0 and set(np.unique(direction)) <= {0, 1, 2, 3}


def test_acting_function_traced_once(dict_run):
    """Catches: collection re-creating or re-tracing its tf.function (per iteration, per batch size)."""
    model = dict_run["model"]
    assert model.acting_function() is dict_run["acting"]
    assert dict_run["tracing_count"] == 1


def test_dict_export_signature_dtypes(dict_run):
    """Catches: the export declaring the Dict inputs as float32 (clients would have to send floats)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(dict_run["path"], "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    (meta_graph,) = saved_model.meta_graphs
    signature = meta_graph.signature_def["serving_default"]
    inputs = {key: tf.dtypes.as_dtype(info.dtype).name for key, info in signature.inputs.items()}
    assert inputs == {"image": "uint8", "direction": "int64"}
    assert [d.size for d in signature.inputs["image"].tensor_shape.dim] == [-1, 7, 7, 3]
    assert [d.size for d in signature.inputs["direction"].tensor_shape.dim] == [-1]
    assert list(signature.outputs) == ["actions"]


def test_dict_export_loads_without_keras_trpo(dict_run, fresh):
    """Catches: a serving_default that is not model(obs)'s deterministic action, or needs keras_trpo/TFP to load."""
    assert fresh["forbidden"] == []
    assert "error" not in fresh["dict"]["load_actions"], fresh["dict"]["load_actions"]
    np.testing.assert_array_equal(fresh["dict"]["load_actions"], dict_run["expected"])


def test_dict_export_tf1_session(dict_run, fresh):
    """Catches: a Dict export that TF Serving's TF1 loader cannot feed by the SignatureDef's names and dtypes."""
    session = fresh["dict"]["session"]
    assert "error" not in session, session["error"]
    assert session["inputs"] == {"image": "uint8", "direction": "int64"}
    assert session["outputs"] == ["actions"]
    np.testing.assert_array_equal(session["actions"], dict_run["expected"])


def test_cartpole_export_tf1_session(cartpole_export, fresh):
    """Catches: a default-MLP export that the TF1 Session path cannot load, feed (float32 'observations') or run."""
    session = fresh["cartpole"]["session"]
    assert "error" not in session, session["error"]
    assert session["inputs"] == {"observations": "float32"}
    assert session["outputs"] == ["actions"]
    np.testing.assert_array_equal(session["actions"], cartpole_export["expected"])
    assert fresh["forbidden"] == []
    assert "error" not in fresh["cartpole"]["load_actions"], fresh["cartpole"]["load_actions"]
    np.testing.assert_array_equal(fresh["cartpole"]["load_actions"], cartpole_export["expected"])
