"""Tests of keras_trpo.ops against independent computations.

* Fisher-vector products are compared with an explicit Hessian of the mean
  KL(old‖new), computed with nested ``tf.GradientTape`` + ``jacobian`` on a
  float64 re-implementation of the policy forward pass (plain matmuls, no TFP,
  no keras_trpo.ops).
* Conjugate gradient is compared with ``np.linalg.solve``.
* The line search is compared with a Python loop.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_trpo
from keras_trpo import ops

tfd = tfp.distributions

OBS_SPACE = gymnasium.spaces.Box(low=-np.inf, high=np.inf, shape=(3,), dtype=np.float32)
ACTION_SPACES = {
    "discrete": gymnasium.spaces.Discrete(3),
    "box": gymnasium.spaces.Box(low=-1.0, high=1.0, shape=(2,), dtype=np.float32),
}


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def _tiny_policy(action_space):
    """A TRPO model with ≤ 100 policy parameters, set to random O(1) weights.

    The default initialization has a 0.01-gain output layer, which makes most
    Fisher entries tiny; random weights give a well-scaled, non-trivial Fisher.
    """
    model = keras_trpo.TRPO(OBS_SPACE, action_space, hidden_units=(4,), value_hidden_units=(4,), seed=0)
    rng = np.random.default_rng(1)
    for variable in model.policy_variables:
        variable.assign(rng.normal(scale=0.7, size=tuple(variable.shape)).astype(np.float32))
    observations = rng.normal(size=(8, 3)).astype(np.float32)
    return model, observations


def _package_kl_fn(model, observations):
    """The mean KL(old‖new) exactly as the model's train_step builds it."""
    old_params = tf.nest.map_structure(tf.stop_gradient, model.distribution_params(observations))
    old_dist = model.head.distribution(old_params)

    def kl_fn():
        return tf.reduce_mean(tfd.kl_divergence(old_dist, model.distribution(observations)))

    return kl_fn


def _reference_forward(model, observations):
    """Returns (theta0, forward) with ``forward(theta)`` a float64 functional policy.

    ``forward`` maps one flat float64 parameter vector to the raw policy outputs
    and the log_std (or None), using plain TF ops only.
    """
    variables = model.policy_variables
    shapes = [tuple(v.shape) for v in variables]
    has_log_std = model.log_std is not None
    # The re-implementation assumes [W1, b1, W2, b2(, log_std)]; check it.
    n_out = model.head.num_outputs
    expected = [(3, 4), (4,), (4, n_out), (n_out,)] + ([(n_out,)] if has_log_std else [])
    assert shapes == expected
    theta0 = np.concatenate([v.numpy().ravel() for v in variables]).astype(np.float64)
    x = tf.constant(observations, tf.float64)

    def forward(theta):
        parts, offset = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(tf.reshape(theta[offset : offset + size], shape))
            offset += size
        w1, b1, w2, b2 = parts[:4]
        outputs = tf.matmul(tf.tanh(tf.matmul(x, w1) + b1), w2) + b2
        log_std = parts[4] if has_log_std else None
        return outputs, log_std

    return theta0, forward


def _reference_hessian(model, observations):
    """Explicit Hessian of the mean KL(old‖θ) at θ = θ_old, in float64."""
    theta0, forward = _reference_forward(model, observations)
    old_outputs, old_log_std = forward(tf.constant(theta0))
    old_outputs = tf.stop_gradient(old_outputs)
    discrete = model.log_std is None

    def mean_kl(theta):
        outputs, log_std = forward(theta)
        if discrete:
            old_logp = tf.nn.log_softmax(old_outputs)
            new_logp = tf.nn.log_softmax(outputs)
            per_sample = tf.reduce_sum(tf.exp(old_logp) * (old_logp - new_logp), axis=-1)
        else:
            old_ls = tf.stop_gradient(old_log_std)
            per_sample = tf.reduce_sum(
                log_std
                - old_ls
                + (tf.exp(2.0 * old_ls) + tf.square(old_outputs - outputs)) / (2.0 * tf.exp(2.0 * log_std))
                - 0.5,
                axis=-1,
            )
        return tf.reduce_mean(per_sample)

    theta = tf.Variable(theta0, dtype=tf.float64)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            kl = mean_kl(theta)
        grad = inner.gradient(kl, theta)
    hessian = outer.jacobian(grad, theta).numpy()
    # Sanity of the reference itself: KL is 0 with zero gradient at θ_old.
    assert abs(float(kl)) < 1e-12
    np.testing.assert_allclose(grad.numpy(), 0.0, atol=1e-12)
    return hessian


# --------------------------------------------------------------------------
# 1. Fisher-vector product
# --------------------------------------------------------------------------
@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
def test_reference_forward_pass_matches_model(space_name):
    """Guards the independent re-implementation used by the FVP tests."""
    model, observations = _tiny_policy(ACTION_SPACES[space_name])
    theta0, forward = _reference_forward(model, observations)
    outputs, log_std = forward(tf.constant(theta0))
    params = model.distribution_params(observations)
    key = "logits" if model.log_std is None else "mean"
    np.testing.assert_allclose(params[key].numpy(), outputs.numpy(), rtol=1e-5, atol=1e-6)
    if log_std is not None:
        np.testing.assert_allclose(
            params["log_std"].numpy(), np.broadcast_to(log_std.numpy(), params["log_std"].shape), rtol=1e-6
        )


@pytest.mark.parametrize("damping", [0.0, 0.1])
@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
def test_fisher_vector_product_matches_explicit_kl_hessian(space_name, damping):
    model, observations = _tiny_policy(ACTION_SPACES[space_name])
    variables = model.policy_variables
    n = ops.num_elements(variables)
    assert n <= 100
    hessian = _reference_hessian(model, observations)
    assert hessian.shape == (n, n)
    # The Hessian at θ_old is a Fisher matrix: symmetric PSD and not trivial.
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-12)
    assert np.linalg.eigvalsh(hessian).min() > -1e-10
    assert np.abs(hessian).max() > 1e-2

    kl_fn = _package_kl_fn(model, observations)
    theta_before = [v.numpy().copy() for v in variables]
    rng = np.random.default_rng(2)
    for _ in range(4):
        v = rng.normal(size=n)
        fvp = ops.fisher_vector_product(kl_fn, variables, tf.constant(v, tf.float32), damping)
        expected = hessian @ v + damping * v
        assert fvp.shape == (n,)
        np.testing.assert_allclose(fvp.numpy(), expected, rtol=1e-4, atol=1e-6)
    # The product does not move the policy.
    for before, variable in zip(theta_before, variables):
        assert np.array_equal(before, variable.numpy())


def test_fisher_vector_product_damping_as_variable_and_in_tf_function():
    model, observations = _tiny_policy(ACTION_SPACES["discrete"])
    variables = model.policy_variables
    n = ops.num_elements(variables)
    hessian = _reference_hessian(model, observations)
    kl_fn = _package_kl_fn(model, observations)
    damping = tf.Variable(0.25)

    @tf.function
    def graph_fvp(v):
        return ops.fisher_vector_product(kl_fn, variables, v, damping)

    v = np.random.default_rng(3).normal(size=n)
    eager = ops.fisher_vector_product(kl_fn, variables, tf.constant(v, tf.float32), damping).numpy()
    graph = graph_fvp(tf.constant(v, tf.float32)).numpy()
    np.testing.assert_allclose(eager, hessian @ v + 0.25 * v, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-7)
    # Changing the damping variable is seen without retracing.
    damping.assign(1.5)
    np.testing.assert_allclose(
        graph_fvp(tf.constant(v, tf.float32)).numpy(), hessian @ v + 1.5 * v, rtol=1e-4, atol=1e-6
    )


def _check_unconnected_block(extra):
    model, observations = _tiny_policy(ACTION_SPACES["box"])
    policy_vars = model.policy_variables
    variables = [*policy_vars, extra]
    n_policy = ops.num_elements(policy_vars)
    n_extra = int(np.prod(extra.shape))
    hessian = _reference_hessian(model, observations)
    kl_fn = _package_kl_fn(model, observations)
    v = np.random.default_rng(4).normal(size=n_policy + n_extra)
    damping = 0.1
    fvp = ops.fisher_vector_product(kl_fn, variables, tf.constant(v, tf.float32), damping).numpy()
    assert fvp.shape == (n_policy + n_extra,)
    np.testing.assert_allclose(
        fvp[:n_policy], hessian @ v[:n_policy] + damping * v[:n_policy], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(fvp[n_policy:], damping * v[n_policy:], rtol=1e-6, atol=1e-7)


def test_fisher_vector_product_zero_block_for_unconnected_tf_variable():
    """A variable the KL does not depend on gets a zero Fisher block (not None / error)."""
    _check_unconnected_block(tf.Variable(np.ones((2, 3), np.float32)))


def test_fisher_vector_product_zero_block_for_unconnected_keras_variable():
    """Same with a Keras 3 variable (what TRPO models hold): the critic kernel."""
    model, _ = _tiny_policy(ACTION_SPACES["box"])
    _check_unconnected_block(model.value_variables[0])


def test_flat_gradient_zeros_for_unconnected_tf_variable():
    a = tf.Variable([1.0, 2.0])
    b = tf.Variable([[3.0, 4.0]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(a**2)
    np.testing.assert_array_equal(ops.flat_gradient(tape, y, [a, b]).numpy(), [2.0, 4.0, 0.0, 0.0])


# --------------------------------------------------------------------------
# 2. Conjugate gradient
# --------------------------------------------------------------------------
def _random_spd(n, rng, low=1.0, high=20.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eigs = np.geomspace(low, high, n)
    return (q * eigs) @ q.T


def _matvec(a):
    a = tf.constant(a, tf.float64)
    return lambda v: tf.linalg.matvec(a, v)


@pytest.mark.parametrize("n", [5, 20, 50])
def test_conjugate_gradient_matches_linalg_solve(n):
    rng = np.random.default_rng(n)
    a = _random_spd(n, rng)
    b = rng.normal(size=n)
    x, info = ops.conjugate_gradient(_matvec(a), tf.constant(b, tf.float64), n + 5, residual_tol=1e-24)
    expected = np.linalg.solve(a, b)
    assert x.dtype == tf.float64
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert not bool(info["breakdown"])
    assert 1 <= int(info["iterations"]) <= n + 5
    assert float(info["residual"]) <= 1e-8 * np.linalg.norm(b) + 1e-12


def test_conjugate_gradient_stops_after_one_step_on_scaled_identity():
    c = 3.0
    n = 10
    b = np.random.default_rng(5).normal(size=n)
    calls = []

    def matvec(v):
        calls.append(1)
        return c * v

    x, info = ops.conjugate_gradient(matvec, tf.constant(b, tf.float64), 25)
    assert int(info["iterations"]) == 1
    assert len(calls) == 1
    assert not bool(info["breakdown"])
    np.testing.assert_allclose(x.numpy(), b / c, rtol=1e-12)


def test_conjugate_gradient_stops_early_with_few_distinct_eigenvalues():
    """CG solves a system with k distinct eigenvalues in k steps (Krylov dimension)."""
    n, k = 30, 3
    rng = np.random.default_rng(6)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eigs = np.repeat([1.0, 4.0, 9.0], n // k)
    a = (q * eigs) @ q.T
    b = rng.normal(size=n)
    x, info = ops.conjugate_gradient(_matvec(a), tf.constant(b, tf.float64), n, residual_tol=1e-16)
    assert int(info["iterations"]) == k
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(a, b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("iterations", [1, 3, 6])
def test_conjugate_gradient_residual_is_true_residual(iterations):
    """With the iteration cap binding, info['residual'] equals ‖b − A x‖."""
    n = 20
    rng = np.random.default_rng(7)
    a = _random_spd(n, rng, 1.0, 100.0)
    b = rng.normal(size=n)
    x, info = ops.conjugate_gradient(_matvec(a), tf.constant(b, tf.float64), iterations)
    assert int(info["iterations"]) == iterations
    true_residual = np.linalg.norm(b - a @ x.numpy())
    assert true_residual > 1e-3  # the cap binds: the system is not solved yet
    np.testing.assert_allclose(float(info["residual"]), true_residual, rtol=1e-8)
    # Each CG step reduces the A-norm error: compare against the exact solution.
    if iterations > 1:
        x_prev, _ = ops.conjugate_gradient(_matvec(a), tf.constant(b, tf.float64), iterations - 1)
        exact = np.linalg.solve(a, b)

        def a_norm_err(z):
            e = z - exact
            return e @ a @ e

        assert a_norm_err(x.numpy()) < a_norm_err(x_prev.numpy())


def test_conjugate_gradient_zero_rhs_returns_zeros_without_matvec():
    calls = []

    def matvec(v):
        calls.append(1)
        return 2.0 * v

    x, info = ops.conjugate_gradient(matvec, tf.zeros([7], tf.float64), 10)
    assert np.array_equal(x.numpy(), np.zeros(7))
    assert np.all(np.isfinite(x.numpy()))
    assert int(info["iterations"]) == 0
    assert float(info["residual"]) == 0.0
    assert not bool(info["breakdown"])
    assert calls == []


def test_conjugate_gradient_breakdown_on_negative_definite():
    b = np.random.default_rng(8).normal(size=6)
    x, info = ops.conjugate_gradient(lambda v: -v, tf.constant(b, tf.float64), 10)
    assert bool(info["breakdown"])
    assert np.all(np.isfinite(x.numpy()))
    assert np.array_equal(x.numpy(), np.zeros(6))
    assert int(info["iterations"]) == 1
    np.testing.assert_allclose(float(info["residual"]), np.linalg.norm(b), rtol=1e-12)


def test_conjugate_gradient_breakdown_keeps_last_good_iterate():
    """Indefinite A: the first step is fine, the second sees pᵀAp ≤ 0."""
    a = np.diag([1.0, -1.0])
    b = np.array([1.0, 0.5])
    # Independent CG step 1 and the curvature of step 2.
    alpha = (b @ b) / (b @ a @ b)
    x1 = alpha * b
    r1 = b - alpha * (a @ b)
    p1 = r1 + (r1 @ r1) / (b @ b) * b
    assert b @ a @ b > 0 and p1 @ a @ p1 <= 0  # precondition of this test case

    x, info = ops.conjugate_gradient(_matvec(a), tf.constant(b, tf.float64), 10)
    assert bool(info["breakdown"])
    assert int(info["iterations"]) == 2
    np.testing.assert_allclose(x.numpy(), x1, rtol=1e-12)
    np.testing.assert_allclose(float(info["residual"]), np.linalg.norm(r1), rtol=1e-12)


def test_conjugate_gradient_breakdown_on_nan_curvature():
    b = np.ones(4)
    x, info = ops.conjugate_gradient(lambda v: v * np.nan, tf.constant(b, tf.float64), 10)
    assert bool(info["breakdown"])
    assert np.array_equal(x.numpy(), np.zeros(4))


@pytest.mark.parametrize("case", ["spd", "negative_definite", "zero_rhs"])
def test_conjugate_gradient_in_tf_function_matches_eager(case):
    n = 12
    rng = np.random.default_rng(9)
    if case == "spd":
        a, b = _random_spd(n, rng), rng.normal(size=n)
    elif case == "negative_definite":
        a, b = -_random_spd(n, rng), rng.normal(size=n)
    else:
        a, b = _random_spd(n, rng), np.zeros(n)
    matvec = _matvec(a)

    @tf.function
    def solve(rhs):
        return ops.conjugate_gradient(matvec, rhs, 8)

    x_eager, info_eager = ops.conjugate_gradient(matvec, tf.constant(b, tf.float64), 8)
    x_graph, info_graph = solve(tf.constant(b, tf.float64))
    np.testing.assert_allclose(x_graph.numpy(), x_eager.numpy(), rtol=1e-12, atol=1e-15)
    for key in ("iterations", "breakdown"):
        assert info_graph[key].numpy() == info_eager[key].numpy()
    np.testing.assert_allclose(info_graph["residual"].numpy(), info_eager["residual"].numpy(), rtol=1e-12)
    if case == "spd":
        # 8 < n steps: not the exact solution, but the true residual must shrink vs x = 0.
        assert np.linalg.norm(b - a @ x_graph.numpy()) < np.linalg.norm(b)


# --------------------------------------------------------------------------
# 3. Flat parameters
# --------------------------------------------------------------------------
SHAPES = [(), (3,), (2, 4), (2, 1, 3)]


def _variables(rng):
    return [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in SHAPES]


def test_num_elements():
    variables = _variables(np.random.default_rng(10))
    expected = 0
    for shape in SHAPES:
        size = 1
        for d in shape:
            size *= d
        expected += size
    assert ops.num_elements(variables) == expected
    assert ops.num_elements([tf.zeros([5, 0])]) == 0


def test_flatten_order_and_unflatten_round_trip():
    rng = np.random.default_rng(11)
    variables = _variables(rng)
    flat = ops.flatten(variables)
    expected = np.concatenate([v.numpy().reshape(-1) for v in variables])
    assert flat.shape == (ops.num_elements(variables),)
    assert np.array_equal(flat.numpy(), expected)
    parts = ops.unflatten(flat, variables)
    assert len(parts) == len(variables)
    for part, variable in zip(parts, variables):
        assert tuple(part.shape) == tuple(variable.shape)
        assert np.array_equal(part.numpy(), variable.numpy())


def test_assign_flat_round_trip_is_exact():
    rng = np.random.default_rng(12)
    variables = _variables(rng)
    n = ops.num_elements(variables)
    new = rng.normal(size=n).astype(np.float32)
    ops.assign_flat(variables, tf.constant(new))
    assert np.array_equal(ops.flatten(variables).numpy(), new)
    # Element-wise placement: variable k holds the k-th slice in C order.
    offset = 0
    for variable in variables:
        size = int(np.prod(variable.shape))
        assert np.array_equal(variable.numpy(), new[offset : offset + size].reshape(variable.shape))
        offset += size
    # A float64 vector is cast to the variables' float32 dtype.
    new64 = rng.normal(size=n)
    ops.assign_flat(variables, tf.constant(new64))
    assert all(v.dtype == tf.float32 for v in variables)
    assert np.array_equal(ops.flatten(variables).numpy(), new64.astype(np.float32))


def test_flat_round_trip_on_model_policy_variables():
    model, _ = _tiny_policy(ACTION_SPACES["box"])
    variables = model.policy_variables
    before = [v.numpy().copy() for v in variables]
    flat = ops.flatten(variables)
    ops.assign_flat(variables, flat * 2.0)
    ops.assign_flat(variables, flat)
    for b, v in zip(before, variables):
        assert np.array_equal(b, v.numpy())


# --------------------------------------------------------------------------
# 4. Backtracking line search
# --------------------------------------------------------------------------
def _expected_shrinks(coefficient, threshold, iterations):
    for j in range(iterations):
        if coefficient**j <= threshold:
            return True, j
    return False, iterations


@pytest.mark.parametrize(
    "coefficient, threshold, iterations",
    [
        (0.8, 0.3, 10),  # 0.8**5 = 0.328, 0.8**6 = 0.262 -> j = 6
        (0.5, 0.2, 10),  # j = 3
        (0.5, 1.0, 10),  # accepted at once -> j = 0
        (0.9, 0.5, 7),  # 0.9**6 = 0.531 > 0.5 -> never within 7 trials
        (0.9, 0.55, 7),  # 0.9**6 = 0.531 -> accepted at the last trial j = 6
        (0.5, 0.0, 5),  # never accepted
    ],
)
def test_backtracking_line_search_matches_python_loop(coefficient, threshold, iterations):
    tried = []

    def accept(fraction):
        tried.append(float(fraction))
        return fraction <= threshold

    accepted, j = ops.backtracking_line_search(accept, coefficient, iterations)
    expected_accepted, expected_j = _expected_shrinks(coefficient, threshold, iterations)
    assert bool(accepted) == expected_accepted
    assert int(j) == expected_j
    n_tried = expected_j + 1 if expected_accepted else iterations
    np.testing.assert_allclose(tried, [coefficient**k for k in range(n_tried)], rtol=1e-6)


def test_backtracking_line_search_in_tf_function_records_trials():
    coefficient, threshold, iterations = 0.7, 0.2, 10
    expected_accepted, expected_j = _expected_shrinks(coefficient, threshold, iterations)
    counter = tf.Variable(0)
    trials = tf.Variable(tf.zeros([iterations]))

    def accept(fraction):
        trials.scatter_nd_update([[counter]], [fraction])
        counter.assign_add(1)
        return fraction <= threshold

    @tf.function
    def search():
        return ops.backtracking_line_search(accept, coefficient, iterations)

    accepted, j = search()
    assert bool(accepted) == expected_accepted and int(j) == expected_j
    assert int(counter.numpy()) == expected_j + 1
    np.testing.assert_allclose(
        trials.numpy()[: expected_j + 1], [coefficient**k for k in range(expected_j + 1)], rtol=1e-6
    )
    assert np.all(trials.numpy()[expected_j + 1 :] == 0.0)


def test_backtracking_line_search_zero_iterations_never_calls_accept():
    calls = []

    def accept(fraction):
        calls.append(1)
        return tf.constant(True)

    accepted, j = ops.backtracking_line_search(accept, 0.5, 0)
    assert not bool(accepted)
    assert int(j) == 0
    assert calls == []


@pytest.mark.parametrize("space_name", ["box", "discrete"])
def test_reusable_fisher_product_matches_the_explicit_hessian_inside_cg(space_name, float64):
    """fisher_vector_product_fn records the tapes once; CG in a tf.function reuses it.

    In float64, against ``np.linalg.solve`` on the explicit Hessian. Derived bound: CG's residual r
    gives ‖x − x*‖ ≤ ‖r‖/λ_min, and roundoff at most κ(A) times the products' relative error
    (within 1e6 u: the product tests of this file hold float32 products to 1e-4 = 1700 u).
    """
    model, observations = _tiny_policy(ACTION_SPACES[space_name])
    variables = model.policy_variables
    n = ops.num_elements(variables)
    hessian = _reference_hessian(model, observations)
    kl_fn = _package_kl_fn(model, observations)
    damping = 0.1
    b = np.random.default_rng(5).normal(size=n)

    @tf.function
    def solve(rhs):
        fvp = ops.fisher_vector_product_fn(kl_fn, variables, damping)
        return ops.conjugate_gradient(fvp, rhs, n + 5, residual_tol=1e-12)

    x, info = solve(tf.constant(b, tf.float64))
    damped = hessian + damping * np.eye(n)
    expected = np.linalg.solve(damped, b)
    cg_bound = float(info["residual"]) / np.linalg.eigvalsh(damped)[0]
    roundoff_bound = np.linalg.cond(damped) * 1e6 * float64 * np.linalg.norm(expected)
    assert np.linalg.norm(x.numpy() - expected) <= cg_bound + roundoff_bound
    # Eagerly, the same closure gives the products of the one-shot function, bit for bit.
    fvp = ops.fisher_vector_product_fn(kl_fn, variables, damping)
    for seed in range(3):
        v = tf.constant(np.random.default_rng(seed).normal(size=n), tf.float64)
        np.testing.assert_array_equal(fvp(v).numpy(), ops.fisher_vector_product(kl_fn, variables, v, damping).numpy())
