"""The contract of ``keras_trpo.buffer.RolloutBuffer`` (issue 25 item 1).

Where a row add and a cells add land, the per-key storage of a ``Dict`` observation in the
space's dtypes, the time-major batch with its documented shapes, GAE against the recursion of
``compute_gae``'s docstring written out by hand, and a field declared once reaching the batch.
Each test names the one-line bug it catches.
"""

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from keras_trpo.buffer import Field, RolloutBuffer, stored_fields
from keras_trpo.observations import ObservationSpec
from keras_trpo.policies import make_head

BOX = spaces.Box(-10.0, 10.0, (2,), np.float32)
DICT = spaces.Dict({
    "image": spaces.Box(0, 255, (3, 3, 2), np.uint8),
    "position": spaces.Box(-1.0, 1.0, (2,), np.float64),
    "direction": spaces.Discrete(4),
    "bits": spaces.MultiBinary(3),
})  # fmt: skip


def make_buffer(observation_space=BOX, action_space=spaces.Discrete(3), horizon=4, num_envs=3, fields=None):
    spec, head = ObservationSpec(observation_space), make_head(action_space)
    return RolloutBuffer(spec, head, horizon, num_envs, fields=fields)


def stats():
    return {"policy_version": 7, "finished_returns": [1.0, 3.0], "finished_lengths": [2, 4], "env_steps": 12}


def test_a_row_add_fills_one_row_and_a_cells_add_only_its_cells():
    """Bug caught: ``add`` reading the cells as ``(columns, rows)`` (``index[::-1]``): with 4 rows and 3
    columns the cells (3, 0), (1, 2) land at (0, 3) (out of range) or at (2, 1)."""
    buffer = make_buffer(horizon=4, num_envs=3)
    buffer.add(2, values=np.array([1.5, 2.5, 3.5]), actions=np.array([0, 1, 2]))
    rows, columns = np.array([3, 1]), np.array([0, 2])
    buffer.add((rows, columns), values=np.array([-1.0, -2.0]), rewards=np.array([4.0, 5.0]))

    expected_values, expected_rewards = np.zeros((4, 3)), np.zeros((4, 3))
    expected_values[2, :] = [1.5, 2.5, 3.5]
    for row, column, value, reward in zip(rows, columns, [-1.0, -2.0], [4.0, 5.0]):
        expected_values[row, column] = value
        expected_rewards[row, column] = reward
    np.testing.assert_array_equal(buffer["values"], expected_values)
    np.testing.assert_array_equal(buffer["rewards"], expected_rewards)
    expected_actions = np.zeros((4, 3), np.int64)
    expected_actions[2] = [0, 1, 2]
    np.testing.assert_array_equal(buffer["actions"], expected_actions)


@pytest.mark.parametrize("kept", [[1, 1, 1], [2, 1, 2]], ids=["one-row", "ragged-rows"])
def test_a_step_add_stores_each_sub_env_of_the_cells_in_its_own_row(kept):
    """``add_step`` takes a whole step's ``[num_envs]`` values and stores only the cells' sub-envs.

    Bugs caught: the whole-row path taken although the rows differ (``rows[0]`` for every sub-env), or
    a partial step stored whole (sub-env 1, which only reset, overwriting its next row).
    """
    buffer = make_buffer(horizon=4, num_envs=3)
    buffer.advance(buffer.next_cells(np.array(kept) >= 1))
    buffer.advance(buffer.next_cells(np.array(kept) >= 2))
    step = np.array([7.0, 8.0, 9.0])
    for mask in (None, [True, True, True], [True, False, True]):
        cells = buffer.next_cells(None if mask is None else np.array(mask))
        buffer.add_step(cells, values=step)
        expected = np.zeros((4, 3))
        expected[cells.rows, cells.columns] = step[cells.columns]
        np.testing.assert_array_equal(buffer["values"], expected)
        buffer["values"][:] = 0.0


def test_next_cells_gives_each_masked_sub_env_its_next_free_row_until_its_column_is_full():
    """Bug caught: ``next_cells`` without ``& (self.kept < self.horizon)``: a full column gets row ``horizon``
    (an IndexError at ``add``), and ``Rollouts`` would store past the end instead of leaving the step out."""
    buffer = make_buffer(horizon=2, num_envs=3)
    written = np.zeros(3, int)  # rows each sub-env has filled, counted here independently
    for mask in ([True, True, False], [True, False, True], [True, True, True], [False, True, True]):
        cells = buffer.next_cells(np.array(mask))
        expected_columns = [i for i in range(3) if mask[i] and written[i] < 2]
        assert cells.columns.tolist() == expected_columns
        assert cells.rows.tolist() == [written[i] for i in expected_columns]
        buffer.advance(cells)
        written[expected_columns] += 1
        assert buffer.full == bool((written == 2).all())
    assert buffer.full


def test_dict_observations_are_stored_per_key_in_the_space_dtypes():
    """Bug caught: observations stored as float32 whatever the space (``Field(leaf.shape, np.dtype(np.float32),
    ...)`` in ``stored_fields``): the uint8 image takes four times the memory and the batch changes dtype."""
    buffer = make_buffer(DICT, horizon=2, num_envs=2)
    storage = buffer["observations"]
    assert sorted(storage) == sorted(DICT.spaces)
    # The space's own dtypes (float Box entries are batched as float32, Discrete as int64, MultiBinary as int8:
    # the table of keras_trpo.observations).
    assert storage["image"].dtype == DICT["image"].dtype == np.uint8
    assert storage["position"].dtype == np.float32
    assert storage["direction"].dtype == np.int64
    assert storage["bits"].dtype == DICT["bits"].dtype == np.int8
    for key, space in DICT.spaces.items():
        assert storage[key].shape == (2, 2, *space.shape)

    space = gymnasium.vector.utils.batch_space(DICT, 2)
    space.seed(0)
    observation = space.sample()
    observation["image"][0, 0, 0, 0] = 255  # would not survive an int8 buffer
    buffer.add(1, observations=observation)
    for key in DICT.spaces:
        np.testing.assert_array_equal(storage[key][1], np.asarray(observation[key], storage[key].dtype))
        assert not storage[key][0].any()  # row 0 untouched


def test_the_batch_is_time_major_with_the_documented_shapes():
    """Bug caught: flattening sub-env-major (``array.swapaxes(0, 1).reshape(n, *f.shape)`` in ``batch``): row
    ``t · num_envs + i`` would hold sub-env ``t``'s row ``i`` instead of sub-env ``i``'s row ``t``."""
    horizon, num_envs = 3, 2
    buffer = make_buffer(DICT, spaces.Box(-1.0, 1.0, (2,)), horizon=horizon, num_envs=num_envs)
    for t in range(horizon):
        for i in range(num_envs):  # one cell at a time: sub-env i's row t holds (t, i) in every entry
            cells = (np.array([t]), np.array([i]))
            code = 10 * t + i
            buffer.add(cells, observations={
                "image": np.full((1, 3, 3, 2), code), "position": np.full((1, 2), code / 100),
                "direction": np.array([code % 4]), "bits": np.array([[t % 2, i % 2, 1]]),
            }, actions=np.array([[t, i]]))  # fmt: skip
    batch = buffer.batch(0.5, 0.5, **stats())
    n = horizon * num_envs
    assert batch["actions"].shape == (n, 2) and batch["actions"].dtype == np.float32
    for key, space in DICT.spaces.items():
        assert batch["observations"][key].shape == (n, *space.shape)
    for t in range(horizon):
        for i in range(num_envs):
            row = t * num_envs + i
            code = 10 * t + i
            assert (batch["observations"]["image"][row] == code).all()
            assert batch["observations"]["position"][row].tolist() == [np.float32(code / 100)] * 2
            assert batch["observations"]["direction"][row] == code % 4
            assert batch["observations"]["bits"][row].tolist() == [t % 2, i % 2, 1]
            assert batch["actions"][row].tolist() == [t, i]
    for key in ("advantages", "returns", "policy_version", "episode_return", "episode_length", "episodes",
                "env_steps"):
        assert batch[key].shape == (n,), key
    assert (batch["policy_version"] == 7).all() and (batch["episodes"] == 2).all()
    assert (batch["episode_return"] == np.mean([1.0, 3.0])).all() and (batch["episode_length"] == 3).all()
    assert (batch["env_steps"] == 12).all()


def gae_by_hand(rewards, values, terminated, truncated, final_values, gamma, lam):
    """The recursion of ``compute_gae``'s docstring, one column and one step at a time, in Python floats."""
    horizon, num_envs = len(rewards), len(rewards[0])
    advantages = [[0.0] * num_envs for _ in range(horizon)]
    for i in range(num_envs):
        running = 0.0
        for t in reversed(range(horizon)):
            bootstrap = final_values[t][i] if truncated[t][i] or t == horizon - 1 else values[t + 1][i]
            delta = rewards[t][i] + (0.0 if terminated[t][i] else gamma * bootstrap) - values[t][i]
            running = delta + (0.0 if terminated[t][i] or truncated[t][i] else gamma * lam * running)
            advantages[t][i] = running
    returns = [[a + v for a, v in zip(arow, vrow)] for arow, vrow in zip(advantages, values)]
    return np.array(advantages), np.array(returns)


def test_advantages_and_returns_follow_the_gae_recursion_per_column():
    """Bug caught: ``terminated`` and ``truncated`` swapped in ``advantages_and_returns``'s call to ``compute_gae``
    (a truncated row would lose its bootstrap, a terminated one would get one).

    Exact comparison: rewards are small integers, values and final values multiples of 1/4, γ = λ = 1/2,
    over 5 rows, so every intermediate is a dyadic rational of well under 24 significant bits: exact in
    float64 and in the float32 the batch holds, in any order of operations.
    """
    rng = np.random.default_rng(0)
    horizon, num_envs = 5, 4
    buffer = make_buffer(horizon=horizon, num_envs=num_envs)
    arrays = {
        "rewards": rng.integers(-3, 4, (horizon, num_envs)).astype(float),
        "values": rng.integers(-8, 9, (horizon, num_envs)) / 4,
        "final_values": rng.integers(-8, 9, (horizon, num_envs)) / 4,
        "terminated": rng.random((horizon, num_envs)) < 0.25,
        "truncated": rng.random((horizon, num_envs)) < 0.25,
    }
    arrays["truncated"][-1, 0], arrays["terminated"][-1, 0] = True, False  # a truncated last row
    arrays["terminated"][2, 1], arrays["truncated"][2, 1] = True, False  # a terminated row inside
    arrays["truncated"][1, 2], arrays["terminated"][1, 2] = True, False  # a truncated row inside
    for t in range(horizon):
        buffer.add(t, **{name: array[t] for name, array in arrays.items()})

    expected_advantages, expected_returns = gae_by_hand(*(arrays[k].tolist() for k in (
        "rewards", "values", "terminated", "truncated", "final_values")), gamma=0.5, lam=0.5)
    advantages, returns = buffer.advantages_and_returns(0.5, 0.5)
    np.testing.assert_array_equal(advantages, expected_advantages.astype(np.float32))
    np.testing.assert_array_equal(returns, expected_returns.astype(np.float32))
    batch = buffer.batch(0.5, 0.5, **stats())
    np.testing.assert_array_equal(batch["advantages"], expected_advantages.reshape(-1).astype(np.float32))
    np.testing.assert_array_equal(batch["returns"], expected_returns.reshape(-1).astype(np.float32))


def test_a_field_declared_once_is_stored_and_served_in_the_batch():
    """Bug caught: ``batch`` serving a fixed list of keys (``if name in ("observations", "actions")``) instead
    of the fields declared ``in_batch``: a new field (here the next issue's action masks) would be stored but
    never reach ``train_step``."""
    spec, head = ObservationSpec(BOX), make_head(spaces.Discrete(3))
    fields = stored_fields(spec, head) | {"action_masks": Field((3,), np.dtype(bool), in_batch=True)}
    horizon, num_envs = 2, 3
    buffer = RolloutBuffer(spec, head, horizon, num_envs, fields=fields)
    assert buffer["action_masks"].shape == (horizon, num_envs, 3) and buffer["action_masks"].dtype == bool
    masks = np.random.default_rng(1).random((horizon, num_envs, 3)) < 0.5
    for t in range(horizon):
        buffer.add(t, action_masks=masks[t])
    batch = buffer.batch(0.9, 0.9, **stats())
    served = {name for name, field in fields.items() if isinstance(field, dict) or field.in_batch}
    assert served <= set(batch) and not {"values", "rewards", "final_values"} & set(batch)
    for t in range(horizon):
        for i in range(num_envs):
            assert batch["action_masks"][t * num_envs + i].tolist() == masks[t, i].tolist()


def test_an_undeclared_field_is_refused_with_the_declared_ones_named():
    """Bug caught: the name check in ``add`` dropped: a misspelt field (``reward=``) gives a bare KeyError
    'reward' from the storage lookup, naming neither the declared fields nor where to declare one."""
    buffer = make_buffer()
    with pytest.raises(TypeError, match=r"got fields \['reward'\]; declared fields: .*'rewards'.*stored_fields"):
        buffer.add(0, reward=np.zeros(3))
