"""Scaling numbers for docs/scaling.md: parallel rollouts and data-parallel updates.

    python benchmarks/scaling.py                 # everything, ~3 minutes on 2 cores
    python benchmarks/scaling.py --only collect  # AsyncVectorEnv 1/2/4 envs on Hopper-v5
    python benchmarks/scaling.py --only update   # one update: 1 device vs MirroredStrategy(2)
    python benchmarks/scaling.py --only workers  # iteration time with 1 and 2 workers, all-reduce latency

Each measurement runs in its own process (logical devices and TF_CONFIG are fixed when
TensorFlow starts). Prints a Markdown table; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def loopback_cluster(workers):
    """A TF_CONFIG ``cluster`` of ``workers`` workers on free 127.0.0.1 ports."""
    ports = []
    for _ in range(workers):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return {"worker": [f"127.0.0.1:{p}" for p in ports]}


# ---------------------------------------------------------------------------
# children
# ---------------------------------------------------------------------------
def child_collect(num_envs, mode, steps):
    import gymnasium
    import numpy as np

    import keras_trpo

    env = gymnasium.make_vec("Hopper-v5", num_envs=num_envs, vectorization_mode=mode)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(20):
        env.step(env.action_space.sample())
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        env.step(env.action_space.sample())
    raw = steps / (time.perf_counter() - start)

    model = keras_trpo.TRPO.for_env(env, seed=0, normalize_observations=True)
    rollouts = keras_trpo.Rollouts(env, model, steps=steps, seed=0)
    rollouts.collect()  # warm-up: first reset, numpy snapshot
    start = time.perf_counter()
    rollouts.collect()
    ours = steps / (time.perf_counter() - start)
    env.close()
    return {"raw": raw, "keras_trpo": ours, "num_envs": num_envs, "mode": mode, "np": np.__version__}


def child_update(replicas, batch, repeats):
    import tensorflow as tf

    if replicas > 1:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras
    import numpy as np
    from gymnasium import spaces

    import keras_trpo

    observation_space = spaces.Box(-np.inf, np.inf, (11,), np.float32)  # Hopper's sizes
    action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(batch, 11)).astype(np.float32),
        "actions": rng.normal(size=(batch, 3)).astype(np.float32),
        "advantages": rng.normal(size=batch).astype(np.float32),
        "returns": rng.normal(size=batch).astype(np.float32),
    }

    class Fixed(keras.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return data

    def build():
        model = keras_trpo.TRPO(
            observation_space, action_space, seed=0, max_kl=1e-4, cg_iterations=10, value_epochs=10,
            value_batch_size=128 * replicas, normalize_observations=True,
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        return model

    if replicas > 1:
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
        with strategy.scope():
            model = build()
    else:
        model = build()
    model.fit(Fixed(), epochs=2, verbose=0)  # trace

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    model.fit(Fixed(), epochs=repeats, verbose=0, callbacks=[timer])
    return {"replicas": replicas, "median_s": float(np.median(timer.times)), "batch": batch}


def child_workers(workers, steps, iterations):
    cluster = loopback_cluster(workers)
    processes = []
    start = time.perf_counter()
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append(
            subprocess.Popen(
                [sys.executable, os.path.join(REPO, "examples", "multi_worker.py"), "--env", "Hopper-v5",
                 "--iterations", str(iterations), "--steps", str(steps // workers), "--num-envs", "1"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
        )
    outputs = [p.communicate(timeout=1800)[0] for p in processes]
    wall = time.perf_counter() - start
    if any(p.returncode for p in processes):
        raise RuntimeError(f"a worker failed: {outputs}")
    marker = "mean iteration time after the first: "
    timings = [line.split(marker)[1] for out in outputs for line in out.splitlines() if marker in line]
    iteration = max(float(t.split()[0]) for t in timings)
    collect = max(float(t.split("of which collection ")[1].split()[0]) for t in timings)
    return {"workers": workers, "wall_s": wall, "iterations": iterations, "steps_per_iteration": steps,
            "iteration_s": iteration, "collect_s": collect}


def child_allreduce_worker(cluster, index, size, count):
    """One worker of the all-reduce latency measurement (run by child_allreduce)."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    import numpy as np
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    @tf.function
    def reduce_many(vector):
        def body(i, total):
            per_replica = strategy.run(lambda v: v + tf.cast(i, tf.float32), args=(vector,))
            return i + 1, total + strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

        return tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), tf.zeros([size])))[1]

    vector = tf.ones([size])
    reduce_many(vector)  # trace, connect
    start = time.perf_counter()
    reduce_many(vector)
    return {"ms_per_allreduce": 1000 * (time.perf_counter() - start) / count, "np": np.__version__}


def child_allreduce(size, count):
    cluster = loopback_cluster(2)
    processes = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(["allreduce_worker", cluster, index, size, count])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for index in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    return json.loads(outputs[0].strip().splitlines()[-1])


# ---------------------------------------------------------------------------
def run_child(*args):
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True, timeout=3600
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["collect", "update", "workers", "allreduce"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, *rest = json.loads(args.child)
        children = {"collect": child_collect, "update": child_update, "workers": child_workers,
                    "allreduce": child_allreduce, "allreduce_worker": child_allreduce_worker}
        print(json.dumps(children[name](*rest)))
        return
    print(f"machine: {os.cpu_count()} CPU cores; every number measured in this run\n")
    if args.only in (None, "collect"):
        print("| Hopper-v5 collection | envs | raw env steps/s | keras_trpo Rollouts steps/s |")
        print("|---|---|---|---|")
        for mode in ("sync", "async"):
            for n in (1, 2, 4):
                r = run_child("collect", n, mode, 8192)
                print(f"| {mode} | {n} | {r['raw']:,.0f} | {r['keras_trpo']:,.0f} |")
        print()
    if args.only in (None, "update"):
        print("| one update, Hopper-sized nets, 2048 samples | replicas | median time |")
        print("|---|---|---|")
        for replicas in (1, 2):
            r = run_child("update", replicas, 2048, 20)
            print(f"| {'single device' if replicas == 1 else 'MirroredStrategy'} | {replicas} | "
                  f"{1000 * r['median_s']:.1f} ms |")
        print()
    if args.only in (None, "workers"):
        print("| Hopper-v5, 4096 env steps per iteration in all | workers | steps per worker | "
              "time per iteration (mean after the first) | of which collection | wall time incl. start-up |")
        print("|---|---|---|---|---|---|")
        for workers in (1, 2):
            r = run_child("workers", workers, 4096, 10)
            print(f"| MultiWorkerMirroredStrategy on 127.0.0.1 | {workers} | {4096 // workers} | "
                  f"{1000 * r['iteration_s']:.0f} ms | {1000 * r['collect_s']:.0f} ms | {r['wall_s']:.1f} s |")
        print()
    if args.only in (None, "allreduce", "workers"):
        print("| all-reduce between 2 workers on 127.0.0.1 (MEAN, float32) | vector size | time per all-reduce |")
        print("|---|---|---|")
        for size in (1, 4_994):  # a scalar; the Hopper critic's loss + gradient (11-64-64-1)
            r = run_child("allreduce", size, 300)
            print(f"| inside one tf.function, 300 in a tf.while_loop | {size:,} | {r['ms_per_allreduce']:.2f} ms |")


if __name__ == "__main__":
    main()
