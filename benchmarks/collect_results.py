"""Builds docs/benchmarks/ from `keras-trpo train` run directories.

    python benchmarks/collect_results.py RUNS_DIR docs/benchmarks

For every run directory under RUNS_DIR (named <ENV_ID>-seed<S>, as benchmarks/results.sh writes
them) it copies the small files (config.json, results.json, metrics.csv) to
docs/benchmarks/<ENV_ID>-seed<S>/, draws one learning curve per environment with the project's
own plotting (keras_trpo.plotting, as `keras-trpo plot` does) and writes docs/benchmarks/table.md:
per-seed deterministic evaluation returns, mean ± std over seeds, env steps and fit wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys

SMALL_FILES = ("config.json", "results.json", "metrics.csv")
#: rl-baselines3-zoo's TRPO results (benchmark.md: mean deterministic return; v3 MuJoCo envs, LunarLander-v2),
#: in the order of its table. The curves draw them as dashed lines; the table puts them beside ours.
ZOO = {
    "CartPole-v1": 500.0, "Acrobot-v1": -83.1, "MountainCar-v0": -107.3, "MountainCarContinuous-v0": 92.5,
    "Pendulum-v1": -174.6, "LunarLander-v3": 133.2, "LunarLanderContinuous-v3": 262.4, "BipedalWalker-v3": 182.3,
    "Hopper-v5": 3618.0, "HalfCheetah-v5": 1785.0, "Walker2d-v5": 4933.0, "Ant-v5": 4982.0, "Swimmer-v5": 365.7,
}
ORDER = list(ZOO)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python benchmarks/collect_results.py RUNS_DIR OUT_DIR")
    runs_dir, out_dir = argv
    from keras_trpo import plotting

    runs = {}
    for name in sorted(os.listdir(runs_dir)):
        path = os.path.join(runs_dir, name)
        if not os.path.isfile(os.path.join(path, "results.json")):
            continue
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(path, "results.json")) as f:
            results = json.load(f)
        kept = os.path.join(out_dir, name)
        os.makedirs(kept, exist_ok=True)
        for file in SMALL_FILES:
            shutil.copy2(os.path.join(path, file), kept)
        runs.setdefault(config["env_id"], []).append((config, results, kept))

    rows = [
        "| env | preset | env steps | seeds | eval return per seed | mean ± std | rl-zoo TRPO | fit wall time (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id in sorted(runs, key=lambda e: ORDER.index(e) if e in ORDER else len(ORDER)):
        group = sorted(runs[env_id], key=lambda r: r[0]["seed"])
        returns = [r[1]["eval_mean"] for r in group]
        spread = statistics.stdev(returns) if len(returns) > 1 else 0.0
        walls = [r[1]["train_seconds"] for r in group]
        rows.append(
            f"| {env_id} | {group[0][0]['preset']} | {group[0][1]['env_steps']:,} | "
            f"{', '.join(str(r[0]['seed']) for r in group)} | "
            f"{' / '.join(f'{x:.1f}' for x in returns)} | {statistics.mean(returns):.1f} ± {spread:.1f} | "
            f"{_zoo(env_id, statistics.mean(returns))} | {statistics.mean(walls):.0f} s |"
        )
        references = [("rl-zoo TRPO", ZOO[env_id])] if env_id in ZOO else []
        plotting.plot_runs([r[2] for r in group], os.path.join(out_dir, f"{env_id}.png"), smooth=5,
                           references=references)
    table = "\n".join(rows) + "\n"
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table)
    print(table)


def _zoo(env_id, mean):
    if env_id not in ZOO:
        return ""
    return f"{ZOO[env_id]:g} ({'met' if mean >= ZOO[env_id] else 'missed'})"


if __name__ == "__main__":
    main()
