"""The TRPO Keras model: one train_step checked against explicit matrices."""

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from gymnasium import spaces

import keras_trpo
from keras_trpo import ops

from helpers import assert_bit_identical, snapshot

OBS = spaces.Box(-np.inf, np.inf, (3,), np.float32)


def tiny_model(action_space, **kwargs):
    kwargs = {"hidden_units": (4,), "value_hidden_units": (4,), "seed": 0, **kwargs}
    model = keras_trpo.TRPO(OBS, action_space, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def random_batch(model, n=64, seed=0):
    rng = np.random.default_rng(seed)
    model.action_space.seed(seed)
    observations = rng.normal(size=(n, *model.observation_shape)).astype(np.float32)
    actions = np.stack([model.action_space.sample() for _ in range(n)])
    return {
        "observations": observations,
        "actions": actions,
        "advantages": rng.normal(size=n).astype(np.float32),
        "returns": (observations.sum(axis=1) + rng.normal(size=n)).astype(np.float32),
    }


def explicit_fisher_and_gradient(model, batch):
    """F = Hessian of mean KL(old‖new) at θ_old via jacobian, and g = ∇ surrogate, with plain tapes."""
    variables = model.policy_variables
    obs = tf.constant(batch["observations"])
    actions = model.head.cast_actions(batch["actions"])
    adv = tf.constant(batch["advantages"], keras.config.floatx())  # float64 under the float64 fixture
    adv = (adv - tf.reduce_mean(adv)) / (tf.math.reduce_std(adv) + 1e-8)
    old = tf.nest.map_structure(tf.stop_gradient, model.distribution_params(obs))
    old_dist = model.head.distribution(old)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            kl = tf.reduce_mean(tfp.distributions.kl_divergence(old_dist, model.distribution(obs)))
        grad = tf.concat([tf.reshape(t, [-1]) for t in inner.gradient(kl, variables)], 0)
    jac = outer.jacobian(grad, variables)
    fisher = tf.concat([tf.reshape(j, [grad.shape[0], -1]) for j in jac], axis=1).numpy()
    with tf.GradientTape() as tape:
        new_dist = model.distribution(obs)
        surrogate = tf.reduce_mean(tf.exp(new_dist.log_prob(actions) - old_dist.log_prob(actions)) * adv)
    g = tf.concat([tf.reshape(t, [-1]) for t in tape.gradient(surrogate, variables)], 0).numpy()
    return fisher.astype(np.float64), g.astype(np.float64)


ACTION_SPACES = {
    "discrete": spaces.Discrete(3),
    "box": spaces.Box(-1.0, 1.0, (2,), np.float32),
}


# --------------------------------------------------------------------------
# Acceptance 3: the step is the natural gradient, scaled to the trust region
# --------------------------------------------------------------------------
@pytest.mark.parametrize("space_name,max_kl", [("discrete", 0.01), ("box", 0.01), ("box", 1.0)])
def test_step_is_scaled_natural_gradient(space_name, max_kl, float64):
    """In float64: the step is √(2δ / sᵀAs)·s with s = A⁻¹g, A = F + λI from the explicit Fisher.

    The bound is derived. CG stops with a residual r = g − A s_cg (logged as ``cg_residual``), so
    s_cg − s = −A⁻¹r and ‖s_cg − s‖_A ≤ ‖r‖/√λ_min; scaling to the trust region normalizes in the
    A-norm, which at most doubles a relative A-norm error; back in the 2-norm that is
    ‖step − expected‖ ≤ 2‖r‖ / (λ_min ‖s‖) · ‖expected‖. Roundoff adds at most κ(A) times the inputs'
    relative error (g and the Fisher products, within 1e6 u; measured in float32: <= 300 u).
    """
    model = tiny_model(ACTION_SPACES[space_name], max_kl=max_kl, damping=0.1)
    num_params = ops.num_elements(model.policy_variables)
    assert num_params <= 100
    model.cg_iterations = num_params + 5
    batch = random_batch(model)
    fisher, g = explicit_fisher_and_gradient(model, batch)
    theta_before = np.concatenate([v.reshape(-1) for v in snapshot(model.policy_variables).values()]).astype(np.float64)

    logs = model.train_step(batch)

    theta_after = np.concatenate([v.numpy().reshape(-1) for v in model.policy_variables]).astype(np.float64)
    step = theta_after - theta_before
    damped = fisher + model.damping * np.eye(num_params)
    s = np.linalg.solve(damped, g)
    cosine = step @ s / (np.linalg.norm(step) * np.linalg.norm(s))
    assert float(logs["step_accepted"]) == 1.0
    assert cosine >= 0.99
    assert float(logs["kl"]) <= max_kl
    assert float(logs["surrogate_improvement"]) > 0
    j = int(logs["line_search_steps"])
    expected = model.backtrack_coefficient**j * np.sqrt(2 * max_kl / (s @ damped @ s)) * s
    cg_bound = 2 * float(logs["cg_residual"]) / (np.linalg.eigvalsh(damped)[0] * np.linalg.norm(s))
    roundoff_bound = np.linalg.cond(damped) * 1e6 * float64
    assert np.linalg.norm(step - expected) <= (cg_bound + roundoff_bound) * np.linalg.norm(expected)
    # The reported KL is the true mean KL(old‖new) between the two parameter vectors.
    assert float(logs["step_fraction"]) == pytest.approx(model.backtrack_coefficient**j)


def test_backtracking_shrinks_when_the_quadratic_model_overshoots():
    # Box with a large radius: the full step violates the KL bound, so the search must shrink.
    model = tiny_model(ACTION_SPACES["box"], max_kl=1.0)
    logs = model.train_step(random_batch(model))
    assert float(logs["line_search_steps"]) >= 1
    assert float(logs["step_accepted"]) == 1.0
    assert float(logs["kl"]) <= 1.0


# --------------------------------------------------------------------------
# Acceptance 4: rejected updates leave the policy bit-identical
# --------------------------------------------------------------------------
def _rejected(model, batch, reason):
    """Catches: the critic step (run beside the policy step) not undone after a rejection.

    Everything an update writes must come out bit-identical: the policy, the critic, the
    critic optimizer's slots and step counter, and the minibatch-shuffle seed.
    """
    assert model.value_epochs > 0  # the critic step runs and would move the critic if kept
    written = [*model.policy_variables, *model.value_variables, *model.optimizer.variables, model.seed_generator.state]
    before = snapshot(written)
    logs = model.train_step(batch)
    assert float(logs["step_accepted"]) == 0.0
    assert float(logs["rejection_reason"]) == reason, keras_trpo.REJECTION_REASONS
    assert_bit_identical(before, written)
    return logs


def test_failed_line_search_restores_parameters_exactly():
    # A radius so large that every trial step overflows or loses surrogate.
    model = tiny_model(ACTION_SPACES["box"], max_kl=1e6)
    logs = _rejected(model, random_batch(model), reason=3)
    assert float(logs["kl"]) == 0.0
    assert float(logs["line_search_steps"]) == model.backtrack_iterations


@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
def test_zero_policy_gradient_is_rejected(space_name):
    model = tiny_model(ACTION_SPACES[space_name], normalize_advantages=False)
    batch = random_batch(model)
    batch["advantages"] = np.zeros_like(batch["advantages"])
    _rejected(model, batch, reason=2)


@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
def test_indefinite_fisher_is_rejected(space_name):
    model = tiny_model(ACTION_SPACES[space_name])
    model.damping = -1e3  # F − 1000·I is negative definite: CG breaks down at once.
    _rejected(model, random_batch(model), reason=2)


@pytest.mark.parametrize("space_name", sorted(ACTION_SPACES))
@pytest.mark.parametrize(
    "key,bad", [("advantages", np.nan), ("observations", np.inf), ("returns", -np.inf), ("observations", np.nan)]
)
def test_non_finite_batch_changes_nothing(space_name, key, bad):
    model = tiny_model(ACTION_SPACES[space_name])
    batch = random_batch(model)
    batch[key] = batch[key].copy()
    batch[key][5] = bad
    value_before = snapshot(model.value_variables)
    iterations_before = int(model.optimizer.iterations.numpy())
    _rejected(model, batch, reason=1)
    assert_bit_identical(value_before, model.value_variables)
    assert int(model.optimizer.iterations.numpy()) == iterations_before


# --------------------------------------------------------------------------
# Acceptance 5: the critic
# --------------------------------------------------------------------------
def test_critic_learns_and_never_touches_the_policy():
    model = tiny_model(ACTION_SPACES["discrete"], value_epochs=5, max_kl=1e-4)
    # The same policy without critic training: its policy steps must come out bit for bit the same.
    no_critic = tiny_model(ACTION_SPACES["discrete"], value_epochs=0, max_kl=1e-4)
    batch = random_batch(model, n=256)
    logs = [model.train_step(batch) for _ in range(6)]
    for _ in range(6):
        no_critic.train_step(batch)
    assert [float(entry["step_accepted"]) for entry in logs] == [1.0] * 6
    losses = [float(entry["value_loss"]) for entry in logs]
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert_bit_identical(snapshot(no_critic.policy_variables), model.policy_variables)
    # The optimizer holds state for the value weights only.
    optimizer_paths = {v.path for v in model.optimizer.variables}
    for variable in model.policy_variables:
        assert not any(variable.name in path and "policy" in path for path in optimizer_paths)
    expected_slots = 2 * len(model.value_variables)  # Adam: two moments per value weight
    assert len([v for v in model.optimizer.variables if v.shape != ()]) == expected_slots


def test_critic_moves_value_weights_and_reports_explained_variance():
    model = tiny_model(ACTION_SPACES["box"])
    batch = random_batch(model, n=256)
    values_before = model.value(batch["observations"]).numpy()
    logs = model.train_step(batch)
    residual = batch["returns"] - values_before
    expected_ev = 1 - residual.var() / batch["returns"].var()
    assert float(logs["explained_variance"]) == pytest.approx(expected_ev, rel=1e-4, abs=1e-5)
    assert not np.allclose(values_before, model.value(batch["observations"]).numpy())


# --------------------------------------------------------------------------
# Acceptance 6: bad batches fail before any computation
# --------------------------------------------------------------------------
def _bad_batches():
    def drop(key):
        return lambda b: {k: v for k, v in b.items() if k != key}

    def replace(key, fn):
        return lambda b: {**b, key: fn(b[key])}

    return {
        "missing observations": (drop("observations"), "observations"),
        "missing actions": (drop("actions"), "actions"),
        "missing advantages": (drop("advantages"), "advantages"),
        "missing returns": (drop("returns"), "returns"),
        "observation width": (replace("observations", lambda x: x[:, :2]), "observations"),
        "observation rank": (replace("observations", lambda x: x[:, :, None]), "observations"),
        "advantages rank": (replace("advantages", lambda x: x[:, None]), "advantages"),
        "returns length": (replace("returns", lambda x: x[:-1]), "returns"),
        "actions shape": (replace("actions", lambda x: np.stack([x, x], axis=-1)), "actions"),
        "float actions for Discrete": (replace("actions", lambda x: x.astype(np.float32)), "actions"),
        "string observations": (replace("observations", lambda x: x.astype(str)), "observations"),
        "integer advantages": (replace("advantages", lambda x: x.astype(np.int32)), "advantages"),
    }


@pytest.mark.parametrize("case", sorted(_bad_batches()))
def test_bad_batch_raises_before_computing(case):
    make_bad, key = _bad_batches()[case]
    model = tiny_model(ACTION_SPACES["discrete"])
    weights_before = snapshot(model.weights)
    seed_state = model.seed_generator.state.numpy().copy()
    with pytest.raises(ValueError, match=key) as error:
        model.train_step(make_bad(random_batch(model)))
    if "missing" not in case:
        assert "[N" in str(error.value)  # names the expected shape
    assert model.policy_version == 0  # no update ran: the version counts completed steps
    np.testing.assert_array_equal(model.seed_generator.state.numpy(), seed_state)
    assert_bit_identical(weights_before, model.weights)


def test_box_actions_must_be_float():
    model = tiny_model(ACTION_SPACES["box"])
    batch = random_batch(model)
    batch["actions"] = np.zeros((64, 2), np.int64)
    with pytest.raises(ValueError, match=r"actions.*\[N, 2\] \(floating\)"):
        model.train_step(batch)


# --------------------------------------------------------------------------
# One trace; fit and direct calls agree
# --------------------------------------------------------------------------
def test_fit_traces_the_update_once_and_matches_eager_calls(float64):
    """Four updates through fit's traced function equal four eager train_step calls, in float64.

    The two run the same math with possibly another operation order (graph optimizations), so
    they agree to roundoff amplified by four updates, far below the 1e10 u (1.1e-6) relative bound
    (tests/test_distribute.py derives it), while a state read once at trace time (a frozen max_kl,
    a stale policy_version) is an O(1) difference.
    """
    eager = tiny_model(ACTION_SPACES["discrete"])
    compiled = tiny_model(ACTION_SPACES["discrete"])
    batches = [random_batch(eager, seed=s) for s in range(4)]
    for b in batches:
        eager.train_step(b)
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches),
        output_signature={
            "observations": tf.TensorSpec([64, 3], tf.float32),
            "actions": tf.TensorSpec([64], tf.int64),
            "advantages": tf.TensorSpec([64], tf.float32),
            "returns": tf.TensorSpec([64], tf.float32),
        },
    )
    history = compiled.fit(dataset, epochs=1, steps_per_epoch=4, verbose=0)
    assert compiled.train_function.tracing_count() == 1
    assert history.history["step_accepted"] == [1.0]
    start = tiny_model(ACTION_SPACES["discrete"])
    for a, b, c in zip(eager.policy_variables, compiled.policy_variables, start.policy_variables):
        assert np.linalg.norm(a.numpy() - b.numpy()) <= 1e10 * float64 * np.linalg.norm(a.numpy() - c.numpy())


# --------------------------------------------------------------------------
# Public API shapes, spaces and configuration
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "space",
    [
        spaces.Discrete(4),
        spaces.Box(-2.0, 2.0, (2, 2), np.float32),
        spaces.MultiDiscrete([2, 3]),
        spaces.MultiBinary(3),
    ],
    ids=["discrete", "box2d", "multidiscrete", "multibinary"],
)
def test_public_api_shapes_and_one_update(space):
    obs_space = spaces.Box(-1.0, 1.0, (2, 3), np.float32)  # any Box shape is flattened
    model = keras_trpo.TRPO(obs_space, space, hidden_units=(8,), value_hidden_units=(8,), seed=1)
    model.compile(optimizer="adam")
    obs = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    assert tuple(model(obs).shape) == (5, *space.shape)
    dist = model.distribution(obs)
    assert dist.batch_shape == (5,)
    assert model.value(obs).shape == (5,)
    policy, value = model.policy_variables, model.value_variables
    assert {id(v) for v in policy}.isdisjoint({id(v) for v in value})
    assert {id(v) for v in policy + value} == {id(v) for v in model.trainable_variables}
    space.seed(0)
    actions = np.stack([space.sample() for _ in range(32)])
    observations = np.random.default_rng(1).normal(size=(32, 2, 3)).astype(np.float32)
    assert model.distribution(observations).log_prob(model.head.cast_actions(actions)).shape == (32,)
    batch = {
        "observations": observations,
        "actions": actions,
        "advantages": np.random.default_rng(2).normal(size=32).astype(np.float32),
        "returns": np.ones(32, np.float32),
    }
    logs = model.train_step(batch)
    required = {
        "kl", "surrogate_improvement", "expected_improvement", "line_search_steps", "step_accepted",
        "cg_residual", "entropy", "value_loss", "explained_variance",
    }
    assert required <= set(logs)
    assert float(logs["step_accepted"]) == 1.0
    assert float(logs["kl"]) <= model.max_kl


def test_for_env_reads_single_spaces_of_vector_env():
    env = gymnasium.make_vec("CartPole-v1", num_envs=3)
    model = keras_trpo.TRPO.for_env(env)
    assert model.observation_shape == (4,)
    assert model.action_space == env.single_action_space
    env.close()


def test_compile_rejects_a_loss():
    model = keras_trpo.TRPO(OBS, spaces.Discrete(2))
    with pytest.raises(ValueError, match="loss"):
        model.compile(optimizer="adam", loss="mse")


def test_train_step_before_compile_says_what_to_do():
    model = keras_trpo.TRPO(OBS, spaces.Discrete(2))
    with pytest.raises(RuntimeError, match="compile"):
        model.train_step(random_batch(model))


def test_config_round_trip_rebuilds_the_same_model():
    model = keras_trpo.TRPO(OBS, spaces.Box(-1.0, 1.0, (2,), np.float32), hidden_units=(5, 6), max_kl=0.02)
    clone = keras_trpo.TRPO.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    clone.set_weights(model.get_weights())
    obs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(obs).numpy(), clone(obs).numpy())


def test_max_kl_can_change_between_updates_without_retracing():
    model = tiny_model(ACTION_SPACES["box"], max_kl=0.05)
    batch = random_batch(model)
    step = tf.function(model.train_step)
    first = step(batch)
    model.max_kl = 0.001
    second = step(batch)
    assert step.experimental_get_tracing_count() == 1
    assert float(first["kl"]) > 0.001 >= float(second["kl"])


def test_fvp_fraction_uses_a_subsample_and_still_respects_the_trust_region():
    model = tiny_model(ACTION_SPACES["discrete"], fvp_fraction=0.25)
    logs = model.train_step(random_batch(model, n=256))
    assert float(logs["step_accepted"]) == 1.0
    assert float(logs["kl"]) <= model.max_kl


def _ancestors(function_def, name):
    """Names of the nodes ``name`` depends on (data or control inputs) inside one FunctionDef."""
    inputs = {node.name: [i.lstrip("^").split(":")[0] for i in node.input] for node in function_def.node_def}
    seen, stack = set(), list(inputs[name])
    while stack:
        node = stack.pop()
        if node in inputs and node not in seen:
            seen.add(node)
            stack.extend(inputs[node])
    return seen


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_compiled_rejected_update_restores_the_critic_after_accepted_updates(jit_compile):
    """Catches: the critic (run beside the policy step when compiled) kept after a rejection.

    After two accepted updates Adam's slots and step are non-zero; a third, compiled update
    rejected by an indefinite Fisher must leave every variable an update writes bit-identical,
    the observation normalizer's statistics included.
    """
    model = tiny_model(ACTION_SPACES["box"], normalize_observations=True, fvp_fraction=0.5)
    step = tf.function(model.train_step, autograph=False, jit_compile=jit_compile)
    batch = {k: tf.constant(v) for k, v in random_batch(model).items()}
    assert [float(step(batch)["step_accepted"]) for _ in range(2)] == [1.0, 1.0]
    assert int(model.optimizer.iterations.numpy()) > 0
    written = [*model.trainable_weights, *model.non_trainable_weights, *model.optimizer.variables,
               model.seed_generator.state]
    written = [v for v in written if v.name not in ("policy_version", "damping")]
    before = snapshot(written)
    model.damping = -1e3  # F − 1000·I is negative definite: CG breaks down, reason 2
    logs = step(batch)
    assert float(logs["rejection_reason"]) == 2.0
    assert_bit_identical(before, written)


@pytest.mark.parametrize("options", [{}, {"normalize_observations": True, "fvp_fraction": 0.5}])
def test_the_critic_step_does_not_wait_for_the_policy_step(options):
    """Catches: the critic ordered after steps 1-5 (a control dependency on the line search's outcome).

    On one device the critic's while loop must depend on nothing of the conjugate gradient (nor,
    through it, on the line search), so that TensorFlow's executor runs both at once; only its
    commit (keep or restore) waits for the policy step.
    """
    model = tiny_model(ACTION_SPACES["box"], **options)
    batch = {k: tf.constant(v) for k, v in random_batch(model).items()}
    graph = tf.function(model.train_step, autograph=False).get_concrete_function(batch).graph
    library = graph.as_graph_def().library.function
    found = []
    for function_def in library:
        names = {node.name for node in function_def.node_def}
        critic_loops = [n for n in names if n.split("/")[-2:] == ["critic", "while"]]
        cg = [n for n in names if n.split("/")[-1] == "conjugate_gradient"]
        if critic_loops and cg:
            for loop in critic_loops:
                ancestors = _ancestors(function_def, loop)
                assert not [a for a in ancestors if "conjugate_gradient" in a.split("/")], (loop, ancestors)
                found.append(loop)
    assert found, "no function holds both the critic's loop and the conjugate gradient"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_a_rejected_update_logs_the_loss_of_the_critic_it_keeps(compiled):
    """Catches: a rejected update logging the loss of the critic it discarded (``undo`` returning the critic
    step's ``metrics`` instead of ``value_metrics`` of the restored critic): 12.46 logged against a true 25.67.

    After the rejection the critic is the one from before the step (bit for bit), so
    ``value_loss`` must be ``mean((V(s) − R)²)`` of that critic. The bound: the derived gap δ between two
    float32 evaluations of V moves each squared error by at most ``2|V − R|δ + δ²``, and the graph's own
    rounding of the squares and their mean is at most ``(γ_n + 3u)·loss``.
    """
    from numerics import U32, gamma, mlp_gap

    model = tiny_model(ACTION_SPACES["box"], value_epochs=3)
    batch = random_batch(model, n=128)
    errors = model.value(batch["observations"]).numpy().astype(np.float64) - batch["returns"]
    expected = np.mean(errors**2)
    delta = mlp_gap(model, batch["observations"])["value"]
    bound = np.mean(2 * np.abs(errors) * delta + delta**2) + (gamma(len(errors)) + 3 * U32) * expected
    model.damping = -1e3  # F − 1000·I is negative definite: CG breaks down, the update is rejected (reason 2)
    step = tf.function(model.train_step, autograph=False) if compiled else model.train_step
    kept = snapshot(model.value_variables)
    logs = step(batch)
    assert float(logs["rejection_reason"]) == 2.0
    assert_bit_identical(kept, model.value_variables)
    assert abs(float(logs["value_loss"]) - expected) <= bound, (
        f"value_loss {float(logs['value_loss']):.6g}; the kept critic's loss is {expected:.6g} (bound {bound:.1e})")
