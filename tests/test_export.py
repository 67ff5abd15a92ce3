"""Export for TF Serving: real SavedModels, checked in fresh processes that import only TensorFlow.

The comparisons run every signature of every exported model in one fresh Python process (a
few seconds of TensorFlow start-up), which must not import keras_trpo or tensorflow_probability:
an import hook in that process refuses them, and sys.modules is checked after the calls.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo.export import SIGNATURE_NAMES
from keras_trpo.observations import ObservationSpec
from numerics import log_prob_gap, mlp_gap

REPO = Path(__file__).resolve().parents[1]
COMMITTED_CARTPOLE = REPO / "saved_models" / "cartpole" / "1"
OBS_SPACE = spaces.Box(-5.0, 5.0, (4,), np.float32)
SUBPROCESS_TIMEOUT = 120

# Prepended to every fresh-process script: loading a SavedModel must not need these packages.
BLOCK_IMPORTS = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras_trpo", "tensorflow_probability"):
                raise ImportError(f"{name} must not be needed to load or call the SavedModel")
            return None

    sys.meta_path.insert(0, _Block())

    def forbidden_modules():
        return sorted(m for m in sys.modules if m.split(".")[0] in ("keras_trpo", "tensorflow_probability"))
    """
)


def run_fresh_python(script, *args, timeout=SUBPROCESS_TIMEOUT):
    """Runs ``script`` in a new interpreter and returns its last stdout line parsed as JSON."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_IMPORTS + textwrap.dedent(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def saved_model_cli(*invocations, timeout=SUBPROCESS_TIMEOUT):
    """Runs the saved_model_cli invocations (lists of arguments) concurrently; returns their stdouts."""
    exe = shutil.which("saved_model_cli")
    command = [exe] if exe else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [
        subprocess.Popen(
            [*command, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for args in invocations
    ]
    outputs = []
    try:
        for args, proc in zip(invocations, procs):
            stdout, stderr = proc.communicate(timeout=timeout)
            command_line = " ".join(map(str, args))
            assert proc.returncode == 0, f"saved_model_cli {command_line} failed:\n{stdout}\n{stderr}"
            outputs.append(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


# --------------------------------------------------------------------------
# Models with non-trivial weights and normalization statistics, exported once
# --------------------------------------------------------------------------
ACTION_SPACES = {
    "discrete": spaces.Discrete(3, start=1),
    # Wide bounds: no sample is clipped, so sample log_probs are comparable to the Keras model's.
    "box": spaces.Box(-100.0, 100.0, (2,), np.float32),
    "multidiscrete": spaces.MultiDiscrete([2, 3, 4], start=[0, 1, -1]),
    "multibinary": spaces.MultiBinary(3),
}


def make_model(action_space, *, normalize=True, seed=0, observation_space=OBS_SPACE):
    model = keras_trpo.TRPO(
        observation_space,
        action_space,
        hidden_units=(16,),
        value_hidden_units=(16,),
        normalize_observations=normalize,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    for layer in (*model.policy_layers, model.policy_output, *model.value_layers, model.value_output):
        # O(1) outputs instead of the near-uniform initial policy: argmaxes and samples mean something.
        # Graph and eager float32 results may differ by rounding: the tests bound that by
        # tests/numerics.py's derived gaps (mlp_gap, log_prob_gap), not by fitted tolerances.
        scale = 0.3 if layer is model.policy_output else 0.7
        layer.kernel.assign(rng.normal(scale=scale, size=layer.kernel.shape).astype(np.float32))
        layer.bias.assign(rng.normal(scale=0.3, size=layer.bias.shape).astype(np.float32))
    if model.log_std is not None:
        model.log_std.assign(np.linspace(-0.7, 0.2, model.log_std.shape[0]).astype(np.float32))
    if normalize:
        size = (256, model.observation_spec.float_size)
        model.normalizer.update(tf.constant(rng.normal(loc=1.0, scale=2.0, size=size).astype(np.float32)))
    return model


def clip_models():
    """Two Box models with identical weights whose mean lies outside [-1, 1]; one has wide bounds."""
    narrow = make_model(spaces.Box(-1.0, 1.0, (2,), np.float32), seed=5)
    narrow.policy_output.kernel.assign(np.zeros(narrow.policy_output.kernel.shape, np.float32))
    narrow.policy_output.bias.assign(np.array([3.0, -2.5], np.float32))
    narrow.log_std.assign(np.array([-1.0, -1.0], np.float32))
    wide = keras_trpo.TRPO(
        OBS_SPACE, spaces.Box(-100.0, 100.0, (2,), np.float32), hidden_units=(16,), value_hidden_units=(16,),
        normalize_observations=True, seed=5,
    )
    wide.set_weights(narrow.get_weights())
    return narrow, wide


FRESH_PROCESS_SCRIPT = """
    import json, sys
    import numpy as np
    import tensorflow as tf

    root, inputs_file, outputs_file = sys.argv[1:4]
    inputs = dict(np.load(inputs_file))
    names = json.loads(sys.argv[4])
    results, report = {}, {"errors": {}}
    for name in names:
        loaded = tf.saved_model.load(f"{root}/{name}/1")
        sig = loaded.signatures
        report.setdefault("signatures", {})[name] = sorted(sig.keys())
        obs = tf.constant(inputs["observations"])
        for key, value in sig["serving_default"](observations=obs).items():
            results[f"{name}/serving_default/{key}"] = value.numpy()
        for tag, seed in (("a", [1, 2]), ("b", [1, 2]), ("c", [3, 4])):
            out = sig["sample"](observations=obs, seed=tf.constant(seed, tf.int32))
            for key, value in out.items():
                results[f"{name}/sample_{tag}/{key}"] = value.numpy()
        many = sig["sample"](observations=tf.constant(inputs["many_observations"]), seed=tf.constant([7, 8]))
        results[f"{name}/sample_many/actions"] = many["actions"].numpy()
        results[f"{name}/value/values"] = sig["value"](observations=obs)["values"].numpy()
        if f"{name}/actions" in inputs:
            out = sig["log_prob"](observations=obs, actions=tf.constant(inputs[f"{name}/actions"]))
            results[f"{name}/log_prob/log_probs"] = out["log_probs"].numpy()
        for key, value in sig["distribution_params"](observations=obs).items():
            results[f"{name}/distribution_params/{key}"] = value.numpy()
        # The python function restored from the module checks its input signature as well.
        results[f"{name}/module_call/actions"] = loaded.serving_default(obs)["actions"].numpy()
        # Wrong observation width through the signature (what TF Serving calls) and the function.
        errors = {}
        try:
            sig["serving_default"](observations=tf.zeros([4, 8]))
            errors["signature"] = None
        except Exception as e:
            errors["signature"] = f"{type(e).__name__}: {e}"
        try:
            loaded.serving_default(tf.zeros([4, 8]))
            errors["function"] = None
        except Exception as e:
            errors["function"] = f"{type(e).__name__}: {e}"
        report["errors"][name] = errors
    np.savez(outputs_file, **results)
    report["forbidden_modules"] = forbidden_modules()
    print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Exports one model per action space kind (+ the clipping pair) and runs them in a fresh process."""
    root = tmp_path_factory.mktemp("exported")
    rng = np.random.default_rng(123)
    observations = rng.normal(scale=2.0, size=(64, 4)).astype(np.float32)
    many = np.repeat(observations[:1], 20000, axis=0)
    # The MultiBinary model has no observation normalization: both graph paths are exported.
    models = {
        name: make_model(space, normalize=name != "multibinary") for name, space in ACTION_SPACES.items()
    }
    models["box_clip"], models["box_clip_wide"] = clip_models()
    inputs = {"observations": observations, "many_observations": many}
    for name, model in models.items():
        path = model.export(root / name)
        assert path == str(root / name / "1")
        space = model.action_space
        if name == "box_clip":
            continue
        if isinstance(space, spaces.Box):
            # Actions around the policy's mean (uniform ones over [-100, 100] would have
            # log-probabilities of -1e4, where float32 cannot resolve an absolute 1e-5).
            params = {k: v.numpy() for k, v in model.distribution_params(observations).items()}
            noise = rng.normal(scale=1.5, size=params["mean"].shape)
            actions = params["mean"] + np.exp(params["log_std"]) * noise
            inputs[f"{name}/actions"] = actions.astype(np.float32)
        else:
            space.seed(1)
            inputs[f"{name}/actions"] = np.stack([space.sample() for _ in observations]).astype(np.int32)
    np.savez(root / "inputs.npz", **inputs)
    report = run_fresh_python(
        FRESH_PROCESS_SCRIPT, root, root / "inputs.npz", root / "outputs.npz", json.dumps(list(models))
    )
    outputs = dict(np.load(root / "outputs.npz"))
    return {"root": root, "models": models, "inputs": inputs, "outputs": outputs, "report": report}


def test_savedmodel_loads_without_keras_trpo_or_tensorflow_probability(exported):
    # The import hook refused both packages and none of them was imported by loading or calling.
    assert exported["report"]["forbidden_modules"] == []
    for name, signatures in exported["report"]["signatures"].items():
        assert signatures == sorted(SIGNATURE_NAMES), name


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_serving_default_equals_the_keras_model(exported, name):
    model, out = exported["models"][name], exported["outputs"]
    obs = exported["inputs"]["observations"]
    expected = model(obs).numpy()
    actions = out[f"{name}/serving_default/actions"]
    assert actions.shape == expected.shape == (len(obs), *model.action_space.shape)
    if isinstance(model.action_space, spaces.Box):  # the mean, within two evaluations' rounding
        assert np.all(np.abs(actions.astype(np.float64) - expected) <= mlp_gap(model, obs)["policy"])
    else:  # integers: equal
        np.testing.assert_array_equal(actions, expected)
    np.testing.assert_array_equal(out[f"{name}/module_call/actions"], actions)
    if not isinstance(model.action_space, spaces.Box):
        assert len(np.unique(actions, axis=0)) > 1  # the comparison is not vacuous
        assert all(model.action_space.contains(a.astype(model.action_space.dtype)) for a in actions)


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_sample_is_deterministic_per_seed_and_its_log_probs_match_the_keras_model(exported, name):
    model, out = exported["models"][name], exported["outputs"]
    obs = exported["inputs"]["observations"]
    a, b, c = (out[f"{name}/sample_{tag}/actions"] for tag in "abc")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out[f"{name}/sample_a/log_probs"], out[f"{name}/sample_b/log_probs"])
    assert not np.array_equal(a, c)
    assert a.shape == (len(obs), *model.action_space.shape)
    expected = model.distribution(obs).log_prob(model.head.cast_actions(a)).numpy()
    assert np.all(np.abs(out[f"{name}/sample_a/log_probs"] - expected) <= log_prob_gap(model, obs, a))
    if not isinstance(model.action_space, spaces.Box):
        assert all(model.action_space.contains(x.astype(model.action_space.dtype)) for x in a)


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_sample_follows_the_policy_distribution(exported, name):
    """20,000 samples of one observation: frequencies / moments match the Keras distribution."""
    model, out = exported["models"][name], exported["outputs"]
    samples = out[f"{name}/sample_many/actions"]
    first = exported["inputs"]["observations"][:1]
    params = {k: v.numpy()[0] for k, v in model.distribution_params(first).items()}
    space = model.action_space
    if isinstance(space, spaces.Box):
        np.testing.assert_allclose(samples.mean(0), params["mean"], atol=0.05)
        np.testing.assert_allclose(samples.std(0), np.exp(params["log_std"]), rtol=0.05)
    elif isinstance(space, spaces.Discrete):
        probs = tf.nn.softmax(params["logits"]).numpy()
        freq = np.bincount(samples - space.start, minlength=space.n) / len(samples)
        np.testing.assert_allclose(freq, probs, atol=0.02)
    elif isinstance(space, spaces.MultiDiscrete):
        offset = 0
        for k, (n, start) in enumerate(zip(space.nvec, space.start)):
            probs = tf.nn.softmax(params["logits"][offset : offset + n]).numpy()
            freq = np.bincount(samples[:, k] - start, minlength=n) / len(samples)
            assert len(freq) == n  # never a padded (invalid) index
            np.testing.assert_allclose(freq, probs, atol=0.02)
            offset += n
    else:
        np.testing.assert_allclose(samples.mean(0), tf.sigmoid(params["logits"]).numpy(), atol=0.02)


@pytest.mark.parametrize("name", list(ACTION_SPACES))
def test_value_log_prob_and_distribution_params_match_the_keras_model(exported, name):
    model, out = exported["models"][name], exported["outputs"]
    obs = exported["inputs"]["observations"]
    gap = mlp_gap(model, obs)
    assert np.all(np.abs(out[f"{name}/value/values"] - model.value(obs).numpy()) <= gap["value"])
    actions = exported["inputs"][f"{name}/actions"]
    expected = model.distribution(obs).log_prob(model.head.cast_actions(actions)).numpy()
    assert np.all(np.abs(out[f"{name}/log_prob/log_probs"] - expected) <= log_prob_gap(model, obs, actions))
    params = model.distribution_params(obs)
    keys = ["log_std", "mean"] if isinstance(model.action_space, spaces.Box) else ["logits"]
    assert sorted(k.split("/")[-1] for k in out if k.startswith(f"{name}/distribution_params/")) == keys
    for key in keys:
        actual = out[f"{name}/distribution_params/{key}"]
        bound = 0.0 if key == "log_std" else gap["policy"]  # log_std is a weight, copied exactly
        assert np.all(np.abs(actual - params[key].numpy()) <= bound), key


def test_box_actions_are_clipped_and_sample_log_probs_are_of_the_unclipped_sample(exported):
    out, narrow = exported["outputs"], exported["models"]["box_clip"]
    obs = exported["inputs"]["observations"]
    # The mean (3, -2.5) is outside the bounds [-1, 1]: the deterministic action is the bound.
    np.testing.assert_array_equal(narrow(obs).numpy()[0], [3.0, -2.5])
    bounds = np.tile([1.0, -1.0], (len(obs), 1))
    np.testing.assert_array_equal(out["box_clip/serving_default/actions"], bounds)
    sampled = out["box_clip/sample_a/actions"]
    assert sampled.min() >= -1.0 and sampled.max() <= 1.0
    # Same weights, same seed, wide bounds: the unclipped sample. Clipping it gives the narrow one,
    # and the narrow model's log_probs are those of the unclipped sample, not of the clipped action.
    unclipped = out["box_clip_wide/sample_a/actions"]
    assert (np.abs(unclipped) > 1).mean() > 0.9
    np.testing.assert_array_equal(sampled, np.clip(unclipped, -1.0, 1.0))
    np.testing.assert_array_equal(out["box_clip/sample_a/log_probs"], out["box_clip_wide/sample_a/log_probs"])
    expected = narrow.distribution(obs).log_prob(unclipped).numpy()
    assert np.all(np.abs(out["box_clip/sample_a/log_probs"] - expected) <= log_prob_gap(narrow, obs, unclipped))
    assert np.all(narrow.distribution(obs).log_prob(sampled).numpy() < expected - 1.0)


@pytest.mark.parametrize("name", ["box", "multibinary"], ids=["normalized", "not-normalized"])
def test_wrong_observation_width_is_a_clear_shape_error(exported, name):
    # [4, 8] has 32 values: without a shape check the unnormalized model would reshape it to [8, 4].
    errors = exported["report"]["errors"][name]
    assert errors["signature"] is not None, "the signature accepted observations of width 8"
    assert "InvalidArgumentError" in errors["signature"]
    assert "observations [4,8] is not compatible with expected shape [?,4]" in errors["signature"]
    assert errors["function"] is not None and "TensorSpec(shape=(None, 4)" in errors["function"]


# --------------------------------------------------------------------------
# saved_model_cli
# --------------------------------------------------------------------------
def test_saved_model_cli_shows_all_signatures_and_runs_them(exported, tmp_path):
    path = exported["root"] / "box" / "1"
    obs = exported["inputs"]["observations"][:3]
    model = exported["models"]["box"]
    # saved_model_cli evaluates --input_exprs as Python literals (no numpy calls).
    literal = json.dumps(obs.tolist())
    runs = {
        "serving_default": f"observations={literal}",
        "sample": f"observations={literal};seed=[5, 6]",
    }
    run_args = [
        ["run", "--dir", path, "--tag_set", "serve", "--signature_def", signature,
         "--input_exprs", expression, "--outdir", tmp_path / signature]
        for signature, expression in runs.items()
    ]
    shown, *_ = saved_model_cli(["show", "--all", "--dir", path], *run_args)

    for name in SIGNATURE_NAMES:
        assert f"signature_def['{name}']" in shown
    assert "inputs['seed'] tensor_info:" in shown and "outputs['log_probs'] tensor_info:" in shown
    assert "outputs['mean'] tensor_info:" in shown and "outputs['log_std'] tensor_info:" in shown
    results = {sig: {f.stem: np.load(f) for f in (tmp_path / sig).glob("*.npy")} for sig in runs}
    assert sorted(results["serving_default"]) == ["actions"]
    assert np.all(np.abs(results["serving_default"]["actions"] - model(obs).numpy()) <= mlp_gap(model, obs)["policy"])
    assert sorted(results["sample"]) == ["actions", "log_probs"]
    sampled = results["sample"]["actions"]
    assert sampled.shape == (3, 2)
    expected = model.distribution(obs).log_prob(sampled).numpy()
    assert np.all(np.abs(results["sample"]["log_probs"] - expected) <= log_prob_gap(model, obs, sampled))


# --------------------------------------------------------------------------
# Dict observation spaces: every signature, the input checks
# --------------------------------------------------------------------------
# Loaded in this process: that a Dict export needs neither keras_trpo nor TFP is shown in a fresh
# process by tests/test_minigrid.py. Both models use the default MLP, so two float32 evaluations
# differ by at most numerics' derived gap, computed on the MLP's input built here by hand.
ORDERED_SPACE = spaces.Dict(OrderedDict([("b", spaces.Box(-5.0, 5.0, (2,), np.float32)),
                                         ("a", spaces.Box(-5.0, 5.0, (3,), np.float32))]))
MIXED_SPACE = spaces.Dict({"position": spaces.Box(-5.0, 5.0, (2,), np.float32),
                           "direction": spaces.Discrete(4, start=1), "image": spaces.Box(0, 255, (3, 3, 2), np.uint8)})
DICT_MODELS = {  # name: (observation space, action space, normalize_observations)
    "float entries (b, a)": (ORDERED_SPACE, ACTION_SPACES["box"], True),
    "image, discrete, float": (MIXED_SPACE, ACTION_SPACES["discrete"], False),
}


def dict_observations(space, n, rng):
    """A batch of ``n``: float entries N(0, 2²), Discrete uniform, uint8 images of small cell codes 0-3."""
    def one(entry):
        if isinstance(entry, spaces.Discrete):
            return rng.integers(entry.start, entry.start + entry.n, size=n).astype(np.int64)
        if entry.dtype == np.uint8:
            return rng.integers(0, 4, size=(n, *entry.shape)).astype(np.uint8)
        return rng.normal(scale=2.0, size=(n, *entry.shape)).astype(np.float32)

    return {key: one(entry) for key, entry in space.spaces.items()}


def mlp_input(space, observations):
    """The default MLP's input as keras_trpo/observations.py documents it: entries in sorted key order,
    a Discrete one-hot (less its start), the rest flattened."""
    parts = []
    for key in sorted(space.spaces):
        entry, x = space.spaces[key], observations[key]
        if isinstance(entry, spaces.Discrete):
            parts.append(np.eye(entry.n)[x - entry.start])
        else:
            parts.append(x.reshape(len(x), -1).astype(np.float64))
    return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def dict_exports(tmp_path_factory):
    """``{name: (model, observations, the MLP's input, loaded SavedModel)}`` for DICT_MODELS."""
    root, exports = tmp_path_factory.mktemp("dict_exports"), {}
    for index, (name, (space, action_space, normalize)) in enumerate(DICT_MODELS.items()):
        model = make_model(action_space, normalize=normalize, observation_space=space, seed=index)
        observations = dict_observations(space, 64, np.random.default_rng(index))
        loaded = tf.saved_model.load(model.export(root / str(index)))
        exports[name] = (model, observations, mlp_input(space, observations), loaded)
    return exports


def call(loaded, signature, observations, **extra):
    """``loaded.signatures[signature]`` on numpy inputs, by name; numpy outputs."""
    inputs = {key: tf.constant(value) for key, value in {**observations, **extra}.items()}
    return {key: value.numpy() for key, value in loaded.signatures[signature](**inputs).items()}


@pytest.mark.parametrize("name", list(DICT_MODELS))
def test_dict_export_serving_value_and_distribution_params_equal_the_keras_model(dict_exports, name):
    """Catches: a Dict export that feeds its inputs to the network in another order than the model
    (the space's key order (b, a) instead of sorted: logits off by ~1), or drops an entry's transformation."""
    model, observations, features, loaded = dict_exports[name]
    gap = mlp_gap(model, features)
    params = {key: value.numpy() for key, value in model.distribution_params(observations).items()}
    exported = call(loaded, "distribution_params", observations)
    assert sorted(exported) == sorted(params)
    for key, value in params.items():
        bound = 0.0 if key == "log_std" else gap["policy"]  # log_std is a weight, copied exactly
        assert np.all(np.abs(exported[key] - value) <= bound), f"{key}: off by {np.abs(exported[key] - value).max()}"
    actions, expected = call(loaded, "serving_default", observations)["actions"], model(observations).numpy()
    if isinstance(model.action_space, spaces.Box):  # the mean (no bound is reached)
        assert np.all(np.abs(actions - expected) <= gap["policy"])
    else:
        np.testing.assert_array_equal(actions, expected)
        assert len(np.unique(actions)) > 1  # the comparison is not vacuous
    values = call(loaded, "value", observations)["values"]
    assert np.all(np.abs(values - model.value(observations).numpy()) <= gap["value"])


@pytest.mark.parametrize("name", list(DICT_MODELS))
def test_dict_export_sample_and_log_prob_match_the_keras_model(dict_exports, name):
    """Catches: the ``sample`` or ``log_prob`` signature of a Dict export taking its inputs in another order,
    or a ``sample`` that does not depend on the seed alone."""
    model, observations, features, loaded = dict_exports[name]
    first, again, other = (call(loaded, "sample", observations, seed=np.array(seed, np.int32))
                           for seed in ([1, 2], [1, 2], [3, 4]))
    np.testing.assert_array_equal(first["actions"], again["actions"])
    np.testing.assert_array_equal(first["log_probs"], again["log_probs"])
    assert not np.array_equal(first["actions"], other["actions"])
    assert first["actions"].shape == (64, *model.action_space.shape)
    if not isinstance(model.action_space, spaces.Box):
        assert all(model.action_space.contains(a) for a in first["actions"].astype(np.int64))
    given = call(loaded, "log_prob", observations, actions=other["actions"])["log_probs"]
    for actions, log_probs in ((first["actions"], first["log_probs"]), (other["actions"], given)):
        expected = model.distribution(observations).log_prob(model.head.cast_actions(actions)).numpy()
        bound = log_prob_gap(model, observations, actions, features=features)
        assert np.all(np.abs(log_probs - expected) <= bound), f"off by {np.abs(log_probs - expected).max()}"


WRONG_DICT_SHAPES = {
    # Widths swapped: 5 features in all, as expected; the MLP's input has the right width.
    "float entries (b, a)": ({"a": (4, 2), "b": (4, 3)},
                             r"Shape of tensor (a \[4,2\] is not compatible with expected shape \[\?,3\]|"
                             r"b \[4,3\] is not compatible with expected shape \[\?,2\])"),
    "image, discrete, float": ({"image": (4, 3, 3, 1)},
                               r"Shape of tensor image \[4,3,3,1\] is not compatible with expected shape \[\?,3,3,2\]"),
}


@pytest.mark.parametrize("name", list(WRONG_DICT_SHAPES))
def test_a_wrong_entry_shape_in_a_dict_export_is_a_clear_shape_error(dict_exports, name):
    """Catches: the exported functions' shape check dropped (``checked = [inputs[s.name] ...]``): a signature
    call (what TF Serving makes) does not check shapes, so the error would come from deep in the graph, or
    not at all (swapped widths reshape into a valid-looking input)."""
    model, observations, _, loaded = dict_exports[name]
    shapes, message = WRONG_DICT_SHAPES[name]
    wrong = {key: np.zeros(shapes.get(key, (4, *value.shape[1:])), value.dtype)
             for key, value in observations.items()}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        call(loaded, "serving_default", wrong)


SIGNATURE_NAME_ERRORS = {
    "seed": r"^observation_space: observation keys \['seed'\] clash",
    "actions": r"^observation_space: observation keys \['actions'\] clash",
    "agent-pos": r"^observation_space: observation keys \['agent-pos'\] are not valid signature input names",
}


@pytest.mark.parametrize("key", sorted(SIGNATURE_NAME_ERRORS))
def test_export_refuses_dict_keys_that_cannot_name_signature_inputs(tmp_path, key):
    """Catches: export's own key check dropped (``spec.check_signature_names()`` in ServingModule): a clashing
    key then fails inside TensorFlow's signature building, and 'agent-pos' is renamed without a word.

    TRPO(...) refuses such keys when it is built (tests/test_error_messages.py); export checks again for a
    model whose observation spec did not come through the constructor, here one replaced afterwards (same
    entry shapes in sorted order, so that nothing but the names differs).
    """
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    model = keras_trpo.TRPO(spaces.Dict({"b": box, "z": box}), spaces.Discrete(2), hidden_units=(4,), seed=0)
    model.observation_spec = ObservationSpec(spaces.Dict({key: box, "z": box}))
    with pytest.raises(ValueError, match=SIGNATURE_NAME_ERRORS[key]):
        model.export(tmp_path / "policy")
    assert not (tmp_path / "policy").exists()


# --------------------------------------------------------------------------
# Versioned layout and argument errors
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    return make_model(spaces.Discrete(2), normalize=False, seed=1)


def versions(path):
    return sorted(p.name for p in path.iterdir())


def test_exporting_twice_to_a_base_directory_creates_versions_1_and_2(small_model, tmp_path):
    base = tmp_path / "models" / "policy"
    first = small_model.export(base)
    second = small_model.export(str(base))
    assert (first, second) == (str(base / "1"), str(base / "2"))
    assert versions(base) == ["1", "2"]  # no temporary directory is left behind
    for version in ("1", "2"):
        assert (base / version / "saved_model.pb").is_file() and (base / version / "variables").is_dir()
    # Existing integer versions and plain files are fine; the next version is max + 1.
    (base / "README.md").write_text("notes")
    shutil.copytree(base / "1", base / "10")
    assert small_model.export(base) == str(base / "11")


def test_an_explicit_version_directory_is_written_once_unless_overwrite(small_model, tmp_path):
    target = tmp_path / "policy" / "7"
    assert small_model.export(target) == str(target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        small_model.export(target)
    other = make_model(spaces.Discrete(2), normalize=False, seed=2)
    assert other.export(target, overwrite=True) == str(target)
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    loaded = tf.saved_model.load(str(target))
    values = loaded.signatures["value"](observations=tf.constant(obs))["values"].numpy()
    assert np.all(np.abs(values - other.value(obs).numpy()) <= mlp_gap(other, obs)["value"])
    assert versions(target.parent) == ["7"]
    empty = tmp_path / "policy" / "8"
    empty.mkdir()
    assert small_model.export(empty) == str(empty)  # an empty version directory is not "existing"


def test_bad_export_paths_and_arguments_are_refused(small_model, tmp_path):
    saved_models = tmp_path / "saved_models"
    small_model.export(saved_models / "cartpole")
    with pytest.raises(ValueError, match=r"non-version sub-directories \['cartpole'\]"):
        small_model.export(saved_models)
    shutil.copytree(saved_models / "cartpole" / "1", tmp_path / "flat")
    with pytest.raises(ValueError, match="is a SavedModel directory itself"):
        small_model.export(tmp_path / "flat")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        small_model.export(tmp_path / "file")
    with pytest.raises(TypeError, match="filepath"):
        small_model.export(3)
    with pytest.raises(TypeError, match="overwrite"):
        small_model.export(tmp_path / "x", overwrite="yes")
    with pytest.raises(ValueError, match="format"):
        small_model.export(tmp_path / "x", format="savedmodel")
    assert not (tmp_path / "x").exists()


def test_exporting_an_unbuilt_model_says_how_to_build_it(tmp_path):
    class LazyTRPO(keras_trpo.TRPO):
        def build(self, input_shape):  # forgets super().build(): no layer has weights
            pass

    model = LazyTRPO(OBS_SPACE, spaces.Discrete(2))
    with pytest.raises(ValueError, match=r"not built.*model\(model\.observation_spec\.zeros\(1\)\)"):
        model.export(tmp_path / "lazy")
    built = keras_trpo.TRPO(OBS_SPACE, spaces.Discrete(2))
    built.built = False
    with pytest.raises(ValueError, match=r"Cannot export model .* not built"):
        built.export(tmp_path / "unbuilt")
    assert not (tmp_path / "lazy").exists() and not (tmp_path / "unbuilt").exists()


# --------------------------------------------------------------------------
# The committed CartPole policy
# --------------------------------------------------------------------------
def test_committed_cartpole_policy_balances_the_pole_in_a_fresh_process():
    assert (COMMITTED_CARTPOLE / "saved_model.pb").is_file(), (
        "saved_models/cartpole/1 is missing: run python examples/cartpole.py --export saved_models/cartpole"
    )
    report = run_fresh_python(
        """
        import json, sys
        import gymnasium
        import numpy as np
        import tensorflow as tf

        policy = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
        env = gymnasium.make("CartPole-v1")
        returns = []
        for episode in range(5):
            observation, _ = env.reset(seed=1000 + episode)
            total, done = 0.0, False
            while not done:
                action = policy(observations=tf.constant(observation[None], tf.float32))["actions"]
                observation, reward, terminated, truncated, _ = env.step(int(action.numpy()[0]))
                total += reward
                done = terminated or truncated
            returns.append(total)
        print(json.dumps({"returns": returns, "forbidden_modules": forbidden_modules()}))
        """,
        COMMITTED_CARTPOLE,
    )
    print("committed CartPole policy, 5 episodes:", report["returns"])
    assert report["forbidden_modules"] == []
    assert len(report["returns"]) == 5
    assert np.mean(report["returns"]) >= 475


# --------------------------------------------------------------------------
# TF Serving integration (needs the tensorflow_model_server binary)
# --------------------------------------------------------------------------
MODEL_SERVER = shutil.which("tensorflow_model_server")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, payload=None, timeout=10):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.mark.skipif(
    MODEL_SERVER is None,
    reason="tensorflow_model_server is not on PATH: the TF Serving REST/gRPC integration test needs "
    "the binary (see docs/serving.md; it cannot be installed on this machine)",
)
def test_tensorflow_model_server_serves_rest_and_grpc(tmp_path):
    base = tmp_path / "cartpole"
    shutil.copytree(COMMITTED_CARTPOLE, base / "1")
    rest_port, grpc_port = free_port(), free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [
            MODEL_SERVER,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--model_name=cartpole",
            f"--model_base_path={base}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        rest = f"http://127.0.0.1:{rest_port}/v1/models/cartpole"
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"tensorflow_model_server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                status = http_json(rest, timeout=2)
                if status["model_version_status"][0]["state"] == "AVAILABLE":
                    break
            except (urllib.error.URLError, ConnectionError, KeyError, IndexError, json.JSONDecodeError):
                pass
            assert time.monotonic() < deadline, "TF Serving did not make the model AVAILABLE within 60 s"
            time.sleep(0.5)

        observations = np.random.default_rng(0).uniform(-0.2, 0.2, size=(8, 4)).astype(np.float32)
        local = tf.saved_model.load(str(COMMITTED_CARTPOLE)).signatures
        expected = local["serving_default"](observations=tf.constant(observations))["actions"].numpy()

        # REST, row format (instances -> predictions) and columnar format (inputs -> outputs).
        rows = http_json(
            f"{rest}:predict", {"signature_name": "serving_default", "instances": observations.tolist()}
        )
        np.testing.assert_array_equal(np.array(rows["predictions"]), expected)
        columns = http_json(f"{rest}:predict", {"inputs": {"observations": observations.tolist()}})
        np.testing.assert_array_equal(np.array(columns["outputs"]), expected)
        inputs = {"observations": observations.tolist(), "seed": [1, 2]}
        sampled = http_json(f"{rest}:predict", {"signature_name": "sample", "inputs": inputs})["outputs"]
        local_sample = local["sample"](observations=tf.constant(observations), seed=tf.constant([1, 2]))
        np.testing.assert_array_equal(np.array(sampled["actions"]), local_sample["actions"].numpy())
        np.testing.assert_allclose(sampled["log_probs"], local_sample["log_probs"].numpy(), rtol=0, atol=1e-5)
        with pytest.raises(urllib.error.HTTPError) as bad:
            http_json(f"{rest}:predict", {"instances": np.zeros((2, 5)).tolist()})
        assert bad.value.code == 400

        # gRPC, with the client from tensorflow-serving-api when it is installed.
        try:
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        except ImportError:
            print("tensorflow-serving-api is not installed: gRPC part not run")
            return
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "cartpole"
            request.model_spec.signature_name = "serving_default"
            request.inputs["observations"].CopyFrom(tf.make_tensor_proto(observations))
            response = stub.Predict(request, timeout=10)
            np.testing.assert_array_equal(tf.make_ndarray(response.outputs["actions"]), expected)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
