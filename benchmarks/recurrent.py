"""Recurrent TRPO against the same TRPO with an MLP on the partially observed NoVel envs (issue 29).

One run per (env, variant, seed) through keras_trpo's one training flow (``keras_trpo.training.train``)
with the env's preset (``keras_trpo/presets/<env>.json``: ``recurrent: true``); the ``mlp`` variant is
that preset with ``recurrent: false`` and the default 64×64 MLPs (everything else equal). Every
``--eval-every`` env steps (rounded up to whole iterations) the policy plays ``--eval-episodes``
deterministic episodes, its state carried by ``keras_trpo.evaluate``, one after another on one env seeded
once with ``10000 + seed`` (the later episodes start where the env's own generator goes on): the episodes
benchmarks/recurrent_baselines.py evaluates RecurrentPPO on, start for start. (Until 2026-12-06 the episodes
ran on ``--eval-episodes`` sub-envs seeded ``10000 + seed + i``, so run seeds S and S + 1 shared 9 of their
10 episodes, and neither matched RecurrentPPO's: docs/benchmarks/recurrent/README.md, "Round 3".) Writes
``docs/benchmarks/recurrent/<env>/trpo_<variant>-seed<S>.csv`` (one row per evaluation: env steps, mean
and std return, training wall seconds without evaluation) and a ``.json`` summary.

    python benchmarks/recurrent.py --env CartPoleNoVel-v1 --variant recurrent --seed 0
    python benchmarks/recurrent.py --summary      # docs/benchmarks/recurrent/summary.md and curves

The RecurrentPPO runs it is compared with: ``benchmarks/recurrent_baselines.py`` (same folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "recurrent"
ENVS = ("CartPoleNoVel-v1", "PendulumNoVel-v1", "MountainCarContinuousNoVel-v0")
MLP = {"model.recurrent": False, "model.hidden_units": [64, 64], "model.value_hidden_units": [64, 64]}


def curve_callback(preset, seed: int, every: int, episodes: int, rows: list):
    """A Keras callback evaluating every ``every`` env steps; it keeps the training clock without evaluations."""
    import keras

    import keras_trpo

    class Curve(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.next_eval, self.eval_seconds, self.start = every, 0.0, time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            steps = int((logs or {})["env_steps"])
            if steps >= self.next_eval:
                self.record(steps)
                while self.next_eval <= steps:
                    self.next_eval += every

        def record(self, steps: int) -> None:
            began = time.perf_counter()
            env = preset.make_env(num_envs=1, vectorization_mode="sync")  # RecurrentPPO's evaluation episodes
            try:
                returns = keras_trpo.evaluate(self.model, env, episodes=episodes, seed=10_000 + seed)
            finally:
                env.close()
            rows.append(dict(env_steps=steps, mean_return=float(np.mean(returns)), std_return=float(np.std(returns)),
                             wall_seconds=round(began - self.start - self.eval_seconds, 2)))
            self.eval_seconds += time.perf_counter() - began
            print(f"{preset.env_id} seed {seed}: {rows[-1]}", flush=True)

    return Curve()


from recurrent_baselines import machine, write_run  # noqa: E402  (benchmarks/ is sys.path[0])


def run(env_name: str, variant: str, seed: int, every: int, episodes: int, steps: int | None,
        overrides: dict | None = None, out: Path = OUT) -> dict:
    import tensorflow as tf

    from keras_trpo import presets, training

    preset = presets.load_preset(env_name)
    if variant == "mlp":
        preset = preset.override(MLP)
    if overrides:
        preset = preset.override(overrides)
    rows: list = []
    callback = curve_callback(preset, seed, every, episodes, rows)
    result = training.train(preset, seed=seed, total_steps=steps, callbacks=[callback])
    if not rows or rows[-1]["env_steps"] != result.env_steps:
        callback.set_model(result.model)
        callback.record(result.env_steps)
    final = rows[-1]
    summary = {"algorithm": f"TRPO ({variant})", "env": env_name, "seed": seed, "env_steps": final["env_steps"],
               "final_mean_return": final["mean_return"], "final_std_return": final["std_return"],
               "wall_seconds": final["wall_seconds"], "eval_episodes": episodes, "deterministic": True,
               "preset": preset.to_dict(), "machine": machine(), "tensorflow": tf.__version__}
    write_run(out / env_name, f"trpo_{variant}-seed{seed}", rows, summary)
    return summary


#: A return that solves the env, set before the runs: the table gives the env steps at which each run first reached it.
THRESHOLDS = {"CartPoleNoVel-v1": 475.0, "PendulumNoVel-v1": -200.0, "MountainCarContinuousNoVel-v0": 90.0}
ALGORITHMS = {"trpo_recurrent": "TRPO, LSTM", "trpo_mlp": "TRPO, MLP", "recurrent_ppo": "RecurrentPPO (sb3-contrib)"}


def load_runs(env_name: str, algorithm: str) -> dict[int, tuple[list[dict], dict]]:
    """``{seed: (evaluation rows, summary)}`` of the runs in docs/benchmarks/recurrent/<env>/."""
    runs = {}
    for path in sorted((OUT / env_name).glob(f"{algorithm}-seed*.json")):
        seed = int(path.stem.split("seed")[1])
        with open(path.with_suffix(".csv")) as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        runs[seed] = (rows, json.loads(path.read_text()))
    return runs


def summary_row(env_name: str, algorithm: str, runs: dict) -> str:
    """One table row: the final deterministic return per seed and their mean, the env steps trained and the
    mean training wall time (evaluations excluded)."""
    finals = [runs[s][1]["final_mean_return"] for s in sorted(runs)]
    steps = [int(runs[s][1]["env_steps"]) for s in sorted(runs)]
    walls = [runs[s][1]["wall_seconds"] for s in sorted(runs)]
    per_seed = " / ".join(f"{v:.1f}" for v in finals)
    reached = []
    for seed in sorted(runs):
        first = [row["env_steps"] for row in runs[seed][0] if row["mean_return"] >= THRESHOLDS[env_name]]
        reached.append(f"{int(first[0]) // 1000}k" if first else "never")
    return (f"| {env_name} | {ALGORITHMS[algorithm]} | {per_seed} | **{np.mean(finals):.1f}** | "
            f"{' / '.join(reached)} | {min(steps):,}–{max(steps):,} | {np.mean(walls):.0f} |")


def summary() -> None:
    """docs/benchmarks/recurrent/summary.md and one curve per env (mean over seeds, min–max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| env | algorithm | final return per seed | mean | first ≥ threshold, per seed | env steps | wall s (mean) |",
             "|---|---|---|---:|---|---|---:|"]
    for env_name in ENVS:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for algorithm, label in ALGORITHMS.items():
            runs = load_runs(env_name, algorithm)
            if not runs:
                continue
            lines.append(summary_row(env_name, algorithm, runs))
            grid = sorted({row["env_steps"] for rows, _ in runs.values() for row in rows})
            curves = np.array([np.interp(grid, [r["env_steps"] for r in rows], [r["mean_return"] for r in rows])
                               for rows, _ in runs.values()])
            ax.plot(grid, curves.mean(0), label=f"{label} ({len(runs)} seeds)")
            ax.fill_between(grid, curves.min(0), curves.max(0), alpha=0.2)
        ax.set_xlabel("env steps")
        ax.set_ylabel("deterministic return (10 episodes)")
        ax.set_title(env_name)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(OUT / f"{env_name}.png", dpi=100)
        plt.close(fig)
    (OUT / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=ENVS)
    parser.add_argument("--variant", choices=("recurrent", "mlp"), default="recurrent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the preset's total_steps)")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--summary", action="store_true", help="write summary.md and the curves from the runs")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                        help="preset overrides (tuning runs), e.g. model.max_kl=0.01")
    parser.add_argument("--out", type=Path, default=OUT, help="where the run files go (default: docs/benchmarks/recurrent)")
    args = parser.parse_args(argv)
    if args.summary:
        summary()
        return
    if args.env is None:
        parser.error("--env is required")
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.set)}
    result = run(args.env, args.variant, args.seed, args.eval_every, args.eval_episodes, args.steps, overrides,
                 args.out)
    print(json.dumps({k: result[k] for k in ("algorithm", "env", "seed", "env_steps", "final_mean_return",
                                              "wall_seconds")}))


if __name__ == "__main__":
    main()
