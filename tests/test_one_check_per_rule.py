"""Each argument and batch rule is checked in one place (keras_trpo.validation); presets, the command
line and ``ObservationSpec`` wrap its message instead of checking again (issue 25, item 4).

Every table row runs the same value through each entry point and expects the same verdict and the
same words, so that a copy of a rule drifting from the original (a preset accepting ``True`` as a
step count, the CLI accepting ``0``, a batch whose arrays disagree on N) fails here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo
from keras_trpo import cli, presets, validation


def cli_value(option: str, command: list[str], text: str, capsys):
    """``text`` parsed as ``option`` of ``command``: the value, or the one-line error argparse printed."""
    try:
        args = cli.build_parser().parse_args([*command, option, text])
    except SystemExit:
        return capsys.readouterr().err
    return getattr(args, option.lstrip("-").replace("-", "_"))


#: (value, minimum) -> accepted? The integer rule: an int or numpy integer >= minimum; bool, floats, strings are not.
INTEGER_CASES = [
    (5, 1, True), (1, 1, True), (0, 1, False), (-3, 1, False), (0, 0, True), (-1, 0, False),
    (np.int64(7), 1, True), (True, 1, False), (2.5, 1, False), ("3", 1, False), (None, 1, False),
]


@pytest.mark.parametrize("value,minimum,accepted", INTEGER_CASES, ids=[repr(c[:2]) for c in INTEGER_CASES])
def test_the_integer_rule_is_one_rule_with_one_message(value, minimum, accepted):
    """Bug caught: check_int and check_steps disagreeing (e.g. check_steps accepting np.int64 but check_int not)."""
    problem = validation.integer_problem(value, minimum)
    assert (problem is None) == accepted
    if accepted:
        assert validation.check_int("n", value, minimum) == int(value)
        return
    assert problem == f"must be an integer >= {minimum}; got {value!r}"
    with pytest.raises(ValueError, match=f"^n {re.escape(problem)}\\.$"):
        validation.check_int("n", value, minimum)
    if minimum == 1:  # the steps of Rollouts: a TypeError for what is no integer at all, the same words
        error = ValueError if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else TypeError
        with pytest.raises(error, match=f"^steps {re.escape(problem)}\\.$"):
            validation.check_steps(value, 1)


@pytest.mark.parametrize("key", ["num_envs", "total_steps", "eval_episodes", "rollouts.steps"])
@pytest.mark.parametrize("value", [0, -4, True, 2.5, "8"])
def test_presets_wrap_the_integer_rule(key, value):
    """Bug caught: preset.py's own integer check (``_as_int``) drifting, e.g. accepting True (an int) as 1."""
    preset = presets.load_preset("CartPole-v1")
    with pytest.raises(presets.PresetError) as raised:
        preset.override({key: value})
    assert str(raised.value) == f"CartPole-v1: {key} {validation.integer_problem(value)}."


def test_presets_still_take_an_integral_float_from_json():
    """Bug caught: 1e6 in a preset file (a float in JSON) refused by the shared integer rule."""
    assert presets.load_preset("CartPole-v1").override({"total_steps": 1e6}).total_steps == 1_000_000


@pytest.mark.parametrize(
    "option,command,minimum",
    [("--steps", ["train", "CartPole-v1"], 1), ("--num-envs", ["train", "CartPole-v1"], 1),
     ("--seed", ["train", "CartPole-v1"], 0), ("--eval-every", ["train", "CartPole-v1"], 0),
     ("--episodes", ["evaluate", "RUN", "CartPole-v1"], 1), ("--smooth", ["plot", "RUN", "-o", "x.png"], 1)],
)
@pytest.mark.parametrize("text", ["3", "1", "0", "-2", "many", "2.5"])
def test_the_command_line_wraps_the_integer_rule(option, command, minimum, text, capsys):
    """Bug caught: cli/parser.py checking integers its own way, e.g. ``--seed -2`` or ``--steps 0`` accepted."""
    try:
        value = int(text)
    except ValueError:
        value = text
    problem = validation.integer_problem(value, minimum)
    parsed = cli_value(option, command, text, capsys)
    if problem is None:
        assert parsed == value
    else:
        assert parsed == f"keras-trpo: error: argument {option}: {problem} (see 'keras-trpo {command[0]} --help')\n"


@pytest.mark.parametrize(
    "value,accepted", [(0.0, True), (1, True), (0.97, True), (np.float32(0.5), True), (1.5, False), (-0.1, False),
                       (float("nan"), False), (True, False), ("0.9", False), (None, False)]
)
@pytest.mark.parametrize("key", ["gamma", "gae_lambda"])
def test_presets_wrap_the_unit_interval_rule(key, value, accepted):
    """Bug caught: preset.py's own copy of the [0, 1] check, accepting what check_unit_interval refuses."""
    preset = presets.load_preset("CartPole-v1")
    if accepted:
        validation.check_unit_interval(key, value)
        assert preset.override({f"rollouts.{key}": value}).rollouts[key] == value
        return
    with pytest.raises((TypeError, ValueError)) as expected:
        validation.check_unit_interval(f"CartPole-v1: rollouts.{key}", value)
    with pytest.raises(presets.PresetError) as raised:
        preset.override({f"rollouts.{key}": value})
    assert str(raised.value) == str(expected.value)


@pytest.mark.parametrize("value", ["yes", 1, 0, None])
def test_presets_wrap_the_bool_rule(value):
    """Bug caught: normalize_rewards=1 accepted by a preset (1 == True) while Rollouts refuses it."""
    with pytest.raises(TypeError) as expected:
        validation.check_bool("CartPole-v1: rollouts.normalize_rewards", value)
    with pytest.raises(presets.PresetError) as raised:
        presets.load_preset("CartPole-v1").override({"rollouts.normalize_rewards": value})
    assert str(raised.value) == str(expected.value)


# --------------------------------------------------------------------------
# Batches: validate_batch and ObservationSpec.check share the shape and row-count rules
# --------------------------------------------------------------------------
BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)
DICT = spaces.Dict({"position": BOX, "flag": spaces.Discrete(2)})


def batch(n=4, observations=None, **entries):
    data = {
        "observations": np.zeros((n, 3), np.float32) if observations is None else observations,
        "actions": np.zeros(n, np.int64),
        "advantages": np.zeros(n, np.float32),
        "returns": np.zeros(n, np.float32),
    }
    return {**data, **entries}


def dict_observations(position_rows=4, flag_rows=4):
    return {"position": np.zeros((position_rows, 3), np.float32), "flag": np.zeros(flag_rows, np.int64)}


#: name -> (observation space, batch, regex of the one-line message)
BATCH_CASES = {
    "actions with a second axis": (BOX, batch(actions=np.zeros((4, 2), np.int64)),
                                   r"^batch\['actions'\] has shape \[4, 2\]; expected actions \[N\] \(integer\)\.$"),
    "advantages with other rows": (BOX, batch(advantages=np.zeros(5, np.float32)),
                                   (r"^batch\['advantages'\] has 5 rows but batch\['observations'\] has 4; expected "
                                    r"advantages \[N\] \(floating\) with the same N for every key\.$")),
    "returns as integers": (BOX, batch(returns=np.zeros(4, np.int64)),
                            r"^batch\['returns'\] has dtype int64; expected returns \[N\] \(floating\)\.$"),
    "observations of another width": (BOX, batch(observations=np.zeros((4, 5), np.float32)),
                                      r"^batch\['observations'\] has shape \[4, 5\]; expected \[N, 3\] float32"),
    "Dict entries with other rows": (DICT, batch(observations=dict_observations(flag_rows=3)),
                                     (r"^batch\['observations'\]\['position'\] has 4 rows but other entries have 3; "
                                      r"expected \{'flag': \[N\] int64, 'position': \[N, 3\] float32\}")),
    "actions with other rows than Dict observations": (
        DICT, batch(n=3, observations=dict_observations(3, 3), actions=np.zeros(2, np.int64)),
        r"^batch\['actions'\] has 2 rows but batch\['observations'\] has 3;"),
    "an empty batch": (BOX, batch(n=0), r"^batch is empty \(N = 0\); expected observations \[N, 3\] float32, "),
    "a missing key": (BOX, {"observations": np.zeros((4, 3), np.float32)},
                      r"^batch is missing key 'actions'; expected observations \[N, 3\] float32, actions \[N\]"),
    "a policy_version matrix": (BOX, batch(policy_version=np.zeros((2, 2), np.int64)),
                                r"^batch\['policy_version'\] must be a scalar or a vector repeating one value"),
}


@pytest.mark.parametrize("case", sorted(BATCH_CASES))
def test_each_bad_batch_gets_one_line(case):
    """Bug caught: a rule dropped from validate_batch or ObservationSpec.check when they were merged, e.g. the
    row-count check of the non-observation keys (check_rows) no longer called."""
    space, data, message = BATCH_CASES[case]
    model = keras_trpo.TRPO(space, spaces.Discrete(2), hidden_units=(4,), value_hidden_units=(4,))
    with pytest.raises(ValueError) as raised:
        validation.validate_batch(data, model.batch_spec(), model.head.cast_actions)
    assert "\n" not in str(raised.value)
    assert re.search(message, str(raised.value)), str(raised.value)


@pytest.mark.parametrize("space,observations,rows", [(BOX, np.zeros((4, 3), np.float32), 4),
                                                     (DICT, dict_observations(2, 2), 2)])
def test_a_good_batch_passes_and_observation_check_returns_its_rows(space, observations, rows):
    """Bug caught: ObservationSpec.check no longer returning N, so an empty batch passes validate_batch."""
    model = keras_trpo.TRPO(space, spaces.Discrete(2), hidden_units=(4,), value_hidden_units=(4,))
    assert model.observation_spec.check(observations) == rows
    checked = validation.validate_batch(batch(rows, observations, policy_version=np.int64(3)), model.batch_spec(),
                                        model.head.cast_actions)
    assert int(checked["policy_version"]) == 3 and checked["advantages"].shape == (rows,)
