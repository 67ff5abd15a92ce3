"""The TRPO update as functions: the policy step (steps 1–5), the critic step (6) and their metrics.

``TRPO.train_step`` calls these in order; each takes the model (any object with
``head``, ``distribution_params``, ``distribution``, ``value``, ``policy_variables``,
``value_variables`` and ``optimizer``) and a :class:`~keras_trpo.distribute.Replicas`. With one
device, ``Replicas`` runs every function as a plain call, so the single-device
and the data-parallel update are the same code.

Reference: Schulman et al., "Trust Region Policy Optimization", ICML 2015
(section 6 and appendix C); the step and line search follow sb3-contrib's
``TRPO.train`` and OpenAI baselines' ``trpo_mpi``.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo import errors, ops
from keras_trpo.validation import float_dtype

tfd = tfp.distributions

#: Folded into the FVP subsample's seed, so that its draws differ from the critic's shuffles.
FVP_SEED_SALT = 0x46565052  # "FVPR"

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


# --------------------------------------------------------------------------
# Before the update: is the batch usable at all?
# --------------------------------------------------------------------------
def rejection_before_update(replicas, batch, head, model_version) -> tf.Tensor:
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


def normalized(replicas, advantages):
    """Advantages standardized over the whole batch: ``(A − mean) / (std + 1e-8)``."""
    mean, variance = replicas.moments(advantages)
    return replicas.run(lambda a: (a - mean) / (tf.sqrt(variance) + 1e-8), advantages)


# --------------------------------------------------------------------------
# Steps 1, 2 and 5: the surrogate and the KL against the old policy
# --------------------------------------------------------------------------
class Objective:
    """The surrogate ``L(θ) = mean(π_θ(a|s) / π_old(a|s) · Â)`` and the mean KL(old‖new) on one batch.

    Building it is step 1: the old distribution, the current policy's
    parameters on the batch held constant (stop-gradient), and its log-probabilities.
    """

    def __init__(self, model, replicas, observations, actions, advantages):
        self.model, self.replicas = model, replicas
        self.observations, self.actions, self.advantages = observations, actions, advantages
        head = model.head
        self.old_params = replicas.run(
            lambda o: tf.nest.map_structure(tf.stop_gradient, model.distribution_params(o)), observations
        )
        self.old_log_prob = replicas.run(lambda p, a: head.distribution(p).log_prob(a), self.old_params, actions)

    def _local(self, o, a, adv, p, old_lp):
        new = self.model.distribution(o)
        surrogate = tf.reduce_mean(tf.exp(new.log_prob(a) - old_lp) * adv)
        kl = tf.reduce_mean(tfd.kl_divergence(self.model.head.distribution(p), new))
        return surrogate, kl

    def _args(self):
        return self.observations, self.actions, self.advantages, self.old_params, self.old_log_prob

    def surrogate_and_kl(self):
        """``(L(θ), mean KL(old‖π_θ))`` at the current weights."""
        return self.replicas.mean(self._local, *self._args())

    def surrogate_and_gradient(self):
        """Step 2: ``(L(θ_old), g = ∇L)`` with ``g`` flat over ``model.policy_variables``."""
        variables = self.model.policy_variables

        def local(*args):
            with tf.GradientTape() as tape:
                surrogate, _ = self._local(*args)
            return surrogate, ops.flat_gradient(tape, surrogate, variables)

        return self.replicas.mean(local, *self._args())

    def entropy(self):
        """Mean entropy of the old policy on the batch."""
        return self.replicas.mean(lambda p: tf.reduce_mean(self.model.head.distribution(p).entropy()), self.old_params)

    def fisher_vector_product(self, rows, damping):
        """Step 3's ``v ↦ (F + damping·I) v``, ``F`` the Hessian of the mean KL on the rows ``rows``.

        ``rows`` (``None``: all) indexes each replica's share of the batch; see :func:`fvp_rows`.
        """
        variables, head, model = self.model.policy_variables, self.model.head, self.model

        def local_kl_fn(o, p):
            if rows is not None:
                o, p = tf.nest.map_structure(lambda q: tf.gather(q, rows), (o, p))
            return lambda: tf.reduce_mean(tfd.kl_divergence(head.distribution(p), model.distribution(o)))

        if self.replicas.default:
            # One device: record the FVP tapes once and reuse them in every CG step.
            return ops.fisher_vector_product_fn(local_kl_fn(self.observations, self.old_params), variables, damping)

        def product(vector):
            return self.replicas.mean(
                lambda o, p: ops.fisher_vector_product(local_kl_fn(o, p), variables, vector, damping),
                self.observations,
                self.old_params,
            )

        return product


def fvp_rows(replicas, column, fraction, seed_generator, policy_version):
    """The rows of each replica's share used for Fisher-vector products, or ``None`` for all.

    A uniformly random subset of ``max(1, round(fraction·n))`` rows, drawn
    statelessly from the model's seed (``seed_generator.state[0]``: checkpointed,
    random when ``seed=None``) folded with ``policy_version`` and a salt, so each
    update draws afresh, the draws differ from the critic's shuffles, and a
    rejected update consumes no random state. The TRPO paper (section 6)
    estimates the Fisher on about 10% of the batch. A strided subsample would not
    do: a batch is time-major over sub-environments, so every ``k``-th row comes
    from the same ``num_envs / k`` sub-environments whenever ``k`` divides ``num_envs``.
    """
    if fraction >= 1.0:
        return None
    n = replicas.local_size(column)  # any [N] column of the batch
    count = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(n, float_dtype())), tf.int32))
    base = tf.stack([tf.cast(seed_generator.state[0], tf.int64), tf.cast(policy_version, tf.int64)])
    seed = tf.random.experimental.stateless_fold_in(base, FVP_SEED_SALT)
    return tf.argsort(tf.random.stateless_uniform((n,), seed))[:count]


# --------------------------------------------------------------------------
# Steps 4 and 5: the trust-region step and the line search
# --------------------------------------------------------------------------
def full_step(fvp, direction, cg_info, max_kl):
    """Step 4: ``√(2δ / sᵀ(F + λI)s) · s`` and whether the quadratic model can be trusted.

    ``F + λI`` is positive definite by construction; a CG breakdown (``pᵀAp ≤ 0``)
    or a non-positive or non-finite ``sᵀAs`` means it is not, and the update is rejected.
    """
    curvature = tf.reduce_sum(direction * fvp(direction))
    well_posed = tf.logical_and(curvature > 0, tf.math.is_finite(curvature))
    well_posed = tf.logical_and(well_posed, tf.logical_not(cg_info["breakdown"]))
    scale = tf.sqrt(2.0 * max_kl / tf.where(well_posed, curvature, 1.0))
    return scale * direction, well_posed


def line_search(objective, g, step, surrogate_old, max_kl, well_posed, cg_info, coefficient, iterations):
    """Step 5: the first ``coefficient**j · step`` with mean KL ≤ δ and ``L − L_old > 0``.

    The accepted trial's weights stay in place; otherwise ``θ_old`` is restored
    bit for bit. Returns the policy step's metrics (:func:`policy_metrics`).
    """
    variables = objective.model.policy_variables
    theta_old = ops.flatten(variables)

    def accept(fraction):
        ops.assign_flat(variables, theta_old + fraction * step)
        surrogate, kl = objective.surrogate_and_kl()
        finite = tf.logical_and(tf.math.is_finite(surrogate), tf.math.is_finite(kl))
        return tf.logical_and(finite, tf.logical_and(kl <= max_kl, surrogate - surrogate_old > 0))

    accepted, shrinks = tf.cond(
        well_posed,
        lambda: ops.backtracking_line_search(accept, coefficient, iterations),
        lambda: (tf.constant(False), tf.constant(iterations)),
    )
    tf.cond(accepted, lambda: None, lambda: ops.assign_flat(variables, theta_old))
    return policy_metrics(
        objective, g, step, surrogate_old, cg_info, well_posed, accepted, shrinks, coefficient, iterations
    )


def policy_metrics(objective, g, step, surrogate_old, cg_info, well_posed, accepted, shrinks, coefficient, iterations):
    """The logged outcome of steps 1–5 (``kl`` and the improvement at the weights now in place).

    ``shrinks`` is the number of line-search shrinks, ``iterations`` when nothing was accepted.
    """
    surrogate_new, kl_new = objective.surrogate_and_kl()
    last_tried = tf.pow(
        tf.constant(coefficient, float_dtype()), tf.cast(tf.minimum(shrinks, iterations - 1), float_dtype())
    )
    reason = tf.where(accepted, errors.ACCEPTED, tf.where(well_posed, errors.NO_STEP, errors.CG_BREAKDOWN))
    return {
        "kl": kl_new,
        "surrogate_improvement": surrogate_new - surrogate_old,
        # First-order prediction gᵀΔθ of the surrogate gain of the last step tried.
        "expected_improvement": tf.where(well_posed, last_tried * tf.reduce_sum(g * step), 0.0),
        "line_search_steps": tf.cast(shrinks, float_dtype()),
        "step_fraction": tf.where(accepted, last_tried, 0.0),
        "step_accepted": tf.cast(accepted, float_dtype()),
        "rejection_reason": tf.cast(reason, float_dtype()),
        "cg_residual": cg_info["residual"],
        "cg_iterations": tf.cast(cg_info["iterations"], float_dtype()),
        "cg_breakdown": tf.cast(cg_info["breakdown"], float_dtype()),
        "entropy": objective.entropy(),
    }


# --------------------------------------------------------------------------
# Step 6: the critic
# --------------------------------------------------------------------------
def critic_kept_if(accepted, model, replicas, observations, returns):
    """Step 6, kept only if ``accepted``: :func:`critic_step`, then the normalizer's new moments.

    The critic shares no variable with steps 1–5, so TensorFlow runs it beside them (two
    independent branches of the graph; for the 64×64 MLP on 2 cores the update then takes
    little more than the longer of the two; benchmarks/README.md). After a rejected policy
    step every variable it wrote is restored bit for bit (:func:`critic_variables`; the value
    network is called without ``training=True``, so its layers write no other state) and the
    metrics are those of the unchanged critic. Under a ``tf.distribute`` strategy it starts
    after the line search's outcome, so that its all-reduces follow the policy step's on
    every worker (those of the final policy metrics stay in program order through TF's
    collective ordering).
    """
    written = critic_variables(model)
    saved = [tf.identity(v) for v in written]
    ordered = contextlib.nullcontext() if replicas.default else tf.control_dependencies([accepted])
    with ordered, tf.name_scope("critic"):
        metrics = critic_step(
            model, replicas, observations, returns, model.value_epochs, model.value_batch_size, model.seed_generator
        )

    def keep():
        if model.normalizer is not None:
            # After both updates: the "old" policy of this update was the one that collected the batch.
            normalizer_step(model.normalizer, replicas, observations, model.observation_spec)
        return metrics

    def undo():
        restore(written, saved)
        return value_metrics(model, replicas, observations, returns)

    return tf.cond(accepted, keep, undo)


def critic_step(model, replicas, observations, returns, epochs, batch_size, seed_generator):
    """Regresses V(s) on the returns: ``epochs`` shuffled passes of minibatches, with ``model.optimizer``.

    With ``R`` replicas each takes ``batch_size // R`` samples of its share per
    minibatch (the same permutation positions on every replica), and the optimizer
    applies the mean of the replicas' gradients.
    """
    variables = model.value_variables
    values_before = replicas.run(model.value, observations)
    n = replicas.local_size(returns)
    batch_size = tf.minimum(max(1, batch_size // replicas.count), n)
    batches_per_epoch = (n + batch_size - 1) // batch_size
    total = epochs * batches_per_epoch
    # One independent permutation of the (local) batch per epoch.
    permutations = tf.argsort(keras.random.uniform((epochs, n), seed=seed_generator), axis=-1)

    def body(k, loss_sum):
        epoch, start = k // batches_per_epoch, (k % batches_per_epoch) * batch_size
        index = permutations[epoch, start : tf.minimum(start + batch_size, n)]

        def local_loss_and_gradients(o, r):
            with tf.GradientTape() as tape:
                minibatch = tf.nest.map_structure(lambda x: tf.gather(x, index), o)  # a dict for Dict spaces
                loss = tf.reduce_mean(tf.square(model.value(minibatch) - tf.gather(r, index)))
            return loss, tape.gradient(loss, variables)

        loss, grads = replicas.mean(local_loss_and_gradients, observations, returns)
        replicas.apply_gradients(model.optimizer, grads, variables)
        return k + 1, loss_sum + loss

    _, loss_sum = tf.while_loop(lambda k, _: k < total, body, (tf.constant(0), tf.constant(0.0, float_dtype())))
    return {
        "value_loss": loss_sum / tf.cast(tf.maximum(total, 1), float_dtype()),
        "explained_variance": explained_variance(replicas, values_before, returns),
    }


def critic_variables(model):
    """Every variable :func:`critic_step` writes: the value network's, its optimizer's, the shuffle seed."""
    return [*model.value_variables, *model.optimizer.variables, model.seed_generator.state]


def restore(variables, values):
    """Assigns ``values`` (read before a step) back to ``variables``: the step is undone bit for bit."""
    for variable, value in zip(variables, values):
        variable.assign(value)


def normalizer_step(normalizer, replicas, observations, spec):
    """Merges the batch's float observation moments (over all replicas) into the running normalization."""
    flat = replicas.run(lambda o: tf.cast(spec.float_features(o), tf.float64), observations)
    mean, variance = replicas.moments(flat)
    normalizer.update_from_moments(mean, variance, tf.cast(replicas.local_size(flat) * replicas.count, tf.float64))


def value_metrics(model, replicas, observations, returns):
    """Critic metrics of the current weights, without training (for a rejected update)."""
    values = replicas.run(model.value, observations)
    return {
        "value_loss": replicas.mean(lambda v, r: tf.reduce_mean(tf.square(v - r)), values, returns),
        "explained_variance": explained_variance(replicas, values, returns),
    }


def explained_variance(replicas, predictions, targets):
    """``1 − Var(targets − predictions) / Var(targets)`` over the whole batch; NaN for constant targets."""
    _, target_variance = replicas.moments(targets)
    _, residual_variance = replicas.moments(replicas.run(lambda p, t: t - p, predictions, targets))
    return tf.where(
        target_variance > 0,
        1.0 - residual_variance / tf.where(target_variance > 0, target_variance, 1.0),
        float("nan"),
    )


def rejected_metrics(reason):
    """The metrics of a batch refused before any compute (``reason`` 1 or 4)."""
    nan, zero = tf.constant(float("nan"), float_dtype()), tf.constant(0.0, float_dtype())
    metrics = {key: zero for key in METRICS}
    metrics.update(rejection_reason=tf.cast(reason, float_dtype()), cg_residual=nan, entropy=nan)
    metrics.update(value_loss=nan, explained_variance=nan)
    return metrics
