"""LiteRT export (issue 30): ``model.export("x.tflite", format="litert")``, run where keras_trpo is not.

Seven models (the CartPole MLP, a Hopper-shaped Box MLP with observation normalization and float64 observations,
a MiniGrid-shaped uint8 CNN, a Dict-observation MLP, a masked MultiDiscrete model, a MultiBinary model and a
recurrent LSTM model) are exported to ``.tflite`` and run in ONE fresh Python process through ``ai_edge_litert``'s interpreter
(``get_signature_runner``); that process imports neither keras_trpo nor TensorFlow (tests/test_export.py's
import hook refuses keras_trpo and TFP; TensorFlow's absence is checked). The recurrent model is stepped
through episodes, carrying the state each call returns. ``sample`` (LiteRT's own seeded draw, builtin ops
only) is checked for determinism per seed, its frequencies against the policy and its log-probabilities
against TFP's in the Keras model.

Tolerances: the interpreter and Keras evaluate the same float32 network with other kernels (XNNPACK,
other summation orders, other tanh/sigmoid approximations). Each comparison asserts two bounds:
- the derived worst-case gap (tests/numerics.py: twice each evaluation's forward-error bound, Higham §3.1;
  the CNN and LSTM helpers below apply the same rules to a convolution and to the cell's gates). It holds on
  any CPU, but it is loose: 5e-5 to 7e-2 here, 30 to 70,000 times the measured differences;
- the issue's |Δ| ≤ 1e-5. No worst-case bound gives it (for a 64-wide tanh layer feeding an O(1) output the
  rounding term γ_65·Σ|w||h| alone is ~2e-5), so it rests on how rounding errors behave, not on a fit: sums of n
  terms with independent roundings err by O(√n·u·Σ|terms|) (Higham & Mary, SIAM J. Sci. Comput. 2019),
  about 1e-6 for these networks; measured on this CPU: at most 2e-6 (the Box and O(1)-logit models).
"""

import json
import math
import os

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo import export, export_litert, networks
from keras_trpo.policies import BernoulliHead
from network_bounds import network_gap
from numerics import ELEMENTWISE_UNITS, LIPSCHITZ, U32, gamma, mlp_gap, normalization_error
from test_export import MIXED_SPACE, dict_observations, make_model, mlp_input, run_fresh_python
from test_masked_export import masked_twin, random_masks

pytest.importorskip("ai_edge_litert", reason="LiteRT tests need ai-edge-litert (pip install 'keras-trpo[litert]')")

N, T = 32, 12  # rows per batch; steps of the recurrent episode
MANY = 20_000  # sample draws of one observation (the batch's most uncertain one)
SIGMAS = 5  # a frequency off by more than 5 binomial standard deviations fails (p ≈ 6e-7 per comparison)
ISSUE_BOUND = 1e-5
PLAIN = ("serving_default", "value", "distribution_params")

FRESH_PROCESS = """
    import json, sys
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    BUILTINS = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}

    def operators(path):
        # The file's operator codes, parsed from the flatbuffer: a Select-TF op is a CUSTOM code named Flex<Op>.
        with open(path, "rb") as f:
            model = schema.Model.GetRootAsModel(f.read(), 0)
        names = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = builtin == schema.BuiltinOperator.CUSTOM
            names.append(f"CUSTOM:{code.CustomCode().decode()}" if custom else BUILTINS[builtin])
        return sorted(names)

    def episode(interpreter, feeds, results, name):
        # One call per step; the next state is what serving_default returned, as a client would carry it.
        steps, batch = feeds["observations"].shape[:2]
        state = interpreter.get_signature_runner("get_initial_state")(batch_size=np.array(batch, np.int32))
        names = sorted(state)
        runners = {s: interpreter.get_signature_runner(s) for s in ("serving_default", "value", "distribution_params")}
        sample = interpreter.get_signature_runner("sample")
        outputs = {}
        for t in range(steps):
            inputs = {"observations": feeds["observations"][t], "episode_start": feeds["episode_start"][t], **state}
            for signature, runner in runners.items():
                for key, value in runner(**inputs).items():
                    outputs.setdefault(f"{name}/{signature}/{key}", []).append(value)
            for key, value in sample(**inputs, seed=np.array([t, 1], np.int32)).items():
                outputs.setdefault(f"{name}/sample/{key}", []).append(value)
            state = {k: outputs[f"{name}/serving_default/{k}"][-1] for k in names}
        results.update({key: np.stack(value) for key, value in outputs.items()})

    root, names = sys.argv[1], json.loads(sys.argv[2])
    results, report = {}, {}
    for name in names:
        feeds = dict(np.load(f"{root}/{name}.npz"))
        interpreter = Interpreter(model_path=f"{root}/{name}.tflite")
        signatures = interpreter.get_signature_list()
        report[name] = {"signatures": signatures, "operators": operators(f"{root}/{name}.tflite")}
        try:  # an error is reported, not raised: each test then fails on its own assertion
            if "episode_start" in feeds:
                episode(interpreter, feeds, results, name)
                continue
            base = {k: v for k, v in feeds.items() if not k.startswith("many/")}
            for signature in ("serving_default", "value", "distribution_params"):
                for key, value in interpreter.get_signature_runner(signature)(**base).items():
                    results[f"{name}/{signature}/{key}"] = value
            sample = interpreter.get_signature_runner("sample")
            for tag, seed in (("a", [1, 2]), ("b", [1, 2]), ("c", [3, 4])):
                for key, value in sample(**base, seed=np.array(seed, np.int32)).items():
                    results[f"{name}/sample_{tag}/{key}"] = value
            many = {k[len("many/"):]: v for k, v in feeds.items() if k.startswith("many/")}
            for key, value in sample(**many, seed=np.array([7, 8], np.int32)).items():
                results[f"{name}/sample_many/{key}"] = value
        except Exception as error:
            report[name]["error"] = f"{type(error).__name__}: {str(error)[:1500]}"
    np.savez(f"{root}/outputs.npz", **results)
    report["forbidden_modules"] = forbidden_modules()
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    print(json.dumps(report))
"""


# --------------------------------------------------------------------------
# Derived gaps for the CNN and the LSTM (tests/numerics.py's rules)
# --------------------------------------------------------------------------
def dense_error(layer, magnitude, error, activation=None):
    """``(|y|, error bound of y)`` after a Dense ``layer`` (+ ``activation``), from ``(|x|, error of x)``."""
    kernel, bias = (np.abs(np.asarray(w.numpy(), np.float64)) for w in (layer.kernel, layer.bias))
    pre = magnitude @ kernel + bias
    error = error @ kernel + gamma(kernel.shape[0] + 1) * pre
    if activation is None:
        return pre, error
    return pre, LIPSCHITZ[activation] * error + ELEMENTWISE_UNITS * U32 * pre  # |f(z)| <= |z|


def cnn_gaps(model, images):
    """``{"policy": [N, outputs], "value": [N]}`` for the ``minigrid_cnn`` towers (network_bounds.network_gap)."""
    (policy_cnn,), (value_cnn,) = model.policy_layers, model.value_layers
    return {"policy": network_gap([*policy_cnn.layers, model.policy_output], images),
            "value": network_gap([*value_cnn.layers, model.value_output], images)[:, 0]}


def lstm_gap(model, observations, starts):
    """``{"policy": [T, N, outputs], "value": [T, N]}`` over an episode of the recurrent model (normalizer →
    [Dense tanh] → LSTM cell → output Dense), first order in u, with the exact (float64) gates and states as
    magnitudes. Per step, with z = x W + h U + b over n = inputs + units + 1 terms:
    δz ≤ δx|W| + δh|U| + γ_{n+1}(|x||W| + |h||U| + |b|); a sigmoid gate passes δz/4 on, tanh δz, each plus its
    rounding; c' = f c + i g gives δc' ≤ |c|δf + f δc + |g|δi + i δg + 2u(|f c| + |i g|);
    h' = o tanh(c') gives δh' ≤ |tanh c'| δo + o (δc' + r|tanh c'|) + u|h'|. An episode start zeroes both."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    r = ELEMENTWISE_UNITS * U32
    x = np.asarray(observations, np.float64)  # [T, N, obs]
    norm = model.normalizer
    mean, std = norm.mean.numpy().astype(np.float64), np.sqrt(norm.variance.numpy().astype(np.float64) + norm.epsilon)
    normalized = np.clip((x - mean) / std, -norm.clip, norm.clip)
    magnitude, error = normalization_error(norm, x.reshape(-1, x.shape[-1]))
    gaps = {}
    for which, layer, output in (("policy", model.policy_layers[0], model.policy_output),
                                 ("value", model.value_layers[0], model.value_output)):
        features, f_mag, f_err = normalized.reshape(-1, x.shape[-1]), magnitude, error
        for dense in [] if layer.features is None else [d for d in layer.features.layers if hasattr(d, "kernel")]:
            features = np.tanh(features @ dense.kernel.numpy() + dense.bias.numpy())
            f_mag, f_err = dense_error(dense, f_mag, f_err, "tanh")
        features, f_err = features.reshape(*x.shape[:2], -1), f_err.reshape(*x.shape[:2], -1)
        cell = layer.cell
        w, u_, b = (v.numpy().astype(np.float64) for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
        n = w.shape[0] + u_.shape[0] + 1
        h = c = h_err = c_err = np.zeros((x.shape[1], cell.units))
        out = []
        for t in range(len(x)):
            keep = ~starts[t].astype(bool)[:, None]
            h, c, h_err, c_err = h * keep, c * keep, h_err * keep, c_err * keep
            z = features[t] @ w + h @ u_ + b
            z_err = f_err[t] @ np.abs(w) + h_err @ np.abs(u_) + gamma(n + 1) * (
                np.abs(features[t]) @ np.abs(w) + np.abs(h) @ np.abs(u_) + np.abs(b))
            (zi, zf, zg, zo), (ei, ef, eg, eo) = np.split(z, 4, axis=1), np.split(z_err, 4, axis=1)
            i, f, g, o = sigmoid(zi), sigmoid(zf), np.tanh(zg), sigmoid(zo)
            ei, ef, eg, eo = ei / 4 + r * i, ef / 4 + r * f, eg + r * np.abs(g), eo / 4 + r * o
            c_err = np.abs(c) * ef + f * c_err + np.abs(g) * ei + i * eg + 2 * U32 * (np.abs(f * c) + np.abs(i * g))
            c = f * c + i * g
            h = o * np.tanh(c)
            h_err = np.abs(np.tanh(c)) * eo + o * (c_err + r * np.abs(np.tanh(c))) + U32 * np.abs(h)
            out.append(2 * dense_error(output, np.abs(h), h_err)[1])
        gaps[which] = np.stack(out)
    gaps["value"] = gaps["value"][..., 0]
    return gaps


# --------------------------------------------------------------------------
# The models, their inputs, the Keras model's outputs and the derived gaps
# --------------------------------------------------------------------------
def randomized(model, seed, scale=1.0):
    """O(scale) policy outputs instead of the near-uniform initial policy: argmaxes are not near ties."""
    kernel = model.policy_output.kernel
    kernel.assign(np.random.default_rng(seed).normal(scale=scale, size=kernel.shape).astype(np.float32))
    return model


def plain_case(model, feeds, model_obs, features, mask=None):
    """The Keras model's outputs for one batch (``features``: the default MLP's input; ``None`` for the CNN), and
    ``many/``: its first row repeated MANY times, for ``sample``'s frequencies."""
    params = {k: v.numpy() for k, v in model.distribution_params(model_obs, action_mask=mask).items()}
    row = 0 if "mean" in params else int(np.argmax(entropy(model.head, params["logits"])))
    feeds = {**feeds, **{f"many/{k}": np.repeat(v[row:row + 1], MANY, axis=0) for k, v in feeds.items()}}
    if isinstance(model.action_space, spaces.Box):
        actions = np.clip(params["mean"], model.action_space.low, model.action_space.high)
    else:
        actions = model(model_obs, action_mask=mask).numpy()
    gap = cnn_gaps(model, model_obs) if features is None else mlp_gap(model, features)
    return {"feeds": feeds, "params": params, "actions": actions, "values": model.value(model_obs).numpy(), "gap": gap,
            "many_row": row}


def component_bounds(head):
    """The flat logits' component boundaries: ``[0, n]`` for a Categorical, the cumulative ``nvec`` otherwise."""
    return np.cumsum([0, *getattr(head, "nvec", [head.num_outputs])])


def entropy(head, logits):
    """``[N]``: the policy's entropy per row (masked logits have probability 0)."""
    logits = np.asarray(logits, np.float64)
    if isinstance(head, BernoulliHead):
        p = 1 / (1 + np.exp(-logits))
        return -np.sum(p * np.log(p) + (1 - p) * np.log(1 - p), axis=1)
    total = 0
    for lo, hi in zip(component_bounds(head)[:-1], component_bounds(head)[1:]):
        shifted = logits[:, lo:hi] - logits[:, lo:hi].max(axis=1, keepdims=True)
        p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        total = total - np.sum(p * np.where(p > 0, np.log(np.maximum(p, 1e-300)), 0), axis=1)
    return total


def cartpole(rng):
    model = randomized(keras_trpo.TRPO.for_env(gymnasium.make("CartPole-v1"), seed=0), 0)
    obs = rng.normal(size=(N, 4)).astype(np.float32)
    return model, plain_case(model, {"observations": obs}, obs, obs)


def hopper(rng):
    # Box(11) float64 observations as MuJoCo gives them; means up to ~2: some are clipped to [-1, 1].
    model = keras_trpo.TRPO(observation_space=spaces.Box(-np.inf, np.inf, (11,), np.float64),
                            action_space=spaces.Box(-1.0, 1.0, (3,), np.float32), normalize_observations=True, seed=0)
    model.normalizer.update(tf.constant(rng.normal(loc=1.0, scale=3.0, size=(256, 11)).astype(np.float32)))
    randomized(model, 1, scale=0.5)
    obs = rng.normal(loc=1.0, scale=3.0, size=(N, 11))
    return model, plain_case(model, {"observations": obs}, obs, obs)


def minigrid_cnn(rng):
    model = keras_trpo.TRPO(spaces.Box(0, 255, (7, 7, 3), np.uint8), spaces.Discrete(3),
                            policy_network="minigrid_cnn", value_network="minigrid_cnn", seed=0)
    randomized(model, 2)
    images = rng.integers(0, 11, size=(N, 7, 7, 3)).astype(np.uint8)  # MiniGrid's object/colour/state codes
    return model, plain_case(model, {"observations": images}, images, None)


def dict_model(rng):
    model = make_model(spaces.Discrete(3, start=1), normalize=False, observation_space=MIXED_SPACE, seed=3)
    obs = dict_observations(MIXED_SPACE, N, rng)
    return model, plain_case(model, obs, obs, mlp_input(MIXED_SPACE, obs))


def masked(rng):
    model, _ = masked_twin("multidiscrete")
    masks = random_masks(model.action_space, N, rng)
    obs = rng.normal(scale=2.0, size=(N, 4)).astype(np.float32)
    return model, plain_case(model, {"observations": obs, "action_mask": masks}, obs, obs, mask=masks)


def multibinary(rng):
    model = randomized(make_model(spaces.MultiBinary(3), normalize=False, seed=5), 6)
    obs = rng.normal(scale=2.0, size=(N, 4)).astype(np.float32)
    return model, plain_case(model, {"observations": obs}, obs, obs)


def recurrent_lstm(rng):
    model = keras_trpo.TRPO(
        spaces.Box(-5.0, 5.0, (3,), np.float32), spaces.Discrete(3), normalize_observations=True, seed=0,
        policy_network=networks.recurrent(networks.mlp((16,), seed=0), units=8, cell="lstm", seed=0),
        value_network=networks.recurrent(None, units=8, cell="lstm", seed=1))
    model.normalizer.update(tf.constant(rng.normal(scale=2.0, size=(256, 3)).astype(np.float32)))
    randomized(model, 4)
    obs = rng.normal(scale=2.0, size=(T, N, 3)).astype(np.float32)
    starts = np.zeros((T, N), np.int8)
    starts[0] = 1
    starts[5, ::3] = 1  # some rows' episodes restart mid-way: their state must be zeroed there
    state, actions, values, params = model.initial_state(N), [], [], []
    for t in range(T):
        p, v, _ = model.step(tf.constant(obs[t]), state, tf.constant(starts[t].astype(bool)))
        a, state = model(obs[t], state=state, episode_starts=starts[t].astype(bool))
        actions.append(np.asarray(a)), values.append(v.numpy()), params.append(p["logits"].numpy())
    return model, {"feeds": {"observations": obs, "episode_start": starts}, "actions": np.stack(actions),
                   "values": np.stack(values), "params": {"logits": np.stack(params)},
                   "gap": lstm_gap(model, obs, starts)}


CASES = {"cartpole": cartpole, "hopper": hopper, "minigrid_cnn": minigrid_cnn, "dict": dict_model, "masked": masked,
         "multibinary": multibinary, "recurrent_lstm": recurrent_lstm}


def savedmodel_signatures(model):
    """``{signature: {"inputs": [...], "outputs": [...]}}`` of the SavedModel export's functions, for the LiteRT ones."""
    module = export.ServingModule(model)
    names = [name for name in module.names if name != "log_prob"]  # TFP's Categorical log_prob is a Flex op
    functions = {name: getattr(module, name).get_concrete_function() for name in names}
    return {name: {"inputs": sorted(spec.name for spec in fn.structured_input_signature[0]),
                   "outputs": sorted(fn.structured_outputs)} for name, fn in functions.items()}


@pytest.fixture(scope="module")
def litert(tmp_path_factory):
    """Every case exported with ``model.export(..., format="litert")`` and run in one fresh process."""
    root, cases = tmp_path_factory.mktemp("litert"), {}
    for index, (name, build) in enumerate(CASES.items()):
        model, case = build(np.random.default_rng(index))
        path = model.export(str(root / f"{name}.tflite"), format="litert")
        assert path == str(root / f"{name}.tflite")
        np.savez(root / f"{name}.npz", **case["feeds"])
        case["feeds"] = {k: v for k, v in case["feeds"].items() if not k.startswith("many/")}
        cases[name] = {**case, "model": model, "size": os.path.getsize(path), "expected": savedmodel_signatures(model)}
    report = run_fresh_python(FRESH_PROCESS, root, json.dumps(list(CASES)))
    return {"cases": cases, "report": report, "outputs": dict(np.load(root / "outputs.npz"))}


def within(got, want, gap, what):
    """|got − want| ≤ the derived worst-case gap, and ≤ the issue's 1e-5 (see the module docstring)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    delta = np.abs(got.astype(np.float64) - want)
    assert np.all(delta <= np.minimum(gap, ISSUE_BOUND)), f"{what}: off by {delta.max():.2e} (gap {np.max(gap):.2e})"


def test_every_file_has_builtin_ops_only_and_runs_without_keras_trpo_or_tensorflow(litert):
    """Catches: a Select-TF (Flex) or custom op in the file, e.g. ``SELECT_TF_OPS`` allowed in the converter and
    ``sample`` (tf.random.stateless_categorical) converted with it: the device's interpreter could not run it."""
    report = litert["report"]
    assert report["forbidden_modules"] == [] and report["tensorflow_imported"] is False
    for name in CASES:
        operators = report[name]["operators"]
        assert operators and not [op for op in operators if op.startswith("CUSTOM")], (name, operators)


@pytest.mark.parametrize("name", list(CASES))
def test_signatures_have_the_savedmodels_input_and_output_names(litert, name):
    """Catches: signatures renamed or lost in conversion (``serving_0``-style names, a missing ``get_initial_state``,
    a state output dropped), so a client of the SavedModel could not send the same request body."""
    got = {s: {k: sorted(v) for k, v in io.items()} for s, io in litert["report"][name]["signatures"].items()}
    assert got == litert["cases"][name]["expected"]


@pytest.mark.parametrize("name", list(CASES))
def test_litert_outputs_equal_the_keras_model(litert, name):
    """Catches: a ``.tflite`` that computes another function than the model: the normalizer's statistics not baked
    in (hopper, recurrent), the mask ignored (masked: illegal actions chosen), the Dict entries reordered, the
    state not carried from step to step (recurrent), or weights quantized (``Optimize.DEFAULT``: off by ~1e-3)."""
    case, outputs = litert["cases"][name], litert["outputs"]
    assert "error" not in litert["report"][name], litert["report"][name]["error"]
    gap = case["gap"]
    for key, want in case["params"].items():
        bound = np.zeros_like(want) if key == "log_std" else gap["policy"].reshape(want.shape)  # a weight, copied
        within(outputs[f"{name}/distribution_params/{key}"], want, bound, f"{name} {key}")
    within(outputs[f"{name}/value/values"], case["values"], gap["value"], f"{name} values")
    actions = outputs[f"{name}/serving_default/actions"]
    if isinstance(case["model"].action_space, spaces.Box):  # clipping is 1-Lipschitz: the mean's gap holds
        within(actions, case["actions"], gap["policy"].reshape(actions.shape), f"{name} actions")
        assert np.any(np.abs(case["params"]["mean"]) > 1) and np.all(np.abs(actions) <= 1)  # some were clipped
    else:
        np.testing.assert_array_equal(actions, case["actions"])
        assert len(np.unique(actions)) > 1, "one action for every row: a weak comparison"
    if name == "masked":
        mask = case["feeds"]["action_mask"].astype(bool)
        assert np.all(outputs["masked/distribution_params/logits"][~mask] == -1e9)
    if name == "recurrent_lstm":  # not vacuous: the state matters, and rows restart with a non-zero state
        obs, starts = case["feeds"]["observations"], case["feeds"]["episode_start"].astype(bool)
        from_zero = case["model"].distribution_params(obs[6])["logits"].numpy()
        assert np.abs(from_zero - case["params"]["logits"][6]).max() > 1e-2 and starts[5].any() and not starts[5].all()


# --------------------------------------------------------------------------
# sample: builtin ops, a function of the seed, the policy's distribution, the model's log-probabilities
# --------------------------------------------------------------------------
def log_prob_bound(case, actions):
    """``[rows]``: how far the ``.tflite``'s log-probabilities of ``actions`` may be from the Keras model's.

    tests/numerics.py's ``log_prob_gap`` rules on this case's policy gap δ: a Categorical component moves by at
    most 2 max δ (``l_a − logsumexp(l)``), a Gaussian by Σ|z| δ/σ; plus each evaluation's rounding on the terms'
    magnitude (masked logits excluded: their exp(−1e9) is 0 in both).
    """
    params = {k: np.asarray(v, np.float64).reshape(len(actions), -1) for k, v in case["params"].items()}
    delta = case["gap"]["policy"].reshape(len(actions), -1)
    head = case["model"].head
    if "mean" in params:
        sigma = np.exp(params["log_std"])
        z = (np.asarray(actions, np.float64).reshape(len(actions), -1) - params["mean"]) / sigma
        first, magnitude = np.sum(np.abs(z) * delta / sigma, axis=1), np.sum(z**2 / 2 + np.abs(params["log_std"]) + 1, 1)
    elif isinstance(head, BernoulliHead):  # Σ_k a_k l_k − softplus(l_k): both slopes within [0, 1]
        first, magnitude = delta.sum(axis=1), np.sum(np.abs(params["logits"]) + 1, axis=1)
    else:
        bounds = component_bounds(head)
        first = sum(2 * delta[:, lo:hi].max(axis=1) for lo, hi in zip(bounds[:-1], bounds[1:]))
        legal = np.where(np.abs(params["logits"]) < 1e8, np.abs(params["logits"]), 0.0)
        magnitude = legal.sum(axis=1) + np.log(params["logits"].shape[1]) + 1
    return first + 2 * (ELEMENTWISE_UNITS * U32 + gamma(params[next(iter(params))].shape[1])) * magnitude


def keras_log_probs(model, params, actions):
    """The Keras model's head (TFP) log-probabilities of ``actions`` under ``params``."""
    tensors = {k: tf.constant(v) for k, v in params.items()}
    return model.head.distribution(tensors).log_prob(model.head.cast_actions(tf.constant(actions))).numpy()


def test_sample_is_a_function_of_the_seed_alone(litert):
    """Catches: ``seed`` ignored (a fixed stream: seeds [1, 2] and [3, 4] give the same actions) or a stateful
    generator (two calls with [1, 2] differ), for every model."""
    outputs = litert["outputs"]
    for name in CASES:
        if name == "recurrent_lstm":
            continue  # stepped with seeds [t, 1]: its draws are checked below
        a, b, c = (outputs[f"{name}/sample_{tag}/actions"] for tag in "abc")
        np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_array_equal(outputs[f"{name}/sample_a/log_probs"], outputs[f"{name}/sample_b/log_probs"])
        assert not np.array_equal(a, c), name


@pytest.mark.parametrize("name", list(CASES))
def test_sample_log_probs_are_the_keras_models_for_the_drawn_actions(litert, name):
    """Catches: ``log_probs`` of another action than the one returned (e.g. gathered at the argmax of the
    noiseless logits), against TFP's log_prob in the Keras model; Box rows that were not clipped only."""
    case, outputs = litert["cases"][name], litert["outputs"]
    key = "sample" if name == "recurrent_lstm" else "sample_a"
    actions, log_probs = outputs[f"{name}/{key}/actions"], outputs[f"{name}/{key}/log_probs"]
    params = {k: v.reshape(-1, *v.shape[2:]) if name == "recurrent_lstm" else v for k, v in case["params"].items()}
    flat = {"actions": actions.reshape(len(params[next(iter(params))]), *actions.shape[1 + (name == "recurrent_lstm"):]),
            "log_probs": log_probs.reshape(-1)}
    keep = np.ones(len(flat["log_probs"]), bool)
    if isinstance(case["model"].action_space, spaces.Box):  # a clipped action is not the draw: unclipped rows only
        keep = np.all(np.abs(flat["actions"]) < 1, axis=1)
        assert keep.sum() >= 3, "every row clipped: the comparison would be empty"
    want = keras_log_probs(case["model"], {k: v[keep] for k, v in params.items()}, flat["actions"][keep])
    bound = log_prob_bound({**case, "params": {k: v[keep] for k, v in params.items()},
                            "gap": {"policy": case["gap"]["policy"].reshape(len(keep), -1)[keep]}}, flat["actions"][keep])
    within(flat["log_probs"][keep], want, bound, f"{name} sample log_probs")


def binomial_check(count, total, p, what):
    assert abs(count / total - p) <= SIGMAS * math.sqrt(p * (1 - p) / total) + 1 / total, (what, count / total, p)


@pytest.mark.parametrize("name", [n for n in CASES if n != "recurrent_lstm"])
def test_sample_follows_the_policy_distribution(litert, name):
    """Catches: a biased draw: Gumbel noise of the wrong sign or scale (frequencies off the softmax), a mask
    ignored by ``sample`` (an illegal action drawn), Box noise of the wrong scale, or Box ``log_probs`` of the
    clipped action instead of the draw (clip rates or Σz² off)."""
    case, outputs = litert["cases"][name], litert["outputs"]
    model, actions = case["model"], outputs[f"{name}/sample_many/actions"]
    params = {k: np.asarray(v[case["many_row"]], np.float64) for k, v in case["params"].items()}
    if "mean" in params:
        sigma, space = np.exp(params["log_std"]), model.action_space
        for d, (mu, s) in enumerate(zip(params["mean"], sigma)):
            below = 0.5 * (1 + math.erf((space.low[d] - mu) / (s * math.sqrt(2))))
            above = 0.5 * (1 - math.erf((space.high[d] - mu) / (s * math.sqrt(2))))
            binomial_check(np.sum(actions[:, d] <= space.low[d]), MANY, below, f"{name} dim {d} at low")
            binomial_check(np.sum(actions[:, d] >= space.high[d]), MANY, above, f"{name} dim {d} at high")
        # log_probs of the unclipped draws give Σ z², a χ² with d degrees of freedom: mean d, variance 2d.
        dims = len(sigma)
        chi2 = -2 * (outputs[f"{name}/sample_many/log_probs"] + np.sum(params["log_std"]) + dims / 2 * np.log(2 * np.pi))
        assert abs(chi2.mean() - dims) <= SIGMAS * math.sqrt(2 * dims / MANY), chi2.mean()
        return
    logits, head = params["logits"].reshape(-1), model.head
    if isinstance(head, BernoulliHead):
        for k, p in enumerate(1 / (1 + np.exp(-logits))):
            binomial_check(np.sum(actions.reshape(MANY, -1)[:, k] == 1), MANY, p, f"{name} bit {k}")
        return
    bounds = component_bounds(head)
    columns = actions.reshape(MANY, -1) - np.atleast_1d(head.start)
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        p = np.exp(logits[lo:hi] - logits[lo:hi].max())
        p /= p.sum()
        assert np.all(p[columns[:, k]] > 0), f"{name}: an illegal action was drawn"
        for a in range(hi - lo):
            binomial_check(np.sum(columns[:, k] == a), MANY, p[a], f"{name} component {k} action {a}")


def test_uniform_stays_inside_the_open_interval_and_collides_only_by_chance():
    """Catches: U from 24 hash bits: ``(k + 0.5) / 2^24`` rounds in float32 for k ≥ 2^23 (twice the collisions in
    [0.5, 1), and U = 1 for the largest k: a Gumbel of +inf, that action drawn whatever its probability)."""
    n, cells = 1 << 20, 2**23  # 23 bits: the resolution at which (k + 0.5) / 2^23 is exact in float32
    u = export_litert.uniform(tf.constant([n]), tf.constant([1, 2], tf.int32)).numpy()
    assert u.dtype == np.float32 and 0 < u.min() and u.max() < 1
    # n independent draws from `cells` equally likely values leave cells·(1 − 1/cells)^n of them unused, so
    # E[collisions] = n − cells·(1 − (1 − 1/cells)^n) ≈ 62,889; their variance is below their mean (occupancy).
    expected = n - cells * -math.expm1(n * math.log1p(-1 / cells))
    collisions = n - len(np.unique(u))
    assert abs(collisions - expected) <= SIGMAS * math.sqrt(expected), (collisions, expected)
    assert abs(u.mean() - 0.5) <= SIGMAS * math.sqrt(1 / 12 / n)


def test_recurrent_sample_returns_the_same_next_state_as_serving_default(litert):
    """Catches: ``sample`` of a recurrent model returning the input state (a client carrying it would freeze)."""
    outputs = litert["outputs"]
    for key in ("policy_h", "policy_c", "value_h", "value_c"):
        np.testing.assert_array_equal(outputs[f"recurrent_lstm/sample/{key}"],
                                      outputs[f"recurrent_lstm/serving_default/{key}"], err_msg=key)


# --------------------------------------------------------------------------
# Paths and errors: one line each, before any conversion
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    return make_model(spaces.Discrete(2), normalize=False)


def test_existing_file_is_kept_unless_overwrite_and_no_temporary_file_remains(small, tmp_path):
    """Catches: an existing ``.tflite`` silently replaced (or a temporary file left next to it)."""
    target = tmp_path / "sub" / "policy.tflite"
    assert small.export(target, format="tflite") == str(target)  # the alias; the missing directory is created
    first = target.read_bytes()
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        small.export(target, format="litert")
    assert target.read_bytes() == b"keep me"
    assert small.export(target, format="litert", overwrite=True) == str(target)
    assert target.read_bytes() == first and os.listdir(target.parent) == ["policy.tflite"]


BAD_PATHS = {  # argument: (error, what the one line says)
    "directory": ("{tmp}/out", ValueError, r"filepath must name a \.tflite file for format='litert'; got"),
    "other suffix": ("{tmp}/policy.onnx", ValueError, r"must name a \.tflite file"),
    "not a path": (3, TypeError, r"filepath must be a str or os.PathLike path ending in '\.tflite'; got int"),
}


@pytest.mark.parametrize("name", list(BAD_PATHS))
def test_bad_paths_and_arguments_are_one_line_errors(small, tmp_path, name):
    """Catches: a path without ``.tflite`` written anyway (a directory or ``.onnx`` file holding a flatbuffer)."""
    path, error, message = BAD_PATHS[name]
    path = path.format(tmp=tmp_path) if isinstance(path, str) else path
    with pytest.raises(error, match=message) as raised:
        small.export(path, format="litert")
    assert "\n" not in str(raised.value) and os.listdir(tmp_path) == []


def test_unknown_arguments_and_non_models_are_refused(small, tmp_path):
    """Catches: keyword arguments silently ignored (``quantize=True`` would not quantize)."""
    with pytest.raises(TypeError, match=r"unexpected arguments \['quantize'\]"):
        export_litert.export_litert(small, tmp_path / "p.tflite", quantize=True)
    with pytest.raises(TypeError, match="model must be a keras_trpo.TRPO; got str"):
        export_litert.export_litert("model", tmp_path / "p.tflite")
    assert os.listdir(tmp_path) == []


class Erf(keras.layers.Layer):
    """tf.math.erf: a TensorFlow op with no LiteRT builtin (only a Select-TF kernel)."""

    def call(self, x):
        return tf.math.erf(x)


def test_an_op_without_a_builtin_fails_in_one_line_naming_it(tmp_path):
    """Catches: Select-TF ops allowed (the file would need the Flex delegate on the device), or the converter's
    page-long MLIR diagnostic passed on instead of the op's name."""
    model = keras_trpo.TRPO(spaces.Box(-1.0, 1.0, (4,), np.float32), spaces.Discrete(2), seed=0,
                            policy_network=keras.Sequential([keras.layers.Dense(8), Erf()]))
    with pytest.raises(ValueError, match=r"needs TensorFlow ops that are not builtins: tf\.Erf\. ") as raised:
        model.export(tmp_path / "erf.tflite", format="litert")
    assert "\n" not in str(raised.value) and os.listdir(tmp_path) == []
