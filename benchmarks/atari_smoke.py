"""Atari throughput smoke run: Pong with nature_cnn, uint8 frames end to end.

    python benchmarks/atari_smoke.py                    # 5 iterations of 2048 env steps on 8 sync envs
    python benchmarks/atari_smoke.py --iterations 3 --num-envs 2

``ALE/Pong-v5`` (``frameskip=1``) with gymnasium's ``AtariPreprocessing(frame_skip=4)`` (84×84 grey)
and ``FrameStackObservation(4)``: observations uint8 ``[4, 84, 84]``;
``TRPO.for_env(env, policy_network="nature_cnn", value_network="nature_cnn")`` with default TRPO
settings (10 CG steps, 10 critic epochs of 128) and ``Adam(1e-3)``. Prints, per iteration, the
collection time (env steps and acting through the compiled TF function) and the update time
(``train_step`` on the 2048 frames: the iteration's time minus its collection), then the
steady-state rates (the first iteration, which traces the update, excluded), the rate of raw env
stepping with random actions for comparison, and the batch's observation memory (uint8, as
collected) against what float32 frames would take.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import ale_py
import gymnasium
import keras
import numpy as np
import tensorflow as tf
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

import keras_trpo

gymnasium.register_envs(ale_py)


def make_env(num_envs):
    return gymnasium.make_vec(
        "ALE/Pong-v5", num_envs=num_envs, vectorization_mode="sync", frameskip=1,
        wrappers=[lambda e: AtariPreprocessing(e, frame_skip=4), lambda e: FrameStackObservation(e, 4)],
    )


class KeepLastBatch(keras_trpo.Rollouts):
    last_batch = None

    def collect(self):
        self.last_batch = super().collect()
        return self.last_batch


class IterationTimer(keras.callbacks.Callback):
    """Per iteration: wall time of the train function (collection + update) and the collection's share."""

    def __init__(self, rollouts):
        super().__init__()
        self.rollouts = rollouts
        self.rows = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start, self._collect = time.perf_counter(), self.rollouts.collect_seconds

    def on_train_batch_end(self, batch, logs=None):
        total = time.perf_counter() - self._start
        collect = self.rollouts.collect_seconds - self._collect
        self.rows.append({"total": total, "collect": collect, "update": total - collect})
        r = self.rows[-1]
        print(f"iteration {len(self.rows)}: collect {r['collect']:.2f} s "
              f"({self.rollouts.steps / max(r['collect'], 1e-9):,.0f} env steps/s), update {r['update'] * 1e3:,.0f} ms, "
              f"iteration {r['total']:.2f} s ({self.rollouts.steps / r['total']:,.0f} env steps/s)", flush=True)


def raw_stepping_rate(num_envs, vector_steps, seed=0):
    env = make_env(num_envs)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(vector_steps):
        env.step(env.action_space.sample())
    rate = num_envs * vector_steps / (time.perf_counter() - start)
    env.close()
    return rate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2048, help="env steps per iteration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; python {platform.python_version()}, "
          f"tensorflow {tf.__version__}, keras {keras.__version__}, gymnasium {gymnasium.__version__}, "
          f"ale-py {ale_py.__version__}")
    print(f"ALE/Pong-v5, AtariPreprocessing(frame_skip=4) + FrameStackObservation(4), {args.num_envs} sync envs, "
          f"{args.iterations} iterations of {args.steps} env steps, nature_cnn policy and value")

    keras.utils.set_random_seed(args.seed)
    env = make_env(args.num_envs)
    model = keras_trpo.TRPO.for_env(env, policy_network="nature_cnn", value_network="nature_cnn", seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = KeepLastBatch(env, model, steps=args.steps, seed=args.seed)
    timer = IterationTimer(rollouts)
    start = time.perf_counter()
    model.fit(rollouts, epochs=args.iterations, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - start
    env.close()

    steady = timer.rows[1:] or timer.rows
    collect = float(np.mean([r["collect"] for r in steady]))
    update = float(np.mean([r["update"] for r in steady]))
    total = float(np.mean([r["total"] for r in steady]))
    raw = raw_stepping_rate(args.num_envs, args.steps // args.num_envs)
    frames = rollouts.last_batch["observations"]
    uint8_mb, float32_mb = frames.nbytes / 1e6, frames.astype(np.float32).nbytes / 1e6

    print()
    print(f"whole fit: {rollouts.env_steps} env steps in {wall:.1f} s ({rollouts.env_steps / wall:,.0f} env steps/s, "
          "first iteration's tracing included)")
    print(f"iterations 2-{len(timer.rows)} (mean): {args.steps / total:,.0f} env steps/s while training; "
          f"collection {collect:.2f} s ({args.steps / collect:,.0f} env steps/s; raw stepping with random actions "
          f"{raw:,.0f}/s), update {update * 1e3:,.0f} ms on {args.steps} frames")
    print(f"first iteration: update {timer.rows[0]['update']:.1f} s (tracing train_step included)")
    print(f"observation batch {frames.dtype.name} {list(frames.shape)}: {uint8_mb:.1f} MB "
          f"(as float32: {float32_mb:.1f} MB)")


if __name__ == "__main__":
    main()
