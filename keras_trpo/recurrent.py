"""Policies with memory: a recurrent core (LSTM or GRU) after any feature network, unrolled with episode resets.

A leaf module: it imports nothing from keras_trpo above :mod:`keras_trpo.validation`.

:class:`Recurrent` is the Keras layer a recurrent tower of :class:`keras_trpo.TRPO` holds:
``features`` (any Keras layer mapping one step's observations to ``[N, F]``, or ``None``) →
a ``keras.layers.LSTMCell`` or ``GRUCell`` → ``after`` (optional, per step). Its state is a flat
dict of ``[N, units]`` tensors: ``{"h", "c"}`` for an LSTM, ``{"h"}`` for a GRU.

:meth:`Recurrent.unroll` runs it over sequences laid out row by row (sequence-major: rows
``s·L … s·L + L − 1`` are sequence ``s``), from each sequence's start state, and before each step
resets the state of the rows whose ``episode_starts`` flag is set, as sb3-contrib's RecurrentPPO
does (``_process_sequence``: ``(1 − episode_start) · state``; here with ``tf.where``, so a reset
state is exactly zero). The time loop is a Python loop over the static sequence length: the
Fisher-vector product's double backprop then goes through plain ops rather than a
``tf.while_loop`` (garage #741 failed on second-order gradients through while loops).

Users write ``keras_trpo.networks.recurrent(mlp_or_cnn, units=64, cell="lstm")``, or a
``keras.Sequential`` with one ``keras.layers.LSTM``/``GRU`` layer between per-step layers
(:func:`as_recurrent` splits it around the cell and keeps the layers and their weights).

Example:

>>> core = recurrent(None, units=8, cell="gru", seed=0)
>>> outputs, state = core.unroll(keras.ops.zeros((6, 3)), core.initial_state(2), keras.ops.zeros((6,)), 3)
>>> tuple(outputs.shape), sorted(state)
((6, 8), ['h'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

#: The cells by name, and the names of their state tensors (in the order Keras' cells take them).
CELLS = {"lstm": keras.layers.LSTMCell, "gru": keras.layers.GRUCell}
STATE_NAMES = {"lstm": ("h", "c"), "gru": ("h",)}

State = dict[str, Any]


def check_cell(cell: Any) -> str:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}; got {cell!r}.")
    return cell


@keras.saving.register_keras_serializable(package="keras_trpo")
class Recurrent(keras.layers.Layer):
    """``features`` → LSTM/GRU cell → ``after``, stepped with an explicit state (see the module docstring).

    Args:
        features: a Keras layer applied to each step's observations (``[N, ...] → [N, F]``), or ``None``
            (the observations, already ``[N, F]``, go to the cell).
        units: the cell's width.
        cell: ``"lstm"`` or ``"gru"``, or a Keras ``LSTMCell``/``GRUCell`` (used as is, with its weights).
        after: a Keras layer applied to each step's cell output, or ``None``.
        seed: seeds the cell's kernel initializers.
        cell_config: a Keras cell's own config (kept when a user's ``LSTM`` layer was split); overrides ``units``.
    """

    def __init__(self, features: Any = None, units: int = 64, cell: Any = "lstm", after: Any = None,
                 seed: int | None = None, cell_config: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.features = _layer_or_none(features)
        self.after = _layer_or_none(after)
        self.seed = seed
        if isinstance(cell, tuple(CELLS.values())):
            self.cell_type = next(name for name, cls in CELLS.items() if isinstance(cell, cls))
            self.cell = cell
        elif cell_config is None:
            self.cell_type = check_cell(cell)
            kernel = keras.initializers.GlorotUniform(seed=seed)
            recurrent_kernel = keras.initializers.Orthogonal(seed=None if seed is None else seed + 1)
            self.cell = CELLS[cell](int(units), kernel_initializer=kernel, recurrent_initializer=recurrent_kernel,
                                    name=f"{cell}_cell")
        else:
            self.cell_type = check_cell(cell)
            self.cell = CELLS[cell].from_config(dict(cell_config))
        self.units = int(self.cell.units)

    @property
    def state_names(self) -> tuple[str, ...]:
        """The names of the state tensors (``("h", "c")`` or ``("h",)``)."""
        return STATE_NAMES[self.cell_type]

    def initial_state(self, batch_size: Any) -> State:
        """Zeros ``{name: [batch_size, units]}``."""
        return {name: tf.zeros([batch_size, self.units], self.compute_dtype) for name in self.state_names}

    def build(self, input_shape: Any) -> None:
        if self.features is not None and not self.features.built:
            self.features.build(input_shape)

    def call(self, inputs: Any) -> Any:
        """One step from the zero state (what a stateless call, e.g. Keras' build, sees)."""
        n = tf.shape(tf.nest.flatten(inputs)[0])[0]
        outputs, _ = self.unroll(inputs, self.initial_state(n), tf.zeros([n], tf.bool), 1)
        return outputs

    def unroll(self, inputs: Any, state: State, episode_starts: Any, length: int) -> tuple[Any, State]:
        """Outputs ``[S·L, F_out]`` of ``S`` sequences of ``length`` rows each, and the state after their last step.

        ``state``: ``{name: [S, units]}``, each sequence's state before its first step (or ``[S·L, units]``
        per row: its first row of each sequence is taken). ``episode_starts``: ``[S·L]`` flags; a set flag
        zeroes the state before that step.
        """
        x = inputs if self.features is None else self.features(inputs)
        width = x.shape[-1]
        x = tf.reshape(x, [-1, length, width])
        starts = tf.reshape(tf.cast(episode_starts, tf.bool), [-1, length, 1])
        rows = tf.shape(x)[0]
        states = [_sequence_starts(state[name], rows, length) for name in self.state_names]
        outputs = []
        for t in range(length):
            states = [tf.where(starts[:, t], tf.zeros_like(s), s) for s in states]
            output, states = self.cell(x[:, t], states)
            states = list(states) if isinstance(states, (list, tuple)) else [states]
            outputs.append(output)
        y = tf.reshape(tf.stack(outputs, axis=1), [-1, self.units])
        if self.after is not None:
            y = self.after(y)
        return y, dict(zip(self.state_names, states))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "features": _serialize(self.features), "after": _serialize(self.after), "units": self.units,
            "cell": self.cell_type, "seed": self.seed, "cell_config": self.cell.get_config(),
        }


def _sequence_starts(state: Any, sequences: Any, length: int) -> Any:
    """``[S, units]`` from a state given per sequence (``[S, units]``) or per row (``[S·L, units]``: every L-th)."""
    if length == 1:
        return state
    return tf.cond(tf.shape(state)[0] == sequences, lambda: state, lambda: state[::length])


def _layer_or_none(layer: Any) -> Any:
    if layer is None or isinstance(layer, keras.layers.Layer):
        return layer
    if isinstance(layer, Mapping):
        return keras.saving.deserialize_keras_object(layer)
    raise TypeError(f"expected a Keras layer or None; got {type(layer).__name__}.")


def _serialize(layer: Any) -> Any:
    return None if layer is None else keras.saving.serialize_keras_object(layer)


def recurrent(features: Any = None, units: int = 64, cell: str = "lstm", *, after: Any = None,
              seed: int | None = None, name: str = "recurrent") -> Recurrent:
    """A recurrent core after ``features`` (an MLP, a CNN, any Keras layer; ``None``: the flat observations).

    ``TRPO(policy_network=recurrent(keras_trpo.networks.mlp((64,)), units=64))`` gives the policy
    memory; the model detects it and carries the state (``model.initial_state``, ``Rollouts``).
    """
    if isinstance(features, Recurrent):
        raise ValueError("features is already a Recurrent network; pass its feature network instead.")
    return Recurrent(features, int(units), check_cell(cell), after=after, seed=seed, name=name)


def is_recurrent(network: Any) -> bool:
    """Whether ``network`` is a :class:`Recurrent`, or contains a Keras ``LSTM``/``GRU``/``RNN`` layer."""
    return isinstance(network, Recurrent) or any(isinstance(layer, keras.layers.RNN) for layer in _layers(network))


def as_recurrent(network: Any, which: str = "network") -> Recurrent:
    """``network`` as a :class:`Recurrent`: itself, or a ``Sequential`` split around its one LSTM/GRU layer.

    The split keeps the given layers (and so their weights): the layers before the recurrent one are
    ``features``, those after it ``after``. Anything else is refused in one line.
    """
    if isinstance(network, Recurrent):
        return network
    found = [(i, layer) for i, layer in enumerate(getattr(network, "layers", [])) if isinstance(layer, keras.layers.RNN)]
    supported = [layer for _, layer in found if isinstance(layer.cell, tuple(CELLS.values()))]
    if not isinstance(network, keras.Sequential) or len(found) != 1 or len(supported) != 1:
        raise ValueError(
            f"{which} has recurrent layers keras_trpo cannot step with a state: it takes a keras.Sequential with one "
            "keras.layers.LSTM or GRU layer (between per-step layers), or keras_trpo.networks.recurrent(features, "
            f"units=..., cell='lstm'); got {type(network).__name__} with {[type(l).__name__ for _, l in found]}.")
    index, layer = found[0]
    if layer.return_sequences or layer.go_backwards or getattr(layer, "stateful", False):
        raise ValueError(f"{which}'s {type(layer).__name__} must keep return_sequences=False, go_backwards=False and "
                         "stateful=False: keras_trpo steps its cell and carries the state itself.")
    before, later = network.layers[:index], network.layers[index + 1:]
    return Recurrent(
        keras.Sequential(before, name=f"{network.name}_features") if before else None, layer.cell.units, layer.cell,
        after=keras.Sequential(later, name=f"{network.name}_after") if later else None, name=network.name,
    )


def _layers(network: Any) -> list[Any]:
    """``network`` and every layer nested in it: in models (``layers``), wrappers (``Bidirectional``,
    ``TimeDistributed``: ``layer``, ``forward_layer``) and keras_trpo's ``Combined`` (``encoders``)."""
    found, stack = [], [network]
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
        stack.extend(inner for inner in (getattr(layer, name, None) for name in ("layer", "forward_layer", "backward_layer"))
                     if isinstance(inner, keras.layers.Layer))
        encoders = getattr(layer, "encoders", None)
        stack.extend(encoders.values() if isinstance(encoders, Mapping) else [])
    return found


def prefixed(state: State, which: str) -> State:
    """``{"h": …}`` of one tower as ``{"policy_h": …}`` (``which``: ``"policy"`` or ``"value"``)."""
    return {f"{which}_{name}": value for name, value in state.items()}


def part(states: State, which: str) -> State:
    """One tower's entries of a model's state, without the prefix (the inverse of :func:`prefixed`)."""
    start = f"{which}_"
    return {name[len(start):]: value for name, value in states.items() if name.startswith(start)}


def check_state_names(observation_names: Any, sizes: Mapping[str, int], start_key: str) -> None:
    """One ValueError line if an observation key equals, ignoring case, a state input name of the exported signatures
    (TensorFlow lowercases signature input names): raised when the model is built, not after training."""
    names = {*sizes, start_key}
    clash = sorted(name for name in observation_names if str(name).lower() in names)
    if clash:
        raise ValueError(f"observation keys {clash} clash (ignoring case) with the state inputs {sorted(names)} of a "
                         "recurrent model's signatures; rename them with a gymnasium.ObservationWrapper.")


def check_call_state(state: Any, episode_starts: Any, sizes: Mapping[str, int], n: Any) -> None:
    """One ValueError line unless ``state`` is ``{name: [n, units]}`` for every name of ``sizes`` (or None) and
    ``episode_starts`` is ``[n]`` (or None); a model without memory (``sizes`` empty) takes neither."""
    if not sizes:
        raise ValueError("state= and episode_starts= are for a recurrent model; this one has no memory "
                         "(build it with recurrent=True or a recurrent network).")
    if state is not None:
        if not isinstance(state, Mapping) or set(state) != set(sizes):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"state must be a dict with keys {sorted(sizes)} (model.initial_state(n), or the state "
                             f"the previous call returned); got {got}.")
        for name, units in sizes.items():
            shape = tuple(np.shape(state[name]))
            if len(shape) != 2 or shape[1] != units or (n is not None and shape[0] is not None and shape[0] != n):
                raise ValueError(f"state[{name!r}] has shape {list(shape)}; expected [{n}, {units}] (one row per "
                                 "observation).")
    if episode_starts is not None:
        shape = tuple(np.shape(episode_starts))
        if len(shape) != 1 or (n is not None and shape[0] is not None and shape[0] != n):
            raise ValueError(f"episode_starts has shape {list(shape)}; expected [{n}] (one flag per observation).")
