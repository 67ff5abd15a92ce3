"""sb3-contrib's RecurrentPPO at rl-baselines3-zoo's ``ppo_lstm`` settings on the keras_trpo NoVel envs (issue 29).

The baseline recurrent TRPO is compared with: one run per (env, seed), on ``keras_trpo.wrappers``' envs
(velocities dropped; rl-zoo zeroes them instead, see that module). Every ``--eval-every`` env steps (rounded
up to whole rollouts) the policy plays ``--eval-episodes`` deterministic episodes, carrying its LSTM state and
episode starts as ``RecurrentPPO.predict`` needs, on one env normalized with the training env's
``VecNormalize`` statistics (frozen, rewards unnormalized: rl-zoo's evaluation). Writes
``docs/benchmarks/recurrent/<env>/recurrent_ppo-seed<S>.csv`` (one row per evaluation) and a ``.json``
summary (final deterministic mean return, env steps, training wall seconds without evaluation, machine).

    python benchmarks/recurrent_baselines.py --env CartPoleNoVel-v1 --seed 0

One torch thread (``torch.set_num_threads(1)``), like the TRPO runs it is compared with.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks" / "recurrent"

# rl-baselines3-zoo, hyperparams/ppo_lstm.yml at commit 22e3ff2450fd92033f7f032915e1f64894a09584
# (github.com/DLR-RM/rl-baselines3-zoo), copied exactly; "lin_x" is rl-zoo's linear schedule
# (x * progress_remaining); policy_kwargs' activation_fn=nn.ReLU is written "relu" here.
PPO_LSTM = {
    "PendulumNoVel-v1": dict(
        normalize=True, n_envs=4, n_timesteps=1e5, policy="MlpLstmPolicy", n_steps=1024, gae_lambda=0.95,
        gamma=0.9, n_epochs=10, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2, use_sde=True,
        sde_sample_freq=4,
        policy_kwargs=dict(ortho_init=False, activation_fn="relu", lstm_hidden_size=64, enable_critic_lstm=True,
                           net_arch=dict(pi=[64], vf=[64]))),
    "CartPoleNoVel-v1": dict(
        normalize=True, n_envs=8, n_timesteps=1e5, policy="MlpLstmPolicy", n_steps=32, batch_size=256,
        gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate="lin_0.001", clip_range="lin_0.2",
        policy_kwargs=dict(ortho_init=False, activation_fn="relu", lstm_hidden_size=64, enable_critic_lstm=True,
                           net_arch=dict(pi=[64], vf=[64]))),
    "MountainCarContinuousNoVel-v0": dict(
        normalize=True, n_envs=8, n_timesteps=3e5, policy="MlpLstmPolicy", batch_size=256, n_steps=1024,
        gamma=0.9999, learning_rate=7.77e-05, ent_coef=0.00429, clip_range=0.1, n_epochs=10, gae_lambda=0.9,
        max_grad_norm=5, vf_coef=0.19, use_sde=True, sde_sample_freq=8,
        policy_kwargs=dict(log_std_init=0.0, ortho_init=False, lstm_hidden_size=32, enable_critic_lstm=True,
                           net_arch=dict(pi=[64], vf=[64]))),
}


def machine() -> str:
    """The CPU model from ``lscpu`` (the platform's processor string if lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def schedule(value):
    """rl-zoo's ``lin_x``: ``x * progress_remaining``; a number stays a number."""
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


def build(env_name: str, seed: int):
    """The training VecEnv (VecNormalize'd as rl-zoo does) and the RecurrentPPO model."""
    import keras_trpo.wrappers  # noqa: F401  (registers the keras_trpo/*NoVel envs)
    import torch.nn as nn
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    hp = dict(PPO_LSTM[env_name])
    policy_kwargs = dict(hp.pop("policy_kwargs"))
    if policy_kwargs.get("activation_fn") == "relu":
        policy_kwargs["activation_fn"] = nn.ReLU
    env = make_vec_env(f"keras_trpo/{env_name}", n_envs=hp.pop("n_envs"), seed=seed)
    if hp.pop("normalize"):
        env = VecNormalize(env, gamma=hp["gamma"])  # rl-zoo passes the algorithm's gamma to VecNormalize
    hp.pop("n_timesteps")
    policy = hp.pop("policy")
    for key in ("learning_rate", "clip_range"):
        hp[key] = schedule(hp[key])
    model = RecurrentPPO(policy, env, seed=seed, policy_kwargs=policy_kwargs, verbose=0, **hp)
    return env, model


def evaluate(model, train_env, env_name: str, episodes: int, seed: int) -> list[float]:
    """Deterministic returns of ``episodes`` episodes, LSTM state and episode starts carried by hand."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env(f"keras_trpo/{env_name}", n_envs=1, seed=seed)
    if isinstance(train_env, VecNormalize):
        env = VecNormalize(env, training=False, norm_reward=False, gamma=train_env.gamma)
        env.obs_rms = train_env.obs_rms.copy()
    returns = []
    obs = env.reset()
    for _ in range(episodes):
        state, start, total, done = None, np.ones((1,), bool), 0.0, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, reward, dones, _ = env.step(action)  # autoreset: obs is the next episode's first
            total += float(reward[0])
            done = bool(dones[0])
            start = dones
        returns.append(total)
    env.close()
    return returns


class Curve:
    """An sb3 callback evaluating every ``every`` env steps; the clock counts training only."""

    def __new__(cls, *args, **kwargs):
        from stable_baselines3.common.callbacks import BaseCallback

        class _Curve(BaseCallback):
            def __init__(self, env_name, train_env, every, episodes, seed):
                super().__init__()
                self.env_name, self.train_env, self.every = env_name, train_env, every
                self.episodes, self.seed, self.rows = episodes, seed, []
                self.next_eval, self.eval_seconds, self.start = every, 0.0, time.perf_counter()

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                if self.num_timesteps >= self.next_eval:
                    self.record()
                    self.next_eval += self.every

            def record(self) -> None:
                began = time.perf_counter()
                returns = evaluate(self.model, self.train_env, self.env_name, self.episodes,
                                   seed=10_000 + self.seed)
                wall = began - self.start - self.eval_seconds
                self.rows.append(dict(env_steps=self.num_timesteps, mean_return=float(np.mean(returns)),
                                      std_return=float(np.std(returns)), wall_seconds=round(wall, 2)))
                self.eval_seconds += time.perf_counter() - began
                print(f"{self.env_name} seed {self.seed}: {self.rows[-1]}", flush=True)

        return _Curve(*args, **kwargs)


def run(env_name: str, seed: int, steps: int | None, every: int, episodes: int) -> dict:
    """One training run; writes its CSV and JSON and returns the summary."""
    import sb3_contrib
    import torch

    torch.set_num_threads(1)
    steps = int(PPO_LSTM[env_name]["n_timesteps"]) if steps is None else steps
    env, model = build(env_name, seed)
    curve = Curve(env_name, env, every, episodes, seed)
    model.learn(total_timesteps=steps, callback=curve)
    if not curve.rows or curve.rows[-1]["env_steps"] != model.num_timesteps:
        curve.record()
    final = curve.rows[-1]
    summary = dict(algorithm="RecurrentPPO", env=env_name, seed=seed, env_steps=final["env_steps"],
                   final_mean_return=final["mean_return"], final_std_return=final["std_return"],
                   wall_seconds=final["wall_seconds"], eval_episodes=episodes, deterministic=True,
                   hyperparameters=PPO_LSTM[env_name],
                   source="rl-baselines3-zoo hyperparams/ppo_lstm.yml @ 22e3ff2450fd92033f7f032915e1f64894a09584",
                   machine=machine(), torch_threads=torch.get_num_threads(), sb3_contrib=sb3_contrib.__version__,
                   torch=torch.__version__)
    write_run(OUT / env_name, f"recurrent_ppo-seed{seed}", curve.rows, summary)
    env.close()
    return summary


def write_run(folder: Path, name: str, rows: list[dict], summary: dict) -> None:
    """``folder/name.csv`` (one row per evaluation) and ``folder/name.json`` (the summary)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, choices=sorted(PPO_LSTM))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="env steps (default: rl-zoo's n_timesteps)")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args(argv)
    summary = run(args.env, args.seed, args.steps, args.eval_every, args.eval_episodes)
    print(json.dumps({k: summary[k] for k in ("env", "seed", "env_steps", "final_mean_return", "wall_seconds")}))


if __name__ == "__main__":
    main()
