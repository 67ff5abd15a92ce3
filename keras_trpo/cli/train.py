"""``keras-trpo train``: trains a preset and writes a run directory.

The run directory holds config.json, metrics.csv and tensorboard/ (written by callbacks during
training), model.keras (every tenth of the run and at the end), saved_model/ and results.json
(the final evaluation). TensorFlow is imported when the command runs, not with this module.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import time

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
    returns_summary,
)


def cmd_train(args) -> int:
    check_env_id(args.env_id)
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
        f"{len(returns)} episodes: {returns_summary(returns)}"
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

