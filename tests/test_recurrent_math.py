"""The recurrent update's math (issue 29), each test against an independent computation.

A tiny LSTM policy (``Box(3)`` observations, ``Discrete(3)`` actions, 4 units, no feature network) on
sequence-major batches of ``S`` sequences × ``L`` steps, with episode starts inside sequences and
padding (``sequence_mask`` False) at their ends. The float64 reference is a NumPy LSTM written here from
the LSTM equations (Hochreiter & Schmidhuber 1997; Keras' gate order i, f, c, o), not keras_trpo's code.

Bugs each test catches (each checked once by mutating the code):
- FVP vs explicit Fisher: padded steps counted in the mean KL (``ops.mean_of`` ignoring its weights), or
  no reset at episode starts inside a sequence;
- episode-start reset: ``Recurrent.unroll`` without its ``tf.where`` reset;
- padding: ``mean_of`` ignoring its weights (the surrogate and KL then move with padded rows);
- KL ≤ max_kl: the line search's ``kl <= max_kl`` condition dropped;
- old distribution = collection's: ``Rollouts`` storing the state after a step instead of before it, or
  episode starts set one step late.
"""

from __future__ import annotations

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_trpo
from keras_trpo import networks, ops, sequences, update
from keras_trpo.distribute import Replicas

EPS32 = float(np.finfo(np.float32).eps)
OBS, UNITS, ACTIONS, L, S = 3, 4, 3, 4, 3


def tiny_model(seed: int = 0, **kwargs) -> keras_trpo.TRPO:
    model = keras_trpo.TRPO(
        gymnasium.spaces.Box(-1, 1, (OBS,)), gymnasium.spaces.Discrete(ACTIONS),
        policy_network=networks.recurrent(None, units=UNITS, seed=seed),
        value_network=networks.recurrent(None, units=UNITS, seed=seed + 7),
        sequence_length=L, seed=seed, **kwargs,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def tiny_batch(model: keras_trpo.TRPO, seed: int = 0) -> dict[str, np.ndarray]:
    """``S·L`` rows: random observations, states and actions; an episode start inside sequence 0 (row 2) and 1
    (row 5); the last step of sequences 1 and 2 is padding."""
    rng = np.random.default_rng(seed)
    n = S * L
    starts = np.zeros(n, bool)
    starts[[2, 5]] = True
    mask = np.ones(n, bool)
    mask[[2 * L - 1, 3 * L - 1]] = False
    states = {name: rng.normal(0, 0.5, (n, units)).astype(np.float32) for name, units in model.state_sizes().items()}
    return {
        "observations": rng.uniform(-1, 1, (n, OBS)).astype(np.float32),
        "actions": rng.integers(0, ACTIONS, n), "advantages": rng.normal(size=n).astype(np.float32),
        "returns": rng.normal(size=n).astype(np.float32), sequences.STARTS: starts, sequences.MASK: mask, **states,
    }


def memory_of(model, batch):
    tensors = {k: tf.constant(v) for k, v in batch.items()}
    memory = {"episode_starts": tensors[sequences.STARTS], "states": {k: tensors[k] for k in model.state_sizes()}}
    return tensors, memory, tf.cast(tensors[sequences.MASK], tf.float32)


# -- the independent float64 reference ------------------------------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_logits(theta: list[np.ndarray], batch, length: int = L) -> np.ndarray:
    """Logits ``[S·L, ACTIONS]`` of the tiny LSTM policy in float64, stepping each sequence from its stored start."""
    kernel, recurrent_kernel, bias, out_kernel, out_bias = theta
    x = batch["observations"].astype(np.float64).reshape(-1, length, OBS)
    starts = batch[sequences.STARTS].reshape(-1, length)
    h = batch["policy_h"].astype(np.float64)[::length]
    c = batch["policy_c"].astype(np.float64)[::length]
    logits = []
    for t in range(length):
        h, c = np.where(starts[:, t, None], 0.0, h), np.where(starts[:, t, None], 0.0, c)
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        logits.append(h @ out_kernel + out_bias)
    return np.stack(logits, axis=1).reshape(-1, ACTIONS)


def policy_theta(model) -> list[np.ndarray]:
    cell = model.policy_layers[0].cell
    return [w.numpy().astype(np.float64) for w in (cell.kernel, cell.recurrent_kernel, cell.bias,
                                                   model.policy_output.kernel, model.policy_output.bias)]


def explicit_fisher(model, batch) -> tuple[np.ndarray, np.ndarray]:
    """``F = Σ_r w_r J_rᵀ M_r J_r / Σ w`` (``M_r = diag(p) − ppᵀ``), ``J`` by central differences in float64, and
    ``Σ_r w_r |J_r|ᵀ |M_r| |J_r| / Σ w`` (the scale of F's float32 rounding)."""
    theta = policy_theta(model)
    flat = np.concatenate([t.ravel() for t in theta])
    shapes = [t.shape for t in theta]

    def unflat(v):
        parts, k = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(v[k:k + size].reshape(shape))
            k += size
        return parts

    h = 1e-6
    base = numpy_logits(theta, batch)
    jac = np.zeros((*base.shape, flat.size))
    for j in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[j] += h
        down[j] -= h
        jac[..., j] = (numpy_logits(unflat(up), batch) - numpy_logits(unflat(down), batch)) / (2 * h)
    p = np.exp(base - base.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    metric = np.einsum("ra,ab->rab", p, np.eye(ACTIONS)) - np.einsum("ra,rb->rab", p, p)
    w = batch[sequences.MASK].astype(np.float64)
    fisher = np.einsum("r,rai,rab,rbj->ij", w, jac, metric, jac) / w.sum()
    scale = np.einsum("r,rai,rab,rbj->ij", w, np.abs(jac), np.abs(metric), np.abs(jac)) / w.sum()
    return fisher, scale


@pytest.mark.parametrize("form", ["double_backprop", "gauss_newton"])
def test_fvp_of_an_lstm_policy_equals_the_explicit_fisher_over_sequences(form):
    model = tiny_model()
    batch = tiny_batch(model)
    tensors, memory, weights = memory_of(model, batch)
    objective = update.Objective(model, Replicas(), tensors["observations"], tensors["actions"],
                                 tensors["advantages"], None, memory, weights)
    fvp = objective.fisher_vector_product(None, 0.0, form)
    fisher, fisher_scale = explicit_fisher(model, batch)
    v = np.random.default_rng(1).normal(size=fisher.shape[0])
    got = fvp(tf.constant(v, tf.float32)).numpy().astype(np.float64)
    want = fisher @ v
    # float32 rounding of the forward pass and of the products: each entry of F v sums S·L·ACTIONS² terms of
    # Jacobian products, each carried through L LSTM steps of fan-in OBS + UNITS + 1; the central differences
    # add O(h²) + O(ε64 / h) ≈ 1e-10. Bound: that many float32 roundings on |J|ᵀ|M||J| |v|.
    terms = S * L * ACTIONS**2 * L * (OBS + UNITS + 1)
    bound = terms * EPS32 * (fisher_scale @ np.abs(v)).max()
    assert np.abs(got - want).max() <= bound, (np.abs(got - want).max(), bound)
    assert np.abs(want).max() > 1e3 * bound / terms  # the products are not all tiny


def test_an_episode_start_inside_a_sequence_resets_the_state():
    model = tiny_model()
    batch = tiny_batch(model)
    _, memory, _ = memory_of(model, batch)
    before = model.distribution_params(tf.constant(batch["observations"]), None, memory)["logits"].numpy()
    changed = dict(batch, observations=batch["observations"].copy())
    changed["observations"][0:2] += 0.7  # sequence 0's rows before its episode start at row 2
    _, memory_changed, _ = memory_of(model, changed)
    after = model.distribution_params(tf.constant(changed["observations"]), None, memory_changed)["logits"].numpy()
    np.testing.assert_array_equal(after[2:], before[2:])  # exactly: the reset state is exactly zero
    assert np.abs(after[:2] - before[:2]).min() > 0  # the changed rows themselves do change
    # Without the flag, the change reaches the rows after it.
    no_start = dict(changed, **{sequences.STARTS: np.zeros(S * L, bool)})
    no_start_before = dict(batch, **{sequences.STARTS: np.zeros(S * L, bool)})
    a = model.distribution_params(tf.constant(no_start["observations"]), None, memory_of(model, no_start)[1])
    b = model.distribution_params(tf.constant(batch["observations"]), None, memory_of(model, no_start_before)[1])
    assert np.abs(a["logits"].numpy()[2:L] - b["logits"].numpy()[2:L]).min() > 0
    # And the model's one-step call, with the state it returned, agrees with the reference's reset.
    np.testing.assert_allclose(before, numpy_logits(policy_theta(model), batch), atol=1e-5)


def test_padded_steps_change_neither_the_surrogate_nor_the_kl():
    model = tiny_model()
    batch = tiny_batch(model)

    def surrogate_and_kl(b):
        tensors, memory, weights = memory_of(model, b)
        objective = update.Objective(model, Replicas(), tensors["observations"], tensors["actions"],
                                     update.normalized(Replicas(), tensors["advantages"], weights), None, memory,
                                     weights)
        theta = ops.flatten(model.policy_variables)
        ops.assign_flat(model.policy_variables, theta + 0.3 * tf.random.stateless_normal(theta.shape, (1, 2)))
        try:
            return [x.numpy() for x in objective.surrogate_and_kl()]
        finally:
            ops.assign_flat(model.policy_variables, theta)

    padded = ~batch[sequences.MASK]
    changed = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
    changed["observations"][padded] += 5.0
    changed["actions"][padded] = (changed["actions"][padded] + 1) % ACTIONS
    changed["advantages"][padded] = 100.0
    base, moved = surrogate_and_kl(batch), surrogate_and_kl(changed)
    assert base[1] > 1e-4  # the trial weights are away from the old ones: the KL is not 0
    np.testing.assert_array_equal(moved, base)
    # The same change on a real step does move them.
    real = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in batch.items()}
    real["advantages"][0] = 100.0
    assert surrogate_and_kl(real)[0] != base[0]


def test_padded_steps_change_nothing_in_a_whole_update():
    """Catches: padding in the critic's metrics or the observation normalizer's moments (``weights`` not passed to
    ``explained_variance`` / ``normalizer_step``), or in any other mean of the update."""
    results = []
    for change in (False, True):
        model = tiny_model(normalize_observations=True)
        batch = tiny_batch(model)
        if change:
            padded = ~batch[sequences.MASK]
            batch["observations"][padded] += 3.0
            batch["returns"][padded] = 50.0
            batch["advantages"][padded] = -20.0
        logs = model.train_step(batch)
        results.append(({k: float(v) for k, v in logs.items()}, [w.numpy() for w in model.weights]))
    (logs_a, weights_a), (logs_b, weights_b) = results
    assert logs_a["step_accepted"] == 1.0
    assert logs_a == logs_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
