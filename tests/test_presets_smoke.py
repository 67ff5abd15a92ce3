"""Every shipped preset builds its env, model and rollouts and runs 2 TRPO iterations (smoke test).

Small batches (8 steps per sub-env) keep it cheap; the settings that decide learning (networks,
max_kl in the units of each env's action dimensions, normalization, critic epochs) are the preset's
own. MuJoCo and Box2D are installed by the test extra, so none of these is skipped in CI. The MiniGrid
and Pong presets run 2 iterations through ``keras-trpo train`` in tests/test_cli.py instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_trpo import presets


@pytest.mark.parametrize("name", [n for n in presets.preset_names() if not n.startswith(("MiniGrid", "Pong"))])
def test_every_preset_runs_two_iterations(name, tmp_path, monkeypatch):
    """Bug caught: a preset whose env id, wrapper, network or model argument no longer builds or trains."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT in the working directory
    preset = presets.load_preset(name)
    env_id = preset.env_id or "CartPole-v1"  # `default` is not tied to an env
    preset = preset.override({"rollouts.steps": 8 * preset.num_envs, "model.value_batch_size": 8})
    env = preset.make_env(env_id)
    try:
        model = preset.build_model(env, seed=0)
        rollouts = preset.build_rollouts(env, model, seed=0)
        history = model.fit(rollouts, epochs=2, verbose=0).history
    finally:
        env.close()
    assert model.policy_version == 2 and rollouts.env_steps == 16 * preset.num_envs
    assert all(math.isfinite(v) for v in history["kl"]) and all(np.isfinite(w.numpy()).all() for w in model.weights)

