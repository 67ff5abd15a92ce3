"""Tests for keras_trpo.advantages.compute_gae.

Every expected number below is worked out by hand from the GAE(γ, λ) definition

    δ_t = r_t + γ·V(next obs of step t)·(1 − terminated_t) − V(s_t)
    Â_t = Σ_k (γλ)^k δ_{t+k}        (sum stops at the end of the episode segment)

with small numbers (mostly γ = 0.9, λ = 0.8, so γλ = 0.72). A separate, plainly
written reference implementation (per env, per episode, explicit sum over k) is
compared against compute_gae on random batches.
"""

import numpy as np
import pytest

from keras_trpo.advantages import compute_gae

G = 0.9  # gamma
L = 0.8  # lam
GL = G * L  # 0.72
BIG = 1000.0  # filler for entries that must be ignored


def col(*xs, dtype=float):
    """A [T, 1] column from scalars."""
    return np.array(xs, dtype=dtype).reshape(-1, 1)


def gae_1env(rewards, values, terminated, truncated, final_values, gamma=G, lam=L, autoreset=None):
    """compute_gae on a single env given as flat lists; returns flat float64 advantages, returns."""
    kwargs = {}
    if autoreset is not None:
        kwargs["autoreset"] = col(*autoreset, dtype=bool)
    adv, ret = compute_gae(
        col(*rewards),
        col(*values),
        col(*terminated, dtype=bool),
        col(*truncated, dtype=bool),
        col(*final_values),
        gamma=gamma,
        lam=lam,
        **kwargs,
    )
    assert adv.shape == (len(rewards), 1) and ret.shape == (len(rewards), 1)
    return adv[:, 0].astype(np.float64), ret[:, 0].astype(np.float64)


# --------------------------------------------------------------------------------------
# 1. Mid-batch termination.
# --------------------------------------------------------------------------------------


def test_mid_batch_termination_no_bootstrap_and_no_leak():
    F, T_ = False, True
    r = [1.0, 2.0, 3.0, 4.0]
    v = [0.5, 1.0, 2.0, 1.0]
    term = [F, T_, F, F]
    trunc = [F, F, F, F]
    # final_values[1] is V of the terminal observation: it must NOT be used
    # (terminal states have value 0). final_values[3] bootstraps the last row.
    fv = [BIG, 50.0, BIG, 3.0]

    adv, ret = gae_1env(r, v, term, trunc, fv)

    # second episode (rows 2, 3); row 3 is the last row -> bootstrap with fv[3]
    d3 = r[3] + G * fv[3] - v[3]  # 4 + 0.9*3 - 1 = 5.7
    a3 = d3  # 5.7
    d2 = r[2] + G * v[3] - v[2]  # 3 + 0.9*1 - 2 = 1.9
    a2 = d2 + GL * a3  # 1.9 + 0.72*5.7 = 6.004
    # first episode (rows 0, 1); row 1 is terminal: δ = r − V(s), no bootstrap
    d1 = r[1] - v[1]  # 2 - 1 = 1
    a1 = d1  # 1  (nothing from row 2 leaks in)
    d0 = r[0] + G * v[1] - v[0]  # 1 + 0.9*1 - 0.5 = 1.4
    a0 = d0 + GL * a1  # 1.4 + 0.72*1 = 2.12
    expected = [a0, a1, a2, a3]
    assert expected == pytest.approx([2.12, 1.0, 6.004, 5.7])  # the arithmetic above

    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(ret, np.add(expected, v), rtol=1e-6)

    # No leak: changing everything after the terminal step leaves rows 0, 1 alone.
    adv2, _ = gae_1env(r[:2] + [-7.0, 11.0], v[:2] + [9.0, -3.0], term, trunc, fv[:3] + [-20.0])
    np.testing.assert_allclose(adv2[:2], [a0, a1], rtol=1e-6)
    assert not np.allclose(adv2[2:], adv[2:])  # and the later rows did change


# --------------------------------------------------------------------------------------
# 2. Truncation mid-batch.
# --------------------------------------------------------------------------------------


def test_mid_batch_truncation_bootstraps_from_final_value_and_cuts_recursion():
    F, T_ = False, True
    r = [1.0, 1.0, 1.0, 1.0]
    # values[2] = V(reset observation) = 100, far from V(true final obs) = final_values[1] = 3
    v = [1.0, 2.0, 100.0, 1.0]
    term = [F, F, F, F]
    trunc = [F, T_, F, F]
    fv = [BIG, 3.0, BIG, 2.0]

    adv, ret = gae_1env(r, v, term, trunc, fv)

    d3 = r[3] + G * fv[3] - v[3]  # 1 + 0.9*2 - 1 = 1.8
    a3 = d3  # 1.8
    d2 = r[2] + G * v[3] - v[2]  # 1 + 0.9*1 - 100 = -98.1
    a2 = d2 + GL * a3  # -98.1 + 0.72*1.8 = -96.804
    d1 = r[1] + G * fv[1] - v[1]  # truncated: 1 + 0.9*3 - 2 = 1.7   (NOT 1 + 0.9*100 - 2)
    a1 = d1  # recursion cut at the truncated step: 1.7
    d0 = r[0] + G * v[1] - v[0]  # 1 + 0.9*2 - 1 = 1.8
    a0 = d0 + GL * a1  # 1.8 + 0.72*1.7 = 3.024
    expected = [a0, a1, a2, a3]
    assert expected == pytest.approx([3.024, 1.7, -96.804, 1.8])

    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(ret, np.add(expected, v), rtol=1e-6)

    # The truncated row really reads final_values[1]: changing it changes rows 0 and 1 only.
    adv2, _ = gae_1env(r, v, term, trunc, [BIG, 13.0, BIG, 2.0])
    d1_new = r[1] + G * 13.0 - v[1]  # 1 + 11.7 - 2 = 10.7
    np.testing.assert_allclose(adv2, [d0 + GL * d1_new, d1_new, a2, a3], rtol=1e-6)


# --------------------------------------------------------------------------------------
# 3. Termination and truncation in different sub-envs of one batch.
# --------------------------------------------------------------------------------------


def test_termination_and_truncation_in_different_envs():
    F, T_ = False, True
    r = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 1.0], [0.0, 2.0]])
    v = np.array([[1.0, 1.0], [2.0, 1.0], [0.5, 2.0], [1.0, -5.0]])
    term = np.array([[F, F], [T_, F], [F, F], [F, F]])  # env 0 terminates at t=1
    trunc = np.array([[F, F], [F, F], [F, T_], [F, F]])  # env 1 truncates at t=2
    fv = np.array([[BIG, BIG], [7.0, BIG], [BIG, 4.0], [2.0, 1.0]])

    adv, ret = compute_gae(r, v, term, trunc, fv, gamma=G, lam=L)
    assert adv.shape == (4, 2) and ret.shape == (4, 2)

    # env 0
    e0_d3 = 0.0 + G * 2.0 - 1.0  # last row, bootstrap fv[3,0]=2: 0.8
    e0_a3 = e0_d3  # 0.8
    e0_d2 = 2.0 + G * 1.0 - 0.5  # 2.4
    e0_a2 = e0_d2 + GL * e0_a3  # 2.4 + 0.576 = 2.976
    e0_d1 = 1.0 - 2.0  # terminal: r − V = -1  (fv[1,0]=7 ignored)
    e0_a1 = e0_d1  # -1
    e0_d0 = 1.0 + G * 2.0 - 1.0  # 1.8
    e0_a0 = e0_d0 + GL * e0_a1  # 1.8 - 0.72 = 1.08
    exp0 = [e0_a0, e0_a1, e0_a2, e0_a3]
    assert exp0 == pytest.approx([1.08, -1.0, 2.976, 0.8])

    # env 1
    e1_d3 = 2.0 + G * 1.0 - (-5.0)  # last row, bootstrap fv[3,1]=1: 7.9
    e1_a3 = e1_d3  # 7.9
    e1_d2 = 1.0 + G * 4.0 - 2.0  # truncated, bootstrap fv[2,1]=4 (not values[3,1]=-5): 2.6
    e1_a2 = e1_d2  # cut: 2.6
    e1_d1 = 1.0 + G * 2.0 - 1.0  # 1.8
    e1_a1 = e1_d1 + GL * e1_a2  # 1.8 + 1.872 = 3.672
    e1_d0 = 0.0 + G * 1.0 - 1.0  # -0.1
    e1_a0 = e1_d0 + GL * e1_a1  # -0.1 + 0.72*3.672 = 2.54384
    exp1 = [e1_a0, e1_a1, e1_a2, e1_a3]
    assert exp1 == pytest.approx([2.54384, 3.672, 2.6, 7.9])

    np.testing.assert_allclose(adv[:, 0], exp0, rtol=1e-6)
    np.testing.assert_allclose(adv[:, 1], exp1, rtol=1e-6)
    np.testing.assert_allclose(ret, np.column_stack([exp0, exp1]) + v, rtol=1e-6)

    # Columns are independent: each equals a single-env run on its own column.
    for e in range(2):
        a_e, _ = gae_1env(r[:, e], v[:, e], term[:, e], trunc[:, e], fv[:, e])
        np.testing.assert_allclose(adv[:, e], a_e, rtol=1e-6)


# --------------------------------------------------------------------------------------
# 4. An episode spanning two batches.
# --------------------------------------------------------------------------------------


def test_episode_spanning_two_batches():
    F, T_ = False, True
    # One episode s0..s5, reward 1 per step, terminates after the step from s5.
    V = [1.0, 2.0, 1.0, 2.0, 0.0, 1.0]  # V(s0) .. V(s5)

    # batch 1: steps from s0, s1, s2; episode continues; final_values[2] = V(s3)
    adv1, ret1 = gae_1env([1.0, 1.0, 1.0], V[0:3], [F, F, F], [F, F, F], [BIG, BIG, V[3]])
    # batch 2: steps from s3, s4, s5; the last one terminates
    adv2, ret2 = gae_1env([1.0, 1.0, 1.0], V[3:6], [F, F, T_], [F, F, F], [BIG, BIG, BIG])

    # batch 1 (the λ-sum is truncated at the batch end, bootstrapping V(s3))
    b1_d2 = 1.0 + G * V[3] - V[2]  # 1 + 0.9*2 - 1 = 1.8
    b1_a2 = b1_d2  # 1.8
    b1_d1 = 1.0 + G * V[2] - V[1]  # 1 + 0.9 - 2 = -0.1
    b1_a1 = b1_d1 + GL * b1_a2  # -0.1 + 1.296 = 1.196
    b1_d0 = 1.0 + G * V[1] - V[0]  # 1 + 1.8 - 1 = 1.8
    b1_a0 = b1_d0 + GL * b1_a1  # 1.8 + 0.72*1.196 = 2.66112
    exp1 = [b1_a0, b1_a1, b1_a2]
    assert exp1 == pytest.approx([2.66112, 1.196, 1.8])

    # batch 2
    b2_d2 = 1.0 - V[5]  # terminal: 1 - 1 = 0
    b2_a2 = b2_d2  # 0
    b2_d1 = 1.0 + G * V[5] - V[4]  # 1 + 0.9 - 0 = 1.9
    b2_a1 = b2_d1 + GL * b2_a2  # 1.9
    b2_d0 = 1.0 + G * V[4] - V[3]  # 1 + 0 - 2 = -1
    b2_a0 = b2_d0 + GL * b2_a1  # -1 + 1.368 = 0.368
    exp2 = [b2_a0, b2_a1, b2_a2]
    assert exp2 == pytest.approx([0.368, 1.9, 0.0])

    np.testing.assert_allclose(adv1, exp1, rtol=1e-6)
    np.testing.assert_allclose(adv2, exp2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ret1, np.add(exp1, V[0:3]), rtol=1e-6)
    np.testing.assert_allclose(ret2, np.add(exp2, V[3:6]), rtol=1e-6, atol=1e-7)

    # batch 1's last advantage is exactly the one-step bootstrap r + γ V(s_T) − V(s_{T-1})
    assert adv1[2] == pytest.approx(1.0 + G * V[3] - V[2])  # = 1.8

    # batch 2 only looks forward, so it equals the tail of one 6-row batch of the episode
    adv_all, _ = gae_1env([1.0] * 6, V, [F] * 5 + [T_], [F] * 6, [BIG] * 6)
    np.testing.assert_allclose(adv_all[3:], adv2, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------------------
# 5. Autoreset (NEXT_STEP-style) rows.
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["terminated", "truncated"])
def test_autoreset_row_is_zero_and_does_not_touch_neighbours(end):
    F, T_ = False, True
    # row 1 ends the episode, row 2 is the reset-only row (reward 0), rows 3-4 a new episode
    r = [1.0, 2.0, 0.0, 1.0, 1.0]
    v = [1.0, 1.0, 5.0, 2.0, 1.0]
    term = [F, end == "terminated", F, F, F]
    trunc = [F, end == "truncated", F, F, F]
    fv = [BIG, 3.0, BIG, BIG, 2.0]
    reset = [F, F, T_, F, F]

    adv, ret = gae_1env(r, v, term, trunc, fv, autoreset=reset)

    a4 = 1.0 + G * 2.0 - 1.0  # last row, bootstrap fv[4]=2: 1.8
    a3 = (1.0 + G * 1.0 - 2.0) + GL * a4  # -0.1 + 1.296 = 1.196
    a2 = 0.0  # autoreset row
    if end == "terminated":
        a1 = 2.0 - 1.0  # r − V = 1
    else:
        a1 = 2.0 + G * 3.0 - 1.0  # bootstrap fv[1]=3: 3.7
    a0 = (1.0 + G * 1.0 - 1.0) + GL * a1  # 0.9 + 0.72*a1
    expected = [a0, a1, a2, a3, a4]
    if end == "terminated":
        assert expected == pytest.approx([1.62, 1.0, 0.0, 1.196, 1.8])
    else:
        assert expected == pytest.approx([3.564, 3.7, 0.0, 1.196, 1.8])

    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    assert adv[2] == 0.0
    assert ret[2] == v[2]  # return == value on the autoreset row
    np.testing.assert_allclose(ret, np.add(expected, v), rtol=1e-6)

    # Same trajectory with the autoreset row deleted (nothing else adjusted).
    keep = [0, 1, 3, 4]
    adv_del, ret_del = gae_1env(
        [r[i] for i in keep], [v[i] for i in keep], [term[i] for i in keep],
        [trunc[i] for i in keep], [fv[i] for i in keep],
    )
    np.testing.assert_allclose(adv[keep], adv_del, rtol=1e-6)
    np.testing.assert_allclose(ret[keep], ret_del, rtol=1e-6)

    # Garbage in the autoreset row's reward does not reach its neighbours either.
    r_bad = list(r)
    r_bad[2] = 1e3
    adv_bad, ret_bad = gae_1env(r_bad, v, term, trunc, fv, autoreset=reset)
    np.testing.assert_allclose(adv_bad, adv, rtol=1e-6)
    np.testing.assert_allclose(ret_bad, ret, rtol=1e-6)


def test_autoreset_rows_at_batch_edges():
    F, T_ = False, True
    # row 0: reset row (the previous batch ended with a done); rows 1-2 an episode ending
    # (terminated) at row 2; row 3 (last row): reset row.
    r = [0.0, 1.0, 2.0, 0.0]
    v = [4.0, 1.0, 1.0, 6.0]
    term = [F, F, T_, F]
    trunc = [F, F, F, F]
    fv = [BIG, BIG, BIG, BIG]
    reset = [T_, F, F, T_]
    adv, ret = gae_1env(r, v, term, trunc, fv, autoreset=reset)
    a2 = 2.0 - 1.0  # terminal: 1
    a1 = (1.0 + G * 1.0 - 1.0) + GL * a2  # 0.9 + 0.72 = 1.62
    np.testing.assert_allclose(adv, [0.0, a1, a2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ret, [4.0, a1 + 1.0, a2 + 1.0, 6.0], rtol=1e-6)


# --------------------------------------------------------------------------------------
# 6. Output contract.
# --------------------------------------------------------------------------------------


def test_returns_equal_advantages_plus_values_dtype_and_shape():
    rng = np.random.default_rng(0)
    T, n = 7, 3
    r = rng.normal(size=(T, n)).astype(np.float32)
    v = rng.normal(size=(T, n)).astype(np.float32)
    term = rng.random((T, n)) < 0.2
    trunc = rng.random((T, n)) < 0.2
    fv = rng.normal(size=(T, n))
    adv, ret = compute_gae(r, v, term, trunc, fv, gamma=G, lam=L)
    for out in (adv, ret):
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.float32
        assert out.shape == (T, n)
    np.testing.assert_allclose(ret, adv.astype(np.float64) + v, rtol=1e-5, atol=1e-6)

    # nested Python lists are accepted too, same contract
    adv_l, ret_l = compute_gae(r.tolist(), v.tolist(), term.tolist(), trunc.tolist(), fv.tolist(), G, L)
    assert adv_l.dtype == np.float32 and ret_l.dtype == np.float32 and adv_l.shape == (T, n)
    np.testing.assert_allclose(adv_l, adv, rtol=1e-6, atol=1e-6)

    # 0/1 integer flags behave like booleans
    adv_i, _ = compute_gae(r, v, term.astype(np.int64), trunc.astype(np.int32), fv, gamma=G, lam=L)
    np.testing.assert_array_equal(adv_i, adv)


# --------------------------------------------------------------------------------------
# 7. Special values of gamma and lambda.
# --------------------------------------------------------------------------------------


def test_gamma_zero_gives_reward_minus_value():
    F, T_ = False, True
    r = [1.0, 2.0, 3.0]
    v = [0.5, 1.0, 4.0]
    for lam in (0.0, 0.5, 1.0):
        adv, _ = gae_1env(r, v, [F, F, F], [F, T_, F], [BIG, BIG, BIG], gamma=0.0, lam=lam)
        # δ_t = r_t − V(s_t); γλ = 0 so nothing accumulates
        np.testing.assert_allclose(adv, [1.0 - 0.5, 2.0 - 1.0, 3.0 - 4.0], rtol=1e-6)  # [0.5, 1, -1]


def test_lam_zero_gives_one_step_td_errors():
    F, T_ = False, True
    # the truncation example of test 2
    r = [1.0, 1.0, 1.0, 1.0]
    v = [1.0, 2.0, 100.0, 1.0]
    fv = [BIG, 3.0, BIG, 2.0]
    adv, _ = gae_1env(r, v, [F, F, F, F], [F, T_, F, F], fv, gamma=G, lam=0.0)
    d0 = 1.0 + G * 2.0 - 1.0  # 1.8
    d1 = 1.0 + G * 3.0 - 2.0  # 1.7
    d2 = 1.0 + G * 1.0 - 100.0  # -98.1
    d3 = 1.0 + G * 2.0 - 1.0  # 1.8
    np.testing.assert_allclose(adv, [d0, d1, d2, d3], rtol=1e-6)


def test_lam_one_gamma_one_gives_monte_carlo_returns_minus_values():
    F, T_ = False, True
    # two complete episodes: rows 0-2 (terminal at 2) and rows 3-4 (terminal at 4)
    r = [1.0, 2.0, 3.0, 10.0, 20.0]
    v = [0.5, 1.0, 4.0, 7.0, 2.0]
    adv, ret = gae_1env(r, v, [F, F, T_, F, T_], [F] * 5, [BIG] * 5, gamma=1.0, lam=1.0)
    mc = [1.0 + 2.0 + 3.0, 2.0 + 3.0, 3.0, 10.0 + 20.0, 20.0]  # [6, 5, 3, 30, 20]
    np.testing.assert_allclose(adv, np.subtract(mc, v), rtol=1e-6)  # [5.5, 4, -1, 23, 18]
    np.testing.assert_allclose(ret, mc, rtol=1e-6)


# --------------------------------------------------------------------------------------
# Independent reference implementation.
# --------------------------------------------------------------------------------------


def reference_gae(rewards, values, terminated, truncated, final_values, gamma, lam, autoreset=None):
    """Per env, split the rows into episode segments and compute Â_t = Σ_k (γλ)^k δ_{t+k}."""
    T, n = np.shape(rewards)
    if autoreset is None:
        autoreset = np.zeros((T, n), bool)
    adv = np.zeros((T, n))
    for e in range(n):
        transitions = [
            dict(
                t=t,
                r=float(rewards[t][e]),
                v=float(values[t][e]),
                term=bool(terminated[t][e]),
                trunc=bool(truncated[t][e]),
                fv=float(final_values[t][e]),
                reset=bool(autoreset[t][e]),
            )
            for t in range(T)
        ]
        segments, current = [], []
        for tr in transitions:
            if tr["reset"]:
                assert not current, "test data: an autoreset row must follow a done row"
                continue  # not a real transition: advantage stays 0
            current.append(tr)
            if tr["term"] or tr["trunc"]:
                segments.append(current)
                current = []
        if current:
            segments.append(current)  # episode continues past the batch end

        for seg in segments:
            deltas = []
            for i, tr in enumerate(seg):
                if tr["term"]:
                    next_v = 0.0
                elif tr["trunc"] or tr["t"] == T - 1:
                    next_v = tr["fv"]
                else:
                    next_v = seg[i + 1]["v"]
                deltas.append(tr["r"] + gamma * next_v - tr["v"])
            for i, tr in enumerate(seg):
                adv[tr["t"], e] = sum((gamma * lam) ** k * deltas[i + k] for k in range(len(seg) - i))
    return adv, adv + np.asarray(values, dtype=float)


def random_batch(seed, T=40, n=4, with_autoreset=False):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, n))
    v = rng.normal(size=(T, n))
    fv = rng.normal(size=(T, n))  # everywhere, including entries that must be ignored
    term = np.zeros((T, n), bool)
    trunc = np.zeros((T, n), bool)
    reset = np.zeros((T, n), bool)
    for e in range(n):
        for t in range(T):
            prev_done = (term[t - 1, e] or trunc[t - 1, e]) if t > 0 else rng.random() < 0.3
            if with_autoreset and prev_done:
                reset[t, e] = True
                r[t, e] = 0.0
                continue
            term[t, e] = rng.random() < 0.15
            trunc[t, e] = rng.random() < 0.15  # sometimes both
    if not with_autoreset:
        term[T // 2, 0] = trunc[T // 2, 0] = True  # always cover "terminated and truncated"
    assert term.any() and trunc.any()
    return r, v, term, trunc, fv, reset


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.97), (0.9, 0.8), (1.0, 1.0), (0.5, 0.0), (0.0, 0.7)])
def test_matches_reference_on_random_batches(seed, gamma, lam):
    r, v, term, trunc, fv, _ = random_batch(seed)
    adv, ret = compute_gae(r, v, term, trunc, fv, gamma=gamma, lam=lam)
    ref_adv, ref_ret = reference_gae(r, v, term, trunc, fv, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.97), (0.9, 0.8), (1.0, 1.0)])
def test_matches_reference_on_random_batches_with_autoreset(seed, gamma, lam):
    r, v, term, trunc, fv, reset = random_batch(100 + seed, with_autoreset=True)
    assert reset.any()
    adv, ret = compute_gae(r, v, term, trunc, fv, gamma=gamma, lam=lam, autoreset=reset)
    ref_adv, ref_ret = reference_gae(r, v, term, trunc, fv, gamma, lam, autoreset=reset)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)
    assert np.all(adv[reset] == 0.0)
    np.testing.assert_allclose(ret[reset], v[reset], rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_unused_final_values_are_ignored(seed):
    r, v, term, trunc, fv, _ = random_batch(200 + seed)
    adv, _ = compute_gae(r, v, term, trunc, fv, gamma=G, lam=L)
    used = trunc.copy()
    used[-1] = True
    fv2 = np.where(used, fv, fv + 1e3)
    adv2, _ = compute_gae(r, v, term, trunc, fv2, gamma=G, lam=L)
    np.testing.assert_array_equal(adv2, adv)
    # ...while the used ones do matter
    adv3, _ = compute_gae(r, v, term, trunc, np.where(trunc & ~term, fv + 1.0, fv), gamma=G, lam=L)
    assert not np.allclose(adv3, adv)


# --------------------------------------------------------------------------------------
# 8. Input validation.
# --------------------------------------------------------------------------------------


def _good(T=3, n=2):
    return dict(
        rewards=np.zeros((T, n)),
        values=np.zeros((T, n)),
        terminated=np.zeros((T, n), bool),
        truncated=np.zeros((T, n), bool),
        final_values=np.zeros((T, n)),
    )


def test_one_dimensional_rewards_raise():
    kw = _good()
    kw["rewards"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"^rewards\b"):
        compute_gae(**kw)


@pytest.mark.parametrize("name", ["values", "terminated", "truncated", "final_values", "autoreset"])
@pytest.mark.parametrize("bad_shape", [(4, 2), (3, 1), (3,), (3, 2, 1)])
def test_mismatched_shape_raises_naming_the_argument(name, bad_shape):
    kw = _good()
    dtype = bool if name in ("terminated", "truncated", "autoreset") else float
    kw[name] = np.zeros(bad_shape, dtype)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        compute_gae(**kw)


@pytest.mark.parametrize("name", ["gamma", "lam"])
@pytest.mark.parametrize("bad", [-0.1, 1.01, 2.0, float("nan")])
def test_gamma_lam_out_of_range_raise(name, bad):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        compute_gae(**_good(), **{name: bad})


@pytest.mark.parametrize("name", ["gamma", "lam"])
@pytest.mark.parametrize("edge", [0.0, 1.0])
def test_gamma_lam_range_is_inclusive(name, edge):
    adv, _ = compute_gae(**_good(), **{name: edge})
    assert adv.shape == (3, 2)


@pytest.mark.parametrize("name", ["terminated", "truncated", "autoreset"])
def test_float_flags_raise_type_error(name):
    kw = _good()
    kw[name] = np.zeros((3, 2), np.float32)
    with pytest.raises(TypeError, match=rf"^{name}\b"):
        compute_gae(**kw)
