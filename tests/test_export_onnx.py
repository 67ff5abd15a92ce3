"""``model.export("policy.onnx", format="onnx")`` (issue 30): one ONNX graph, run by onnxruntime alone.

Six models (a CartPole-shaped MLP, a Hopper-shaped MLP with observation normalization, a MiniGrid-shaped uint8
CNN, a Dict model, a masked MultiDiscrete model and an LSTM model) are exported, then run in a fresh Python process
that imports onnxruntime and numpy only: keras_trpo, tensorflow, keras and tf2onnx are blocked by an import hook.

Tolerances are derived, not fitted: two float32 evaluations of one network (Keras/TF and onnxruntime's MLAS
kernels, on any x86 CPU) differ by at most twice the worst-case forward-error bound of one (Higham §3.1:
``γ_{n+1} (|W| |x| + |b|)`` per dense or convolution layer, ``n`` its fan-in), which :func:`network_gap` carries
along the network's own float64 values through the normalizer (tests/numerics.py's bound), the convolutions,
max-pooling and the activations. These worst-case bounds hold on any CPU (AMD EPYC included). The issue's
parity target ``|Δ| ≤ 1e-5`` is asserted too (``ISSUE_TARGET``), as in tests/test_export_litert.py: it is a
requirement, not a tolerance fitted here. For the 64×64 MLPs and the CNN the worst case is above it (4e-4 and
3e-2: every rounding in the same direction), so meeting it rests on rounding errors growing like √n in practice
(Higham & Mary 2019); measured here ≤ 1.5e-6 (docs/serving.md). A CPU within the derived bound but past 1e-5
fails with that difference in the message: the target missed there, which is what the issue asks to know.
"""

import itertools
import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces
from network_bounds import network_gap
from numerics import normalization_error
from test_export import MIXED_SPACE, OBS_SPACE, mlp_input, run_fresh_python

import keras_trpo
from keras_trpo import networks
from keras_trpo.export import ServingModule

N = 64
STEPS, ENVS = 20, 4  # the recurrent model: steps of a batch of envs, its state carried by the client

FRESH_PROCESS = """
    import importlib.abc, json, sys

    class _BlockFrameworks(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "jax", "torch"):
                raise ImportError(f"{name} must not be needed to run the ONNX graph")
            return None

    sys.meta_path.insert(0, _BlockFrameworks())
    import numpy as np
    import onnxruntime as ort

    root, names = sys.argv[1], json.loads(sys.argv[2])
    report, results = {}, {}
    for name in names:
        session = ort.InferenceSession(f"{root}/{name}.onnx", providers=["CPUExecutionProvider"])
        feeds = dict(np.load(f"{root}/{name}.npz"))
        inputs = {i.name: [i.type, i.shape] for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        report[name] = {"inputs": inputs, "outputs": outputs}
        if "episode_start" not in inputs:
            for key, value in zip(outputs, session.run(None, {key: feeds[key] for key in inputs})):
                results[f"{name}/{key}"] = value
            continue
        # A client carrying the state: zeros first, then each next_<name> fed back as <name>.
        state = {k: np.zeros([feeds["observations"].shape[1], shape[1]], np.float32)
                 for k, (_, shape) in inputs.items() if k not in ("observations", "episode_start")}
        steps = []
        for t in range(feeds["observations"].shape[0]):
            out = dict(zip(outputs, session.run(None, {"observations": feeds["observations"][t],
                                                       "episode_start": feeds["episode_start"][t], **state})))
            steps.append(out)
            state = {k: out["next_" + k] for k in state}
        for key in outputs:
            results[f"{name}/{key}"] = np.stack([out[key] for out in steps])
    np.savez(f"{root}/results.npz", **results)
    report["forbidden_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in (
        "keras_trpo", "tensorflow", "keras", "tf2onnx", "tensorflow_probability"))
    print(json.dumps(report))
"""

#: The issue's parity target for every output (asserted beside the derived bound; see the module docstring).
ISSUE_TARGET = 1e-5


def randomize(model, seed, layers=None):
    """O(1) logits and means (not the near-uniform initial policy) and non-zero biases, so comparisons mean something."""
    rng = np.random.default_rng(seed)
    dense = layers if layers is not None else [*model.policy_layers, *model.value_layers]
    for layer in [*dense, model.policy_output, model.value_output]:
        fan_in = int(np.prod(layer.kernel.shape[:-1]))
        scale = 1.5 if layer is model.policy_output else 1.0
        layer.kernel.assign(rng.normal(scale=scale / np.sqrt(fan_in), size=layer.kernel.shape).astype(np.float32))
        layer.bias.assign(rng.normal(scale=0.3, size=layer.bias.shape).astype(np.float32))
    if model.log_std is not None:
        model.log_std.assign(np.linspace(-0.7, 0.2, model.log_std.shape[0]).astype(np.float32))
    if model.normalizer is not None:
        size = (256, model.observation_spec.float_size)
        model.normalizer.update(tf.constant(rng.normal(loc=1.0, scale=2.0, size=size).astype(np.float32)))
    return model


def mlp_gaps(model, features):
    """``{"policy", "value"}`` gaps of the default MLP on ``features`` (its flat input), normalizer included."""
    x, error = np.asarray(features, np.float64).reshape(len(features), -1), None
    if model.normalizer is not None:
        n = model.normalizer
        std = np.sqrt(np.asarray(n.variance.numpy(), np.float64) + n.epsilon)
        x_hat = np.clip((x - np.asarray(n.mean.numpy(), np.float64)) / std, -n.clip, n.clip)
        _, error = normalization_error(n, x)
        x = x_hat
    return {"policy": network_gap([*model.policy_layers, model.policy_output], x, error),
            "value": network_gap([*model.value_layers, model.value_output], x, error)[:, 0]}


# --------------------------------------------------------------------------
# The models: (model, observations, action mask or None, the derived gaps {"policy", "value"})
# --------------------------------------------------------------------------
def cartpole():
    model = randomize(keras_trpo.TRPO(OBS_SPACE, spaces.Discrete(2), normalize_observations=True, seed=0), 0)
    obs = np.random.default_rng(0).normal(scale=2.0, size=(N, 4)).astype(np.float32)
    return model, obs, None, mlp_gaps(model, obs)


def hopper():
    # Hopper-v5's spaces: float64 observations (fed as they are), 3 torques in [-1, 1].
    model = keras_trpo.TRPO(observation_space=spaces.Box(-np.inf, np.inf, (11,), np.float64),
                            action_space=spaces.Box(-1.0, 1.0, (3,), np.float32), normalize_observations=True, seed=1)
    randomize(model, 1)
    obs = np.random.default_rng(1).normal(loc=1.0, scale=2.0, size=(N, 11))
    return model, obs, None, mlp_gaps(model, obs)


def minigrid_cnn():
    model = keras_trpo.TRPO(spaces.Box(0, 255, (7, 7, 3), np.uint8), spaces.Discrete(7),
                            policy_network="minigrid_cnn", value_network="minigrid_cnn", seed=2)
    (policy_cnn,), (value_cnn,) = model.policy_layers, model.value_layers
    randomize(model, 2, [layer for cnn in (policy_cnn, value_cnn) for layer in cnn.layers if hasattr(layer, "kernel")])
    obs = np.random.default_rng(2).integers(0, 11, size=(N, 7, 7, 3)).astype(np.uint8)  # MiniGrid's cell codes
    gaps = {"policy": network_gap([*policy_cnn.layers, model.policy_output], obs),
            "value": network_gap([*value_cnn.layers, model.value_output], obs)[:, 0]}
    return model, obs, None, gaps


def dict_model():
    model = randomize(keras_trpo.TRPO(MIXED_SPACE, spaces.Box(-1.0, 1.0, (2,), np.float32), hidden_units=(16,),
                                      value_hidden_units=(16,), seed=3), 3)
    rng = np.random.default_rng(3)
    obs = {"position": rng.normal(scale=2.0, size=(N, 2)).astype(np.float32),
           "direction": rng.integers(1, 5, size=N).astype(np.int64),
           "image": rng.integers(0, 4, size=(N, 3, 3, 2)).astype(np.uint8)}
    return model, obs, None, mlp_gaps(model, mlp_input(MIXED_SPACE, obs))


def masked():
    space = spaces.MultiDiscrete([2, 3, 4], start=[0, 1, -1])
    model = randomize(keras_trpo.TRPO(OBS_SPACE, space, hidden_units=(16,), value_hidden_units=(16,),
                                      normalize_observations=True, action_mask=True, seed=4), 4)
    rng = np.random.default_rng(4)
    obs = rng.normal(scale=2.0, size=(N, 4)).astype(np.float32)
    mask = (rng.random((N, 9)) < 0.6).astype(np.int8)
    for lo, hi in ((0, 2), (2, 5), (5, 9)):  # at least one legal action per component
        mask[np.arange(N), rng.integers(lo, hi, size=N)] = 1
    return model, obs, mask, mlp_gaps(model, obs)


MODELS = {"cartpole": cartpole, "hopper": hopper, "minigrid_cnn": minigrid_cnn, "dict": dict_model, "masked": masked}


def recurrent_model():
    model = keras_trpo.TRPO(
        spaces.Box(-5.0, 5.0, (3,), np.float32), spaces.Discrete(3), normalize_observations=True, seed=5,
        policy_network=networks.recurrent(networks.mlp((16,), seed=0), units=8, cell="lstm", seed=0),
        value_network=networks.recurrent(None, units=8, cell="lstm", seed=1))
    randomize(model, 5, [])
    rng = np.random.default_rng(5)
    obs = rng.normal(scale=2.0, size=(STEPS, ENVS, 3)).astype(np.float32)
    starts = rng.random((STEPS, ENVS)) < 0.15
    starts[0] = True
    return model, obs, starts


def argmax_margins(model, logits):
    """``[rows]``: the smallest gap between the two largest logits of any component (masked ones are -1e9)."""
    logits = logits.reshape(-1, logits.shape[-1])
    widths = getattr(model.action_space, "nvec", [logits.shape[1]])
    bounds = np.cumsum([0, *widths])
    top = [np.sort(logits[:, lo:hi], axis=1)[:, -2:] for lo, hi in itertools.pairwise(bounds)]
    return np.min([t[:, 1] - t[:, 0] for t in top], axis=0)


def keras_outputs(model, obs, mask):
    """What the ONNX graph must return, from the Keras model itself."""
    actions = np.asarray(model(obs, action_mask=mask))
    if isinstance(model.action_space, spaces.Box):  # serving_default clips the mean to the bounds (the model does not)
        actions = np.clip(actions, model.action_space.low, model.action_space.high)
    return {"actions": actions, "values": model.value(obs).numpy(),
            **{k: v.numpy() for k, v in model.distribution_params(obs, mask).items()}}


def keras_steps(model, obs, starts):
    """The recurrent model stepped by Keras, its own state carried: the expected outputs per step."""
    state, record = model.initial_state(ENVS), []
    for t in range(STEPS):
        params, values, next_state = model.step(tf.constant(obs[t]), state, tf.constant(starts[t]))
        actions, _ = model(obs[t], state=state, episode_starts=starts[t])
        record.append({"actions": np.asarray(actions), "values": values.numpy(),
                       **{k: v.numpy() for k, v in params.items()},
                       **{"next_" + k: v.numpy() for k, v in next_state.items()}})
        state = next_state
    return {k: np.stack([r[k] for r in record]) for k in record[0]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every model exported, run once in the fresh onnxruntime-only process; its report and outputs."""
    root = tmp_path_factory.mktemp("onnx")
    cases = {}
    for name, make in MODELS.items():
        model, obs, mask, gaps = make()
        path = model.export(str(root / f"{name}.onnx"), format="onnx")
        assert path == str(root / f"{name}.onnx")
        feeds = dict(obs) if isinstance(obs, dict) else {"observations": obs}
        if mask is not None:
            feeds["action_mask"] = mask
        np.savez(root / f"{name}.npz", **feeds)
        cases[name] = (model, keras_outputs(model, obs, mask), gaps, mask)
    model, obs, starts = recurrent_model()
    model.export(str(root / "lstm.onnx"), format="onnx")
    np.savez(root / "lstm.npz", observations=obs, episode_start=starts.astype(np.int8))
    cases["lstm"] = (model, keras_steps(model, obs, starts), None, None)
    report = run_fresh_python(FRESH_PROCESS, root, json.dumps([*MODELS, "lstm"]))
    assert report["forbidden_modules"] == []  # onnxruntime alone ran every graph
    return cases, report, dict(np.load(root / "results.npz"))


@pytest.mark.parametrize("name", [*MODELS, "lstm"])
def test_inputs_and_outputs_are_named_and_typed_as_the_saved_model(exported, name):
    """Catches: outputs left in tf2onnx's alphabetical order (the docstring's order: actions, values, parameters,
    next state), or input names/dtypes that differ from the SavedModel signatures' (one per Dict key)."""
    cases, report, _ = exported
    model = cases[name][0]
    specs = ServingModule(model).serving_default.input_signature
    onnx_type = {"float32": "float", "float64": "double", "uint8": "uint8", "int8": "int8", "int64": "int64"}
    assert report[name]["inputs"] == {s.name: [f"tensor({onnx_type[s.dtype.name]})", ["N", *s.shape[1:]]]
                                      for s in specs}
    expected = cases[name][1]
    params = sorted(k for k in expected if k not in ("actions", "values") and not k.startswith("next_"))
    state = sorted(k for k in expected if k.startswith("next_"))
    assert state == ([f"next_{k}" for k in sorted(model.state_sizes())] if name == "lstm" else [])
    assert report[name]["outputs"] == ["actions", "values", *params, *state]


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_equal_the_keras_model_within_the_derived_bound(exported, name):
    """Catches: serving_default's clipping left out of the graph (the Hopper means lie outside [-1, 1]), or the
    action mask ignored: each moves an output by far more than the derived float32 bound."""
    cases, _, results = exported
    model, expected, gaps, mask = cases[name]
    got = {key: results[f"{name}/{key}"] for key in expected}
    for key, gap in (("values", gaps["value"]), ("logits", gaps["policy"]), ("mean", gaps["policy"])):
        if key in expected:
            delta = np.abs(got[key].astype(np.float64) - expected[key])
            assert np.all(delta <= np.minimum(gap, ISSUE_TARGET)), f"{key}: off by {delta.max():.2e}"
    if "log_std" in expected:
        np.testing.assert_array_equal(got["log_std"], expected["log_std"])  # a constant: no arithmetic
    if model.head.integer_actions:
        # An argmax is exact unless two logits are closer than twice the gap: those rows (if any) are skipped.
        clear = argmax_margins(model, expected["logits"]) > 2 * gaps["policy"].max(axis=1)
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(got["actions"][clear], expected["actions"][clear])
        assert len(np.unique(got["actions"], axis=0)) > 1  # the comparison is not vacuous
    else:  # clip(mean): clipping is 1-Lipschitz, so the mean's gap bounds the actions'
        delta = np.abs(got["actions"].astype(np.float64) - expected["actions"])
        assert np.all(delta <= np.minimum(gaps["policy"], ISSUE_TARGET))
        assert np.any(np.abs(expected["mean"]) > 1)  # some actions were clipped
    if mask is not None:  # never an illegal action
        offsets = np.cumsum([0, *model.action_space.nvec[:-1]])
        chosen = got["actions"] - model.action_space.start + offsets
        assert mask[np.arange(N)[:, None], chosen].all()


def test_a_client_carrying_the_next_state_acts_as_the_recurrent_model(exported):
    """Catches: the next_<name> outputs returning the state given (or episode_start ignored): the client's carried
    state then departs from the model's, and its actions and values with it.

    Tolerance: the same float32 ops run by another executor, carried through the state for STEPS steps; as in
    tests/test_recurrent_export.py, a few roundings of the outputs' scale per step (the gates' sigmoid and tanh
    keep the carried error from growing).
    """
    cases, _, results = exported
    model, expected, _, _ = cases["lstm"]
    clear = argmax_margins(model, expected["logits"]).reshape(STEPS, ENVS) > 1e-3  # no near-ties
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(results["lstm/actions"][clear], expected["actions"][clear])
    assert len(np.unique(expected["actions"])) > 1
    for key in ("values", "logits", *(f"next_{k}" for k in model.state_sizes())):
        atol = STEPS * 32 * 1.2e-7 * (1 + np.abs(expected[key]).max())
        np.testing.assert_allclose(results[f"lstm/{key}"], expected[key], rtol=0, atol=atol, err_msg=key)


# --------------------------------------------------------------------------
# Bad paths, missing packages, an op without an ONNX counterpart: one line, no file
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return keras_trpo.TRPO(OBS_SPACE, spaces.Discrete(2), hidden_units=(4,), value_hidden_units=(4,), seed=0)


def test_an_existing_file_is_replaced_only_with_overwrite_and_other_paths_are_refused(small, tmp_path):
    """Catches: an existing .onnx file overwritten without overwrite=True (or a path not ending in .onnx accepted)."""
    target = tmp_path / "policy.onnx"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite=True") as error:
        small.export(str(target), format="onnx")
    assert "\n" not in str(error.value) and target.read_bytes() == b"old"
    assert small.export(target, format="onnx", overwrite=True) == str(target)
    assert target.read_bytes() != b"old"
    (tmp_path / "folder.onnx").mkdir()
    for bad, error_type, match in ((tmp_path / "policy", ValueError, r"a \.onnx file"),
                                   (tmp_path / "policy.tflite", ValueError, r"a \.onnx file"),
                                   (tmp_path / "folder.onnx", ValueError, "is a directory"),
                                   (3, TypeError, "'.onnx'")):
        with pytest.raises(error_type, match=match) as error:
            small.export(bad, format="onnx")
        assert "\n" not in str(error.value)
    for kwargs, error_type in (({"opset": 9}, ValueError), ({"opset_version": 17}, TypeError)):
        with pytest.raises(error_type, match="opset") as error:
            small.export(tmp_path / "other.onnx", format="onnx", **kwargs)
        assert "\n" not in str(error.value)
    assert sorted(os.listdir(tmp_path)) == ["folder.onnx", "policy.onnx"]  # no temporary file left behind


@pytest.mark.parametrize("missing", ["tf2onnx", "onnx"])
def test_a_missing_converter_is_one_line_naming_the_pip_extra(small, tmp_path, monkeypatch, missing):
    """Catches: only tf2onnx checked up front (a missing onnx then fails mid-export with a traceback)."""
    monkeypatch.setitem(sys.modules, missing, None)  # what `import onnx` meets when onnx is not installed
    with pytest.raises(ImportError) as error:
        small.export(str(tmp_path / "policy.onnx"), format="onnx")
    assert str(error.value) == f'format=\'onnx\' needs {missing}, which is not installed: pip install "keras-trpo[onnx]"'
    assert os.listdir(tmp_path) == []


@keras.saving.register_keras_serializable(package="test_export_onnx")
class LogGamma(keras.layers.Layer):
    """A TensorFlow op that tf2onnx 1.17 leaves unconverted (it keeps ``Lgamma`` as a node ONNX does not define)."""

    def call(self, x):
        return tf.math.lgamma(1.0 + tf.square(x))


def test_a_network_op_without_an_onnx_counterpart_is_refused_and_no_file_written(tmp_path):
    """Catches: tf2onnx's continue-on-error graph written as it is (a file onnxruntime cannot load)."""
    network = keras.Sequential([LogGamma(), keras.layers.Dense(4, activation="tanh")])
    model = keras_trpo.TRPO(OBS_SPACE, spaces.Discrete(2), policy_network=network, seed=0)
    with pytest.raises(RuntimeError, match=r"tf2onnx could not convert .*Lgamma.*format='tf_saved_model'") as error:
        model.export(str(tmp_path / "policy.onnx"), format="onnx")
    assert "\n" not in str(error.value)
    assert os.listdir(tmp_path) == []
