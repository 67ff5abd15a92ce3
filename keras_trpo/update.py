"""The TRPO update as functions: the policy step (steps 1–5) and its metrics.

``TRPO.train_step`` calls these in order; each takes the model (an :class:`ActorCritic`:
this module sits below ``keras_trpo.model``) and a :class:`~keras_trpo.distribute.Replicas`.
With one device, ``Replicas`` runs every function as a plain call, so the single-device
and the data-parallel update are the same code. Steps 4 and 5 return small named
tuples (:class:`FullStep`, :class:`LineSearch`) from which :func:`policy_metrics` builds the logs.
Step 6, the critic, is :mod:`keras_trpo.critic`.

Reference: Schulman et al., "Trust Region Policy Optimization", ICML 2015
(section 6 and appendix C); the step and line search follow sb3-contrib's
``TRPO.train`` and OpenAI baselines' ``trpo_mpi``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo import errors, ops
from keras_trpo.distribute import Replicas
from keras_trpo.validation import float_dtype

tfd = tfp.distributions
Metrics = dict[str, tf.Tensor]

#: Folded into the FVP subsample's seed, so that its draws differ from the critic's shuffles.
FVP_SEED_SALT = 0x46565052  # "FVPR"

#: The forms of the Fisher-vector product (``TRPO(fisher_product=...)``), the default first.
FISHER_PRODUCTS = ("double_backprop", "gauss_newton")

#: The metrics of ``train_step``, in this order.
METRICS = (
    "kl",
    "surrogate_improvement",
    "expected_improvement",
    "line_search_steps",
    "step_fraction",
    "step_accepted",
    "rejection_reason",
    "cg_residual",
    "cg_iterations",
    "cg_breakdown",
    "entropy",
    "value_loss",
    "explained_variance",
)


class ActorCritic(Protocol):
    """What the update reads and writes of the model (:class:`keras_trpo.TRPO`)."""

    head: Any  # a keras_trpo.policies head
    normalizer: Any  # a RunningNormalization, or None
    observation_spec: Any  # a keras_trpo.observations.ObservationSpec
    optimizer: Any  # the compiled Keras optimizer: it trains the critic
    seed_generator: keras.random.SeedGenerator
    value_epochs: int
    value_batch_size: int

    @property
    def policy_variables(self) -> list[keras.Variable]: ...

    @property
    def value_variables(self) -> list[keras.Variable]: ...

    sequence_length: int

    @property
    def is_recurrent(self) -> bool: ...

    def distribution_params(self, observations: Any, action_mask: Any = None, memory: Any = None
                            ) -> dict[str, tf.Tensor]: ...

    def distribution(self, observations: Any, action_mask: Any = None, memory: Any = None
                     ) -> tfp.distributions.Distribution: ...

    def value(self, observations: Any, memory: Any = None) -> tf.Tensor: ...

    def value_features(self, observations: Any) -> Any: ...

    def value_from_features(self, features: Any) -> tf.Tensor: ...

    @property
    def custom_networks(self) -> tuple[bool, bool]: ...


# --------------------------------------------------------------------------
# Before the update: is the batch usable at all?
# --------------------------------------------------------------------------
def rejection_before_update(
    replicas: Replicas, batch: Mapping[str, Any], head: Any, model_version: tf.Variable
) -> tf.Tensor:
    """``rejection_reason`` decided before any compute: 0, non-finite (1) or stale (4).

    The stale check is also made on the host before the step (``trainer``); this
    in-graph twin is what holds when ``train_step`` runs inside a compiled
    function, where XLA drops ``tf.debugging`` assertions.
    """
    finite = replicas.mean(
        # Integer observations (a uint8 image, a Discrete entry) are always finite.
        lambda *values: tf.cast(
            tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values if v.dtype.is_floating]), float_dtype()
        ),
        *tf.nest.flatten(batch["observations"]),
        *[batch[key] for key in ("advantages", "returns")],
        *([] if head.integer_actions else [batch["actions"]]),
    )
    fresh = tf.constant(1.0, float_dtype())
    if "policy_version" in batch:
        version = tf.convert_to_tensor(model_version)
        fresh = replicas.mean(lambda v: tf.cast(tf.equal(v, version), float_dtype()), batch["policy_version"])
    return tf.where(fresh < 1.0, errors.STALE, tf.where(finite < 1.0, errors.NON_FINITE, errors.ACCEPTED))


def normalized(replicas: Replicas, advantages: Any, weights: Any = None) -> Any:
    """Advantages standardized over the whole batch: ``(A − mean) / (std + 1e-8)``.

    ``weights`` (a recurrent batch's ``sequence_mask`` as 0/1): the moments are over the real steps only.
    """
    mean, variance = replicas.moments(advantages) if weights is None else weighted_moments(replicas, advantages, weights)
    return replicas.run(lambda a: (a - mean) / (tf.sqrt(variance) + 1e-8), advantages)


def weighted_mean(replicas: Replicas, fn: Callable[[Any], tf.Tensor], values: Any, weights: Any) -> tf.Tensor:
    """``Σ w·fn(values) / Σ w`` over the whole batch (the sums pooled over replicas, so shares may differ in Σ w)."""
    sums = replicas.mean(lambda v, w: tf.stack([tf.reduce_sum(fn(v) * w), tf.reduce_sum(w)]), values, weights)
    return sums[0] / tf.maximum(sums[1], 1e-12)


def weighted_moments(replicas: Replicas, values: Any, weights: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(mean, variance)`` of ``values`` over the whole batch's weighted rows (:func:`weighted_mean`)."""
    mean = weighted_mean(replicas, lambda x: x, values, weights)
    return mean, weighted_mean(replicas, lambda x: tf.square(x - mean), values, weights)


# --------------------------------------------------------------------------
# Steps 1, 2 and 5: the surrogate and the KL against the old policy
# --------------------------------------------------------------------------
class Objective:
    """The surrogate ``L(θ) = mean(π_θ(a|s) / π_old(a|s) · Â)`` and the mean KL(old‖new) on one batch.

    Building it is step 1: the old distribution, the current policy's
    parameters on the batch held constant (stop-gradient), and its log-probabilities.
    """

    def __init__(self, model: ActorCritic, replicas: Replicas, observations: Any, actions: Any, advantages: Any,
                 action_masks: Any = None, memory: Any = None, weights: Any = None):
        self.model, self.replicas = model, replicas
        # What the policy reads per row: the observations, and the masks stored with them (the same masks for
        # the old and the new distribution: keras_trpo.masking); a recurrent model's sequences also read their
        # start states and episode starts (keras_trpo.sequences), and means skip padded steps (weights 0).
        self.inputs: tuple[Any, ...] = (observations,) if action_masks is None else (observations, action_masks)
        if memory is not None:
            self.inputs = (observations, action_masks, memory)
        # (w, the replicas' mean of their Σ w): see keras_trpo.ops.mean_of.
        self.weights = () if weights is None else (weights, replicas.mean(tf.reduce_sum, weights))
        self.actions, self.advantages = actions, advantages
        head = model.head
        self.old_params = replicas.run(
            lambda inputs: tf.nest.map_structure(tf.stop_gradient, model.distribution_params(*inputs)), self.inputs
        )
        self.old_log_prob = replicas.run(lambda p, a: head.distribution(p).log_prob(a), self.old_params, actions)

    def _local(self, o: Any, a: tf.Tensor, adv: tf.Tensor, p: Any, old_lp: tf.Tensor,
               w: tuple[tf.Tensor, ...] = ()) -> tuple[tf.Tensor, tf.Tensor]:
        new = self.model.distribution(*o)
        surrogate = ops.mean_of(tf.exp(new.log_prob(a) - old_lp) * adv, *w)
        kl = ops.mean_of(tfd.kl_divergence(self.model.head.distribution(p), new), *w)
        return surrogate, kl

    def _args(self) -> tuple[Any, ...]:
        return self.inputs, self.actions, self.advantages, self.old_params, self.old_log_prob, self.weights

    def surrogate_and_kl(self) -> tuple[tf.Tensor, tf.Tensor]:
        """``(L(θ), mean KL(old‖π_θ))`` at the current weights."""
        return self.replicas.mean(self._local, *self._args())

    def surrogate_and_gradient(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Step 2: ``(L(θ_old), g = ∇L)`` with ``g`` flat over ``model.policy_variables``."""
        variables = self.model.policy_variables

        def local(*args: Any) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                surrogate, _ = self._local(*args)
            return surrogate, ops.flat_gradient(tape, surrogate, variables)

        return self.replicas.mean(local, *self._args())

    def entropy(self) -> tf.Tensor:
        """Mean entropy of the old policy on the batch."""
        return self.replicas.mean(lambda p, w: ops.mean_of(self.model.head.distribution(p).entropy(), *w),
                                  self.old_params, self.weights)

    def fisher_vector_product(
        self, rows: tf.Tensor | None, damping: tf.Variable | float, form: str = "double_backprop"
    ) -> Callable[[tf.Tensor], tf.Tensor]:
        """Step 3's ``v ↦ (F + damping·I) v``, ``F`` the Hessian of the mean KL on the rows ``rows``.

        ``rows`` (``None``: all) indexes each replica's share of the batch; see :func:`fvp_rows`.
        ``form`` (one of :data:`FISHER_PRODUCTS`) picks :func:`keras_trpo.ops.gauss_newton_product_fn`
        (``Jᵀ M J v``, exact at θ_old) or :func:`keras_trpo.ops.fisher_vector_product_fn` (double backprop).
        """
        variables, head, model = self.model.policy_variables, self.model.head, self.model

        def local_product_fn(o: Any, p: Any, w: tuple[tf.Tensor, ...]) -> Callable[[tf.Tensor], tf.Tensor]:
            if rows is not None:  # a subsample's mean is over its own real steps (o may hold a None action mask)
                o, p, w = tf.nest.map_structure(lambda q: q if q is None else tf.gather(q, rows), (o, p, w[:1]))
            if form == "double_backprop":
                return ops.fisher_vector_product_fn(
                    lambda: ops.mean_of(tfd.kl_divergence(head.distribution(p), model.distribution(*o)), *w),
                    variables, damping,
                )
            # M of the mean KL: the per-row Hessian over the number of rows (over the real steps' weights).
            scale = 1.0 / tf.cast(tf.shape(tf.nest.flatten(p)[0])[0], float_dtype())
            if w:
                scale = w[0] / ops.weight_total(w)

            def metric_fn(u: Any) -> Any:
                # A per-row scale [N] broadcast over each parameter's [N, ...] (any action rank).
                return tf.nest.map_structure(lambda m: _per_row(scale, m) * m, head.kl_hessian_product(p, u))

            return ops.gauss_newton_product_fn(lambda: model.distribution_params(*o), metric_fn, variables, damping)

        if not self.replicas.distributed:
            # One device: record the tapes once and reuse them in every CG step.
            return local_product_fn(self.inputs, self.old_params, self.weights)

        def product(vector: tf.Tensor) -> tf.Tensor:
            return self.replicas.mean(lambda o, p, w: local_product_fn(o, p, w)(vector), self.inputs, self.old_params,
                                      self.weights)

        return product


def _per_row(scale: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """``scale`` as it is (a scalar), or a per-row ``[N]`` scale reshaped to broadcast over ``like`` ``[N, ...]``."""
    if scale.shape.rank == 0:
        return scale
    return tf.reshape(scale, [-1] + [1] * (like.shape.rank - 1))


def check_fisher_product(value: Any) -> str:
    """``value`` if it names a Fisher-vector product form, else one ValueError line."""
    if value not in FISHER_PRODUCTS:
        raise ValueError(f"fisher_product must be one of {', '.join(map(repr, FISHER_PRODUCTS))}; got {value!r}. "
                         "Pass fisher_product='double_backprop' (the default) or 'gauss_newton'.")
    return value


def fvp_rows(
    replicas: Replicas,
    column: Any,
    fraction: float,
    seed_generator: keras.random.SeedGenerator,
    policy_version: tf.Variable,
    length: int = 1,
) -> tf.Tensor | None:
    """The rows of each replica's share used for Fisher-vector products, or ``None`` for all.

    A uniformly random subset of ``max(1, round(fraction·n))`` rows, drawn
    statelessly from the model's seed (``seed_generator.state[0]``: checkpointed,
    random when ``seed=None``) folded with ``policy_version`` and a salt, so each
    update draws afresh, the draws differ from the critic's shuffles, and a
    rejected update consumes no random state. The TRPO paper (section 6)
    estimates the Fisher on about 10% of the batch. A strided subsample would not
    do: a batch is time-major over sub-environments, so every ``k``-th row comes
    from the same ``num_envs / k`` sub-environments whenever ``k`` divides ``num_envs``.
    A recurrent batch (``length`` > 1 rows per sequence) is subsampled by whole sequences.
    """
    if fraction >= 1.0:
        return None
    n = replicas.local_size(column)  # any [N] column of the batch
    if length > 1:
        n = n // length
    count = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(n, float_dtype())), tf.int32))
    base = tf.stack([tf.cast(seed_generator.state[0], tf.int64), tf.cast(policy_version, tf.int64)])
    seed = tf.random.experimental.stateless_fold_in(base, FVP_SEED_SALT)
    rows = tf.argsort(tf.random.stateless_uniform((n,), seed))[:count]
    return ops.sequence_rows(rows, length) if length > 1 else rows


# --------------------------------------------------------------------------
# Steps 4 and 5: the trust-region step and the line search
# --------------------------------------------------------------------------
class FullStep(NamedTuple):
    """Step 4's outcome: the full trust-region step and whether its quadratic model holds."""

    #: ``√(2δ / sᵀ(F + λI)s) · s``, flat over ``model.policy_variables``.
    vector: tf.Tensor
    #: Scalar bool: CG did not break down and ``sᵀ(F + λI)s`` is positive and finite.
    well_posed: tf.Tensor


class LineSearch(NamedTuple):
    """Step 5's outcome; the policy weights in place are the accepted trial's, or ``θ_old``."""

    #: Scalar bool: a trial step was accepted.
    accepted: tf.Tensor
    #: Line-search shrinks before the accepted trial (int32; ``iterations`` when none was accepted).
    shrinks: tf.Tensor
    #: ``coefficient**min(shrinks, iterations − 1)``: the fraction of the full step tried last.
    last_tried: tf.Tensor


def full_step(fvp: Callable[[tf.Tensor], tf.Tensor], direction: tf.Tensor, cg_info: Mapping[str, tf.Tensor],
              max_kl: tf.Tensor) -> FullStep:
    """Step 4: ``√(2δ / sᵀ(F + λI)s) · s`` and whether the quadratic model can be trusted.

    ``F + λI`` is positive definite by construction; a CG breakdown (``pᵀAp ≤ 0``)
    or a non-positive or non-finite ``sᵀAs`` means it is not, and the update is rejected.
    """
    curvature = tf.reduce_sum(direction * fvp(direction))
    well_posed = tf.logical_and(curvature > 0, tf.math.is_finite(curvature))
    well_posed = tf.logical_and(well_posed, tf.logical_not(cg_info["breakdown"]))
    scale = tf.sqrt(2.0 * max_kl / tf.where(well_posed, curvature, 1.0))
    return FullStep(scale * direction, well_posed)


def line_search(objective: Objective, step: FullStep, surrogate_old: tf.Tensor, max_kl: tf.Tensor,
                coefficient: float, iterations: int) -> LineSearch:
    """Step 5: the first ``coefficient**j · step.vector`` with mean KL ≤ δ and ``L − L_old > 0``.

    The accepted trial's weights stay in place; otherwise ``θ_old`` is restored
    bit for bit. Nothing is tried when the step is not ``well_posed``.
    """
    variables = objective.model.policy_variables
    theta_old = ops.flatten(variables)

    def accept(fraction: tf.Tensor) -> tf.Tensor:
        ops.assign_flat(variables, theta_old + fraction * step.vector)
        surrogate, kl = objective.surrogate_and_kl()
        finite = tf.logical_and(tf.math.is_finite(surrogate), tf.math.is_finite(kl))
        return tf.logical_and(finite, tf.logical_and(kl <= max_kl, surrogate - surrogate_old > 0))

    accepted, shrinks = tf.cond(
        step.well_posed,
        lambda: ops.backtracking_line_search(accept, coefficient, iterations),
        lambda: (tf.constant(False), tf.constant(iterations)),
    )
    tf.cond(accepted, lambda: None, lambda: ops.assign_flat(variables, theta_old))
    last_tried = tf.pow(
        tf.constant(coefficient, float_dtype()), tf.cast(tf.minimum(shrinks, iterations - 1), float_dtype())
    )
    return LineSearch(accepted, shrinks, last_tried)


def policy_metrics(objective: Objective, surrogate_old: tf.Tensor, g: tf.Tensor, cg_info: Mapping[str, tf.Tensor],
                   step: FullStep, search: LineSearch) -> Metrics:
    """The logged outcome of steps 1–5 (``kl`` and the improvement at the weights now in place)."""
    surrogate_new, kl_new = objective.surrogate_and_kl()
    accepted, well_posed = search.accepted, step.well_posed
    reason = tf.where(accepted, errors.ACCEPTED, tf.where(well_posed, errors.NO_STEP, errors.CG_BREAKDOWN))
    return {
        "kl": kl_new,
        "surrogate_improvement": surrogate_new - surrogate_old,
        # First-order prediction gᵀΔθ of the surrogate gain of the last step tried.
        "expected_improvement": tf.where(well_posed, search.last_tried * tf.reduce_sum(g * step.vector), 0.0),
        "line_search_steps": tf.cast(search.shrinks, float_dtype()),
        "step_fraction": tf.where(accepted, search.last_tried, 0.0),
        "step_accepted": tf.cast(accepted, float_dtype()),
        "rejection_reason": tf.cast(reason, float_dtype()),
        "cg_residual": cg_info["residual"],
        "cg_iterations": tf.cast(cg_info["iterations"], float_dtype()),
        "cg_breakdown": tf.cast(cg_info["breakdown"], float_dtype()),
        "entropy": objective.entropy(),
    }


def rejected_metrics(reason: tf.Tensor) -> Metrics:
    """The metrics of a batch refused before any compute (``reason`` 1 or 4)."""
    nan, zero = tf.constant(float("nan"), float_dtype()), tf.constant(0.0, float_dtype())
    metrics = {key: zero for key in METRICS}
    metrics.update(rejection_reason=tf.cast(reason, float_dtype()), cg_residual=nan, entropy=nan)
    metrics.update(value_loss=nan, explained_variance=nan)
    return metrics
