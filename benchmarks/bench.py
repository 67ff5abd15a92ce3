"""keras_trpo against sb3-contrib's TRPO, side by side on this machine.

    pip install -e ".[bench]"
    python benchmarks/bench.py                 # (a) CartPole, (b) update, (c) collection, (e) RSS
    python benchmarks/bench.py --hopper-1m     # also (d): Hopper-v5 for 1M steps (~14 minutes a seed)
    python benchmarks/bench.py --only hopper --hopper-seeds 3   # (d) on seeds 0, 1, 2 (~40 minutes)
    python benchmarks/bench.py --only update   # one benchmark
    python benchmarks/bench.py --only profile  # where Hopper-v5 1M at its preset spends its time (~5 minutes)
    python benchmarks/bench.py --only profile --profile-steps 100000   # the same, shorter (~1 minute)
    python benchmarks/bench.py --only profile-cartpole   # the older, coarser profile of (a)

Every measurement runs in its own child process (``bench.py _child FRAMEWORK TASK``), so the
peak RSS of each framework is measured separately and neither warms the other's caches. The
parent prints one table of ratios keras_trpo / sb3-contrib (lower is better for times and
memory, higher is better for throughput).

Matched settings (both frameworks):
* networks: separate policy and value MLPs, 64x64 tanh (sb3's MlpPolicy default);
* TRPO: max_kl/target_kl, CG iterations, damping 0.1, line search 0.8 x 10, advantage
  normalization, no Fisher subsampling (fvp_fraction 1 / sub_sampling_factor 1);
* critic: Adam(1e-3), the same number of epochs and 128-sample minibatches;
* rollouts: the same number of sync envs and steps per iteration, same gamma and GAE lambda.

Threads: each framework at its best setting here. sb3-contrib runs with ``torch.set_num_threads(1)``
(``BENCH_TORCH_THREADS`` to change it): with PyTorch's default of one OpenMP thread per core, a
busy second core made its small matmuls ~25x slower here. keras_trpo runs with
``tf.config.threading.set_intra_op_parallelism_threads(1)`` (``BENCH_TF_INTRA_THREADS``, or
``default`` for TensorFlow's own), and (a) and (b) are also measured with TensorFlow's defaults,
printed on the rows marked "TF's default threads".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# (a) CartPole-v1, 100k steps: the settings of examples/cartpole.py.
CARTPOLE = dict(env="CartPole-v1", num_envs=8, steps_per_iteration=1024, total_steps=100_000, max_kl=0.02,
                gamma=0.99, gae_lambda=0.97, cg_iterations=10, critic_epochs=10, critic_batch=128)
# (b) one update at equal work: sb3-contrib's defaults.
UPDATE = dict(env="Hopper-v5", samples=2048, cg_iterations=15, critic_epochs=10, critic_batch=128, repeats=25)
# (d) Hopper-v5, 1M steps, in matched KL units: sb3-contrib's target_kl is a mean over samples *and*
# action dimensions (stable-baselines3's kl_divergence is per dimension for a diagonal Gaussian), so
# for d action dimensions keras_trpo takes max_kl = d * target_kl and damping = d * cg_damping; one
# update from the same weights and batch is then the same step (cosine 1.000000).
HOPPER = dict(env="Hopper-v5", num_envs=1, steps_per_iteration=2048, total_steps=1_000_000, max_kl=0.01,
              gamma=0.99, gae_lambda=0.95, cg_iterations=15, critic_epochs=10, critic_batch=128,
              matched_kl_units=True)


# --------------------------------------------------------------------------
# Children: one framework, one task, JSON on stdout
# --------------------------------------------------------------------------
def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def keras_train(cfg, seed=0):
    import gymnasium
    import keras
    import numpy as np

    import keras_trpo

    keras.utils.set_random_seed(seed)
    env = gymnasium.make_vec(cfg["env"], num_envs=cfg["num_envs"], vectorization_mode="sync")
    # sb3-contrib's KL units (see HOPPER): d action dimensions scale the trust region and the damping.
    d = int(np.prod(env.single_action_space.shape)) if cfg.get("matched_kl_units") else 1
    model = keras_trpo.TRPO.for_env(
        env, max_kl=d * cfg["max_kl"], damping=d * 0.1, cg_iterations=cfg["cg_iterations"],
        value_epochs=cfg["critic_epochs"], value_batch_size=cfg["critic_batch"], seed=seed,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rollouts = keras_trpo.Rollouts(env, model, steps=cfg["steps_per_iteration"], gamma=cfg["gamma"],
                                   gae_lambda=cfg["gae_lambda"], seed=seed)
    start = time.perf_counter()
    model.fit(rollouts, epochs=cfg["total_steps"] // cfg["steps_per_iteration"], verbose=0)
    wall = time.perf_counter() - start
    returns = keras_trpo.evaluate(model, cfg["env"], episodes=10, seed=10_000 + seed)
    return {"wall_s": wall, "eval_return": float(np.mean(returns)), "env_steps": rollouts.env_steps}


def sb3_model(cfg, env, seed=0):
    from sb3_contrib import TRPO

    return TRPO(
        "MlpPolicy", env, learning_rate=1e-3, n_steps=cfg["steps_per_iteration"] // cfg["num_envs"],
        batch_size=cfg["critic_batch"], gamma=cfg["gamma"], gae_lambda=cfg["gae_lambda"],
        cg_max_steps=cfg["cg_iterations"], cg_damping=0.1, n_critic_updates=cfg["critic_epochs"],
        target_kl=cfg["max_kl"], seed=seed, device="cpu",
    )


def sb3_train(cfg, seed=0):
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_vec_env(cfg["env"], n_envs=cfg["num_envs"], seed=seed)
    model = sb3_model(cfg, env, seed)
    iterations = cfg["total_steps"] // cfg["steps_per_iteration"]
    start = time.perf_counter()
    model.learn(total_timesteps=iterations * cfg["steps_per_iteration"])
    wall = time.perf_counter() - start
    eval_env = make_vec_env(cfg["env"], n_envs=1, seed=10_000 + seed)
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    return {"wall_s": wall, "eval_return": float(np.mean(returns)), "env_steps": int(model.num_timesteps)}


def keras_update(cfg):
    import gymnasium
    import keras
    import tensorflow as tf

    import keras_trpo

    env = gymnasium.make_vec(cfg["env"], num_envs=1, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, cg_iterations=cfg["cg_iterations"], value_epochs=cfg["critic_epochs"],
                                    value_batch_size=cfg["critic_batch"], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = keras_trpo.Rollouts(env, model, steps=cfg["samples"], seed=0).collect()
    batch = {k: tf.constant(batch[k]) for k in ("observations", "actions", "advantages", "returns")}
    step = tf.function(model.train_step, autograph=False)  # as fit compiles it (trainer.TrainFunction)
    times = []
    for i in range(cfg["repeats"] + 3):
        start = time.perf_counter()
        logs = step(batch)
        float(logs["kl"])  # wait for the result
        if i >= 3:  # warm-up: tracing and the first calls
            times.append(time.perf_counter() - start)
    return {"median_ms": 1000 * statistics.median(times), "updates": len(times)}


def sb3_update(cfg):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import configure_logger

    env = make_vec_env(cfg["env"], n_envs=1, seed=0)
    model = sb3_model(
        {**cfg, "num_envs": 1, "steps_per_iteration": cfg["samples"], "gamma": 0.99, "gae_lambda": 0.95,
         "max_kl": 0.01}, env,
    )
    model._logger = configure_logger(verbose=0)
    model._setup_learn(total_timesteps=cfg["samples"])
    from stable_baselines3.common.callbacks import CallbackList

    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=cfg["samples"])
    times = []
    for i in range(cfg["repeats"] + 3):
        start = time.perf_counter()
        model.train()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return {"median_ms": 1000 * statistics.median(times), "updates": len(times)}


def keras_collect(env_id, num_envs, steps=8192):
    import gymnasium

    import keras_trpo

    env = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, seed=0)
    rollouts = keras_trpo.Rollouts(env, model, steps=steps, seed=0)
    rollouts.collect()  # warm-up
    start = time.perf_counter()
    rollouts.collect()
    collect = steps / (time.perf_counter() - start)
    return {"steps_per_s": collect, "raw_steps_per_s": _raw_steps_per_s(env, steps)}


def sb3_collect(env_id, num_envs, steps=8192):
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import configure_logger

    env = make_vec_env(env_id, n_envs=num_envs, seed=0)
    model = sb3_model({**HOPPER, "num_envs": num_envs, "steps_per_iteration": steps}, env)
    model._logger = configure_logger(verbose=0)
    model._setup_learn(total_timesteps=steps)
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=steps // num_envs)
    start = time.perf_counter()
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=steps // num_envs)
    return {"steps_per_s": steps / (time.perf_counter() - start)}


def _raw_steps_per_s(env, steps):
    """Steps a gymnasium vector env with random actions (the ceiling for collection)."""
    import bench_profile

    return steps / bench_profile.random_stepping_seconds(env, steps)


def keras_profile(cfg):
    """(a) with timers: collection, the compiled update (synced), the first iteration, and ``fit`` around them."""
    import keras_trpo.rollouts
    import keras_trpo.trainer

    times = {"collect": [], "call": [], "update": []}

    def timed(key, fn):
        def wrapper(*args):
            start = time.perf_counter()
            result = fn(*args)
            if key == "update":
                float(result["kl"])  # wait for the update's result
            times[key].append(time.perf_counter() - start)
            return result

        return wrapper

    collect, call = keras_trpo.rollouts.Rollouts.collect, keras_trpo.trainer.TrainFunction.__call__
    step_for = keras_trpo.trainer.TrainFunction._step_for
    keras_trpo.rollouts.Rollouts.collect = timed("collect", collect)
    keras_trpo.trainer.TrainFunction.__call__ = timed("call", call)
    keras_trpo.trainer.TrainFunction._step_for = lambda self, batch: timed("update", step_for(self, batch))
    result = keras_train(cfg)
    later = {key: sum(values[1:]) for key, values in times.items()}  # iterations 2..n
    return {"wall_s": result["wall_s"], "iterations": len(times["call"]), "first_iteration_s": times["call"][0],
            "collect_s": later["collect"], "update_s": later["update"],
            "fit_outside_train_function_s": result["wall_s"] - sum(times["call"])}


def _profile_task():
    import bench_profile

    steps = os.environ.get("BENCH_PROFILE_STEPS")
    return bench_profile.profile_child(os.environ["BENCH_PROFILE_ENV"], int(steps) if steps else None,
                                       bare=os.environ.get("BENCH_PROFILE_BARE") == "1",
                                       threads=os.environ.get("BENCH_TF_INTRA_THREADS", "preset"))


def _raw_task():
    import bench_profile

    return bench_profile.raw_child(os.environ["BENCH_RAW_ENV"], int(os.environ["BENCH_RAW_ENVS"]),
                                   int(os.environ["BENCH_RAW_STEPS"]), os.environ.get("BENCH_RAW_MODE", "sync"))


TASKS = {
    ("keras", "profile-cartpole"): lambda: keras_profile(CARTPOLE),
    ("keras", "profile-preset"): _profile_task,
    ("keras", "raw"): _raw_task,
    ("keras", "cartpole"): lambda: keras_train(CARTPOLE),
    ("sb3", "cartpole"): lambda: sb3_train(CARTPOLE),
    ("keras", "update"): lambda: keras_update(UPDATE),
    ("sb3", "update"): lambda: sb3_update(UPDATE),
    ("keras", "collect1"): lambda: keras_collect("Hopper-v5", 1),
    ("sb3", "collect1"): lambda: sb3_collect("Hopper-v5", 1),
    ("keras", "collect8"): lambda: keras_collect("Hopper-v5", 8),
    ("sb3", "collect8"): lambda: sb3_collect("Hopper-v5", 8),
    ("keras", "hopper"): lambda seed: keras_train(HOPPER, seed),
    ("sb3", "hopper"): lambda seed: sb3_train(HOPPER, seed),
}


def child(framework, task, seed=None):
    if framework == "sb3":
        import torch

        # PyTorch's default here (2 OpenMP threads on 2 cores) ran a 2048x64 matmul+tanh 25x
        # slower than 1 thread whenever the other core was busy; give sb3 its best setting.
        torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    elif os.environ.get("BENCH_TF_INTRA_THREADS", "1") not in ("default", "preset"):
        import tensorflow as tf

        # keras_trpo's best setting here, as one torch thread is sb3-contrib's: one thread per op.
        # The update's ops are small, and its policy and critic steps already run side by side on
        # the two cores; splitting each op over both cores as well made one update ~1.5x slower.
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("BENCH_TF_INTRA_THREADS", "1")))
    task_fn = TASKS[(framework, task)]
    result = task_fn() if seed is None else task_fn(int(seed))
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# Parent: run the children, print the table
# --------------------------------------------------------------------------
def run_child(framework, task, seed=None, **environ):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", **environ}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "_child", framework, task, *([] if seed is None else [str(seed)])],
        capture_output=True, text=True, env=env, check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{framework} {task} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def cpu_name():
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine():
    cpu = cpu_name()
    versions = {}
    for name in ("tensorflow", "keras", "tensorflow-probability", "gymnasium", "mujoco", "torch", "sb3-contrib"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - not installed
            versions[name] = "-"
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, " + ", ".join(
        f"{k} {v}" for k, v in versions.items()
    )


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_child":
        return child(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["cartpole", "update", "collect", "hopper", "profile", "profile-cartpole"],
                        action="append")
    parser.add_argument("--hopper-1m", action="store_true", help="also run (d), Hopper-v5 for 1M steps")
    parser.add_argument("--hopper-seeds", type=int, default=1, metavar="N", help="(d) on seeds 0..N-1 (default 1)")
    parser.add_argument("--profile-env", default="Hopper-v5", metavar="ENV",
                        help="--only profile: the preset to train (keras_trpo/presets/ENV.json; default Hopper-v5)")
    parser.add_argument("--profile-steps", type=int, metavar="N",
                        help="--only profile: env steps to train (default: the preset's, 1M for Hopper-v5)")
    parser.add_argument("--profile-raw-steps", type=int, metavar="N",
                        help="--only profile: random-action steps of the raw vector env, scaled to the run "
                        "(default: the run's steps, at most 200000)")
    parser.add_argument("--profile-bare", action="store_true",
                        help="--only profile: also train once more without timers, for the bare wall time")
    args = parser.parse_args(argv)
    for name in ("profile_steps", "profile_raw_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} takes a positive number of env steps, got {value}; "
                         "e.g. --profile-steps 100000")
    selected = args.only or ["cartpole", "update", "collect"] + (["hopper"] if args.hopper_1m else [])
    print(f"{time.strftime('%Y-%m-%d')} | {machine()}", flush=True)
    rows, rss = [], {}

    def both(task, seed=None):
        results = {}
        for framework in ("keras", "sb3"):
            results[framework] = run_child(framework, task, seed)
            rss.setdefault(framework, []).append(results[framework]["peak_rss_mb"])
            print(f"  {framework:5s} {task:9s} {'' if seed is None else f'seed {seed} '}"
                  f"{json.dumps(results[framework])}", flush=True)
        return results["keras"], results["sb3"]

    def tf_default_threads(task):
        """keras_trpo again, with TensorFlow's default thread pools (intra-op: one thread per core)."""
        result = run_child("keras", task, BENCH_TF_INTRA_THREADS="default")
        rss["keras"].append(result["peak_rss_mb"])
        print(f"  keras {task:9s} TF default threads {json.dumps(result)}", flush=True)
        return result

    if "cartpole" in selected:
        k, s = both("cartpole")
        rows.append(("(a) CartPole-v1 100k wall time", f"{k['wall_s']:.1f} s", f"{s['wall_s']:.1f} s",
                     k["wall_s"] / s["wall_s"], "<= 0.4"))
        rows.append(("(a) CartPole-v1 eval return", f"{k['eval_return']:.1f}", f"{s['eval_return']:.1f}", None, ">= sb3"))
        d = tf_default_threads("cartpole")
        rows.append(("(a) ... keras_trpo with TF's default threads", f"{d['wall_s']:.1f} s", f"{s['wall_s']:.1f} s",
                     d["wall_s"] / s["wall_s"], ""))
    if "update" in selected:
        k, s = both("update")
        rows.append(("(b) one update, 2048 samples", f"{k['median_ms']:.1f} ms", f"{s['median_ms']:.1f} ms",
                     k["median_ms"] / s["median_ms"], "<= 0.25"))
        d = tf_default_threads("update")
        rows.append(("(b) ... keras_trpo with TF's default threads", f"{d['median_ms']:.1f} ms",
                     f"{s['median_ms']:.1f} ms", d["median_ms"] / s["median_ms"], ""))
    if "collect" in selected:
        for n in (1, 8):
            k, s = both(f"collect{n}")
            rows.append((f"(c) Hopper-v5 collection, {n} env(s)", f"{k['steps_per_s']:,.0f}/s",
                         f"{s['steps_per_s']:,.0f}/s", k["steps_per_s"] / s["steps_per_s"], ""))
            rows.append((f"(c) keras_trpo vs raw stepping, {n} env(s)", f"{k['steps_per_s']:,.0f}/s",
                         f"raw {k['raw_steps_per_s']:,.0f}/s", k["steps_per_s"] / k["raw_steps_per_s"],
                         ">= 0.8" if n == 8 else ""))
    if "hopper" in selected:
        runs = [both("hopper", seed) for seed in range(args.hopper_seeds)]
        for seed, (k, s) in enumerate(runs):
            rows.append((f"(d) Hopper-v5 1M seed {seed}: wall time", f"{k['wall_s']:.0f} s", f"{s['wall_s']:.0f} s",
                         k["wall_s"] / s["wall_s"], ""))
            rows.append((f"(d) Hopper-v5 1M seed {seed}: eval return", f"{k['eval_return']:.0f}",
                         f"{s['eval_return']:.0f}", None, ""))
        k_wall, s_wall = (sum(r[i]["wall_s"] for r in runs) for i in (0, 1))
        k_ret, s_ret = (statistics.mean(r[i]["eval_return"] for r in runs) for i in (0, 1))
        rows.append((f"(d) Hopper-v5 1M, {len(runs)} seed(s): total wall time", f"{k_wall:.0f} s", f"{s_wall:.0f} s",
                     k_wall / s_wall, "<= 0.5"))
        rows.append((f"(d) Hopper-v5 1M, {len(runs)} seed(s): mean eval return", f"{k_ret:.0f}", f"{s_ret:.0f}", None,
                     ">= sb3"))
    if "profile" in selected:
        profile_preset(args)
    if "profile-cartpole" in selected:
        p = run_child("keras", "profile-cartpole",
                      BENCH_TF_INTRA_THREADS=os.environ.get("BENCH_TF_INTRA_THREADS", "default"))
        n = p["iterations"] - 1
        print(f"\n| part of keras_trpo's (a) (TF threads: {os.environ.get('BENCH_TF_INTRA_THREADS', 'default')}) "
              "| total | per iteration |\n|---|---|---|")
        print(f"| collection (iterations 2-{n + 1}) | {p['collect_s']:.2f} s | {1000 * p['collect_s'] / n:.1f} ms |")
        print(f"| TRPO update (iterations 2-{n + 1}) | {p['update_s']:.2f} s | {1000 * p['update_s'] / n:.1f} ms |")
        print(f"| first iteration (tracing, first call) | {p['first_iteration_s']:.2f} s | once |")
        print(f"| Keras fit around the train function | {p['fit_outside_train_function_s']:.2f} s | "
              f"{1000 * p['fit_outside_train_function_s'] / (n + 1):.1f} ms |")
        print(f"| fit wall time | {p['wall_s']:.2f} s | |")
    if not set(selected) - {"profile", "profile-cartpole"}:
        return
    rows.append(("(e) peak RSS (max over tasks)", f"{max(rss['keras']):.0f} MB", f"{max(rss['sb3']):.0f} MB",
                 max(rss["keras"]) / max(rss["sb3"]), ""))

    print("\n| benchmark | keras_trpo | sb3-contrib | ratio | target |\n|---|---|---|---|---|")
    for name, ours, theirs, ratio, target in rows:
        print(f"| {name} | {ours} | {theirs} | {'' if ratio is None else f'{ratio:.2f}'} | {target} |")


def profile_preset(args):
    """``--only profile``: the instrumented preset run, raw stepping of its vector env, the table."""
    import bench_profile

    from keras_trpo import presets

    preset = presets.load_preset(args.profile_env)
    steps = preset.iterations(args.profile_steps) * int(preset.rollouts["steps"])
    raw_steps = args.profile_raw_steps or min(steps, 200_000)
    # As keras-trpo train runs the preset: its intra_op_threads (1 for the MLP presets); or BENCH_TF_INTRA_THREADS.
    threads = os.environ.get("BENCH_TF_INTRA_THREADS", "preset")
    run = {"BENCH_TF_INTRA_THREADS": threads, "BENCH_PROFILE_ENV": args.profile_env,
           "BENCH_PROFILE_STEPS": "" if args.profile_steps is None else str(args.profile_steps)}
    p = run_child("keras", "profile-preset", **run)
    print(f"  keras profile {bench_profile.dumps(p)}", flush=True)
    raw = run_child("keras", "raw", BENCH_RAW_ENV=preset.env_id, BENCH_RAW_ENVS=str(preset.num_envs),
                    BENCH_RAW_STEPS=str(raw_steps), BENCH_RAW_MODE=preset.vectorization_mode)
    print(f"  raw stepping {json.dumps(raw)}", flush=True)
    bare = run_child("keras", "profile-preset", BENCH_PROFILE_BARE="1", **run) if args.profile_bare else None
    if bare is not None:
        print(f"  keras bare run {json.dumps(bare)}", flush=True)
    preset_threads = getattr(preset, "intra_op_threads", None)  # None too for code before the setting existed
    shown = f"{preset_threads or 'TensorFlow default'} (the preset's)" if threads == "preset" else threads
    bench_profile.print_table(p, raw, bare, shown)


if __name__ == "__main__":
    main()
