"""Masked TRPO against sb3-contrib's MaskablePPO on the envs of keras_trpo.masked_envs (issue 28).

    python benchmarks/masking.py --algo maskable_ppo --env InvalidAction --seed 0
    python benchmarks/masking.py --algo trpo --env TicTacToe-random --seed 0 [--steps 200000] [--max-kl 0.01]
    python benchmarks/masking.py --algo trpo_unmasked --env InvalidAction --seed 0
    python benchmarks/masking.py --summary           # the table; also draws docs/benchmarks/masking/<env>.png

Each run writes docs/benchmarks/masking/<env>/<algo>-seed<S>.csv (one row per evaluation) and a
.json beside it (the final row, the command, the machine). An evaluation plays ``EVAL_EPISODES[env]``
episodes with the deterministic policy (the mode; masked unless the algo is ``trpo_unmasked``) on
fixed env seeds 10_000 + i, the same for every algo and checkpoint; it runs before the first update
and then whenever ``EVAL_EVERY[env]`` env steps have passed since the last one, and once at the end.
``win_rate`` is the fraction of episodes won (tic-tac-toe: result +1) or, for the synthetic envs, at
the optimum return. ``illegal_rate`` is the fraction of the agent's actions that were illegal.
``wall_s`` counts everything, ``train_s`` leaves out the evaluations.

MaskablePPO runs at its defaults (MlpPolicy for the Discrete observation of InvalidAction, which sb3
one-hot encodes; MultiInputPolicy for the Dict observations) with ``torch.set_num_threads(1)``;
TRPO with 64x64 tanh MLPs, Adam(1e-3) for the critic and one TensorFlow thread. One run at a time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "masking"
#: env name -> (gymnasium id, kwargs, default env steps, optimum return or None).
ENVS = {
    "InvalidAction": ("keras_trpo/InvalidAction-v0", {}, 50_000, 50.0),
    "InvalidAction-100": ("keras_trpo/InvalidAction-v0", {"n_actions": 100}, 50_000, 50.0),
    "InvalidActionMultiDiscrete": ("keras_trpo/InvalidActionMultiDiscrete-v0", {}, 50_000, 50.0),
    "TicTacToe-random": ("keras_trpo/TicTacToe-v0", {"opponent": "random"}, 200_000, None),
    "TicTacToe-heuristic": ("keras_trpo/TicTacToe-v0", {"opponent": "heuristic"}, 300_000, None),
    "ConnectFour-random": ("keras_trpo/ConnectFour-v0", {"opponent": "random"}, 200_000, None),
    "ConnectFour-heuristic": ("keras_trpo/ConnectFour-v0", {"opponent": "heuristic"}, 300_000, None),
}
#: env name -> (evaluate every N env steps, evaluation episodes, TRPO's env steps per iteration, TRPO's sync
#: sub-envs: more sub-envs make fewer, larger policy calls per iteration).
SCHEDULE = {
    "InvalidAction": (2_000, 100, 1024, 8),
    "InvalidAction-100": (2_000, 100, 1024, 8),
    "InvalidActionMultiDiscrete": (5_000, 100, 1024, 8),
    "TicTacToe-random": (10_000, 200, 2048, 16),
    "TicTacToe-heuristic": (10_000, 200, 2048, 16),
    "ConnectFour-random": (10_000, 200, 2048, 16),
    "ConnectFour-heuristic": (10_000, 200, 2048, 16),
}
EVAL_EVERY, EVAL_EPISODES, TRPO_STEPS, TRPO_NUM_ENVS = ({k: v[i] for k, v in SCHEDULE.items()} for i in range(4))
ALGOS = ("maskable_ppo", "trpo", "trpo_unmasked")
FIELDS = ("env_steps", "mean_return", "win_rate", "draw_rate", "loss_rate", "illegal_rate", "wall_s", "train_s")


def make_env(name: str, one_hot: bool = False) -> gymnasium.Env:
    """The env; ``one_hot``: a ``MultiDiscrete`` observation entry one-hot encoded as a float ``Box``.

    keras_trpo's observation specs take ``Box``, ``Discrete`` and ``MultiBinary`` entries, not
    ``MultiDiscrete``; sb3 one-hot encodes a ``MultiDiscrete`` entry itself, so both see the same input.
    """
    import keras_trpo.masked_envs  # noqa: F401  (registers the ids)

    env_id, kwargs, _, _ = ENVS[name]
    env = gymnasium.make(env_id, **kwargs)
    spaces = gymnasium.spaces
    if one_hot and isinstance(env.observation_space, spaces.Dict):
        entries = dict(env.observation_space.spaces)
        multi = [key for key, space in entries.items() if isinstance(space, spaces.MultiDiscrete)]
        for key in multi:
            entries[key] = spaces.Box(0.0, 1.0, (int(entries[key].nvec.sum()),), np.float32)
        offsets = {key: np.concatenate([[0], np.cumsum(env.observation_space[key].nvec)[:-1]]) for key in multi}

        def encode(obs):
            obs = dict(obs)
            for key in multi:
                vector = np.zeros(entries[key].shape, np.float32)
                vector[offsets[key] + obs[key]] = 1.0
                obs[key] = vector
            return obs

        env = gymnasium.wrappers.TransformObservation(env, encode, spaces.Dict(entries))
    return env


def _stack(observations: list) -> object:
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.asarray(observations)


def evaluate(name: str, policy, episodes: int, one_hot: bool = False) -> dict:
    """Plays ``episodes`` episodes in lockstep (env seeds 10_000 + i); ``policy(obs, masks) -> actions``."""
    optimum = ENVS[name][3]
    envs = [make_env(name, one_hot) for _ in range(episodes)]
    observations = [env.reset(seed=10_000 + i)[0] for i, env in enumerate(envs)]
    returns, active = np.zeros(episodes), list(range(episodes))
    results, actions_taken, illegal = np.zeros(episodes), 0, 0
    while active:
        masks = np.stack([envs[i].unwrapped.action_masks() for i in active])
        actions = np.asarray(policy(_stack([observations[i] for i in active]), masks))
        still = []
        for row, i in enumerate(active):
            action = actions[row]
            illegal += int(not _legal(masks[row], action, envs[i]))
            actions_taken += 1
            observations[i], reward, terminated, truncated, info = envs[i].step(action)
            returns[i] += reward
            if terminated or truncated:
                results[i] = info.get("result", 1.0 if optimum is not None and returns[i] >= optimum - 1e-6 else 0.0)
            else:
                still.append(i)
        active = still
    won = results > 0 if optimum is None else np.isclose(returns, optimum)
    return dict(mean_return=float(returns.mean()), win_rate=float(won.mean()),
                draw_rate=float((results == 0).mean()) if optimum is None else 0.0,
                loss_rate=float((results < 0).mean()) if optimum is None else 0.0,
                illegal_rate=illegal / actions_taken)


def _legal(mask: np.ndarray, action, env) -> bool:
    nvec = getattr(env.action_space, "nvec", None)
    if nvec is None:
        return bool(mask[int(action)])
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    return bool(mask[offsets + np.asarray(action)].all())


class Recorder:
    """Evaluates when due and writes the CSV rows; ``maybe(steps, policy)`` is called after updates."""

    def __init__(self, name: str, algo: str, seed: int, one_hot: bool = False):
        self.name, self.algo, self.seed, self.one_hot = name, algo, seed, one_hot
        self.path = OUT / name / f"{algo}-seed{seed}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.start, self.eval_seconds, self.last = time.perf_counter(), 0.0, None

    def maybe(self, steps: int, policy, force: bool = False) -> None:
        if not force and self.last is not None and steps - self.last < EVAL_EVERY[self.name]:
            return
        if force and self.last == steps:
            return
        began = time.perf_counter()
        row = dict(env_steps=int(steps), **evaluate(self.name, policy, EVAL_EPISODES[self.name], self.one_hot))
        self.eval_seconds += time.perf_counter() - began
        wall = time.perf_counter() - self.start
        row.update(wall_s=round(wall, 2), train_s=round(wall - self.eval_seconds, 2))
        self.rows.append(row)
        self.last = steps
        values = " ".join(f"{k}={row[k]:.4g}" for k in FIELDS)
        print(f"[{self.algo} {self.name} seed {self.seed}] {values}", flush=True)
        with open(self.path, "w", newline="") as file:
            writer = csv.DictWriter(file, FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)

    def finish(self, settings: dict) -> None:
        machine = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
        summary = dict(env=self.name, algo=self.algo, seed=self.seed, final=self.rows[-1], settings=settings,
                       command="python " + " ".join(sys.argv), machine=machine.split(":", 1)[-1].strip(),
                       python=platform.python_version(),
                       note="timings measured while other processes shared the 2 cores")
        self.path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")


def run_maskable_ppo(name: str, seed: int, steps: int) -> dict:
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    env = make_env(name)
    policy_name = "MultiInputPolicy" if isinstance(env.observation_space, gymnasium.spaces.Dict) else "MlpPolicy"
    model = MaskablePPO(policy_name, env, seed=seed, verbose=0)
    recorder = Recorder(name, "maskable_ppo", seed)

    def policy(obs, masks):
        return model.predict(obs, action_masks=masks, deterministic=True)[0]

    class Evaluate(BaseCallback):
        def _on_rollout_start(self) -> None:  # the policy after the last update, trained on num_timesteps steps
            recorder.maybe(self.num_timesteps, policy)

        def _on_step(self) -> bool:
            return True

    model.learn(steps, callback=Evaluate())
    recorder.maybe(model.num_timesteps, policy, force=True)
    import sb3_contrib

    settings = dict(policy=policy_name, sb3_contrib=sb3_contrib.__version__, torch=torch.__version__,
                    torch_threads=torch.get_num_threads(), n_steps=model.n_steps, batch_size=model.batch_size,
                    n_epochs=model.n_epochs, learning_rate=model.learning_rate)
    recorder.finish(settings)
    return recorder.rows[-1]


def run_trpo(name: str, seed: int, steps: int, masked: bool, max_kl: float, num_envs: int) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import keras_trpo

    env = gymnasium.vector.SyncVectorEnv([lambda: make_env(name, one_hot=True) for _ in range(num_envs)])
    model = keras_trpo.TRPO.for_env(env, action_mask=None if masked else False, hidden_units=(64, 64),
                                    max_kl=max_kl, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    per_iteration = TRPO_STEPS[name]
    rollouts = keras_trpo.Rollouts(env, model, steps=per_iteration, seed=seed)
    recorder = Recorder(name, "trpo" if masked else "trpo_unmasked", seed, one_hot=True)
    recorder.maybe(0, _trpo_policy(model, masked))

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            recorder.maybe((epoch + 1) * per_iteration, _trpo_policy(model, masked))

    iterations = -(-steps // per_iteration)
    model.fit(rollouts, epochs=iterations, callbacks=[Evaluate()], verbose=0)
    recorder.maybe(iterations * per_iteration, _trpo_policy(model, masked), force=True)
    settings = dict(hidden_units=[64, 64], max_kl=max_kl, steps_per_iteration=per_iteration, num_envs=num_envs,
                    iterations=iterations, masked=masked, tensorflow=tf.__version__, tf_threads=1)
    recorder.finish(settings)
    return recorder.rows[-1]


def _trpo_policy(model, masked: bool):
    def policy(obs, masks):
        # model(obs, action_mask=...) refuses a Dict observation that still holds the "action_mask" entry
        actions = model(_without_mask(obs), action_mask=masks) if masked else model(_without_mask(obs))
        return np.asarray(actions)

    return policy


def _without_mask(obs):
    return {k: v for k, v in obs.items() if k != "action_mask"} if isinstance(obs, dict) else obs


#: env name -> (metric name, its function of a CSV row, threshold, what the threshold is).
TARGETS = {
    "InvalidAction": ("mean_return", lambda r: r["mean_return"], 47.5, "mean return >= 0.95 x 50"),
    "InvalidAction-100": ("mean_return", lambda r: r["mean_return"], 47.5, "mean return >= 0.95 x 50"),
    "InvalidActionMultiDiscrete": ("mean_return", lambda r: r["mean_return"], 47.5, "mean return >= 0.95 x 50"),
    "TicTacToe-random": ("win_rate", lambda r: r["win_rate"], 0.9, "win rate >= 0.9"),
    "TicTacToe-heuristic": ("win+draw", lambda r: r["win_rate"] + r["draw_rate"], 0.9, "win + draw rate >= 0.9"),
    "ConnectFour-random": ("win_rate", lambda r: r["win_rate"], 0.9, "win rate >= 0.9"),
    # fixed before any connect-four run: a one-ply heuristic beaten more often than not
    "ConnectFour-heuristic": ("win_rate", lambda r: r["win_rate"], 0.5, "win rate >= 0.5"),
}


def load_runs(name: str, algo: str) -> dict[int, list[dict]]:
    """``{seed: rows}`` of docs/benchmarks/masking/<name>/<algo>-seed*.csv (values as floats)."""
    runs = {}
    for path in sorted((OUT / name).glob(f"{algo}-seed*.csv")):
        with open(path) as file:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
        runs[int(path.stem.rpartition("seed")[2])] = rows
    return runs


def _first_reach(rows: list[dict], metric, threshold: float) -> dict | None:
    """The first evaluation row at or above the threshold (None if never)."""
    return next((row for row in rows if metric(row) >= threshold - 1e-9), None)


def _mean_worst(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f} / {min(values):.{digits}f}"


def summary_row(name: str, algo: str, runs: dict[int, list[dict]]) -> list[str]:
    _, metric, threshold, _ = TARGETS[name]
    finals = [rows[-1] for rows in runs.values()]
    reach = [_first_reach(rows, metric, threshold) for rows in runs.values()]
    reached = [row for row in reach if row is not None]
    steps = ", ".join("never" if row is None else f"{row['env_steps']:,.0f}" for row in reach)
    seconds = f"{np.mean([row['train_s'] for row in reached]):.0f}" if reached else "-"
    return [
        name, algo, ", ".join(map(str, sorted(runs))), f"{max(row['env_steps'] for row in finals):,.0f}",
        _mean_worst([metric(row) for row in finals]), _mean_worst([max(map(metric, rows)) for rows in runs.values()]),
        _mean_worst([row["win_rate"] for row in finals]),
        f"{np.mean([row['draw_rate'] for row in finals]):.3f} / {np.mean([row['loss_rate'] for row in finals]):.3f}",
        f"{np.mean([row['illegal_rate'] for row in finals]):.3f}", steps, seconds,
        f"{np.mean([row['wall_s'] for row in finals]):.0f} ({np.mean([row['train_s'] for row in finals]):.0f})",
    ]


def summary_rows() -> list[list[str]]:
    return [summary_row(name, algo, runs) for name in TARGETS for algo in ALGOS if (runs := load_runs(name, algo))]


def summary() -> None:
    """Prints the table (also docs/benchmarks/masking/summary.md) and draws docs/benchmarks/masking/<env>.png."""
    header = ["env", "algo", "seeds", "env steps", "final metric: mean / worst seed", "best evaluation: mean / worst",
              "final win rate: mean / worst", "final draw / loss rate", "final illegal-action rate",
              "env steps to the threshold, per seed", "training s to the threshold (mean)", "wall s (training s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows()]
    lines += ["", "Metric and threshold: " + "; ".join(f"{name}: {t[0]}, {t[3]}" for name, t in TARGETS.items()) + "."]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.md").write_text(text + "\n")
    for name in TARGETS:
        plot(name)


def plot(name: str) -> None:
    """The threshold's metric (left) and the win rate or the illegal-action rate (right), per algo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, metric, threshold, text = TARGETS[name]
    algos = {algo: runs for algo in ALGOS if (runs := load_runs(name, algo))}
    if not algos:
        return
    second = "win_rate" if label == "win+draw" else "illegal_rate"
    figure, panels = plt.subplots(1, 2, figsize=(11, 4))
    for axes, (ylabel, function) in zip(panels, [(label, metric), (second, lambda r: r[second])]):
        for algo, runs in algos.items():
            grid = np.array([row["env_steps"] for row in max(runs.values(), key=len)])
            curves = np.array([np.interp(grid, [r["env_steps"] for r in rows], [function(r) for r in rows])
                               for rows in runs.values()])
            axes.plot(grid, curves.mean(axis=0), label=f"{algo} ({len(runs)} seeds)")
            axes.fill_between(grid, curves.min(axis=0), curves.max(axis=0), alpha=0.2)
        axes.set(xlabel="env steps", ylabel=ylabel)
    panels[0].axhline(threshold, color="grey", linestyle=":", label=text)
    panels[0].legend(fontsize=8)
    figure.suptitle(f"{name}: mean over seeds, min-max band")
    figure.tight_layout()
    figure.savefig(OUT / f"{name}.png", dpi=100)
    plt.close(figure)


def main(argv=None) -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", choices=ALGOS)
    parser.add_argument("--env", choices=sorted(ENVS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: the env's budget)")
    parser.add_argument("--max-kl", type=float, default=0.01)
    parser.add_argument("--num-envs", type=int, default=None, help="TRPO's sync sub-envs (default: TRPO_NUM_ENVS)")
    parser.add_argument("--summary", action="store_true", help="print the table and draw the curves")
    parser.add_argument("--out", type=Path, default=OUT, help="where the run files go (default: %(default)s)")
    args = parser.parse_args(argv)
    OUT = args.out
    if args.summary:
        return summary()
    if args.algo is None or args.env is None:
        parser.error("--algo and --env are required (or --summary)")
    steps = args.steps or ENVS[args.env][2]
    if args.algo == "maskable_ppo":
        run_maskable_ppo(args.env, args.seed, steps)
    else:
        num_envs = args.num_envs or TRPO_NUM_ENVS[args.env]
        run_trpo(args.env, args.seed, steps, args.algo == "trpo", args.max_kl, num_envs)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
