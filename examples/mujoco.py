"""Train TRPO on a MuJoCo locomotion task (Hopper-v5, HalfCheetah-v5 or Walker2d-v5).

    pip install -e ".[mujoco]"
    python examples/mujoco.py Hopper-v5 --seed 0            # 1M env steps, ~5 min on 2 cores
    python examples/mujoco.py Walker2d-v5 --steps 200000

Hyperparameters: keras_trpo/presets/<ENV_ID>.json (2 sync envs x 1024 steps per iteration,
max_kl 0.01, 25 CG iterations, 20 critic epochs, observation normalization; the TRPO settings of
rl-baselines3-zoo, without its reward normalization). Results over 3 seeds: docs/benchmarks.md.
"""

import os
import sys

# This file has the mujoco package's name: take examples/ off the import path, or gymnasium's
# `import mujoco` would import this script instead of the simulator.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from keras_trpo.cli.example import run_example  # noqa: E402

ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ENVS:
        sys.exit(f"usage: python examples/mujoco.py {{{','.join(ENVS)}}} [--steps N] [--seed S] ...")
    return run_example(argv[0], argv[1:], __doc__)


if __name__ == "__main__":
    main()
