"""On-policy rollouts as a Keras ``PyDataset``: one epoch of ``fit`` = one TRPO iteration."""

from __future__ import annotations

import pickle
import time
import warnings

import keras
import numpy as np
from gymnasium.vector import AutoresetMode

from keras_trpo.acting import PolicySnapshot
from keras_trpo.advantages import compute_gae
from keras_trpo.envs import (
    action_bounds, as_vector_env, autoreset_mode, check_partial_reset, check_spaces, failing_sub_env, raised_in,
    run_env_checker,
)
from keras_trpo.errors import RolloutError
from keras_trpo.normalization import RewardScaler
from keras_trpo.validation import check_unit_interval


class Rollouts(keras.utils.PyDataset):
    """Collects ``steps`` transitions with the model's current weights, once per epoch.

    Each epoch of ``model.fit(rollouts, epochs=N)`` yields exactly one batch:
    ``steps`` transitions summed over the sub-environments, with GAE(γ, λ)
    advantages and value targets, i.e. one TRPO iteration.

    **On-policy guarantee.** ``TRPO.fit`` reads a one-batch ``PyDataset``
    itself, right before each update, in the calling thread (no ``tf.data``
    prefetching). Under Keras' usual ``tf.data`` path (``keras.Model.fit`` of
    another model, or a ``tf.distribute`` strategy) one batch per epoch still
    means nothing is read ahead of an update, and a batch read early to infer
    the dataset structure is cached and served as the first batch, so no
    transitions are thrown away. Each batch carries the ``policy_version`` of the
    weights that collected it; ``fit`` and ``train_step`` raise ``StaleBatchError``
    if it differs from the model's (for example with ``steps_per_epoch`` > 1 or
    worker threads), and a compiled ``train_step`` rejects the batch (reason 4).

    **Environments.** A gymnasium ``Env`` is wrapped in a one-env
    ``SyncVectorEnv``; a ``VectorEnv`` (sync or async) is used as is. All three
    autoreset modes of gymnasium ≥ 1.0 work: under ``NEXT_STEP`` (the default)
    and ``DISABLED`` the finished sub-environments are reset right away with
    ``reset(options={"reset_mask": done})``, so no batch row is a reset-only
    step; under ``SAME_STEP`` the true last observation comes from
    ``info["final_obs"]``. A truncated episode is bootstrapped from ``V`` of that
    true last observation.

    **Acting.** Actions are sampled with a numpy copy of the current weights
    (:class:`keras_trpo.acting.PolicySnapshot`; custom networks: one compiled TF function),
    batched over sub-environments. Observations are stored in the observation space's
    dtypes, a dict of arrays for a ``Dict`` space (:mod:`keras_trpo.observations`).
    ``Box`` actions are clipped to the action bounds before ``env.step``; the
    batch stores the unclipped sample, whose log-probability the update uses.

    Args:
        env: a gymnasium ``Env`` or ``VectorEnv`` matching the model's spaces.
        model: the :class:`keras_trpo.TRPO` model that acts and is trained.
        steps: transitions per batch, a multiple of the number of sub-envs.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE λ in [0, 1].
        seed: seeds the first ``env.reset`` and the action sampling.
        normalize_rewards: divide rewards by the running standard deviation of
            the discounted return before GAE (:class:`keras_trpo.normalization.RewardScaler`,
            sb3's ``VecNormalize(norm_reward=True)``). The critic then learns
            scaled returns; reported episode returns stay raw. Off by default.
        check_env: run gymnasium's ``check_env`` on (a copy of) the sub-env first.

    Raises:
        RolloutError: an environment raised during collection; the message
            names the sub-environment and the step. The model is unchanged and
            the episodes finished before the error are kept in
            ``episode_returns`` / ``episode_lengths``.

    Batch entries: ``observations``, ``actions``, ``advantages``, ``returns``
    (``[steps, ...]``, time-major over sub-envs), and ``[steps]`` columns of one
    repeated value: ``policy_version``, the episode statistics
    ``episode_return`` / ``episode_length`` (means over the episodes that
    finished in this batch; NaN when none did), ``episodes`` (their count) and
    ``env_steps`` (transitions collected so far).

    Example:

    ```python
    env = gymnasium.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(keras_trpo.Rollouts(env, model, steps=2048), epochs=50)
    ```
    """

    def __init__(
        self,
        env,
        model,
        *,
        steps=2048,
        gamma=0.99,
        gae_lambda=0.97,
        seed=None,
        check_env=False,
        normalize_rewards=False,
    ):
        # No workers: a batch must never be collected ahead of the update before it.
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=1)
        check_unit_interval("gamma", gamma)
        check_unit_interval("gae_lambda", gae_lambda)
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise TypeError(f"steps must be an integer >= 1; got {steps!r}.")
        if steps < 1:
            raise ValueError(f"steps must be an integer >= 1; got {steps}.")
        if not isinstance(normalize_rewards, bool):
            raise TypeError(f"normalize_rewards must be True or False; got {normalize_rewards!r}.")
        if check_env:
            run_env_checker(env)
        self.env = as_vector_env(env)
        self.model = model
        check_spaces(self.env, model)
        check_partial_reset(self.env)
        self.num_envs = int(self.env.num_envs)
        if steps % self.num_envs:
            lower = max(self.num_envs, steps - steps % self.num_envs)
            raise ValueError(
                f"steps must be a multiple of the number of sub-environments ({self.num_envs}); got "
                f"{steps}. Use steps={lower} or steps={lower + self.num_envs}."
            )
        self.steps = int(steps)
        self.horizon = self.steps // self.num_envs
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.seed = seed
        self.autoreset_mode = autoreset_mode(self.env)
        self._rng = np.random.default_rng(seed)
        self._observations = None
        self._episode_return = np.zeros(self.num_envs)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._cached = None  # (policy_version, batch)
        self._was_reset = False
        #: The exception that ended the last collection, if any (``TRPO.fit`` re-raises it as is).
        self.pending_error = None
        #: The reward scaler (``None`` unless ``normalize_rewards``).
        self.reward_scaler = RewardScaler(self.num_envs, self.gamma) if normalize_rewards else None
        #: Transitions collected so far (sum over sub-environments).
        self.env_steps = 0
        #: Wall-clock seconds spent in completed collections (env steps and acting), summed.
        self.collect_seconds = 0.0
        #: Returns and lengths of every finished episode, in order.
        self.episode_returns: list[float] = []
        self.episode_lengths: list[int] = []

    # -- PyDataset protocol -------------------------------------------------
    @property
    def num_batches(self):
        return 1

    def __len__(self):
        return 1

    def __getitem__(self, index):
        version = self.model.policy_version
        if self._cached is not None and self._cached[0] == version:
            # Already collected by these weights (on Keras' tf.data path: the batch read to infer
            # the dataset structure); no update has happened since.
            return self._cached[1]
        try:
            batch = self.collect()
        except BaseException as error:
            # On Keras' tf.data path this runs on a tf.data thread, where TensorFlow turns any
            # exception into an UnknownError; TRPO.fit raises the original one from here.
            self.pending_error = error
            raise
        self._cached = (version, batch)
        return batch

    # -- collection ---------------------------------------------------------
    def collect(self) -> dict:
        """Runs the current policy for ``steps`` transitions and returns the batch dict.

        If collection stops early (an env error, ``KeyboardInterrupt``), the
        partial batch is dropped, the episodes finished so far are kept in
        :attr:`episode_returns`, and the next collection starts from
        ``env.reset()``: the env's state no longer matches the last observation.
        """
        start = time.perf_counter()
        try:
            batch = self._collect()
            self.collect_seconds += time.perf_counter() - start
            return batch
        except BaseException:
            self._observations = None
            self._episode_return[:] = 0.0
            self._episode_length[:] = 0
            raise

    def _collect(self) -> dict:
        policy = PolicySnapshot(self.model)
        env, horizon, num_envs = self.env, self.horizon, self.num_envs
        if self._observations is None:
            # Seeded once; a reset after an interrupted collection continues the env's RNG stream.
            seed = None if self._was_reset else self.seed
            self._observations, _ = self._call_env(lambda: env.reset(seed=seed), "reset", 0)
            self._was_reset = True
        head, spec = self.model.head, self.model.observation_spec
        # In the space's dtypes: uint8 images stay uint8 (a quarter of float32's memory).
        obs_buf = spec.buffer(horizon, num_envs)
        act_buf = np.empty((horizon, num_envs, *head.action_shape), np.float32 if not head.integer_actions else np.int64)
        rewards = np.zeros((horizon, num_envs))
        values = np.zeros((horizon, num_envs))
        final_values = np.zeros((horizon, num_envs))
        terminated = np.zeros((horizon, num_envs), bool)
        truncated = np.zeros((horizon, num_envs), bool)
        first_finished = len(self.episode_returns)
        low, high = action_bounds(self.env)

        observations = self._observations
        for t in range(horizon):
            actions, values[t] = policy.act(observations, self._rng)
            if spec.structured:
                spec.map(lambda _, buffer, o: buffer.__setitem__(t, o), obs_buf, observations)
            else:
                obs_buf[t] = observations
            act_buf[t] = actions
            env_actions = actions if low is None else np.clip(actions, low, high)
            observations, rewards[t], terminated[t], truncated[t], info = self._call_env(
                lambda: env.step(env_actions), "step", t
            )
            if not np.all(np.isfinite(rewards[t])):
                bad = np.flatnonzero(~np.isfinite(rewards[t])).tolist()
                warnings.warn(
                    f"sub-environment(s) {bad} returned a non-finite reward {rewards[t][bad].tolist()} at step {t} "
                    f"of this batch; TRPO.train_step will reject the batch and leave the model unchanged.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            self._episode_return += rewards[t]
            self._episode_length += 1
            done = terminated[t] | truncated[t]
            if self.reward_scaler is not None:
                rewards[t] = self.reward_scaler(rewards[t], done)
            if done.any():
                # Kept at once, so an env error later in this batch does not lose them.
                self.episode_returns.extend(self._episode_return[done].tolist())
                self.episode_lengths.extend(self._episode_length[done].tolist())
                self._episode_return[done] = 0.0
                self._episode_length[done] = 0
                if self.autoreset_mode == AutoresetMode.SAME_STEP:
                    last_observations = spec.map(lambda _, o: np.array(o, copy=True), observations)
                    for i in np.flatnonzero(done):
                        spec.map(lambda _, last, final: last.__setitem__(i, final), last_observations,
                                 info["final_obs"][i])
                else:
                    last_observations = observations
                cut = truncated[t]
                if cut.any():
                    final_values[t, cut] = policy.values(spec.map(lambda _, o: o[cut], last_observations))
                if self.autoreset_mode != AutoresetMode.SAME_STEP:
                    observations, _ = self._call_env(
                        lambda: env.reset(options={"reset_mask": done}), "reset", t
                    )
        # Bootstrap whatever continues into the next batch from the current observation.
        running = ~(terminated[-1] | truncated[-1])
        if running.any():
            final_values[-1, running] = policy.values(spec.map(lambda _, o: o[running], observations))
        self._observations = observations
        self.env_steps += self.steps

        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rewards were warned about above
            advantages, returns = compute_gae(
                rewards, values, terminated, truncated, final_values, self.gamma, self.gae_lambda
            )
        n = self.steps
        finished_returns = self.episode_returns[first_finished:]
        finished_lengths = self.episode_lengths[first_finished:]
        return {
            "observations": spec.map(lambda leaf, o: o.reshape(n, *leaf.shape), obs_buf),
            "actions": act_buf.reshape(n, *head.action_shape),
            "advantages": advantages.reshape(n),
            "returns": returns.reshape(n),
            # Scalars travel as [N] columns of one repeated value: Keras datasets need rank >= 1, and
            # under a tf.distribute strategy every replica's share of the batch then carries them.
            "policy_version": np.full(n, policy.version, np.int64),
            "episode_return": np.full(n, np.mean(finished_returns) if finished_returns else np.nan, np.float32),
            "episode_length": np.full(n, np.mean(finished_lengths) if finished_lengths else np.nan, np.float32),
            "episodes": np.full(n, len(finished_returns), np.float32),
            "env_steps": np.full(n, self.env_steps, np.float32),
        }

    def close(self):
        """Closes the environment."""
        self.env.close()

    # -- exact resumption ---------------------------------------------------
    def get_state(self) -> dict:
        """Everything besides the model that decides the next batches, as picklable values.

        With the model's weights (``BackupAndRestore``) and this state, a resumed
        ``fit`` continues bit for bit like an uninterrupted one: the environment
        (pickled, so it must be picklable: e.g. a ``SyncVectorEnv`` built from
        module-level factories; ``AsyncVectorEnv`` worker processes are not), the
        current observations and running episode statistics, the action-sampling
        RNG, and the counters. ``policy_version`` records which weights it belongs to.
        """
        return {
            "policy_version": self.model.policy_version,
            "rng": self._rng.bit_generator.state,
            "env": pickle.dumps(self.env),
            "observations": None if self._observations is None else self.model.observation_spec.numpy(
                self._observations, copy=True),
            "was_reset": self._was_reset,
            "episode_return": self._episode_return.copy(),
            "episode_length": self._episode_length.copy(),
            "env_steps": self.env_steps,
            "episode_returns": list(self.episode_returns),
            "episode_lengths": list(self.episode_lengths),
            "reward_scaler": None if self.reward_scaler is None else self.reward_scaler.get_state(),
        }

    def set_state(self, state: dict) -> None:
        """Restores :meth:`get_state`; a batch collected before the restore is never served."""
        if state["policy_version"] != self.model.policy_version:
            raise ValueError(
                f"rollouts state belongs to policy_version {state['policy_version']} but the model is at "
                f"{self.model.policy_version}; restore the model's weights first (BackupAndRestore)."
            )
        self._rng.bit_generator.state = state["rng"]
        self.env = pickle.loads(state["env"])
        self._observations = state["observations"]
        self._was_reset = state.get("was_reset", self._observations is not None)
        self._episode_return = state["episode_return"].copy()
        self._episode_length = state["episode_length"].copy()
        self.env_steps = state["env_steps"]
        self.episode_returns = list(state["episode_returns"])
        self.episode_lengths = list(state["episode_lengths"])
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            self.reward_scaler.set_state(state["reward_scaler"])
        self._cached = None

    def _call_env(self, call, what, t):
        """Runs ``env.step``/``env.reset``; errors name the sub-env, the step and the space."""
        try:
            result = call()
        except Exception as error:  # noqa: BLE001 - re-raised with context
            index = failing_sub_env(error)
            where = "a sub-environment" if index is None else f"sub-environment {index}"
            message = (
                f"{where} raised {type(error).__name__} in {what} at step {t} of this batch "
                f"(after {self.env_steps + t * self.num_envs} env steps in all): {error}"
            )
            if raised_in(error, "concatenate"):
                message += (
                    f". Its observation does not fit the observation space "
                    f"{self.env.single_observation_space}."
                )
            raise RolloutError(message) from error
        if self.model.observation_spec.is_exact_batch(result[0], self.num_envs):
            return result
        try:
            self.model.observation_spec.check(result[0], what=f"env.{what}'s observations")
            rows = {np.shape(o)[0] for o in self.model.observation_spec.flatten(result[0])}
            if rows != {self.num_envs}:
                raise ValueError(f"env.{what}'s observations have {sorted(rows)} rows; expected num_envs = "
                                 f"{self.num_envs} rows")
        except (ValueError, KeyError, TypeError) as error:
            raise RolloutError(f"{error} (env observation space {self.env.single_observation_space})") from None
        return result
