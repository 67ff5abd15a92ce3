"""First-run reliability: the documented CartPole settings on seeds 0-19, 100k env steps each.

    python benchmarks/cartpole_seeds.py                # seeds 0..19, prints one line per seed and the count
    python benchmarks/cartpole_seeds.py --seeds 5      # seeds 0..4

Each seed is one `keras-trpo train CartPole-v1 --seed S` run without the run directory:
the CartPole-v1 preset (the README's settings: 8 envs, 1024 env steps per iteration, 97
iterations = 99,328 steps, max_kl 0.02), then the deterministic evaluation over 10 episodes on
a fresh env seeded with S + 10000. A seed counts as solved at a mean return >= 475
(gymnasium's reward threshold for CartPole-v1).
"""

from __future__ import annotations

import argparse
import json
import time

from keras_trpo import presets, training

THRESHOLD = 475.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    parser.add_argument("--json", metavar="FILE", help="also write the per-seed results to FILE")
    args = parser.parse_args(argv)
    preset = presets.load_preset("CartPole-v1")
    results, start = [], time.perf_counter()
    for seed in range(args.seeds):
        result = training.train(preset, seed=seed, callbacks=[])
        results.append({"seed": seed, "mean_return": result.mean, "env_steps": result.env_steps,
                        "train_seconds": round(result.train_seconds, 1)})
        print(f"seed {seed:2d}: mean return {result.mean:6.1f} after {result.env_steps} env steps "
              f"({result.train_seconds:.1f} s)", flush=True)
    solved = sum(r["mean_return"] >= THRESHOLD for r in results)
    print(f"{solved}/{len(results)} seeds reach >= {THRESHOLD:.0f} "
          f"(total {time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threshold": THRESHOLD, "solved": solved, "seeds": results}, f, indent=1)
    return solved


if __name__ == "__main__":
    main()
