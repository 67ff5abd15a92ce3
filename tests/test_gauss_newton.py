"""The Gauss–Newton Fisher-vector product ``(Jᵀ M J + λI) v`` against an explicit Jacobian Fisher.

The reference builds ``J`` with ``tape.jacobian`` of the distribution parameters in the
flattened policy weights and writes ``M`` (the Hessian of KL(old‖new) in the parameters at
new == old) out in numpy, head by head, independently of ``PolicyHead.kl_hessian_product``:

* Gaussian: ``1/σ²`` per mean, ``2`` per log σ;
* Categorical: ``diag(p) − ppᵀ`` (block-diagonal per factor for MultiDiscrete);
* Bernoulli: ``p(1 − p)`` per bit.

Tolerance: both sides sum at most ``K = n_params + N·P`` float32 products per entry, so each
entry's rounding error is at most ``K·ε₃₂`` times the same product taken in absolute values
(``|J|ᵀ|M||J||v|``), the standard forward error bound of a dot product; no factor is fitted.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from gymnasium import spaces

import keras_trpo
from keras_trpo import ops, update

EPS32 = float(np.finfo(np.float32).eps)
DAMPING = 0.1
N = 6

ACTIONS = {
    "Box": spaces.Box(-1.0, 1.0, (2,), np.float32),
    "Discrete": spaces.Discrete(3),
    "MultiDiscrete": spaces.MultiDiscrete([2, 3]),
    "MultiBinary": spaces.MultiBinary(3),
    "Box-sde": spaces.Box(-1.0, 1.0, (2,), np.float32),  # use_sde=True: a log σ per row, from the features
}
IMAGE = spaces.Box(0, 255, (7, 7, 3), np.uint8)
NETWORKS = {  # name: (observation space, TRPO keyword arguments)
    "mlp": (spaces.Box(-1.0, 1.0, (3,), np.float32), {"hidden_units": (5,)}),
    "cnn": (IMAGE, {"policy_network": "minigrid_cnn"}),
    "dict": (spaces.Dict({"image": IMAGE, "direction": spaces.Discrete(4)}), {"policy_network": "minigrid_cnn"}),
}
CASES = [(net, act) for net in NETWORKS for act in ACTIONS]


def _model(network: str, action: str):
    observation_space, kwargs = NETWORKS[network]
    model = keras_trpo.TRPO(observation_space, ACTIONS[action], value_hidden_units=(4,), seed=0,
                            log_std_init=-0.4, use_sde=action == "Box-sde", **kwargs)
    rng = np.random.default_rng(1)
    # Random O(1) output weights: the default 0.01-gain output layer makes the Fisher tiny.
    for variable in model.policy_output.trainable_weights:
        variable.assign(rng.normal(scale=0.5, size=tuple(variable.shape)).astype(np.float32))
    if model.log_std is not None:
        model.log_std.assign(rng.normal(scale=0.3, size=tuple(model.log_std.shape)).astype(np.float32))
    observation_space.seed(0)  # the same observations on every run
    samples = [observation_space.sample() for _ in range(N)]
    if isinstance(observation_space, spaces.Dict):
        observations = {k: tf.constant(np.stack([s[k] for s in samples])) for k in observation_space.spaces}
    else:
        observations = tf.constant(np.stack(samples))
    return model, observations


def _numpy_metric(head, params: dict) -> np.ndarray:
    """``[N, P, P]``: the Hessian of KL(old‖new) in one row's parameters (keys in sorted order)."""
    if isinstance(head, keras_trpo.policies.DiagGaussianHead):
        log_std = params["log_std"].reshape(N, -1)
        diag = np.concatenate([np.full_like(log_std, 2.0), np.exp(-2.0 * log_std)], axis=1)
        return np.stack([np.diag(d) for d in diag])
    logits = params["logits"].reshape(N, -1).astype(np.float64)
    if isinstance(head, keras_trpo.policies.BernoulliHead):
        p = 1.0 / (1.0 + np.exp(-logits))
        return np.stack([np.diag(d) for d in p * (1.0 - p)])
    widths = head.nvec if isinstance(head, keras_trpo.policies.MultiCategoricalHead) else [logits.shape[1]]
    metric = np.zeros((N, logits.shape[1], logits.shape[1]))
    start = 0
    for width in widths:
        block = logits[:, start:start + width]
        p = np.exp(block - block.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        metric[:, start:start + width, start:start + width] = np.stack([np.diag(q) - np.outer(q, q) for q in p])
        start += width
    return metric


def _explicit_fisher_product(model, observations, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``((Jᵀ M J)/N + λI) v`` in float64 from an explicit Jacobian, its absolute-value twin and K."""
    variables = model.policy_variables
    with tf.GradientTape(persistent=True) as tape:
        params = model.distribution_params(observations)
        outputs = tf.concat([tf.reshape(params[k], [N, -1]) for k in sorted(params)], axis=1)  # [N, P]
    jacobians = tape.jacobian(outputs, variables, experimental_use_pfor=False)
    jacobian = np.concatenate(
        [np.zeros((*outputs.shape, int(np.prod(v.shape)))) if j is None else j.numpy().reshape(*outputs.shape, -1)
         for j, v in zip(jacobians, variables)], axis=2).astype(np.float64)  # [N, P, n_params]
    metric = _numpy_metric(model.head, {k: v.numpy() for k, v in params.items()})
    def product(j, m, v):  # (Jᵀ M J v) / N without forming the n_params² matrix
        return np.einsum("npi,np->i", j, np.einsum("npq,nq->np", m, np.einsum("nqj,j->nq", j, v))) / N

    absolute = product(np.abs(jacobian), np.abs(metric), np.abs(vector)) + DAMPING * np.abs(vector)
    size = jacobian.shape[2] + N * outputs.shape[1]
    return product(jacobian, metric, vector) + DAMPING * vector, absolute, size


def _product(model, observations, form: str, vector: np.ndarray) -> np.ndarray:
    model.action_space.seed(0)
    actions = model.head.cast_actions(np.stack([model.action_space.sample() for _ in range(N)]))
    objective = update.Objective(model, model.replicas, observations, actions, tf.ones([N]))
    return objective.fisher_vector_product(None, DAMPING, form)(tf.constant(vector, tf.float32)).numpy()


@pytest.mark.parametrize("network,action", CASES)
def test_gauss_newton_product_is_the_explicit_jacobian_fisher(network, action):
    """Catches: a wrong M in a head (1/σ² dropped, log σ's block forgotten, p instead of diag(p) − ppᵀ,
    p instead of p(1 − p)), the mean over rows forgotten, or J v / Jᵀ w taken through the wrong tape."""
    model, observations = _model(network, action)
    vector = np.random.default_rng(2).normal(size=ops.num_elements(model.policy_variables)).astype(np.float32)
    expected, absolute, size = _explicit_fisher_product(model, observations, vector.astype(np.float64))
    got = _product(model, observations, "gauss_newton", vector)
    np.testing.assert_array_less(np.abs(got - expected), size * EPS32 * absolute + np.finfo(np.float32).tiny)


@pytest.mark.parametrize("network,action", CASES)
def test_gauss_newton_and_double_backprop_products_agree(network, action):
    """Catches: the Gauss–Newton product drifting from the exact KL Hessian (double backprop, the
    product before issue 26), e.g. a Categorical metric without its −ppᵀ, or a product in the wrong form."""
    model, observations = _model(network, action)
    vector = np.random.default_rng(3).normal(size=ops.num_elements(model.policy_variables)).astype(np.float32)
    _, absolute, size = _explicit_fisher_product(model, observations, vector.astype(np.float64))
    gauss_newton = _product(model, observations, "gauss_newton", vector)
    double_backprop = _product(model, observations, "double_backprop", vector)
    # Each side is within size·ε·|…| of the exact product (the KL's Hessian sums no more terms).
    np.testing.assert_array_less(np.abs(gauss_newton - double_backprop), 2 * size * EPS32 * absolute + 1e-30)


@pytest.mark.parametrize("value", ["gauss-newton", None, "exact"])
def test_an_unknown_fisher_product_is_refused_in_one_line(value):
    """Catches: an unknown form silently running one of the products (no check before compute)."""
    with pytest.raises(ValueError) as error:
        keras_trpo.TRPO(spaces.Box(-1.0, 1.0, (3,)), spaces.Discrete(2), fisher_product=value)
    message = str(error.value)
    assert "\n" not in message and "fisher_product" in message and repr(value) in message


@pytest.mark.parametrize("form", update.FISHER_PRODUCTS)
def test_fisher_product_survives_get_config(form):
    """Catches: fisher_product missing from get_config (a reloaded model computing the other product)."""
    model = keras_trpo.TRPO(spaces.Box(-1.0, 1.0, (3,)), spaces.Discrete(2), fisher_product=form)
    assert keras_trpo.TRPO.from_config(model.get_config()).fisher_product == form
