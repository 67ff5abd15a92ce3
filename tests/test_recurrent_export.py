"""Export of recurrent models (issue 29): signatures take and return the state; a client carries it.

Two recurrent models (an LSTM policy on CartPole without velocities, Discrete; a GRU policy on Pendulum
without velocities, Box, with observation normalization) are exported, then stepped through whole episodes in a
fresh Python process that must not import keras_trpo (tests/test_export.py's import hook), carrying the state
each call returns, through ``tf.saved_model.load`` and through TF Serving's path (``tf.compat.v1.Session`` +
``saved_model.loader.load``, feeding and fetching the SignatureDefs' tensor names).

Bugs caught (each checked once by mutating the code): the next state not returned (a signature returning the
input state), ``episode_start`` ignored, the value tower's state not stepped in ``serving_default``.
"""

import json

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo
from keras_trpo import networks, wrappers  # noqa: F401  (wrappers registers the NoVel envs)
from keras_trpo.export import SIGNATURE_NAMES, START_KEY
from test_export import run_fresh_python

NUM_ENVS, STEPS = 3, 120

FRESH_PROCESS = """
    import json, sys
    import numpy as np
    import tensorflow as tf

    def episode(call, feeds, names, initial):
        state, actions, values = initial, [], []
        for t in range(feeds["observations"].shape[0]):
            inputs = {"observations": feeds["observations"][t], "episode_start": feeds["starts"][t], **state}
            out = call("serving_default", inputs)
            actions.append(out["actions"].tolist())
            values.append(call("value", inputs)["values"].tolist())
            state = {k: out[k] for k in names}
        return {"actions": actions, "values": values}

    root, names = sys.argv[1], json.loads(sys.argv[2])
    report = {}
    for name in names:
        feeds = dict(np.load(f"{root}/{name}.npz"))
        signatures = tf.saved_model.load(f"{root}/{name}/1").signatures
        load = lambda s, i: {k: v.numpy() for k, v in signatures[s](**{k: tf.constant(v) for k, v in i.items()}).items()}
        initial = {k: v.numpy() for k, v in signatures["get_initial_state"](batch_size=tf.constant(
            feeds["observations"].shape[1], tf.int32)).items()}
        state_names = sorted(initial)
        report[name] = {"load": episode(load, feeds, state_names, initial), "state_names": state_names,
                        "signatures": sorted(signatures)}
        with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
            defs = tf.compat.v1.saved_model.loader.load(session, ["serve"], f"{root}/{name}/1").signature_def
            def run(s, i):
                d = defs[s]
                return session.run({k: v.name for k, v in d.outputs.items()}, {d.inputs[k].name: v for k, v in i.items()})
            zeros = {k: np.zeros_like(v) for k, v in initial.items()}
            report[name]["session"] = episode(run, feeds, state_names, zeros)
            report[name]["inputs"] = {k: tf.dtypes.as_dtype(v.dtype).name for k, v in defs["sample"].inputs.items()}
    report["forbidden_modules"] = forbidden_modules()
    print(json.dumps(report))
"""

MODELS = {  # name: (env id, cell, normalize_observations)
    "cartpole_lstm": ("keras_trpo/CartPoleNoVel-v1", "lstm", False),
    "pendulum_gru": ("keras_trpo/PendulumNoVel-v1", "gru", True),
}


def build(env_id, cell, normalize):
    # Pendulum's episodes last 200 steps: shorter ones end and restart inside the STEPS played.
    env = gymnasium.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="sync", max_episode_steps=50)
    model = keras_trpo.TRPO.for_env(
        env, policy_network=networks.recurrent(networks.mlp((16,), seed=0), units=8, cell=cell, seed=0),
        value_network=networks.recurrent(None, units=8, cell=cell, seed=1), normalize_observations=normalize, seed=0,
        sequence_length=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(keras_trpo.Rollouts(env, model, steps=NUM_ENVS * 40, seed=0), epochs=2, verbose=0)
    return env, model


def play(env, model):
    """``STEPS`` steps of every sub-env with the model's deterministic actions, its state carried and reset at
    episode starts; the observations, flags, actions and values (from the model's own value tower)."""
    obs, _ = env.reset(seed=5)
    state, starts = model.initial_state(NUM_ENVS), np.ones(NUM_ENVS, bool)
    record = {"observations": [], "starts": [], "actions": [], "values": []}
    for _ in range(STEPS):
        params, values, _ = model.step(tf.constant(obs), state, tf.constant(starts))
        actions, state = model(obs, state=state, episode_starts=starts)
        for key, value in (("observations", obs), ("starts", starts), ("actions", actions), ("values", values)):
            record[key].append(np.asarray(value))
        obs, _, terminated, truncated, _ = env.step(np.asarray(actions))
        starts = terminated | truncated
    return {key: np.stack(value) for key, value in record.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("recurrent_export")
    expected = {}
    for name, (env_id, cell, normalize) in MODELS.items():
        env, model = build(env_id, cell, normalize)
        model.export(str(root / name))
        record = play(env, model)
        expected[name] = record
        np.savez(root / f"{name}.npz", observations=record["observations"],
                 starts=record["starts"].astype(np.int8))
    report = run_fresh_python(FRESH_PROCESS, root, json.dumps(list(MODELS)))
    return report, expected


def test_no_keras_trpo_in_the_serving_process_and_every_signature_takes_the_state(exported):
    report, _ = exported
    assert report["forbidden_modules"] == []
    for name in MODELS:
        assert report[name]["signatures"] == sorted([*SIGNATURE_NAMES, "get_initial_state"])
        inputs = report[name]["inputs"]
        assert inputs[START_KEY] == "int8" and all(inputs[k] == "float32" for k in report[name]["state_names"])


@pytest.mark.parametrize("path", ["load", "session"])
@pytest.mark.parametrize("name", list(MODELS))
def test_a_client_carrying_the_returned_state_acts_as_the_model(exported, name, path):
    report, expected = exported
    got = report[name][path]
    want = expected[name]
    assert want["starts"][1:].any()  # episodes ended and restarted during the episode run
    if name.startswith("cartpole"):
        np.testing.assert_array_equal(np.array(got["actions"]), want["actions"])
    else:
        # The same float32 graph ops, run by another executor: a few roundings of the outputs' scale per step,
        # carried through the state for STEPS steps (bounded by the tanh/sigmoid gates' contraction).
        np.testing.assert_allclose(np.array(got["actions"]), want["actions"], atol=STEPS * 32 * 1.2e-7 * 4)
    np.testing.assert_allclose(np.array(got["values"]), want["values"],
                               atol=STEPS * 32 * 1.2e-7 * (1 + np.abs(want["values"]).max()))
