"""Cost of acting during collection, per vector step and per env step (8 sub-envs), env stepping excluded.

    python benchmarks/acting_cost.py                 # 2000 calls per case, best of 5 repeats
    python benchmarks/acting_cost.py --calls 500 --no-atari

``Rollouts`` calls ``PolicySnapshot(model).act(observations, rng)`` once per vector step on all
sub-environments' observations (keras_trpo/acting.py). This times that call in a loop on a fixed
batch of real observations (from ``env.reset``), for:

(a) the default 64×64 tanh MLP on CartPole-v1 through the numpy snapshot (what collection uses);
(b) the same model and weights forced through the compiled TF function (``model.acting_function()``,
    what a custom network uses): the snapshot's private ``_tf`` is set to it;
(c) a MiniGrid CNN (``keras.Sequential`` Conv 16/MaxPool/Conv 32/Conv 64, ``ImgObsWrapper``, uint8
    ``[8, 7, 7, 3]``, as in benchmarks/minigrid.py) through the compiled TF function;
(d) ``nature_cnn`` on Pong (uint8 ``[8, 4, 84, 84]``, as in benchmarks/atari_smoke.py), same path.

The env step of the same vector env (random actions) is timed too, for scale. Each number is the
best of ``--repeats`` loops of ``--calls`` calls, after a warm-up that traces the TF function.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

# Keep this directory off sys.path: benchmarks/minigrid.py would shadow the minigrid package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import gymnasium  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_trpo  # noqa: E402
from keras_trpo.acting import PolicySnapshot  # noqa: E402

NUM_ENVS = 8


def minigrid_cnn():
    return keras.Sequential([
        keras.layers.Conv2D(16, 2, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(32, 2, activation="relu"),
        keras.layers.Conv2D(64, 2, activation="relu"),
        keras.layers.Flatten(),
    ])


def best_seconds_per_call(fn, calls, repeats):
    for _ in range(3):
        fn()  # warm-up: traces the TF function
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def case(name, env, model, calls, repeats, force_tf=False):
    observations, _ = env.reset(seed=0)
    snapshot = PolicySnapshot(model)
    if force_tf:
        snapshot._tf = model.acting_function()
    path = "numpy" if snapshot._tf is None else "compiled TF"
    rng = np.random.default_rng(0)
    act = best_seconds_per_call(lambda: snapshot.act(observations, rng), calls, repeats)
    env.action_space.seed(0)
    step = best_seconds_per_call(lambda: env.step(env.action_space.sample()), max(calls // 10, 50), repeats)
    env.close()
    return {"case": name, "path": path, "act_us": act * 1e6, "step_us": step * 1e6}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-atari", action="store_true", help="skip (d)")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)

    def vec(env_id, **kwargs):
        return gymnasium.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="sync", **kwargs)

    rows = []
    cartpole = vec("CartPole-v1")
    mlp = keras_trpo.TRPO.for_env(cartpole, seed=0)
    rows.append(case("(a) CartPole, default MLP 64×64 tanh", cartpole, mlp, args.calls, args.repeats))
    rows.append(case("(b) CartPole, same MLP forced through TF", vec("CartPole-v1"), mlp, args.calls, args.repeats,
                     force_tf=True))

    from minigrid.wrappers import ImgObsWrapper

    grid = vec("MiniGrid-Empty-8x8-v0", wrappers=[ImgObsWrapper])
    cnn = keras_trpo.TRPO.for_env(grid, policy_network=minigrid_cnn(), value_network=minigrid_cnn(), seed=0)
    rows.append(case("(c) MiniGrid-Empty-8x8, Sequential CNN", grid, cnn, args.calls, args.repeats))

    if not args.no_atari:
        import ale_py
        from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

        gymnasium.register_envs(ale_py)
        pong = vec("ALE/Pong-v5", frameskip=1,
                   wrappers=[lambda e: AtariPreprocessing(e, frame_skip=4), lambda e: FrameStackObservation(e, 4)])
        nature = keras_trpo.TRPO.for_env(pong, policy_network="nature_cnn", value_network="nature_cnn", seed=0)
        rows.append(case("(d) Pong, nature_cnn", pong, nature, max(args.calls // 10, 100), args.repeats))

    print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; python {platform.python_version()}, "
          f"tensorflow {tf.__version__}, keras {keras.__version__}, numpy {np.__version__}; {NUM_ENVS} sub-envs")
    print()
    print("| case | acting path | act, per vector step | act, per env step | env.step, per vector step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['path']} | {r['act_us']:,.0f} µs | {r['act_us'] / NUM_ENVS:,.1f} µs | "
              f"{r['step_us']:,.0f} µs |")


if __name__ == "__main__":
    main()
