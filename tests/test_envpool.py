"""EnvPool as a collection backend (issue 26, item 3): ``Rollouts(envpool.make_gymnasium(...), model)``.

EnvPool (an optional extra: ``pip install "keras-trpo[envpool]"``) steps its sub-envs in a C++ thread pool.
Its gymnasium env is a ``VectorEnv`` under ``NEXT_STEP`` autoreset: the step after a sub-env's episode ended
only resets it (action ignored, reward 0, no done, ``info["elapsed_step"] == 0``), and its
``reset(options={"reset_mask": ...})`` returns only the masked rows. ``Rollouts`` steps through those reset
steps and leaves them out (``envs.skips_reset_steps``), as for gymnasium's ``CartPoleVectorEnv``.

The tests record EnvPool's raw stream (every ``reset`` and ``step``, with a pass-through ``VectorWrapper``),
rebuild each sub-env's real transitions and episodes from it alone, and check the batches against them;
the same checks run on a gymnasium ``SyncVectorEnv`` (which ``Rollouts`` resets with ``reset_mask``).
"""

import gymnasium
import numpy as np
import pytest

import keras_trpo
from helpers import tiny_trpo
from numerics import gae_and_bound

envpool = pytest.importorskip("envpool")

#: EnvPool warns that ``reset(seed=...)`` is ignored (its envs are seeded by ``envpool.make_gymnasium``);
#: ``Rollouts`` passes it no seed (tests/test_envpool_seed.py), but ``evaluate(..., seed=...)`` and these tests may.
pytestmark = pytest.mark.filterwarnings("ignore:EnvPool seeds are fixed:UserWarning",
                                        "ignore:.*precision lowered by casting:UserWarning")

NUM_ENVS, LIMIT = 4, 15  # CartPole truncated at 15 steps: a random policy both terminates and truncates


class Recorder(gymnasium.vector.VectorWrapper):
    """Passes every call through and logs it: ``("reset", mask or None, obs, info)`` and
    ``("step", actions, obs, rewards, terminated, truncated, info)``, copied."""

    def __init__(self, env):
        super().__init__(env)
        self.log = []

    def reset(self, *, seed=None, options=None):
        mask = None if not options else np.array(options["reset_mask"])  # SyncVectorEnv.reset pops it
        observations, info = self.env.reset(seed=seed, options=options)
        self.log.append(("reset", mask, np.array(observations), info))
        return observations, info

    def step(self, actions):
        out = self.env.step(actions)
        self.log.append(("step", np.array(actions), *(np.array(x) for x in out[:4]), out[4]))
        return out


def real_transitions(log, num_envs):
    """Each sub-env's real transitions ``(obs, action, reward, terminated, truncated, next obs, log index)``
    and the episodes ``(return, length, EnvPool's elapsed_step or None, sub-env)`` in the order they ended, rebuilt
    from the raw stream: a sub-env's step is a reset step iff its previous step ended an episode and no
    ``reset`` of it came in between."""
    current, pending = None, np.zeros(num_envs, bool)
    transitions, episodes = [[] for _ in range(num_envs)], []
    running, length = np.zeros(num_envs), np.zeros(num_envs, int)
    for index, (kind, *entry) in enumerate(log):
        if kind == "reset":
            mask, observations, _ = entry
            mask = np.ones(num_envs, bool) if mask is None else mask
            current = np.array(observations) if current is None else current
            current[mask] = observations[mask] if len(observations) == num_envs else observations
            pending[mask], running[mask], length[mask] = False, 0.0, 0
            continue
        actions, following, rewards, terminated, truncated, info = entry
        for i in range(num_envs):
            if pending[i]:  # a reset step: no transition
                pending[i] = False
            else:
                transitions[i].append((current[i], actions[i], rewards[i], terminated[i], truncated[i],
                                       following[i], index))
                running[i] += rewards[i]
                length[i] += 1
                if terminated[i] or truncated[i]:
                    elapsed = info["elapsed_step"][i] if "elapsed_step" in info else None
                    episodes.append((running[i], length[i], elapsed, i))
                    running[i], length[i], pending[i] = 0.0, 0, True
        current = np.array(following)
    return transitions, episodes


def envpool_cartpole(seed=0):
    return envpool.make_gymnasium("CartPole-v1", num_envs=NUM_ENVS, seed=seed, max_episode_steps=LIMIT)


def sync_cartpole(seed=0):
    return gymnasium.vector.SyncVectorEnv(
        [lambda: gymnasium.make("CartPole-v1", max_episode_steps=LIMIT)] * NUM_ENVS
    )


@pytest.mark.parametrize("make_env", [envpool_cartpole, sync_cartpole], ids=["envpool", "gymnasium-sync"])
def test_batch_rows_are_the_real_transitions_of_the_raw_stream_with_exact_gae(make_env):
    """Each column = its sub-env's next ``horizon`` real transitions of the raw stream (no EnvPool reset step),
    advantages = GAE from the raw rewards with V of the true next observation (a truncated episode's last one),
    episodes and ``env_steps`` = those of the raw stream, episode lengths = EnvPool's own ``elapsed_step``.

    Catches (each checked once by mutation): reset steps stored as rows (rollouts.py ``stepped = ~self._resetting``
    -> ``np.ones(...)``); truncated rows not bootstrapped (``cut = truncated[columns]`` -> all False); episode
    lengths counting reset steps (``self._episode_length[stepped] += 1`` -> ``self._episode_length += 1``);
    EnvPool reset with ``reset_mask`` (``envs._ignores_reset_mask`` -> False: its reset returns 1 row).
    """
    gamma, lam, horizon = 0.9, 0.8, 24
    env = Recorder(make_env())
    model = tiny_trpo(env)
    rollouts = keras_trpo.Rollouts(env, model, steps=NUM_ENVS * horizon, gamma=gamma, gae_lambda=lam, seed=0)
    seen_terminated = seen_truncated = 0
    for _ in range(3):  # later batches go on from where the env is after the one before
        start = len(env.log)
        batch = rollouts.collect()
        transitions, _ = real_transitions(env.log, NUM_ENVS)
        obs = batch["observations"].reshape(horizon, NUM_ENVS, 4)
        actions = batch["actions"].reshape(horizon, NUM_ENVS)
        advantages = batch["advantages"].reshape(horizon, NUM_ENVS)
        for i in range(NUM_ENVS):
            record = [r for r in transitions[i] if r[6] >= start][:horizon]
            np.testing.assert_array_equal(obs[:, i], [r[0] for r in record], err_msg=f"sub-env {i}")
            np.testing.assert_array_equal(actions[:, i], [r[1] for r in record], err_msg=f"sub-env {i}")
            expected, bound, terminated, truncated = gae_and_bound(model, record, gamma, lam)
            assert np.all(np.abs(advantages[:, i] - expected) <= bound), f"sub-env {i}"
            seen_terminated, seen_truncated = seen_terminated + terminated.sum(), seen_truncated + truncated.sum()
    transitions, episodes = real_transitions(env.log, NUM_ENVS)
    assert seen_terminated > 0 and seen_truncated > 0  # both bootstrapping rules were exercised
    assert rollouts.episode_returns == [float(r) for r, _, _, _ in episodes]
    assert rollouts.episode_lengths == [int(n) for _, n, _, _ in episodes]
    if make_env is envpool_cartpole:  # EnvPool's own count of each episode's steps
        assert [int(e) for _, _, e, _ in episodes] == rollouts.episode_lengths
        reset_steps = sum(entry[0] == "step" for entry in env.log) * NUM_ENVS - sum(map(len, transitions))
        assert reset_steps >= len(episodes) - NUM_ENVS > 0  # EnvPool did step through its own resets
    assert rollouts.env_steps == sum(map(len, transitions))


def test_envpool_reset_step_is_no_transition():
    """What EnvPool does, on which ``skips_reset_steps`` relies: sync mode returns the sub-envs in ``env_id``
    order; the step after an episode ended has reward 0, no done and ``elapsed_step`` 0 (a new episode's
    first observation); ``reset_mask`` returns only the masked rows. Fails if an EnvPool release changes that.
    Catches: ``envs._ignores_reset_mask`` treating EnvPool as a ``reset_mask`` env (its ``return`` -> False)."""
    env = envpool_cartpole()
    env.reset()
    done, rng, reset_steps = np.zeros(NUM_ENVS, bool), np.random.default_rng(0), 0
    for _ in range(100):
        _, rewards, terminated, truncated, info = env.step(rng.integers(0, 2, NUM_ENVS))
        np.testing.assert_array_equal(info["env_id"], np.arange(NUM_ENVS))
        assert (rewards[done] == 0).all() and not (terminated | truncated)[done].any()
        assert (info["elapsed_step"][done] == 0).all() and (info["elapsed_step"][~done] > 0).all()
        reset_steps += done.sum()
        done = terminated | truncated
    assert reset_steps > 0
    observations, _ = env.reset(options={"reset_mask": np.arange(NUM_ENVS) == 1})
    assert len(observations) == 1
    assert keras_trpo.envs.skips_reset_steps(env)


def test_raw_envpool_env_collects_the_recorded_batches_and_trains():
    """``TRPO.for_env`` and ``Rollouts`` of a bare EnvPool env: the same batches as the recorded one (so the
    checks above hold for it), then ``fit``. Catches: ``as_vector_env`` refusing or re-wrapping an EnvPool env
    in sync mode (``_check_envpool`` testing ``batch_size != 0`` instead of ``not in (0, num_envs)``)."""
    raw, recorded = envpool_cartpole(seed=3), Recorder(envpool_cartpole(seed=3))
    model = tiny_trpo(raw)
    assert model.observation_space == raw.single_observation_space
    a, b = (keras_trpo.Rollouts(env, model, steps=64, seed=1) for env in (raw, recorded))
    for _ in range(2):
        first, second = a.collect(), b.collect()
        for key in ("observations", "actions", "advantages", "returns", "env_steps"):
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert a.episode_lengths == b.episode_lengths
    history = model.fit(a, epochs=2, verbose=0)
    assert history.history["env_steps"][-1] == a.env_steps >= 4 * 64  # two batches in fit after the two above


def test_evaluate_on_envpool_returns_the_raw_streams_episodes():
    """``keras_trpo.evaluate`` on an EnvPool env: each sub-env's first ``episodes / num_envs`` episodes of the raw
    stream, in the order they ended. Catches: evaluation resetting EnvPool's finished sub-envs with ``reset_mask``
    (evaluation.py ``and not skip_reset_steps`` dropped: EnvPool returns only the reset rows)."""
    env = Recorder(envpool_cartpole(seed=5))
    model = tiny_trpo(env)
    returns = keras_trpo.evaluate(model, env, episodes=2 * NUM_ENVS)
    _, episodes = real_transitions(env.log, NUM_ENVS)
    counted, expected = np.zeros(NUM_ENVS, int), []
    for episode_return, _, _, i in episodes:
        if counted[i] < 2:
            expected.append(float(episode_return))
            counted[i] += 1
    assert returns == expected and len(returns) == 2 * NUM_ENVS


def test_async_envpool_is_refused_at_construction():
    """Catches: dropping the async check of ``envs._check_envpool`` (a step would return ``batch_size`` rows
    in the order they finished: RolloutError at the first step instead of a clear line before any compute)."""
    env = envpool.make_gymnasium("CartPole-v1", num_envs=4, batch_size=2)
    model = tiny_trpo(envpool_cartpole())
    with pytest.raises(ValueError, match=r"^env is an EnvPool env in async mode \(batch_size=2, num_envs=4\).*"
                                         r"make it with batch_size=num_envs"):
        keras_trpo.Rollouts(env, model)


def test_check_env_on_envpool_says_what_to_check_instead():
    """Catches: dropping the EnvPool branch of ``envs.run_env_checker`` (an AttributeError about the EnvPool
    spec's missing ``id`` instead of one line saying what to check)."""
    env = envpool_cartpole()
    with pytest.raises(ValueError, match=r"^check_env=True .* EnvPool env's sub-environments are C\+\+ objects"):
        keras_trpo.Rollouts(env, tiny_trpo(env), check_env=True)
