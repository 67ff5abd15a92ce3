"""The keras-trpo console script, run as a subprocess on CartPole with a small budget; presets; plotting;
the image and Dict presets (MiniGrid, Pong) trained for two iterations in process."""

import contextlib
import csv
import io
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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

from helpers import keras_trpo_script


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
    # Relative to the run directory: results.json stays right when the directory is moved (docs/benchmarks/).
    assert (results["keras_model"], results["saved_model"]) == ("model.keras", os.path.join("saved_model", "1"))


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


def test_evaluate_stochastic_reproduces_the_sampled_final_evaluation_of_train(run_dir, capsys):
    """results.json holds both evaluations; --stochastic on the .keras file reproduces the sampled one.
    Catches: train's sampled evaluation seeded otherwise than eval_seed, or --stochastic ignored (the mode's returns)."""
    directory, _ = run_dir
    results = json.loads((directory / "results.json").read_text())
    sampled = results["stochastic_eval_returns"]
    assert len(sampled) == 3 and results["stochastic_eval_mean"] == pytest.approx(sum(sampled) / 3, rel=1e-12)
    assert call_main(["evaluate", directory / "model.keras", "CartPole-v1", "--episodes", 3, "--seed", 10_000,
                      "--stochastic", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["returns"] == sampled and evaluated["deterministic"] is False
    assert sampled != results["eval_returns"]  # this policy's mode and samples differ: the check above can fail
    # A run directory samples from its model.keras, as train did (review: it used the SavedModel's sampler).
    assert call_main(["evaluate", directory, "CartPole-v1", "--episodes", 3, "--seed", 10_000, "--stochastic",
                      "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == sampled
    assert call_main(["evaluate", directory / "saved_model", "CartPole-v1", "--episodes", 2, "--stochastic"]) == 0
    assert capsys.readouterr().out.startswith("CartPole-v1: 2 episodes with the sampling policy of SavedModel ")


def test_evaluate_stochastic_on_a_saved_model_without_sample_is_one_clear_error(tmp_path, capsys):
    """Catches: --stochastic falling back to serving_default (the mode) for a SavedModel that cannot sample."""
    module = tf.Module()
    module.act = tf.function(lambda observations: {"actions": tf.zeros_like(observations[:, 0], tf.int64)},
                             input_signature=[tf.TensorSpec([None, 4], tf.float32, name="observations")])
    tf.saved_model.save(module, str(tmp_path / "m" / "1"), signatures={"serving_default": module.act})
    assert call_main(["evaluate", tmp_path / "m", "CartPole-v1", "--stochastic"]) == 1
    err = capsys.readouterr().err
    assert "has no sample signature, so --stochastic cannot sample from it; evaluate its .keras file instead" in err


# --------------------------------------------------------------------------
# evaluate --video; --import for .keras files with custom networks (issue 24, items 6 and 4)
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def varied_policy(varied_cartpole_policy, tmp_path_factory):
    """The shared CartPole policy of conftest.py, as a .keras file."""
    path = tmp_path_factory.mktemp("varied") / "policy.keras"
    varied_cartpole_policy.save(path)
    return path


def test_evaluate_video_records_the_first_episode_without_changing_the_returns(varied_policy, tmp_path, capsys):
    """Catches: --video evaluating on another env construction. It used one env playing the episodes one after
    the other (returns 217/253 instead of 205/217 at --episodes 2)."""
    argv = ["evaluate", varied_policy, "CartPole-v1", "--episodes", 2, "--json"]
    assert call_main(argv) == 0
    plain = json.loads(capsys.readouterr().out)["returns"]
    assert len(set(plain)) == 2
    video = tmp_path / "videos" / "episode.mp4"
    assert call_main([*argv, "--video", video]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == plain
    assert video.stat().st_size > 1000 and list(video.parent.iterdir()) == [video]
    assert call_main(argv[:-1] + ["--video", video]) == 0  # the text report says where the video is
    assert f"video of the first episode: {video}" in capsys.readouterr().out


def test_evaluate_video_without_moviepy_names_the_extra(varied_policy, tmp_path, capsys, monkeypatch):
    """Catches: a missing moviepy found after the episodes ran, or gymnasium's install hint instead of ours."""
    monkeypatch.setitem(sys.modules, "moviepy", None)  # importlib.util.find_spec("moviepy") is None: not installed
    assert call_main(["evaluate", varied_policy, "CartPole-v1", "--video", tmp_path / "e.mp4"]) == 1
    assert capsys.readouterr().err == (
        "keras-trpo: error: --video needs moviepy, which gymnasium's RecordVideo writes the video with: "
        'pip install "keras-trpo[video]"\n'
    )


def test_a_failed_evaluate_with_video_leaves_no_temporary_directory(varied_policy, tmp_path, monkeypatch, capsys):
    """Catches: the keras-trpo-video-* directory made before the env and removed only after a success (review)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert call_main(["evaluate", varied_policy, "Acrobot-v1", "--video", tmp_path / "e.mp4"]) == 1  # wrong env
    assert "keras-trpo: error: the policy acts in Discrete(2) but Acrobot-v1" in capsys.readouterr().err
    assert not list(tmp_path.glob("keras-trpo-video-*"))


MY_NETS = """
import keras


@keras.saving.register_keras_serializable(package="my_nets")
class TinyNet(keras.Model):
    def __init__(self, units=8, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units, activation="tanh")

    def call(self, observations):
        return self.dense(observations)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
"""


def test_import_loads_a_keras_file_whose_networks_are_custom_classes(tmp_path):
    """A fresh keras-trpo process knows only the classes of the modules it imported. Catches: --import missing
    from a command, a module name not found in the current directory, a file path not imported, and a load error
    that does not say to pass --import."""
    (tmp_path / "my_nets.py").write_text(MY_NETS)
    spec = importlib.util.spec_from_file_location("my_nets", tmp_path / "my_nets.py")
    my_nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(my_nets)  # registers my_nets>TinyNet in this process only
    env = gymnasium.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, policy_network=my_nets.TinyNet(), value_network=my_nets.TinyNet(), seed=0)
    env.close()
    model.save(tmp_path / "custom.keras")
    commands = [
        ["info", "custom.keras"],
        ["evaluate", "custom.keras", "CartPole-v1", "--episodes", "1", "--import", "my_nets", "--json"],
        ["info", "custom.keras", "--import", str(tmp_path / "my_nets.py")],
        ["export", "custom.keras", "served", "--import", "./my_nets.py"],
    ]
    # One fresh process runs the four commands in order (the first without my_nets imported), as the keras-trpo
    # console script would: TensorFlow loaded by the first command, the current directory off sys.path.
    script = """
import json, os, sys
commands = json.loads(sys.argv[1])
os.environ["KERAS_TRPO_LAZY_IMPORT"] = "1"  # what the keras-trpo console script (keras_trpo_command.main) sets
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
from keras_trpo.cli import main
for argv in commands:
    print("=====", flush=True)
    print("=====", file=sys.stderr, flush=True)
    print("status", main(argv), flush=True)
"""
    result = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outs = result.stdout.split("=====\n")[1:]
    errs = [[line for line in part.splitlines() if line.strip()] for part in result.stderr.split("=====\n")[1:]]
    assert [out.splitlines()[-1] for out in outs] == ["status 1", "status 0", "status 0", "status 0"], result
    assert len(errs[0]) == 1 and "TinyNet" in errs[0][0] and "--import" in errs[0][0], errs[0]
    assert errs[1:] == [[], [], []], result.stderr
    evaluated = json.loads(outs[1].splitlines()[0])  # my_nets found by name in the current directory
    assert re.search(r"^  policy network: +TinyNet ", outs[2], re.MULTILINE), outs[2]
    assert evaluated["returns"] == keras_trpo.evaluate(model, "CartPole-v1", episodes=1, seed=0)
    assert (tmp_path / "served" / "1" / "saved_model.pb").is_file()


@pytest.mark.parametrize(
    "value,message",
    [
        ("no_such_module", "--import no_such_module: no module named 'no_such_module' on the Python path or in the "
                           "current directory"),
        ("missing/my_nets.py", "--import missing/my_nets.py: no such Python file; expected --import MODULE (a module "
                               "name such as my_nets, or a file such as path/to/my_nets.py)"),
        ("boom.py", "--import boom.py: importing it raised ZeroDivisionError: division by zero"),
    ],
    ids=["unknown-module", "missing-file", "module-raises"],
)
def test_a_bad_import_is_one_line(varied_policy, tmp_path, monkeypatch, capsys, value, message):
    """Catches: a traceback, or a missing module found only after TensorFlow and the model loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "boom.py").write_text("1 / 0\n")
    assert call_main(["info", varied_policy, "--import", value]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"keras-trpo: error: {message}"), captured.err
    assert captured.out == ""


def test_a_keras_file_of_an_unknown_class_says_to_pass_import(varied_policy, tmp_path, capsys):
    """Keras's own "Could not locate class" (here for the model class itself) gets the --import hint first: the
    message is cut at 600 characters and Keras's ends with the whole config. Catches: the hint missing or last."""
    import zipfile

    renamed = tmp_path / "renamed.keras"
    with zipfile.ZipFile(varied_policy) as source, zipfile.ZipFile(renamed, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b'"keras_trpo>TRPO"', b'"my_rl>MyTRPO"').replace(b'"class_name": "TRPO"',
                                                                                     b'"class_name": "MyTRPO"')
            target.writestr(item, data)
    assert call_main(["info", renamed]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"keras-trpo: error: cannot load '{renamed}': Keras cannot find the class 'MyTRPO'; if it "
                          "is yours, import the module that registers it with --import MODULE (a module name such as "
                          "my_nets, or a file such as path/to/my_nets.py). Keras said: "), err
    assert err.count("\n") == 1


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "plot", "info", "presets"])
def test_every_positional_argument_has_help_text(command, capsys):
    """Catches: a positional argument listed in --help without a description (evaluate's ENV_ID was)."""
    assert call_main([command, "--help"]) == 0
    out = capsys.readouterr().out
    lines = out.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    names = [(i, line.split()[0]) for i, line in enumerate(lines) if re.match(r"^  \S", line)]
    assert names, out
    for i, name in names:
        described = len(lines[i].split()) > 1 or (i + 1 < len(lines) and lines[i + 1].startswith("   "))
        assert described, f"{command} {name} has no help text:\n{out}"


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
    assert capsys.readouterr().err == (  # the flag, not TRPO.export's overwrite=True
        f"keras-trpo: error: OUT '{tmp_path / 'served' / '3'}' is an existing, non-empty version directory; pass "
        f"--overwrite to replace it, or pass its parent '{tmp_path / 'served'}' to write the next version\n")
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
        "negative steps": (["train", "CartPole-v1", "--steps", "-5"], 2, "argument --steps: must be an integer >= 1; got -5"),
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
        (["train", "CartPole-v1", "--preset", "NoSuchPreset"], 1, "unknown preset 'NoSuchPreset'; available presets: Acrobot-v1, Ant-v5, BipedalWalker-v3, CartPole-v1"),
        (["evaluate", "missing", "CartPole-v1"], 1, "no such file or directory: 'missing'"),
        (["train", "CartPole-v1", "--num-envs", "3"], 1, "CartPole-v1: rollouts.steps (1024) must be a multiple of num_envs (3) (use --batch"),
        (["train", "CartPole-v1", "--set", "model.maxkl=0.1"], 1, "unknown preset key 'model.maxkl'"),
        (["train", "CartPole-v1", "--set", "model.max_kl"], 2, "argument --set: expected KEY=VALUE"),
        (["train", "CartPole-v1", "--steps", "many"], 2, "argument --steps: must be an integer >= 1; got 'many'"),
        (["train", "CartPole-v1", "--preset", "missing/preset.json"], 1, "preset file 'missing/preset.json' does not exist"),
        (["evaluate", "RUN", "CartPole-v2"], 1, "unknown environment 'CartPole-v2'"),
        (["export", "missing/model.keras", "out"], 1, "no such file or directory: 'missing/model.keras'"),
        (["info", "missing"], 1, "no such file or directory: 'missing'"),
        (["plot", "missing", "-o", "curve.png"], 1, "no such run directory: 'missing'"),
        (["train", "CartPole-v1", "--steps", "-5"], 2, "argument --steps: must be an integer >= 1; got -5"),
        (["train", "CartPole-v1", "--num-envs", "0"], 2, "argument --num-envs: must be an integer >= 1; got 0"),
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
    [("Acrobot-v1", "tuned", True), ("BipedalWalker-v3", "untuned", True), ("Swimmer-v5", "tuned", True),
     ("Hopper-v5", "tuned", True), ("HalfCheetah-v5", "tuned", True), ("Walker2d-v5", "tuned", True)],
)
def test_zoo_presets_say_where_they_come_from_and_build_for_their_env(name, status, rewards_scaled, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    preset = presets.load_preset(name)
    assert preset.status == status and "rl-baselines3-zoo" in preset.notes
    assert ("Untuned starting point" in preset.notes) == (status == "untuned")
    assert preset.rollouts["normalize_rewards"] is rewards_scaled
    if rewards_scaled:  # a tuned preset says where the measurement behind each change is
        assert "docs/benchmarks.md" in preset.notes and "reward" in preset.notes
    if name.endswith("-v5") and importlib.util.find_spec("mujoco") is None:
        pytest.skip("MuJoCo is not installed (pip install 'keras-trpo[mujoco]')")
    if name == "BipedalWalker-v3" and importlib.util.find_spec("Box2D") is None:
        pytest.skip("Box2D is not installed (pip install 'keras-trpo[box2d]')")
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
    assert presets.preset_for_env("Taxi-v3").name == "default"
    assert presets.preset_for_env("Taxi-v3").env_id == "Taxi-v3"


def test_presets_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["project"]["scripts"]["keras-trpo"] == "keras_trpo_command:main"
    assert "*.json" in project["tool"]["setuptools"]["package-data"]["keras_trpo.presets"]
    assert sorted(p.name for p in presets.PRESET_DIR.glob("*.json")) == sorted(
        f"{name}.json" for name in presets.preset_names()
    )
    assert gymnasium.spec("CartPole-v1")  # sanity: the env ids of the presets are registered
    for name in presets.preset_names():
        preset = presets.load_preset(name)
        if preset.env_id:
            preset.load_env_dependencies()  # imports minigrid / ale_py, which register their envs
            assert gymnasium.spec(preset.env_id).id == preset.env_id, name


# --------------------------------------------------------------------------
# Presets of other packages' envs: env_modules, env_kwargs, wrappers, networks by name
# --------------------------------------------------------------------------
TINY = ["--steps", "128", "--batch", "64", "--num-envs", "2", "--eval-episodes", "1"]  # 2 iterations
# At most 100 agent steps (frame skip 4) per Pong episode: the final evaluation of a barely trained policy is short.
SHORT_PONG = ["--set", "env_kwargs.max_num_frames_per_episode=400"]


def train_in_process(out, *argv):
    """``keras-trpo train`` through the same main() as the console script; returns (status, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = call_main(["train", *argv, "--out", out])
    return status, stdout.getvalue(), stderr.getvalue()


def assert_trained(out, status, stdout, stderr, env_id, preset, iterations=2):
    assert status == 0, (stdout, stderr)
    assert stdout.startswith(f"Training TRPO on {env_id} with preset {preset} "), stdout
    config = json.loads((out / "config.json").read_text())
    results = json.loads((out / "results.json").read_text())
    assert config["preset"] == preset and results["iterations"] == iterations and len(results["eval_returns"]) == 1
    assert (out / "saved_model" / "1" / "saved_model.pb").is_file()
    return config, results


@pytest.fixture(scope="module")
def minigrid_dict_run(tmp_path_factory):
    pytest.importorskip("minigrid")
    out = tmp_path_factory.mktemp("minigrid") / "dict"
    status, stdout, stderr = train_in_process(out, "MiniGrid-Empty-8x8-v0", "--preset", "MiniGrid-Empty-8x8-v0-dict", *TINY)
    config, results = assert_trained(out, status, stdout, stderr, "MiniGrid-Empty-8x8-v0", "MiniGrid-Empty-8x8-v0-dict")
    return out, config, results


def test_minigrid_dict_preset_trains_a_combined_cnn_on_image_and_direction(minigrid_dict_run):
    out, config, _ = minigrid_dict_run
    assert config["wrappers"] == [{"class": "gymnasium.wrappers.FilterObservation",
                                   "kwargs": {"filter_keys": ["image", "direction"]}}]
    trpo = config["trpo_config"]
    assert trpo["policy_network"] == trpo["value_network"] == "minigrid_cnn"
    assert trpo["hidden_units"] is None and trpo["observation_space"]["class_name"] == "Dict"
    model = keras.models.load_model(out / "model.keras")
    assert set(model.observation_space.spaces) == {"image", "direction"}  # the Text mission was dropped
    assert type(model.policy_layers[0]).__name__ == "Combined" and model.policy_version == 2
    inputs = tf.saved_model.load(str(out / "saved_model" / "1")).signatures["serving_default"].structured_input_signature[1]
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in inputs.items()} == {
        "direction": ("int64", [None]), "image": ("uint8", [None, 7, 7, 3])}


def test_evaluate_a_dict_saved_model_with_the_wrappers_of_its_run(minigrid_dict_run, capsys):
    out, _, results = minigrid_dict_run
    # The run directory's config.json says which wrappers make the env: the same episode as train's evaluation.
    argv = ["evaluate", out / "saved_model", "MiniGrid-Empty-8x8-v0", "--episodes", 1, "--seed", 10_000]
    assert call_main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == results["eval_returns"]
    # Outside the run directory, --preset names the wrappers; the image-only preset's env does not fit.
    copy = shutil.copytree(out / "saved_model" / "1", out.parent / "copied" / "1")
    assert call_main(["evaluate", copy, "MiniGrid-Empty-8x8-v0", "--episodes", 1, "--seed", 10_000,
                      "--preset", "MiniGrid-Empty-8x8-v0-dict"]) == 0
    captured = capsys.readouterr().out.splitlines()
    assert captured[1] == "returns: " + " ".join(f"{r:.1f}" for r in results["eval_returns"])
    assert captured[2].startswith("environment: wrappers FilterObservation") and "preset MiniGrid-Empty-8x8-v0-dict" in captured[2]
    assert call_main(["evaluate", copy, "MiniGrid-Empty-8x8-v0", "--episodes", 1]) == 1  # the preset of the env id
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "keras-trpo: error: the policy takes observations {'direction': [N] int64, 'image': [N, 7, 7, 3] uint8} "
        "but MiniGrid-Empty-8x8-v0 has [N, 7, 7, 3] uint8; evaluate it on the environment it was trained on"), err


def test_info_names_the_networks(minigrid_dict_run, run_dir, capsys):
    out, _, _ = minigrid_dict_run
    assert call_main(["info", out / "model.keras"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  policy network: +minigrid_cnn \(networks.Combined", text, re.MULTILINE), text
    assert re.search(r"^  value network: +minigrid_cnn \(networks.Combined", text, re.MULTILINE), text
    directory, _ = run_dir  # CartPole with --set model.hidden_units=[16]: the default MLP
    assert call_main(["info", directory / "model.keras"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  policy network: +default MLP \(16 tanh\)$", text, re.MULTILINE), text
    assert re.search(r"^  value network: +default MLP \(16 tanh\)$", text, re.MULTILINE), text


def test_minigrid_image_preset_trains_minigrid_cnn(tmp_path):
    pytest.importorskip("minigrid")
    out = tmp_path / "run"
    status, stdout, stderr = train_in_process(out, "MiniGrid-Empty-8x8-v0", *TINY)
    config, _ = assert_trained(out, status, stdout, stderr, "MiniGrid-Empty-8x8-v0", "MiniGrid-Empty-8x8-v0")
    assert config["trpo_config"]["observation_space"]["class_name"] == "Box"
    assert config["trpo_config"]["policy_network"] == "minigrid_cnn"
    inputs = tf.saved_model.load(str(out / "saved_model" / "1")).signatures["serving_default"].structured_input_signature[1]
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in inputs.items()} == {"observations": ("uint8", [None, 7, 7, 3])}


def test_pong_preset_is_found_by_its_env_id_and_trains_nature_cnn_on_stacked_frames(tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    assert presets.preset_for_env("ALE/Pong-v5").name == "Pong-v5"  # a file name cannot hold the "/"
    out = tmp_path / "run"
    status, stdout, stderr = train_in_process(out, "ALE/Pong-v5", *TINY, *SHORT_PONG)
    config, _ = assert_trained(out, status, stdout, stderr, "ALE/Pong-v5", "Pong-v5")
    assert config["env_kwargs"] == {"frameskip": 1, "max_num_frames_per_episode": 400}
    assert [w["class"].rpartition(".")[2] for w in config["wrappers"]] == ["AtariPreprocessing", "FrameStackObservation"]
    assert config["trpo_config"]["policy_network"] == config["trpo_config"]["value_network"] == "nature_cnn"
    inputs = tf.saved_model.load(str(out / "saved_model" / "1")).signatures["serving_default"].structured_input_signature[1]
    assert {k: (v.dtype.name, v.shape.as_list()) for k, v in inputs.items()} == {"observations": ("uint8", [None, 4, 84, 84])}


def test_set_a_network_by_name_reaches_the_model(tmp_path):
    """--set model.policy_network=nature_cnn: a bare word is a string, and it replaces the preset's MLP
    (its hidden_units are dropped: TRPO takes one or the other)."""
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    pixels_mlp = presets.load_preset("Pong-v5").to_dict()
    pixels_mlp["model"].update(policy_network=None, hidden_units=[8])
    preset_file = tmp_path / "pong-mlp.json"
    preset_file.write_text(json.dumps({k: v for k, v in pixels_mlp.items() if k not in ("name", "source")}))
    out = tmp_path / "run"
    status, stdout, stderr = train_in_process(out, "ALE/Pong-v5", "--preset", preset_file, *TINY, *SHORT_PONG,
                                              "--steps", "64", "--set", "model.policy_network=nature_cnn")
    config, _ = assert_trained(out, status, stdout, stderr, "ALE/Pong-v5", "pong-mlp", iterations=1)
    assert config["overrides"]["model.policy_network"] == "nature_cnn"
    assert config["model"]["policy_network"] == "nature_cnn" and config["model"]["hidden_units"] is None
    assert config["trpo_config"]["policy_network"] == "nature_cnn" and config["trpo_config"]["hidden_units"] is None
    model = keras.models.load_model(out / "model.keras")
    cnn = model.policy_layers[0]  # the CNN, not Dense layers of the default MLP
    assert cnn.name.endswith("nature_cnn") and [type(layer).__name__ for layer in cnn.layers].count("Conv2D") == 3


def test_network_overrides_replace_the_default_mlp_and_back():
    preset = presets.load_preset("CartPole-v1")
    cnn = preset.override({"model.policy_network": "nature_cnn"})
    assert (cnn.model["policy_network"], cnn.model["hidden_units"]) == ("nature_cnn", None)
    assert (cnn.model["value_network"], cnn.model["value_hidden_units"]) == (None, [64, 64])  # untouched
    mlp = cnn.override({"model.hidden_units": [32]})
    assert (mlp.model["policy_network"], mlp.model["hidden_units"]) == (None, [32])
    both = preset.override({"model.value_network": "mlp", "model.value_hidden_units": [8]})
    assert (both.model["value_network"], both.model["value_hidden_units"]) == ("mlp", [8])  # TRPO will refuse both
    assert preset.override({"env_kwargs.max_episode_steps": 50}).env_kwargs == {"max_episode_steps": 50}


def _preset_file(tmp_path, name, **changes):
    data = {k: v for k, v in presets.load_preset("CartPole-v1").to_dict().items() if k not in ("name", "source")}
    data.update(changes)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"wrappers": [{"class": "ImgObsWrapper"}]},
         "bad: wrappers[0].class must be a dotted path module.Name such as 'gymnasium.wrappers.FilterObservation'; "
         "got 'ImgObsWrapper'"),
        ({"wrappers": [{"class": "gymnasium.wrappers.TimeLimit", "args": [5]}]},
         "bad: wrappers[0] must be an object with the keys class and kwargs (optional)"),
        ({"wrappers": {"class": "gymnasium.wrappers.TimeLimit"}}, "bad: wrappers must be a list of objects like"),
        ({"env_kwargs": {"num_envs": 4}}, "bad: env_kwargs cannot set ['num_envs']: those are arguments of gymnasium.make_vec"),
        ({"env_kwargs": [1]}, "bad: env_kwargs must be a JSON object such as {\"frameskip\": 1}; got [1]"),
        ({"env_modules": "minigrid"}, "bad: env_modules must be a list of module names such as [\"minigrid\"]; got 'minigrid'"),
    ],
)
def test_invalid_env_settings_are_one_line_preset_errors(tmp_path, changes, message):
    with pytest.raises(presets.PresetError) as raised:
        presets.load_preset(_preset_file(tmp_path, "bad", **changes))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)


@pytest.mark.parametrize(
    "wrapper,hidden,message",
    [
        ({"class": "minigrid.wrappers.NoSuchWrapper"}, (),
         "bad: wrappers[0]: module 'minigrid.wrappers' has no wrapper class 'NoSuchWrapper'"),
        ({"class": "no_such_package.wrappers.Wrapper"}, (),
         "bad: wrappers[0]: cannot import 'no_such_package.wrappers.Wrapper': ModuleNotFoundError: No module named "
         "'no_such_package' (install the package that provides the module 'no_such_package')"),
        # minigrid not installed (hidden from the import system): the error names the extra that installs it.
        ({"class": "minigrid.wrappers.ImgObsWrapper"}, ("minigrid", "minigrid.wrappers"),
         "bad: wrappers[0]: cannot import 'minigrid.wrappers.ImgObsWrapper': ModuleNotFoundError: "),
        ({"class": "gymnasium.wrappers.TimeLimit", "kwargs": {"max_steps": 5}}, (),
         "bad: wrappers[0]: gymnasium.wrappers.TimeLimit does not take the kwargs {'max_steps': 5}: "),
    ],
)
def test_a_bad_wrapper_fails_train_with_one_line_before_anything_is_built(tmp_path, capsys, monkeypatch, wrapper,
                                                                           hidden, message):
    pytest.importorskip("minigrid")
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "run"
    assert call_main(["train", "CartPole-v1", "--preset", _preset_file(tmp_path, "bad", wrappers=[wrapper]),
                      "--out", out]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"keras-trpo: error: {message}"), captured.err
    if hidden:
        assert captured.err.rstrip().endswith('(pip install "keras-trpo[minigrid]")'), captured.err
    assert captured.out == "" and not out.exists()


def test_env_modules_register_env_ids_and_a_preset_name_is_not_an_env_id(tmp_path, capsys):
    pytest.importorskip("ale_py")
    # keras-trpo train Pong-v5: the preset's name; the env id is ALE/Pong-v5.
    assert call_main(["train", "Pong-v5", "--out", tmp_path / "run"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("keras-trpo: error: unknown environment 'Pong-v5'") and err.count("\n") == 1
    assert err.rstrip().endswith("(the preset Pong-v5 is for ALE/Pong-v5: keras-trpo train ALE/Pong-v5)"), err
    # An env_modules entry that cannot be imported: one line naming it.
    path = _preset_file(tmp_path, "mods", env_modules=["no_such_envs"])
    assert call_main(["train", "CartPole-v1", "--preset", path, "--out", tmp_path / "run"]) == 1
    assert capsys.readouterr().err == (
        "keras-trpo: error: mods: cannot import env_modules entry 'no_such_envs': ModuleNotFoundError: No module "
        "named 'no_such_envs' (install the package that provides the module 'no_such_envs')\n"
    )
