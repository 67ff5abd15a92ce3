"""``keras-trpo evaluate``, ``export`` and ``info``: the commands that load a trained policy.

Each takes a SavedModel (directory or base directory), a .keras file or a run directory, which
keras_trpo.cli.policies finds (resolve_model), loads and checks against the environment.
TensorFlow and gymnasium are imported when a command runs.

``evaluate`` makes the environment as training did: with the ``env_modules``, ``env_kwargs`` and
``wrappers`` of ``--preset``, else of the run directory the model comes from (its config.json), else
of the preset of ENV_ID (see _env_preset). A SavedModel is evaluated through its ``serving_default``
signature (policies.ServingPolicy), which takes one input per observation array (``observations``, or
one per ``Dict`` key) in the observation space's dtype. ``--video`` records the first episode of
sub-environment 0 on the same environments and seeds (keras_trpo.evaluation.video_wrapper), so the
returns are those without it. ``--import MODULE`` (keras_trpo.cli.imports) imports the user's modules
before a .keras file whose networks are custom registered classes is loaded.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil

from keras_trpo import presets
from keras_trpo.cli.common import (
    CONFIG_FILE,
    KERAS_FILE,
    RESULTS_FILE,
    CLIError,
    check_env_id,
    describe_budget,
    returns_summary,
)
from keras_trpo.cli.imports import check_imports, import_modules
from keras_trpo.cli.policies import (
    ServingPolicy,
    check_keras_policy,
    load_keras,
    load_saved_model,
    load_serving,
    resolve_model,
    signature_specs,
    spec_text,
)
from keras_trpo.cli.startup import load_tensorflow


# ----------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    env_preset, env_source = _env_preset(args)
    env_preset.load_env_dependencies()  # registers the env ids of minigrid, ale_py, ...
    check_env_id(args.env_id)
    # --stochastic on a run directory samples as train's final evaluation did: its model.keras, NumPy's sampler.
    kind, path = resolve_model(args.path, prefer="keras" if args.stochastic else "saved_model")
    modules = check_imports(args.imports)
    _check_video(args.video)
    load_tensorflow(args.tf_logs)
    import_modules(modules)
    import gymnasium
    import numpy as np

    import keras_trpo

    if kind == "saved_model":
        # loaded owns the variables: keep it referenced. With --stochastic it must have a sample signature.
        loaded, serving, inputs, outputs = load_serving(path, sampling=args.stochastic)
        described = f"SavedModel {path} ({'sample' if args.stochastic else 'serving_default'})"
    else:
        policy = load_keras(path)
        described = f"Keras model {path}"

    # The same sub-environments and seeds with or without --video: only sub-environment 0 records its first episode.
    video_folder = _video_folder() if args.video else None
    try:  # whatever happens, no keras-trpo-video-* directory is left behind
        env = _make_vec_env(env_preset, args.env_id, num_envs=args.episodes, video_folder=video_folder)
        try:
            env_space = getattr(env, "single_observation_space", None) or env.observation_space
            env_actions = getattr(env, "single_action_space", None) or env.action_space
            if kind == "saved_model":
                policy = ServingPolicy(serving, inputs, outputs["actions"], env_space, env_actions, args.env_id,
                                       loaded.signatures.get("sample"), loaded.signatures.get("get_initial_state"))
            else:
                check_keras_policy(policy, env_space, env_actions, args.env_id)
            try:
                returns = keras_trpo.evaluate(policy, env, episodes=args.episodes, seed=args.seed,
                                              deterministic=not args.stochastic)
            except gymnasium.error.DependencyNotInstalled as error:
                raise CLIError(f"cannot run {args.env_id!r}: {error}") from None
        finally:
            env.close()
        if args.video:
            _collect_video(video_folder, args.video)
    finally:
        if video_folder is not None:
            shutil.rmtree(os.path.dirname(video_folder), ignore_errors=True)
    if args.json:
        print(json.dumps({"path": path, "env_id": args.env_id, "deterministic": not args.stochastic, "returns": returns,
                          "mean": float(np.mean(returns))}))
    else:
        print(
            f"{args.env_id}: {len(returns)} episodes with the {'sampling' if args.stochastic else 'deterministic'} "
            f"policy of {described}: {returns_summary(returns)}"
        )
        print("returns: " + " ".join(f"{r:.1f}" for r in returns))
        if env_preset.env_kwargs or env_preset.wrappers:
            print(f"environment: {_describe_env(env_preset)} ({env_source})")
        if args.video:
            print(f"video of the first episode: {args.video}")
    return 0



def _env_preset(args):
    """``(preset, where it comes from)``: the preset whose env settings make ENV_ID for ``evaluate``.

    ``--preset``; else the run directory holding the model (its config.json records the settings
    it trained with); else the preset of ENV_ID (:func:`keras_trpo.presets.preset_for_env`).
    """
    if getattr(args, "preset", None):
        preset = presets.load_preset(args.preset)
        return preset, f"preset {preset.name}"
    run = _run_directory_of(args.path)
    if run is not None:
        with open(os.path.join(run, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
        settings = {key: config.get(key, value) for key, value in
                    (("env_modules", []), ("env_kwargs", {}), ("wrappers", []))}
        preset = presets.load_preset(presets.DEFAULT_PRESET).override(settings)
        return preset, f"the settings of the run directory {run}"
    preset = presets.preset_for_env(args.env_id)
    return preset, f"preset {preset.name}"


def _run_directory_of(path):
    """The run directory (config.json and model.keras) that ``path`` is or lies in (two levels deep at most), if any."""
    if not os.path.exists(path):
        return None
    candidates = [os.path.abspath(path)]
    for _ in range(2):  # run/model.keras, run/saved_model, run/saved_model/1, run/best_saved_model/1
        candidates.append(os.path.dirname(candidates[-1]))
    for directory in candidates:
        config = os.path.join(directory, CONFIG_FILE)
        if os.path.isfile(config) and os.path.isfile(os.path.join(directory, KERAS_FILE)):
            return directory
    return None


def _describe_env(preset) -> str:
    wrappers = ", ".join(w["class"].rpartition(".")[2] + (f"({w['kwargs']})" if w.get("kwargs") else "")
                         for w in preset.wrappers)
    parts = ([f"env_kwargs {preset.env_kwargs}"] if preset.env_kwargs else []) + \
        ([f"wrappers {wrappers}"] if wrappers else [])
    return "; ".join(parts)


def _check_video(video):
    if not video:
        return
    import importlib.util

    if importlib.util.find_spec("moviepy") is None:
        raise CLIError("--video needs moviepy, which gymnasium's RecordVideo writes the video with: "
                       'pip install "keras-trpo[video]"')
    if not video.endswith(".mp4"):
        raise CLIError(f"--video must name an .mp4 file; got {video!r}")


def _video_folder():
    import tempfile

    # RecordVideo wants a folder of its own (it warns when one exists): a fresh one inside a temporary directory.
    # pygame renders off-screen: no display or sound device needed (and no SDL complaints about them).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    return os.path.join(tempfile.mkdtemp(prefix="keras-trpo-video-"), "episodes")


def _collect_video(folder, video_path):
    video = os.path.join(folder, "env0-episode-0.mp4")  # keras_trpo.evaluation.video_wrapper's name
    if not os.path.isfile(video):
        raise CLIError(f"no video was written by RecordVideo in {folder}")
    os.makedirs(os.path.dirname(os.path.abspath(video_path)), exist_ok=True)
    shutil.move(video, video_path)


def _make_vec_env(env_preset, env_id, num_envs, mode="sync", video_folder=None):
    """The preset's vector env; with ``video_folder``, rendering images, sub-environment 0 recording its first episode."""
    import gymnasium

    video = {}
    if video_folder is not None:
        from keras_trpo.evaluation import video_wrapper

        video = {"render_mode": "rgb_array",
                 "extra_wrappers": [video_wrapper(video_folder, [1] + [0] * (num_envs - 1))]}
    try:
        return env_preset.make_env(env_id, num_envs=num_envs, vectorization_mode=mode, **video)
    except (gymnasium.error.Error, TypeError) as error:
        what = "render" if video_folder is not None else "create"
        raise CLIError(f"cannot {what} {env_id!r}{' for --video' if video else ''}: {error}") from None


# ----------------------------------------------------------------------
# export
# ----------------------------------------------------------------------
#: ``--format`` of ``keras-trpo export``, and how its output is described.
EXPORT_FORMATS = ("saved_model", "litert", "onnx")
_FORMAT_NAMES = {"saved_model": "a SavedModel for TF Serving", "litert": "LiteRT (TFLite)", "onnx": "ONNX"}


def cmd_export(args) -> int:
    kind, path = resolve_model(args.checkpoint, prefer="keras")
    if kind != "keras":
        raise CLIError(
            f"{args.checkpoint!r} is already a SavedModel; export takes a .keras checkpoint (or a run directory "
            "holding model.keras)"
        )
    if args.warmup and args.format != "saved_model":
        raise CLIError(f"--warmup is for --format saved_model (TF Serving's warmup file); got --format {args.format}. "
                       "Drop --warmup, or export a SavedModel")
    modules = check_imports(args.imports)
    load_tensorflow(args.tf_logs)
    if args.warmup:  # the missing extra before the model is loaded
        from keras_trpo.export_warmup import SERVING_EXTRA, check_warmup

        try:
            check_warmup(True)
        except ImportError:
            raise CLIError("--warmup writes TF Serving's PredictionLog records with tensorflow-serving-api, which is "
                           f"not installed (the 'serving' extra): {SERVING_EXTRA}") from None
    if args.format == "saved_model":
        _check_version_dir(args.out, args.overwrite)
    else:
        _check_out_file(args.out, args.format, args.overwrite)
    import_modules(modules)
    model = load_keras(path)
    try:
        written = model.export(args.out, format=args.format, overwrite=args.overwrite, warmup=args.warmup)
    except (FileExistsError, ValueError, TypeError, ImportError) as error:
        raise CLIError(str(error)) from None
    print(f"Exported {path} as {_FORMAT_NAMES[args.format]}: {written}")
    if args.warmup:
        from keras_trpo.export_warmup import WARMUP_PATH

        print(f"TF Serving warmup requests: {os.path.join(written, WARMUP_PATH)}")
    return 0


def _check_version_dir(out, overwrite):
    """Before loading the model: OUT must be a usable SavedModel base or version directory (the flag, not
    TRPO.export's ``overwrite=True``, in the message)."""
    from keras_trpo.export_paths import SUFFIXES, file_format, resolve_version_dir

    fmt = file_format(out)
    if fmt is not None:  # a SavedModel is a directory: it would be named policy.tflite
        raise CLIError(f"OUT {out!r} names a {SUFFIXES[fmt]} file, but --format saved_model writes a directory; "
                       f"pass --format {fmt} to write that file, or a directory path")
    try:
        resolve_version_dir(out, overwrite=overwrite)
    except FileExistsError:
        parent = os.path.dirname(os.path.normpath(os.path.abspath(out)))
        raise CLIError(f"OUT {out!r} is an existing, non-empty version directory; pass --overwrite to replace "
                       f"it, or pass its parent {parent!r} to write the next version") from None
    except ValueError as error:
        raise CLIError(str(error)) from None


def _check_out_file(out, fmt, overwrite):
    """Before loading the model: OUT must be a new (or, with --overwrite, replaceable) file of the format's suffix."""
    from keras_trpo.export_paths import SUFFIXES, resolve_file_path

    try:
        resolve_file_path(out, suffix=SUFFIXES[fmt], format=fmt, overwrite=overwrite)
    except FileExistsError:
        raise CLIError(f"OUT {out!r} exists; pass --overwrite to replace it, or another path") from None
    except ValueError:
        raise CLIError(f"OUT must name a new {SUFFIXES[fmt]} file for --format {fmt} (e.g. policy{SUFFIXES[fmt]}); "
                       f"got {out!r}") from None


# ----------------------------------------------------------------------
# info
# ----------------------------------------------------------------------
def cmd_info(args) -> int:
    path = args.path
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE)):
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            config = json.load(f)
        budget = (config.get("iterations"), config.get("rollouts", {}).get("steps"), config.get("num_envs"))
        budget = describe_budget(*budget) if all(isinstance(n, int) for n in budget) else "budget unknown"
        print(f"Run {path}: {config.get('env_id')} with preset {config.get('preset')}, seed {config.get('seed')}, {budget}")
        results_path = os.path.join(path, RESULTS_FILE)
        if os.path.isfile(results_path):
            with open(results_path, encoding="utf-8") as f:
                results = json.load(f)
            print(f"  final evaluation: mean return {results['eval_mean']:.1f} over {results['eval_episodes']} episodes; "
                  f"{results['env_steps']:,} env steps in {results['train_seconds']:.1f} s")
    kind, resolved = resolve_model(path)
    modules = check_imports(args.imports)
    load_tensorflow(args.tf_logs)
    import_modules(modules)
    if kind == "saved_model":
        _info_saved_model(resolved)
    else:
        _info_keras(resolved)
    return 0


def _info_saved_model(path):
    import numpy as np

    import tensorflow as tf

    loaded = load_saved_model(path)
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
        inputs, outputs = signature_specs(signatures[name])
        print(f"  {name}")
        for title, specs in (("inputs", inputs), ("outputs", outputs)):
            for index, (key, spec) in enumerate(sorted(specs.items())):
                label = title if index == 0 else ""
                print(f"    {label:<8} {key:<14} {spec_text(spec)}")


def _info_keras(path):
    import numpy as np

    model = load_keras(path)
    config = model.get_config()
    print(f"Keras model {path}: {type(model).__name__} {model.name!r}")
    print(f"  observation space: {model.observation_space}")
    print(f"  action space:      {model.action_space} ({type(model.head).__name__})")
    structured = model.observation_spec.structured
    for which, units in (("policy", model.hidden_units), ("value", model.value_hidden_units)):
        described = _describe_network(config.get(f"{which}_network"), units, model.activation, structured)
        print(f"  {which + ' network:':<18} {described}")
    policy = sum(int(np.prod(v.shape)) for v in model.policy_variables)
    value = sum(int(np.prod(v.shape)) for v in model.value_variables)
    print(f"  parameters:        policy {policy:,}, value {value:,}; {model.policy_version} TRPO iterations so far")
    hyper = {k: config[k] for k in ("max_kl", "damping", "cg_iterations", "backtrack_coefficient",
                                     "backtrack_iterations", "fvp_fraction", "value_epochs", "value_batch_size",
                                     "normalize_observations") if k in config}
    print("  hyperparameters:   " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in hyper.items()))
    print("  export it for TF Serving with: keras-trpo export " + shlex.quote(path) + " OUT")


def _describe_network(network, units, activation, structured=False) -> str:
    """A network as TRPO's config stores it: ``None`` (the default MLP), a name, or a serialized Keras object."""
    if network is None:
        from keras_trpo.actor_critic import DEFAULT_UNITS

        widths = ", ".join(str(u) for u in (DEFAULT_UNITS if units is None else units))
        return f"default MLP ({widths} {activation})"
    if isinstance(network, str):
        # A name builds networks.Combined for a Dict space: the CNN on each image entry.
        return f"{network} (networks.Combined: {network} on the image entries)" if structured else network
    if isinstance(network, dict):
        name = (network.get("config") or {}).get("name")
        return f"{network.get('class_name', 'unknown class')} {name!r}" if name else str(network.get("class_name"))
    return str(network)
