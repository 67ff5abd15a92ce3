"""One TRPO update (policy step + critic) at growing batch sizes, on whatever device TensorFlow sees.

    python benchmarks/gpu.py                           # GPU: 2k/8k/32k for both networks; CPU: small sizes
    python benchmarks/gpu.py --mlp-sizes 2048 --cnn-sizes 2048 8192 --repeats 5

On a machine with an NVIDIA GPU (Linux, a recent driver), from the repository root:

    pip install -e . "tensorflow[and-cuda]==$(python -c 'import tensorflow as tf; print(tf.__version__)')"
    python -c "import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))"   # must list a GPU
    python benchmarks/gpu.py --wait-idle | tee gpu-$(date +%F).txt

(TensorFlow's CUDA libraries come with its ``and-cuda`` extra, at the installed TensorFlow's version.)
With a GPU visible the script runs 2k/8k/32k samples for both networks, ``jit_compile`` off and on
(12 children, each its own process), and reports peak device memory; its table goes in benchmarks/README.md,
"One update at growing batch sizes". Without one it says so on its second line and runs the CPU sizes.

Two models, synthetic batches (no environment):

- ``mlp``: the default 64×64 tanh policy and value MLPs on a Hopper-like ``Box(11)`` observation,
  ``Box(3)`` actions (Gaussian head); observations, actions, advantages and returns drawn from N(0, 1);
- ``nature_cnn``: ``policy_network="nature_cnn", value_network="nature_cnn"`` on uint8 frames
  ``[4, 84, 84]`` (uniform 0..255), ``Discrete(6)`` actions (uniform).

TRPO settings are sb3-contrib's defaults (15 CG steps, damping 0.1, max_kl 0.01, line search 0.8 × 10,
critic Adam(1e-3), 10 epochs of 128-sample minibatches, no Fisher subsampling), each with
``jit_compile`` off and on (``model.compile(jit_compile=...)``; Keras' ``"auto"`` turns XLA on when
a GPU is present). Each (network, batch size, jit_compile) runs in its own child process: the
batch is placed on the device once, ``train_step`` is called through the model's train function
(as ``fit`` does): a first call (tracing, and XLA compilation when on), then ``--repeats`` timed
calls, median reported. Memory: ``tf.config.experimental.get_memory_info("GPU:0")["peak"]`` with a
GPU; without one, the child's peak RSS (the TensorFlow runtime included; the RSS before the first
update is printed too).

Without a GPU the default sizes are small (MLP 2k/8k/32k, nature_cnn 2k only) so that the run
ends in a few minutes, and nature_cnn with ``jit_compile=True`` is skipped: XLA's CPU code for the
update's convolutions took 509 s per update at 256 frames on a 2-core Xeon, against 5.2 s
without XLA (``--cpu-cnn-jit`` runs it anyway, at the nature_cnn sizes given). The output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import _peak_rss_mb, cpu_name  # noqa: E402  (bench.py's helpers; it imports nothing heavy)
from cnn import run_isolated  # noqa: E402  (one child process, and the CPU used by other processes meanwhile)
SETTINGS = dict(max_kl=0.01, damping=0.1, cg_iterations=15, backtrack_coefficient=0.8, backtrack_iterations=10,
                fvp_fraction=1.0, value_epochs=10, value_batch_size=128)
GPU_SIZES = {"mlp": [2048, 8192, 32768], "nature_cnn": [2048, 8192, 32768]}
CPU_SIZES = {"mlp": [2048, 8192, 32768], "nature_cnn": [2048]}


def child(network, samples, jit, repeats):
    import gymnasium
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_trpo

    samples, jit, repeats = int(samples), jit == "1", int(repeats)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)  # peak = what the update needs, not the whole card
    rng = np.random.default_rng(0)
    if network == "mlp":
        observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (11,), np.float32)
        action_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)
        observations = rng.standard_normal((samples, 11), dtype=np.float32)
        actions = rng.standard_normal((samples, 3), dtype=np.float32)
        kwargs = {}
    else:
        observation_space = gymnasium.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        action_space = gymnasium.spaces.Discrete(6)
        observations = rng.integers(0, 256, (samples, 4, 84, 84), dtype=np.uint8)
        actions = rng.integers(0, 6, samples, dtype=np.int64)
        kwargs = {"policy_network": "nature_cnn", "value_network": "nature_cnn"}
    keras.utils.set_random_seed(0)
    model = keras_trpo.TRPO(observation_space, action_space, seed=0, **SETTINGS, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    device = "/GPU:0" if gpus else "/CPU:0"
    with tf.device(device):
        batch = {"observations": tf.identity(observations), "actions": tf.identity(actions),
                 "advantages": tf.identity(rng.standard_normal(samples, dtype=np.float32)),
                 "returns": tf.identity(rng.standard_normal(samples, dtype=np.float32))}
    del observations
    rss_before = _peak_rss_mb()
    train_function = model.make_train_function()

    def one():
        start = time.perf_counter()
        logs = train_function(iter([batch]))
        shrinks = float(logs["line_search_steps"])  # waits for the device
        return time.perf_counter() - start, shrinks

    first, _ = one()
    runs = [one() for _ in range(repeats)]
    result = {"network": network, "samples": samples, "jit_compile": bool(model.jit_compile),
              "median_ms": 1000 * statistics.median(r[0] for r in runs), "runs_ms": [1000 * r[0] for r in runs],
              "first_call_s": first, "line_search_shrinks": [r[1] for r in runs], "device": device,
              "rss_before_mb": rss_before, "peak_rss_mb": _peak_rss_mb()}
    if gpus:
        result["peak_device_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def run_child(network, samples, jit, repeats, wait_idle=False):
    try:
        return run_isolated([os.path.abspath(__file__), "_child", network, str(samples), "1" if jit else "0",
                             str(repeats)], f"{network} {samples} jit={jit}", wait_idle)
    except RuntimeError as error:
        return {"error": (str(error).strip().splitlines() or ["no output"])[-1][:200]}


def describe_devices():
    """``(has_gpu, description)`` of the devices TensorFlow sees, in a child-free way (this process)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return True, f"GPU: {', '.join(names)}; tensorflow {tf.__version__}"
    return False, f"CPU only: {os.cpu_count()} cores, {cpu_name()}; tensorflow {tf.__version__}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child(*argv[1:5])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlp-sizes", type=int, nargs="+", help="batch sizes for the MLP")
    parser.add_argument("--cnn-sizes", type=int, nargs="+", help="batch sizes for nature_cnn")
    parser.add_argument("--repeats", type=int, help="timed updates after the first (default 3 on GPU, 2 on CPU)")
    parser.add_argument("--jit", choices=["off", "on", "both"], default="both")
    parser.add_argument("--wait-idle", action="store_true",
                        help="before each child, wait (polling every 60 s) until other processes use < 10%% of the CPUs, "
                        "and run a child again (3 runs at most) if they used more meanwhile")
    parser.add_argument("--cpu-cnn-jit", action="store_true",
                        help="without a GPU, also run nature_cnn with jit_compile=True (minutes per update)")
    args = parser.parse_args(argv)
    has_gpu, devices = describe_devices()
    sizes = dict(GPU_SIZES if has_gpu else CPU_SIZES)
    sizes["mlp"] = args.mlp_sizes or sizes["mlp"]
    sizes["nature_cnn"] = args.cnn_sizes or sizes["nature_cnn"]
    repeats = args.repeats or (3 if has_gpu else 2)
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {devices}")
    if not has_gpu:
        import tensorflow as tf  # already imported by describe_devices

        print(f"No GPU visible. On a machine with one: pip install -e . \"tensorflow[and-cuda]=={tf.__version__}\", "
              "check that tf.config.list_physical_devices('GPU') lists it, then run "
              "python benchmarks/gpu.py --wait-idle (2k/8k/32k samples, both networks, jit_compile off and on).")
        print(f"Running the CPU part: CPU sizes only (mlp {sizes['mlp']}, nature_cnn {sizes['nature_cnn']}); memory "
              "is the child process's peak RSS (TensorFlow runtime included), not device memory."
              + ("" if args.cpu_cnn_jit else " nature_cnn with jit_compile=True skipped (XLA's CPU convolutions: "
                 "minutes per update; --cpu-cnn-jit to run it)."))
    print(f"settings: {SETTINGS}, Adam(1e-3); median of {repeats} updates after a first (tracing) call", flush=True)
    rows = []
    for network in ("mlp", "nature_cnn"):
        for samples in sizes[network]:
            for jit in jits:
                if network == "nature_cnn" and jit and not has_gpu and not args.cpu_cnn_jit:
                    rows.append((network, samples, jit, {"skipped": "skipped on CPU (--cpu-cnn-jit)"}))
                    continue
                r = run_child(network, samples, jit, repeats, args.wait_idle)
                print(f"  {network} {samples} jit={jit}: {json.dumps(r)}", flush=True)
                rows.append((network, samples, jit, r))
    memory = "peak device memory" if has_gpu else "peak RSS (RSS before the update)"
    print(f"\n| network | batch | jit_compile | ms per update | first call | line-search shrinks | {memory} |")
    print("|---|---|---|---|---|---|---|")
    for network, samples, jit, r in rows:
        name = "MLP 64×64 (Box(11) → Box(3))" if network == "mlp" else "nature_cnn (uint8 4×84×84 → Discrete(6))"
        if "error" in r or "skipped" in r:
            reason = r.get("skipped") or f"failed: {r['error']}"
            print(f"| {name} | {samples:,} | {'on' if jit else 'off'} | {reason} | | | |")
            continue
        mem = (f"{r['peak_device_mb']:,.0f} MB" if has_gpu
               else f"{r['peak_rss_mb']:,.0f} MB ({r['rss_before_mb']:,.0f} MB)")
        shrinks = "/".join(f"{s:.0f}" for s in r["line_search_shrinks"])
        print(f"| {name} | {samples:,} | {'on' if jit else 'off'} | {r['median_ms']:,.0f} ms | "
              f"{r['first_call_s']:.1f} s | {shrinks} | {mem} |")
    shares = [r["others_cpu_share"] for *_, r in rows if "others_cpu_share" in r]
    if shares:
        print(f"\nother processes' CPU share during the children: max {max(shares):.1%} (0% is an otherwise idle machine)")


if __name__ == "__main__":
    main()
