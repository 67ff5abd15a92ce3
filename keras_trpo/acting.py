"""Fast action selection for collection: a numpy snapshot of the current weights.

A call into TensorFlow has a fixed cost that is many times that of the same
64×64 MLP in numpy, and often more than the environment step itself (measured in
benchmarks/README.md, "Cost of acting per env step"). :class:`PolicySnapshot`
reads the weights once per iteration and runs the forward pass of both networks
in numpy, batched over sub-environments. This is safe for TRPO: the
log-probabilities used by the update are recomputed in TensorFlow from the
stored actions, so only the sampling happens here.

Custom networks (``TRPO(policy_network=...)``), non-``Box`` observations and
activations without a numpy twin act through one compiled TensorFlow function
(``TRPO.acting_function``), called once per vector step on all sub-environments'
observations in their own dtypes and traced once per run; the result is the same,
only slower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import gymnasium
import numpy as np

from keras_trpo import actor_critic
from keras_trpo.policies import numpy_masked_logits

if TYPE_CHECKING:
    from keras_trpo.model import TRPO

#: Observations as a vector env returns them: one array, or a dict of arrays for a ``Dict`` space.
Observations = Any
#: One numpy layer of :func:`keras_trpo.actor_critic.numpy_mlp`: ``(kernel, bias, activation or None)``.
NumpyLayer = tuple[np.ndarray, np.ndarray, Any]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


#: Numpy twins of Keras activations, by name (``None``: linear); other activations act through TensorFlow.
NUMPY_ACTIVATIONS: dict[Any, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "linear": lambda x: x,
    None: lambda x: x,
    "sigmoid": _sigmoid,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
}


def _stacked_hidden_layers(policy: Sequence[NumpyLayer], value: Sequence[NumpyLayer]) -> list[NumpyLayer] | None:
    """Both towers' hidden layers as one ``[2, ...]`` stack, when they have the same shapes and activation.

    ``np.matmul(x, stack([Wp, Wv]))`` is one call for the two towers' layer (and ``[2, n, k] @ [2, k, m]``
    for the next ones); numpy runs the same matrix product per tower, so the outputs are those of the
    separate products bit for bit (tests/test_collection_fast_paths.py), in half the numpy calls of each
    env step. ``None`` when the towers differ (e.g. ``value_hidden_units`` other than ``hidden_units``).
    """
    if len(policy) != len(value) or len(policy) < 2:
        return None
    stacked = []
    for (kernel_p, bias_p, activation_p), (kernel_v, bias_v, activation_v) in zip(policy[:-1], value[:-1]):
        if kernel_p.shape != kernel_v.shape or activation_p is not activation_v:
            return None
        stacked.append((np.stack([kernel_p, kernel_v]), np.stack([bias_p, bias_v])[:, None, :], activation_p))
    return stacked


class PolicySnapshot:
    """The policy and value networks of ``model`` frozen at the current weights.

    Args:
        model: a built :class:`keras_trpo.TRPO`.

    Attributes:
        version: the model's ``policy_version`` when the snapshot was taken.
    """

    _tf: Callable[[Any], tuple[Any, Any]] | None  # TRPO.acting_function(), or None for the numpy MLPs
    _step: Callable[..., tuple[Any, Any, Any]] | None  # TRPO.step_function() of a recurrent model, else None

    def __init__(self, model: TRPO) -> None:
        self.head = model.head
        self.version = model.policy_version
        self.log_std = None if model.log_std is None else model.log_std.numpy()
        self._sample = self.head.numpy_sampler(self.log_std)
        self._spec = model.observation_spec
        #: A recurrent model's one-step function (state in, next state out), else None.
        self._step = model.step_function() if model.is_recurrent else None
        if self._step is not None:
            self._tf = None
            return
        activation = NUMPY_ACTIVATIONS.get(model.activation)
        box = not self._spec.structured and isinstance(self._spec.space, gymnasium.spaces.Box)
        if activation is None or not box or any(model.custom_networks):
            self._tf = model.acting_function()
            return
        self._tf = None
        self._obs_size = self._spec.flat_size
        self._normalize = None if model.normalizer is None else model.normalizer.numpy_transform()
        self._policy = actor_critic.numpy_mlp(model.policy_layers, model.policy_output, activation)
        self._value = actor_critic.numpy_mlp(model.value_layers, model.value_output, activation)
        self._stacked = _stacked_hidden_layers(self._policy, self._value)

    def _features(self, observations: Observations) -> np.ndarray:
        x = np.asarray(observations, dtype=np.float32).reshape(-1, self._obs_size)
        return x if self._normalize is None else self._normalize(x)

    @staticmethod
    def _mlp(layers: Sequence[NumpyLayer], x: np.ndarray) -> np.ndarray:
        for kernel, bias, activation in layers:
            x = x @ kernel
            x += bias  # in place: one array fewer per layer, the same sums
            if activation is not None:
                x = activation(x)
        return x

    def outputs_and_values(self, observations: Observations) -> tuple[np.ndarray, np.ndarray]:
        """Raw policy outputs ``[n, num_outputs]`` and values ``[n]``."""
        if self._tf is not None:
            outputs, values = self._tf(self._spec.numpy(observations))
            return outputs.numpy(), values.numpy()
        x = self._features(observations)
        if self._stacked is None:
            return self._policy_head_outputs(self._mlp(self._policy[:-1], x)), self._mlp(self._value, x)[:, 0]
        hidden = self._mlp(self._stacked, x)  # [2, n, units]: the policy's hidden layers, then the value's
        return self._policy_head_outputs(hidden[0]), self._mlp(self._value[-1:], hidden[1])[:, 0]

    def _policy_head_outputs(self, features: np.ndarray) -> np.ndarray:
        """Numpy twin of ``Forward._policy_head_outputs``: the output layer, then (``use_sde``) the features."""
        outputs = self._mlp(self._policy[-1:], features)
        return np.concatenate([outputs, features], axis=1) if self.head.state_dependent else outputs

    def values(self, observations: Observations, state: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """``V(s)`` for a batch of observations, ``[n]`` (the policy network is not run, unless recurrent).

        A recurrent model's values continue from ``state`` (no episode starts).
        """
        if self._step is not None:
            if state is None:
                raise ValueError("a recurrent model's values continue from its state: pass state=.")
            return self.step(observations, state, np.zeros(len(next(iter(state.values()))), bool))[1]
        if self._tf is not None:
            return self.outputs_and_values(observations)[1]
        return self._mlp(self._value, self._features(observations))[:, 0]

    def distribution_params(self, observations: Observations, action_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Numpy twin of ``model.distribution_params``."""
        return self.head.numpy_params(self.outputs_and_values(observations)[0], self.log_std, action_mask)

    def step(self, observations: Observations, state: dict[str, np.ndarray], episode_starts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """A recurrent model's ``(policy outputs, values, next state)`` from ``state`` (numpy dicts)."""
        if self._step is None:
            raise TypeError("PolicySnapshot.step is for a recurrent model; this one has no memory.")
        outputs, values, next_state = self._step(self._spec.numpy(observations), state, episode_starts)
        return outputs.numpy(), values.numpy(), {name: value.numpy() for name, value in next_state.items()}

    def act_recurrent(
        self, observations: Observations, state: dict[str, np.ndarray], episode_starts: np.ndarray,
        rng: np.random.Generator, action_mask: np.ndarray | None = None, exploration: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """:meth:`act` of a recurrent model: ``(actions, values, next state)``."""
        outputs, values, next_state = self.step(observations, state, episode_starts)
        return self._actions(outputs, rng, action_mask, exploration), values, next_state

    def act(
        self, observations: Observations, rng: np.random.Generator, action_mask: np.ndarray | None = None,
        exploration: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Samples actions (legal ones only, given bool ``action_mask [n, num_outputs]``) and returns ``(actions, values)``.

        ``exploration`` (``use_sde``): the sub-envs' exploration matrices (:meth:`exploration_matrices`); the
        actions are then ``mean + φ·E`` instead of an independent draw (:mod:`keras_trpo.exploration`).
        """
        outputs, values = self.outputs_and_values(observations)
        return self._actions(outputs, rng, action_mask, exploration), values

    def _actions(self, outputs: np.ndarray, rng: np.random.Generator, action_mask: np.ndarray | None,
                 exploration: np.ndarray | None) -> np.ndarray:
        if exploration is not None:
            return self.head.explore(outputs, exploration)
        if action_mask is not None:  # a maskable head's outputs are its logits
            outputs = numpy_masked_logits(outputs, action_mask)
        return self._sample(outputs, rng)

    def exploration_matrices(self, num_envs: int, rng: np.random.Generator) -> np.ndarray:
        """``use_sde``: new exploration matrices ``[num_envs, L, d]`` from the snapshot's ``log_std``."""
        return self.head.exploration_matrices(self.log_std, num_envs, rng)

