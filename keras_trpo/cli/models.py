"""``keras-trpo evaluate``, ``export`` and ``info``: the commands that load a trained policy.

Each takes a SavedModel (directory or base directory), a .keras file or a run directory
(see _resolve_model). TensorFlow and gymnasium are imported when a command runs.
"""

from __future__ import annotations

import json
import os
import shlex

from keras_trpo.cli.common import (
    CONFIG_FILE,
    KERAS_FILE,
    RESULTS_FILE,
    SAVED_MODEL_DIR,
    CLIError,
    check_env_id,
    describe_budget,
    returns_summary,
)
from keras_trpo.cli.startup import load_tensorflow


# ----------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    check_env_id(args.env_id)
    kind, path = _resolve_model(args.path)
    if args.video:
        import importlib.util

        if importlib.util.find_spec("moviepy") is None:
            raise CLIError("--video needs moviepy, which gymnasium's RecordVideo uses to write the file: pip install moviepy")
        if not args.video.endswith(".mp4"):
            raise CLIError(f"--video must name an .mp4 file; got {args.video!r}")

    load_tensorflow(args.tf_logs)
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
            f"{args.env_id}: {len(returns)} episodes with the deterministic policy of {described}: {returns_summary(returns)}"
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


def _make_vec_env(env_id, num_envs, mode="sync"):
    import gymnasium

    try:
        return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    except gymnasium.error.DependencyNotInstalled as error:
        raise CLIError(f"cannot create {env_id!r}: {error}") from None


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
    load_tensorflow(args.tf_logs)
    model = _load_keras(path)
    try:
        written = model.export(args.out, overwrite=args.overwrite)
    except (FileExistsError, ValueError, TypeError) as error:
        raise CLIError(str(error)) from None
    print(f"Exported {path} as a SavedModel for TF Serving: {written}")
    return 0


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
    kind, resolved = _resolve_model(path)
    load_tensorflow(args.tf_logs)
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
# Loading what the commands take
# ----------------------------------------------------------------------
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

    from keras_trpo.model import TRPO  # noqa: F401 - registers TRPO for deserialization

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
