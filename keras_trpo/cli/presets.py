"""``keras-trpo presets``: list the hyperparameter presets, or show one as JSON (no TensorFlow)."""

from __future__ import annotations

import json

from keras_trpo.presets import load_preset, preset_names


def cmd_presets(args) -> int:
    if args.name:
        print(json.dumps(load_preset(args.name).to_dict(), indent=2))
        return 0
    for name in preset_names():
        preset = load_preset(name)
        steps = preset.rollouts["steps"]
        print(f"{name:<16} {preset.status:<8} {preset.total_steps:>9,} steps, {preset.num_envs} envs x "
              f"{steps // preset.num_envs} steps/iteration, max_kl {preset.model.get('max_kl', 0.01)}")
    return 0
