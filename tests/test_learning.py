"""End-to-end learning through model.fit on real gymnasium environments."""

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cartpole_learns_to_balance_within_100k_steps(capsys):
    # The README's first command, with its defaults: 97 iterations x 1024 steps, seed 0.
    mean_return = load_example("cartpole").main(["--seed", "0"])
    output = capsys.readouterr().out
    assert "iteration" in output and "Deterministic evaluation over 10 episodes" in output
    assert mean_return >= 475


@pytest.mark.slow
def test_pendulum_learns_to_swing_up_within_150k_steps():
    # examples/pendulum.py defaults: 146 iterations x 1024 steps on 2 envs, seed 0.
    assert load_example("pendulum").main(["--seed", "0"]) >= -250
