"""Helper for tests/test_distribute.py, run in a fresh process (logical devices are fixed at TF start).

    python tests/distributed_update.py {discrete|box|dict|masked|recurrent} OUT.json [fit]

Makes 2 logical CPU devices, then compares one TRPO update on a fixed batch under
``MirroredStrategy`` (the batch split over the 2 replicas) with the same update on one
device, both computed in float64 (``keras.config.set_floatx("float64")``), and checks that a
batch that does not split over the replicas is refused. With ``fit`` it also runs a short on-policy
``fit`` on real CartPole rollouts under the strategy, in float32 as users train, and exports the
model (the same whatever the kind: test_distribute asks for it once). Writes the relative
differences of the two updates and the fit's results as JSON.
"""

import json
import sys

import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

import keras_trpo  # noqa: E402
from helpers import Batches, cartpole_env, tiny_trpo  # noqa: E402 (tests/ is sys.path[0] for a script)

OBS = spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACTIONS = {"discrete": spaces.Discrete(3), "box": spaces.Box(-1.0, 1.0, (2,), np.float32), "dict": spaces.Discrete(3),
           "masked": spaces.Discrete(3), "recurrent": spaces.Discrete(3)}
LENGTH = 8  # "recurrent": LSTM towers, 32 sequences of 8 rows (16 per replica), episode starts and padding inside
# "dict": a uint8 image and a float vector through a named CNN (keras_trpo.networks.Combined), seeded by the model.
DICT_OBS = spaces.Dict({"image": spaces.Box(0, 9, (7, 7, 3), np.uint8), "vector": OBS})


def build(action_space, kind):
    # Full-batch critic (value_batch_size >= N): minibatches then contain the same samples on
    # one device and over two replicas; observation and advantage normalization on.
    networks = (
        {"policy_network": "minigrid_cnn", "value_network": "minigrid_cnn"} if kind == "dict"
        else {"policy_network": keras_trpo.networks.recurrent(None, units=8, seed=0),
              "value_network": keras_trpo.networks.recurrent(None, units=8, seed=1), "sequence_length": LENGTH}
        if kind == "recurrent" else {"hidden_units": (16,), "value_hidden_units": (16,)}
    )
    model = keras_trpo.TRPO(
        DICT_OBS if kind == "dict" else OBS, action_space, **networks, value_epochs=5,
        value_batch_size=4096, normalize_observations=True, seed=0, action_mask=kind == "masked",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def relative_difference(a, b, start):
    """``‖a − b‖ / ‖a − start‖`` over lists of arrays: the two updates' gap relative to the update's size."""
    a, b, start = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in xs]) for xs in (a, b, start))
    return float(np.linalg.norm(a - b) / np.linalg.norm(a - start))


def compare_in_float64(kind, strategy):
    """One update on a fixed batch, on one device and over 2 replicas, both in float64."""
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        return compare(kind, strategy)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")


def compare(kind, strategy):
    rng = np.random.default_rng(0)
    n = 256
    action_space = ACTIONS[kind]
    action_space.seed(0)
    observations = rng.normal(size=(n, 5)).astype(np.float32) * 3 + 1
    batch = {
        "observations": observations if kind != "dict" else {
            "image": rng.integers(0, 10, (n, 7, 7, 3)).astype(np.uint8), "vector": observations},
        "actions": np.stack([action_space.sample() for _ in range(n)]),
        "advantages": rng.normal(size=n).astype(np.float32),
        "returns": (observations.sum(axis=1) + rng.normal(size=n)).astype(np.float32),
    }
    if kind == "masked":  # random legal sets (never empty) and actions legal under them (issue 28)
        batch["action_masks"], batch["actions"] = random_masks_and_actions(action_space.n, rng, n)
    if kind == "recurrent":
        batch.update(recurrent_entries(rng, n))
    single = build(action_space, kind)
    single_history = single.fit(Batches([batch]), epochs=1, verbose=0).history
    with strategy.scope():
        mirrored = build(action_space, kind)
    mirrored_history = mirrored.fit(Batches([batch]), epochs=1, verbose=0).history
    start = build(action_space, kind)
    groups = {  # the policy's parameters, the critic's (with its optimizer's state), the normalizer's statistics
        "policy": lambda m: m.policy_variables,
        "critic": lambda m: [*m.value_variables, *m.optimizer.variables],
        "normalizer": lambda m: m.normalizer.weights,
    }
    relative = {
        name: relative_difference(*([v.numpy() for v in get(m)] for m in (single, mirrored, start)))
        for name, get in groups.items()
    }
    return {
        "dtypes": sorted({w.dtype for w in mirrored.weights if "float" in w.dtype}),
        "relative": relative,
        "single_history": single_history,
        "mirrored_history": mirrored_history,
    }, batch, mirrored


def recurrent_entries(rng, n):
    """Stored states, episode starts, and padding that differs between the replicas' halves (issue 29): the first
    half's sequences end in 3 padded rows, the second half's in 1, so each replica's mean needs the pooled Σ w."""
    steps = np.arange(n) % LENGTH
    padding = np.where(np.arange(n) < n // 2, steps >= LENGTH - 3, steps >= LENGTH - 1)
    states = {f"{tower}_{part}": rng.normal(0, 0.5, (n, 8)).astype(np.float32)
              for tower in ("policy", "value") for part in ("h", "c")}
    return {"episode_starts": rng.random(n) < 0.1, "sequence_mask": ~padding, **states}


def random_masks_and_actions(size, rng, n):
    """Bool ``[n, size]`` masks with at least one legal action per row, and one legal action per row."""
    masks = rng.random((n, size)) < 0.5
    masks[np.arange(n), rng.integers(0, size, n)] = True
    return masks, np.array([rng.choice(np.flatnonzero(row)) for row in masks])


def main(kind, out, fit=False):
    # One strategy for both parts: a second MirroredStrategy would reuse the first one's collective
    # instance keys with another dtype (float32 after float64), which TensorFlow aborts.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    comparison, batch, mirrored = compare_in_float64(kind, strategy)
    result = {"replicas": strategy.num_replicas_in_sync, **comparison}
    if fit:
        result.update(fit_and_export(strategy, out))
    # A batch that does not split evenly over the replicas is refused before any collection or compute.
    odd = tf.nest.map_structure(lambda value: value[:255], batch)
    try:
        mirrored.fit(Batches([odd]), epochs=1, verbose=0)
        result["uneven_error"] = None
    except ValueError as error:
        result["uneven_error"] = str(error)
    with open(out, "w") as f:
        json.dump(result, f)


def fit_and_export(strategy, out):
    """A real on-policy fit under the strategy (Rollouts' batches split over the replicas), then an export."""
    env = cartpole_env(4)
    with strategy.scope():
        model = tiny_trpo(env, 16)
    rollouts = keras_trpo.Rollouts(env, model, steps=256, seed=0)
    history = model.fit(rollouts, epochs=3, verbose=0).history

    # The strategy-trained model exports an ordinary SavedModel.
    exported = tf.saved_model.load(model.export(out + ".savedmodel"))
    probe = np.random.default_rng(1).normal(size=(16, 4)).astype(np.float32)
    served = exported.signatures["serving_default"](observations=tf.constant(probe))["actions"].numpy()
    export_matches = bool(np.array_equal(served, model(probe).numpy()))
    replica_weights_equal = all(
        all(np.array_equal(component.numpy(), w.value.values[0].numpy()) for component in w.value.values)
        for w in model.weights
    )
    return {
        "fit_history": history,
        "collected": rollouts.env_steps,
        "policy_version": model.policy_version,
        "replica_weights_equal": replica_weights_equal,
        "export_matches": export_matches,
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], fit=sys.argv[3:] == ["fit"])
