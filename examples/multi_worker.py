"""Multi-worker TRPO: each worker collects its own rollouts; the update is averaged over workers.

Run one process per worker with the same arguments and a TF_CONFIG naming the cluster and the
worker's index (tf.distribute.MultiWorkerMirroredStrategy; docs/scaling.md). Two workers on
one machine:

    export CLUSTER='{"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}'
    TF_CONFIG="{\"cluster\": $CLUSTER, \"task\": {\"type\": \"worker\", \"index\": 0}}" \
        python examples/multi_worker.py --iterations 20 &
    TF_CONFIG="{\"cluster\": $CLUSTER, \"task\": {\"type\": \"worker\", \"index\": 1}}" \
        python examples/multi_worker.py --iterations 20

Every worker holds the same weights after every iteration; worker 0 (the chief) prints the
progress and exports the SavedModel for TF Serving.
"""

import argparse
import json
import os
import sys
import time

# examples/ holds mujoco.py: off the import path, or gymnasium's `import mujoco` finds that script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import gymnasium  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_trpo  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each iteration (collection + update) on this worker."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1024, help="env steps per iteration on each worker")
    parser.add_argument("--num-envs", type=int, default=8, help="sub-environments per worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-out", help="save this worker's final weights (.npz)")
    parser.add_argument("--export", help="SavedModel directory (written by the chief)")
    args = parser.parse_args(argv)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {"index": 0})
    worker, chief = int(task["index"]), int(task["index"]) == 0

    env = gymnasium.make_vec(args.env, num_envs=args.num_envs, vectorization_mode="sync")
    with strategy.scope():
        model = keras_trpo.TRPO.for_env(env, max_kl=0.02, seed=args.seed)  # same initial weights everywhere
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    # Each worker its own episodes: the seed differs by worker.
    rollouts = keras_trpo.Rollouts(env, model, steps=args.steps, seed=args.seed + 1000 * worker)
    timer = EpochTimer()
    callbacks = [timer] + ([keras_trpo.callbacks.ProgressLogger(every=1)] if chief else [])
    model.fit(rollouts, epochs=args.iterations, verbose=0, callbacks=callbacks)
    print(f"worker {worker}: {model.policy_version} updates, {rollouts.env_steps} env steps collected here")
    if len(timer.seconds) > 1:  # the first iteration includes tracing
        collect = rollouts.collect_seconds / args.iterations
        print(
            f"worker {worker}: mean iteration time after the first: {np.mean(timer.seconds[1:]):.3f} s, "
            f"of which collection {collect:.3f} s (mean over all iterations)"
        )
    if args.weights_out:
        np.savez(args.weights_out, *[w.numpy() for w in model.weights])
    if args.export and chief:
        print("exported", model.export(args.export))


if __name__ == "__main__":
    main()
