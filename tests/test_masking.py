"""Action masking (issue 28): the masked distribution's math and the API around it.

Every reference here works over the legal actions only (a softmax renormalised over the legal
logits, in float64): it never uses :data:`keras_trpo.masking.MASK_LOGIT`, so it checks that the
``-1e9`` trick gives the distribution over the legal actions, not that it is applied.

Tolerances (float32 evaluations against float64 references; ε = float32's machine epsilon, no factor
fitted on a CPU): a float32 log-softmax over n logits is within ``(n + 4) ε S`` of the exact value,
``S = max|l| + log n + 1`` (the sum of n exponentials, γ_n, plus the max-shift, exp, log and the
subtraction, one rounding each); the entropy and log-probabilities of a ``MultiDiscrete`` action add
one such error per component; the KL(old‖new) combines two log-softmaxes and the old probabilities
(a relative error of the same size times ``|log p_old − log p_new| <= 2S``), hence ``4 (n + 4) ε S``
per component. The Fisher products use tests/test_gauss_newton.py's dot-product bound.
"""

from __future__ import annotations

import gymnasium
import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from gymnasium import spaces

import keras_trpo
from helpers import Batches, assert_bit_identical, tiny_trpo, training_state
from keras_trpo import ops, update
from keras_trpo.acting import PolicySnapshot
from test_gauss_newton import EPS32, N, _model

STATE = spaces.Box(-1.0, 1.0, (3,), np.float32)
MASKED_ACTIONS = {
    "Discrete": spaces.Discrete(6, start=3),
    "MultiDiscrete": spaces.MultiDiscrete([3, 4, 2], start=[2, -1, 5]),
}


def components(action_space):
    """``[(offset in the mask, n, start)]``, one per component, computed from the space alone."""
    if isinstance(action_space, spaces.Discrete):
        return [(0, int(action_space.n), int(action_space.start))]
    nvec, start = np.asarray(action_space.nvec), np.asarray(action_space.start)
    offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
    return [(int(o), int(n), int(s)) for o, n, s in zip(offsets, nvec, start)]


def mask_width(action_space):
    return sum(n for _, n, _ in components(action_space))


def random_masks(action_space, rows, rng, illegal=None):
    """Bool ``[rows, size]``: each component's legal set drawn at random (never empty); ``illegal``: flat indices
    kept illegal in every row (each component then still has a legal action)."""
    parts = []
    for offset, n, _ in components(action_space):
        legal = rng.random((rows, n)) < 0.4
        if illegal is not None:
            legal[:, [i - offset for i in illegal if offset <= i < offset + n]] = False
        empty = np.flatnonzero(~legal.any(axis=1))
        choices = [i for i in range(n) if illegal is None or offset + i not in illegal]
        legal[empty, rng.choice(choices, len(empty))] = True
        parts.append(legal)
    return np.concatenate(parts, axis=1)


def legal_actions(action_space, masks, rng):
    """One legal action per row, in the env's convention (``start`` added), uniformly among the legal ones."""
    actions = []
    for offset, n, start in components(action_space):
        block = masks[:, offset:offset + n]
        actions.append(np.array([start + rng.choice(np.flatnonzero(row)) for row in block]))
    stacked = np.stack(actions, axis=1)
    return stacked[:, 0] if isinstance(action_space, spaces.Discrete) else stacked


def illegal_rows(action_space, actions, masks):
    """Rows whose action is out of range or illegal under its mask (an independent twin of masking.legal)."""
    actions = np.asarray(actions).reshape(len(masks), -1)
    bad = np.zeros(len(masks), bool)
    for k, (offset, n, start) in enumerate(components(action_space)):
        index = actions[:, k] - start
        inside = (index >= 0) & (index < n)
        bad |= ~inside
        bad[inside] |= ~masks[np.flatnonzero(inside), offset + index[inside]]
    return np.flatnonzero(bad)


# --------------------------------------------------------------------------
# 1. Sampling never returns an illegal action
# --------------------------------------------------------------------------
SAMPLES = 10**5


def favouring_model(action_space):
    """A masked model whose logits are +30 for the first action of each component, 0 elsewhere, whatever the state."""
    model = keras_trpo.TRPO(STATE, action_space, hidden_units=(4,), value_hidden_units=(4,), action_mask=True, seed=0)
    favoured = [offset for offset, _, _ in components(action_space)]
    bias = np.zeros(model.head.num_outputs, np.float32)
    bias[favoured] = 30.0
    model.policy_output.kernel.assign(np.zeros(model.policy_output.kernel.shape, np.float32))
    model.policy_output.bias.assign(bias)
    return model, favoured


def sample_numpy(model, observations, masks):
    return PolicySnapshot(model).act(observations, np.random.default_rng(0), masks)[0]


def sample_stateless(model, observations, masks):
    params = model.distribution_params(observations, masks)
    return model.head.stateless_sample(params, tf.constant([1, 2], tf.int32)).numpy()


def sample_tfp(model, observations, masks):
    """tfp's own sampler; it returns indices, so the spaces' starts are added here."""
    params = model.distribution_params(observations, masks)
    index = model.head.distribution(params).sample(seed=3).numpy()
    starts = np.array([start for _, _, start in components(model.action_space)])
    return index + (starts[0] if index.ndim == 1 else starts)


SAMPLERS = {"numpy": sample_numpy, "stateless": sample_stateless, "tfp": sample_tfp}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("action", MASKED_ACTIONS)
def test_masked_sampling_never_returns_an_illegal_action(action, sampler):
    """10^5 rows whose logits favour an illegal action by e^30: none is sampled, and every row's action is legal.
    Catches: numpy (PolicySnapshot.act, Rollouts' path): ``numpy_masked_logits`` returning the logits unmasked
    (``if action_mask is None:`` -> ``if True:``); stateless (the exported sample signature) and tfp: the same
    in ``masked_logits``."""
    action_space = MASKED_ACTIONS[action]
    model, favoured = favouring_model(action_space)
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, (SAMPLES, 3)).astype(np.float32)
    masks = random_masks(action_space, SAMPLES, rng, illegal=favoured)
    actions = SAMPLERS[sampler](model, observations, masks)
    assert np.shape(actions)[0] == SAMPLES
    bad = illegal_rows(action_space, actions, masks)
    assert bad.size == 0, f"{bad.size} illegal actions, e.g. row {bad[0]}: {actions[bad[0]]} under {masks[bad[0]]}"
    # Without the masks the favoured (illegal) actions are what the sampler picks: the test can see a leak.
    unmasked = SAMPLERS[sampler](model, observations[:100], np.ones_like(masks[:100]))
    assert illegal_rows(action_space, unmasked, masks[:100]).size == 100


# --------------------------------------------------------------------------
# 2. log_prob, entropy and KL(old‖new) equal a float64 reference over the legal actions
# --------------------------------------------------------------------------
def legal_log_softmax(logits, masks, action_space):
    """Per component: ``[(legal flat indices per row, log-softmax over them)]`` in float64, rows as lists."""
    out = []
    for offset, n, _ in components(action_space):
        rows = []
        for row_logits, row_mask in zip(logits[:, offset:offset + n], masks[:, offset:offset + n]):
            legal = np.flatnonzero(row_mask)
            values = row_logits[legal].astype(np.float64)
            shift = values.max()
            rows.append((legal, values - shift - np.log(np.sum(np.exp(values - shift)))))
        out.append(rows)
    return out


def reference(old_logits, new_logits, masks, actions, action_space):
    """``(log_prob of actions under new, entropy of new, KL(old‖new))``, float64, over the legal actions."""
    old, new = (legal_log_softmax(x, masks, action_space) for x in (old_logits, new_logits))
    actions = np.asarray(actions).reshape(len(masks), -1)
    log_prob, entropy, kl = (np.zeros(len(masks)) for _ in range(3))
    for k, (_, _, start) in enumerate(components(action_space)):
        for i, ((legal, log_q), (_, log_p)) in enumerate(zip(new[k], old[k])):
            log_prob[i] += log_q[list(legal).index(actions[i, k] - start)]
            entropy[i] -= np.sum(np.exp(log_q) * log_q)
            kl[i] += np.sum(np.exp(log_p) * (log_p - log_q))
    return log_prob, entropy, kl


def bound(logits_list, masks, action_space, factor):
    """``factor · (n + 4) ε S`` summed over components (S from every logits array given; see the module docstring)."""
    total = np.zeros(len(masks))
    for offset, n, _ in components(action_space):
        size = np.abs(np.concatenate([x[:, offset:offset + n] for x in logits_list], axis=1)).max(axis=1)
        total += factor * (n + 4) * EPS32 * (size + np.log(n) + 1.0)
    return total


@pytest.mark.parametrize("action", MASKED_ACTIONS)
def test_masked_log_prob_entropy_and_kl_equal_a_reference_over_the_legal_actions(action):
    """Also a row with every action legal and one with a single legal action per component. Catches:
    ``masked_logits`` returning the logits unmasked (``if action_mask is None:`` -> ``if True:``: every value
    then also counts the illegal actions)."""
    action_space = MASKED_ACTIONS[action]
    head = keras_trpo.policies.make_head(action_space)
    rng = np.random.default_rng(4)
    rows = 64
    old_logits, new_logits = (rng.normal(scale=3.0, size=(rows, head.num_outputs)).astype(np.float32) for _ in "on")
    masks = random_masks(action_space, rows, rng)
    masks[0] = True  # an unmasked row and a row with one legal action per component
    masks[1] = False
    masks[1, [offset for offset, _, _ in components(action_space)]] = True
    actions = legal_actions(action_space, masks, rng)
    old, new = (head.distribution(head.params(tf.constant(x), None, masks)) for x in (old_logits, new_logits))
    got = {
        "log_prob": new.log_prob(head.cast_actions(actions)).numpy(),
        "entropy": new.entropy().numpy(),
        "kl": tfp.distributions.kl_divergence(old, new).numpy(),
    }
    expected = dict(zip(("log_prob", "entropy", "kl"), reference(old_logits, new_logits, masks, actions, action_space)))
    tolerance = {
        "log_prob": bound([new_logits], masks, action_space, 1),
        "entropy": bound([new_logits], masks, action_space, 1),
        "kl": bound([old_logits, new_logits], masks, action_space, 4),
    }
    for key, value in got.items():
        np.testing.assert_array_less(np.abs(value - expected[key]), tolerance[key], err_msg=key)
    assert np.all(expected["entropy"][1] < tolerance["entropy"][1])  # one legal action: no entropy at all


# --------------------------------------------------------------------------
# 3. The Fisher-vector product of a masked Categorical is the Fisher of the legal logits
# --------------------------------------------------------------------------
def legal_metric(head, logits, masks):
    """``[N, P, P]``: per row, ``diag(p) − ppᵀ`` of the softmax over each component's legal logits, placed on the
    legal rows and columns (zero on every illegal one); float64, independent of ``MASK_LOGIT``."""
    logits = logits.astype(np.float64)
    metric = np.zeros((len(logits), logits.shape[1], logits.shape[1]))
    widths = head.nvec if isinstance(head, keras_trpo.policies.MultiCategoricalHead) else [logits.shape[1]]
    offset = 0
    for width in widths:
        for i in range(len(logits)):
            legal = offset + np.flatnonzero(masks[i, offset:offset + width])
            p = np.exp(logits[i, legal] - logits[i, legal].max())
            p /= p.sum()
            metric[i][np.ix_(legal, legal)] = np.diag(p) - np.outer(p, p)
        offset += width
    return metric


def explicit_masked_fisher_product(model, observations, masks, vector):
    """``mean_rows Jᵀ M J v`` with J the Jacobian of the (unmasked) logits in the policy weights, M of the legal
    softmax: the Fisher of the legal logits only; its absolute-value twin and the dot-product length K."""
    variables = model.policy_variables
    with tf.GradientTape(persistent=True) as tape:
        logits = model.distribution_params(observations)["logits"]  # no mask: J of every logit
    jacobian = np.concatenate(
        [j.numpy().reshape(*logits.shape, -1) for j in tape.jacobian(logits, variables, experimental_use_pfor=False)],
        axis=2).astype(np.float64)  # [N, P, n_params]
    metric = legal_metric(model.head, logits.numpy(), masks)

    def product(j, m, v):
        return np.einsum("npi,np->i", j, np.einsum("npq,nq->np", m, np.einsum("nqj,j->nq", j, v))) / N

    size = jacobian.shape[2] + N * logits.shape[1]
    return product(jacobian, metric, vector), product(np.abs(jacobian), np.abs(metric), np.abs(vector)), size


@pytest.mark.parametrize("form", update.FISHER_PRODUCTS)
@pytest.mark.parametrize("action", ["Discrete", "MultiDiscrete"])
def test_masked_fisher_vector_product_is_the_explicit_fisher_of_the_legal_logits(action, form):
    """Damping 0, two random vectors. Catches: ``Objective`` taking the old distribution without the stored masks
    (``model.distribution_params(*inputs)`` -> ``(inputs[0])``: M of every logit, both forms); double_backprop's
    new distribution without them (``model.distribution(*o)`` -> ``(o[0])``). (Gauss-Newton's J of the unmasked
    logits is no bug: M is zero on the illegal ones, which is why the reference may take J of every logit.)"""
    model, observations = _model("mlp", action)
    rng = np.random.default_rng(5)
    masks = random_masks(model.action_space, N, rng)
    masks[0] = True  # one unmasked row
    actions = model.head.cast_actions(legal_actions(model.action_space, masks, rng))
    objective = update.Objective(model, model.replicas, observations, actions, tf.ones([N]), tf.constant(masks))
    product = objective.fisher_vector_product(None, 0.0, form)
    for seed in range(2):
        vector = np.random.default_rng(seed).normal(size=ops.num_elements(model.policy_variables)).astype(np.float32)
        expected, absolute, size = explicit_masked_fisher_product(model, observations, masks, vector.astype(np.float64))
        got = product(tf.constant(vector)).numpy()
        # Each side is within K·ε·|…| of the exact product (test_gauss_newton's bound; the KL's Hessian sums no more).
        np.testing.assert_array_less(np.abs(got - expected), size * EPS32 * absolute + np.finfo(np.float32).tiny)


# --------------------------------------------------------------------------
# A masked env (also used by tests/test_masked_rollouts.py)
# --------------------------------------------------------------------------
class MaskedEnv(gymnasium.Env):
    """A random walk on ``Box(3)`` states with a fresh random mask each step (every component keeps a legal action).

    ``source="observation"``: a ``Dict`` observation ``{"state", "action_mask": MultiBinary(size)}``;
    ``"method"``: the ``Box`` state, the mask from ``action_masks()``. Every step records ``(mask the action was
    chosen under, action)`` in ``log``; ``illegal`` counts the illegal actions received. ``empty_at``: the step
    count whose mask has no legal action. Episodes are truncated after ``length`` steps, or terminate when the
    state's first coordinate exceeds 0.8, so they vary in length.
    """

    metadata = {"render_modes": []}

    def __init__(self, action_space=MASKED_ACTIONS["MultiDiscrete"], source="observation", length=6, empty_at=None):
        self.action_space, self.source, self.length, self.empty_at = action_space, source, length, empty_at
        self.size = mask_width(action_space)
        self.observation_space = spaces.Dict({"state": STATE, "action_mask": spaces.MultiBinary(self.size)}) if (
            source == "observation") else STATE
        self.log, self.illegal, self.steps = [], 0, 0

    def _draw(self):
        self.state = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        self.mask = random_masks(self.action_space, 1, self.np_random)[0]
        if self.steps == self.empty_at:
            self.mask[:] = False
        observation = {"state": self.state, "action_mask": self.mask.astype(np.int8)}
        return observation if self.source == "observation" else self.state

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        self.log.append((self.mask.copy(), np.array(action, copy=True)))
        self.illegal += illegal_rows(self.action_space, np.array([action]), self.mask[None]).size
        reward = float(np.sum(self.state) + 0.1 * np.sum(action))
        self.t += 1
        self.steps += 1
        terminated = bool(self.state[0] > 0.8)
        return self._draw(), reward, terminated, self.t >= self.length and not terminated, {}

    def action_masks(self):
        return self.mask.copy()


def masked_vector_env(num_envs=2, **kwargs):
    return gymnasium.vector.SyncVectorEnv([lambda: MaskedEnv(**kwargs) for _ in range(num_envs)])


def masked_run(action="MultiDiscrete", source="observation", steps=32, num_envs=2, seed=0):
    """A compiled tiny masked model (``TRPO.for_env``) and its ``Rollouts`` on a ``MaskedEnv`` vector env."""
    env = masked_vector_env(num_envs, action_space=MASKED_ACTIONS[action], source=source)
    model = tiny_trpo(env, 8, seed=seed)
    assert model.action_mask
    return model, keras_trpo.Rollouts(env, model, steps=steps, seed=seed)


# --------------------------------------------------------------------------
# 4. A mask that differs between collection and update is refused
# --------------------------------------------------------------------------
def flipped(batch, row=3):
    """``batch`` with the stored mask bit of row ``row``'s action (its first component) turned illegal."""
    model_space = MASKED_ACTIONS["MultiDiscrete"]
    offset, _, start = components(model_space)[0]
    masks = batch["action_masks"].copy()
    masks[row, offset + int(batch["actions"][row, 0]) - start] = False
    return {**batch, "action_masks": masks}


@pytest.mark.parametrize("path", ["train_step", "fit"])
def test_a_mask_changed_after_collection_is_refused_before_any_weight_changes(path):
    """Catches: train_step without its host check (``self.check_batch_values(data)`` removed from
    ``TRPO.train_step``); the compiled path without it (``model.check_batch_values(batch)`` removed from
    ``TrainFunction.__call__``)."""
    model, rollouts = masked_run()
    batch = rollouts.collect()
    assert illegal_rows(model.action_space, batch["actions"], batch["action_masks"]).size == 0
    bad = flipped(batch)
    before = training_state(model)
    with pytest.raises(ValueError) as error:
        if path == "train_step":
            model.train_step(bad)
        else:
            model.fit(Batches([bad]), epochs=1, verbose=0)
    message = str(error.value)
    assert "\n" not in message and "batch['action_masks'][3]" in message and "batch['actions'][3]" in message
    assert_bit_identical(before, training_state(model))
    model.fit(Batches([batch]), epochs=1, verbose=0)  # the batch as collected trains
    assert model.policy_version == 1


def _batch_cases():
    def drop(batch):
        return {key: value for key, value in batch.items() if key != "action_masks"}

    def reshape(batch):
        return {**batch, "action_masks": np.concatenate([batch["action_masks"], batch["action_masks"][:, :1]], 1)}

    def as_float(batch):
        return {**batch, "action_masks": batch["action_masks"].astype(np.float32)}

    def twos(batch):
        return {**batch, "action_masks": batch["action_masks"].astype(np.int8) * 2}

    return {  # name: (masked model?, change to the batch, what the one line says)
        "missing": (True, drop, r"^batch is missing key 'action_masks'; expected .*action_masks"),
        "unmasked model": (False, lambda b: b, (r"^batch has 'action_masks' but the model does not mask actions "
                                               r"\(action_mask=False\); build it with action_mask=True")),
        "shape": (True, reshape, (r"^batch\['action_masks'\] has shape \[32, 10\]; expected bool or 0/1 integers "
                                  r"\[N, 9\], one flag per action\.$")),
        "float": (True, as_float, r"^batch\['action_masks'\] has dtype float32; expected bool or 0/1 integers"),
        "values": (True, twos, r"^batch\['action_masks'\] holds values \[0, 2\]; expected bool or 0/1 integers"),
    }


BATCH_CASES = _batch_cases()


@pytest.mark.parametrize("case", BATCH_CASES)
def test_a_bad_action_masks_entry_is_one_clear_line(case):
    """Catches: the masks' key left out of a masked model's batch spec (``**masks`` dropped from ``batch_spec``);
    the unmasked model's check (``if "action_masks" in data and ...`` -> ``if False``); ``check_masks``' dtype or
    value check removed (a float or 2-valued mask cast to bool)."""
    masked, change, pattern = BATCH_CASES[case]
    model, rollouts = masked_run()
    batch = rollouts.collect()
    if not masked:
        env = masked_vector_env(2)
        model = tiny_trpo(env, 8, action_mask=False)
        batch = {**keras_trpo.Rollouts(env, model, steps=32, seed=0).collect(), "action_masks": batch["action_masks"]}
    before = training_state(model)
    with pytest.raises(ValueError, match=pattern) as error:
        model.train_step(change(batch))
    assert "\n" not in str(error.value)
    assert_bit_identical(before, training_state(model))


# --------------------------------------------------------------------------
# 5. The API: TRPO.for_env's detection, the constructor, config, saving, calling
# --------------------------------------------------------------------------
class PlainEnv(gymnasium.Env):
    """An env with ``observation_space`` and ``action_space`` only (for_env reads nothing else)."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


def _dict_env():
    return masked_vector_env(2, source="observation")


def _method_env():
    return masked_vector_env(2, source="method")


DETECTION = {  # name: (env factory, for_env keyword arguments, model.action_mask, model's observation keys or None)
    "Dict entry": (_dict_env, {}, True, ("state",)),
    "method": (_method_env, {}, True, None),
    "method, plain Env": (lambda: MaskedEnv(source="method"), {}, True, None),
    "Dict entry, action_mask=False": (_dict_env, {"action_mask": False}, False, ("state",)),
    "method, action_mask=False": (_method_env, {"action_mask": False}, False, None),
    "Dict entry, action_mask=True": (_dict_env, {"action_mask": True}, True, ("state",)),
    "observe_action_mask=True": (_dict_env, {"observe_action_mask": True}, True, ("action_mask", "state")),
    "no masks": (lambda: gymnasium.make("CartPole-v1"), {}, False, None),
}


@pytest.mark.parametrize("case", DETECTION)
def test_for_env_detects_the_masks(case):
    """Catches: the Dict entry not detected (``return "observation"`` -> ``return None`` in ``masking.source``);
    the method not detected (``_has_method`` -> False); ``action_mask=False`` ignored (``if requested is False:``
    -> ``if False:``); the entry kept for the networks (``and not ... observe_action_mask`` -> ``and False``)."""
    make, kwargs, masked, keys = DETECTION[case]
    env = make()
    model = keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_hidden_units=(4,), **kwargs)
    assert model.action_mask is masked
    assert keras_trpo.TRPO.from_config(model.get_config()).action_mask is masked  # for_env passed it on
    if keys is not None:
        assert tuple(sorted(model.observation_space.spaces)) == keys
    else:
        assert not isinstance(model.observation_space, spaces.Dict)
    if masked and hasattr(env, "num_envs"):
        batch = keras_trpo.Rollouts(env, model, steps=8, seed=0).collect()
        assert illegal_rows(model.action_space, batch["actions"], batch["action_masks"]).size == 0


def test_action_mask_true_without_any_mask_source_is_a_clear_error_at_the_first_collection():
    """Before: ``AttributeError: wrapper TimeLimit has no attribute 'action_masks'``. Catches: ``MaskReader``
    calling ``env.call("action_masks")`` unguarded (the ``try``/``except AttributeError`` removed)."""
    env = gymnasium.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env, action_mask=True, hidden_units=(4,), value_hidden_units=(4,))
    assert model.action_mask
    rollouts = keras_trpo.Rollouts(env, model, steps=8, seed=0)
    with pytest.raises(ValueError, match=r"^the policy masks actions \(action_mask=True\), but the env has no "
                                         r"'action_mask' observation entry and no action_masks\(\) method \(.*\); use "
                                         r"the masked env it was trained on, add one to the env, or build the model "
                                         r"with action_mask=False\.$"):
        rollouts.collect()


@pytest.mark.parametrize("action_space", [spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.MultiBinary(3)],
                         ids=["Box", "MultiBinary"])
@pytest.mark.parametrize("how", ["constructor", "for_env"])
def test_a_mask_on_an_action_space_without_a_finite_set_is_a_type_error_naming_the_space(action_space, how):
    """Catches: ``masking.mask_size`` accepting any space (its final ``raise`` -> ``return 0``), or the
    constructor not asking it (``masking.mask_size(self.action_space)`` removed from ``TRPO.__init__``)."""
    observation_space = spaces.Dict({"state": STATE, "action_mask": spaces.MultiBinary(3)})
    with pytest.raises(TypeError) as error:
        if how == "constructor":
            keras_trpo.TRPO(STATE, action_space, action_mask=True)
        else:
            keras_trpo.TRPO.for_env(PlainEnv(observation_space, action_space))
    message = str(error.value)
    assert "\n" not in message and str(action_space) in message and "action_mask=False" in message


@pytest.mark.parametrize("action", MASKED_ACTIONS)
def test_a_masked_model_keeps_action_mask_through_a_keras_file(action, tmp_path):
    """Catches: ``"action_mask"`` missing from ``TRPO._CONFIG_KEYS`` (a reloaded model that ignores masks)."""
    model = keras_trpo.TRPO(STATE, MASKED_ACTIONS[action], hidden_units=(4,), value_hidden_units=(4,),
                            action_mask=True, seed=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.action_mask is True
    rng = np.random.default_rng(0)
    observations = rng.uniform(-1, 1, (16, 3)).astype(np.float32)
    masks = random_masks(MASKED_ACTIONS[action], 16, rng)
    np.testing.assert_array_equal(loaded(observations, action_mask=masks), model(observations, action_mask=masks))


@pytest.mark.parametrize("action", MASKED_ACTIONS)
def test_calling_a_masked_model(action):
    """``model(dict with an action_mask entry) == model(obs, action_mask=mask)``, the mode is the most probable
    legal action, and a call without a mask is one clear line. Catches: ``masking.split`` ignoring the entry
    (``MASK_KEY not in observations`` -> ``True``); the call without a mask silently unmasked (``or
    self.action_mask`` dropped in ``TRPO.__call__``); the mask not reaching the mode (``action_mask`` dropped
    from ``Forward.call``'s ``distribution_params``)."""
    action_space = MASKED_ACTIONS[action]
    env = PlainEnv(spaces.Dict({"state": STATE, "action_mask": spaces.MultiBinary(mask_width(action_space))}),
                   action_space)
    model = keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_hidden_units=(4,), seed=0)
    favoured = [offset for offset, _, _ in components(action_space)]
    model.policy_output.bias.assign(np.where(np.isin(np.arange(model.head.num_outputs), favoured), 30.0, 0.0))
    rng = np.random.default_rng(0)
    state = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    masks = random_masks(action_space, 64, rng, illegal=favoured)
    by_entry = model({"state": state, "action_mask": masks.astype(np.int8)}).numpy()
    by_argument = model({"state": state}, action_mask=masks).numpy()
    np.testing.assert_array_equal(by_entry, by_argument)
    assert illegal_rows(action_space, by_entry, masks).size == 0
    logits = model.policy_outputs({"state": state}).numpy().astype(np.float64)  # the mode by hand, legal only
    expected = [start + np.argmax(np.where(masks[:, o:o + n], logits[:, o:o + n], -np.inf), axis=1)
                for o, n, start in components(action_space)]
    np.testing.assert_array_equal(by_entry.reshape(64, -1), np.stack(expected, axis=1))
    with pytest.raises(ValueError, match=r"^this model masks actions: pass action_mask=\[N, \d+\] \(bool or 0/1\), "
                                         r"or observations as a dict with an 'action_mask' entry \(\{'observations': x, "
                                         r"'action_mask': m\} for a non-Dict space\)\.$"):
        model({"state": state})


def test_the_action_mask_entry_of_a_call_is_the_mask_only_for_a_masked_model_and_an_explicit_mask_wins():
    """An unmasked model that observes an entry named ``action_mask`` is called on its own observations (the
    entry is an input, not a mask); the whole observation dict with an explicit ``action_mask=`` uses the explicit
    one; an unmasked model called on an env's dict drops an entry its networks do not see. Catches:
    ``masking.split`` taking the entry as the mask of an unmasked model (``and masked`` dropped: "does not mask
    actions"); the entry winning over the explicit mask (``action_mask is None and`` dropped); the unseen entry
    kept (``if MASK_KEY not in keys`` -> ``if False``: "unexpected ['action_mask']")."""
    action_space = MASKED_ACTIONS["Discrete"]
    size = mask_width(action_space)
    space = spaces.Dict({"state": STATE, "action_mask": spaces.MultiBinary(size)})
    rng = np.random.default_rng(1)
    state = rng.uniform(-1, 1, (32, 3)).astype(np.float32)
    entry, explicit = random_masks(action_space, 32, rng), random_masks(action_space, 32, rng)
    observations = {"state": state, "action_mask": entry.astype(np.int8)}
    observing = keras_trpo.TRPO.for_env(PlainEnv(space, action_space), action_mask=False, observe_action_mask=True,
                                        hidden_units=(4,), value_hidden_units=(4,), seed=0)
    assert not observing.action_mask and "action_mask" in observing.observation_spec.keys
    expected = observing.head.mode(observing.distribution_params(observations)).numpy()
    np.testing.assert_array_equal(observing(observations).numpy(), expected)
    masked = keras_trpo.TRPO.for_env(PlainEnv(space, action_space), hidden_units=(4,), value_hidden_units=(4,), seed=0)
    np.testing.assert_array_equal(masked(observations, action_mask=explicit).numpy(),
                                  masked({"state": state}, action_mask=explicit).numpy())
    unmasked = keras_trpo.TRPO.for_env(PlainEnv(space, action_space), action_mask=False, hidden_units=(4,),
                                       value_hidden_units=(4,), seed=0)
    np.testing.assert_array_equal(unmasked(observations).numpy(), unmasked({"state": state}).numpy())


@pytest.mark.parametrize("action", MASKED_ACTIONS)
def test_train_step_logs_the_entropy_of_the_stored_masks(action):
    """The update's old distribution is the masked one: ``train_step``'s logged ``entropy`` is the mean entropy
    over the legal actions of the batch's stored masks (float64 reference, the module docstring's bound).
    Catches: ``train_step`` building its ``Objective`` without the batch's masks (``batch.get(masking.BATCH_KEY)``
    -> ``None``: the entropy of all actions; the update itself then runs on the unmasked distribution)."""
    model, rollouts = masked_run(action, steps=64)
    batch = rollouts.collect()
    logits = model.policy_outputs(model.observation_spec.tensors(batch["observations"])).numpy()
    _, entropy, _ = reference(logits, logits, batch["action_masks"], batch["actions"], model.action_space)
    logs = model.train_step(batch)
    tolerance = bound([logits], batch["action_masks"], model.action_space, 1).max()
    assert abs(float(logs["entropy"]) - entropy.mean()) < tolerance + 4 * EPS32 * entropy.mean()


def _predict_model(observation_space):
    action_space = MASKED_ACTIONS["Discrete"]
    model = keras_trpo.TRPO(observation_space, action_space, action_mask=True, hidden_units=(4,),
                            value_hidden_units=(4,), seed=0)
    model.compile()
    return model


@pytest.mark.parametrize("space", ["Box", "Discrete", "Dict"])
def test_predict_takes_the_masks_in_a_dict_for_every_observation_space(space):
    """``model.predict({"observations": x, "action_mask": m})`` (a ``Dict`` space: the masks as one more entry)
    equals ``model(x, action_mask=m)``; fewer mask rows than observations is one line. Catches: ``masking.split``
    not unwrapping a non-Dict space's ``{"observations": x}`` (``keys == (None,)`` -> ``False``: "is a dict with
    keys ['observations']"); ``predict`` not passing the row count (``n`` -> ``None``: Keras' AttributeError)."""
    rng = np.random.default_rng(2)
    observation_space = {"Box": STATE, "Discrete": spaces.Discrete(5), "Dict": spaces.Dict({"state": STATE})}[space]
    model = _predict_model(observation_space)
    observations = {"Box": rng.uniform(-1, 1, (12, 3)).astype(np.float32), "Discrete": rng.integers(0, 5, 12),
                    "Dict": {"state": rng.uniform(-1, 1, (12, 3)).astype(np.float32)}}[space]
    masks = random_masks(model.action_space, 12, rng)
    x = {**observations, "action_mask": masks} if space == "Dict" else {"observations": observations, "action_mask": masks}
    np.testing.assert_array_equal(model.predict(x, verbose=0), model(observations, action_mask=masks).numpy())
    short = {**x, "action_mask": masks[:10]}
    with pytest.raises(ValueError, match=r"^action_mask has 10 rows but the observations have 12; expected one mask"):
        model.predict(short, verbose=0)


def test_a_call_with_an_empty_mask_row_is_one_clear_line():
    """Before: the mode of an all-illegal row was action ``start``, an illegal action. Catches: the empty-row
    check of ``check_call_mask`` removed."""
    model = _predict_model(STATE)
    masks = np.ones((3, model.head.num_outputs), bool)
    masks[1] = False
    with pytest.raises(ValueError, match=r"^action_mask rows \[1\] have no legal action; every row needs at least one"):
        model(np.zeros((3, 3), np.float32), action_mask=masks)


@pytest.mark.parametrize("entry", [spaces.Box(0.0, 1.0, (6,), np.float32), spaces.MultiBinary(5)])
def test_for_env_checks_the_mask_entry_before_building_the_model(entry):
    """Before: ``for_env`` built a masked model and ``Rollouts`` refused the entry later. Catches: ``source`` not
    checking the entry (``if action_space is not None:`` -> ``if False:``)."""
    env = PlainEnv(spaces.Dict({"state": STATE, "action_mask": entry}), MASKED_ACTIONS["Discrete"])
    with pytest.raises(TypeError, match=r"^observation entry 'action_mask' is .*; expected MultiBinary\(6\) or "
                                        r"Box\(0, 1, \(6,\), int8\), one flag per action"):
        keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_hidden_units=(4,))


def test_for_env_detects_the_method_of_an_async_vector_env():
    """Before: an ``AsyncVectorEnv``'s ``action_masks()`` was never detected, and training ran unmasked without a
    word. Catches: ``_has_method`` not probing ``env_fns[0]`` (``make is None`` -> ``True``)."""
    env = gymnasium.vector.AsyncVectorEnv([lambda: MaskedEnv(source="method") for _ in range(2)])
    try:
        assert keras_trpo.TRPO.for_env(env, hidden_units=(4,), value_hidden_units=(4,)).action_mask
    finally:
        env.close()
