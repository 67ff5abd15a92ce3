"""The keras-trpo console script, run as a subprocess on CartPole with a small budget; presets; plotting."""

import csv
import importlib.util
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_trpo
from keras_trpo import cli, plotting, presets
from keras_trpo.cli import common as cli_common


def keras_trpo_script() -> str:
    script = Path(sys.executable).with_name("keras-trpo")
    found = str(script) if script.exists() else shutil.which("keras-trpo")
    assert found, "the keras-trpo console script is not installed: pip install -e ."
    return found


def run_all(*commands, timeout=240):
    """Runs keras-trpo command lines concurrently; returns their CompletedProcess, in order.

    A process that loads TensorFlow spends ~3 s on it, so the tests start as few as they need.
    """
    script = keras_trpo_script()
    processes = [
        subprocess.Popen([script, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in commands
    ]
    results = []
    for argv, process in zip(commands, processes):
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess([script, *argv], process.returncode, out, err))
    return results


def run(*argv):
    (result,) = run_all(argv)
    return result


def own_stderr(result) -> list[str]:
    # TensorFlow's C++ start-up lines are kept off stderr (tests/test_cli_startup.py): every line is keras-trpo's.
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_ok(result):
    assert result.returncode == 0, f"{result.args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------
# train, then evaluate / export / info / plot on its run directory
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli") / "cartpole-seed0"
    result = run(
        "train", "CartPole-v1", "--steps", 2048, "--batch", 256, "--seed", 0, "--out", directory,
        "--set", "model.hidden_units=[16]", "--set", "model.value_hidden_units=[16]",
        "--eval-every", 4, "--eval-episodes", 3,
    )  # fmt: skip
    assert_ok(result)
    return directory, result


def test_train_writes_a_complete_run_directory(run_dir):
    directory, result = run_dir
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Training TRPO on CartPole-v1 with preset CartPole-v1 (tuned): 8 iterations x 256 env steps = 2,048 env steps, "
        "8 envs, seed 0"
    )
    progress = [line for line in lines if line.startswith("iteration ")]
    assert len(progress) == 8 and "env steps     2048" in progress[-1] and "steps/s" in progress[-1]
    assert any(line.startswith("Trained 2048 env steps in ") and "Deterministic evaluation over 3 episodes" in line for line in lines)

    config = json.loads((directory / "config.json").read_text())
    assert config["env_id"] == "CartPole-v1" and config["preset"] == "CartPole-v1" and config["seed"] == 0
    assert config["iterations"] == 8 and config["rollouts"] == {"steps": 256, "gamma": 0.99, "gae_lambda": 0.97, "normalize_rewards": False}
    assert config["model"]["hidden_units"] == [16] and config["model"]["max_kl"] == 0.02
    assert config["num_envs"] == 8 and config["total_steps"] == 2048
    assert config["trpo_config"]["hidden_units"] == [16]

    with open(directory / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["env_steps"]) for r in rows] == [256.0 * i for i in range(1, 9)]
    assert not any(key.startswith("val_") for key in rows[0])
    for key in ("episode_return", "kl", "line_search_steps", "value_loss", "steps_per_second", "acceptance_rate"):
        assert key in rows[0]
    # --eval-every 4: after iterations 1, 4 and 8.
    assert [i for i, r in enumerate(rows) if r["eval_return"] not in ("", "NA")] == [0, 3, 7]

    events = list((directory / "tensorboard" / "train").glob("events.out.tfevents.*"))
    tags = set()
    for record in tf.data.TFRecordDataset([str(e) for e in events]):
        tags.update(v.tag for v in tf.compat.v1.Event.FromString(record.numpy()).summary.value)
    assert {"epoch_episode_return", "epoch_kl", "epoch_value_loss", "epoch_eval_return"} <= tags

    model = keras.models.load_model(directory / "model.keras")
    assert isinstance(model, keras_trpo.TRPO) and model.policy_version == 8 and model.hidden_units == (16,)
    assert (directory / "saved_model" / "1" / "saved_model.pb").is_file()
    assert len(list((directory / "best_saved_model").iterdir())) == 1

    results = json.loads((directory / "results.json").read_text())
    assert results["env_steps"] == 2048 and results["iterations"] == 8 and len(results["eval_returns"]) == 3
    assert results["saved_model"] == str(directory / "saved_model" / "1")


def test_evaluate_a_saved_model_reproduces_the_final_evaluation_of_train(run_dir):
    directory, _ = run_dir
    result = run("evaluate", directory / "saved_model", "CartPole-v1", "--episodes", 3, "--seed", 10_000, "--json")
    assert_ok(result)
    evaluated = json.loads(result.stdout)
    assert evaluated["path"] == str(directory / "saved_model" / "1")  # the highest version of the base directory
    # Same deterministic policy, same seeds: the SavedModel's serving_default reproduces train's evaluation.
    assert evaluated["returns"] == json.loads((directory / "results.json").read_text())["eval_returns"]


def test_evaluate_a_keras_file_or_a_run_directory_in_process(run_dir, capsys, tmp_path):
    directory, _ = run_dir
    expected = json.loads((directory / "results.json").read_text())["eval_returns"]
    assert call_main(["evaluate", directory / "model.keras", "CartPole-v1", "--episodes", 3, "--seed", 10_000, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == expected
    assert call_main(["evaluate", directory, "CartPole-v1", "--episodes", 2]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"CartPole-v1: 2 episodes with the deterministic policy of SavedModel {directory / 'saved_model' / '1'}")
    assert "mean return" in out[0] and out[1].startswith("returns: ")
    assert call_main(["evaluate", directory / "model.keras", "Pendulum-v1"]) == 1
    assert "the policy acts in Discrete(2) but Pendulum-v1 has actions Box" in capsys.readouterr().err
    assert call_main(["evaluate", directory / "saved_model", "Acrobot-v1"]) == 1
    assert "the policy takes observations of shape [4] but Acrobot-v1 has [6]" in capsys.readouterr().err
    video = tmp_path / "episode.mp4"
    status = call_main(["evaluate", directory, "CartPole-v1", "--episodes", 1, "--video", video])
    captured = capsys.readouterr()
    if importlib.util.find_spec("moviepy") is None:
        assert status == 1 and captured.err == (
            "keras-trpo: error: --video needs moviepy, which gymnasium's RecordVideo uses to write the file: "
            "pip install moviepy\n"
        )
    else:
        assert status == 0 and video.stat().st_size > 1000
        assert f"video of the first episode: {video}" in captured.out


def test_export_then_info_lists_the_signatures(run_dir, tmp_path):
    directory, _ = run_dir
    export = run("export", directory / "model.keras", tmp_path / "served")
    assert_ok(export)
    assert export.stdout.strip() == f"Exported {directory / 'model.keras'} as a SavedModel for TF Serving: {tmp_path / 'served' / '1'}"
    exported = tf.saved_model.load(str(tmp_path / "served" / "1")).signatures["serving_default"]
    trained = tf.saved_model.load(str(directory / "saved_model" / "1")).signatures["serving_default"]
    observations = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(
        exported(observations=observations)["actions"].numpy(), trained(observations=observations)["actions"].numpy()
    )

    info = run("info", tmp_path / "served" / "1")
    assert_ok(info)
    text = info.stdout
    assert text.startswith(f"SavedModel {tmp_path / 'served' / '1'}\n  11 variables, 214 values\n")
    assert "5 signatures" in text
    for name in ("serving_default", "sample", "value", "log_prob", "distribution_params"):
        assert re.search(rf"^  {name}$", text, re.MULTILINE), name
    assert re.search(r"^    inputs +observations +float32 \[N, 4\]$", text, re.MULTILINE)
    assert re.search(r"^    outputs +actions +int32 \[N\]$", text, re.MULTILINE)
    assert re.search(r"seed +int32 \[2\]", text) and re.search(r"outputs +logits +float32 \[N, 2\]", text)
    assert re.search(r"outputs +values +float32 \[N\]", text)


def test_info_on_a_keras_file_and_a_run_directory_and_export_errors_in_process(run_dir, tmp_path, capsys):
    directory, _ = run_dir
    assert call_main(["info", directory / "model.keras"]) == 0
    out = capsys.readouterr().out
    assert "Discrete(2)" in out and "8 TRPO iterations so far" in out and "max_kl=0.02," in out
    assert call_main(["info", directory]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Run {directory}: CartPole-v1 with preset CartPole-v1, seed 0, 8 iterations x 256 env steps")
    assert "serving_default" in out
    # export: a run directory works as CHECKPOINT; an existing version needs --overwrite; a SavedModel is refused.
    assert call_main(["export", directory, tmp_path / "served" / "3"]) == 0
    assert capsys.readouterr().out.endswith(f"{tmp_path / 'served' / '3'}\n")
    assert call_main(["export", directory, tmp_path / "served" / "3"]) == 1
    assert "existing, non-empty version directory" in capsys.readouterr().err
    assert call_main(["export", directory, tmp_path / "served" / "3", "--overwrite"]) == 0
    capsys.readouterr()
    assert call_main(["export", directory / "saved_model", tmp_path / "again"]) == 1
    assert "is already a SavedModel; export takes a .keras checkpoint" in capsys.readouterr().err


def _copy_run(source, target, *, preset=None, shift=0.0):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("saved_model", "best_saved_model", "tensorboard"))
    if preset:
        config = json.loads((target / "config.json").read_text())
        config["preset"] = preset
        (target / "config.json").write_text(json.dumps(config))
    with open(target / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["episode_return"] = str(float(row["episode_return"]) + shift)
    with open(target / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_plot_draws_a_mean_with_a_band_for_runs_sharing_a_label(run_dir, tmp_path):
    directory, _ = run_dir
    # Two more "seeds" of the same label (shifted returns) and one run of another label.
    _copy_run(directory, tmp_path / "seed1", shift=40.0)
    _copy_run(directory, tmp_path / "seed2", shift=-20.0)
    _copy_run(directory, tmp_path / "other", preset="my-preset", shift=200.0)
    image = tmp_path / "plots" / "curve.png"
    # The planned env steps (--steps) and hyperparameter overrides split runs into labels.
    overrides = ', 2,048 env steps, model.hidden_units=[16], model.value_hidden_units=[16], rollouts.steps=256'
    assert plotting.run_label(json.loads((directory / "config.json").read_text())) == f"CartPole-v1 (preset CartPole-v1{overrides})"
    result = run("plot", directory, tmp_path / "seed1", tmp_path / "seed2", tmp_path / "other", "-o", image)
    assert_ok(result)
    with open(directory / "metrics.csv", newline="") as f:
        finite = [float(r["env_steps"]) for r in csv.DictReader(f) if np.isfinite(float(r["episode_return"]))]
    span = f"{finite[0]:,.0f}-{finite[-1]:,.0f} env steps"
    assert result.stdout.strip() == (
        f"Wrote {image}: episode_return against env steps for CartPole-v1 (preset CartPole-v1{overrides}): "
        f"3 runs (mean, min-max band), {span}; CartPole-v1 (preset my-preset{overrides}): 1 run, {span}"
    )
    with Image.open(image) as png:
        assert png.format == "PNG" and png.size == (840, 504)
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert len(colours) > 50

    def share(rgb, tolerance=12):
        return np.mean(np.all(np.abs(pixels.astype(int) - rgb) <= tolerance, axis=1))

    assert share((255, 255, 255)) > 0.5  # mostly background
    assert share((31, 119, 180)) > 0.001  # the mean line (matplotlib C0)
    assert share((199, 221, 236)) > 0.01  # its min-max band: C0 at alpha 0.25 over white (a lone line: < 0.001)
    assert share((255, 127, 14)) > 0.0005  # the single run of the other label (C1)


# --------------------------------------------------------------------------
# Bad input: non-zero exit, one line on stderr, no traceback
# --------------------------------------------------------------------------
def test_bad_input_exits_non_zero_with_one_line_and_no_traceback(tmp_path):
    """Two real processes: a usage error (argparse) and a runtime one. The in-process test below covers
    every other case through the same main() that the console script calls."""
    cases = {
        "unknown env": (["train", "NoSuchEnv-v0"], 1, "unknown environment 'NoSuchEnv-v0'"),
        "negative steps": (["train", "CartPole-v1", "--steps", "-5"], 2, "argument --steps: must be a positive integer; got '-5'"),
    }
    for name, (argv, status, message) in cases.items():
        result = run(*argv)
        lines = own_stderr(result)
        assert result.returncode == status, (name, result.stderr)
        assert "Traceback" not in result.stderr, name
        assert len(lines) == 1 and lines[0].startswith(f"keras-trpo: error: {message}"), (name, result.stderr)
        assert result.stdout == "", name


def call_main(argv):
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse usage errors
        return exit.code


@pytest.mark.parametrize(
    "argv,status,message",
    [
        (["train", "NoSuchEnv-v0"], 1, "unknown environment 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist."),
        (["train", "CartPole-v1", "--preset", "NoSuchPreset"], 1, "unknown preset 'NoSuchPreset'; available presets: Acrobot-v1, CartPole-v1, HalfCheetah-v5"),
        (["evaluate", "missing", "CartPole-v1"], 1, "no such file or directory: 'missing'"),
        (["train", "CartPole-v1", "--num-envs", "3"], 1, "CartPole-v1: rollouts.steps (1024) must be a multiple of num_envs (3) (use --batch"),
        (["train", "CartPole-v1", "--set", "model.maxkl=0.1"], 1, "unknown preset key 'model.maxkl'"),
        (["train", "CartPole-v1", "--set", "model.max_kl"], 2, "argument --set: expected KEY=VALUE"),
        (["train", "CartPole-v1", "--steps", "many"], 2, "argument --steps: must be a positive integer; got 'many'"),
        (["train", "CartPole-v1", "--preset", "missing/preset.json"], 1, "preset file 'missing/preset.json' does not exist"),
        (["evaluate", "RUN", "CartPole-v2"], 1, "unknown environment 'CartPole-v2'"),
        (["export", "missing/model.keras", "out"], 1, "no such file or directory: 'missing/model.keras'"),
        (["info", "missing"], 1, "no such file or directory: 'missing'"),
        (["plot", "missing", "-o", "curve.png"], 1, "no such run directory: 'missing'"),
        (["train", "CartPole-v1", "--steps", "-5"], 2, "argument --steps: must be a positive integer; got '-5'"),
        (["train", "CartPole-v1", "--num-envs", "0"], 2, "argument --num-envs: must be a positive integer; got '0'"),
        (["plot", "RUN", "-o", "curve.txt"], 1, "-o must name a .png, .svg, .pdf or .jpg file"),
        (["frobnicate"], 2, "argument COMMAND: invalid choice: 'frobnicate'"),
        ([], 2, "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_in_process(argv, status, message, capsys):
    """The console script is ``sys.exit(main())``: the same one-line errors, without a process per case."""
    assert call_main(argv) == status
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"keras-trpo: error: {message}"), captured.err
    assert captured.out == ""


def test_train_with_invalid_hyperparameters_leaves_no_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "CartPole-v1", "--set", "model.max_kl=-1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-trpo: error: cannot build TRPO for CartPole-v1 from preset 'CartPole-v1' with the overrides")
    assert "max_kl must be a number > 0" in err and err.count("\n") == 1
    assert not out.exists()


# --------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------
def test_presets_command_lists_every_preset(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "default"):
        assert re.search(rf"^{re.escape(name)} +(tuned|untuned) ", out, re.MULTILINE), name
    assert cli.main(["presets", "Pendulum-v1"]) == 0
    assert json.loads(capsys.readouterr().out)["rollouts"]["gamma"] == 0.95


def test_presets_count_iterations_and_env_steps_like_train(capsys):
    """Issue 15, item 11: presets said "8 envs x 128 steps/iteration" (steps per env) and "1 envs" where train
    says "97 iterations x 1024 env steps". Now both: iterations x env steps per iteration = env steps, envs."""
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^CartPole-v1 +tuned +97 iterations x 1,024 env steps = 99,328 env steps, 8 envs, max_kl 0.02$",
                     out, re.MULTILINE), out
    assert re.search(r"^default +untuned +488 iterations x 2,048 env steps = 999,424 env steps, 1 env, max_kl 0.01$",
                     out, re.MULTILINE), out
    assert "steps/iteration" not in out and "1 envs" not in out
    # The same words in train's first line (the run_dir fixture checks it) and in info.
    assert cli_common.describe_budget(1, 1024, 1) == "1 iteration x 1,024 env steps = 1,024 env steps, 1 env"


def test_model_arguments_of_presets_are_the_keyword_arguments_of_trpo():
    parameters = inspect.signature(keras_trpo.TRPO.__init__).parameters
    keyword_only = {name for name, p in parameters.items() if p.kind == p.KEYWORD_ONLY} - {"seed"}
    assert set(presets.MODEL_ARGUMENTS) == keyword_only
    for name in presets.preset_names():  # every preset spells out every model argument
        assert set(presets.load_preset(name).model) == keyword_only, name


@pytest.mark.parametrize(
    "name,status,rewards_scaled",
    [("Acrobot-v1", "untuned", False), ("Hopper-v5", "untuned", False),
     ("HalfCheetah-v5", "tuned", True), ("Walker2d-v5", "tuned", True)],
)
def test_zoo_presets_say_where_they_come_from_and_build_for_their_env(name, status, rewards_scaled, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    preset = presets.load_preset(name)
    assert preset.status == status and "rl-baselines3-zoo" in preset.notes
    assert ("Untuned starting point" in preset.notes) == (status == "untuned")
    assert preset.rollouts["normalize_rewards"] is rewards_scaled
    if rewards_scaled:
        assert "docs/benchmarks.md" in preset.notes and "without reward scaling" in preset.notes
    if name != "Acrobot-v1" and importlib.util.find_spec("mujoco") is None:
        pytest.skip("MuJoCo is not installed (pip install 'keras-trpo[mujoco]')")
    env = preset.make_env()
    try:
        model = preset.build_model(env, seed=0)
        rollouts = preset.build_rollouts(env, model, seed=0)
        assert rollouts.num_envs == preset.num_envs and model.normalize_observations
        assert (rollouts.reward_scaler is not None) is rewards_scaled
    finally:
        env.close()


def test_preset_overrides_are_checked():
    preset = presets.load_preset("CartPole-v1").override({"model.max_kl": 0.05, "rollouts.steps": 64, "num_envs": 4})
    assert (preset.model["max_kl"], preset.rollouts["steps"], preset.num_envs) == (0.05, 64, 4)
    assert preset.iterations(640) == 10 and preset.iterations(10) == 1
    with pytest.raises(presets.PresetError, match="unknown preset key 'model.learning_rate'"):
        preset.override({"model.learning_rate": 1e-3})
    with pytest.raises(presets.PresetError, match=r"rollouts.steps \(64\) must be a multiple of num_envs \(5\)"):
        preset.override({"num_envs": 5})
    with pytest.raises(presets.PresetError, match="unknown preset 'Nope'"):
        presets.load_preset("Nope")
    assert presets.preset_for_env("MountainCar-v0").name == "default"
    assert presets.preset_for_env("MountainCar-v0").env_id == "MountainCar-v0"


def test_presets_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["scripts"]["keras-trpo"] == "keras_trpo.cli:main"
    assert "*.json" in project["tool"]["setuptools"]["package-data"]["keras_trpo.presets"]
    assert sorted(p.name for p in presets.PRESET_DIR.glob("*.json")) == sorted(
        f"{name}.json" for name in presets.preset_names()
    )
    assert gymnasium.spec("CartPole-v1")  # sanity: the env ids of the presets are registered
    for name in presets.preset_names():
        env_id = presets.load_preset(name).env_id
        if env_id:
            assert gymnasium.spec(env_id).id == env_id
