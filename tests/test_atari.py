"""Atari smoke test: Pong through nature_cnn, uint8 frames end to end, served without keras_trpo.

``ALE/Pong-v5`` with gymnasium's ``AtariPreprocessing`` (84×84 grey, frame skip 4) and
``FrameStackObservation(4)``: observations uint8 ``[N, 4, 84, 84]`` (channels first). Two TRPO
iterations of 256 env steps on 2 sync envs with ``policy_network="nature_cnn"`` and
``value_network="nature_cnn"``, then export; ``serving_default`` is called in a fresh process
that never imports keras_trpo or tensorflow_probability.
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
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

import keras_trpo

ale_py = pytest.importorskip("ale_py", reason="the Atari smoke test needs ale-py (pip install -e '.[test]')")
gymnasium.register_envs(ale_py)

STEPS = 256

FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    serving_default = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    frames = np.load(sys.argv[2])
    actions = serving_default(observations=tf.constant(frames))["actions"]
    forbidden = sorted(m for m in sys.modules if m.split(".")[0] in ("keras_trpo", "tensorflow_probability"))
    print(json.dumps({"actions": actions.numpy().tolist(), "dtype": actions.dtype.name,
                      "input": {k: [s.dtype.name, s.shape.as_list()]
                                for k, s in serving_default.structured_input_signature[1].items()},
                      "forbidden": forbidden}))
    """
)


def make_env(num_envs=2):
    return gymnasium.make_vec(
        "ALE/Pong-v5", num_envs=num_envs, vectorization_mode="sync", frameskip=1,
        wrappers=[lambda e: AtariPreprocessing(e, frame_skip=4), lambda e: FrameStackObservation(e, 4)],
    )


def test_pong_nature_cnn_trains_exports_and_serves_without_keras_trpo(tmp_path):
    """Catches: Atari frames not reaching the CNN as uint8 [N, 4, 84, 84], or an export that cannot serve them."""
    keras.utils.set_random_seed(0)
    env = make_env()
    model = keras_trpo.TRPO.for_env(env, policy_network="nature_cnn", value_network="nature_cnn", seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=STEPS, seed=0)
    batch = rollouts[0]
    assert batch["observations"].dtype == np.uint8 and batch["observations"].shape == (STEPS, 4, 84, 84)
    history = model.fit(rollouts, epochs=2, verbose=0)
    env.close()
    assert model.policy_version == 2 and rollouts.env_steps == 2 * STEPS
    assert np.all(np.isfinite(history.history["loss"]))

    frames = batch["observations"][-1:]  # a real uint8 [1, 4, 84, 84] observation
    expected = model(frames).numpy()
    path = model.export(str(tmp_path / "pong"))
    np.save(tmp_path / "frames.npy", frames)
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, path, str(tmp_path / "frames.npy")],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["forbidden"] == []
    assert result["input"] == {"observations": ["uint8", [None, 4, 84, 84]]}
    assert result["dtype"] == "int32"
    (action,) = result["actions"]
    assert isinstance(action, int) and 0 <= action < env.single_action_space.n
    assert action == int(expected[0])
