"""Bring-your-own-network acceptance run: TRPO with hand-written Keras CNNs on MiniGrid-Empty-8x8-v0.

    python benchmarks/minigrid.py --obs img  --seeds 0 1 2     # ImgObsWrapper, keras.Sequential CNNs
    python benchmarks/minigrid.py --obs dict --seeds 0 1 2     # {"image", "direction"}, a Functional model
    python benchmarks/minigrid.py --table                      # the markdown table of the stored results

What a README user would write: the networks are plain Keras models given to
``TRPO.for_env(env, policy_network=..., value_network=...)`` (not keras_trpo's builders),
trained with ``model.fit(keras_trpo.Rollouts(env, model, steps=2048, seed=seed), epochs=...)``:

- ``--obs img``: ``minigrid.wrappers.ImgObsWrapper``, observations uint8 ``[N, 7, 7, 3]``;
  policy and value each ``keras.Sequential([Conv2D(16, 2), MaxPooling2D(2), Conv2D(32, 2),
  Conv2D(64, 2), Flatten()])`` (ReLU), the CNN of Farama's rl-starter-files.
- ``--obs dict``: ``gymnasium.wrappers.FilterObservation(env, filter_keys=["image", "direction"])``
  (drops the Text ``mission``); each network is a Functional ``keras.Model`` taking
  ``{"image": [N, 7, 7, 3], "direction": [N, 4]}`` (direction arrives one-hot, float32): the same
  small CNN on the image, concatenated with the direction.

Settings: 8 sync envs, 2048 env steps per iteration, default TRPO settings (max_kl 0.01, 10 CG
steps, 10 critic epochs of 128), ``Adam(1e-3)`` for the critic, ``keras.utils.set_random_seed(seed)``
and ``TRPO(seed=seed)``. Deterministic evaluation (the policy's mode) over 10 episodes on a separate
vector env of 10 copies reset with seed ``1000 + seed`` (episode seeds 1000+seed .. 1009+seed;
training resets from ``seed``), by ``keras_trpo.callbacks.Evaluation(every=5)``: after iteration 1
and every 5th iteration. A run stops at the first evaluation with mean return >= 0.9, or after
244 iterations (499,712 env steps <= 500k). Wall time is ``fit`` from start to stop, evaluations
included; env steps/s is env steps over that wall time.

Per (obs, seed) the result is written to ``docs/benchmarks/minigrid/<obs>-seed<k>.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

# This file is called minigrid.py: drop its directory from sys.path so that `import minigrid` is the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import gymnasium  # noqa: E402
import keras  # noqa: E402
import minigrid  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from minigrid.wrappers import ImgObsWrapper  # noqa: E402

import keras_trpo  # noqa: E402

ENV_ID = "MiniGrid-Empty-8x8-v0"
NUM_ENVS = 8
STEPS = 2048
EVAL_EPISODES = 10
EVAL_EVERY = 5
TARGET = 0.9
BUDGET = 500_000
OUT = os.path.normpath(os.path.join(_HERE, "..", "docs", "benchmarks", "minigrid"))


# -- the networks, as a user writes them --------------------------------------------------------
def image_cnn():
    """Conv 16×2×2, max-pool 2, Conv 32×2×2, Conv 64×2×2 (ReLU), flattened: 64 features for 7×7×3."""
    return keras.Sequential([
        keras.layers.Conv2D(16, 2, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 2, activation="relu"),
        keras.layers.Conv2D(64, 2, activation="relu"),
        keras.layers.Flatten(),
    ])


def image_and_direction_network():
    """A Functional model on ``{"image", "direction"}``: the CNN's features concatenated with direction."""
    image = keras.Input(shape=(7, 7, 3), name="image")
    direction = keras.Input(shape=(4,), name="direction")  # Discrete(4) arrives one-hot
    features = image_cnn()(image)
    return keras.Model({"image": image, "direction": direction},
                       keras.layers.Concatenate()([features, direction]))


def make_env(obs: str, num_envs: int):
    if obs == "img":
        wrappers = [ImgObsWrapper]
    else:
        wrappers = [lambda env: gymnasium.wrappers.FilterObservation(env, filter_keys=["image", "direction"])]
    return gymnasium.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="sync", wrappers=wrappers)


def make_model(env, obs: str, seed: int):
    network = image_cnn if obs == "img" else image_and_direction_network
    model = keras_trpo.TRPO.for_env(env, policy_network=network(), value_network=network(), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


class StopAtTarget(keras.callbacks.Callback):
    """Stops ``fit`` at the first evaluation whose mean return reaches ``target``."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None):
        if logs and logs.get("eval_return", -np.inf) >= self.target:
            self.model.stop_training = True


def run(obs: str, seed: int, out: str = OUT) -> dict:
    keras.utils.set_random_seed(seed)
    env = make_env(obs, NUM_ENVS)
    eval_env = make_env(obs, EVAL_EPISODES)
    model = make_model(env, obs, seed)
    rollouts = keras_trpo.Rollouts(env, model, steps=STEPS, seed=seed)
    evaluation = keras_trpo.callbacks.Evaluation(eval_env, episodes=EVAL_EPISODES, every=EVAL_EVERY, seed=1000 + seed)
    history = keras.callbacks.History()
    start = time.perf_counter()
    model.fit(rollouts, epochs=BUDGET // STEPS, verbose=0, callbacks=[evaluation, StopAtTarget(TARGET), history])
    wall = time.perf_counter() - start
    env.close()
    eval_env.close()
    last = evaluation.results[-1]
    episode_returns = history.history.get("episode_return", [])
    result = {
        "env": ENV_ID,
        "obs": obs,
        "seed": seed,
        "eval_seed": 1000 + seed,
        "solved": bool(last["mean"] >= TARGET),
        "env_steps": int(rollouts.env_steps),
        "iterations": len(history.epoch),
        "eval_return": last["mean"],
        "eval_returns": last["returns"],
        "train_episode_return": float(episode_returns[-1]) if episode_returns else None,
        "wall_seconds": round(wall, 2),
        "collect_seconds": round(rollouts.collect_seconds, 2),
        "env_steps_per_second": round(rollouts.env_steps / wall, 1),
        "evaluations": [{"iteration": r["epoch"] + 1, "env_steps": r["env_steps"], "mean": r["mean"]}
                        for r in evaluation.results],
        "settings": {"num_envs": NUM_ENVS, "steps": STEPS, "max_kl": round(model.max_kl, 6), "optimizer": "Adam(1e-3)",
                     "eval_episodes": EVAL_EPISODES, "eval_every": EVAL_EVERY, "target": TARGET,
                     "budget": BUDGET},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "gymnasium": gymnasium.__version__,
                     "minigrid": minigrid.__version__},
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{obs}-seed{seed}.json"), "w") as f:
        json.dump(result, f, indent=1)
    keras.backend.clear_session()
    return result


def table(out: str = OUT) -> str:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "*-seed*.json"))):
        with open(path) as f:
            rows.append(json.load(f))
    lines = ["| obs | seed | env steps to eval ≥ 0.9 | iterations | eval return | wall time | env steps/s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["obs"] != "img", r["seed"])):
        steps = f"{r['env_steps']:,}" if r["solved"] else f"not solved in {r['env_steps']:,}"
        lines.append(f"| {r['obs']} | {r['seed']} | {steps} | {r['iterations']} | {r['eval_return']:.3f} | "
                     f"{r['wall_seconds']:.0f} s | {r['env_steps_per_second']:,.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", choices=("img", "dict"), help="observation variant")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=OUT, help="directory of the JSON results")
    parser.add_argument("--table", action="store_true", help="only print the table of the stored results")
    args = parser.parse_args(argv)
    if not args.table:
        if args.obs is None:
            parser.error("--obs is required unless --table")
        for seed in args.seeds:
            r = run(args.obs, seed, args.out)
            print(f"{args.obs} seed {seed}: eval return {r['eval_return']:.3f} after {r['env_steps']} env steps, "
                  f"{r['iterations']} iterations, {r['wall_seconds']:.0f} s ({r['env_steps_per_second']:.0f} "
                  "env steps/s)", flush=True)
    print(table(args.out))


if __name__ == "__main__":
    main()
