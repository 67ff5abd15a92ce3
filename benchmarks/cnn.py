"""keras_trpo's CNN path against sb3-contrib's TRPO (CnnPolicy), side by side on this machine.

    python benchmarks/cnn.py                          # Pong update + training, MiniGrid training (~15 minutes)
    python benchmarks/cnn.py --only update --jit      # also the keras update with jit_compile=True
    python benchmarks/cnn.py --only profile           # where keras_trpo's Pong update spends its time
    python benchmarks/cnn.py --sb3-threads 2          # side note: sb3-contrib's update with 2 torch threads

As ``bench.py``, every measurement runs in its own child process (``cnn.py _child FRAMEWORK TASK``),
so each framework's peak RSS is its own; the parent prints one table of ratios keras_trpo /
sb3-contrib and writes every child's result to ``docs/benchmarks/cnn/<date>.json``.

Pong: ``ALE/Pong-v5`` (``frameskip=1``) + ``AtariPreprocessing(frame_skip=4, screen_size=84)`` +
``FrameStackObservation(4)``: uint8 frames ``[4, 84, 84]`` on both sides, 8 sub-environments
stepped in one process (keras_trpo: gymnasium's ``make_vec(..., vectorization_mode="sync")``;
sb3-contrib: ``make_vec_env`` of the same wrapped env, a ``DummyVecEnv``, which adds a ``Monitor``).
Networks: separate policy and value Nature CNNs (32×8×8/4, 64×4×4/2, 64×3×3/1, Dense 512, ReLU,
orthogonal √2, pixels / 255) with a linear head on each: keras_trpo ``policy_network="nature_cnn",
value_network="nature_cnn"``; sb3-contrib ``CnnPolicy`` with ``share_features_extractor=False``
(``net_arch=[]`` is its NatureCNN default).

MiniGrid: ``MiniGrid-Empty-8x8-v0`` + ``ImgObsWrapper`` (uint8 ``[7, 7, 3]``, small integer codes,
unscaled), 8 sub-environments; keras_trpo ``minigrid_cnn`` for both networks against an sb3
``BaseFeaturesExtractor`` with the same layers (``MinigridCNN`` below; sb3 transposes the frames to
``[3, 7, 7]`` with its ``VecTransposeImage``), ``normalize_images=False``, ``net_arch=[]``.

Matched TRPO settings (sb3-contrib's defaults): 2048 samples per update (8 envs × 256 steps), 15 CG
steps, damping 0.1, line search 0.8 × 10, target_kl / max_kl 0.01 (Discrete actions: sb3-contrib's
KL is already the per-sample KL, no unit conversion), advantage normalization, no Fisher
subsampling, critic Adam(1e-3), 10 epochs of 128-sample minibatches, γ 0.99, GAE λ 0.95.

Threads: sb3-contrib with ``torch.set_num_threads(1)`` as in ``bench.py`` (``--sb3-threads N`` adds
a side measurement of its update with N threads); TensorFlow keeps its defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import _peak_rss_mb, machine  # noqa: E402  (bench.py's helpers; it imports nothing heavy)

OUT = os.path.normpath(os.path.join(HERE, "..", "docs", "benchmarks", "cnn"))

TRPO_SETTINGS = dict(samples=2048, num_envs=8, gamma=0.99, gae_lambda=0.95, max_kl=0.01, damping=0.1,
                     cg_iterations=15, line_search=(0.8, 10), critic_epochs=10, critic_batch=128, critic_lr=1e-3)
PONG = dict(TRPO_SETTINGS, env="ALE/Pong-v5")
MINIGRID = dict(TRPO_SETTINGS, env="MiniGrid-Empty-8x8-v0")


# --------------------------------------------------------------------------
# Environments (no TensorFlow or torch at import: each child loads only its framework)
# --------------------------------------------------------------------------
def _pong_wrappers():
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    return [lambda e: AtariPreprocessing(e, frame_skip=4, screen_size=84), lambda e: FrameStackObservation(e, 4)]


def pong_vector_env(num_envs):
    """keras_trpo's env: the issue's ``gymnasium.make_vec`` call."""
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    return gymnasium.make_vec("ALE/Pong-v5", num_envs=num_envs, vectorization_mode="sync", frameskip=1,
                              wrappers=_pong_wrappers())


def pong_single_env():
    """One sub-environment of :func:`pong_vector_env`, for sb3's ``make_vec_env``."""
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    env = gymnasium.make("ALE/Pong-v5", frameskip=1)
    for wrapper in _pong_wrappers():
        env = wrapper(env)
    return env


def _import_minigrid():
    # This directory holds minigrid.py (a benchmark): drop it so that `import minigrid` is the package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
    from minigrid.wrappers import ImgObsWrapper  # importing minigrid registers its envs

    return ImgObsWrapper


def minigrid_vector_env(num_envs):
    import gymnasium

    return gymnasium.make_vec(MINIGRID["env"], num_envs=num_envs, vectorization_mode="sync",
                              wrappers=[_import_minigrid()])


def minigrid_single_env():
    import gymnasium

    return _import_minigrid()(gymnasium.make(MINIGRID["env"]))


# --------------------------------------------------------------------------
# keras_trpo children
# --------------------------------------------------------------------------
def keras_model(env, network, cfg, jit=False, seed=0):
    import keras

    import keras_trpo

    keras.utils.set_random_seed(seed)
    model = keras_trpo.TRPO.for_env(
        env, policy_network=network, value_network=network, max_kl=cfg["max_kl"], damping=cfg["damping"],
        cg_iterations=cfg["cg_iterations"], backtrack_coefficient=cfg["line_search"][0],
        backtrack_iterations=cfg["line_search"][1], fvp_fraction=1.0, value_epochs=cfg["critic_epochs"],
        value_batch_size=cfg["critic_batch"], seed=seed,
    )
    model.compile(optimizer=keras.optimizers.Adam(cfg["critic_lr"]), jit_compile=bool(jit))
    return model


def keras_rollouts(env, model, cfg, seed=0):
    import keras_trpo

    return keras_trpo.Rollouts(env, model, steps=cfg["samples"], gamma=cfg["gamma"], gae_lambda=cfg["gae_lambda"],
                               seed=seed)


def keras_pong_batch(cfg, jit=False):
    """A Pong model and one collected batch of ``cfg["samples"]`` frames (as tensors, without policy_version)."""
    import tensorflow as tf

    env = pong_vector_env(cfg["num_envs"])
    model = keras_model(env, "nature_cnn", cfg, jit)
    batch = keras_rollouts(env, model, cfg).collect()
    env.close()
    return model, {k: tf.constant(batch[k]) for k in ("observations", "actions", "advantages", "returns")}


def keras_update(cfg, repeats, jit=False):
    model, batch = keras_pong_batch(cfg, jit)
    train_function = model.make_train_function()  # what fit calls: train_step compiled as in fit

    def one():
        start = time.perf_counter()
        logs = train_function(iter([batch]))
        steps = float(logs["line_search_steps"])  # waits for the result
        return time.perf_counter() - start, steps, float(logs["step_accepted"])

    first, *_ = one()
    runs = [one() for _ in range(repeats)]
    return {"median_ms": 1000 * statistics.median(r[0] for r in runs), "runs_ms": [1000 * r[0] for r in runs],
            "first_call_s": first, "line_search_shrinks": [r[1] for r in runs], "accepted": [r[2] for r in runs],
            "jit_compile": bool(model.jit_compile), "samples": int(batch["returns"].shape[0])}


class _IterationClock:
    """Timestamps at the start of each iteration; iteration i lasts until the start of i + 1 (or the end)."""

    def __init__(self):
        self.starts, self.collect, self.end = [], [], None

    def result(self, samples):
        times = [b - a for a, b in zip(self.starts, self.starts[1:] + [self.end])]
        steady = times[1:] or times
        return {"iteration_s": times, "collect_s": self.collect,
                "steps_per_s": samples * len(steady) / sum(steady),
                "steps_per_s_all": samples * len(times) / sum(times),
                "collect_steps_per_s": samples * len(self.collect[1:] or self.collect)
                / sum(self.collect[1:] or self.collect)}


def keras_train(cfg, iterations, env_fn, network, jit=False):
    import keras

    env = env_fn(cfg["num_envs"])
    model = keras_model(env, network, cfg, jit)
    rollouts = keras_rollouts(env, model, cfg)
    clock = _IterationClock()

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            clock.starts.append(time.perf_counter())
            self._collected = rollouts.collect_seconds

        def on_train_batch_end(self, batch, logs=None):
            clock.collect.append(rollouts.collect_seconds - self._collected)

    model.fit(rollouts, epochs=iterations, verbose=0, callbacks=[Clock()])
    clock.end = time.perf_counter()
    env.close()
    return {**clock.result(cfg["samples"]), "env_steps": int(rollouts.env_steps), "iterations": iterations,
            "jit_compile": bool(model.jit_compile)}


def keras_profile(cfg, repeats):
    """Cumulative compiled pieces of ``train_step`` (keras_trpo.update's functions), each timed on the batch."""
    import tensorflow as tf

    from keras_trpo import critic as critic_module
    from keras_trpo import ops, update

    model, batch = keras_pong_batch(cfg)
    replicas = model.replicas
    obs, actions, returns = batch["observations"], batch["actions"], batch["returns"]

    def objective():
        advantages = update.normalized(replicas, batch["advantages"])
        return update.Objective(model, replicas, obs, actions, advantages)

    def surrogate_and_gradient():
        return objective().surrogate_and_gradient()[1]

    def plus_cg():
        o = objective()
        _, g = o.surrogate_and_gradient()
        direction, info = ops.conjugate_gradient(o.fisher_vector_product(None, model._damping), g,
                                                 model.cg_iterations)
        return direction

    def plus_line_search():
        o = objective()
        surrogate_old, g = o.surrogate_and_gradient()
        fvp = o.fisher_vector_product(None, model._damping)
        direction, info = ops.conjugate_gradient(fvp, g, model.cg_iterations)
        max_kl = tf.convert_to_tensor(model._max_kl)
        step = update.full_step(fvp, direction, info, max_kl)
        search = update.line_search(o, step, surrogate_old, max_kl, model.backtrack_coefficient,
                                    model.backtrack_iterations)
        return update.policy_metrics(o, surrogate_old, g, info, step, search)["line_search_steps"]

    def one_forward():
        return tf.reduce_sum(model.distribution_params(obs)["logits"])

    def one_fvp():
        o = objective()
        return o.fisher_vector_product(None, model._damping)(ops.flatten(model.policy_variables))

    def critic():
        return critic_module.train(model, replicas, obs, returns, model.value_epochs, model.value_batch_size,
                                   model.seed_generator)["value_loss"]

    def whole():
        return model.train_step(batch)["line_search_steps"]

    n, minibatches = int(returns.shape[0]), -(-int(returns.shape[0]) // model.value_batch_size)
    pieces = {f"policy forward on {n} frames": one_forward, "objective + surrogate gradient": surrogate_and_gradient,
              "objective + one FVP (tapes + 1 product)": one_fvp,
              f"objective + surrogate gradient + CG ({model.cg_iterations} FVPs)": plus_cg,
              "... + full step (1 FVP) + line search": plus_line_search,
              f"critic ({model.value_epochs} epochs x {minibatches} minibatches)": critic, "whole train_step": whole}
    out = {}
    for name, fn in pieces.items():
        compiled = tf.function(fn, autograph=False)
        start = time.perf_counter()
        value = float(tf.reduce_sum(compiled()))
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            value = float(tf.reduce_sum(compiled()))
            times.append(time.perf_counter() - start)
        out[name] = {"median_ms": 1000 * statistics.median(times), "first_s": first, "last_value": value}
        print(f"  profile {name}: {out[name]['median_ms']:,.0f} ms (first {first:.1f} s)", file=sys.stderr, flush=True)
    return {"pieces": out}


# --------------------------------------------------------------------------
# sb3-contrib children
# --------------------------------------------------------------------------
def _minigrid_cnn_class():
    import torch as th
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class MinigridCNN(BaseFeaturesExtractor):
        """keras_trpo's ``minigrid_cnn`` in PyTorch: Conv 16×2, MaxPool 2, Conv 32×2, Conv 64×2 (ReLU), Dense 64 tanh."""

        def __init__(self, observation_space, features_dim=64):
            super().__init__(observation_space, features_dim)
            channels = observation_space.shape[0]  # sb3's VecTransposeImage makes [3, 7, 7]
            self.cnn = th.nn.Sequential(
                th.nn.Conv2d(channels, 16, 2), th.nn.ReLU(), th.nn.MaxPool2d(2),
                th.nn.Conv2d(16, 32, 2), th.nn.ReLU(), th.nn.Conv2d(32, 64, 2), th.nn.ReLU(), th.nn.Flatten(),
            )
            with th.no_grad():
                flat = self.cnn(th.zeros((1, *observation_space.shape))).shape[1]
            self.linear = th.nn.Sequential(th.nn.Linear(flat, features_dim), th.nn.Tanh())

        def forward(self, observations):
            return self.linear(self.cnn(observations))

    return MinigridCNN


def sb3_model(cfg, env, task, seed=0):
    from sb3_contrib import TRPO

    policy_kwargs = dict(share_features_extractor=False)
    if task == "minigrid":
        policy_kwargs.update(features_extractor_class=_minigrid_cnn_class(), normalize_images=False, net_arch=[])
    shrink, line_search_steps = cfg["line_search"]
    return TRPO(
        "CnnPolicy", env, learning_rate=cfg["critic_lr"], n_steps=cfg["samples"] // cfg["num_envs"],
        batch_size=cfg["critic_batch"], gamma=cfg["gamma"], gae_lambda=cfg["gae_lambda"],
        cg_max_steps=cfg["cg_iterations"], cg_damping=cfg["damping"], line_search_shrinking_factor=shrink,
        line_search_max_iter=line_search_steps, n_critic_updates=cfg["critic_epochs"], target_kl=cfg["max_kl"],
        sub_sampling_factor=1, policy_kwargs=policy_kwargs, seed=seed, device="cpu",
    )


def sb3_env(cfg, env_fn, seed=0):
    from stable_baselines3.common.env_util import make_vec_env

    return make_vec_env(env_fn, n_envs=cfg["num_envs"], seed=seed)


def sb3_update(cfg, repeats):
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.utils import configure_logger

    env = sb3_env(cfg, pong_single_env)
    model = sb3_model(cfg, env, "pong")
    model._logger = configure_logger(verbose=0)
    model._setup_learn(total_timesteps=cfg["samples"])
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
    observations = model.rollout_buffer.observations
    assert observations.dtype.name == "uint8" and observations.shape[2:] == (4, 84, 84), observations.shape

    def one():
        start = time.perf_counter()
        model.train()
        seconds = time.perf_counter() - start
        return seconds, float(model.logger.name_to_value.get("train/is_line_search_success", float("nan")))

    first, _ = one()
    runs = [one() for _ in range(repeats)]
    return {"median_ms": 1000 * statistics.median(r[0] for r in runs), "runs_ms": [1000 * r[0] for r in runs],
            "first_call_s": first, "accepted": [r[1] for r in runs], "samples": int(model.rollout_buffer.buffer_size
                                                                                   * model.n_envs)}


def sb3_train(cfg, iterations, env_fn, task):
    from stable_baselines3.common.callbacks import BaseCallback

    env = sb3_env(cfg, env_fn)
    model = sb3_model(cfg, env, task)
    clock = _IterationClock()

    class Clock(BaseCallback):
        def _on_rollout_start(self):
            clock.starts.append(time.perf_counter())

        def _on_rollout_end(self):
            clock.collect.append(time.perf_counter() - clock.starts[-1])

        def _on_step(self):
            return True

    model.learn(total_timesteps=iterations * cfg["samples"], callback=Clock())
    clock.end = time.perf_counter()
    env.close()
    return {**clock.result(cfg["samples"]), "env_steps": int(model.num_timesteps), "iterations": iterations,
            "observation_shape": list(model.observation_space.shape)}


# --------------------------------------------------------------------------
# Child entry point
# --------------------------------------------------------------------------
def child(framework, task, options):
    options = json.loads(options)
    if framework == "sb3":
        import torch

        torch.set_num_threads(int(options.get("torch_threads", 1)))
    jit, repeats, iterations = options.get("jit", False), options["repeats"], options["iterations"]
    if (framework, task) == ("keras", "update"):
        result = keras_update(PONG, repeats, jit)
    elif (framework, task) == ("sb3", "update"):
        result = sb3_update(PONG, repeats)
    elif (framework, task) == ("keras", "train"):
        result = keras_train(PONG, iterations, pong_vector_env, "nature_cnn", jit)
    elif (framework, task) == ("sb3", "train"):
        result = sb3_train(PONG, iterations, pong_single_env, "pong")
    elif (framework, task) == ("keras", "minigrid"):
        result = keras_train(MINIGRID, options["minigrid_iterations"], minigrid_vector_env, "minigrid_cnn", jit)
    elif (framework, task) == ("sb3", "minigrid"):
        result = sb3_train(MINIGRID, options["minigrid_iterations"], minigrid_single_env, "minigrid")
    elif (framework, task) == ("keras", "profile"):
        result = keras_profile(PONG, repeats)
    else:
        raise SystemExit(f"unknown child {framework} {task}")
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


class OtherLoad:
    """CPU time used by processes other than this one's children, between ``start()`` and ``share()``.

    From ``/proc/stat`` (all busy CPU time) minus ``getrusage(RUSAGE_CHILDREN)`` (the finished
    children's): ``share()`` is that time over wall time × cores, 0 on an otherwise idle machine.
    """

    def start(self):
        self._busy, self._children, self._wall = self._busy_s(), self._children_s(), time.perf_counter()
        return self

    def share(self):
        others = (self._busy_s() - self._busy) - (self._children_s() - self._children)
        return max(0.0, others) / ((time.perf_counter() - self._wall) * (os.cpu_count() or 1))

    @staticmethod
    def _busy_s():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _children_s():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime


def wait_until_idle(threshold=0.1, window=10.0, poll=60.0):
    """Waits until other processes use less than ``threshold`` of the CPUs over ``window`` seconds."""
    while True:
        load = OtherLoad().start()
        time.sleep(window)
        share = load.share()
        if share < threshold:
            return share
        print(f"  (machine busy: other processes use {share:.0%} of the CPUs; checking again in {poll:.0f} s)",
              flush=True)
        time.sleep(poll)


def run_isolated(args, label, wait_idle=False, attempts=3):
    """Runs ``python args...`` in a child process and returns its ``RESULT`` JSON, with ``others_cpu_share``.

    ``others_cpu_share``: the CPU share used by other processes meanwhile (0: an otherwise idle
    machine). With ``wait_idle`` it waits for an idle machine first, and runs the child again (up
    to ``attempts`` runs in all) when other processes used more than 10% of the CPUs meanwhile.
    Raises RuntimeError if the child prints no result.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    for attempt in range(1, attempts + 1):
        if wait_idle:
            wait_until_idle()
        load = OtherLoad().start()
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, check=False)
        share = load.share()
        line = next((line for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{label} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        result = {**json.loads(line[len("RESULT "):]), "others_cpu_share": round(share, 3), "attempt": attempt}
        if not wait_idle or share < 0.1 or attempt == attempts:
            return result
        print(f"  ({label}: other processes used {share:.0%} of the CPUs meanwhile; running it again)", flush=True)


def run_child(framework, task, options, wait_idle=False):
    return run_isolated([os.path.abspath(__file__), "_child", framework, task, json.dumps(options)],
                        f"{framework} {task}", wait_idle)


def versions():
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("ale-py", "minigrid"))


# --------------------------------------------------------------------------
# Parent: run the children, print the tables
# --------------------------------------------------------------------------
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return child(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["update", "train", "minigrid", "profile"], action="append")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates after the first (default 3)")
    parser.add_argument("--iterations", type=int, default=4, help="Pong training iterations (default 4)")
    parser.add_argument("--minigrid-iterations", type=int, default=6, help="MiniGrid iterations (default 6)")
    parser.add_argument("--jit", action="store_true",
                        help="also keras_trpo with jit_compile=True (meant for a GPU: on a CPU, XLA's code for the "
                        "Nature CNN update takes minutes per call, see benchmarks/gpu.py)")
    parser.add_argument("--sb3-threads", type=int, default=None, metavar="N",
                        help="side note: sb3-contrib's Pong update also with N torch threads")
    parser.add_argument("--wait-idle", action="store_true",
                        help="before each child, wait (polling every 60 s) until other processes use < 10%% of the CPUs, "
                        "and run a child again (3 runs at most) if they used more meanwhile")
    parser.add_argument("--out", default=OUT, help="directory of the JSON results ('' for none)")
    args = parser.parse_args(argv)
    selected = args.only or ["update", "train", "minigrid"]
    options = {"repeats": args.repeats, "iterations": args.iterations, "minigrid_iterations": args.minigrid_iterations}
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = f"{date} | {machine()}, {versions()}"
    print(header, flush=True)
    results, rows = {}, []

    def run(framework, task, **extra):
        key = f"{framework} {task}" + "".join(f" {k}={v}" for k, v in extra.items())
        results[key] = run_child(framework, task, {**options, **extra}, args.wait_idle)
        print(f"  {key}: {json.dumps(results[key])}", flush=True)
        return results[key]

    def rss(k, s, what):
        rows.append((f"{what}: peak RSS", f"{k['peak_rss_mb']:,.0f} MB", f"{s['peak_rss_mb']:,.0f} MB",
                     k["peak_rss_mb"] / s["peak_rss_mb"], ""))

    if "update" in selected:
        k, s = run("keras", "update"), run("sb3", "update")
        rows.append((f"Pong: one update, 2048 frames (median of {args.repeats})", f"{k['median_ms']:,.0f} ms",
                     f"{s['median_ms']:,.0f} ms", k["median_ms"] / s["median_ms"], "<= 0.5"))
        rows.append(("Pong: first update (keras: tracing included)", f"{k['first_call_s']:.1f} s",
                     f"{s['first_call_s']:.1f} s", None, ""))
        if args.jit:
            j = run("keras", "update", jit=True)
            rows.append(("Pong: one update, keras jit_compile=True", f"{j['median_ms']:,.0f} ms",
                         f"{s['median_ms']:,.0f} ms", j["median_ms"] / s["median_ms"], "<= 0.5"))
            rows.append(("Pong: first update, keras jit_compile=True", f"{j['first_call_s']:.1f} s", "", None, ""))
        if args.sb3_threads:
            t = run("sb3", "update", torch_threads=args.sb3_threads)
            rows.append((f"Pong: one update, sb3-contrib with {args.sb3_threads} torch threads",
                         f"{k['median_ms']:,.0f} ms", f"{t['median_ms']:,.0f} ms", k["median_ms"] / t["median_ms"], ""))
        rss(k, s, "Pong update")
    if "train" in selected:
        k, s = run("keras", "train"), run("sb3", "train")
        n = args.iterations
        rows.append((f"Pong: env steps/s while training (iterations 2-{n} of 2048)", f"{k['steps_per_s']:,.0f}/s",
                     f"{s['steps_per_s']:,.0f}/s", k["steps_per_s"] / s["steps_per_s"], ">= 1"))
        rows.append((f"Pong: env steps/s, all {n} iterations (keras: tracing included)",
                     f"{k['steps_per_s_all']:,.0f}/s", f"{s['steps_per_s_all']:,.0f}/s",
                     k["steps_per_s_all"] / s["steps_per_s_all"], ""))
        rows.append(("Pong: collection alone (iterations 2+)", f"{k['collect_steps_per_s']:,.0f}/s",
                     f"{s['collect_steps_per_s']:,.0f}/s", k["collect_steps_per_s"] / s["collect_steps_per_s"], ""))
        if args.jit:
            j = run("keras", "train", jit=True)
            rows.append(("Pong: env steps/s while training, keras jit_compile=True", f"{j['steps_per_s']:,.0f}/s",
                         f"{s['steps_per_s']:,.0f}/s", j["steps_per_s"] / s["steps_per_s"], ">= 1"))
        rss(k, s, "Pong training")
    if "minigrid" in selected:
        k, s = run("keras", "minigrid"), run("sb3", "minigrid")
        n = args.minigrid_iterations
        rows.append((f"MiniGrid-Empty-8x8: env steps/s while training (iterations 2-{n})",
                     f"{k['steps_per_s']:,.0f}/s", f"{s['steps_per_s']:,.0f}/s", k["steps_per_s"] / s["steps_per_s"],
                     ""))
        rows.append((f"MiniGrid-Empty-8x8: env steps/s, all {n} iterations", f"{k['steps_per_s_all']:,.0f}/s",
                     f"{s['steps_per_s_all']:,.0f}/s", k["steps_per_s_all"] / s["steps_per_s_all"], ""))
        rows.append(("MiniGrid-Empty-8x8: collection alone (iterations 2+)", f"{k['collect_steps_per_s']:,.0f}/s",
                     f"{s['collect_steps_per_s']:,.0f}/s", k["collect_steps_per_s"] / s["collect_steps_per_s"], ""))
        rss(k, s, "MiniGrid training")
    if rows:
        print("\n| benchmark | keras_trpo | sb3-contrib | ratio | target |\n|---|---|---|---|---|")
        for name, ours, theirs, ratio, target in rows:
            print(f"| {name} | {ours} | {theirs} | {'' if ratio is None else f'{ratio:.2f}'} | {target} |")
    if "profile" in selected:
        p = run("keras", "profile")["pieces"]
        print("\n| keras_trpo Pong update, compiled piece | median | first call (tracing) |\n|---|---|---|")
        for name, r in p.items():
            print(f"| {name} | {r['median_ms']:,.0f} ms | {r['first_s']:.1f} s |")
    if results:
        busiest = max(results.items(), key=lambda kv: kv[1]["others_cpu_share"])
        print(f"\nother processes' CPU share during the children: max {busiest[1]['others_cpu_share']:.1%} "
              f"({busiest[0]}); 0% is an otherwise idle machine")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"cnn-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.json")
        with open(path, "w") as f:
            json.dump({"date": date, "machine": header, "argv": argv, "settings": TRPO_SETTINGS, "results": results},
                      f, indent=1)
        print(f"\nresults: {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
