"""``keras-trpo``: train, evaluate, export, plot and inspect TRPO policies from the shell.

```
keras-trpo train CartPole-v1 --seed 0 --out runs/cartpole-s0
keras-trpo evaluate runs/cartpole-s0/saved_model CartPole-v1 --episodes 10
keras-trpo export runs/cartpole-s0/model.keras saved_models/cartpole
keras-trpo plot runs/cartpole-s* -o curve.png
keras-trpo info runs/cartpole-s0/saved_model/1
keras-trpo presets
```

Every command exits 0 on success. Bad input (an unknown environment or preset,
a non-positive number, a missing path) prints one line starting with
``keras-trpo: error:`` on stderr and exits 2 (usage) or 1 (anything else),
without a Python traceback; ``--debug`` shows the traceback of unexpected errors.
See the "Command line" section of README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
import time

PROG = "keras-trpo"
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TENSORBOARD_DIR = "tensorboard"
BEST_DIR = "best_saved_model"


class CLIError(Exception):
    """A user error: printed as one line, exit status 1."""


# ----------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) so that bad input reads as one message."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum, described):
    """An argparse type: an integer >= ``minimum``, with a one-line error otherwise."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {described}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {described}; got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")
_seed = _non_negative_int


def _assignment(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. model.max_kl=0.01); got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value  # a bare string such as relu
    return key.strip(), parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Trust Region Policy Optimization with Keras: train, evaluate, export, plot, inspect.",
        epilog="Run 'keras-trpo COMMAND --help' for the options of a command. Docs: README.md, section 'Command line'.",
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of unexpected errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_parser = commands.add_parser

    def add_parser(*args, **kwargs):
        sub = _add_parser(*args, **kwargs)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    commands.add_parser = add_parser

    train = commands.add_parser(
        "train",
        help="train a policy; writes a run directory",
        description="Train TRPO on a gymnasium environment with a hyperparameter preset. Writes a run "
        "directory: config.json (resolved configuration), metrics.csv (per-iteration metrics), "
        "tensorboard/ (TensorBoard logs), model.keras (Keras checkpoint), saved_model/1 (SavedModel "
        "for TF Serving) and results.json (final deterministic evaluation).",
    )
    train.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id, e.g. CartPole-v1")
    train.add_argument("--preset", metavar="NAME", help="preset name or JSON file (default: the preset named "
                       "after ENV_ID, else 'default'); see 'keras-trpo presets'")
    train.add_argument("--steps", type=_positive_int, metavar="N", help="total env steps (default: the preset's)")
    train.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed (default 0)")
    train.add_argument("--num-envs", type=_positive_int, metavar="K", help="parallel envs (default: the preset's)")
    train.add_argument("--batch", type=_positive_int, metavar="N",
                       help="env steps per TRPO iteration, a multiple of --num-envs (default: the preset's)")
    train.add_argument("--set", type=_assignment, action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset value, e.g. --set model.max_kl=0.01 --set model.hidden_units=[32,32]")
    train.add_argument("--out", metavar="DIR", help="run directory to create (default: runs/ENV_ID-PRESET-seedS-TIME)")
    train.add_argument("--eval-episodes", type=_positive_int, metavar="N", help="episodes of the final evaluation")
    train.add_argument("--eval-every", type=_non_negative_int, default=0, metavar="N",
                       help="also evaluate every N iterations during training, log eval_return and export the "
                       "best policy to DIR/best_saved_model (default 0: only after training)")
    train.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                       help="save model.keras every N iterations (default: a tenth of the run)")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                       help="0: one progress line per tenth of the run (default); 1: Keras progress bar; "
                       "2: one Keras line per iteration")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a SavedModel or .keras policy deterministically",
        description="Run the deterministic policy of a SavedModel (its serving_default signature), a .keras "
        "file or a run directory on ENV_ID and print the episode returns.",
    )
    evaluate.add_argument("path", metavar="PATH", help="SavedModel directory (or its base directory), .keras file or run directory")
    evaluate.add_argument("env_id", metavar="ENV_ID")
    evaluate.add_argument("--episodes", type=_positive_int, default=10, metavar="N", help="episodes (default 10)")
    evaluate.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the first reset (default 0)")
    evaluate.add_argument("--video", metavar="FILE",
                          help="record the first episode to this .mp4 (gymnasium RecordVideo; needs moviepy)")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    export = commands.add_parser(
        "export",
        help="export a .keras checkpoint as a TF Serving SavedModel",
        description="Export CHECKPOINT (a .keras file or a run directory) as a SavedModel. OUT is a model base "
        "directory (the next integer version is created in it) or a version directory such as out/1.",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT")
    export.add_argument("out", metavar="OUT")
    export.add_argument("--overwrite", action="store_true", help="replace an existing version directory")
    export.set_defaults(func=cmd_export)

    plot = commands.add_parser(
        "plot",
        help="plot learning curves of run directories",
        description="Plot return against env steps from the metrics.csv of each run: one line per run, or the "
        "mean with a min-max band when several runs share a label (env id, preset and overrides: runs that "
        "differ only in their seed).",
    )
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or directories holding runs")
    plot.add_argument("-o", "--output", required=True, metavar="FILE", help="image to write (.png, .svg, .pdf)")
    plot.add_argument("--metric", default="episode_return", help="metrics.csv column to plot (default episode_return)")
    plot.add_argument("--smooth", type=_positive_int, default=1, metavar="K", help="moving average over K iterations")
    plot.add_argument("--title", help="figure title")
    plot.set_defaults(func=cmd_plot)

    info = commands.add_parser(
        "info",
        help="list the signatures of a SavedModel (or describe a .keras model)",
        description="For a SavedModel: every signature with its input and output names, dtypes and shapes. "
        "For a .keras file: spaces, hyperparameters and weights. For a run directory: its configuration "
        "and its SavedModel.",
    )
    info.add_argument("path", metavar="PATH")
    info.set_defaults(func=cmd_info)

    presets = commands.add_parser("presets", help="list the hyperparameter presets, or show one")
    presets.add_argument("name", nargs="?", metavar="NAME", help="show this preset as JSON")
    presets.set_defaults(func=cmd_presets)
    return parser


def main(argv=None) -> int:
    """Console-script entry point: returns the exit status."""
    parser = build_parser()
    argv = [os.fspath(a) for a in (sys.argv[1:] if argv is None else argv)]
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        status = args.func(args)
    except CLIError as error:
        _fail(str(error))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 - one line instead of a traceback; --debug re-raises
        if args.debug:
            raise
        from keras_trpo.presets import PresetError

        if isinstance(error, PresetError):
            _fail(str(error))
        else:
            _fail(f"{type(error).__name__}: {error} (run with --debug for the traceback)")
        return 1
    return int(status or 0)


def _fail(message: str):
    one_line = re.sub(r"\s+", " ", str(message)).strip()
    if len(one_line) > 600:
        one_line = one_line[:597] + "..."
    sys.stdout.flush()
    print(f"{PROG}: error: {one_line}", file=sys.stderr)


# ----------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------
def _check_env_id(env_id: str):
    """Raises CLIError unless gymnasium knows ``env_id`` (registry lookup only, nothing is built)."""
    import gymnasium

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as error:
        raise CLIError(f"unknown environment {env_id!r}: {error}") from None


def _make_vec_env(env_id, num_envs, mode="sync"):
    import gymnasium

    try:
        return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    except gymnasium.error.DependencyNotInstalled as error:
        raise CLIError(f"cannot create {env_id!r}: {error}") from None


def _summary(returns) -> str:
    import numpy as np

    return (
        f"mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} "
        f"(min {np.min(returns):.1f}, max {np.max(returns):.1f})"
    )


def _versions() -> dict:
    import platform

    import gymnasium
    import keras
    import tensorflow as tf

    import keras_trpo

    return {
        "keras_trpo": keras_trpo.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "gymnasium": gymnasium.__version__,
        "python": platform.python_version(),
    }


def _resolve_model(path: str, prefer: str = "saved_model") -> tuple[str, str]:
    """``("saved_model" | "keras", resolved path)`` for a SavedModel, .keras file or run directory.

    A run directory resolves to its newest SavedModel, or with ``prefer="keras"`` to its model.keras.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CLIError(f"no such file or directory: {path!r}")
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return "keras", path
        raise CLIError(f"{path!r} is neither a .keras file nor a SavedModel directory")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return "saved_model", path
    versions = [
        int(name)
        for name in os.listdir(path)
        if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
    ]
    if versions:
        return "saved_model", os.path.join(path, str(max(versions)))
    if prefer == "keras" and os.path.isfile(os.path.join(path, KERAS_FILE)):
        return "keras", os.path.join(path, KERAS_FILE)
    if os.path.isdir(os.path.join(path, SAVED_MODEL_DIR)):
        return _resolve_model(os.path.join(path, SAVED_MODEL_DIR))
    if os.path.isfile(os.path.join(path, KERAS_FILE)):
        return "keras", os.path.join(path, KERAS_FILE)
    raise CLIError(
        f"{path!r} is not a SavedModel directory (no saved_model.pb, no integer version sub-directory), "
        "a .keras file or a run directory"
    )


def _load_keras(path: str):
    import keras

    import keras_trpo  # noqa: F401 - registers TRPO for deserialization

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001
        raise CLIError(f"cannot load {path!r} as a keras_trpo model: {error}") from None


def _load_saved_model(path: str):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001
        raise CLIError(f"cannot load the SavedModel {path!r}: {error}") from None
    return loaded


def _signature_specs(function):
    inputs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    return inputs, outputs


def _spec_text(spec) -> str:
    shape = "[" + ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d))
                            for i, d in enumerate(spec.shape.as_list())) + "]"
    return f"{spec.dtype.name} {shape}"


# ----------------------------------------------------------------------
# train
# ----------------------------------------------------------------------
def cmd_train(args) -> int:
    from keras_trpo import presets

    _check_env_id(args.env_id)
    preset = presets.load_preset(args.preset) if args.preset else presets.preset_for_env(args.env_id)
    overrides = dict(args.set)
    if args.num_envs is not None:
        overrides["num_envs"] = args.num_envs
    if args.batch is not None:
        overrides["rollouts.steps"] = args.batch
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    if args.eval_episodes is not None:
        overrides["eval_episodes"] = args.eval_episodes
    base = preset.to_dict()
    # Record only what differs from the preset: runs that differ only in their seed share a plot label.
    overrides = {key: value for key, value in overrides.items() if _dotted_get(base, key) != value}
    try:
        preset = preset.override(overrides)
    except presets.PresetError as error:
        hint = " (use --batch to pick a batch size divisible by --num-envs)" if "multiple of num_envs" in str(error) else ""
        raise CLIError(f"{error}{hint}") from None
    iterations = preset.iterations()

    out = args.out or os.path.join(
        "runs", f"{args.env_id}-{preset.name}-seed{args.seed}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    )
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CLIError(f"output directory {out!r} already exists and is not empty; pass another --out")

    import gymnasium
    import keras
    import numpy as np

    import keras_trpo
    from keras_trpo import callbacks as trpo_callbacks

    if preset.env_id not in (None, args.env_id):
        print(f"Note: preset {preset.name!r} was made for {preset.env_id}; training on {args.env_id}.")
    if args.steps is not None and args.steps < preset.rollouts["steps"]:
        print(f"Note: --steps {args.steps} is less than one iteration; training 1 iteration of "
              f"{preset.rollouts['steps']} env steps.")
    keras.utils.set_random_seed(args.seed)
    try:
        env = preset.make_env(env_id=args.env_id)
    except gymnasium.error.Error as error:
        raise CLIError(f"cannot create {args.env_id!r}: {error}") from None
    try:
        model = preset.build_model(env, seed=args.seed)
        rollouts = preset.build_rollouts(env, model, seed=args.seed)
    except (ValueError, TypeError) as error:
        env.close()
        with_overrides = f" with the overrides {overrides}" if overrides else ""
        raise CLIError(
            f"cannot build TRPO for {args.env_id} from preset {preset.name!r}{with_overrides}: {error}"
        ) from None
    os.makedirs(out, exist_ok=True)
    out = os.path.abspath(out)

    config = {
        "command": " ".join(shlex.quote(a) for a in [PROG, *args.argv]),
        "env_id": args.env_id,
        "preset": preset.name,
        "preset_status": preset.status,
        "preset_source": preset.source,
        "overrides": overrides,
        "seed": args.seed,
        "iterations": iterations,
        "planned_env_steps": iterations * preset.rollouts["steps"],
        **{k: v for k, v in preset.to_dict().items() if k not in ("name", "source", "env_id", "notes", "status")},
        "eval_every": args.eval_every,
        "trpo_config": _jsonable(model.get_config()),
        "versions": _versions(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    with open(os.path.join(out, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    checkpoint_every = args.checkpoint_every or max(1, iterations // 10)
    callback_list = [trpo_callbacks.LineSearchMonitor(patience=5)]
    if args.eval_every:
        callback_list += [
            trpo_callbacks.Evaluation(args.env_id, episodes=preset.eval_episodes, every=args.eval_every,
                                      seed=args.seed + 20_000),
            trpo_callbacks.ExportBest(os.path.join(out, BEST_DIR), max_to_keep=1),
        ]
    if args.verbose == 0:
        callback_list.append(trpo_callbacks.ProgressLogger(every=max(1, iterations // 10)))
    else:
        callback_list.append(trpo_callbacks.StepsPerSecond())
    callback_list += [
        _CSVLogger(os.path.join(out, METRICS_FILE)),
        keras.callbacks.TensorBoard(os.path.join(out, TENSORBOARD_DIR), write_graph=False),
        keras.callbacks.ModelCheckpoint(os.path.join(out, KERAS_FILE), save_freq=checkpoint_every),
    ]

    print(
        f"Training TRPO on {args.env_id} with preset {preset.name} ({preset.status}): {iterations} iterations x "
        f"{preset.rollouts['steps']} env steps, {preset.num_envs} envs, seed {args.seed}",
        flush=True,
    )
    print(f"Run directory: {out}", flush=True)
    interrupted = False
    start = time.perf_counter()
    try:
        model.fit(rollouts, epochs=iterations, verbose=args.verbose, callbacks=callback_list)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\nInterrupted after {rollouts.env_steps} env steps; saving what was trained.", flush=True)
    train_seconds = time.perf_counter() - start
    env.close()

    model.save(os.path.join(out, KERAS_FILE))
    saved_model = model.export(os.path.join(out, SAVED_MODEL_DIR))
    returns = keras_trpo.evaluate(model, args.env_id, episodes=preset.eval_episodes, seed=args.seed + 10_000)
    results = {
        "env_steps": int(rollouts.env_steps),
        "iterations": int(model.policy_version),
        "train_seconds": round(train_seconds, 3),
        "interrupted": interrupted,
        "eval_episodes": len(returns),
        "eval_seed": args.seed + 10_000,
        "eval_returns": returns,
        "eval_mean": float(np.mean(returns)),
        "eval_std": float(np.std(returns)),
        "keras_model": os.path.join(out, KERAS_FILE),
        "saved_model": saved_model,
    }
    with open(os.path.join(out, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(
        f"Trained {rollouts.env_steps} env steps in {train_seconds:.1f} s. Deterministic evaluation over "
        f"{len(returns)} episodes: {_summary(returns)}"
    )
    print(f"Wrote {out}:")
    rows = [
        (CONFIG_FILE, "resolved configuration"),
        (METRICS_FILE, "per-iteration metrics (keras.callbacks.CSVLogger)"),
        (TENSORBOARD_DIR + "/", f"TensorBoard logs: tensorboard --logdir {os.path.join(out, TENSORBOARD_DIR)}"),
        (KERAS_FILE, "Keras checkpoint: keras.models.load_model"),
        (os.path.relpath(saved_model, out) + "/", "SavedModel for TF Serving"),
        (RESULTS_FILE, "final evaluation"),
    ]
    if args.eval_every:
        rows.insert(5, (BEST_DIR + "/", "SavedModel of the best eval_return during training"))
    for name, what in rows:
        print(f"  {name:<22} {what}")
    return 130 if interrupted else 0


def _dotted_get(data, dotted):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


_MISSING = object()


def _csv_logger_class():
    import keras

    class CSVLogger(keras.callbacks.CSVLogger):
        """keras.callbacks.CSVLogger without the empty ``val_*`` columns (fit has no validation data here)."""

        def on_epoch_end(self, epoch, logs=None):
            if self.keys is None and logs:
                self.keys = sorted(logs)
            super().on_epoch_end(epoch, logs)

    return CSVLogger


def _CSVLogger(path):  # noqa: N802 - reads like the class it builds
    return _csv_logger_class()(path)


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ----------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    _check_env_id(args.env_id)
    kind, path = _resolve_model(args.path)
    if args.video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None:
            raise CLIError("--video needs moviepy, which gymnasium's RecordVideo uses to write the file: pip install moviepy")
        if not args.video.endswith(".mp4"):
            raise CLIError(f"--video must name an .mp4 file; got {args.video!r}")

    import gymnasium
    import numpy as np
    import tensorflow as tf

    import keras_trpo

    if kind == "saved_model":
        loaded = _load_saved_model(path)
        if "serving_default" not in loaded.signatures:
            raise CLIError(f"the SavedModel {path!r} has no serving_default signature")
        serving = loaded.signatures["serving_default"]
        inputs, outputs = _signature_specs(serving)
        if list(inputs) != ["observations"] or "actions" not in outputs:
            raise CLIError(
                f"the serving_default signature of {path!r} takes {sorted(inputs)} and returns {sorted(outputs)}; "
                "expected observations -> actions (a SavedModel written by TRPO.export)"
            )
        observation_shape = tuple(inputs["observations"].shape.as_list()[1:])

        def policy(observations):
            return serving(observations=tf.cast(observations, tf.float32))["actions"]

        described = f"SavedModel {path} (serving_default)"
    else:
        policy = _load_keras(path)
        observation_shape = tuple(policy.observation_shape)
        described = f"Keras model {path}"

    env = (
        _make_video_env(args.env_id, args.video)
        if args.video
        else _make_vec_env(args.env_id, num_envs=args.episodes)
    )
    try:
        env_space = getattr(env, "single_observation_space", None) or env.observation_space
        env_actions = getattr(env, "single_action_space", None) or env.action_space
        if kind == "keras" and env_actions != policy.action_space:
            raise CLIError(
                f"the policy acts in {policy.action_space} but {args.env_id} has actions {env_actions}; "
                "evaluate it on the environment it was trained on"
            )
        if tuple(env_space.shape) != observation_shape:
            raise CLIError(
                f"the policy takes observations of shape {list(observation_shape)} but {args.env_id} has "
                f"{list(env_space.shape)}; evaluate it on the environment it was trained on"
            )
        try:
            returns = keras_trpo.evaluate(policy, env, episodes=args.episodes, seed=args.seed)
        except gymnasium.error.DependencyNotInstalled as error:
            raise CLIError(f"cannot run {args.env_id!r}: {error}") from None
    finally:
        env.close()
    if args.video:
        _collect_video(env, args.video)
    if args.json:
        print(json.dumps({"path": path, "env_id": args.env_id, "returns": returns, "mean": float(np.mean(returns))}))
    else:
        print(
            f"{args.env_id}: {len(returns)} episodes with the deterministic policy of {described}: {_summary(returns)}"
        )
        print("returns: " + " ".join(f"{r:.1f}" for r in returns))
        if args.video:
            print(f"video of the first episode: {args.video}")
    return 0


def _make_video_env(env_id, video_path):
    import tempfile

    import gymnasium
    from gymnasium.wrappers import RecordVideo

    # RecordVideo wants a folder of its own (it warns when one exists): a fresh one inside a temporary directory.
    folder = os.path.join(tempfile.mkdtemp(prefix="keras-trpo-video-"), "episodes")
    # pygame renders off-screen: no display or sound device needed (and no SDL complaints about them).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array")
    except gymnasium.error.Error as error:
        raise CLIError(f"cannot render {env_id!r} for --video: {error}") from None
    env = RecordVideo(env, video_folder=folder, episode_trigger=lambda episode: episode == 0,
                      name_prefix="episode", disable_logger=True)
    env.keras_trpo_video_folder = folder
    return env


def _collect_video(env, video_path):
    import glob
    import shutil

    folder = env.keras_trpo_video_folder
    videos = sorted(glob.glob(os.path.join(folder, "*.mp4")))
    if not videos:
        raise CLIError(f"no video was written by RecordVideo in {folder}")
    os.makedirs(os.path.dirname(os.path.abspath(video_path)), exist_ok=True)
    shutil.move(videos[0], video_path)
    shutil.rmtree(os.path.dirname(folder), ignore_errors=True)


# ----------------------------------------------------------------------
# export
# ----------------------------------------------------------------------
def cmd_export(args) -> int:
    kind, path = _resolve_model(args.checkpoint, prefer="keras")
    if kind != "keras":
        raise CLIError(
            f"{args.checkpoint!r} is already a SavedModel; export takes a .keras checkpoint (or a run directory "
            "holding model.keras)"
        )
    model = _load_keras(path)
    try:
        written = model.export(args.out, overwrite=args.overwrite)
    except (FileExistsError, ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    print(f"Exported {path} as a SavedModel for TF Serving: {written}")
    return 0


# ----------------------------------------------------------------------
# plot
# ----------------------------------------------------------------------
def cmd_plot(args) -> int:
    from keras_trpo import plotting

    if not re.search(r"\.(png|svg|pdf|jpg|jpeg)$", args.output, re.IGNORECASE):
        raise CLIError(f"-o must name a .png, .svg, .pdf or .jpg file; got {args.output!r}")
    try:
        run_dirs = plotting.find_runs(args.runs)
        runs = [plotting.load_run(path) for path in run_dirs]
        plotting.plot_runs(run_dirs, args.output, metric=args.metric, smooth=args.smooth, title=args.title)
    except plotting.RunError as error:
        raise CLIError(str(error)) from None
    labels = {}
    for run in runs:
        labels.setdefault(run.label, []).append(run.path)
    described = "; ".join(
        f"{label}: {len(paths)} run{'s' if len(paths) > 1 else ''}{' (mean, min-max band)' if len(paths) > 1 else ''}"
        for label, paths in labels.items()
    )
    print(f"Wrote {args.output}: {args.metric} against env steps for {described}")
    return 0


# ----------------------------------------------------------------------
# info
# ----------------------------------------------------------------------
def cmd_info(args) -> int:
    path = args.path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE)):
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
        print(f"Run {path}: {config.get('env_id')} with preset {config.get('preset')}, seed {config.get('seed')}, "
              f"{config.get('iterations')} iterations x {config.get('rollouts', {}).get('steps')} env steps")
        results_path = os.path.join(path, RESULTS_FILE)
        if os.path.isfile(results_path):
            with open(results_path, encoding="utf-8") as f:
                results = json.load(f)
            print(f"  final evaluation: mean return {results['eval_mean']:.1f} over {results['eval_episodes']} episodes; "
                  f"{results['env_steps']} env steps in {results['train_seconds']:.1f} s")
    kind, resolved = _resolve_model(path)
    if kind == "saved_model":
        _info_saved_model(resolved)
    else:
        _info_keras(resolved)
    return 0


def _info_saved_model(path):
    import numpy as np

    import tensorflow as tf

    loaded = _load_saved_model(path)
    try:
        shapes = [shape for name, shape in tf.train.list_variables(os.path.join(path, "variables", "variables"))
                  if name.endswith("/.ATTRIBUTES/VARIABLE_VALUE")]
    except Exception:  # noqa: BLE001 - a SavedModel without variables
        shapes = []
    print(f"SavedModel {path}")
    print(f"  {len(shapes)} variables, {sum(int(np.prod(s)) for s in shapes):,} values")
    signatures = loaded.signatures
    print(f"  {len(signatures)} signatures (N: batch size)")
    for name in sorted(signatures, key=lambda n: (n != "serving_default", n)):
        inputs, outputs = _signature_specs(signatures[name])
        print(f"  {name}")
        for title, specs in (("inputs", inputs), ("outputs", outputs)):
            for index, (key, spec) in enumerate(sorted(specs.items())):
                label = title if index == 0 else ""
                print(f"    {label:<8} {key:<14} {_spec_text(spec)}")


def _info_keras(path):
    import numpy as np

    model = _load_keras(path)
    config = model.get_config()
    print(f"Keras model {path}: {type(model).__name__} {model.name!r}")
    print(f"  observation space: {model.observation_space}")
    print(f"  action space:      {model.action_space} ({type(model.head).__name__})")
    print(f"  policy network:    {list(model.hidden_units)} {model.activation}; value network: "
          f"{list(model.value_hidden_units)} {model.activation}")
    policy = sum(int(np.prod(v.shape)) for v in model.policy_variables)
    value = sum(int(np.prod(v.shape)) for v in model.value_variables)
    print(f"  parameters:        policy {policy:,}, value {value:,}; {model.policy_version} TRPO iterations so far")
    hyper = {k: config[k] for k in ("max_kl", "damping", "cg_iterations", "backtrack_coefficient",
                                     "backtrack_iterations", "fvp_fraction", "value_epochs", "value_batch_size",
                                     "normalize_observations") if k in config}
    print("  hyperparameters:   " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in hyper.items()))
    print("  export it for TF Serving with: keras-trpo export " + shlex.quote(path) + " OUT")


# ----------------------------------------------------------------------
# presets
# ----------------------------------------------------------------------
def cmd_presets(args) -> int:
    from keras_trpo import presets

    if args.name:
        print(json.dumps(presets.load_preset(args.name).to_dict(), indent=2))
        return 0
    for name in presets.preset_names():
        preset = presets.load_preset(name)
        steps = preset.rollouts["steps"]
        print(f"{name:<16} {preset.status:<8} {preset.total_steps:>9,} steps, {preset.num_envs} envs x "
              f"{steps // preset.num_envs} steps/iteration, max_kl {preset.model.get('max_kl', 0.01)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
