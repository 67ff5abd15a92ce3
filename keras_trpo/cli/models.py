"""``keras-trpo evaluate``, ``export`` and ``info``: the commands that load a trained policy.

Each takes a SavedModel (directory or base directory), a .keras file or a run directory
(see _resolve_model). TensorFlow and gymnasium are imported when a command runs.

``evaluate`` makes the environment as training did: with the ``env_modules``, ``env_kwargs`` and
``wrappers`` of ``--preset``, else of the run directory the model comes from (its config.json), else
of the preset of ENV_ID (see _env_preset). A SavedModel's ``serving_default`` takes one input per
observation array (``observations``, or one per ``Dict`` key) in the observation space's dtype.
"""

from __future__ import annotations

import json
import os
import shlex

from keras_trpo import presets
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
    env_preset, env_source = _env_preset(args)
    env_preset.load_env_dependencies()  # registers the env ids of minigrid, ale_py, ...
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

    import keras_trpo

    if kind == "saved_model":
        loaded = _load_saved_model(path)
        if "serving_default" not in loaded.signatures:
            raise CLIError(f"the SavedModel {path!r} has no serving_default signature")
        serving = loaded.signatures["serving_default"]
        inputs, outputs = _signature_specs(serving)
        if "actions" not in outputs or not inputs or any(k in inputs for k in ("seed", "actions")):
            raise CLIError(
                f"the serving_default signature of {path!r} takes {sorted(inputs)} and returns {sorted(outputs)}; "
                "expected observations -> actions (a SavedModel written by TRPO.export)"
            )
        described = f"SavedModel {path} (serving_default)"
    else:
        policy = _load_keras(path)
        described = f"Keras model {path}"

    env = (
        _make_video_env(env_preset, args.env_id, args.video)
        if args.video
        else _make_vec_env(env_preset, args.env_id, num_envs=args.episodes)
    )
    try:
        env_space = getattr(env, "single_observation_space", None) or env.observation_space
        env_actions = getattr(env, "single_action_space", None) or env.action_space
        if kind == "saved_model":
            policy = _ServingPolicy(serving, inputs, outputs["actions"], env_space, env_actions, args.env_id)
        elif env_actions != policy.action_space:
            raise CLIError(
                f"the policy acts in {policy.action_space} but {args.env_id} has actions {env_actions}; "
                "evaluate it on the environment it was trained on"
            )
        elif not policy.observation_spec.matches(env_space):
            spec = policy.observation_spec
            shape = None if spec.structured else list(spec.leaves[0].shape)
            raise CLIError(_observation_mismatch(spec.describe(), shape, env_space, args.env_id))
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
        if env_preset.env_kwargs or env_preset.wrappers:
            print(f"environment: {_describe_env(env_preset)} ({env_source})")
        if args.video:
            print(f"video of the first episode: {args.video}")
    return 0


class _ServingPolicy:
    """The ``serving_default`` signature of a SavedModel, called the way :func:`keras_trpo.evaluate` calls
    a TRPO model: it has the ``observation_spec`` and spaces of the environment (checked against the
    signature here, once) and feeds each observation array to its input, cast to the input's dtype."""

    def __init__(self, serving, inputs, actions, env_space, env_actions, env_id):
        from keras_trpo.observations import ObservationSpec

        try:
            spec = ObservationSpec(env_space)
        except TypeError as error:
            raise CLIError(f"{env_id} has observations that a keras_trpo policy cannot take: {error}") from None
        names = list(spec.keys) if spec.structured else ["observations"]
        taken = _describe_inputs(inputs)
        shape = inputs["observations"].shape.as_list()[1:] if list(inputs) == ["observations"] else None
        if sorted(inputs) != sorted(names):
            raise CLIError(_observation_mismatch(taken, shape, env_space, env_id))
        for name, leaf in zip(names, spec.leaves):
            wanted = inputs[name]
            integer_input = wanted.dtype.is_integer or wanted.dtype.is_bool
            if wanted.shape.as_list()[1:] != list(leaf.shape) or (integer_input and leaf.is_float):
                raise CLIError(_observation_mismatch(taken, shape, env_space, env_id))
        if not _actions_match(actions, env_actions):
            raise CLIError(f"the policy returns actions {_spec_text(actions)} but {env_id} has actions {env_actions}; "
                           "evaluate it on the environment it was trained on")
        self.serving, self.inputs, self.names = serving, inputs, names
        self.observation_spec, self.observation_space, self.action_space = spec, env_space, env_actions

    def __call__(self, observations):
        import tensorflow as tf

        arrays = self.observation_spec.flatten(observations)
        feed = {name: tf.cast(x, self.inputs[name].dtype) for name, x in zip(self.names, arrays)}
        return self.serving(**feed)["actions"]


def _describe_inputs(inputs) -> str:
    """A signature's observation inputs as ObservationSpec.describe() writes a space: ``[N, 4] float32``
    or ``{'direction': [N] int64, 'image': [N, 7, 7, 3] uint8}``."""

    def one(spec):
        return "[" + ", ".join(["N"] + ["?" if d is None else str(d) for d in spec.shape.as_list()[1:]]) + \
            f"] {spec.dtype.name}"

    if list(inputs) == ["observations"]:
        return one(inputs["observations"])
    return "{" + ", ".join(f"{key!r}: {one(inputs[key])}" for key in sorted(inputs)) + "}"


def _observation_mismatch(taken: str, taken_shape, env_space, env_id) -> str:
    """One line: what the policy takes (``taken``; ``taken_shape`` when it is one array), what the env gives."""
    from keras_trpo.observations import ObservationSpec

    hint = "evaluate it on the environment it was trained on (with the wrappers of its preset: --preset)"
    try:
        spec = ObservationSpec(env_space)
    except TypeError:
        return f"the policy takes observations {taken} but {env_id} has {env_space}; {hint}"
    if taken_shape is not None and not spec.structured and list(taken_shape) != list(spec.leaves[0].shape):
        return (f"the policy takes observations of shape {list(taken_shape)} but {env_id} has "
                f"{list(spec.leaves[0].shape)}; {hint}")
    return f"the policy takes observations {taken} but {env_id} has {spec.describe()}; {hint}"


def _actions_match(spec, space) -> bool:
    """Whether a signature's ``actions`` output (float32 for Box, int32 otherwise) fits the action space."""
    import gymnasium

    shape = spec.shape.as_list()[1:]
    if isinstance(space, gymnasium.spaces.Box):
        return spec.dtype.is_floating and shape == list(space.shape)
    if isinstance(space, gymnasium.spaces.Discrete):
        return spec.dtype.is_integer and shape == []
    if isinstance(space, (gymnasium.spaces.MultiDiscrete, gymnasium.spaces.MultiBinary)):
        return spec.dtype.is_integer and shape == list(space.shape)
    return True  # keras_trpo.evaluate reports what it cannot run


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


def _make_video_env(env_preset, env_id, video_path):
    import tempfile

    import gymnasium
    from gymnasium.wrappers import RecordVideo

    # RecordVideo wants a folder of its own (it warns when one exists): a fresh one inside a temporary directory.
    folder = os.path.join(tempfile.mkdtemp(prefix="keras-trpo-video-"), "episodes")
    # pygame renders off-screen: no display or sound device needed (and no SDL complaints about them).
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", **env_preset.env_kwargs)
    except (gymnasium.error.Error, TypeError) as error:
        raise CLIError(f"cannot render {env_id!r} for --video: {error}") from None
    for wrapper in env_preset.load_env_dependencies():
        env = wrapper(env)
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


def _make_vec_env(env_preset, env_id, num_envs, mode="sync"):
    import gymnasium

    try:
        return env_preset.make_env(env_id, num_envs=num_envs, vectorization_mode=mode)
    except (gymnasium.error.Error, TypeError) as error:
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
