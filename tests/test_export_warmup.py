"""TF Serving's warmup file (issue 30): ``model.export(path, warmup=True | env)``.

Five small untrained models are exported with warmup requests: a CartPole MLP (requests from a vector
env's resets), a Dict model (uint8 image, Discrete, float64 Box; from the space), a masked Discrete model
(a single env's resets and masks), a masked MultiDiscrete model (from the space, all actions legal) and a
recurrent LSTM (state inputs and ``get_initial_state``). One fresh Python process, which must not import
keras_trpo (tests/test_export.py's import hook), reads every file back with ``tf.data.TFRecordDataset``,
parses each record as a ``PredictionLog`` and runs its request through the loaded SavedModel's signature
and through TF Serving's own path (``tf.compat.v1.Session`` + ``saved_model.loader.load``, feeding the
SignatureDef's tensor names: tests/test_masked_export.py's RUNNERS).
"""

import json
import sys

import gymnasium
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces
from tensorflow_serving.apis import prediction_log_pb2

import keras_trpo
from keras_trpo import export_warmup, masking, networks
from keras_trpo import masked_envs, wrappers  # noqa: F401  (register InvalidAction-v0 and the NoVel envs)
from test_export import run_fresh_python
from test_masked_export import RUNNERS

SMALL = {"hidden_units": (8,), "value_hidden_units": (8,), "seed": 0}
DICT_SPACE = spaces.Dict({"image": spaces.Box(0, 255, (6, 6, 3), np.uint8), "direction": spaces.Discrete(4),
                          "position": spaces.Box(-1.0, 1.0, (2,), np.float64)})
BATCHES = list(export_warmup.BATCH_SIZES)

FRESH_PROCESS = RUNNERS + """
    from tensorflow_serving.apis import prediction_log_pb2

    def shapes(arrays):
        return {key: list(np.shape(value)) for key, value in arrays.items()}

    def run_each(run, logs):
        results = []
        for signature, feeds in logs:
            try:
                out = run(signature, feeds)
                results.append({"outputs": shapes(out), "finite": bool(all(np.isfinite(v).all() for v in out.values()))})
            except Exception as error:  # one failing request must not hide the others
                results.append({"error": f"{type(error).__name__}: {error}"[:500]})
        return results

    root, names = sys.argv[1], json.loads(sys.argv[2])
    report = {}
    for name in names:
        path = f"{root}/{name}/1"
        logs = []
        for record in tf.data.TFRecordDataset(f"{path}/assets.extra/tf_serving_warmup_requests"):
            request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
            logs.append((request.model_spec.signature_name,
                         {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}))
        run, load_inputs, keep = load_runner(path)
        load = run_each(run, logs)
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            run, session_inputs = session_runner(path, graph, session)
            session_results = run_each(run, logs)
        report[name] = {
            "requests": [{"signature": s, "inputs": {k: [v.dtype.name, list(v.shape)] for k, v in feeds.items()}}
                         for s, feeds in logs],
            "load": load, "session": session_results, "load_inputs": load_inputs, "session_inputs": session_inputs}
    report["forbidden_modules"] = forbidden_modules()
    print(json.dumps(report))
"""


def mlp():
    env = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    return keras_trpo.TRPO.for_env(env, normalize_observations=True, **SMALL), env


def dict_model():
    return keras_trpo.TRPO(DICT_SPACE, spaces.Box(-1.0, 1.0, (2,), np.float32), **SMALL), True


def masked():
    env = gymnasium.make("keras_trpo/InvalidAction-v0", n_actions=6, n_legal=2)
    return keras_trpo.TRPO.for_env(env, **SMALL), env


def masked_multidiscrete():
    space = spaces.Box(-5.0, 5.0, (4,), np.float32)
    return keras_trpo.TRPO(space, spaces.MultiDiscrete([2, 3], start=[0, 1]), action_mask=True, **SMALL), True


def recurrent():
    env = gymnasium.make_vec("keras_trpo/CartPoleNoVel-v1", num_envs=2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(
        env, policy_network=networks.recurrent(networks.mlp((8,), seed=0), units=4, cell="lstm", seed=0),
        value_network=networks.recurrent(None, units=4, cell="lstm", seed=1), sequence_length=4, seed=0)
    return model, True


MODELS = {"mlp": mlp, "dict": dict_model, "masked": masked, "masked_multidiscrete": masked_multidiscrete,
          "recurrent": recurrent}


def read_requests(version_dir):
    """``[(signature name, {input name: array})]``: the warmup file, parsed in this process."""
    path = f"{version_dir}/{export_warmup.WARMUP_PATH}"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    return [(log.predict_log.request.model_spec.signature_name,
             {k: tf.make_ndarray(v) for k, v in log.predict_log.request.inputs.items()}) for log in logs]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root, models = tmp_path_factory.mktemp("warmup"), {}
    for name, make in MODELS.items():
        model, warmup = make()
        models[name] = {"model": model, "warmup": warmup, "path": model.export(root / name, warmup=warmup)}
    report = run_fresh_python(FRESH_PROCESS, root, json.dumps(list(MODELS)))
    return report, models


def rows(signature, feeds):
    """The batch size of one request: ``get_initial_state``'s ``batch_size``, else the rows of its inputs."""
    if signature == "get_initial_state":
        return int(feeds["batch_size"])
    sizes = {len(value) for key, value in feeds.items() if key != "seed"}
    assert len(sizes) == 1, (signature, {key: value.shape for key, value in feeds.items()})
    return sizes.pop()


@pytest.mark.parametrize("name", list(MODELS))
def test_one_request_per_signature_and_batch_size(exported, name):
    """Catches: a signature left out of the file, or the batch-8 requests written with one row."""
    report, models = exported
    signatures = report[name]["load_inputs"]
    assert len(signatures) == (6 if name == "recurrent" else 5)
    requests = read_requests(models[name]["path"])
    assert len(requests) == len(report[name]["requests"]) <= export_warmup.MAX_RECORDS
    assert sorted((s, rows(s, feeds)) for s, feeds in requests) == sorted((s, n) for s in signatures for n in BATCHES)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_request_has_the_signatures_inputs_in_their_dtypes(exported, name):
    """Catches: an input sent in another dtype than the SignatureDef's (a uint8 image as float32: TF Serving's
    C++ session refuses it), or an input missing or extra (TF Serving's Predict refuses the request)."""
    report, _ = exported
    for request in report[name]["requests"]:
        dtypes = {key: dtype for key, (dtype, _) in request["inputs"].items()}
        assert dtypes == report[name]["session_inputs"][request["signature"]], request["signature"]
        assert dtypes == report[name]["load_inputs"][request["signature"]], request["signature"]
    if name == "dict":
        assert dtypes["image"] == "uint8" and dtypes["direction"] == "int64" and dtypes["position"] == "float64"


@pytest.mark.parametrize("path", ["load", "session"])
@pytest.mark.parametrize("name", list(MODELS))
def test_every_request_runs_through_the_savedmodel_and_the_session_path(exported, name, path):
    """Catches: a request TF Serving would fail on at load (which fails the version's load): e.g. log_prob
    given actions of the wrong shape, or a recurrent signature without its state inputs."""
    report, models = exported
    assert report["forbidden_modules"] == []  # the process ran the requests as TF Serving would: no keras_trpo
    requests = read_requests(models[name]["path"])
    for (signature, feeds), result in zip(requests, report[name][path], strict=True):
        assert "error" not in result, (signature, result)
        assert result["finite"], (signature, result)
        assert {shape[0] for shape in result["outputs"].values()} == {rows(signature, feeds)}, (signature, result)


def test_requests_from_the_space_are_reproducible_and_keep_its_dtypes(exported, tmp_path):
    """Catches: observations drawn without the fixed seed (each export a different file), or drawn with the
    model's own space (whose random state export would then change)."""
    _, models = exported
    model = models["dict"]["model"]
    model.observation_space.seed(3)
    expected = model.observation_space.sample()
    model.observation_space.seed(3)
    again = model.export(tmp_path / "again", warmup=True)
    assert all(np.array_equal(expected[k], v) for k, v in model.observation_space.sample().items())
    with open(f"{models['dict']['path']}/{export_warmup.WARMUP_PATH}", "rb") as a, \
            open(f"{again}/{export_warmup.WARMUP_PATH}", "rb") as b:
        assert a.read() == b.read()
    feeds = dict(read_requests(again))["serving_default"]
    assert feeds["image"].dtype == np.uint8 and DICT_SPACE["image"].contains(feeds["image"][0])


def test_env_requests_hold_its_reset_observations_and_masks(exported):
    """Catches: env observations or masks not those of its resets (e.g. all-legal masks despite the env's)."""
    _, models = exported
    env = gymnasium.make("keras_trpo/InvalidAction-v0", n_actions=6, n_legal=2)
    observations, masks = [], []
    for seed in range(8):
        observations.append(env.reset(seed=seed)[0])
        masks.append(env.unwrapped.action_masks())
    requests = read_requests(models["masked"]["path"])
    feeds = next(f for s, f in requests if s == "log_prob" and len(f["observations"]) == 8)
    np.testing.assert_array_equal(feeds["observations"], observations)
    np.testing.assert_array_equal(feeds["action_mask"], np.array(masks, np.int8))
    assert masking.legal(models["masked"]["model"].action_space, feeds["actions"], feeds["action_mask"]).all()

    vector = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync")
    expected = np.concatenate([vector.reset(seed=seed)[0] for seed in (0, 3, 6)])[:8]
    cartpole = [f for s, f in read_requests(models["mlp"]["path"]) if s == "serving_default"]
    np.testing.assert_array_equal(cartpole[-1]["observations"], expected)


def test_masked_actions_from_the_space_are_legal_and_in_range(exported):
    """Catches: log_prob's MultiDiscrete actions sent as indices, without the space's ``start`` offset."""
    _, models = exported
    model = models["masked_multidiscrete"]["model"]
    for signature, feeds in read_requests(models["masked_multidiscrete"]["path"]):
        if signature == "log_prob":
            assert all(model.action_space.contains(a.astype(np.int64)) for a in feeds["actions"])
            assert masking.legal(model.action_space, feeds["actions"], feeds["action_mask"]).all()
            assert (feeds["action_mask"] == 1).all()


@pytest.fixture(scope="module")
def small(exported):
    return exported[1]["masked_multidiscrete"]["model"]


def test_a_missing_serving_extra_is_one_line_before_anything_is_written(small, tmp_path, monkeypatch):
    """Catches: the extra's absence found after the export began (a base directory left behind) or reported
    as a bare ModuleNotFoundError without the pip command."""
    for module in [m for m in sys.modules if m.split(".")[0] == "tensorflow_serving"] + ["tensorflow_serving"]:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if the package were not installed
    with pytest.raises(ImportError) as error:
        small.export(tmp_path / "base", warmup=True)
    message = str(error.value)
    assert 'pip install "keras-trpo[serving]"' in message and "\n" not in message
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize("value", ["yes", 1, None, spaces.Discrete(2)])
def test_a_bad_warmup_value_is_one_line(small, tmp_path, value):
    """Catches: a truthy non-bool (``warmup=1``, ``warmup="yes"``) taken as True, or a space passed for an env."""
    with pytest.raises(TypeError) as error:
        small.export(tmp_path / "base", warmup=value)
    message = str(error.value)
    assert message.startswith("warmup must be True") and repr(value) in message and "\n" not in message
    assert not (tmp_path / "base").exists()


@pytest.mark.parametrize("name,env_id,message", [
    ("mlp", "Acrobot-v1", "the warmup env's observations has shape [1, 6]"),
    ("masked_multidiscrete", "CartPole-v1", "the policy masks actions (action_mask=True), but the env has no"),
])
def test_an_env_that_does_not_fit_is_refused_before_anything_is_written(exported, tmp_path, name, env_id, message):
    """Catches: an env of other observations, or without the masks of a masked model, written into the file
    (TF Serving would then fail to load the version)."""
    with pytest.raises(ValueError) as error:
        exported[1][name]["model"].export(tmp_path / "base", warmup=gymnasium.make(env_id))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert not (tmp_path / "base").exists()


def test_a_failed_warmup_write_leaves_no_version_directory(small, tmp_path, monkeypatch):
    """Catches: the warmup file written after the version directory is renamed into place (a server could
    load that version without its warmup file, and a failed write would leave it so)."""

    def full_disk(path):
        raise OSError(f"no space left on device: {path}")

    monkeypatch.setattr(tf.io, "TFRecordWriter", full_disk)
    with pytest.raises(OSError, match="no space left"):
        small.export(tmp_path / "base", warmup=True)
    assert list((tmp_path / "base").iterdir()) == []  # no version, no staging directory
