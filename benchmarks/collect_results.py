"""Builds docs/benchmarks/ from `keras-trpo train` run directories: the fresh-seed table and the tuning table.

    pip install -e ".[results]"            # rliable (IQM, bootstrap confidence intervals)
    python benchmarks/collect_results.py RUNS_DIR docs/benchmarks

For every run directory under RUNS_DIR (named <ENV_ID>-seed<S>, as benchmarks/results.sh writes
them) it copies the small files (config.json, results.json, metrics.csv) to
docs/benchmarks/<ENV_ID>-seed<S>/. Then, from every run kept in docs/benchmarks/, it writes two tables:

- table-fresh.md: seeds 10-14, never used for tuning or for any decision (issue 27): the headline;
- table-tuning.md: seeds 0-2, on which every preset was tuned.

Each row: the deterministic evaluation return of each seed, their mean, interquartile mean (IQM) and
a 95% stratified-bootstrap confidence interval of the mean (rliable, 50,000 resamples, seeded), the
worst seed, the mean of the evaluation with sampled actions (results.json's stochastic_eval_mean), and
rl-zoo's and (MuJoCo) sb3-contrib's scores beside it. With five seeds the IQM is the mean of the middle
three (rliable trims 25% of the runs at each end, rounded down); with three it is the plain mean.
One learning curve per environment: each seed set's mean with its 95% bootstrap band
(keras_trpo.plotting, band="ci95"), rl-zoo's and sb3-contrib's scores as dashed lines.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

SMALL_FILES = ("config.json", "results.json", "metrics.csv")
#: rl-baselines3-zoo's TRPO results (benchmark.md: mean deterministic return of one agent; v3 MuJoCo envs,
#: LunarLander-v2), in the order of its table.
ZOO = {
    "CartPole-v1": 500.0, "Acrobot-v1": -83.1, "MountainCar-v0": -107.3, "MountainCarContinuous-v0": 92.5,
    "Pendulum-v1": -174.6, "LunarLander-v3": 133.2, "LunarLanderContinuous-v3": 262.4, "BipedalWalker-v3": 182.3,
    "Hopper-v5": 3618.0, "HalfCheetah-v5": 1785.0, "Walker2d-v5": 4933.0, "Ant-v5": 4982.0, "Swimmer-v5": 365.7,
}
#: sb3-contrib's own 3-seed TRPO means (its docs/modules/trpo.md).
SB3_CONTRIB = {"HalfCheetah-v5": 1803.0, "Ant-v5": 3554.0, "Hopper-v5": 3372.0, "Walker2d-v5": 4502.0,
               "Swimmer-v5": 359.0}
ORDER = list(ZOO)
SEED_SETS = {
    "fresh": ((10, 11, 12, 13, 14), "seeds 10-14 (never tuned on)"),
    "tuning": ((0, 1, 2), "seeds 0-2 (tuning)"),
}
BOOTSTRAP_REPS = 50_000


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python benchmarks/collect_results.py RUNS_DIR OUT_DIR")
    runs_dir, out_dir = argv
    copy_small_files(runs_dir, out_dir)
    runs = load_runs(out_dir)
    for name, (seeds, title) in SEED_SETS.items():
        table = write_table(runs, seeds, title)
        with open(os.path.join(out_dir, f"table-{name}.md"), "w") as f:
            f.write(table)
        print(table)
    draw_curves(runs, out_dir)


def copy_small_files(runs_dir, out_dir):
    if os.path.abspath(runs_dir) == os.path.abspath(out_dir):
        return
    for name in sorted(os.listdir(runs_dir)):
        path = os.path.join(runs_dir, name)
        if os.path.isfile(os.path.join(path, "results.json")):
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            for file in SMALL_FILES:
                shutil.copy2(os.path.join(path, file), os.path.join(out_dir, name))


def load_runs(out_dir):
    """``{env_id: {seed: (config, results, path)}}`` of every finished run kept in ``out_dir``."""
    runs = {}
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if not os.path.isfile(os.path.join(path, "results.json")):
            continue
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(path, "results.json")) as f:
            results = json.load(f)
        runs.setdefault(config["env_id"], {})[config["seed"]] = (config, results, path)
    return runs


def interval_estimates(returns):
    """``(mean, iqm, (low, high))``: point estimates and the 95% bootstrap interval of the mean (rliable)."""
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        sys.exit('collect_results needs rliable: pip install -e ".[results]"')
    scores = {"runs": np.asarray(returns, float)[:, None]}  # [runs, one task]

    def both(x):
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])

    points, intervals = rly.get_interval_estimates(scores, both, reps=BOOTSTRAP_REPS,
                                                   random_state=np.random.RandomState(0))
    mean, iqm = points["runs"]
    return float(mean), float(iqm), (float(intervals["runs"][0, 0]), float(intervals["runs"][1, 0]))


def write_table(runs, seeds, title):
    rows = [
        f"Deterministic evaluation, {title}; sampled: the same episodes with sampled actions.\n",
        "| env | env steps | return per seed | mean | IQM | 95% CI of the mean | worst seed | sampled: mean (worst) "
        "| rl-zoo | sb3-contrib | meets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for env_id in sorted(runs, key=lambda e: ORDER.index(e) if e in ORDER else len(ORDER)):
        found = [runs[env_id][s] for s in seeds if s in runs[env_id]]
        if not found:
            continue
        returns = [r[1]["eval_mean"] for r in found]
        mean, iqm, (low, high) = interval_estimates(returns)
        worst = int(np.argmin(returns))
        sampled = [r[1].get("stochastic_eval_mean") for r in found]
        sampled_text = "—" if None in sampled else f"{np.mean(sampled):.1f} ({min(sampled):.1f})"
        partial = "" if len(found) == len(seeds) else f" ({len(found)} of {len(seeds)} seeds)"
        anchors = [ZOO.get(env_id), SB3_CONTRIB.get(env_id)]
        missed = [name for name, anchor in zip(("rl-zoo", "sb3-contrib"), anchors) if anchor is not None and mean < anchor]
        rows.append(
            f"| {env_id}{partial} | {found[0][1]['env_steps']:,} | {' / '.join(f'{x:.1f}' for x in returns)} | "
            f"{mean:.1f} | {iqm:.1f} | [{low:.1f}, {high:.1f}] | {returns[worst]:.1f} (seed {found[worst][0]['seed']}) | "
            f"{sampled_text} | {_anchor(anchors[0])} | {_anchor(anchors[1])} | "
            f"{'yes' if not missed else 'below ' + ' and '.join(missed)} |"
        )
    return "\n".join(rows) + "\n"


def _anchor(value):
    return "" if value is None else f"{value:g}"


def draw_curves(runs, out_dir):
    from keras_trpo import plotting

    for env_id, by_seed in runs.items():
        curves = []
        for seeds, title in SEED_SETS.values():
            for seed in seeds:
                if seed in by_seed:
                    run = plotting.load_run(by_seed[seed][2])
                    run.label = title  # one curve per seed set
                    curves.append(run)
        references = [(name, table[env_id]) for name, table in (("rl-zoo TRPO", ZOO), ("sb3-contrib TRPO", SB3_CONTRIB))
                      if env_id in table]
        plotting.write_plot(curves, os.path.join(out_dir, f"{env_id}.png"), smooth=5, references=references,
                            band="ci95", title=f"{env_id}: mean and 95% bootstrap CI over seeds")


if __name__ == "__main__":
    main()
