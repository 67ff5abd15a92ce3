"""``keras-trpo train``: :func:`keras_trpo.training.train` plus a run directory around it.

The run directory holds config.json (written before the first iteration), metrics.csv and
tensorboard/ (written by callbacks during training), model.keras (every tenth of the run and
at the end), saved_model/ (at the end) and results.json (the final evaluation). TensorFlow is
imported when the command runs, not with this module.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex

from keras_trpo import presets
from keras_trpo.cli.common import (
    BEST_DIR,
    CONFIG_FILE,
    KERAS_FILE,
    METRICS_FILE,
    PROG,
    RESULTS_FILE,
    SAVED_MODEL_DIR,
    TENSORBOARD_DIR,
    CLIError,
    check_env_id,
    describe_budget,
    returns_summary,
)
from keras_trpo.cli.startup import load_tensorflow


def cmd_train(args) -> int:
    preset, overrides = _preset(args)
    # Before the env id is looked up: env_modules register environments (minigrid, ale_py); a missing
    # package or wrapper fails here, in one line, before TensorFlow loads.
    preset.load_env_dependencies()
    _check_env_id(args.env_id, preset)
    env_name = args.env_id.replace("/", "-")  # ALE/Pong-v5: one directory, not two
    out = args.out or os.path.join(
        "runs", f"{env_name}-{preset.name}-seed{args.seed}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    )
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CLIError(f"output directory {out!r} already exists and is not empty; pass another --out")

    # The preset's setting (1 for the MLP presets) warns if it cannot apply; --intra-op-threads is an error then.
    load_tensorflow(args.tf_logs, intra_op_threads=preset.intra_op_threads, strict=args.intra_op_threads is not None)
    from keras_trpo import training

    if preset.env_id not in (None, args.env_id):
        print(f"Note: preset {preset.name!r} was made for {preset.env_id}; training on {args.env_id}.")
    if args.steps is not None and args.steps < preset.rollouts["steps"]:
        print(f"Note: --steps {args.steps:,} is less than one iteration; training 1 iteration of "
              f"{preset.rollouts['steps']:,} env steps.")
    run = _RunDirectory(os.path.abspath(out), args, preset, overrides)
    try:
        result = training.train(
            preset, args.env_id, seed=args.seed, callbacks=run.callbacks(), verbose=args.verbose,
            before_fit=run.start, after_fit=run.save, on_interrupt=run.interrupted,
        )  # fmt: skip
    except training.EnvCreationError as error:
        raise CLIError(f"cannot create {args.env_id!r}: {error}") from None
    except training.ModelBuildError as error:
        with_overrides = f" with the overrides {overrides}" if overrides else ""
        raise CLIError(
            f"cannot build TRPO for {args.env_id} from preset {preset.name!r}{with_overrides}: {error}"
        ) from None
    finally:
        run.close()
    run.finish(result)
    return 130 if result.interrupted else 0


def _check_env_id(env_id, preset):
    try:
        check_env_id(env_id)
    except CLIError as error:
        if preset.name == env_id and preset.env_id not in (None, env_id):  # keras-trpo train Pong-v5
            raise CLIError(f"{error} (the preset {preset.name} is for {preset.env_id}: "
                           f"{PROG} train {preset.env_id})") from None
        raise


def _preset(args):
    """The preset with the command line's overrides applied, and those overrides (the values that differ)."""
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
    if args.intra_op_threads is not None:
        overrides["intra_op_threads"] = args.intra_op_threads
    base = preset.to_dict()
    # Record only what differs from the preset: runs that differ only in their seed share a plot label.
    overrides = {key: value for key, value in overrides.items() if _dotted_get(base, key) != value}
    try:
        return preset.override(overrides), overrides
    except presets.PresetError as error:
        hint = " (use --batch to pick a batch size divisible by --num-envs)" if "multiple of num_envs" in str(error) else ""
        raise CLIError(f"{error}{hint}") from None


class _RunDirectory:
    """The outputs of one ``keras-trpo train`` run in ``out`` (an absolute path), created only once
    the model is built, so that invalid hyperparameters leave no directory behind."""

    def __init__(self, out, args, preset, overrides):
        self.out, self.args, self.preset, self.overrides = out, args, preset, overrides
        self.iterations = preset.iterations()
        self.saved_model = None
        self.eval_env = None  # --eval-every: the preset's env (its wrappers), made by callbacks()

    def path(self, name):
        return os.path.join(self.out, name)

    def callbacks(self) -> list:
        """The fit callbacks: those that add to the logs, the progress report, then those that write them."""
        import keras

        from keras_trpo import callbacks, training

        iterations = self.iterations
        checkpoint_every = self.args.checkpoint_every or max(1, iterations // 10)
        callback_list = [callbacks.LineSearchMonitor(patience=5)]
        if self.args.eval_every:
            episodes = self.preset.eval_episodes
            self.eval_env = training.make_env(self.preset, self.args.env_id, num_envs=episodes,
                                              vectorization_mode="sync")
            callback_list += [
                callbacks.Evaluation(self.eval_env, episodes=episodes, every=self.args.eval_every,
                                     seed=self.args.seed + training.PERIODIC_EVAL_SEED_OFFSET),
                callbacks.ExportBest(self.path(BEST_DIR), max_to_keep=1),
            ]
        return callback_list + [
            training.progress_callback(iterations, self.args.verbose),
            _CSVLogger(self.path(METRICS_FILE)),
            keras.callbacks.TensorBoard(self.path(TENSORBOARD_DIR), write_graph=False),
            keras.callbacks.ModelCheckpoint(self.path(KERAS_FILE), save_freq=checkpoint_every),
        ]

    def start(self, model):
        """Before the first iteration: creates the directory, writes config.json, says what runs where."""
        from keras_trpo import training

        args, preset, iterations = self.args, self.preset, self.iterations
        os.makedirs(self.out, exist_ok=True)
        config = {
            "command": " ".join(shlex.quote(a) for a in [PROG, *args.argv]),
            "env_id": args.env_id,
            "preset": preset.name,
            "preset_status": preset.status,
            "preset_source": preset.source,
            "overrides": self.overrides,
            "seed": args.seed,
            "iterations": iterations,
            "planned_env_steps": iterations * preset.rollouts["steps"],
            **{k: v for k, v in preset.to_dict().items() if k not in ("name", "source", "env_id", "notes", "status")},
            "eval_every": args.eval_every,
            # What TensorFlow runs with (the preset's or --intra-op-threads' value unless it could not be set).
            "intra_op_threads": training.intra_op_threads(),
            "trpo_config": _jsonable(model.get_config()),
            "versions": _versions(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        _write_json(self.path(CONFIG_FILE), config)
        print(
            f"Training TRPO on {args.env_id} with preset {preset.name} ({preset.status}): "
            f"{describe_budget(iterations, preset.rollouts['steps'], preset.num_envs)}, seed {args.seed}",
            flush=True,
        )
        print(f"Run directory: {self.out}", flush=True)

    def interrupted(self, env_steps):
        print(f"\nInterrupted after {env_steps} env steps; saving what was trained.", flush=True)

    def save(self, model):
        """After training, before the final evaluation: model.keras and the SavedModel."""
        self.close()
        model.save(self.path(KERAS_FILE))
        self.saved_model = model.export(self.path(SAVED_MODEL_DIR))

    def close(self):
        """Closes the environment of --eval-every (training.train closes its own)."""
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None

    def finish(self, result):
        """results.json, and what was written."""
        import numpy as np

        results = {
            "env_steps": result.env_steps,
            "iterations": int(result.model.policy_version),
            "train_seconds": round(result.train_seconds, 3),
            "interrupted": result.interrupted,
            "eval_episodes": len(result.returns),
            "eval_seed": result.eval_seed,
            "eval_returns": result.returns,
            "eval_mean": result.mean,
            "eval_std": float(np.std(result.returns)),
            # The same episodes' seeds with sampled actions (keras_trpo.evaluate(..., deterministic=False)).
            "stochastic_eval_returns": result.stochastic_returns,
            "stochastic_eval_mean": result.stochastic_mean,
            "stochastic_eval_std": float(np.std(result.stochastic_returns)),
            # Relative to the run directory, so that a copied run directory (docs/benchmarks/) still says where they are.
            "keras_model": KERAS_FILE,
            "saved_model": os.path.relpath(self.saved_model, self.out) if self.saved_model else None,
        }
        _write_json(self.path(RESULTS_FILE), results)
        print(result.message(returns_summary(result.returns)))
        print(f"Wrote {self.out}:")
        rows = [
            (CONFIG_FILE, "resolved configuration"),
            (METRICS_FILE, "per-iteration metrics (keras.callbacks.CSVLogger)"),
            (TENSORBOARD_DIR + "/", f"TensorBoard logs: tensorboard --logdir {self.path(TENSORBOARD_DIR)}"),
            (KERAS_FILE, "Keras checkpoint: keras.models.load_model"),
            (os.path.relpath(self.saved_model, self.out) + "/", "SavedModel for TF Serving"),
            (RESULTS_FILE, "final evaluation"),
        ]
        if self.args.eval_every:
            rows.insert(5, (BEST_DIR + "/", "SavedModel of the best eval_return during training"))
        for name, what in rows:
            print(f"  {name:<22} {what}")


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


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
