"""Distribution heads: one per gymnasium action space.

A head knows how many raw outputs the policy network must produce, how to turn
those outputs into a TensorFlow Probability distribution whose batch shape is
``[N]`` (event dimensions are reduced, so ``log_prob`` returns ``[N]``), and what
a valid batch of actions looks like. It knows nothing about training.

| action space    | distribution                                   | network outputs |
|-----------------|------------------------------------------------|-----------------|
| ``Discrete(n)`` | ``Categorical(logits)``                        | ``n`` logits    |
| ``Box(shape)``  | diagonal ``Normal(mean, exp(log_std))``,       | ``prod(shape)`` |
|                 | ``log_std`` a state-independent parameter      | means           |
| ``MultiDiscrete(nvec)`` | independent ``Categorical`` per dimension | ``sum(nvec)``  |
| ``MultiBinary(n)`` | independent ``Bernoulli(logits)``           | ``prod(n)``     |

The diagonal Gaussian with a state-independent log standard deviation is the
parameterisation of the TRPO paper (Schulman et al., 2015, appendix D) and of
sb3-contrib.

Example:

>>> import gymnasium
>>> head = make_head(gymnasium.spaces.Discrete(3))
>>> dist = head.distribution({"logits": tf.zeros([5, 3])})
>>> dist.log_prob(tf.constant([0, 1, 2, 0, 1])).shape
TensorShape([5])
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import gymnasium
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo.masking import MASK_LOGIT
from keras_trpo.validation import float_dtype

tfd = tfp.distributions

SUPPORTED_ACTION_SPACES = ("Discrete", "Box", "MultiDiscrete", "MultiBinary")

# The padding entries of MultiDiscrete factors narrower than the widest one get the logit of an illegal
# action, keras_trpo.masking.MASK_LOGIT (-1e9): an exact 0 probability that stays finite.

#: Distribution parameters by name (``logits``; ``mean`` and ``log_std``): tensors, or numpy arrays
#: for the acting path. TensorFlow has no type stubs, so a tensor is ``Any`` to a type checker.
Params = Mapping[str, Any]


class PolicyHead:
    """Base class: maps raw network outputs to a distribution.

    Attributes:
        action_space: the gymnasium space the head samples from.
        action_shape: shape of one action (``()`` for ``Discrete``).
        num_outputs: width of the policy network's last layer.
        has_log_std: whether the head needs a state-independent ``log_std``.
        integer_actions: whether actions are integers (else floats).
    """

    has_log_std = False
    integer_actions = True
    #: Whether the head takes action masks (:mod:`keras_trpo.masking`): logits over a finite set of actions.
    maskable = False
    #: Whether the policy's variance depends on the state (``use_sde=True``: :mod:`keras_trpo.exploration`).
    state_dependent = False
    num_outputs: int  # set by each subclass

    def __init__(self, action_space: gymnasium.spaces.Space) -> None:
        self.action_space = action_space
        self.action_shape: tuple[int, ...] = tuple(action_space.shape or ())

    # -- parameters ------------------------------------------------------
    def params(self, outputs: Any, log_std: Any = None, action_mask: Any = None) -> dict[str, Any]:
        """Returns the named distribution parameters for network ``outputs``.

        ``action_mask`` (maskable heads; ``[N, num_outputs]`` bool or 0/1): illegal logits become
        :data:`~keras_trpo.masking.MASK_LOGIT`, so every method of the head is over the legal actions.
        """
        return {"logits": masked_logits(outputs, action_mask)}

    def numpy_params(
        self, outputs: np.ndarray, log_std: np.ndarray | None = None, action_mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Numpy twin of :meth:`params` (used by the fast acting path)."""
        return {"logits": numpy_masked_logits(outputs, action_mask)}

    def distribution(self, params: Params) -> tfp.distributions.Distribution:
        """Returns a ``tfd.Distribution`` with batch shape ``[N]``."""
        raise NotImplementedError

    def mode(self, params: Params) -> Any:
        """Returns the deterministic (most likely) action, ``[N, *action_shape]``."""
        raise NotImplementedError

    def kl_hessian_product(self, params: Params, tangent: Params) -> dict[str, Any]:
        """``M u`` per row: ``M`` the Hessian of KL(old‖new) in the parameters at ``new == old == params``.

        ``tangent`` is shaped like ``params``; so is the result. With ``J`` the Jacobian of
        the parameters in θ, the Fisher matrix is ``Jᵀ M J`` (:func:`keras_trpo.ops.gauss_newton_product_fn`).
        """
        raise NotImplementedError

    def cast_actions(self, actions: Any) -> Any:
        """Casts an action batch to the dtype ``log_prob`` expects."""
        return tf.cast(actions, tf.int32) if self.integer_actions else tf.cast(actions, float_dtype())

    def numpy_sample(self, params: Params, rng: np.random.Generator) -> np.ndarray:
        """Samples actions with numpy from numpy parameters (fast acting path)."""
        raise NotImplementedError

    def numpy_sampler(self, log_std: np.ndarray | None = None) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        """``sample(outputs, rng)``: :meth:`numpy_sample` of :meth:`numpy_params` with ``log_std`` held fixed.

        The acting path calls it once per env step with the same weights for a whole batch, so a head
        may compute what depends on ``log_std`` alone once (:class:`DiagGaussianHead` does).
        """
        return lambda outputs, rng: self.numpy_sample(self.numpy_params(outputs, log_std), rng)

    def stateless_sample(self, params: Params, seed: Any) -> Any:
        """One action per row with ``tf.random.stateless_*`` ops (the exported ``sample`` signature).

        ``seed`` is a shape-[2] int32 tensor; the same seed gives the same actions.
        Actions are in the env's convention (``start`` offsets added, unclipped).
        """
        raise NotImplementedError


class CategoricalHead(PolicyHead):
    """``Discrete(n)`` → ``Categorical(logits)``; actions are ``start + index``."""

    maskable = True

    def __init__(self, action_space: gymnasium.spaces.Discrete) -> None:
        super().__init__(action_space)
        self.num_outputs = int(action_space.n)
        self.start = int(action_space.start)

    def distribution(self, params: Params) -> tfp.distributions.Distribution:
        return tfd.Categorical(logits=params["logits"])

    def mode(self, params: Params) -> Any:
        return tf.argmax(params["logits"], axis=-1, output_type=tf.int32) + self.start

    def kl_hessian_product(self, params: Params, tangent: Params) -> dict[str, Any]:
        # M = diag(p) − ppᵀ over the logits.
        return {"logits": _softmax_hessian_product(tf.nn.softmax(params["logits"]), tangent["logits"])}

    def cast_actions(self, actions: Any) -> Any:
        return tf.cast(actions, tf.int32) - self.start

    def numpy_sample(self, params: Params, rng: np.random.Generator) -> np.ndarray:
        return _numpy_categorical(params["logits"], rng) + self.start

    def stateless_sample(self, params: Params, seed: Any) -> Any:
        return tf.random.stateless_categorical(params["logits"], 1, seed=seed, dtype=tf.int32)[:, 0] + self.start


class MultiCategoricalHead(PolicyHead):
    """``MultiDiscrete(nvec)`` (1-D ``nvec``) → independent Categoricals.

    The factors are packed as one ``Categorical`` over ``[N, len(nvec), max(nvec)]``
    padded logits, wrapped in ``Independent`` so KL and entropy sum over factors. A mask is
    ``[N, sum(nvec)]``, the factors' masks concatenated, like the flat logits.
    """

    maskable = True

    def __init__(self, action_space: gymnasium.spaces.MultiDiscrete) -> None:
        super().__init__(action_space)
        nvec = np.asarray(action_space.nvec)
        if nvec.ndim != 1:
            raise TypeError(
                f"MultiDiscrete action spaces must have a 1-D nvec; got nvec with shape {nvec.shape}."
            )
        self.nvec = [int(n) for n in nvec]
        self.start = np.asarray(action_space.start, dtype=np.int64)
        self.num_outputs = int(sum(self.nvec))
        width = max(self.nvec)
        # Static gather pattern from the flat logits to the padded [K, width] grid.
        index = np.full((len(self.nvec), width), self.num_outputs, dtype=np.int32)
        offset = 0
        for k, n in enumerate(self.nvec):
            index[k, :n] = np.arange(offset, offset + n)
            offset += n
        self._gather_index = index
        #: Where each flat logit sits in the row-major padded [K, width] grid.
        self._flat_position = np.concatenate([k * width + np.arange(n) for k, n in enumerate(self.nvec)]).astype(np.int32)

    def _padded_logits(self, logits: Any) -> Any:
        pad = tf.fill(tf.stack([tf.shape(logits)[0], 1]), tf.constant(MASK_LOGIT, logits.dtype))
        return tf.gather(tf.concat([logits, pad], axis=-1), self._gather_index, axis=-1)

    def distribution(self, params: Params) -> tfp.distributions.Distribution:
        return tfd.Independent(
            tfd.Categorical(logits=self._padded_logits(params["logits"])), reinterpreted_batch_ndims=1
        )

    def mode(self, params: Params) -> Any:
        index = tf.argmax(self._padded_logits(params["logits"]), axis=-1, output_type=tf.int32)
        return index + tf.constant(self.start, tf.int32)

    def kl_hessian_product(self, params: Params, tangent: Params) -> dict[str, Any]:
        # Block-diagonal: diag(p_k) − p_k p_kᵀ per factor k. The padding has p = 0, so its
        # tangent entries (zeros) contribute nothing and its products are dropped by the gather back.
        logits, u = params["logits"], tangent["logits"]
        p = tf.nn.softmax(self._padded_logits(logits))  # [N, K, width]
        padded_u = tf.gather(tf.concat([u, tf.zeros_like(u[:, :1])], axis=-1), self._gather_index, axis=-1)
        product = tf.reshape(_softmax_hessian_product(p, padded_u), [tf.shape(logits)[0], -1])
        return {"logits": tf.gather(product, self._flat_position, axis=-1)}

    def cast_actions(self, actions: Any) -> Any:
        return tf.cast(actions, tf.int32) - tf.constant(self.start, tf.int32)

    def numpy_sample(self, params: Params, rng: np.random.Generator) -> np.ndarray:
        logits = params["logits"]
        parts, offset = [], 0
        for n in self.nvec:
            parts.append(_numpy_categorical(logits[:, offset : offset + n], rng))
            offset += n
        return np.stack(parts, axis=-1) + self.start

    def stateless_sample(self, params: Params, seed: Any) -> Any:
        padded = self._padded_logits(params["logits"])  # [N, K, max(nvec)]; padding has probability 0
        k, width = len(self.nvec), padded.shape[-1]
        flat = tf.random.stateless_categorical(tf.reshape(padded, [-1, width]), 1, seed=seed, dtype=tf.int32)
        return tf.reshape(flat, [-1, k]) + tf.constant(self.start, tf.int32)


class BernoulliHead(PolicyHead):
    """``MultiBinary(n)`` → independent ``Bernoulli(logits)`` over ``n`` bits."""

    def __init__(self, action_space: gymnasium.spaces.Space) -> None:
        super().__init__(action_space)
        self.num_outputs = int(np.prod(self.action_shape))

    def params(self, outputs: Any, log_std: Any = None, action_mask: Any = None) -> dict[str, Any]:
        return {"logits": tf.reshape(outputs, [-1, *self.action_shape])}

    def numpy_params(
        self, outputs: np.ndarray, log_std: np.ndarray | None = None, action_mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        return {"logits": outputs.reshape(-1, *self.action_shape)}

    def distribution(self, params: Params) -> tfp.distributions.Distribution:
        return tfd.Independent(
            tfd.Bernoulli(logits=params["logits"], dtype=tf.int32),
            reinterpreted_batch_ndims=len(self.action_shape),
        )

    def mode(self, params: Params) -> Any:
        return tf.cast(params["logits"] > 0, tf.int32)

    def kl_hessian_product(self, params: Params, tangent: Params) -> dict[str, Any]:
        # M = diag(p(1 − p)) per bit.
        p = tf.sigmoid(params["logits"])
        return {"logits": p * (1.0 - p) * tangent["logits"]}

    def numpy_sample(self, params: Params, rng: np.random.Generator) -> np.ndarray:
        probs = 1.0 / (1.0 + np.exp(-params["logits"]))
        return (rng.random(probs.shape) < probs).astype(np.int8)

    def stateless_sample(self, params: Params, seed: Any) -> Any:
        logits = params["logits"]
        uniform = tf.random.stateless_uniform(tf.shape(logits), seed=seed, dtype=logits.dtype)
        return tf.cast(uniform < tf.sigmoid(logits), tf.int32)


class DiagGaussianHead(PolicyHead):
    """``Box(shape)`` → ``Normal(mean, exp(log_std))`` independent over ``shape``.

    Samples are not squashed or clipped: the log-probability of the action the
    environment received must be the one the surrogate uses. Clip actions to the
    bounds at the environment boundary (serving clips, see ``export``).
    """

    has_log_std = True
    integer_actions = False

    def __init__(self, action_space: gymnasium.spaces.Space) -> None:
        super().__init__(action_space)
        self.num_outputs = int(np.prod(self.action_shape)) if self.action_shape else 1

    def params(self, outputs: Any, log_std: Any = None, action_mask: Any = None) -> dict[str, Any]:
        mean = tf.reshape(outputs, [-1, *self.action_shape])
        log_std = tf.reshape(log_std, self.action_shape)
        return {"mean": mean, "log_std": tf.broadcast_to(log_std, tf.shape(mean))}

    def numpy_params(
        self, outputs: np.ndarray, log_std: np.ndarray | None = None, action_mask: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        mean = outputs.reshape(-1, *self.action_shape)
        assert log_std is not None, "a Box head's parameters include the model's log_std"
        return {"mean": mean, "log_std": np.broadcast_to(log_std.reshape(self.action_shape), mean.shape)}

    def distribution(self, params: Params) -> tfp.distributions.Distribution:
        return tfd.Independent(
            tfd.Normal(loc=params["mean"], scale=tf.exp(params["log_std"])),
            reinterpreted_batch_ndims=len(self.action_shape),
        )

    def mode(self, params: Params) -> Any:
        return params["mean"]

    def kl_hessian_product(self, params: Params, tangent: Params) -> dict[str, Any]:
        # Per dimension: 1/σ² for the mean, 2 for log σ, no cross term (it is ∝ μ_new − μ_old = 0).
        return {"mean": tf.exp(-2.0 * params["log_std"]) * tangent["mean"], "log_std": 2.0 * tangent["log_std"]}

    def numpy_sample(self, params: Params, rng: np.random.Generator) -> np.ndarray:
        mean = params["mean"]
        noise = rng.standard_normal(mean.shape).astype(mean.dtype)
        return mean + np.exp(params["log_std"]) * noise

    def numpy_sampler(self, log_std: np.ndarray | None = None) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        # exp(log_std) once per batch shape instead of a broadcast and an exp per env step (issue 26): the
        # same exp of the same broadcast array as numpy_params + numpy_sample, so the same actions bit for bit.
        stds: dict[tuple[int, ...], np.ndarray] = {}

        def sample(outputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            mean = outputs.reshape(-1, *self.action_shape)
            std = stds.get(mean.shape)
            if std is None:
                std = stds[mean.shape] = np.exp(self.numpy_params(outputs, log_std)["log_std"])
            return mean + std * rng.standard_normal(mean.shape).astype(mean.dtype)

        return sample

    def stateless_sample(self, params: Params, seed: Any) -> Any:
        mean = params["mean"]
        noise = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=mean.dtype)
        return mean + tf.exp(params["log_std"]) * noise


def make_head(action_space: gymnasium.spaces.Space) -> PolicyHead:
    """Returns the distribution head for a gymnasium action space.

    Raises:
        TypeError: the space is not one of Discrete, Box, MultiDiscrete, MultiBinary.
    """
    spaces = gymnasium.spaces
    if isinstance(action_space, spaces.Discrete):
        return CategoricalHead(action_space)
    if isinstance(action_space, spaces.Box):
        if not np.issubdtype(action_space.dtype, np.floating):
            raise TypeError(
                f"Box action spaces must have a floating dtype; got {action_space.dtype}. "
                "Use Discrete or MultiDiscrete for integer actions."
            )
        return DiagGaussianHead(action_space)
    if isinstance(action_space, spaces.MultiDiscrete):
        return MultiCategoricalHead(action_space)
    if isinstance(action_space, spaces.MultiBinary):
        return BernoulliHead(action_space)
    raise TypeError(
        f"Unsupported action space {type(action_space).__name__} ({action_space!r}). "
        f"Supported action spaces: {', '.join(SUPPORTED_ACTION_SPACES)}."
    )


def masked_logits(logits: Any, action_mask: Any = None) -> Any:
    """``logits`` with the illegal entries of ``action_mask`` set to ``MASK_LOGIT`` (``None``: unchanged, the same tensor).

    ``tf.where`` passes no gradient to an illegal logit, so the Fisher and the step ignore them.
    """
    if action_mask is None:
        return logits
    legal = tf.cast(action_mask, tf.bool)
    return tf.where(legal, logits, tf.constant(MASK_LOGIT, logits.dtype))


def numpy_masked_logits(logits: np.ndarray, action_mask: np.ndarray | None = None) -> np.ndarray:
    """Numpy twin of :func:`masked_logits`."""
    if action_mask is None:
        return logits
    return np.where(np.asarray(action_mask, bool), logits, np.asarray(MASK_LOGIT, logits.dtype))


def _softmax_hessian_product(p: Any, u: Any) -> Any:
    """``(diag(p) − ppᵀ) u`` along the last axis: the Hessian of KL(old‖new) in the new logits, at new == old."""
    return p * u - p * tf.reduce_sum(p * u, axis=-1, keepdims=True)


def _numpy_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Samples one index per row of ``logits`` with the Gumbel-max trick."""
    gumbel = -np.log(-np.log(rng.random(logits.shape)))
    return np.argmax(logits + gumbel, axis=-1)
