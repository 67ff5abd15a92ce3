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
ORDER = ["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "CartPole-v1", "Acrobot-v1", "Pendulum-v1"]


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
        "| env | preset | env steps | seeds | eval return per seed | mean ± std | fit wall time (mean) |",
        "|---|---|---|---|---|---|---|",
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
            f"{statistics.mean(walls):.0f} s |"
        )
        plotting.plot_runs([r[2] for r in group], os.path.join(out_dir, f"{env_id}.png"), smooth=5)
    table = "\n".join(rows) + "\n"
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
