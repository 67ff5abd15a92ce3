"""Derived tolerances for comparing two float32 evaluations of the same network.

Two implementations of one forward pass (Keras eagerly, a traced function, a loaded SavedModel, the
numpy acting copy) may sum in other orders and use other elementwise kernels, and which ones differs
between CPU models. Each result is within a worst-case forward-error bound of the exact value, so two
results differ by at most twice that bound. For a dense layer (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., §3.1 and §3.5), in any summation order:

    |fl(W x + b) − (W x + b)| ≤ γ_{n+1} (|W| |x| + |b|),     γ_n = n u / (1 − n u),

and an error ε already in ``x`` reaches the output as at most ``|W| ε``. An activation f with
``|f'| ≤ L`` and ``|f(z)| ≤ |z|`` passes an error on as at most ``L ε`` and adds its own rounding, a
few units in the last place of its value. The bound is first order in u (terms in u² are far below
float32's resolution for these sizes) and it is a worst case: measured gaps are 10–1000 times smaller.
"""

from __future__ import annotations

import numpy as np

from keras_trpo.policies import CategoricalHead, MultiCategoricalHead

#: float32's unit roundoff, 2**-24.
U32 = float(np.finfo(np.float32).eps / 2)
#: Rounding of one elementwise function (tanh, exp, erf, sqrt, a division), in units of u: libm and
#: Eigen's vectorized kernels are accurate to a few ulps.
ELEMENTWISE_UNITS = 4
#: max |f'(z)| of the activations used in the tests (gelu's derivative peaks at 1.129 near z = 2.4).
LIPSCHITZ = {"tanh": 1.0, "relu": 1.0, "elu": 1.0, "gelu": 1.13, None: 1.0, "linear": 1.0}


def gamma(n: int, u: float = U32) -> float:
    """γ_n = n u / (1 − n u): the relative error bound of a sum or dot product of n terms."""
    return n * u / (1 - n * u)


def normalization_error(normalizer, x):
    """``(|output|, error bound)`` of ``clip((x − mean) / sqrt(var + eps))`` on a batch ``x``.

    A subtraction, a square root, an addition and a division: at most 4 roundings, each relative u.
    """
    mean = np.asarray(normalizer.mean.numpy(), np.float64)
    std = np.sqrt(np.asarray(normalizer.variance.numpy(), np.float64) + normalizer.epsilon)
    magnitude = (np.abs(x) + np.abs(mean)) / std
    return np.minimum(magnitude, normalizer.clip), ELEMENTWISE_UNITS * U32 * magnitude


def dense_stack_error(layers, activation, magnitude, error):
    """Propagates ``(|x|, error bound of x)`` through Dense ``layers``: ``activation`` between them, none after the last."""
    for index, layer in enumerate(layers):
        kernel, bias = (np.abs(np.asarray(w.numpy(), np.float64)) for w in (layer.kernel, layer.bias))
        pre_activation = magnitude @ kernel + bias
        error = error @ kernel + gamma(kernel.shape[0] + 1) * pre_activation
        if index < len(layers) - 1:
            error = LIPSCHITZ[activation] * error + ELEMENTWISE_UNITS * U32 * pre_activation
        magnitude = pre_activation  # |f(z)| <= |z| for every activation in LIPSCHITZ
    return error


def mlp_gap(model, observations):
    """``{"policy": [N, outputs], "value": [N]}``: how far two float32 evaluations of the default MLP may differ.

    Twice each evaluation's worst-case error: the raw policy outputs (logits, or the Gaussian mean)
    and the values, for a ``Box`` observation model with the default MLP (and its normalizer, if any).
    """
    x = np.asarray(observations, np.float64).reshape(len(observations), -1)
    magnitude, error = np.abs(x), np.zeros_like(x)
    if model.normalizer is not None:
        magnitude, error = normalization_error(model.normalizer, x)
    policy = dense_stack_error([*model.policy_layers, model.policy_output], model.activation, magnitude, error)
    value = dense_stack_error([*model.value_layers, model.value_output], model.activation, magnitude, error)
    return {"policy": 2 * policy, "value": 2 * value[:, 0]}


def log_prob_gap(model, observations, actions, features=None):
    """``[N]``: how far two float32 evaluations of ``model.distribution(observations).log_prob(actions)`` may differ.

    ``features``: the default MLP's input ``[N, flat_size]`` when ``observations`` is a dict (a ``Dict`` space).

    First order in the raw outputs' gap δ (:func:`mlp_gap`), plus each evaluation's own rounding:
    - diagonal Gaussian, ``Σ_d −z_d²/2 − log σ_d − log(2π)/2`` with ``z = (a − μ)/σ``: ``Σ_d |z_d| δ_d / σ_d``;
    - Categorical (each ``MultiDiscrete`` component), ``l_a − logsumexp(l)``: ``2 max_k δ_k`` per component
      (``logsumexp`` moves by at most the largest change of its inputs);
    - Bernoulli (``MultiBinary``), ``Σ_k a_k l_k − softplus(l_k)``: ``Σ_k δ_k`` (both slopes are within [0, 1]).
    Rounding: ``ELEMENTWISE_UNITS`` u per term, on each term's magnitude, summed (γ_d for the sum).
    """
    params = {key: np.asarray(value.numpy(), np.float64) for key, value in model.distribution_params(observations).items()}
    delta = mlp_gap(model, observations if features is None else features)["policy"]
    actions = np.asarray(actions, np.float64).reshape(len(delta), -1)
    if "mean" in params:
        sigma = np.exp(params["log_std"])
        z = (actions - params["mean"]) / sigma
        first_order = np.sum(np.abs(z) * delta / sigma, axis=1)
        magnitude = np.sum(z**2 / 2 + np.abs(params["log_std"]) + 1.0, axis=1)
    else:
        logits = params["logits"].reshape(len(delta), -1)
        widths = {CategoricalHead: [logits.shape[1]], MultiCategoricalHead: getattr(model.head, "nvec", None)}.get(
            type(model.head))
        if widths is None:  # BernoulliHead: one Bernoulli per output
            first_order = np.sum(delta, axis=1)
        else:
            bounds = np.cumsum([0, *widths])
            first_order = sum(2 * np.max(delta[:, lo:hi], axis=1) for lo, hi in zip(bounds[:-1], bounds[1:]))
        magnitude = np.sum(np.abs(logits), axis=1) + np.log(logits.shape[1]) + 1.0
    rounding = 2 * (ELEMENTWISE_UNITS * U32 + gamma(actions.shape[1])) * magnitude
    return first_order + rounding


def gae_and_bound(model, record, gamma, lam):
    """GAE of one sub-env's rows, computed independently, and how far the stored advantages may be from it.

    ``record``: the rows in order, ``(observation, action, reward, terminated, truncated, next observation, ...)``;
    V of the true next observation on every row (a truncated episode's last observation, and the one after
    the column's last row). The bound: V in the numpy acting copy and in TF differ by at most ``mlp_gap``,
    carried through the same recursion, plus the float32 rounding of the stored advantage.
    Returns ``(expected, bound, terminated, truncated)``, each ``[len(record)]``.
    """
    value = lambda o: model.value(np.asarray(o, np.float32)).numpy()  # noqa: E731
    rewards = np.array([r[2] for r in record], np.float64)
    terminated, truncated = np.array([r[3] for r in record]), np.array([r[4] for r in record])
    observed, following = ([r[j] for r in record] for j in (0, 5))
    deltas = rewards + gamma * np.where(terminated, 0.0, value(following)) - value(observed)
    gap = mlp_gap(model, np.asarray(observed, np.float32))["value"]
    gap_next = np.where(terminated, 0.0, mlp_gap(model, np.asarray(following, np.float32))["value"])
    n = len(record)
    expected, bound, running, carried = np.zeros(n), np.zeros(n), 0.0, 0.0
    for k in reversed(range(n)):
        keep = gamma * lam * (not (terminated[k] or truncated[k]))
        running = deltas[k] + keep * running
        carried = gap[k] + gamma * gap_next[k] + keep * carried
        expected[k], bound[k] = running, carried + 2 * U32 * abs(running)
    return expected, bound, terminated, truncated
