"""Action masks: where they come from, what a valid one is, and how it enters the distribution.

A mask says which actions are legal in a state: ``[n]`` bools for ``Discrete(n)``, and for
``MultiDiscrete(nvec)`` one mask per component, concatenated (``[sum(nvec)]``, sb3-contrib's
layout). The policy head sets the logits of illegal actions to :data:`MASK_LOGIT`, so sampling
never picks one, the mode is the most probable legal action, and the KL and entropy are over the
legal actions. The update uses the mask stored with each step for both the old and the new policy.

Where an env's masks come from (:func:`source`), in this order:

1. ``"observation"``: a ``Dict`` observation entry named ``action_mask`` (the PettingZoo /
   gymnasium convention), a ``MultiBinary(n)`` or integer ``Box(0, 1, (n,))``. The networks do not
   see it unless asked (``TRPO.for_env(..., observe_action_mask=True)``);
2. ``"method"``: the env's ``action_masks()`` (sb3-contrib's ``MaskablePPO`` convention), called on a
   vector env as ``env.call("action_masks")``.

A leaf module: it imports only :mod:`keras_trpo.errors` and :mod:`keras_trpo.validation`.

>>> import gymnasium, numpy as np
>>> mask_size(gymnasium.spaces.MultiDiscrete([3, 2]))
5
>>> legal(gymnasium.spaces.Discrete(3), np.array([0, 2]), np.array([[1, 0, 0], [1, 1, 0]], bool)).tolist()
[True, False]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from keras_trpo.errors import RolloutError

#: The ``Dict`` observation key of a mask (PettingZoo, gymnasium), and the exported signatures' input name.
MASK_KEY = "action_mask"
#: The method of an env that returns its mask (sb3-contrib's ``MaskablePPO``).
MASK_METHOD = "action_masks"
#: The logit of an illegal action. ``exp(-1e9 - logsumexp)`` is an exact float32 0, so an illegal action has
#: probability 0, while every value stays finite. Not ``-inf``: TFP's Categorical guards ``0 · (−inf)`` in its
#: entropy and KL (``_mul_exp``; the tests pass with ``-inf`` too), but a hand-written ``p · log p`` does not, and
#: the exported ``distribution_params`` logits go to REST clients as JSON, which has no infinity.
MASK_LOGIT = -1e9
#: The batch key of the stored masks.
BATCH_KEY = "action_masks"

_SPACES = gymnasium.spaces


def mask_size(action_space: gymnasium.spaces.Space) -> int:
    """The width of one mask: ``n`` for ``Discrete(n)``, ``sum(nvec)`` for a 1-D ``MultiDiscrete``.

    Raises:
        TypeError: any other action space (a ``Box`` or ``MultiBinary`` action has no finite set to mask).
    """
    if isinstance(action_space, _SPACES.Discrete):
        return int(action_space.n)
    if isinstance(action_space, _SPACES.MultiDiscrete) and np.ndim(action_space.nvec) == 1:
        return int(np.sum(action_space.nvec))
    raise TypeError(
        f"action masks need a Discrete or 1-D MultiDiscrete action space; got {action_space}. A "
        f"{type(action_space).__name__} action space cannot be masked: build the model with action_mask=False."
    )


def _components(action_space: gymnasium.spaces.Space) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(nvec, start, offset)`` of a maskable space, one entry per component (one for ``Discrete``)."""
    if isinstance(action_space, _SPACES.Discrete):
        return np.array([int(action_space.n)]), np.array([int(action_space.start)]), np.array([0])
    nvec = np.asarray(action_space.nvec, np.int64)
    return nvec, np.asarray(action_space.start, np.int64), np.concatenate([[0], np.cumsum(nvec)[:-1]])


def flat_indices(action_space: gymnasium.spaces.Space, actions: np.ndarray) -> np.ndarray:
    """``[N, components]``: where each action's component sits in the concatenated mask (-1: out of range)."""
    nvec, start, offset = _components(action_space)
    index = np.asarray(actions, np.int64).reshape(len(actions), len(nvec)) - start
    return np.where((index >= 0) & (index < nvec), index + offset, -1)


def legal(action_space: gymnasium.spaces.Space, actions: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[N]`` bools: whether each action is legal under its row of ``masks`` (every component legal)."""
    index = flat_indices(action_space, actions)
    rows = np.arange(len(index))[:, None]
    return ((index >= 0) & np.asarray(masks, bool)[rows, np.maximum(index, 0)]).all(axis=1)


# --------------------------------------------------------------------------
# Spaces and envs: where the masks are
# --------------------------------------------------------------------------
def observation_has_mask(space: gymnasium.spaces.Space) -> bool:
    """Whether ``space`` is a ``Dict`` with an ``action_mask`` entry."""
    return isinstance(space, _SPACES.Dict) and MASK_KEY in space.spaces


def check_mask_entry(space: gymnasium.spaces.Space, size: int) -> None:
    """Raises TypeError unless the ``action_mask`` entry of ``space`` is ``MultiBinary(size)`` or an integer
    ``Box(0, 1, (size,))``."""
    entry = space[MASK_KEY]
    if isinstance(entry, _SPACES.MultiBinary):
        ok = tuple(np.atleast_1d(entry.n)) == (size,)
    else:
        ok = (isinstance(entry, _SPACES.Box) and entry.shape == (size,) and not np.issubdtype(entry.dtype, np.floating)
              and np.all(entry.low >= 0) and np.all(entry.high <= 1))  # fmt: skip
    if not ok:
        raise TypeError(f"observation entry {MASK_KEY!r} is {entry}; expected MultiBinary({size}) or "
                        f"Box(0, 1, ({size},), int8), one flag per action of the action space (a float mask: cast "
                        "it to int8 with a gymnasium.ObservationWrapper).")


def without_mask(space: gymnasium.spaces.Space) -> gymnasium.spaces.Space:
    """``space`` without its ``action_mask`` entry: what the networks see."""
    rest = {key: sub for key, sub in space.spaces.items() if key != MASK_KEY}
    if not rest:
        raise TypeError(f"observation space {space} holds only {MASK_KEY!r}: the networks would see nothing; "
                        "add an observation entry, or pass observe_action_mask=True.")
    return _SPACES.Dict(rest)


def _has_method(env: Any) -> bool:
    """Whether ``env`` (a gymnasium ``Env`` or ``VectorEnv``) has ``action_masks()``, without calling it.

    An ``AsyncVectorEnv`` is not asked through its workers (a missing attribute raises there, which closes the
    env): one sub-env is made from its ``env_fns[0]`` and closed, as ``AsyncVectorEnv`` itself does to read the spaces.
    """
    if hasattr(env, "envs"):
        return _has_method(env.envs[0])
    if hasattr(env, "num_envs"):
        make = getattr(env, "env_fns", [None])[0]
        if make is None:
            return False
        probe = make()
        try:
            return _has_method(probe)
        finally:
            probe.close()
    has = getattr(env, "has_wrapper_attr", None)
    return bool(has(MASK_METHOD)) if has is not None else hasattr(env, MASK_METHOD)


def source(env: Any, observation_space: gymnasium.spaces.Space, requested: bool | None,
           action_space: gymnasium.spaces.Space | None = None) -> str | None:
    """Where ``env``'s masks come from: ``"observation"``, ``"method"`` or ``None`` (no masks).

    ``requested``: ``None`` detects; ``False`` turns masking off; ``True`` requires a source. With ``action_space``,
    an ``action_mask`` entry is checked against it (:func:`check_mask_entry`) before any model is built.
    """
    if requested is not None and not isinstance(requested, bool):
        raise TypeError(f"action_mask must be None (detect), True or False; got {requested!r}.")
    if requested is False:
        return None
    if observation_has_mask(observation_space):
        if action_space is not None:
            check_mask_entry(observation_space, mask_size(action_space))
        return "observation"
    if _has_method(env) or requested:
        return "method"  # with requested=True and no method, the first env.call names the problem
    return None


# --------------------------------------------------------------------------
# Reading masks during collection and evaluation
# --------------------------------------------------------------------------
class MaskReader:
    """The masks of a vector env's current observations, checked: ``reader(observations)`` → bool ``[num_envs, n]``.

    Args:
        env: the vector env: its ``action_mask`` observation entry, else its ``action_masks()`` method.
        action_space: the model's action space (the mask width).
    """

    def __init__(self, env: Any, action_space: gymnasium.spaces.Space) -> None:
        self.env, self.action_space = env, action_space
        #: Where the masks come from: ``"observation"`` or ``"method"``.
        self.where = "observation" if observation_has_mask(env.single_observation_space) else "method"
        self.size = mask_size(action_space)
        if self.where == "observation":
            check_mask_entry(env.single_observation_space, self.size)

    def __call__(self, observations: Any, skip: np.ndarray | None = None) -> np.ndarray:
        """The masks of ``observations``; ``skip``: sub-envs whose step only resets (an all-illegal row is allowed)."""
        if self.where == "observation":
            raw = observations[MASK_KEY]
        else:
            try:
                raw = self.env.call(MASK_METHOD)
            except AttributeError as error:
                if MASK_METHOD not in str(error):  # an error inside the env's own action_masks()
                    raise
                raise ValueError(no_source_message(self.env.single_observation_space, str(error))) from error
        masks = check_masks(raw, self.size, f"the env's masks ({self.where})")
        empty = ~masks.any(axis=1)
        if skip is not None:
            empty &= ~skip
        if empty.any():
            raise RolloutError(
                f"sub-environment(s) {np.flatnonzero(empty).tolist()} returned an action mask with no legal action; "
                "every state the policy acts in needs at least one legal action (end the episode instead)."
            )
        return masks


def no_source_message(space: gymnasium.spaces.Space, detail: str = "") -> str:
    """The one line for a masked policy on an env without masks (collection and evaluation)."""
    detail = f"; {detail}" if detail else ""
    return (f"the policy masks actions (action_mask=True), but the env has no {MASK_KEY!r} observation entry and no "
            f"{MASK_METHOD}() method (observation space {space}{detail}); use the masked env it was trained on, add "
            "one to the env, or build the model with action_mask=False.")


def check_masks(masks: Any, size: int, what: str) -> np.ndarray:
    """``masks`` as bools ``[N, size]``, or one ValueError line naming ``what``, the shape/dtype/values and the fix."""
    if isinstance(masks, (tuple, list)):
        masks = np.stack([np.asarray(m) for m in masks]) if len(masks) else np.zeros((0, size), bool)
    masks = np.asarray(masks)
    expected = f"expected bool or 0/1 integers [N, {size}], one flag per action"
    if masks.ndim != 2 or masks.shape[1] != size:
        raise ValueError(f"{what} has shape {list(masks.shape)}; {expected}.")
    if not (masks.dtype == np.bool_ or np.issubdtype(masks.dtype, np.integer)):
        raise ValueError(f"{what} has dtype {masks.dtype}; {expected} (cast 0/1 floats with .astype(bool)).")
    if masks.dtype != np.bool_ and ((masks != 0) & (masks != 1)).any():
        raise ValueError(f"{what} holds values {np.unique(masks).tolist()}; {expected}.")
    return masks.astype(bool, copy=False)


def split(observations: Any, action_mask: Any, keys: tuple, masked: bool = True) -> tuple[Any, Any]:
    """``(observations for the networks, mask)`` of a dict of observations that may hold an ``action_mask`` entry.

    For a space that is not a ``Dict`` (``keys == (None,)``) the dict is ``{"observations": x, "action_mask": m}``, the
    exported signatures' input names (what ``model.predict`` takes, a dict being one input to Keras).

    The entry stays in the observations only when the networks see it (it is one of ``keys``); it is the mask
    when the model is ``masked`` and no explicit ``action_mask`` was given (an explicit one wins).
    """
    if not isinstance(observations, Mapping) or MASK_KEY not in observations:
        return observations, action_mask
    entry = observations[MASK_KEY]
    if MASK_KEY not in keys:
        observations = {key: value for key, value in observations.items() if key != MASK_KEY}
        if keys == (None,) and list(observations) == ["observations"]:  # a non-Dict space: the signatures' input names
            observations = observations["observations"]
    return observations, (entry if action_mask is None and masked else action_mask)


def _is_symbolic(value: Any) -> bool:
    import tensorflow as tf

    return tf.is_tensor(value) and tf.is_symbolic_tensor(value)


def check_call_mask(action_mask: Any, masked: bool, size: int, n: int | None) -> Any:
    """The ``action_mask`` of ``model(observations, action_mask=...)``, checked against the model and the batch size ``n``.

    A numpy or eager mask comes back as bools; a symbolic one (inside ``tf.function``) as it is, its shape checked.
    """
    if not masked:
        raise ValueError("action_mask was given, but this model does not mask actions (it was built with "
                         "action_mask=False); build it with TRPO.for_env(env) on a masked env, or action_mask=True.")
    if action_mask is None:
        raise ValueError(f"this model masks actions: pass action_mask=[N, {size}] (bool or 0/1), or observations as a "
                         f"dict with an {MASK_KEY!r} entry ({{'observations': x, {MASK_KEY!r}: m}} for a non-Dict space).")
    if _is_symbolic(action_mask):
        shape = tuple(action_mask.shape)
        if len(shape) != 2 or shape[1] not in (None, size) or action_mask.dtype.is_floating:
            raise ValueError(f"action_mask has shape {list(shape)} and dtype {action_mask.dtype.name}; expected bool or "
                             f"0/1 integers [N, {size}], one flag per action.")
        return action_mask
    masks = check_masks(action_mask, size, "action_mask")
    if n is not None and len(masks) != n:
        raise ValueError(f"action_mask has {len(masks)} rows but the observations have {n}; expected one mask per "
                         "observation.")
    if not masks.any(axis=1).all():
        raise ValueError(f"action_mask rows {np.flatnonzero(~masks.any(axis=1)).tolist()[:10]} have no legal action; "
                         "every row needs at least one (a state with no legal move ends its episode).")
    return masks


def check_batch(data: Any, action_space: gymnasium.spaces.Space, strategy: Any = None) -> None:
    """Raises ValueError, before any compute, if a batch action is illegal under its own stored mask.

    Such a batch mixes a mask with an action it did not produce (the mask or the actions changed after
    collection): its old log-probability would be ``≈ MASK_LOGIT``. Reads numpy arrays, eager tensors and
    each replica's share of per-replica values; symbolic values (a traced ``train_step``) are checked by the
    caller before the trace runs (``TrainFunction``). A missing key or a wrong shape is left to the batch checks.
    """
    if not isinstance(data, Mapping) or BATCH_KEY not in data or "actions" not in data:
        return
    offset = 0  # the rows of the replicas' shares before this one: rows are named in the whole batch
    for masks, actions in zip(_local(data[BATCH_KEY], strategy), _local(data["actions"], strategy)):
        if _is_symbolic(masks) or _is_symbolic(actions):
            return
        masks, actions = np.asarray(masks), np.asarray(actions)
        if masks.ndim != 2 or len(actions) != len(masks) or actions.size != len(actions) * len(_components(action_space)[0]):
            return  # validation.validate_batch names the shape
        masks = check_masks(masks, mask_size(action_space), f"batch[{BATCH_KEY!r}]")
        bad = np.flatnonzero(~legal(action_space, actions, masks))
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"batch['actions'][{offset + row}] = {actions[row].tolist()} is illegal under "
                f"batch[{BATCH_KEY!r}][{offset + row}] (legal flat indices {np.flatnonzero(masks[row]).tolist()}; "
                f"{bad.size} such rows): every action must be legal under the mask it was sampled with. Keep the "
                "masks Rollouts stored with the batch."
            )
        offset += len(masks)


def _local(value: Any, strategy: Any) -> list:
    """The replicas' shares of a per-replica value (one share for anything else)."""
    import tensorflow as tf

    if strategy is not None and isinstance(value, tf.distribute.DistributedValues):
        return list(strategy.experimental_local_results(value))
    return [value]


def network_space(space: gymnasium.spaces.Space, keys: tuple) -> gymnasium.spaces.Space:
    """An env's observation space as the model's networks see it: without ``action_mask`` unless ``keys`` has it."""
    if observation_has_mask(space) and MASK_KEY not in keys:
        return without_mask(space)
    return space


def keep_mask_entry(copied: Any, observations: Any, reader: MaskReader | None) -> Any:
    """``copied`` (the networks' part of ``observations``), with a copy of the ``action_mask`` entry when ``reader``
    reads the masks from it: what a resumed ``Rollouts`` needs to act on ``observations`` again."""
    if reader is not None and reader.where == "observation" and MASK_KEY not in copied:
        copied[MASK_KEY] = np.array(observations[MASK_KEY], copy=True)
    return copied
