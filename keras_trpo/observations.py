"""The observation spaces a TRPO model accepts, and observations as structures of arrays.

A leaf module: it imports nothing from keras_trpo.

An observation batch is one array ``[N, *shape]`` for a ``Box``, ``Discrete`` or
``MultiBinary`` space, and a dict of such arrays, keyed like the space, for a
``Dict`` space (its entries ``Box``, ``Discrete`` or ``MultiBinary``). Batches keep
the space's dtype (a ``uint8`` image stays ``uint8``: 2048 frames of 84×84×4 are 58 MB,
not 231 MB as float32); the model casts inside. What a network sees
(:meth:`ObservationSpec.network_inputs`):

| space / entry   | batch array           | network input                          |
|-----------------|-----------------------|----------------------------------------|
| ``Box`` float   | float32 ``[N, *shape]`` | float32 ``[N, *shape]`` (normalized if asked) |
| ``Box`` integer | its dtype, e.g. uint8 | float32 ``[N, *shape]``, unscaled       |
| ``Discrete(n)`` | int64 ``[N]``         | float32 one-hot ``[N, n]``              |
| ``MultiBinary`` | int8 ``[N, *shape]``  | float32 ``[N, *shape]``                 |

The default MLP gets all of it flattened and concatenated (:meth:`ObservationSpec.flat_features`).

Example:

>>> import gymnasium
>>> spec = ObservationSpec(gymnasium.spaces.Dict({
...     "image": gymnasium.spaces.Box(0, 255, (7, 7, 3), "uint8"), "direction": gymnasium.spaces.Discrete(4)}))
>>> [(leaf.key, leaf.shape, leaf.dtype.name) for leaf in spec.leaves]
[('direction', (), 'int64'), ('image', (7, 7, 3), 'uint8')]
>>> spec.flat_size
151
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gymnasium
import numpy as np
import tensorflow as tf

from keras_trpo.validation import check_batch_shape, check_rows, float_dtype

_SPACES = gymnasium.spaces
_LEAF_SPACES = (_SPACES.Box, _SPACES.Discrete, _SPACES.MultiBinary)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One array of an observation: ``key`` (``None`` unless in a ``Dict``), its space, shape and dtype."""

    key: str | None
    space: gymnasium.Space
    shape: tuple
    dtype: np.dtype

    @property
    def is_float(self) -> bool:
        """A float ``Box``: the entries that observation normalization applies to."""
        return isinstance(self.space, _SPACES.Box) and np.issubdtype(self.dtype, np.floating)

    @property
    def feature_shape(self) -> tuple:
        """Per-sample shape of the network input (``(n,)`` for a one-hot ``Discrete``)."""
        return (int(self.space.n),) if isinstance(self.space, _SPACES.Discrete) else self.shape

    @property
    def feature_size(self) -> int:
        return int(np.prod(self.feature_shape))

    def features(self, x) -> tf.Tensor:
        """The network input (in Keras' ``floatx``, float32 by default) of a batch of this leaf."""
        if isinstance(self.space, _SPACES.Discrete):
            return tf.one_hot(tf.cast(x, tf.int64) - int(self.space.start), int(self.space.n), dtype=float_dtype())
        return tf.cast(x, float_dtype())


def _signature(leaf: Leaf) -> tuple:
    """What must agree between two spaces for batches of one to be valid batches of the other."""
    discrete = (int(leaf.space.n), int(leaf.space.start)) if isinstance(leaf.space, _SPACES.Discrete) else None
    return leaf.key, leaf.shape, leaf.dtype, type(leaf.space), discrete


def _leaf(key, space) -> Leaf:
    where = "observation space" if key is None else f"observation space entry {key!r}"
    if not isinstance(space, _LEAF_SPACES):
        hint = (
            " Drop it with gymnasium.wrappers.FilterObservation(env, filter_keys=[...]) (e.g. MiniGrid's Text "
            "'mission'), or encode it as a Box."
            if key is not None
            else " Wrap the env with gymnasium.wrappers.FlattenObservation, or give it a Box or Dict space."
        )
        raise TypeError(
            f"Unsupported {where}: {type(space).__name__} ({space!r}). Supported: Box (any shape), Discrete, "
            f"MultiBinary{', and a Dict of those' if key is None else ''}.{hint}"
        )
    if isinstance(space, _SPACES.Discrete):
        return Leaf(key, space, (), np.dtype(np.int64))
    if isinstance(space, _SPACES.MultiBinary):
        return Leaf(key, space, tuple(space.shape), np.dtype(np.int8))
    dtype = np.dtype(space.dtype)
    if np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float32)
    elif not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise TypeError(f"Unsupported {where}: a Box of dtype {dtype.name}; expected a float or integer Box.")
    return Leaf(key, space, tuple(space.shape), dtype)


def _shape(value, name, expected):
    """``value``'s shape as a tuple (``None`` dims kept), or ``None`` for a symbolic tensor of unknown rank."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return None if getattr(shape, "rank", 0) is None else tuple(shape)
    try:
        return tuple(np.shape(value))
    except Exception as error:  # noqa: BLE001 - a list of symbolic tensors (inside a tf.function)
        raise ValueError(f"{name} is a {type(value).__name__} of {len(value)} tensors; {expected}: stack them into "
                         "one tensor (tf.stack) first.") from error


class ObservationSpec:
    """The arrays of one observation space, and the operations the model needs on batches of them.

    Args:
        space: a gymnasium ``Box``, ``Discrete``, ``MultiBinary``, or ``Dict`` of those.

    Raises:
        TypeError: any other space, or a ``Dict`` entry of another space (named by its key).
    """

    def __init__(self, space: gymnasium.Space) -> None:
        self.space = space
        if isinstance(space, _SPACES.Dict):
            if not space.spaces or not all(isinstance(key, str) for key in space.spaces):
                raise TypeError(f"Unsupported observation space: a Dict needs string keys and at least one entry; "
                                f"got keys {list(space.spaces)}.")
            # Sorted like tf.nest flattens a dict, so leaves and flattened tensors line up.
            self.leaves = tuple(_leaf(key, space.spaces[key]) for key in sorted(space.spaces))
        else:
            self.leaves = (_leaf(None, space),)
        #: True for a ``Dict`` space: batches are dicts of arrays.
        self.structured = isinstance(space, _SPACES.Dict)

    # -- describing ---------------------------------------------------------
    @property
    def keys(self) -> tuple[str | None, ...]:
        return tuple(leaf.key for leaf in self.leaves)

    @property
    def flat_size(self) -> int:
        """Features of the default MLP's input (:meth:`flat_features`)."""
        return sum(leaf.feature_size for leaf in self.leaves)

    @property
    def float_size(self) -> int:
        """Scalars in the float ``Box`` entries (what observation normalization sees)."""
        return sum(leaf.feature_size for leaf in self.leaves if leaf.is_float)

    def structure(self, values: Iterable) -> Any:
        """``values`` (one per leaf, in order) arranged like a batch: a dict for ``Dict`` spaces."""
        values = list(values)
        return dict(zip(self.keys, values)) if self.structured else values[0]

    def flatten(self, observations: Any) -> list:
        """The arrays of a batch in leaf order."""
        if self.structured:
            return [observations[key] for key in self.keys]
        return [observations]

    def map(self, fn: Callable[..., Any], *batches: Any) -> Any:
        """``fn`` applied leaf by leaf to batches of this structure (``fn(leaf, *arrays)``)."""
        flat = [self.flatten(batch) for batch in batches]
        return self.structure(fn(leaf, *arrays) for leaf, *arrays in zip(self.leaves, *flat))

    def tensor_specs(self, space_dtypes: bool = False) -> Any:
        """``tf.TensorSpec`` per leaf with a free batch dimension, named ``observations`` or by key.

        ``space_dtypes``: a float ``Box`` in the space's own dtype (float64 for a float64 ``Box``,
        what the env emits; the exported signatures cast inside) rather than the batches' float32.
        """

        def dtype(leaf):
            return leaf.space.dtype if space_dtypes and leaf.is_float else leaf.dtype

        return self.structure(
            tf.TensorSpec([None, *leaf.shape], tf.as_dtype(dtype(leaf)), name=leaf.key or "observations")
            for leaf in self.leaves
        )

    def check_signature_names(self) -> None:
        """Raises ValueError unless each ``Dict`` key can name a SavedModel signature input (``model.export``).

        Checked when the model is built, not first at export after training. A key must be an ASCII
        identifier not starting with '_' (TensorFlow would rename 'agent-pos' silently and refuse 'é'),
        other than 'seed' and 'actions', which the ``sample`` and ``log_prob`` signatures also take.
        TensorFlow lowercases signature input names, so the comparisons ignore case ('Seed', or
        'img' beside 'IMG', clash too).
        """
        if not self.structured:
            return
        keys = [k for k in self.keys if k is not None]  # all of them: a Dict's keys are str
        invalid = sorted(k for k in keys if not (k.isascii() and k.isidentifier()) or k.startswith("_"))
        lowered = [k.lower() for k in keys]
        clash = sorted(k for k in keys if k.lower() in ("seed", "actions") or lowered.count(k.lower()) > 1)
        fix = "rename them with a gymnasium.ObservationWrapper before building the model."
        if invalid:
            raise ValueError(f"observation_space: observation keys {invalid} are not valid signature input names for "
                             "model.export (an ASCII identifier not starting with '_'); " + fix)
        if clash:
            raise ValueError(f"observation_space: observation keys {clash} clash, ignoring case (TensorFlow lowercases "
                             "signature input names), with each other or the inputs 'seed' and 'actions' of "
                             "model.export; " + fix)

    def zeros(self, n: int = 1) -> Any:
        """A batch of ``n`` zero observations (to build networks)."""
        return self.structure(np.zeros((n, *leaf.shape), leaf.dtype) for leaf in self.leaves)

    def buffer(self, *leading: int) -> Any:
        """Uninitialized numpy storage of shape ``[*leading, *shape]`` per leaf, in the leaf dtypes."""
        return self.structure(np.empty((*leading, *leaf.shape), leaf.dtype) for leaf in self.leaves)

    def describe(self) -> str:
        """``[N, 4] float32`` or ``{'direction': [N] int64, 'image': [N, 7, 7, 3] uint8}``."""

        def one(leaf):
            return "[" + ", ".join(str(d) for d in ("N", *leaf.shape)) + f"] {leaf.dtype.name}"

        if not self.structured:
            return one(self.leaves[0])
        return "{" + ", ".join(f"{leaf.key!r}: {one(leaf)}" for leaf in self.leaves) + "}"

    def matches(self, space: gymnasium.Space) -> bool:
        """Whether an environment's observation space gives batches of this structure."""
        try:
            other = ObservationSpec(space)
        except TypeError:
            return False
        return [_signature(leaf) for leaf in other.leaves] == [_signature(leaf) for leaf in self.leaves]

    # -- checking -----------------------------------------------------------
    def is_exact_batch(self, observations: Any, n: int) -> bool:
        """The per-step fast path: numpy arrays of exactly ``[n, *shape]`` in the leaf dtypes or the space's own.

        The space's own dtype counts too: MuJoCo's float64 ``Box`` observations (stored as float32)
        would otherwise take the full :meth:`check` on every env step.
        """
        if not self.structured:  # one array (no flatten: this runs on every env step)
            leaf = self.leaves[0]
            return (isinstance(observations, np.ndarray) and observations.shape == (n, *leaf.shape)
                    and (observations.dtype == leaf.dtype or observations.dtype == leaf.space.dtype))
        if not isinstance(observations, Mapping):
            return False
        for leaf, x in zip(self.leaves, self.flatten(observations)):
            if (not isinstance(x, np.ndarray) or (x.dtype != leaf.dtype and x.dtype != leaf.space.dtype)
                    or x.shape != (n, *leaf.shape)):
                return False
        return True

    def check(self, observations: Any, what: str = "observations", unbatched: str | None = None) -> int | None:
        """Raises ValueError unless ``observations`` has this structure and ``[N, *shape]`` per leaf; returns N.

        Never reshapes: a wrong width would otherwise become extra rows. ``None`` dims pass
        (symbolic tensors; N is then ``None``); the batch dimension must agree between the entries
        of a dict (the rules of :func:`~keras_trpo.validation.check_batch_shape` and
        :func:`~keras_trpo.validation.check_rows`). ``unbatched``: the fix named for one observation
        without the batch axis.
        """
        if unbatched is None:
            unbatched = ("add the batch axis for one observation ({k: v[None] for k, v in x.items()})"
                         if self.structured else "add the batch axis for one observation (x[None])")
        expected = f"expected {self.describe()} for the model's observation space {self.space}"
        if self.structured:
            if not isinstance(observations, Mapping):
                raise ValueError(f"{what} is a {type(observations).__name__}; {expected}.")
            missing = [k for k in self.keys if k not in observations]
            extra = sorted(str(k) for k in observations if k not in self.keys)
            if missing or extra:
                raise ValueError(f"{what} has keys {sorted(map(str, observations))} (missing {missing}, "
                                 f"unexpected {extra}); {expected}.")
        elif isinstance(observations, Mapping):
            raise ValueError(f"{what} is a dict with keys {sorted(map(str, observations))}; {expected}.")
        n = None
        for leaf, value in zip(self.leaves, self.flatten(observations)):
            name = what if leaf.key is None else f"{what}[{leaf.key!r}]"
            shape = _shape(value, name, expected)
            if shape is None:
                continue  # a symbolic tensor of unknown rank (a relaxed trace): nothing to check statically
            check_batch_shape(name, shape, leaf.shape, expected, f"; {unbatched}" if shape == leaf.shape else "")
            n = check_rows(name, shape[0], n, "other entries have", expected)
            dtype = getattr(value, "dtype", None)
            dtype = np.dtype(np.asarray(value).dtype if dtype is None else tf.as_dtype(dtype).as_numpy_dtype)
            numeric = np.issubdtype(dtype, np.number) or dtype == np.bool_
            # A float array for an integer entry would be truncated by the cast: refused, never rounded.
            if not numeric or (np.issubdtype(dtype, np.floating) and not np.issubdtype(leaf.dtype, np.floating)):
                raise ValueError(f"{name} has dtype {dtype.name}; {expected}.")
        return n

    def check_input(self, x: Any, what: str) -> None:
        """:meth:`check` for ``model.predict(x)``, where Keras reads a list as several inputs.

        A ``tf.data.Dataset`` is checked by its ``element_spec`` (it must be batched);
        generators and ``PyDataset`` are checked batch by batch when the model is called.
        """
        if isinstance(x, tf.data.Dataset):
            element = x.element_spec[0] if isinstance(x.element_spec, tuple) else x.element_spec  # (x, y, w)
            self.check(element, f"{what} (a tf.data.Dataset) element", "batch the dataset (dataset.batch(32))")
        elif isinstance(x, (list, tuple)):
            expected = f"expected one batch {self.describe()} for the model's observation space {self.space}"
            try:
                shape = tuple(np.shape(x))
            except Exception:  # noqa: BLE001 - ragged or symbolic entries: no common shape
                shape = None
            if self.structured:
                fix = "pass one dict of arrays with the batch axis first"
            elif shape is not None and shape[1:] == self.leaves[0].shape:
                fix = "pass np.stack(x)"
            elif shape == self.leaves[0].shape:
                fix = "pass np.asarray(x)[None] for one observation"
            else:
                fix = "pass one array with the batch axis first"
            shape_text = "" if shape is None or self.structured else f" (shape {list(shape)})"
            items = f"{len(x)} item{'s' * (len(x) != 1)}{shape_text}"
            raise ValueError(f"{what} is a {type(x).__name__} of {items}; {expected} (Keras reads a list as several "
                             f"model inputs); {fix}.")
        elif isinstance(x, (Mapping, np.ndarray, np.generic, int, float)) or tf.is_tensor(x):
            self.check(x, what)

    # -- converting ---------------------------------------------------------
    def numpy(self, observations: Any, copy: bool = False) -> Any:
        """A batch as numpy arrays in the leaf dtypes (what acting and the batches hold); ``copy``: never a view."""
        return self.map(lambda leaf, x: np.array(x, leaf.dtype, copy=True) if copy else np.asarray(x, leaf.dtype),
                        observations)

    def tensors(self, observations: Any) -> Any:
        """A batch as tensors in the leaf dtypes (float Box entries float32, the rest as collected)."""
        return self.map(lambda leaf, x: tf.cast(x, tf.as_dtype(leaf.dtype)), observations)

    def network_inputs(self, observations: Any, normalize: Callable[[tf.Tensor], tf.Tensor] | None = None) -> Any:
        """What a custom network receives: float32 tensors shaped like the space (see module docstring).

        ``normalize`` maps ``[N, float_size]`` to ``[N, float_size]`` (the running normalization).
        """
        features = [leaf.features(x) for leaf, x in zip(self.leaves, self.flatten(observations))]
        if normalize is not None:
            features = self._replace_float(features, normalize)
        return self.structure(features)

    def flat_features(self, observations: Any, normalize: Callable[[tf.Tensor], tf.Tensor] | None = None) -> tf.Tensor:
        """The default MLP's input ``[N, flat_size]``: every leaf's features flattened, in key order."""
        features = [leaf.features(x) for leaf, x in zip(self.leaves, self.flatten(observations))]
        if normalize is not None:
            features = self._replace_float(features, normalize)
        flat = [tf.reshape(f, [-1, leaf.feature_size]) for leaf, f in zip(self.leaves, features)]
        return flat[0] if len(flat) == 1 else tf.concat(flat, axis=-1)

    def float_features(self, observations: Any) -> tf.Tensor:
        """The float ``Box`` entries flattened and concatenated, ``[N, float_size]`` (normalization's input)."""
        floats = [
            tf.reshape(tf.cast(x, float_dtype()), [-1, leaf.feature_size])
            for leaf, x in zip(self.leaves, self.flatten(observations))
            if leaf.is_float
        ]
        return floats[0] if len(floats) == 1 else tf.concat(floats, axis=-1)

    def _replace_float(self, features, normalize):
        floats = [(i, leaf) for i, leaf in enumerate(self.leaves) if leaf.is_float]
        flat = [tf.reshape(features[i], [-1, leaf.feature_size]) for i, leaf in floats]
        normalized = normalize(flat[0] if len(flat) == 1 else tf.concat(flat, axis=-1))
        parts = tf.split(normalized, [leaf.feature_size for _, leaf in floats], axis=-1) if len(flat) > 1 else [normalized]
        features = list(features)
        for (i, leaf), part in zip(floats, parts):
            features[i] = tf.reshape(part, [-1, *leaf.feature_shape])
        return features
