"""End-to-end learning through model.fit on real gymnasium environments."""

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cartpole_learns_to_balance_within_100k_steps(capsys):
    # The README's first command, with its defaults: 97 iterations x 1024 steps, seed 0.
    mean_return = load_example("cartpole").main(["--seed", "0"])
    output = capsys.readouterr().out
    assert "iteration" in output and "Deterministic evaluation over 10 episodes" in output
    assert mean_return >= 475


@pytest.mark.slow
def test_pendulum_learns_to_swing_up_within_150k_steps():
    # examples/pendulum.py defaults: 146 iterations x 1024 steps on 2 envs, seed 0.
    assert load_example("pendulum").main(["--seed", "0"]) >= -250


@pytest.mark.parametrize("env_id", ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"])
def test_mujoco_presets_train_with_finite_metrics(env_id, tmp_path, monkeypatch):
    # A few thousand steps per MuJoCo preset: the loop runs and every logged metric is finite.
    import math

    from keras_trpo.presets import load_preset

    monkeypatch.chdir(tmp_path)  # MuJoCo writes MUJOCO_LOG.TXT into the working directory
    preset = load_preset(env_id).override({"rollouts.steps": 1024})
    env = preset.make_env()
    model = preset.build_model(env, seed=0)
    history = model.fit(preset.build_rollouts(env, model, seed=0), epochs=3, verbose=0).history
    env.close()
    assert history["env_steps"] == [1024.0, 2048.0, 3072.0]
    for key, values in history.items():
        if key not in ("episode_return", "episode_length"):  # NaN when no episode ended in a batch
            assert all(math.isfinite(v) for v in values), (key, values)
    assert sum(history["step_accepted"]) >= 2
    assert all(math.isfinite(float(w)) for v in model.policy_variables for w in v.numpy().ravel())


def test_mujoco_example_runs_as_a_script(tmp_path):
    # examples/mujoco.py shares the simulator's module name; as a script it must still import it.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "mujoco.py"), "Hopper-v5", "--steps", "2048", "--eval-episodes", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Deterministic evaluation over 1 episodes" in result.stdout
