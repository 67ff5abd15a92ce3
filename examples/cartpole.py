"""Train TRPO on CartPole-v1 with model.fit, then evaluate the deterministic policy.

    python examples/cartpole.py                                 # 100k env steps, seed 0
    python examples/cartpole.py --steps 50000 --seed 1
    python examples/cartpole.py --export saved_models/cartpole  # also write a SavedModel

Hyperparameters: keras_trpo/presets/CartPole-v1.json (8 sync envs, 1024 transitions per
iteration, max_kl 0.02, gamma 0.99, GAE lambda 0.97, critic Adam(1e-3) with 10 epochs of
128-sample minibatches, 64x64 tanh networks). Measured here: seeds 0, 1 and 2 all evaluate at
500 after 99,328 steps, ~4 s of training each (2026-12-06).
"""

import sys

from keras_trpo.cli.example import run_example


def main(argv=None):
    return run_example("CartPole-v1", argv, __doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
