"""The command line of ``examples/cartpole.py``, ``pendulum.py`` and ``mujoco.py``.

They train an environment with its preset through :func:`keras_trpo.training.train`, the flow
of ``keras-trpo train``, without a run directory: ``--steps``, ``--seed``, ``--num-envs``,
``--batch``, ``--max-kl``, ``--eval-episodes`` and ``--export DIR``.
"""

from __future__ import annotations

import argparse

import numpy as np

from keras_trpo.cli.common import describe_budget
from keras_trpo.presets import load_preset
from keras_trpo.training import train


def run_example(env_id, argv=None, description=None) -> float:
    """Trains ``env_id`` with its preset; returns the mean return of the final deterministic evaluation.

    Prints a progress line every tenth of the run and the evaluation; with ``--export DIR`` writes a
    TF Serving SavedModel to ``DIR/<next version>``.
    """
    preset = load_preset(env_id)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=preset.total_steps, help=f"total env steps ({preset.total_steps})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=preset.num_envs)
    parser.add_argument("--batch", type=int, default=preset.rollouts["steps"], help="env steps per TRPO iteration")
    parser.add_argument("--max-kl", type=float, default=preset.model["max_kl"])
    parser.add_argument("--eval-episodes", type=int, default=preset.eval_episodes)
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="after training, write a TF Serving SavedModel to DIR/<next version> (e.g. saved_models/cartpole)",
    )
    args = parser.parse_args(argv)
    preset = preset.override(
        {"num_envs": args.num_envs, "rollouts.steps": args.batch, "model.max_kl": args.max_kl,
         "eval_episodes": args.eval_episodes}
    )

    def announce(model):
        budget = describe_budget(preset.iterations(args.steps), args.batch, args.num_envs)
        print(f"Training TRPO on {env_id}: {budget}, seed {args.seed}")

    result = train(preset, env_id, seed=args.seed, total_steps=args.steps, before_fit=announce)
    returns = result.returns
    print(result.message(f"mean return {np.mean(returns):.1f} (min {np.min(returns):.0f}, max {np.max(returns):.0f})"))
    if args.export:
        print(f"Exported the policy for TF Serving to {result.model.export(args.export)}")
    return result.mean
