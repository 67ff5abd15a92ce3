"""Evaluation of a policy on a separate environment (its mode, or sampled actions), optionally recorded to video."""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any, Callable, Mapping, Sequence, Union

import gymnasium
import numpy as np
import tensorflow as tf

from keras_trpo.acting import PolicySnapshot
from keras_trpo.envs import (
    action_bounds, as_vector_env, autoreset_mode, check_not_collecting, check_spaces, envpool_config, reset_seed,
    skips_reset_steps,
)
from keras_trpo.export import START_KEY
from keras_trpo.masking import MASK_KEY, MaskReader, no_source_message, source
from keras_trpo.validation import check_int

#: How to install what ``video_folder`` needs.
VIDEO_INSTALL = 'pip install "keras-trpo[video]"'

#: What :func:`evaluate` acts with: a ``TRPO``, a loaded SavedModel or signature, or a callable from
#: a batch of observations to actions (Keras and TensorFlow have no type stubs: see :func:`evaluate`).
Policy = Any
#: An env id, a gymnasium ``Env`` or a ``VectorEnv``.
EnvLike = Union[str, gymnasium.Env, gymnasium.vector.VectorEnv]


def evaluate(
    model: Policy, env: EnvLike, episodes: int = 10, seed: int | None = None, *,
    video_folder: str | os.PathLike[str] | None = None, deterministic: bool = True,
) -> list[float]:
    """Runs ``episodes`` episodes with the deterministic action (the mode), or sampled actions, and returns their returns.

    Args:
        model: a :class:`keras_trpo.TRPO` (its observations keep their dtypes and
            ``Dict`` structure), or anything callable on a float32 batch of ``Box``
            observations returning actions (or with an ``observation_spec`` like TRPO's).
        env: an env id (evaluated on ``episodes`` parallel copies, with no wrappers: pass
            an env object for wrapped envs such as MiniGrid's ``ImgObsWrapper``), a gymnasium
            ``Env`` or a ``VectorEnv``. An env that a ``Rollouts`` collects with is refused (evaluating
            would reset it behind the rollouts' back).
        episodes: number of episodes, split evenly over the sub-environments.
        seed: seeds the first reset (sub-environment ``i`` gets ``seed + i``) and, with ``deterministic=False``, the
            sampler. An EnvPool env's resets are seeded when it is made (``envpool.make_gymnasium(..., seed=S)``):
            a warning says so.
        video_folder: records every evaluated episode with gymnasium's ``RecordVideo`` to
            ``video_folder/env{i}-episode-{k}.mp4`` (the ``k``-th episode of sub-environment ``i``).
            The episodes are the same as without it: same envs, seeds and returns. Needs ``moviepy``
            (``pip install "keras-trpo[video]"``). With an env id, the copies are made with
            ``render_mode="rgb_array"``; a gymnasium ``Env`` must have been made with it; a
            ``VectorEnv`` cannot be wrapped once made: make it with
            ``wrappers=[video_wrapper(video_folder, episode_quota(episodes, num_envs))]``.
        deterministic: ``True`` (the default) acts with the mode of the policy's distribution;
            ``False`` samples, as collection does: a ``TRPO`` model samples with NumPy's generator seeded
            with ``seed`` (the same sampler as :class:`keras_trpo.Rollouts`), a loaded keras_trpo SavedModel
            through its ``sample`` signature, and any other object through its ``sample(observations, seed)``
            method, with a ``[2]`` int32 seed drawn from that generator at each step. One generator draws for
            all sub-environments at once, so the sampled returns depend on ``episodes`` (the number of
            sub-environments made from an env id), not only on ``seed``. The mode can hover where samples
            move on (e.g. a lander that never touches down): report both.

    A masked policy (a ``TRPO`` built with ``action_mask=True``, or a SavedModel whose signatures take
    ``action_mask``) acts on the legal actions only: the masks are read from ``env`` as
    :class:`keras_trpo.Rollouts` reads them (:class:`keras_trpo.masking.MaskReader`: the ``action_mask``
    observation entry, else ``action_masks()``), checked, and passed to the policy (a SavedModel gets them as
    its int8 ``action_mask`` input).

    Returns:
        The undiscounted return of each episode, in the order they finished.

    Example:

    ```python
    returns = keras_trpo.evaluate(model, "CartPole-v1", episodes=10, seed=123)
    keras_trpo.evaluate(model, "CartPole-v1", episodes=2, seed=123, video_folder="videos")  # videos/env0-episode-0.mp4, ...
    ```
    """
    episodes = check_int("episodes", episodes)
    if not isinstance(deterministic, (bool, np.bool_)):
        raise TypeError(f"deterministic must be True or False; got {deterministic!r}.")
    act = actions_function(model) if deterministic else sampling_function(model, seed)  # TypeError before any env
    check_not_collecting(env)
    env, owned = _evaluation_env(env, episodes, video_folder)
    try:
        if hasattr(model, "observation_space"):  # a TRPO model; the CLI also passes a SavedModel's function
            check_spaces(env, model)
        masks = mask_reader(model, env)
        skip_reset_steps = skips_reset_steps(env)  # refuses a DISABLED env that cannot reset one sub-env
        if seed is not None and envpool_config(env) is not None:
            warnings.warn(f"keras_trpo.evaluate: an EnvPool env is seeded when it is made (envpool.make_gymnasium(..., "
                          f"seed=S)); seed={seed} does not seed its resets" + ("." if deterministic else
                          " (it seeds only the sampler of deterministic=False)."), UserWarning, stacklevel=2)
    except ValueError:
        if owned:
            env.close()
        raise
    try:
        return _run_episodes(act, env, episodes, seed, skip_reset_steps, masks)  # each video is written at the reset after its episode
    finally:
        if owned:
            env.close()


def episode_quota(episodes: int, num_envs: int) -> list[int]:
    """How :func:`evaluate` splits ``episodes`` over ``num_envs`` sub-environments (the first ones get one more)."""
    quota = [episodes // num_envs] * num_envs
    for i in range(episodes % num_envs):
        quota[i] += 1
    return quota


def check_video_dependencies() -> None:
    """Raises ``ImportError`` naming the pip extra if ``moviepy`` (which ``RecordVideo`` writes with) is missing."""
    if importlib.util.find_spec("moviepy") is None:
        raise ImportError(f"video_folder needs moviepy, which gymnasium's RecordVideo writes videos with: {VIDEO_INSTALL}")


def video_wrapper(
    video_folder: str | os.PathLike[str], episodes_per_env: Sequence[int],
) -> Callable[[gymnasium.Env], gymnasium.Wrapper]:
    """A ``wrappers=`` entry for ``gymnasium.make_vec(..., render_mode="rgb_array")``: sub-environment ``i`` (in
    the order they are made: sync vectorization only) records its first ``episodes_per_env[i]`` episodes to
    ``video_folder/env{i}-episode-{k}.mp4`` with gymnasium's ``RecordVideo``."""
    check_video_dependencies()
    from gymnasium.wrappers import RecordVideo

    folder = os.fspath(video_folder)
    made: list[gymnasium.Wrapper] = []

    def wrap(env: gymnasium.Env) -> gymnasium.Wrapper:
        index = len(made)
        if index >= len(episodes_per_env):
            raise ValueError(f"video_wrapper was given episodes for {len(episodes_per_env)} sub-environments; "
                             f"got sub-environment {index}.")
        with warnings.catch_warnings():
            if index:  # the first sub-environment created the folder: not a folder of someone else's videos
                warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
            quota = episodes_per_env[index]
            recorder = RecordVideo(env, folder, episode_trigger=lambda k: k < quota,
                                   name_prefix=f"env{index}", disable_logger=True)
        made.append(recorder)
        return recorder

    return wrap


def _evaluation_env(
    env: EnvLike, episodes: int, video_folder: str | os.PathLike[str] | None,
) -> tuple[gymnasium.vector.VectorEnv, bool]:
    """``(vector env, whether evaluate made it)``."""
    if video_folder is None:
        if isinstance(env, str):
            return gymnasium.make_vec(env, num_envs=episodes, vectorization_mode="sync"), True
        return as_vector_env(env), False
    if isinstance(env, gymnasium.vector.VectorEnv):
        raise ValueError(
            "video_folder needs an env id or a gymnasium Env; got a VectorEnv, whose sub-environments cannot be "
            "wrapped once it is made: make it with wrappers=[keras_trpo.evaluation.video_wrapper(video_folder, "
            "keras_trpo.evaluation.episode_quota(episodes, num_envs))] and render_mode='rgb_array' instead."
        )
    if isinstance(env, gymnasium.Env) and env.render_mode != "rgb_array":
        raise ValueError(f"video_folder needs an env that renders images: make it with render_mode='rgb_array'; "
                         f"got render_mode={env.render_mode!r}.")
    if isinstance(env, str):
        wrapper = video_wrapper(video_folder, episode_quota(episodes, episodes))
        env = gymnasium.make_vec(env, num_envs=episodes, vectorization_mode="sync", render_mode="rgb_array",
                                 wrappers=[wrapper])
        return env, True
    return as_vector_env(video_wrapper(video_folder, [episodes])(env)), False


def actions_function(model: Policy) -> Callable[..., np.ndarray]:
    """``observations -> numpy actions`` for what :func:`evaluate` accepts as ``model``.

    A TRPO model acts through one traced function, observations in their own dtypes. A loaded
    SavedModel acts through its ``serving_default`` signature, and a signature is called with its
    inputs by name (one per ``Dict`` key), each in its dtype. Any other callable gets a float32 batch
    and is called as it is. An output dict gives its ``actions``. For a masked policy (:func:`takes_mask`) the
    function is ``(observations, action_mask) -> actions``, the masks bool ``[N, n]`` from :func:`mask_reader`.
    """
    if getattr(model, "is_recurrent", False):
        return _recurrent_actions(model)
    if hasattr(model, "observation_spec"):
        # No autograph (as train_step and acting): converting Keras' __call__ stack took ~4.5 s of
        # tracing per run here against ~0.15 s without, and the update already traces these networks without it.
        numpy = model.observation_spec.numpy
        if takes_mask(model):  # action_mask: bool [N, n] from evaluate's MaskReader
            masked = tf.function(lambda observations, action_mask: model(observations, action_mask=action_mask),
                                 reduce_retracing=True, autograph=False)
            return lambda observations, action_mask: masked(numpy(observations), action_mask).numpy()
        traced = tf.function(lambda observations: model(observations), reduce_retracing=True, autograph=False)
        return lambda observations: traced(numpy(observations)).numpy()
    if not callable(model) and "serving_default" in getattr(model, "signatures", {}):
        model = model.signatures["serving_default"]
    if not callable(model):
        raise TypeError(f"model must be a keras_trpo.TRPO, a loaded SavedModel, a signature or a callable from a "
                        f"batch of observations to actions; got {type(model).__name__}.")
    inputs = getattr(model, "structured_input_signature", (None, None))[1]  # a signature's {name: TensorSpec}
    if inputs:
        call = _signature_call(model, inputs)
    else:
        def call(observations: Any) -> Any:
            return model(tf.convert_to_tensor(observations, tf.float32))

    def act(observations: Any, action_mask: np.ndarray | None = None, **memory: Any) -> np.ndarray:
        out = call(observations, **memory) if action_mask is None else call(observations, action_mask=action_mask,
                                                                               **memory)
        return np.asarray(out["actions"] if isinstance(out, dict) else out)

    act.recurrent = getattr(call, "recurrent", False)  # type: ignore[attr-defined]
    return act


def _recurrent_actions(model: Policy) -> Callable[..., np.ndarray]:
    """A recurrent TRPO's deterministic actions, its state carried from call to call and zeroed at episode starts."""
    numpy, carried = model.observation_spec.numpy, dict[str, Any]()
    traced = tf.function(lambda o, s, e, m: model(o, action_mask=m, state=s, episode_starts=e), autograph=False,
                         reduce_retracing=True)

    def act(observations: Any, action_mask: Any = None, *, episode_starts: np.ndarray) -> np.ndarray:
        state = carried.get("state") or model.initial_state(len(episode_starts))
        actions, carried["state"] = traced(numpy(observations), state, episode_starts, action_mask)
        return actions.numpy()

    act.recurrent = True  # type: ignore[attr-defined]
    return act


def _recurrent_sampler(model: Policy, rng: np.random.Generator) -> Callable[..., np.ndarray]:
    """Sampled actions of a recurrent policy, its state carried from call to call: a TRPO samples as Rollouts does
    (:class:`~keras_trpo.acting.PolicySnapshot`); the CLI's ``ServingPolicy`` through its ``sample`` signature."""
    carried = dict[str, Any]()
    snapshot = PolicySnapshot(model) if hasattr(model, "acting_function") else None

    def sample_recurrent(observations: Any, action_mask: Any = None, *, episode_starts: np.ndarray) -> np.ndarray:
        state = carried.get("state") or {k: np.asarray(v) for k, v in model.initial_state(len(episode_starts)).items()}
        if snapshot is not None:
            actions, _, carried["state"] = snapshot.act_recurrent(observations, state, episode_starts, rng, action_mask)
            return actions
        seed = rng.integers(0, np.iinfo(np.int32).max, size=2, dtype=np.int32)
        actions, carried["state"] = model.sample(observations, seed, action_mask, state=state,
                                                 episode_starts=episode_starts)
        return np.asarray(actions)

    sample_recurrent.recurrent = True  # type: ignore[attr-defined]
    return sample_recurrent


def sampling_function(model: Policy, seed: int | None) -> Callable[..., np.ndarray]:
    """``observations -> numpy sampled actions`` for :func:`evaluate` with ``deterministic=False``.

    One NumPy generator seeded with ``seed`` drives every draw, so a seeded evaluation repeats exactly.
    """
    rng = np.random.default_rng(seed)
    if getattr(model, "is_recurrent", False):
        return _recurrent_sampler(model, rng)
    if hasattr(model, "observation_spec") and hasattr(model, "acting_function"):  # a keras_trpo.TRPO
        # The weights as they are now, each step a draw from the policy's distribution; with use_sde that is
        # Normal(mean(s), σ(s)) drawn afresh every step, not Rollouts' noise φ(s)·E held for sde_sample_freq steps.
        snapshot = PolicySnapshot(model)
        return lambda observations, action_mask=None: snapshot.act(observations, rng, action_mask)[0]

    def draw() -> np.ndarray:
        return rng.integers(0, np.iinfo(np.int32).max, size=2, dtype=np.int32)

    signatures = getattr(model, "signatures", None)
    signature = signatures.get("sample") if isinstance(signatures, Mapping) else None
    if signature is None:
        sample = getattr(model, "sample", None)
        if not callable(sample):
            raise TypeError(f"deterministic=False samples actions: model must be a keras_trpo.TRPO, a loaded "
                            f"keras_trpo SavedModel (its sample signature) or have a sample(observations, seed) "
                            f"method; got {type(model).__name__}.")
        if takes_mask(model):  # the CLI's ServingPolicy of a masked SavedModel
            return lambda observations, action_mask: np.asarray(sample(observations, draw(), action_mask=action_mask))
        return lambda observations: np.asarray(sample(observations, draw()))
    inputs = dict(signature.structured_input_signature[1])
    if "seed" not in inputs:
        raise TypeError(f"deterministic=False feeds the sample signature a seed, but it takes only {sorted(inputs)}: "
                        "export the policy with TRPO.export, whose sample signature takes one.")
    seed_spec = inputs.pop("seed")
    call = _signature_call(signature, inputs)

    def sample_actions(observations: Any, action_mask: np.ndarray | None = None, **memory: Any) -> np.ndarray:
        masks = {} if action_mask is None else {"action_mask": action_mask}
        return np.asarray(call(observations, seed=tf.constant(draw(), seed_spec.dtype), **masks, **memory)["actions"])

    sample_actions.recurrent = getattr(call, "recurrent", False)  # type: ignore[attr-defined]
    return sample_actions


def _signature_call(signature: Any, inputs: dict[str, tf.TensorSpec]) -> Callable[..., Any]:
    """Calls ``signature`` with observations fed by input name (one per ``Dict`` key), each in its dtype, and a
    masked signature's ``action_mask`` input with the ``action_mask`` given (the masks evaluate read)."""
    inputs = dict(inputs)
    mask_spec = inputs.pop(MASK_KEY, None)  # also when the model observes its action_mask entry: the same values
    # A recurrent model's signature (keras_trpo.export): the state inputs are the outputs of the same names.
    start_spec = inputs.pop(START_KEY, None)
    state_specs = {} if start_spec is None else {
        name: inputs.pop(name) for name in sorted(set(inputs) & set(signature.structured_outputs))}
    carried: dict[str, Any] = {}

    def call(observations: Any, action_mask: np.ndarray | None = None, episode_starts: Any = None, **extra: Any) -> Any:
        named = observations if isinstance(observations, dict) else {next(iter(inputs)): observations}
        feed = {key: tf.convert_to_tensor(named[key], inputs[key].dtype) for key in inputs}
        if mask_spec is not None:
            feed[MASK_KEY] = tf.constant(np.asarray(action_mask, mask_spec.dtype.as_numpy_dtype))
        if start_spec is not None:  # the state it returned last, zeros at first
            n = len(episode_starts)
            feed.update(carried.get("state") or {k: tf.zeros([n, s.shape[1]], s.dtype) for k, s in state_specs.items()})
            feed[START_KEY] = tf.constant(np.asarray(episode_starts, start_spec.dtype.as_numpy_dtype))
        out = signature(**feed, **extra)
        if start_spec is not None:
            carried["state"] = {name: out[name] for name in state_specs}
        return out

    call.recurrent = start_spec is not None  # type: ignore[attr-defined]
    return call


def takes_mask(model: Policy) -> bool:
    """Whether ``model`` acts on action masks: a masked ``TRPO`` (or the CLI's ``ServingPolicy`` of a masked
    SavedModel), a SavedModel or signature whose inputs include ``action_mask``."""
    if isinstance(getattr(model, "action_mask", None), (bool, np.bool_)):
        return bool(model.action_mask)
    signatures = getattr(model, "signatures", None)
    if isinstance(signatures, Mapping) and "serving_default" in signatures:
        model = signatures["serving_default"]
    inputs = getattr(model, "structured_input_signature", (None, None))[1]
    return isinstance(inputs, Mapping) and MASK_KEY in inputs


def mask_reader(model: Policy, env: gymnasium.vector.VectorEnv) -> MaskReader | None:
    """The reader of ``env``'s masks for a masked ``model`` (None for an unmasked one), or one ValueError line."""
    if not takes_mask(model):
        return None
    space = env.single_observation_space
    if hasattr(env, "envs") and source(env, space, None) is None:  # a SyncVectorEnv: its sub-envs can be asked
        raise ValueError(no_source_message(space))
    return MaskReader(env, getattr(model, "action_space", env.single_action_space))


def _run_episodes(
    act: Callable[..., np.ndarray], env: gymnasium.vector.VectorEnv, episodes: int, seed: int | None,
    skip_reset_steps: bool, masks: MaskReader | None = None,
) -> list[float]:
    """Plays ``act`` until each sub-env finished its quota. An env that resets finished sub-envs on its next step
    (``skip_reset_steps``, e.g. ``CartPoleVectorEnv``) is not reset here: that step has reward 0 and no done.
    ``masks``: a masked policy's reader; ``act`` then also takes the masks (a resetting sub-env's may be empty)."""
    low, high = action_bounds(env)
    reset_finished = autoreset_mode(env) != gymnasium.vector.AutoresetMode.SAME_STEP and not skip_reset_steps
    quota = np.asarray(episode_quota(episodes, env.num_envs))
    returns: list[float] = []
    running = np.zeros(env.num_envs)
    finished = np.zeros(env.num_envs, dtype=np.int64)
    observations, _ = env.reset(seed=reset_seed(env, seed))
    resetting = np.zeros(env.num_envs, bool)  # the next step only resets these sub-envs (skip_reset_steps)
    # A recurrent policy's state is zeroed where an episode starts (as in Rollouts).
    memory = {"episode_starts": np.ones(env.num_envs, bool)} if getattr(act, "recurrent", False) else {}
    while (finished < quota).any():
        mask = () if masks is None else (masks(observations, skip=resetting),)
        actions = act(observations, *mask, **memory)
        if low is not None:
            actions = np.clip(actions, low, high)
        observations, rewards, terminated, truncated, _ = env.step(actions)
        running += rewards
        done = terminated | truncated
        for i in np.flatnonzero(done):
            if finished[i] < quota[i]:
                returns.append(float(running[i]))
                finished[i] += 1
        running[done] = 0.0
        if memory:
            memory["episode_starts"] = done | resetting
        resetting = done & skip_reset_steps
        if done.any() and reset_finished:
            observations, _ = env.reset(options={"reset_mask": done})
    return returns
