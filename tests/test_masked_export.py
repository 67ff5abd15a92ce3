"""Export of masked models (issue 28): every signature takes ``action_mask`` and masks as the model does.

Four masked models (Discrete and MultiDiscrete on a Box, a Dict model whose env's ``action_mask`` entry the
networks do not see, and one that observes it: that observation input is the mask) are exported and run in
one fresh Python process that must not import keras_trpo or tensorflow_probability (tests/test_export.py's
import hook), through ``tf.saved_model.load`` and through the TF Serving path: ``tf.compat.v1.Session`` +
``tf.compat.v1.saved_model.loader.load``, feeding and fetching the tensor names of the SignatureDefs.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo import masking
from keras_trpo.export import SIGNATURE_NAMES
from numerics import log_prob_gap, mlp_gap
from test_export import OBS_SPACE, make_model, mlp_input, run_fresh_python

N = 64
SEEDS = 100  # sample: N rows x SEEDS seeds per model and path
TARGET = spaces.MultiBinary(7)
#: The observation space of /work/s28's masked env (tests/test_masked_evaluation.py): a target and its mask.
MASKED_DICT = spaces.Dict({"target": TARGET, "action_mask": spaces.MultiBinary(7)})
MODELS = {  # name: (the env's observation space, action space, observe_action_mask, normalize_observations)
    "discrete": (OBS_SPACE, spaces.Discrete(5, start=1), False, True),
    "multidiscrete": (OBS_SPACE, spaces.MultiDiscrete([2, 3, 4], start=[0, 1, -1]), False, True),
    "dict": (MASKED_DICT, spaces.MultiDiscrete([3, 4]), False, False),
    "observed": (MASKED_DICT, spaces.MultiDiscrete([3, 4]), True, False),
}
PATHS = ("load", "session")

#: A fresh process's two ways to call a SavedModel's signatures (also tests/test_export_warmup.py's):
#: ``run(signature name, {input name: array}) -> {output name: array}``, and each signature's input dtypes.
RUNNERS = """
    import json, sys
    import numpy as np
    import tensorflow as tf

    def load_runner(path):
        signatures = tf.saved_model.load(path).signatures
        def run(name, feeds):
            out = signatures[name](**{key: tf.constant(value) for key, value in feeds.items()})
            return {key: value.numpy() for key, value in out.items()}
        return run, {name: {key: spec.dtype.name for key, spec in fn.structured_input_signature[1].items()}
                     for name, fn in signatures.items()}, signatures

    def session_runner(path, graph, session):
        # What TF Serving does: the TF1 loader, then the tensor names listed in each SignatureDef.
        defs = tf.compat.v1.saved_model.loader.load(session, ["serve"], path).signature_def
        def run(name, feeds):
            signature = defs[name]
            fetches = {key: info.name for key, info in signature.outputs.items()}
            return session.run(fetches, {signature.inputs[key].name: value for key, value in feeds.items()})
        return run, {name: {key: tf.dtypes.as_dtype(info.dtype).name for key, info in d.inputs.items()}
                     for name, d in defs.items() if name != "__saved_model_init_op"}
"""

FRESH_PROCESS = RUNNERS + """
    def run_all(run, feeds, results, prefix):
        base = {key: feeds[key] for key in json.loads(str(feeds["input_names"]))}
        results[f"{prefix}/serving_default"] = run("serving_default", base)["actions"]
        samples = [run("sample", {**base, "seed": np.array([seed, 7], np.int32)}) for seed in range(int(feeds["seeds"]))]
        results[f"{prefix}/sample/actions"] = np.stack([s["actions"] for s in samples])
        results[f"{prefix}/sample/log_probs"] = np.stack([s["log_probs"] for s in samples])
        for kind in ("legal", "illegal"):
            out = run("log_prob", {**base, "actions": feeds[f"{kind}_actions"]})
            results[f"{prefix}/log_prob/{kind}"] = out["log_probs"]
        results[f"{prefix}/value"] = run("value", base)["values"]
        results[f"{prefix}/value_all_legal"] = run("value", {**base, "action_mask": np.ones_like(feeds["action_mask"])})["values"]
        results[f"{prefix}/logits"] = run("distribution_params", base)["logits"]

    root, names = sys.argv[1], json.loads(sys.argv[2])
    results, report = {}, {}
    for name in names:
        feeds = dict(np.load(f"{root}/{name}.npz"))
        run, inputs, keep = load_runner(f"{root}/{name}/1")
        run_all(run, feeds, results, f"{name}/load")
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            run, session_inputs = session_runner(f"{root}/{name}/1", graph, session)
            run_all(run, feeds, results, f"{name}/session")
        report[name] = {"load": inputs, "session": session_inputs}
    np.savez(f"{root}/outputs.npz", **results)
    report["forbidden_modules"] = forbidden_modules()
    print(json.dumps(report))
"""


def random_masks(space, n, rng):
    """int8 ``[n, mask size]``: per component about half the values legal, at least one legal, and in the first
    component at least one illegal (every row then has an illegal action to ask log_prob about)."""
    nvec = [space.n] if isinstance(space, spaces.Discrete) else list(space.nvec)
    parts = []
    for k, size in enumerate(nvec):
        part = rng.random((n, size)) < 0.5
        part[np.arange(n), rng.integers(0, size, n)] = True
        if k == 0:
            full = part.all(axis=1)
            part[full, rng.integers(0, size, n)[full]] = False
            part[np.arange(n), part.argmax(axis=1)] = True  # still one legal (the first, unchanged or not)
        parts.append(part)
    return np.concatenate(parts, axis=1).astype(np.int8)


def legal_and_illegal_actions(space, masks, rng):
    """``(a legal action per row, an action per row whose first component is illegal)``, int32, with ``start``."""
    nvec = [space.n] if isinstance(space, spaces.Discrete) else list(space.nvec)
    start = np.atleast_1d(space.start)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    legal, illegal = [], []
    for k, (size, offset) in enumerate(zip(nvec, offsets)):
        part = masks[:, offset:offset + size].astype(bool)
        pick = [rng.choice(np.flatnonzero(row)) for row in part]
        legal.append(pick)
        illegal.append([rng.choice(np.flatnonzero(~row)) for row in part] if k == 0 else pick)
    shape = (-1,) if isinstance(space, spaces.Discrete) else (len(masks), len(nvec))
    return tuple((np.stack(a, axis=-1) + start).reshape(shape).astype(np.int32) for a in (legal, illegal))


def observations(space, masks, rng):
    """A batch for the model: Box observations, or the Dict's target with ``masks`` as its ``action_mask``."""
    if isinstance(space, spaces.Dict):
        return {"target": rng.integers(0, 2, (len(masks), 7)).astype(np.int8), "action_mask": masks}
    return rng.normal(scale=2.0, size=(len(masks), 4)).astype(np.float32)


def masked_twin(name):
    """The masked model, with the O(1) weights of test_export.make_model (built unmasked, then copied)."""
    env_space, action_space, observe, normalize = MODELS[name]
    space = env_space if observe or not isinstance(env_space, spaces.Dict) else masking.without_mask(env_space)
    unmasked = make_model(action_space, normalize=normalize, observation_space=space, seed=len(name))
    model = keras_trpo.TRPO(space, action_space, hidden_units=(16,), value_hidden_units=(16,),
                            normalize_observations=normalize, seed=0, action_mask=True)
    model.set_weights(unmasked.get_weights())
    return model, unmasked


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root, models, data = tmp_path_factory.mktemp("masked_exports"), {}, {}
    for index, name in enumerate(MODELS):
        rng = np.random.default_rng(index)
        model, unmasked = masked_twin(name)
        masks = random_masks(model.action_space, N, rng)
        obs = observations(MODELS[name][0], masks, rng)
        legal, illegal = legal_and_illegal_actions(model.action_space, masks, rng)
        feeds = obs if isinstance(obs, dict) else {"observations": obs}
        if name == "dict":  # the model does not see the entry: it is sent as the mask input
            feeds = {"target": obs["target"]}
        feeds = {**feeds, "action_mask": masks}
        np.savez(root / f"{name}.npz", **feeds, legal_actions=legal, illegal_actions=illegal, seeds=SEEDS,
                 input_names=json.dumps(sorted(feeds)))
        model.export(root / name)
        models[name] = {"model": model, "unmasked": unmasked, "obs": obs, "masks": masks, "legal": legal,
                        "illegal": illegal, "features": mlp_input(model.observation_space, obs) if name in (
                            "dict", "observed") else None}
    data["report"] = run_fresh_python(FRESH_PROCESS, root, json.dumps(list(MODELS)))
    data["outputs"] = dict(np.load(root / "outputs.npz"))
    data["models"], data["root"] = models, root
    return data


def model_obs(case):
    """The observations as the model takes them (the Dict model without the entry it does not see)."""
    obs = case["obs"]
    return {"target": obs["target"]} if isinstance(obs, dict) and "action_mask" not in case[
        "model"].observation_spec.keys else obs


def test_every_signature_takes_the_mask_as_int8_and_keras_trpo_is_not_imported(exported):
    """Catches: a signature without the ``action_mask`` input (``value`` given the observation inputs only:
    a client's one request body would then fail there) and a mask input in another dtype (bool)."""
    report = exported["report"]
    assert report.pop("forbidden_modules") == []
    for name, paths in report.items():
        observation_names = sorted(exported["models"][name]["model"].observation_spec.keys)
        if observation_names == [None]:
            observation_names = ["observations"]
        for path, signatures in paths.items():
            assert sorted(signatures) == sorted(SIGNATURE_NAMES), (name, path)
            for signature, inputs in signatures.items():
                extra = {"sample": ["seed"], "log_prob": ["actions"]}.get(signature, [])
                assert sorted(inputs) == sorted({*observation_names, "action_mask", *extra}), (name, path, signature)
                assert inputs["action_mask"] == "int8", (name, path, signature)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(MODELS))
def test_serving_default_is_the_masked_models_action(exported, name, path):
    """Catches: serving_default built without the mask (``params(inputs)`` unmasked there): its actions are
    then the unmasked mode, illegal on some rows."""
    case, out = exported["models"][name], exported["outputs"]
    model, masks = case["model"], case["masks"]
    actions = out[f"{name}/{path}/serving_default"]
    expected = model(model_obs(case), action_mask=masks).numpy()
    np.testing.assert_array_equal(actions, expected)
    assert masking.legal(model.action_space, actions, masks).all()
    twin = case["unmasked"]  # its mode by hand: model(obs) of an unmasked model observing 'action_mask' is refused
    unmasked = twin.head.mode(twin.distribution_params(model_obs(case))).numpy()  # the mask matters: not vacuous
    assert not masking.legal(model.action_space, unmasked, masks).all()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(MODELS))
def test_sample_never_returns_an_illegal_action_and_its_log_probs_are_the_models(exported, name, path):
    """6,400 draws per model and path. Catches: sample drawing from the unmasked logits (about a third of the
    draws illegal here), and log_probs of the sample taken under another mask than the draw's."""
    case, out = exported["models"][name], exported["outputs"]
    model, masks = case["model"], case["masks"]
    draws, log_probs = out[f"{name}/{path}/sample/actions"], out[f"{name}/{path}/sample/log_probs"]
    assert draws.shape[:2] == (SEEDS, N)
    assert masking.legal(model.action_space, draws.reshape(SEEDS * N, -1), np.tile(masks, (SEEDS, 1))).all()
    assert len(np.unique(draws.reshape(SEEDS * N, -1), axis=0)) > 1
    obs = model_obs(case)
    for seed in (0, SEEDS - 1):
        expected = model.distribution(obs, masks).log_prob(model.head.cast_actions(draws[seed])).numpy()
        bound = log_prob_gap(case["unmasked"], obs, draws[seed], features=case["features"])
        assert np.all(np.abs(log_probs[seed] - expected) <= bound)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(MODELS))
def test_log_prob_is_the_models_for_legal_actions_and_hugely_negative_for_illegal_ones(exported, name, path):
    """Catches: log_prob evaluated on the unmasked distribution (an illegal action then gets an O(1)
    log-probability, and the legal ones lose the probability of the illegal actions)."""
    case, out = exported["models"][name], exported["outputs"]
    model, masks, obs = case["model"], case["masks"], model_obs(case)
    legal = out[f"{name}/{path}/log_prob/legal"]
    expected = model.distribution(obs, masks).log_prob(model.head.cast_actions(case["legal"])).numpy()
    bound = log_prob_gap(case["unmasked"], obs, case["legal"], features=case["features"])
    assert np.all(np.abs(legal - expected) <= bound)
    # An illegal logit is MASK_LOGIT = -1e9: its log-probability is MASK_LOGIT less a logsumexp of O(10).
    assert np.all(out[f"{name}/{path}/log_prob/illegal"] <= masking.MASK_LOGIT / 2)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", list(MODELS))
def test_value_ignores_the_mask_and_distribution_params_are_the_masked_logits(exported, name, path):
    """Catches: distribution_params returning the unmasked logits, and a value that reads the mask."""
    case, out = exported["models"][name], exported["outputs"]
    model, masks, obs = case["model"], case["masks"], model_obs(case)
    gap = mlp_gap(case["unmasked"], obs if case["features"] is None else case["features"])
    if "action_mask" not in model.observation_spec.keys:  # an observing model's value reads the entry, as trained
        np.testing.assert_array_equal(out[f"{name}/{path}/value"], out[f"{name}/{path}/value_all_legal"])
    assert np.all(np.abs(out[f"{name}/{path}/value"] - model.value(obs).numpy()) <= gap["value"])
    logits, expected = out[f"{name}/{path}/logits"], model.distribution_params(obs, masks)["logits"].numpy()
    legal = masks.astype(bool)
    assert np.all(logits[~legal] == np.float32(masking.MASK_LOGIT))
    assert np.all(np.abs(logits - expected)[legal] <= gap["policy"][legal])


def test_a_wrong_mask_width_is_a_clear_shape_error(exported):
    """Catches: the mask's ensure_shape dropped (a signature call does not check shapes: a [N, n + 1] mask would
    fail deep in the graph with a broadcasting error, or a [N, 1] one broadcast silently)."""
    loaded = tf.saved_model.load(str(exported["root"] / "discrete" / "1"))
    obs = tf.zeros([3, 4], tf.float32)
    for width in (1, 6):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"action_mask \[3,{width}\] is not compatible "
                                                                 r"with expected shape \[\?,5\]"):
            loaded.signatures["serving_default"](observations=obs, action_mask=tf.ones([3, width], tf.int8))


def test_an_observation_key_that_clashes_with_action_mask_ignoring_case_is_refused(tmp_path):
    """Catches: the clash check dropped: TensorFlow lowercases signature input names, so 'Action_Mask' and the
    mask input would collide inside TensorFlow's signature building."""
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    model = keras_trpo.TRPO(spaces.Dict({"Action_Mask": box, "x": box}), spaces.Discrete(3), hidden_units=(4,),
                            seed=0, action_mask=True)
    with pytest.raises(ValueError, match=r"^observation keys \['Action_Mask'\] clash, ignoring case .* 'action_mask'"):
        model.export(tmp_path / "policy")
    assert not (tmp_path / "policy").exists()
