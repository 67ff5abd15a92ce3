"""``keras-trpo presets``: list the hyperparameter presets, or show one as JSON (no TensorFlow, and none of
the packages a preset's env_modules name)."""

from __future__ import annotations

import json

from keras_trpo.cli.common import describe_budget
from keras_trpo.presets import load_preset, preset_names


def cmd_presets(args) -> int:
    if args.name:
        print(json.dumps(load_preset(args.name).to_dict(), indent=2))
        return 0
    rows = []
    for name in preset_names():
        preset = load_preset(name)
        budget = describe_budget(preset.iterations(), preset.rollouts["steps"], preset.num_envs)
        rows.append((name, preset.status, *budget.split(" ", 1), preset.model.get("max_kl", 0.01)))
    names = max(16, *(len(row[0]) for row in rows))
    width = max(len(row[2]) for row in rows)  # iterations, right-aligned
    for name, status, iterations, budget, max_kl in rows:
        print(f"{name:<{names}} {status:<8} {iterations:>{width}} {budget}, max_kl {max_kl}")
    return 0
