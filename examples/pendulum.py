"""Train TRPO on Pendulum-v1 (continuous actions) with model.fit, then evaluate deterministically.

    python examples/pendulum.py                 # 150k env steps, seed 0
    python examples/pendulum.py --steps 100000 --seed 2

Hyperparameters: keras_trpo/presets/Pendulum-v1.json (2 sync envs, 1024 transitions per
iteration, max_kl 0.02, gamma 0.95 (Pendulum's reward is dense and its horizon short), GAE
lambda 0.95, critic Adam(1e-3) with 20 epochs of 128-sample minibatches, 64x64 tanh networks,
log-std initialised at 0, no observation normalization). In a sweep here (seeds 0..2, 149,504
steps) this beat gamma 0.9 with normalized observations (mean eval -215 against -232) and
max_kl 0.03. This example's own evaluation: -115.7 / -138.4 / -156.2 for seeds 0 / 1 / 2.
"""

import sys

from keras_trpo.cli.example import run_example


def main(argv=None):
    return run_example("Pendulum-v1", argv, __doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
