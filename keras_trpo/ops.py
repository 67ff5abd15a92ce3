"""Stateless TensorFlow building blocks of the TRPO update.

* flat parameters: :func:`flatten`, :func:`unflatten`, :func:`assign_flat`;
* :func:`fisher_vector_product`: ``(F + damping·I) v`` by double backprop, and
  :func:`fisher_vector_product_fn` for many products at the same parameters;
* :func:`gauss_newton_product_fn`: the same ``(F + damping·I) v`` as ``Jᵀ M J v``
  from one recorded forward pass (cheaper per product; `TRPO(fisher_product="gauss_newton")`);
* :func:`conjugate_gradient`: solves ``A x = b`` given only ``v ↦ A v``;
* :func:`backtracking_line_search`: shrinks a step until a predicate accepts it;
* :func:`mean_of`: a batch mean, or over a recurrent batch's real steps (padding weighs 0); :func:`sequence_rows`.

Every function works eagerly and inside ``tf.function`` (loops are
``tf.while_loop``), and holds no state. Reference: Schulman et al., "Trust
Region Policy Optimization", ICML 2015, appendix C.

Example:

>>> A = tf.constant([[4.0, 1.0], [1.0, 3.0]])
>>> x, info = conjugate_gradient(lambda v: tf.linalg.matvec(A, v), tf.constant([1.0, 2.0]), 10)
>>> np.allclose(x, np.linalg.solve(A, [1.0, 2.0]))
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np  # noqa: F401  (used in the doctest)
import tensorflow as tf

from keras_trpo.validation import float_dtype


# --------------------------------------------------------------------------
# Flat parameters
# --------------------------------------------------------------------------
def flatten(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
    """Concatenates tensors (or variables) into one 1-D vector.

    Every entry must be a tensor; :func:`flat_gradient` turns the ``None``
    gradients of unconnected variables into zeros first.
    """
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat: tf.Tensor, like: Sequence[Any]) -> list[tf.Tensor]:
    """Splits a flat vector into tensors shaped like the entries of ``like``."""
    shapes = [tuple(v.shape) for v in like]
    sizes = [int(np.prod(s)) for s in shapes]
    return [tf.reshape(part, shape) for part, shape in zip(tf.split(flat, sizes), shapes)]


def assign_flat(variables: Sequence[tf.Variable], flat: tf.Tensor) -> None:
    """Assigns a flat vector to ``variables`` (the inverse of :func:`flatten`)."""
    for variable, value in zip(variables, unflatten(flat, variables)):
        variable.assign(tf.cast(value, variable.dtype))


def num_elements(variables: Sequence[Any]) -> int:
    """Total number of scalars in ``variables``."""
    return int(sum(int(np.prod(v.shape)) for v in variables))


def flat_gradient(tape: tf.GradientTape, target: tf.Tensor, variables: Sequence[Any]) -> tf.Tensor:
    """``∇ target`` w.r.t. ``variables`` as one flat vector (zeros where unconnected)."""
    # Not UnconnectedGradients.ZERO: it needs a TF dtype, and keras.Variable.dtype is a string.
    grads = tape.gradient(target, variables)
    return flatten(
        [tf.zeros(tuple(v.shape), tf.as_dtype(v.dtype)) if g is None else g for g, v in zip(grads, variables)]
    )


# --------------------------------------------------------------------------
# Fisher-vector product
# --------------------------------------------------------------------------
def fisher_vector_product(
    kl_fn: Callable[[], tf.Tensor],
    variables: Sequence[tf.Variable],
    vector: tf.Tensor,
    damping: float | tf.Tensor = 0.0,
) -> tf.Tensor:
    """Returns ``(F + damping·I) v`` where ``F = ∇²KL̄`` at the current ``variables``.

    ``kl_fn`` computes the mean KL(old‖new) between a fixed (stop-gradient) old
    distribution and the distribution given by the current ``variables``. At
    ``new == old`` its Hessian is the Fisher information matrix (TRPO paper,
    appendix C.1), so the product needs no explicit matrix: an inner tape gives
    ``∇KL̄``, an outer tape differentiates ``∇KL̄ · v`` ("Pearlmutter trick").

    Args:
        kl_fn: zero-argument callable returning the scalar mean KL.
        variables: the policy variables θ.
        vector: flat vector ``v`` with ``num_elements(variables)`` entries.
        damping: ``λ`` added as ``λ·v`` to keep the system positive definite
            (rllab issue #24: without it CG can see ``sᵀFs ≤ 0``).

    Returns:
        A flat vector like ``vector``.
    """
    return fisher_vector_product_fn(kl_fn, variables, damping)(vector)


def fisher_vector_product_fn(
    kl_fn: Callable[[], tf.Tensor],
    variables: Sequence[tf.Variable],
    damping: float | tf.Tensor = 0.0,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns ``v ↦ (F + damping·I) v`` for many vectors at the same parameters.

    The nested tapes of :func:`fisher_vector_product` are recorded once: the
    inner one gives ``∇KL̄``, and each product is the outer tape's
    vector-Jacobian product of ``∇KL̄`` with ``v`` (``F`` is symmetric, so this
    is ``F v``). Conjugate gradient calls it ``cg_iterations`` times without
    recomputing the forward pass or ``∇KL̄`` (benchmarks/README.md, "reuse the
    FVP tapes", measures the saving). Valid only while ``variables`` do not change.
    """
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            kl = kl_fn()
        grad_kl = inner.gradient(kl, variables)
    # Variables the KL does not depend on have a zero Fisher block.
    connected = [i for i, g in enumerate(grad_kl) if g is not None]

    def blocks(parts: list[tf.Tensor]) -> list[tf.Tensor | None]:
        return outer.gradient(
            [grad_kl[i] for i in connected],
            variables,
            output_gradients=[parts[i] for i in connected],
        )

    return _damped_product(variables, connected, damping, blocks)


def _damped_product(
    variables: Sequence[tf.Variable], connected: list[int], damping: float | tf.Tensor,
    blocks: Callable[[list[tf.Tensor]], list[tf.Tensor | None]],
) -> Callable[[tf.Tensor], tf.Tensor]:  # fmt: skip
    """``v ↦ H v + damping·v``, where ``blocks(parts of v)`` gives ``H v`` per variable (``None``: a zero block),
    called only if some variable is ``connected`` to the outputs (the others' blocks are zero)."""
    # A Python number in the compute dtype: 0.1 as float32 is 0.10000000149, a 1.5e-8 error in float64.
    damping = tf.constant(damping, float_dtype()) if isinstance(damping, (int, float)) else tf.convert_to_tensor(damping)

    def product(vector: tf.Tensor) -> tf.Tensor:
        vector = tf.stop_gradient(vector)
        parts = unflatten(vector, variables)
        hv = [tf.zeros(tuple(v.shape), tf.as_dtype(v.dtype)) for v in variables]
        if connected:
            hv = [h if g is None else g for h, g in zip(hv, blocks(parts))]
        fvp = flatten(hv)
        return fvp + tf.cast(damping, fvp.dtype) * vector

    return product


def gauss_newton_product_fn(
    outputs_fn: Callable[[], Any],
    metric_fn: Callable[[Any], Any],
    variables: Sequence[tf.Variable],
    damping: float | tf.Tensor = 0.0,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Returns ``v ↦ (Jᵀ M J + damping·I) v``: the Fisher-vector product in Gauss–Newton form.

    ``outputs_fn`` computes the distribution parameters ``y(θ)`` on the batch (any
    structure of tensors), ``J = ∂y/∂θ``, and ``metric_fn(u)`` returns ``M u`` (shaped
    like ``y``) with ``M`` the Hessian of the mean KL(old‖new) in ``y`` at ``new == old``.
    By the chain rule ``∇²_θ KL = Jᵀ M J + Σ_k (∂KL/∂y_k) ∇²_θ y_k``, and the second term
    vanishes at ``θ = θ_old``, where ``KL`` is minimal in ``y`` (∂KL/∂y = 0): the product is
    the exact Fisher-vector product of :func:`fisher_vector_product_fn` (Martens, "New
    insights and perspectives on the natural gradient method", 2014/2020, section 9;
    Schulman et al. 2015, appendix C: "the Fisher-vector product ... ``Jᵀ M J v``").

    The forward pass and its backward pass are recorded once: ``Jᵀ w`` is the recorded
    tape's vector-Jacobian product with ``w``, and ``J v`` differentiates that linear map
    of a watched ``w`` with ``v`` as the output gradient (the "double-vjp" trick: no second
    forward pass). Each product is then one ``J v``, one ``M u`` (closed form per head,
    :meth:`keras_trpo.policies.PolicyHead.kl_hessian_product`) and one ``Jᵀ w``, cheaper
    than double backprop through the KL. Valid only while ``variables`` do not change.
    """
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape(persistent=True) as inner:
            outputs = outputs_fn()
        flat_outputs = tf.nest.flatten(outputs)
        # The value of w does not matter: Jᵀ w is linear in it.
        w = [tf.zeros_like(y) for y in flat_outputs]
        outer.watch(w)
        jt_w = inner.gradient(flat_outputs, variables, output_gradients=w)
    # Variables the outputs do not depend on have a zero Fisher block.
    connected = [i for i, g in enumerate(jt_w) if g is not None]

    def blocks(parts: list[tf.Tensor]) -> list[tf.Tensor | None]:
        jv = outer.gradient([jt_w[i] for i in connected], w, output_gradients=[parts[i] for i in connected])
        jv = [tf.zeros_like(y) if g is None else g for g, y in zip(jv, flat_outputs)]
        mjv = tf.nest.flatten(metric_fn(tf.nest.pack_sequence_as(outputs, jv)))
        return inner.gradient(flat_outputs, variables, output_gradients=mjv)

    return _damped_product(variables, connected, damping, blocks)


# --------------------------------------------------------------------------
# Conjugate gradient
# --------------------------------------------------------------------------
def conjugate_gradient(
    matvec: Callable[[tf.Tensor], tf.Tensor],
    b: tf.Tensor,
    iterations: int,
    residual_tol: float = 1e-10,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Solves ``A x = b`` for symmetric positive-definite ``A`` given ``matvec(v) = A v``.

    Standard CG from ``x₀ = 0`` (TRPO paper, appendix C). It stops after
    ``iterations`` steps, when ``rᵀr ≤ residual_tol``, or on breakdown: a
    non-positive or non-finite curvature ``pᵀAp``, in which case the last good
    iterate is returned and ``info["breakdown"]`` is true. A zero ``b`` returns
    zeros without evaluating ``matvec``.

    We use this loop rather than ``tf.linalg.experimental.conjugate_gradient``
    because that solver has no breakdown guard (it divides by ``pᵀAp`` whatever
    its sign) and needs a ``LinearOperator`` wrapper around the FVP closure.

    Args:
        matvec: callable ``v ↦ A v`` on flat vectors.
        b: right-hand side, 1-D.
        iterations: maximum number of CG steps (``matvec`` calls).
        residual_tol: stop when the squared residual norm falls below this.

    Returns:
        ``(x, info)`` with ``info`` a dict of scalar tensors: ``residual``
        (``‖b − A x‖`` as tracked by CG), ``iterations`` (steps taken) and
        ``breakdown`` (bool).
    """
    b = tf.convert_to_tensor(b)
    tol = tf.constant(residual_tol, b.dtype)
    x = tf.zeros_like(b)
    r = b
    p = b
    rr = tf.reduce_sum(r * r)

    # The loop state: step, iterate, residual, direction, rᵀr, done, breakdown seen.
    State = tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]

    def cond(*state: tf.Tensor) -> tf.Tensor:
        i, _, _, _, _, done, _ = state
        return tf.logical_and(i < iterations, tf.logical_not(done))

    def body(*state: tf.Tensor) -> State:
        i, x, r, p, rr, done, breakdown = state
        z = matvec(p)
        pz = tf.reduce_sum(p * z)
        bad = tf.logical_not(tf.logical_and(pz > 0, tf.math.is_finite(pz)))
        alpha = tf.where(bad, tf.zeros_like(pz), rr / tf.where(bad, tf.ones_like(pz), pz))
        x_new = x + alpha * p
        r_new = r - alpha * z
        rr_new = tf.reduce_sum(r_new * r_new)
        p_new = r_new + (rr_new / rr) * p
        # On breakdown keep the previous iterate untouched.
        x_new, r_new, p_new, rr_new = [
            tf.where(bad, old, new) for old, new in ((x, x_new), (r, r_new), (p, p_new), (rr, rr_new))
        ]
        done = tf.logical_or(bad, rr_new <= tol)
        return i + 1, x_new, r_new, p_new, rr_new, done, tf.logical_or(breakdown, bad)

    steps, x, _, _, rr, _, breakdown = tf.while_loop(
        cond,
        body,
        (tf.constant(0), x, r, p, rr, rr <= tol, tf.constant(False)),
        name="conjugate_gradient",
    )
    return x, {"residual": tf.sqrt(rr), "iterations": steps, "breakdown": breakdown}


# --------------------------------------------------------------------------
# Backtracking line search
# --------------------------------------------------------------------------
def backtracking_line_search(
    accept_fn: Callable[[tf.Tensor], tf.Tensor],
    coefficient: float,
    iterations: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Finds the first ``j < iterations`` with ``accept_fn(coefficient**j)`` true.

    ``accept_fn(fraction)`` evaluates the step ``θ_old + fraction·Δθ`` and
    returns a scalar bool (for TRPO: finite, mean KL ≤ δ, surrogate improved).
    It may set variables as a side effect; the caller restores or commits them.

    Returns:
        ``(accepted, j)``: whether a fraction was accepted, and the number of
        shrinks before it (``iterations`` when none was accepted). The accepted
        fraction is ``coefficient**j``.
    """

    def cond(j: tf.Tensor, accepted: tf.Tensor) -> tf.Tensor:
        return tf.logical_and(j < iterations, tf.logical_not(accepted))

    def body(j: tf.Tensor, accepted: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        fraction = tf.pow(tf.constant(coefficient, float_dtype()), tf.cast(j, float_dtype()))
        ok = accept_fn(fraction)
        return tf.where(ok, j, j + 1), ok

    j, accepted = tf.while_loop(cond, body, (tf.constant(0), tf.constant(False)))
    return accepted, j


# --------------------------------------------------------------------------
# Means over the real steps of a recurrent batch (padding weighs 0) and its sequences' rows
# --------------------------------------------------------------------------
def mean_of(values: tf.Tensor, *weights: tf.Tensor) -> tf.Tensor:
    """``mean(values)``, or with ``weights`` (0/1: padded steps are 0) the mean over the weighted rows.

    ``weights`` is ``(w,)`` or ``(w, total)``: ``Σ w·values / total``, ``total`` defaulting to ``Σ w``. Under a
    strategy ``total`` is the replicas' mean of their ``Σ w`` (:class:`keras_trpo.update.Objective`), so that
    the replicas' mean of these local values is the weighted mean over the whole batch, whatever padding each
    share holds.
    """
    if not weights:
        return tf.reduce_mean(values)
    w = weights[0]
    # A padded row's value is dropped, not multiplied by 0: an overflowing ratio there would make 0·inf = NaN.
    return tf.reduce_sum(tf.where(w > 0, values, tf.zeros_like(values)) * w) / weight_total(weights)


def weight_total(weights: tuple[tf.Tensor, ...]) -> tf.Tensor:
    """The denominator of :func:`mean_of`'s weighted mean: ``total`` if given, else ``Σ w`` (at least 1)."""
    return tf.maximum(weights[1] if len(weights) > 1 else tf.reduce_sum(weights[0]), 1.0)


def sequence_rows(index: tf.Tensor, length: int) -> tf.Tensor:
    """The rows of the sequences ``index`` of a sequence-major batch (``length`` rows each), in order."""
    return tf.reshape(index[:, None] * length + tf.range(length)[None, :], [-1])
