"""Where each second of a preset's training run goes: ``bench.py --only profile`` (Hopper-v5 1M at its preset).

The child process (``bench.py _child keras profile-preset``) wraps the functions named in :data:`ROWS` with
``perf_counter`` timers, then trains exactly as ``keras-trpo train`` does,
``keras_trpo.training.train(presets.load_preset(ENV), seed=0, total_steps=...)``, final evaluation included.
Each wrapped call is charged its **exclusive** time (its own time minus that of the wrapped calls inside it),
so nothing is counted twice and the rows plus "other" sum to the wall time of ``train``. Exceptions:

* the compiled update (what ``TrainFunction._step_for`` returns) is synced on its result; its first call is the
  "first call (tracing)" row;
* :data:`INCLUSIVE` functions (the final evaluation) take everything inside them: the evaluation's own env
  steps are not in "env stepping".

A name that does not exist in the code being profiled (the internals change; the same script profiles an
older worktree on ``PYTHONPATH``) is listed as "not instrumented", and its time lands in its caller's row.
The policy step and the critic run as two independent branches of one graph, so the update row is their
combined, synced time; :func:`update_parts` then times each alone on the last real batch (``train_step``
with ``value_epochs = 0``, and ``keras_trpo.critic.train``), shown beside the table, not in the sum.
"""

from __future__ import annotations

import importlib
import inspect
import json
import statistics
import time
from collections import Counter, defaultdict

#: dotted name -> row. Class attributes are wrapped on the class (instances made later use the wrapper).
ROWS = {
    "gymnasium.vector.SyncVectorEnv.step": "env stepping (step + reset)",
    "gymnasium.vector.SyncVectorEnv.reset": "env stepping (step + reset)",
    "keras_trpo.acting.PolicySnapshot.__init__": "acting (weight snapshot, forward pass, sampling)",
    "keras_trpo.acting.PolicySnapshot.act": "acting (weight snapshot, forward pass, sampling)",
    "keras_trpo.acting.PolicySnapshot._features": "observation normalization (cast + normalize)",
    "keras_trpo.rollouts.Rollouts._bootstrap": "value bootstrap calls",
    "keras_trpo.acting.PolicySnapshot.values": "value bootstrap calls",
    "keras_trpo.rollouts.Rollouts._account": "reward scaling + episode bookkeeping",
    "keras_trpo.rollouts.Rollouts._after_episodes": "reward scaling + episode bookkeeping",
    "keras_trpo.rollouts.Rollouts._final_observations": "reward scaling + episode bookkeeping",
    "keras_trpo.normalization.RewardScaler.__call__": "reward scaling + episode bookkeeping",
    "keras_trpo.buffer.RolloutBuffer.__init__": "buffer writes (allocation, add, cells)",
    "keras_trpo.buffer.RolloutBuffer.add_step": "buffer writes (allocation, add, cells)",
    "keras_trpo.buffer.RolloutBuffer.add": "buffer writes (allocation, add, cells)",
    "keras_trpo.buffer.RolloutBuffer.next_cells": "buffer writes (allocation, add, cells)",
    "keras_trpo.buffer.RolloutBuffer.advance": "buffer writes (allocation, add, cells)",
    "keras_trpo.buffer.RolloutBuffer.advantages_and_returns": "GAE + batch assembly",
    "keras_trpo.buffer.RolloutBuffer.batch": "GAE + batch assembly",
    "keras_trpo.rollouts.Rollouts._collect": "collection loop (rest of Rollouts._collect)",
    "keras_trpo.trainer.TrainFunction._step_for": "update (train_step, compiled, synced)",
    "keras_trpo.trainer.TrainFunction.__call__": "Keras fit + train function + callbacks + logging",
    "keras_trpo.trainer.Trainer.fit": "Keras fit + train function + callbacks + logging",
    "keras.callbacks.CallbackList.on_train_begin": "Keras fit + train function + callbacks + logging",
    "keras.callbacks.CallbackList.on_train_end": "Keras fit + train function + callbacks + logging",
    "keras.callbacks.CallbackList.on_epoch_begin": "Keras fit + train function + callbacks + logging",
    "keras.callbacks.CallbackList.on_epoch_end": "Keras fit + train function + callbacks + logging",
    "keras.callbacks.CallbackList.on_train_batch_begin": "Keras fit + train function + callbacks + logging",
    "keras.callbacks.CallbackList.on_train_batch_end": "Keras fit + train function + callbacks + logging",
    "keras_trpo.training.make_env": "setup (env creation, model build + compile)",
    "keras_trpo.presets.preset.Preset.build_model": "setup (env creation, model build + compile)",
    "keras_trpo.presets.preset.Preset.build_rollouts": "setup (env creation, model build + compile)",
    "keras_trpo.training.evaluate": "final evaluation (everything inside it)",
}
#: Returns the compiled update: its calls are timed (synced on the result); the first is the tracing row.
COMPILED_STEP = "keras_trpo.trainer.TrainFunction._step_for"
TRACING_ROW = "first call of the update (tracing + first run)"
#: Where ``_step_for``'s own time goes after its first call.
CALLER = "keras_trpo.trainer.TrainFunction.__call__"
#: Charged with everything inside them (wrapped calls inside pass through untimed).
INCLUSIVE = {"keras_trpo.training.evaluate"}
OTHER_ROW = "other (training.train outside the wrapped calls: seeding, glue)"
#: Rows paid once per run: no per-iteration column.
ONCE_ROWS = {TRACING_ROW, ROWS["keras_trpo.training.make_env"], ROWS["keras_trpo.training.evaluate"], OTHER_ROW}
#: Print order: as first met in ROWS, the tracing row after the update's.
ORDER = list(dict.fromkeys(ROWS.values()))
ORDER.insert(ORDER.index(ROWS[COMPILED_STEP]) + 1, TRACING_ROW)


class Timers:
    """Exclusive seconds and call counts per row; a stack of the children's time of each open call."""

    def __init__(self, clock=time.perf_counter):
        self.seconds = defaultdict(float)
        self.calls = Counter()  # by dotted name
        self.stack = [0.0]
        self.absorbing = 0
        self.clock = clock
        self.originals = []  # (owner, attribute, original), for restore()

    def wrap(self, fn, name, row, inclusive=False, sync=None):
        seconds, calls, stack, perf_counter = self.seconds, self.calls, self.stack, self.clock

        def timed(*args, **kwargs):
            if self.absorbing:
                return fn(*args, **kwargs)
            stack.append(0.0)
            self.absorbing += inclusive
            start = perf_counter()
            try:
                result = fn(*args, **kwargs)
                if sync is not None:
                    sync(result)
                return result
            finally:
                elapsed = perf_counter() - start
                self.absorbing -= inclusive
                children = stack.pop()
                stack[-1] += elapsed
                seconds[row] += elapsed - children
                calls[name] += 1

        timed.__wrapped__ = fn
        return timed

    def overhead_per_call(self, n=200_000):
        """Seconds a wrapper adds to one call (median of 3 runs of ``n`` calls against the bare function)."""
        def bare(x):
            return x

        probe = Timers()
        wrapped = probe.wrap(bare, "probe", "probe")
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            for i in range(n):
                bare(i)
            middle = time.perf_counter()
            for i in range(n):
                wrapped(i)
            runs.append((time.perf_counter() - middle - (middle - start)) / n)
        return statistics.median(runs)


def _resolve(dotted):
    """``(owner, attribute)`` of a dotted name: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:-1]:
            owner = getattr(owner, part)
        inspect.getattr_static(owner, parts[-1])  # AttributeError if it does not exist
        return owner, parts[-1]
    raise ImportError(f"no module in {dotted}")


def _sync(logs):
    """Waits for a compiled update's result (the first of its outputs: they come from one graph run)."""
    import numpy as np
    import tensorflow as tf

    np.asarray(tf.nest.flatten(logs)[0])


def instrument(timers, rows=ROWS):
    """Wraps every name of ``rows`` that exists; returns ``{name: why}`` of those it could not wrap."""
    missing, wrapped = {}, {}
    for name, row in rows.items():
        try:
            owner, attribute = _resolve(name)
        except (ImportError, AttributeError) as error:
            missing[name] = f"not instrumented ({type(error).__name__})"
            continue
        raw = inspect.getattr_static(owner, attribute)
        kind = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
        fn = raw.__func__ if kind else raw
        if id(fn) in wrapped:  # inherited: the same function under two names
            missing[name] = f"same function as {wrapped[id(fn)]}"
            continue
        wrapped[id(fn)] = name
        if name == COMPILED_STEP:
            new = _step_for_wrapper(timers, fn, name, row, rows.get(CALLER))
        else:
            new = timers.wrap(fn, name, row, inclusive=name in INCLUSIVE)
        own = attribute in vars(owner)  # else inherited: restore() deletes the wrapper
        timers.originals.append((owner, attribute, raw if own else None))
        setattr(owner, attribute, kind(new) if kind else new)
    return missing


def _step_for_wrapper(timers, step_for, name, row, caller_row):
    """``step_for`` timed: its own time (a concrete function traced there, if a version does that) is tracing the
    first time, then ``caller_row``'s; the compiled function it returns is timed synced, in ``row`` (the first
    call: tracing)."""
    calls = []

    def wrapper(*args, **kwargs):
        first = not calls
        calls.append(1)
        own_row = TRACING_ROW if first or caller_row is None else caller_row
        compiled = timers.wrap(step_for, name, own_row)(*args, **kwargs)
        return timers.wrap(compiled, "compiled update", TRACING_ROW if first else row, sync=_sync)

    return wrapper


def restore(timers):
    """Puts back what :func:`instrument` replaced."""
    while timers.originals:
        owner, attribute, raw = timers.originals.pop()
        if raw is None:
            delattr(owner, attribute)
        else:
            setattr(owner, attribute, raw)


def update_parts(model, batch, repeats=9):
    """Median ms of the whole update, the policy step alone and the critic alone, on ``batch`` (after training).

    Policy alone: ``train_step`` with ``model.value_epochs = 0`` (the critic's loop runs no minibatch);
    critic alone: ``keras_trpo.critic.train`` with the model's epochs and minibatch size. Each is its own
    ``tf.function`` (first call not timed); the three are called in turn, ``repeats`` rounds, so that a
    change of load touches all three alike. The weights move (this is after the run).
    """
    import tensorflow as tf

    batch = {key: tf.constant(batch[key]) for key in ("observations", "actions", "advantages", "returns")}
    epochs, functions, parts = model.value_epochs, {}, {}

    def critic_alone(b):
        from keras_trpo import critic

        return critic.train(model, model.replicas, b["observations"], b["returns"], epochs,
                            model.value_batch_size, model.seed_generator)

    def policy_alone(b):
        model.value_epochs = 0  # read while tracing only
        try:
            return model.train_step(b)
        finally:
            model.value_epochs = epochs

    for key, fn in (("update", model.train_step), ("policy_alone", policy_alone), ("critic_alone", critic_alone)):
        try:
            functions[key] = tf.function(fn, autograph=False)
            _sync(functions[key](batch))  # trace + first run
        except Exception as error:  # noqa: BLE001 - another version's internals: report, do not fail the profile
            functions.pop(key, None)
            parts[key + "_error"] = f"{type(error).__name__}: {error}"[:200]
    times = {key: [] for key in functions}
    for _ in range(repeats):
        for key, fn in functions.items():
            start = time.perf_counter()
            _sync(fn(batch))
            times[key].append(time.perf_counter() - start)
    return parts | {key + "_ms": 1000 * statistics.median(t) for key, t in times.items()}


def profile_child(env_id, total_steps=None, bare=False, threads="preset"):
    """The instrumented (or, with ``bare``, plain) training run: JSON-able rows, wall times, update parts.

    ``threads``: TensorFlow's intra-op threads: ``"preset"`` (the preset's ``intra_op_threads``, as ``keras-trpo
    train`` runs it), ``"default"`` (TensorFlow's own) or a number."""
    import keras_trpo
    from keras_trpo import presets, training

    timers = Timers()
    missing = {} if bare else instrument(timers)
    batches = []
    if not bare:  # keep the last batch for update_parts (Rollouts.collect's return value: public API)
        collect = keras_trpo.Rollouts.collect

        def collect_and_keep(self):
            batch = collect(self)
            batches[:] = [batch]
            return batch

        keras_trpo.Rollouts.collect = collect_and_keep
    preset = presets.load_preset(env_id)
    if threads != "preset" and hasattr(preset, "intra_op_threads"):  # older keras_trpo: set by bench.py's child
        preset = preset.override({"intra_op_threads": None if threads == "default" else int(threads)})
    start = time.perf_counter()
    result = training.train(preset, seed=0, total_steps=total_steps)
    wall = time.perf_counter() - start
    out = {"env_id": env_id, "wall_s": wall, "fit_s": result.train_seconds, "env_steps": result.env_steps,
           "iterations": result.iterations, "eval_return": result.mean, "num_envs": preset.num_envs,
           "keras_trpo_file": keras_trpo.__file__, "bare": bare}
    if bare:
        return out
    seconds = dict(timers.seconds)
    calls = sum(timers.calls.values())
    per_call = timers.overhead_per_call()
    out.update(rows=seconds, calls=dict(timers.calls), missing=missing, timer_calls=calls,
               timer_overhead_us=1e6 * per_call, timer_overhead_s=calls * per_call)
    if batches:
        out["update_parts"] = update_parts(result.model, batches[0])
    return out


def random_stepping_seconds(env, steps):
    """Seconds to step the vector env ``env`` for ``steps`` env steps with random actions (seed 0), resetting its
    finished sub-envs with ``reset_mask`` as ``Rollouts`` does with a ``NEXT_STEP`` env: the floor of collection."""
    import numpy as np

    rng = np.random.default_rng(0)
    space, num_envs = env.single_action_space, env.num_envs
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps // num_envs):
        actions = np.asarray([space.sample() for _ in range(num_envs)]) if not hasattr(space, "low") else (
            rng.uniform(space.low, space.high, (num_envs, *space.shape)).astype(space.dtype))
        _, _, terminated, truncated, _ = env.step(actions)
        done = terminated | truncated
        if done.any():
            env.reset(options={"reset_mask": done})
    return time.perf_counter() - start


def raw_child(env_id, num_envs, steps, mode="sync"):
    """Random actions on ``gymnasium.make_vec(env_id, num_envs, mode)``: seconds for ``steps`` env steps."""
    import gymnasium

    env = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    seconds = random_stepping_seconds(env, steps)
    env.close()
    return {"steps": steps // num_envs * num_envs, "seconds": seconds, "mode": mode}


def print_table(p, raw, bare=None, threads="default"):
    """The breakdown table (rows sum to ``train``'s wall time), the update parts and the raw-stepping ratio."""
    wall, n = p["wall_s"], p["iterations"]
    rows = dict(p["rows"])
    rows[OTHER_ROW] = wall - sum(rows.values())
    print(f"\n{p['env_id']} preset, {p['env_steps']:,} env steps ({n} iterations, {p['num_envs']} sync envs), "
          f"TF intra-op threads: {threads}; keras_trpo from {p['keras_trpo_file']}")
    print("\n| part (exclusive time) | seconds | share | per iteration |\n|---|---|---|---|")
    for row in ORDER + [OTHER_ROW]:
        if row in rows:
            s = rows[row]
            label, per = row, n
            if row == ROWS[COMPILED_STEP] and n > 1:  # the first call is the tracing row
                label, per = f"{row}, iterations 2-{n}", n - 1
            each = "once" if row in ONCE_ROWS else f"{1000 * s / per:.1f} ms"
            print(f"| {label} | {s:.2f} s | {s / wall:.1%} | {each} |")
    print(f"| **wall time of training.train (fit + setup + evaluation)** | **{wall:.2f} s** | 100% | |")
    parts = p.get("update_parts", {})
    if parts:
        each = []
        for key, label in (("update", "whole update"), ("policy_alone", "policy step alone (value_epochs=0)"),
                           ("critic_alone", "critic alone (critic.train)")):
            each.append(f"{label} {parts[key + '_ms']:.1f} ms" if key + "_ms" in parts
                        else f"{label}: not measured ({parts.get(key + '_error')})")
        print(f"\nThe update's two branches run at once; timed alone afterwards on the last batch (medians, "
              f"not in the sum): {'; '.join(each)}.")
    if p["missing"]:
        print("\nNames of bench_profile.ROWS not wrapped in this code (their time is in their callers' rows):")
    for name, why in p["missing"].items():
        print(f"- {name}: {why}")
    print(f"\nTimer overhead: ~{p['timer_overhead_us']:.2f} µs per wrapped call × {p['timer_calls']:,} calls "
          f"≈ {p['timer_overhead_s']:.1f} s: the instrumented run is that much slower than a bare one "
          "(it lands mostly in the callers' rows, e.g. the collection loop).")
    fit = p["fit_s"]
    raw_s = raw["seconds"] * p["env_steps"] / raw["steps"]
    print(f"\nRaw stepping, same vector env (gymnasium.make_vec({p['env_id']!r}, num_envs={p['num_envs']}, "
          f"vectorization_mode={raw.get('mode', 'sync')!r}), random actions): {raw['steps']:,} steps in {raw['seconds']:.1f} s "
          f"({raw['steps'] / raw['seconds']:,.0f} steps/s), scaled to {p['env_steps']:,} steps: {raw_s:.1f} s")
    print("\n| fit wall time | seconds | / raw stepping (issue 26's goal for Hopper-v5: <= 1.5) |\n|---|---|---|")
    print(f"| instrumented run | {fit:.1f} s | {fit / raw_s:.2f} |")
    print(f"| instrumented minus timer overhead (estimate) | {fit - p['timer_overhead_s']:.1f} s | "
          f"{(fit - p['timer_overhead_s']) / raw_s:.2f} |")
    if bare is not None:
        print(f"| bare run (no timers) | {bare['fit_s']:.1f} s | {bare['fit_s'] / raw_s:.2f} |")
    else:
        print("(bare wall time not measured: add --profile-bare to run the same training once more without timers)")
    print(f"\neval return {p['eval_return']:.1f}" + ("" if bare is None else f" (bare run {bare['eval_return']:.1f})"))


def dumps(result):
    return json.dumps(result, default=float)


if __name__ == "__main__":  # which names resolve in the keras_trpo on sys.path, without training
    not_wrapped = instrument(Timers())
    print(json.dumps(not_wrapped, indent=1) if not_wrapped else "every name in ROWS resolves")
