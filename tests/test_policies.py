"""Tests of keras_trpo.policies: distribution heads checked against numpy.

Every log-probability, KL divergence and entropy is recomputed in float64 numpy
from the same raw network outputs, factor by factor (no TFP in the reference).
"""

from __future__ import annotations

import re

import gymnasium
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_trpo import policies

tfd = tfp.distributions
spaces = gymnasium.spaces

SPACES = {
    "discrete4": lambda: spaces.Discrete(4),
    "discrete3_start-1": lambda: spaces.Discrete(3, start=-1),
    "box2": lambda: spaces.Box(low=-np.inf, high=np.inf, shape=(2,), dtype=np.float32),
    "box2x3": lambda: spaces.Box(low=-np.inf, high=np.inf, shape=(2, 3), dtype=np.float32),
    "multidiscrete": lambda: spaces.MultiDiscrete([2, 3, 4]),
    "multidiscrete_start": lambda: spaces.MultiDiscrete([2, 3, 4], start=[-1, 0, 2]),
    "multibinary": lambda: spaces.MultiBinary(3),
}
SPACE_NAMES = list(SPACES)


# --------------------------------------------------------------------------
# Independent numpy reference (float64)
# --------------------------------------------------------------------------
def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0.0, -x)


def _categorical_slices(space):
    """Per-factor (offset, n) slices of the flat logits of a MultiDiscrete space."""
    slices, offset = [], 0
    for n in np.asarray(space.nvec).tolist():
        slices.append((offset, n))
        offset += n
    return slices


def _expected_num_outputs(space):
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    return int(np.prod(space.shape))


def _gaussian_parts(space, outputs, log_std):
    n = outputs.shape[0]
    mean = np.asarray(outputs, np.float64).reshape(n, *space.shape)
    ls = np.broadcast_to(np.asarray(log_std, np.float64).reshape(space.shape), mean.shape)
    return mean, ls


def _sum_event(x, n):
    return np.asarray(x).reshape(n, -1).sum(axis=1)


def ref_log_prob(space, outputs, log_std, actions):
    """log π(a) for raw network ``outputs`` [N, num_outputs] and raw space actions."""
    n = outputs.shape[0]
    rows = np.arange(n)
    if isinstance(space, spaces.Discrete):
        return _log_softmax(outputs)[rows, np.asarray(actions) - int(space.start)]
    if isinstance(space, spaces.Box):
        mean, ls = _gaussian_parts(space, outputs, log_std)
        a = np.asarray(actions, np.float64)
        density = -0.5 * ((a - mean) / np.exp(ls)) ** 2 - ls - 0.5 * np.log(2 * np.pi)
        return _sum_event(density, n)
    if isinstance(space, spaces.MultiDiscrete):
        index = np.asarray(actions) - np.asarray(space.start)
        total = np.zeros(n)
        for k, (offset, width) in enumerate(_categorical_slices(space)):
            total += _log_softmax(outputs[:, offset : offset + width])[rows, index[:, k]]
        return total
    if isinstance(space, spaces.MultiBinary):
        logits = np.asarray(outputs, np.float64).reshape(n, *space.shape)
        a = np.asarray(actions, np.float64)
        return _sum_event(a * _log_sigmoid(logits) + (1 - a) * _log_sigmoid(-logits), n)
    raise AssertionError(space)


def _categorical_kl(a_logits, b_logits):
    lp, lq = _log_softmax(a_logits), _log_softmax(b_logits)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def _categorical_entropy(logits):
    lp = _log_softmax(logits)
    return -(np.exp(lp) * lp).sum(axis=-1)


def ref_kl(space, out_old, ls_old, out_new, ls_new):
    """Analytic KL(old‖new), summed over independent factors."""
    n = out_old.shape[0]
    if isinstance(space, spaces.Discrete):
        return _categorical_kl(out_old, out_new)
    if isinstance(space, spaces.Box):
        m1, s1 = _gaussian_parts(space, out_old, ls_old)
        m2, s2 = _gaussian_parts(space, out_new, ls_new)
        kl = s2 - s1 + (np.exp(2 * s1) + (m1 - m2) ** 2) / (2 * np.exp(2 * s2)) - 0.5
        return _sum_event(kl, n)
    if isinstance(space, spaces.MultiDiscrete):
        return sum(
            _categorical_kl(out_old[:, o : o + w], out_new[:, o : o + w])
            for o, w in _categorical_slices(space)
        )
    if isinstance(space, spaces.MultiBinary):
        la = np.asarray(out_old, np.float64).reshape(n, *space.shape)
        lb = np.asarray(out_new, np.float64).reshape(n, *space.shape)
        p = np.exp(_log_sigmoid(la))
        kl = p * (_log_sigmoid(la) - _log_sigmoid(lb)) + (1 - p) * (_log_sigmoid(-la) - _log_sigmoid(-lb))
        return _sum_event(kl, n)
    raise AssertionError(space)


def ref_entropy(space, outputs, log_std):
    n = outputs.shape[0]
    if isinstance(space, spaces.Discrete):
        return _categorical_entropy(outputs)
    if isinstance(space, spaces.Box):
        _, ls = _gaussian_parts(space, outputs, log_std)
        return _sum_event(0.5 * np.log(2 * np.pi * np.e) + ls, n)
    if isinstance(space, spaces.MultiDiscrete):
        return sum(_categorical_entropy(outputs[:, o : o + w]) for o, w in _categorical_slices(space))
    if isinstance(space, spaces.MultiBinary):
        logits = np.asarray(outputs, np.float64).reshape(n, *space.shape)
        p, lp, lq = np.exp(_log_sigmoid(logits)), _log_sigmoid(logits), _log_sigmoid(-logits)
        return _sum_event(-(p * lp + (1 - p) * lq), n)
    raise AssertionError(space)


def ref_mode(space, outputs):
    n = outputs.shape[0]
    if isinstance(space, spaces.Discrete):
        return np.argmax(outputs, axis=-1) + int(space.start)
    if isinstance(space, spaces.Box):
        return outputs.reshape(n, *space.shape)
    if isinstance(space, spaces.MultiDiscrete):
        cols = [np.argmax(outputs[:, o : o + w], axis=-1) for o, w in _categorical_slices(space)]
        return np.stack(cols, axis=-1) + np.asarray(space.start)
    if isinstance(space, spaces.MultiBinary):
        return (outputs.reshape(n, *space.shape) > 0).astype(np.int64)
    raise AssertionError(space)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------
def _random_outputs(head, n, seed, scale=1.5):
    rng = np.random.default_rng(seed)
    outputs = rng.normal(scale=scale, size=(n, head.num_outputs)).astype(np.float32)
    log_std = rng.normal(scale=0.3, size=(head.num_outputs,)).astype(np.float32) if head.has_log_std else None
    return outputs, log_std


def _params(head, outputs, log_std):
    return head.params(tf.constant(outputs), None if log_std is None else tf.constant(log_std))


def _sample_space(space, n, seed=0):
    space.seed(seed)
    return np.stack([np.asarray(space.sample()) for _ in range(n)])


# --------------------------------------------------------------------------
# Shapes and log-probabilities
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_num_outputs(name):
    space = SPACES[name]()
    head = policies.make_head(space)
    assert head.num_outputs == _expected_num_outputs(space)
    assert head.action_shape == tuple(space.shape)
    assert head.has_log_std == isinstance(space, spaces.Box)


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_log_prob_shapes_and_values_on_space_samples(name):
    space = SPACES[name]()
    head = policies.make_head(space)
    n = 16
    outputs, log_std = _random_outputs(head, n, seed=1)
    dist = head.distribution(_params(head, outputs, log_std))
    assert dist.batch_shape == [n]
    assert dist.event_shape == list(space.shape)
    actions = _sample_space(space, n)
    log_prob = dist.log_prob(head.cast_actions(actions))
    assert log_prob.shape == [n]
    np.testing.assert_allclose(
        log_prob.numpy(), ref_log_prob(space, outputs, log_std, actions), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", ["discrete3_start-1", "multidiscrete_start"])
def test_cast_actions_removes_start_offset(name):
    space = SPACES[name]()
    head = policies.make_head(space)
    actions = _sample_space(space, 50, seed=3)
    index = head.cast_actions(actions).numpy()
    assert index.dtype == np.int32
    np.testing.assert_array_equal(index, actions - np.asarray(space.start))
    assert index.min() >= 0
    assert np.all(index < (np.asarray(space.nvec) if hasattr(space, "nvec") else space.n))


# --------------------------------------------------------------------------
# KL divergence and entropy
# --------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.5, 20.0])
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_kl_divergence_matches_analytic(name, scale):
    space = SPACES[name]()
    head = policies.make_head(space)
    n = 32
    out_old, ls_old = _random_outputs(head, n, seed=4, scale=scale)
    out_new, ls_new = _random_outputs(head, n, seed=5, scale=scale)
    old = head.distribution(_params(head, out_old, ls_old))
    new = head.distribution(_params(head, out_new, ls_new))
    kl = tfd.kl_divergence(old, new).numpy()
    assert kl.shape == (n,)
    assert np.all(np.isfinite(kl))
    expected = ref_kl(space, out_old, ls_old, out_new, ls_new)
    assert np.all(expected > 0)
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-5)
    # KL(p‖p) = 0.
    self_kl = tfd.kl_divergence(old, head.distribution(_params(head, out_old, ls_old))).numpy()
    np.testing.assert_allclose(self_kl, 0.0, atol=1e-5)


@pytest.mark.parametrize("scale", [1.5, 20.0])
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_entropy_matches_analytic(name, scale):
    space = SPACES[name]()
    head = policies.make_head(space)
    n = 32
    outputs, log_std = _random_outputs(head, n, seed=6, scale=scale)
    entropy = head.distribution(_params(head, outputs, log_std)).entropy().numpy()
    assert entropy.shape == (n,)
    assert np.all(np.isfinite(entropy))
    np.testing.assert_allclose(entropy, ref_entropy(space, outputs, log_std), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["multidiscrete", "multidiscrete_start"])
def test_multidiscrete_padding_is_invisible(name):
    """The -1e9 padding logits: zero probability, finite KL/entropy and finite derivatives."""
    space = SPACES[name]()
    head = policies.make_head(space)
    n = 8
    out_old, _ = _random_outputs(head, n, seed=7)
    out_new, _ = _random_outputs(head, n, seed=8)
    old = head.distribution(_params(head, out_old, None))
    # Factor probabilities: each factor's real entries sum to 1, padding gets 0.
    probs = old.distribution.probs_parameter().numpy()  # [N, K, max(nvec)]
    for k, (offset, width) in enumerate(_categorical_slices(space)):
        expected = np.exp(_log_softmax(out_old[:, offset : offset + width]))
        np.testing.assert_allclose(probs[:, k, :width], expected, rtol=1e-5)
        assert np.all(probs[:, k, width:] == 0.0)
    # KL and its first and second derivatives w.r.t. the new logits are finite.
    logits = tf.Variable(out_new)
    v = tf.constant(np.random.default_rng(9).normal(size=out_new.shape).astype(np.float32))
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            kl = tf.reduce_mean(tfd.kl_divergence(old, head.distribution(head.params(logits))))
        grad = inner.gradient(kl, logits)
        grad_dot_v = tf.reduce_sum(grad * v)
    hvp = outer.gradient(grad_dot_v, logits)
    np.testing.assert_allclose(float(kl), ref_kl(space, out_old, None, out_new, None).mean(), rtol=1e-5)
    assert np.all(np.isfinite(grad.numpy())) and np.all(np.isfinite(hvp.numpy()))
    # Independent gradient: d KL / d new_logits = (q - p) / N per factor.
    expected_grad = np.concatenate(
        [
            np.exp(_log_softmax(out_new[:, o : o + w])) - np.exp(_log_softmax(out_old[:, o : o + w]))
            for o, w in _categorical_slices(space)
        ],
        axis=-1,
    ) / n
    np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------
# Mode
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_mode(name):
    space = SPACES[name]()
    head = policies.make_head(space)
    n = 64
    outputs, log_std = _random_outputs(head, n, seed=10)
    mode = head.mode(_params(head, outputs, log_std)).numpy()
    expected = ref_mode(space, outputs)
    assert mode.shape == (n, *space.shape)
    if head.integer_actions:
        assert np.issubdtype(mode.dtype, np.integer)
        np.testing.assert_array_equal(mode, expected)
    else:
        np.testing.assert_allclose(mode, expected, rtol=1e-6)
    for row in mode:
        assert space.contains(np.asarray(row).astype(space.dtype))


# --------------------------------------------------------------------------
# Numpy sampling (the acting path)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACE_NAMES)
def test_numpy_sample_in_space_and_matches_distribution(name):
    space = SPACES[name]()
    head = policies.make_head(space)
    per_group = 10_000
    # Two different parameter rows, each repeated: checks per-row parameters are used.
    base, log_std = _random_outputs(head, 2, seed=11)
    outputs = np.repeat(base, per_group, axis=0)
    numpy_params = {k: v.numpy() for k, v in _params(head, outputs, log_std).items()}
    samples = head.numpy_sample(numpy_params, np.random.default_rng(0))
    assert samples.shape == (2 * per_group, *space.shape)
    # Inside the space (every row).
    # numpy_sample already returns the space's dtype: no cast needed.
    for row in samples:
        assert space.contains(row), row
    # The samples are valid inputs of log_prob (finite).
    dist = head.distribution(_params(head, outputs, log_std))
    assert np.all(np.isfinite(dist.log_prob(head.cast_actions(samples)).numpy()))

    for g in range(2):
        group = samples[g * per_group : (g + 1) * per_group]
        raw = base[g]
        if isinstance(space, spaces.Discrete):
            p = np.exp(_log_softmax(raw))
            freq = np.bincount(group - int(space.start), minlength=space.n) / per_group
            np.testing.assert_allclose(freq, p, atol=0.02)
        elif isinstance(space, spaces.MultiDiscrete):
            index = group - np.asarray(space.start)
            factor_probs = []
            for k, (o, w) in enumerate(_categorical_slices(space)):
                p = np.exp(_log_softmax(raw[o : o + w]))
                factor_probs.append(p)
                np.testing.assert_allclose(np.bincount(index[:, k], minlength=w) / per_group, p, atol=0.02)
            # Factors are independent: joint of the first two = outer product.
            joint = np.zeros((space.nvec[0], space.nvec[1]))
            np.add.at(joint, (index[:, 0], index[:, 1]), 1.0 / per_group)
            np.testing.assert_allclose(joint, np.outer(factor_probs[0], factor_probs[1]), atol=0.02)
        elif isinstance(space, spaces.MultiBinary):
            p = np.exp(_log_sigmoid(raw.reshape(space.shape)))
            np.testing.assert_allclose(group.mean(axis=0), p, atol=0.02)
        else:
            mean = raw.reshape(space.shape)
            std = np.exp(log_std.astype(np.float64)).reshape(space.shape)
            np.testing.assert_allclose(group.mean(axis=0), mean, atol=0.05)
            np.testing.assert_allclose(group.std(axis=0), std, atol=0.05)


def test_numpy_sample_is_reproducible_with_seeded_rng():
    head = policies.make_head(spaces.MultiDiscrete([2, 3, 4]))
    outputs, _ = _random_outputs(head, 50, seed=12)
    params = {k: v.numpy() for k, v in head.params(tf.constant(outputs)).items()}
    a = head.numpy_sample(params, np.random.default_rng(3))
    b = head.numpy_sample(params, np.random.default_rng(3))
    c = head.numpy_sample(params, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --------------------------------------------------------------------------
# Unsupported spaces
# --------------------------------------------------------------------------
UNSUPPORTED = {
    "Dict": lambda: spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Box(-1.0, 1.0, (2,))}),
    "Tuple": lambda: spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))),
    "Text": lambda: spaces.Text(5),
    "Graph": lambda: spaces.Graph(node_space=spaces.Box(-1.0, 1.0, (2,)), edge_space=spaces.Discrete(2)),
    "Sequence": lambda: spaces.Sequence(spaces.Discrete(2)),
}


@pytest.mark.parametrize("class_name", sorted(UNSUPPORTED))
def test_unsupported_action_space_raises_type_error(class_name):
    space = UNSUPPORTED[class_name]()
    assert type(space).__name__ == class_name
    with pytest.raises(TypeError) as excinfo:
        policies.make_head(space)
    message = str(excinfo.value)
    assert re.search(rf"\b{class_name}\b", message)
    for supported in ("Discrete", "Box", "MultiDiscrete", "MultiBinary"):
        assert re.search(rf"\b{supported}\b", message), (supported, message)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_integer_box_action_space_raises_type_error(dtype):
    space = spaces.Box(low=0, high=5, shape=(2,), dtype=dtype)
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        policies.make_head(space)


def test_multidiscrete_with_2d_nvec_raises_type_error():
    with pytest.raises(TypeError, match="1-D nvec"):
        policies.make_head(spaces.MultiDiscrete([[2, 3], [4, 5]]))
