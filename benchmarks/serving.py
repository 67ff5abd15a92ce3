"""Serving latency of an exported policy's ``serving_default`` on this machine (issue 30, item 4).

For each model (the CartPole-v1 MLP, the Hopper-v5 MLP and the MiniGrid-Empty-8x8-v0 CNN, each built by its preset,
untrained: latency does not depend on the weights) the parent exports the policy once per format, then a fresh
process per (model, format) loads it with that format's runtime only and times ``--calls`` calls of
``serving_default`` at batch 1 and at batch 32 after ``--warmup-calls`` untimed ones, each call on the same
observations (space samples, seed 0). Reported: p50 and p99 in microseconds, per call.

| format    | runtime in the child process                                   | what is timed                          |
|-----------|----------------------------------------------------------------|----------------------------------------|
| saved_model | ``tf.saved_model.load(path).signatures["serving_default"]``  | the signature call on numpy inputs, and ``.numpy()`` of its outputs |
| litert    | ``ai_edge_litert.interpreter.Interpreter(path)``, ``get_signature_runner("serving_default")`` | the runner call (no TensorFlow imported) |
| onnx      | ``onnxruntime.InferenceSession(path)``                          | ``session.run`` (no TensorFlow imported) |

Threads: every runtime at its defaults (TensorFlow: one intra-op thread per core; LiteRT: its default;
ONNX Runtime: its default), as a user's server would start.

    pip install -e ".[serving,litert,onnx,mujoco,minigrid]"
    python benchmarks/serving.py                  # the table in benchmarks/README.md
    python benchmarks/serving.py --models cartpole --calls 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
from bench import cpu_name  # noqa: E402 - bench.py's, from this directory

# Then keep this directory off sys.path: benchmarks/minigrid.py would shadow the minigrid package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

MODELS = {"cartpole": "CartPole-v1", "hopper": "Hopper-v5", "minigrid": "MiniGrid-Empty-8x8-v0"}
SUFFIX = {"saved_model": "", "litert": ".tflite", "onnx": ".onnx"}
BATCHES = (1, 32)

CHILD = r"""
import json, sys, time
import numpy as np
fmt, path, inputs_path, calls, warmup = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
data = np.load(inputs_path)
batches = sorted({int(k.split("/")[0]) for k in data.files})

def strip(name):  # runtimes decorate names differently ("serving_default_observations:0", "observations:0")
    return name.split(":")[0]

if fmt == "saved_model":
    import tensorflow as tf
    fn = tf.saved_model.load(path).signatures["serving_default"]
    def runner(feeds):
        return {k: v.numpy() for k, v in fn(**feeds).items()}
elif fmt == "litert":
    from ai_edge_litert.interpreter import Interpreter
    run = Interpreter(model_path=path).get_signature_runner("serving_default")
    def runner(feeds):
        return run(**feeds)
else:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = {strip(i.name): i.name for i in session.get_inputs()}
    def runner(feeds):
        return session.run(None, {names[k]: v for k, v in feeds.items() if k in names})

out = {}
for batch in batches:
    feeds = {k.split("/", 1)[1]: data[k] for k in data.files if int(k.split("/")[0]) == batch}
    for _ in range(warmup):
        runner(feeds)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        runner(feeds)
        times.append(time.perf_counter() - start)
    us = np.array(times) * 1e6
    out[batch] = {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99)), "calls": calls}
print("RESULT " + json.dumps(out))
"""


def build(preset_name: str):
    """The preset's model for its env (one sub-env), and the env."""
    from keras_trpo import presets

    preset = presets.load_preset(preset_name)
    env = preset.make_env(num_envs=1)
    return preset.build_model(env, seed=0), env


def sample_inputs(model, batch: int) -> dict:
    """``{input name: [batch, ...] array}`` for ``serving_default``: observation-space samples, seed 0."""
    import numpy as np

    space = model.observation_space
    space.seed(0)
    samples = [space.sample() for _ in range(batch)]
    if isinstance(samples[0], dict):
        return {key: np.stack([s[key] for s in samples]) for key in samples[0]}
    return {"observations": np.stack(samples)}


def export_all(model, directory: str, formats) -> dict:
    """``{format: path}`` for each format that exports; ``{format: "error line"}`` for one that does not."""
    paths = {}
    for fmt in formats:
        target = os.path.join(directory, fmt + SUFFIX[fmt])
        try:
            paths[fmt] = model.export(target if fmt != "saved_model" else os.path.join(target, "1"), format=fmt)
        except Exception as error:  # noqa: BLE001 - reported in the table, not fatal
            paths[fmt] = f"ERROR {type(error).__name__}: {str(error).splitlines()[0]}"
    return paths


def time_child(fmt: str, path: str, inputs_path: str, calls: int, warmup: int) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", CHILD, fmt, path, inputs_path, str(calls), str(warmup)],
                            capture_output=True, text=True, env=env, check=False)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return {int(k): v for k, v in json.loads(line[len("RESULT "):]).items()}
    raise RuntimeError(f"{fmt} child failed: {result.stderr.strip().splitlines()[-1:]}")


def size_kb(path: str) -> float:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 1024
    return os.path.getsize(path) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--formats", nargs="+", choices=list(SUFFIX), default=list(SUFFIX))
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per batch size (>= 1000 for the table)")
    parser.add_argument("--warmup-calls", type=int, default=200)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    import numpy as np

    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model, env = build(MODELS[name])
            env.close()
            inputs_path = os.path.join(tmp, f"{name}-inputs.npz")
            np.savez(inputs_path, **{f"{b}/{k}": v for b in BATCHES for k, v in sample_inputs(model, b).items()})
            for fmt, path in export_all(model, os.path.join(tmp, name), args.formats).items():
                if path.startswith("ERROR"):
                    rows.append(f"| {name} | {fmt} | — | {path} | | | |")
                    continue
                timing = time_child(fmt, path, inputs_path, args.calls, args.warmup_calls)
                results[f"{name}/{fmt}"] = {"size_kb": size_kb(path), **{str(b): t for b, t in timing.items()}}
                t1, t32 = timing[1], timing[32]
                rows.append(f"| {name} | {fmt} | {size_kb(path):.0f} | {t1['p50']:.0f} | {t1['p99']:.0f} | "
                            f"{t32['p50']:.0f} | {t32['p99']:.0f} |")
    print(f"Machine: {os.cpu_count()} cores, {cpu_name()}, Python {platform.python_version()}; "
          f"{args.calls} timed calls per cell after {args.warmup_calls} untimed.")
    print("| model | format | size KB | batch 1 p50 µs | batch 1 p99 µs | batch 32 p50 µs | batch 32 p99 µs |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
