"""On-policy rollouts as a Keras ``PyDataset``: one epoch of ``fit`` = one TRPO iteration."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gymnasium
import keras
import numpy as np
from gymnasium.vector import AutoresetMode

from keras_trpo import exploration
from keras_trpo.acting import PolicySnapshot
from keras_trpo.buffer import RolloutBuffer, scale_rewards, warn_non_finite
from keras_trpo.envs import (
    action_bounds, as_vector_env, autoreset_mode, call_env, check_spaces, mark_collecting,
    reset_seed, run_env_checker, skips_reset_steps,
)
from keras_trpo.masking import MaskReader, mask_size
from keras_trpo.normalization import RewardScaler
from keras_trpo.resumable import Resumable
from keras_trpo.sequences import Carry, to_sequences
from keras_trpo.validation import check_bool, check_steps, check_unit_interval

if TYPE_CHECKING:
    from keras_trpo.model import TRPO


class Rollouts(Resumable, keras.utils.PyDataset):
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
    true last observation. A ``NEXT_STEP`` vector env whose ``reset`` ignores
    ``reset_mask`` (gymnasium's ``CartPoleVectorEnv``, the default of
    ``make_vec("CartPole-v1", num_envs=8)``) resets a finished sub-env on its next
    step, which is then no transition (action ignored, reward 0): such steps are left
    out. The env is stepped until every sub-env has ``steps / num_envs`` transitions
    in a row; a sub-env that has them goes on stepping (its transitions count for the
    episode statistics and ``env_steps`` but are not stored) and the next batch
    continues from there. Each sub-env's last row is bootstrapped from the
    observation that followed it. ``DISABLED`` without ``reset_mask`` is refused.

    **Acting.** Actions are sampled with a numpy copy of the current weights
    (:class:`keras_trpo.acting.PolicySnapshot`; custom networks: one compiled TF function),
    batched over sub-environments. Transitions go to a :class:`keras_trpo.buffer.RolloutBuffer`
    (time-major ``[steps / num_envs, num_envs, ...]``, which also computes GAE and the batch);
    observations in the observation space's dtypes, per key for a ``Dict`` space.
    ``Box`` actions are clipped to the action bounds before ``env.step``; the
    batch stores the unclipped sample, whose log-probability the update uses.

    Args:
        env: a gymnasium ``Env`` or ``VectorEnv`` matching the model's spaces.
        model: the :class:`keras_trpo.TRPO` model that acts and is trained.
        steps: transitions per batch, a multiple of the number of sub-envs.
        gamma: discount factor in [0, 1].
        gae_lambda: GAE λ in [0, 1].
        seed: seeds the first ``env.reset`` and the action sampling (an EnvPool env is seeded when it is
            made, ``envpool.make_gymnasium(..., seed=...)``, so its reset gets no seed).
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
    ``env_steps`` (transitions collected so far: ``steps`` per batch; with reset
    steps left out, every transition the env made, stored or not, so a little more).

    **Resuming** (:meth:`get_state`, ``callbacks.RolloutsBackup``): bit for bit when the env
    can be pickled with its state, else from a seeded reset.

    Example:

    ```python
    env = gymnasium.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
    model = keras_trpo.TRPO.for_env(env)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(keras_trpo.Rollouts(env, model, steps=2048), epochs=50)
    ```
    """

    def __init__(
        self, env: gymnasium.Env | gymnasium.vector.VectorEnv, model: TRPO, *, steps: int = 2048,
        gamma: float = 0.99, gae_lambda: float = 0.97, seed: int | None = None, check_env: bool = False,
        normalize_rewards: bool = False,
    ) -> None:  # fmt: skip
        # No workers: a batch must never be collected ahead of the update before it.
        super().__init__(workers=1, use_multiprocessing=False, max_queue_size=1)
        check_unit_interval("gamma", gamma)
        check_unit_interval("gae_lambda", gae_lambda)
        check_bool("normalize_rewards", normalize_rewards)
        if check_env:
            run_env_checker(env)
        self.env = as_vector_env(env)
        self.model = model
        check_spaces(self.env, model)
        #: The legal-action masks of the env's observations (a masked model; keras_trpo.masking), or None.
        self.masks = None
        if model.action_mask:
            self.masks = MaskReader(self.env, model.action_space)
        #: A recurrent model's state and episode starts, carried per sub-env across steps and batches, or None.
        self.carry = Carry(model.state_sizes(), self.env.num_envs, model.compute_dtype) if model.is_recurrent else None
        #: Whether the env's own reset steps are stepped through and left out (NEXT_STEP, no reset_mask).
        self.skips_reset_steps = skips_reset_steps(self.env)
        self.num_envs = int(self.env.num_envs)
        self.steps = check_steps(steps, self.num_envs)
        mark_collecting(self.env)  # only once accepted: evaluate then refuses it
        self.horizon = self.steps // self.num_envs
        self.gamma = float(gamma)
        self.gae_lambda = float(gae_lambda)
        self.seed = seed
        self.autoreset_mode = autoreset_mode(self.env)
        self._rng = np.random.default_rng(seed)
        self._observations = None
        self._episode_return = np.zeros(self.num_envs)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._resetting = np.zeros(self.num_envs, bool)  # skips_reset_steps: the next step only resets these
        self._cached: tuple[int, dict[str, Any]] | None = None  # (policy_version, batch)
        self._was_reset = False
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
    def num_batches(self) -> int:
        return 1

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        version = self.model.policy_version
        if self._cached is not None and self._cached[0] == version:
            # Already collected by these weights (on Keras' tf.data path: the batch read to infer
            # the dataset structure); no update has happened since.
            return self._cached[1]
        # On a strategy's tf.data thread an exception raised here becomes TensorFlow's UnknownError;
        # keras_trpo.feeding.Feed gives fit's caller the original one.
        batch = self.collect()
        self._cached = (version, batch)
        return batch

    # -- collection ---------------------------------------------------------
    def collect(self) -> dict[str, Any]:
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

    def _start(self):
        """The current observations; a (seeded, the first time) reset of every sub-env if there are none."""
        if self._observations is None:
            # Seeded once; a reset after an interrupted collection continues the env's RNG stream.
            seed = None if self._was_reset else reset_seed(self.env, self.seed)
            self._observations, _ = self._call_env(lambda: self.env.reset(seed=seed), "reset", 0)
            self._was_reset = True
            self._resetting[:] = False
            if self.carry is not None:
                self.carry.reset()
        return self._observations

    def _end_episodes(self, done):
        """Keeps the finished episodes' statistics at once: an env error later in the batch cannot lose them."""
        self.episode_returns.extend(self._episode_return[done].tolist())
        self.episode_lengths.extend(self._episode_length[done].tolist())
        self._episode_return[done] = 0.0
        self._episode_length[done] = 0

    def _collect(self) -> dict:
        """One batch: steps the env until every sub-env has ``horizon`` transitions in the buffer.

        A sub-env's step after its episode ended only resets it (``skips_reset_steps``): no
        transition, not stored. Transitions of a sub-env whose column is full are not stored
        either (they count for the episode statistics and ``env_steps``), and the next batch goes
        on from where the env then is. Every other env steps and stores ``horizon`` times.
        """
        policy, spec = PolicySnapshot(self.model), self.model.observation_spec
        observations = self._start()
        buffer = RolloutBuffer(spec, self.model.head, self.horizon, self.num_envs,
                               mask_size=0 if self.masks is None else mask_size(self.model.action_space),
                               state_sizes=None if self.carry is None else self.carry.sizes,
                               state_dtype=None if self.carry is None else self.carry.dtype)
        first_finished, transitions, t, matrices = len(self.episode_returns), 0, 0, None
        low, high = action_bounds(self.env)
        while not buffer.full:
            matrices = self._exploration(policy, t, matrices)
            # False: the step only resets the sub-env (only ever set when skips_reset_steps)
            stepped = ~self._resetting if self.skips_reset_steps and self._resetting.any() else None
            masks = None if self.masks is None else self.masks(observations, skip=self._resetting)
            cells = buffer.next_cells(stepped)  # a real transition with room in its column (None: every sub-env)
            if self.carry is None:
                actions, values = policy.act(observations, self._rng, masks, matrices)
            else:  # the state this step starts from is stored with it; the next one is carried
                buffer.add_step(cells, **self.carry.stored())
                actions, values, next_state = policy.act_recurrent(observations, self.carry.state, self.carry.starts,
                                                                   self._rng, masks, matrices)
            buffer.add_step(cells, observations=observations, actions=actions, values=values)
            if masks is not None:
                buffer.add_step(cells, action_masks=masks)
            # np.clip's values by two ufunc calls, without its Python wrapper (~4 µs of each vector step); NaN and the
            # result dtype as np.clip (only a sampled -0.0 at a bound of exactly 0 can come out as +0.0)
            env_actions = actions if low is None else np.minimum(np.maximum(actions, low), high)
            following, rewards, terminated, truncated, info = self._call_env(
                lambda: self.env.step(env_actions), "step", t
            )
            terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
            rewards, done = self._account(rewards, terminated | truncated, stepped, cells, t)
            buffer.add_step(cells, rewards=rewards, terminated=terminated, truncated=truncated)
            if self.carry is not None:  # the state after this step; an episode starts at the next observation where
                # one ended now (reset at once) or where this step only reset the sub-env (_resetting, skips_reset_steps)
                self.carry.advance(next_state, done | self._resetting)
            self._bootstrap(policy, buffer, cells, self._final_observations(following, done, info), terminated,
                            truncated)
            buffer.advance(cells)
            transitions += self.num_envs if stepped is None else int(stepped.sum())
            observations, t = self._after_episodes(following, done, t), t + 1
        self._observations = observations
        self.env_steps += transitions
        batch = buffer.batch(
            self.gamma, self.gae_lambda, policy_version=policy.version, env_steps=self.env_steps,
            finished_returns=self.episode_returns[first_finished:],
            finished_lengths=self.episode_lengths[first_finished:],
        )  # fmt: skip
        if self.carry is None:
            return batch
        return to_sequences(batch, self.horizon, self.num_envs, self.model.sequence_length)

    def _exploration(self, policy: PolicySnapshot, t: int, matrices: np.ndarray | None) -> np.ndarray | None:
        """``use_sde``: the sub-envs' exploration matrices for step ``t`` of this batch (:mod:`keras_trpo.exploration`):
        drawn from the collection stream at the batch's first step and every ``sde_sample_freq`` steps after, so
        a batch never depends on the one before it and a resumed run draws the same ones."""
        if not self.model.head.state_dependent:
            return None
        if exploration.resample_now(t, self.model.sde_sample_freq):
            return policy.exploration_matrices(self.num_envs, self._rng)
        return matrices

    def _account(self, rewards, ended, stepped, cells, t):
        """This step's rewards as float64 (scaled if asked) and ``done``; the episode statistics and the NaN warning.

        ``stepped``: the sub-envs whose step was a transition (``None``: every one); ``cells``: those stored.
        """
        rewards = np.asarray(rewards, np.float64)
        stored = rewards
        if len(cells.columns) < self.num_envs:  # only stored rewards reach train_step
            stored = np.zeros(self.num_envs)
            stored[cells.columns] = rewards[cells.columns]
        warn_non_finite(stored, t, stacklevel=4)
        if stepped is None:  # every sub-env made a transition: whole-array updates, the same floats
            self._episode_return += rewards
            self._episode_length += 1
            done = ended
        else:
            self._episode_return[stepped] += rewards[stepped]
            self._episode_length[stepped] += 1
            done = ended & stepped
        if self.reward_scaler is not None:
            rewards = scale_rewards(self.reward_scaler, rewards, done, stepped)
        if done.any():
            self._end_episodes(done)
        return rewards, done

    def _final_observations(self, following, done, info):
        """The true last observations of the step: under ``SAME_STEP`` the finished sub-envs' ``info["final_obs"]``."""
        if self.autoreset_mode != AutoresetMode.SAME_STEP or not done.any():
            return following
        spec = self.model.observation_spec
        last_observations = spec.map(lambda _, o: np.array(o, copy=True), following)
        for i in np.flatnonzero(done):
            spec.map(lambda _, last, final: last.__setitem__(i, final), last_observations, info["final_obs"][i])
        return last_observations

    def _bootstrap(self, policy, buffer, cells, last_observations, terminated, truncated):
        """Stores ``final_values`` where GAE reads them: V of the observation that followed a truncated row,
        and a column's last row unless the episode terminated there."""
        rows, columns, row = cells
        if row is not None and row < self.horizon - 1 and not truncated.any():
            return  # the common step: nothing truncated, not a column's last row
        cut = truncated[columns]
        running = (rows == self.horizon - 1) & ~terminated[columns] & ~cut
        # The V calls keep the row groups of the two loops this one replaced (a batched matmul over other rows may
        # round differently): reset-step envs in one call, the others truncated rows first, then the last row's rest.
        for group in [cut | running] if self.skips_reset_steps else [cut, running]:
            if group.any():
                state = None if self.carry is None else self.carry.subset(columns[group])  # after this step
                v = policy.values(self.model.observation_spec.map(lambda _, o: o[columns[group]], last_observations),
                                  *([] if state is None else [state]))
                buffer.add((rows[group], columns[group]), final_values=v)

    def _after_episodes(self, following, done, t):
        """The observations to act on next: the finished sub-envs reset (``reset_mask``), or marked to reset on
        their next step (``skips_reset_steps``), or already reset by the env (``SAME_STEP``)."""
        if self.skips_reset_steps:
            self._resetting = done
        elif done.any() and self.autoreset_mode != AutoresetMode.SAME_STEP:
            following, _ = self._call_env(lambda: self.env.reset(options={"reset_mask": done}), "reset", t)
        return following

    def close(self) -> None:
        """Closes the environment."""
        self.env.close()

    def _call_env(self, call, what, t):
        """Runs ``env.step``/``env.reset``; errors name the sub-env, the step and the space."""
        return call_env(call, self.env, self.model.observation_spec, what=what, step=t,
                        env_steps=self.env_steps + t * self.num_envs)
