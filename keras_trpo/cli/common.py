"""What several ``keras-trpo`` commands share: the program name, the run-directory file names, the error
that prints as one line, the environment check, the training budget in one unit (iterations x env
steps per iteration = env steps) and the summary of evaluation returns.

Imports neither TensorFlow nor gymnasium at module level (``keras-trpo --help`` needs neither).
"""

from __future__ import annotations

PROG = "keras-trpo"

# The files of a run directory (keras-trpo train writes them; evaluate, export and info read them).
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TENSORBOARD_DIR = "tensorboard"
BEST_DIR = "best_saved_model"


class CLIError(Exception):
    """A user error: printed as one line, exit status 1."""


def check_env_id(env_id: str):
    """Raises CLIError unless gymnasium knows ``env_id`` (registry lookup only, nothing is built)."""
    import gymnasium

    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as error:
        raise CLIError(f"unknown environment {env_id!r}: {error}") from None


def plural(count: int, noun: str) -> str:
    """``1 env``, ``8 envs``, ``1,024 env steps``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def describe_budget(iterations: int, steps_per_iteration: int, num_envs: int) -> str:
    """``97 iterations x 1,024 env steps = 99,328 env steps, 8 envs``: the unit of ``train``,
    ``presets`` and ``info`` (an iteration is ``steps_per_iteration`` env steps over all envs)."""
    return (
        f"{plural(iterations, 'iteration')} x {plural(steps_per_iteration, 'env step')} = "
        f"{plural(iterations * steps_per_iteration, 'env step')}, {plural(num_envs, 'env')}"
    )


def returns_summary(returns) -> str:
    """``mean return 500.0 ± 0.0 (min 500.0, max 500.0)``."""
    import numpy as np

    return (
        f"mean return {np.mean(returns):.1f} ± {np.std(returns):.1f} "
        f"(min {np.min(returns):.1f}, max {np.max(returns):.1f})"
    )
