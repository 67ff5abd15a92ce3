"""The TRPO update's math, checked against independent float64 numpy computations.

Only public behaviour is used (``TRPO(...)``, ``compile``, ``train_step``,
``policy_variables``, ``distribution_params``, ``weights``), so these tests do not
depend on how the update is split into modules. Every reference value here is
computed in numpy from the distribution parameters or the weights; nothing calls
keras_trpo's own KL, Fisher-vector product, conjugate gradient or line search.
"""

import itertools

import keras
import numpy as np
import pytest
from gymnasium import spaces

import keras_trpo


def _model(observation_space, action_space, **kwargs):
    kwargs = {"value_hidden_units": (), "value_epochs": 1, "seed": 0, **kwargs}
    model = keras_trpo.TRPO(observation_space, action_space, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def _batch(observations, actions, advantages):
    n = len(observations)
    return {
        "observations": np.asarray(observations, np.float32),
        "actions": actions,
        "advantages": np.asarray(advantages, np.float32),
        "returns": np.zeros(n, np.float32),
    }


def _gaussian_params(model, observations):
    """(mean, std) of the policy on ``observations`` as float64 arrays of shape [N, dims]."""
    params = model.distribution_params(observations)
    mean = np.asarray(params["mean"], np.float64)
    std = np.exp(np.broadcast_to(np.asarray(params["log_std"], np.float64), mean.shape))
    return mean, std


def _gaussian_kl(p, q):
    """Mean over samples of KL(p‖q) for diagonal Gaussians given as (mean, std) [N, dims]."""
    (mp, sp), (mq, sq) = p, q
    per_dim = np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2.0 * sq**2) - 0.5
    return float(np.mean(np.sum(per_dim, axis=1)))


def _flat_policy(model):
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in model.policy_variables])


def _cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


# --------------------------------------------------------------------------
# 1. The trust region is KL(old‖new), in that direction
# --------------------------------------------------------------------------
def test_logged_kl_is_the_mean_kl_from_old_to_new_policy():
    """Catches: the update computing KL(new‖old), not KL(old‖new) (the kl_divergence arguments swapped).

    Actions far from the mean (2.5σ) with advantages that reward distance make the
    step widen σ, and for a change of σ the two KL directions differ by ~25%.
    """
    rng = np.random.default_rng(0)
    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = spaces.Box(-5.0, 5.0, (2,), np.float32)
    model = _model(observation_space, action_space, hidden_units=(8,), max_kl=0.05)
    n = 64
    observations = rng.normal(size=(n, 3)).astype(np.float32)
    old = _gaussian_params(model, observations)
    noise = rng.normal(size=(n, 2))
    actions = (old[0] + 2.5 * old[1] * noise).astype(np.float32)
    advantages = np.sum(noise**2, axis=1) - 2.0

    logs = model.train_step(_batch(observations, actions, advantages))
    assert float(logs["step_accepted"]) == 1.0, "precondition: the step must be accepted"

    new = _gaussian_params(model, observations)
    assert np.max(np.abs(np.log(new[1]) - np.log(old[1]))) > 0.05, "precondition: log_std must move"
    kl_old_new, kl_new_old = _gaussian_kl(old, new), _gaussian_kl(new, old)
    logged = float(logs["kl"])
    # The two directions must be distinguishable at the tolerance used below.
    assert abs(kl_new_old - kl_old_new) > 100 * 1e-4 * kl_old_new
    assert logged == pytest.approx(kl_old_new, rel=1e-4)
    assert logged != pytest.approx(kl_new_old, rel=1e-4)


# --------------------------------------------------------------------------
# 2. The line search needs a positive surrogate improvement, not only KL ≤ δ
# --------------------------------------------------------------------------
def test_line_search_rejects_steps_that_keep_kl_but_lower_the_surrogate():
    """Catches: the line search accepting on ``kl <= max_kl`` alone (``surrogate - surrogate_old > 0`` cut).

    Construction: observations all zero, so the Gaussian mean is the output bias
    (μ0 = 0, σ0 = 1); every action is μ0 + σ0 = 1 with advantage +1, so the
    log-std gradient is zero and only the bias moves. With max_kl = 40 the full
    natural step moves the mean by ~9, far past the one sampled action: every
    trial fraction keeps KL ≤ δ but ends with the mean beyond 2, where the
    surrogate is below its old value. The update must be rejected and change nothing.
    """
    max_kl, damping, coefficient, iterations = 40.0, 0.1, 0.8, 5
    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Box(-10.0, 10.0, (1,), np.float32)
    model = _model(
        observation_space,
        action_space,
        hidden_units=(),
        log_std_init=0.0,
        normalize_advantages=False,
        max_kl=max_kl,
        damping=damping,
        backtrack_coefficient=coefficient,
        backtrack_iterations=iterations,
    )
    n = 8
    observations = np.zeros((n, 2), np.float32)
    (mean0,), (std0,) = (np.unique(p) for p in _gaussian_params(model, observations))
    actions = np.full((n, 1), mean0 + std0, np.float32)
    advantages = np.ones(n)

    # Independent precondition (float64). Per sample, with z = (a − μ)/σ:
    # ∂ratio/∂μ = z/σ and ∂ratio/∂log σ = z² − 1 = 0 at θ_old. The Fisher of the mean
    # is 1/σ², so CG on (F + λI) s = g gives s = g / (1/σ² + λ) along the bias only.
    # The full step is √(2δ / sᵀAs)·s; we accept either A = F + λI (damped curvature)
    # or A = F (the paper's sᵀFs): the precondition must hold for both.
    g = np.mean(advantages * (actions[:, 0] - mean0) / std0**2)
    fisher = 1.0 / std0**2
    s = g / (fisher + damping)

    def surrogate(mean):
        log_ratio = -((actions[:, 0] - mean) ** 2 - (actions[:, 0] - mean0) ** 2) / (2 * std0**2)
        return float(np.mean(np.exp(log_ratio) * advantages))

    for curvature in (s * (fisher + damping) * s, s * fisher * s):
        full_step = np.sqrt(2 * max_kl / curvature) * s
        for j in range(iterations):
            mean = mean0 + coefficient**j * full_step
            kl = (mean - mean0) ** 2 / (2 * std0**2)
            assert kl <= max_kl * (1 + 1e-12), (j, kl)
            assert surrogate(mean) < surrogate(mean0), (j, mean)

    weights_before = {w.path: np.array(w) for w in model.weights}
    optimizer_before = [np.array(v) for v in model.optimizer.variables]
    logs = model.train_step(_batch(observations, actions, advantages))

    assert float(logs["step_accepted"]) == 0.0, (
        "accepted a step that lowers the surrogate: surrogate_improvement "
        f"{float(logs['surrogate_improvement'])}, kl {float(logs['kl'])}"
    )
    assert float(logs["rejection_reason"]) == 3.0
    # Every weight bit for bit, except the update counter (it counts rejected updates too).
    changed = [
        w.path
        for w in model.weights
        if "policy_version" not in w.path and np.array(w).tobytes() != weights_before[w.path].tobytes()
    ]
    assert changed == [], f"a rejected update changed {changed}"
    for before, variable in zip(optimizer_before, model.optimizer.variables):
        assert before.tobytes() == np.array(variable).tobytes(), variable.path


# --------------------------------------------------------------------------
# 3. The Fisher-vector products use a fresh random subsample of the batch
# --------------------------------------------------------------------------
ENVS, HORIZON = 8, 2  # batch rows t * ENVS + e, time-major: row r belongs to sub-env r % ENVS


def _categorical_linear_fisher_terms(theta, observations, actions, advantages, num_actions):
    """For logits = x W + b (θ = [W row-major, b]): g and the per-row Fisher matrices, in float64."""
    n, dims = observations.shape
    kernel, bias = theta[: dims * num_actions].reshape(dims, num_actions), theta[dims * num_actions :]
    logits = observations @ kernel + bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    eye = np.eye(num_actions)
    gradient, fishers = np.zeros(theta.size), []
    for i in range(n):
        jacobian = np.zeros((num_actions, theta.size))  # ∂logits_i / ∂θ
        for a in range(num_actions):
            jacobian[a, a : dims * num_actions : num_actions] = observations[i]
            jacobian[a, dims * num_actions + a] = 1.0
        gradient += advantages[i] * jacobian.T @ (eye[actions[i]] - p[i]) / n
        fishers.append(jacobian.T @ (np.diag(p[i]) - np.outer(p[i], p[i])) @ jacobian)
    return gradient, fishers


def test_fisher_vector_products_use_a_fresh_random_subsample_across_sub_envs():
    """Catches: FVP rows picked by a fixed stride (``o[::stride]``: rows 0 and 8, one sub-env) or all rows.

    Contract: with ``fvp_fraction=f`` each update's Fisher-vector products use a
    random subset of about f·N rows, drawn afresh each update, from all
    sub-environments. With 6 parameters and 50 CG iterations, CG solves
    (F_S + λI) s = g exactly, so the step direction identifies the subset S:
    we try every subset of 1 to 2·f·N rows in numpy and keep the best match
    (so a subsample whose size varies, e.g. a Bernoulli mask, must stay within that).
    """
    num_actions, dims, n = 2, 2, ENVS * HORIZON
    fraction, damping = 0.125, 1e-3
    model = _model(
        spaces.Box(-np.inf, np.inf, (dims,), np.float32),
        spaces.Discrete(num_actions),
        hidden_units=(),
        max_kl=1e-3,
        damping=damping,
        cg_iterations=50,
        fvp_fraction=fraction,
        normalize_advantages=False,
        backtrack_iterations=40,
    )
    assert [tuple(v.shape) for v in model.policy_variables] == [(dims, num_actions), (num_actions,)]
    max_rows = int(round(2 * fraction * n))
    candidates = [s for k in range(1, max_rows + 1) for s in itertools.combinations(range(n), k)]
    rng = np.random.default_rng(1)
    identified = []
    for update in range(5):
        observations = rng.normal(0.0, 2.0, size=(n, dims)).astype(np.float32)
        actions = rng.integers(0, num_actions, n)
        advantages = rng.normal(size=n).astype(np.float32)
        theta = _flat_policy(model)
        g, fishers = _categorical_linear_fisher_terms(
            theta, observations.astype(np.float64), actions, advantages.astype(np.float64), num_actions
        )

        def solve(rows):
            fisher = np.mean([fishers[i] for i in rows], axis=0)
            return np.linalg.solve(fisher + damping * np.eye(theta.size), g)

        logs = model.train_step(_batch(observations, actions.astype(np.int64), advantages))
        assert float(logs["step_accepted"]) == 1.0, f"update {update}: precondition, the step is accepted"
        step = _flat_policy(model) - theta
        scores = [_cos(step, solve(rows)) for rows in candidates]
        best = int(np.argmax(scores))
        cos_full = _cos(step, solve(range(n)))
        assert scores[best] > 0.99999, (
            f"update {update}: no subset of <= {max_rows} rows explains the step "
            f"(best cos {scores[best]:.7f} for rows {candidates[best]})"
        )
        assert cos_full < 0.999, f"update {update}: the step is the full-batch one (cos {cos_full})"
        identified.append(candidates[best])

    sub_envs = [sorted({row % ENVS for row in rows}) for rows in identified]
    assert len(set(identified)) > 1, f"the same FVP rows {identified[0]} were used in every update"
    assert any(len(envs) > 1 for envs in sub_envs), f"every FVP subset lies in one sub-env: {identified}"


def test_a_rejected_update_with_an_fvp_subsample_consumes_no_random_state():
    """Catches: FVP rows drawn from the model's SeedGenerator (a rejected update would then advance it).

    "A rejected update changes nothing" includes the random stream that shuffles the
    critic's minibatches, which is saved with the model.
    """
    model = _model(spaces.Box(-1, 1, (2,), np.float32), spaces.Discrete(3), hidden_units=(), fvp_fraction=0.25)
    rng = np.random.default_rng(0)
    batch = _batch(rng.normal(size=(16, 2)), rng.integers(0, 3, 16), rng.normal(size=16))
    model.damping = -1e3  # negative-definite F + λI: CG breaks down, the update is rejected (reason 2)
    seed_state = np.array(model.seed_generator.state.numpy())
    weights = [np.array(w) for w in model.weights if w.name != "policy_version"]
    logs = model.train_step(batch)
    assert float(logs["rejection_reason"]) == 2.0
    np.testing.assert_array_equal(model.seed_generator.state.numpy(), seed_state)
    for before, after in zip(weights, [w for w in model.weights if w.name != "policy_version"]):
        np.testing.assert_array_equal(before, np.array(after))
