"""The cost of one recurrent TRPO update against the sequence length and the batch size (issue 29, item 6).

For each (sequence_length L, batch rows N) a fresh process builds the CartPoleNoVel-v1 preset's model (an MLP(64)
then an LSTM(64) per tower), traces ``train_step`` on a synthetic batch of N rows (N / L sequences, episode starts
at 5% of the steps), then times ``--repeats`` updates (median), and reports the process's peak resident memory
(``ru_maxrss``) after them. The same model without memory (``recurrent=False``, 64×64 MLPs) on the same N is the
reference row. One TensorFlow thread, as the presets train.

    python benchmarks/recurrent_cost.py                 # the table in benchmarks/README.md
    python benchmarks/recurrent_cost.py --lengths 8 16 --rows 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import gymnasium, keras
import keras_trpo
from keras_trpo import presets, wrappers

length, rows, repeats, recurrent = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
preset = presets.load_preset("CartPoleNoVel-v1")
overrides = {"model.sequence_length": length} if recurrent else {
    "model.recurrent": False, "model.hidden_units": [64, 64], "model.value_hidden_units": [64, 64]}
preset = preset.override(overrides)
env = gymnasium.make_vec("keras_trpo/CartPoleNoVel-v1", num_envs=1, vectorization_mode="sync")
model = preset.build_model(env, seed=0)
rng = np.random.default_rng(0)
batch = {"observations": rng.normal(size=(rows, 2)).astype(np.float32), "actions": rng.integers(0, 2, rows),
         "advantages": rng.normal(size=rows).astype(np.float32), "returns": rng.normal(size=rows).astype(np.float32)}
if recurrent:
    batch.update({name: rng.normal(0, 0.3, (rows, units)).astype(np.float32)
                  for name, units in model.state_sizes().items()})
    batch.update(episode_starts=rng.random(rows) < 0.05, sequence_mask=np.ones(rows, bool))
step = tf.function(model.train_step, autograph=False)
began = time.perf_counter()
step(batch)
trace = time.perf_counter() - began
times = []
for _ in range(repeats):
    began = time.perf_counter()
    logs = step(batch)
    float(logs["kl"])
    times.append(time.perf_counter() - began)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"length": length if recurrent else None, "rows": rows, "recurrent": recurrent,
                  "trace_seconds": round(trace, 2), "update_seconds": round(float(np.median(times)), 3),
                  "peak_rss_mb": round(peak)}))
"""


def measure(length: int, rows: int, repeats: int, recurrent: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(length), str(rows), str(repeats), str(int(recurrent))],
                         capture_output=True, text=True, check=True, env={"TF_CPP_MIN_LOG_LEVEL": "3",
                                                                          **__import__("os").environ})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--rows", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    results = []
    for rows in args.rows:
        results.append(measure(16, rows, args.repeats, recurrent=False))
        results += [measure(length, rows, args.repeats, recurrent=True) for length in args.lengths]
    print("| model | sequence_length | batch rows | trace s | update s (median) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        model = "LSTM(64) towers" if r["recurrent"] else "64×64 MLP towers"
        print(f"| {model} | {r['length'] or '–'} | {r['rows']} | {r['trace_seconds']} | {r['update_seconds']} | "
              f"{r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
