"""Masks and memory together (issue 29, item 4): recurrent masked TRPO on tic-tac-toe against a random opponent.

The game of issue 28's masking benchmark (``keras_trpo/TicTacToe-v0``, the board and PettingZoo's
``action_mask`` entry), with ``TRPO.for_env(env, recurrent=True)``: the masks are detected, the networks
see the board (flattened) through an MLP(64) then an LSTM(64), and collection, the update and evaluation
carry the state and the masks. The same budget as the masked MLP runs of docs/benchmarks/masking
(16 envs × 128 steps per iteration, max_kl 0.01, Adam(1e-3)). Every ``--eval-every`` env steps and at the
end: 200 deterministic games (``keras_trpo.evaluate``, seed ``10000 + seed``), the win rate and the
fraction of illegal moves (always 0: the masked policy never plays one; a game would end there).

    python benchmarks/recurrent_masked.py --seed 0

Writes docs/benchmarks/recurrent/TicTacToe-random/trpo_recurrent_masked-seed<S>.csv and .json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recurrent_baselines import machine, write_run

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "recurrent" / "TicTacToe-random"


def run(seed: int, steps: int, every: int, games: int) -> dict:
    import gymnasium
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_trpo
    import keras_trpo.masked_envs  # noqa: F401  (registers keras_trpo/TicTacToe-v0)

    keras.utils.set_random_seed(seed)
    env = gymnasium.make_vec("keras_trpo/TicTacToe-v0", num_envs=16, vectorization_mode="sync", opponent="random")
    model = keras_trpo.TRPO.for_env(env, recurrent=True, max_kl=0.01, seed=seed)
    assert model.action_mask and model.is_recurrent
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=2048, seed=seed)
    eval_env = gymnasium.make_vec("keras_trpo/TicTacToe-v0", num_envs=20, vectorization_mode="sync", opponent="random")
    rows, trained, next_eval = [], 0.0, 0
    while rollouts.env_steps < steps:
        began = time.perf_counter()
        model.fit(rollouts, epochs=1, verbose=0)
        trained += time.perf_counter() - began
        if rollouts.env_steps >= next_eval or rollouts.env_steps >= steps:
            returns = np.array(keras_trpo.evaluate(model, eval_env, episodes=games, seed=10_000 + seed))
            rows.append({"env_steps": rollouts.env_steps, "win_rate": float(np.mean(returns > 0)),
                         "loss_rate": float(np.mean(returns < 0)), "mean_return": float(returns.mean()),
                         "wall_seconds": round(trained, 2)})
            print(rows[-1], flush=True)
            next_eval = rollouts.env_steps + every
    final = rows[-1]
    summary = {"algorithm": "TRPO (LSTM, masked)", "env": "TicTacToe-random", "seed": seed, **final,
               "games": games, "deterministic": True, "machine": machine(), "tensorflow": tf.__version__}
    write_run(OUT, f"trpo_recurrent_masked-seed{seed}", rows, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=61_440)
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--games", type=int, default=200)
    args = parser.parse_args(argv)
    print(run(args.seed, args.steps, args.eval_every, args.games))


if __name__ == "__main__":
    main()
