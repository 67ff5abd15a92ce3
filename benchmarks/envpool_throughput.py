"""Env steps per second through EnvPool, gymnasium sync and gymnasium async vector envs, on this machine.

    pip install -e ".[envpool,mujoco]"
    python benchmarks/envpool_throughput.py                       # Hopper-v5 and CartPole-v1, 50k training steps each (~3 min)
    python benchmarks/envpool_throughput.py --train-steps 100000 --repeats 3   # longer, median of 3 interleaved runs

For each task and backend (same number of sub-envs: the task's preset's ``num_envs``):

* **training**: ``model.fit`` at the task's preset (its network, TRPO and critic settings, steps per
  iteration; the model built by ``TRPO.for_env`` of that env) for ``--train-steps`` env steps; printed as
  env steps per second of the whole ``fit`` (collection, updates, the first trace) and of collection alone
  (``Rollouts.collect_seconds``: acting, env steps, buffer writes, GAE);
* **raw**: the same vector env stepped with uniformly random actions and nothing else (the floor of
  collection): gymnasium's envs reset their finished sub-envs with ``reset_mask``, EnvPool resets them
  itself on their next step (that step is not counted as an env step: it is no transition).

Every measurement runs in its own child process (``envpool_throughput.py _child ...``), one after the other, the
backends interleaved within each repeat. TensorFlow runs with one intra-op thread (as in bench.py,
``BENCH_TF_INTRA_THREADS`` to change it). EnvPool runs with its default ``num_threads`` (one C++ thread per
sub-env: backend ``envpool``) and with one thread (``envpool-1thread``): on 2 shared cores, waking one
thread per sub-env at every step cost more than it saved (docs/envpool.md). EnvPool's Hopper-v5 is its own C++ port with MuJoCo compiled in
(docs/envpool.md): the benchmark rows of the main table stay on gymnasium's envs.

Not named ``envpool.py``: the script's folder is first on ``sys.path``, and ``import envpool`` would import it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

BACKENDS = ("envpool", "envpool-1thread", "sync", "async")
NAMES = {"envpool": "EnvPool (a thread per sub-env)", "envpool-1thread": "EnvPool (1 thread)",
         "sync": "gymnasium sync", "async": "gymnasium async"}
TASKS = ("Hopper-v5", "CartPole-v1")


def make_env(backend, env_id, num_envs, seed):
    if backend.startswith("envpool"):
        import envpool

        threads = 1 if backend == "envpool-1thread" else 0  # 0: EnvPool's default, one per sub-env
        return envpool.make_gymnasium(env_id, num_envs=num_envs, seed=seed, num_threads=threads)
    from keras_trpo.presets import load_preset

    return load_preset(env_id).make_env(vectorization_mode=backend)


def train(backend, env_id, steps, seed=0):
    import warnings

    import keras

    from keras_trpo.presets import load_preset

    keras.utils.set_random_seed(seed)
    preset = load_preset(env_id)
    env = make_env(backend, env_id, preset.num_envs, seed)
    model = preset.build_model(env, seed=seed)
    with warnings.catch_warnings():  # EnvPool: "reset(seed=...) is ignored" (seeded at make_gymnasium)
        warnings.filterwarnings("ignore", message="EnvPool seeds are fixed")
        rollouts = preset.build_rollouts(env, model, seed=seed)
        start = time.perf_counter()
        model.fit(rollouts, epochs=preset.iterations(steps), verbose=0)
        wall = time.perf_counter() - start
    env.close()
    return {"num_envs": env.num_envs, "env_steps": rollouts.env_steps, "fit_steps_per_s": rollouts.env_steps / wall,
            "collect_steps_per_s": rollouts.env_steps / rollouts.collect_seconds, "fit_s": wall}


def raw(backend, env_id, steps, seed=0):
    """Random actions only; counts transitions (an EnvPool reset step is none)."""
    import warnings

    import numpy as np

    from keras_trpo.presets import load_preset

    num_envs = load_preset(env_id).num_envs
    env = make_env(backend, env_id, num_envs, seed)
    space, rng = env.single_action_space, np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EnvPool seeds are fixed")
        env.reset(seed=seed)
    resetting = np.zeros(num_envs, bool)
    transitions = 0
    start = time.perf_counter()
    while transitions < steps:
        if hasattr(space, "n"):
            actions = rng.integers(0, space.n, num_envs)
        else:
            actions = rng.uniform(space.low, space.high, (num_envs, *space.shape)).astype(space.dtype)
        _, _, terminated, truncated, _ = env.step(actions)
        transitions += int((~resetting).sum())
        done = (terminated | truncated) & ~resetting
        if backend.startswith("envpool"):
            resetting = done  # EnvPool's next step only resets these
        elif done.any():
            env.reset(options={"reset_mask": done})
    wall = time.perf_counter() - start
    env.close()
    return {"num_envs": num_envs, "env_steps": transitions, "raw_steps_per_s": transitions / wall}


def child(mode, backend, env_id, steps):
    import tensorflow as tf

    threads = os.environ.get("BENCH_TF_INTRA_THREADS", "1")
    if threads != "default":
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    fn = train if mode == "train" else raw
    print("RESULT " + json.dumps(fn(backend, env_id, int(steps))), flush=True)


def run_child(mode, backend, env_id, steps):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "_child", mode, backend, env_id, str(steps)],
                          capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{mode} {backend} {env_id} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child(*argv[1:5])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=50_000, help="env steps of each training run")
    parser.add_argument("--raw-steps", type=int, default=100_000, help="env steps of each random-action run")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the table shows medians")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    args = parser.parse_args(argv)
    from bench import machine  # benchmarks/bench.py: the machine line of every benchmark table

    from importlib.metadata import version

    print(f"{time.strftime('%Y-%m-%d')} | {machine()}, envpool {version('envpool')}", flush=True)
    results = {}
    for _ in range(args.repeats):
        for env_id in args.tasks:
            for backend in args.backends:
                for mode, steps in (("raw", args.raw_steps), ("train", args.train_steps)):
                    result = run_child(mode, backend, env_id, steps)
                    results.setdefault((env_id, backend), []).append(result)
                    print(f"  {env_id} {backend} {mode}: {result}", file=sys.stderr, flush=True)
    print(f"\nEnv steps/s ({args.repeats} run(s) each, median; training: {args.train_steps} steps at the task's "
          f"preset; raw: {args.raw_steps} random-action steps)\n")
    print("| task | backend | sub-envs | raw random-action steps/s | training: env steps/s of fit | "
          "training: env steps/s of collection | fit time / raw time |")
    print("|---|---|---|---|---|---|---|")
    for (env_id, backend), rows in results.items():
        def median(key):
            return statistics.median(r[key] for r in rows if key in r)

        raw_rate, fit_rate = median("raw_steps_per_s"), median("fit_steps_per_s")
        name = NAMES[backend]
        print(f"| {env_id} | {name} | {rows[0]['num_envs']} | {raw_rate:,.0f} | {fit_rate:,.0f} | "
              f"{median('collect_steps_per_s'):,.0f} | {raw_rate / fit_rate:.2f}× |")


if __name__ == "__main__":
    main()
