"""Hyperparameter presets: one JSON data file per benchmarked environment.

The files sit next to this module (``keras_trpo/presets/<name>.json``) and are
what ``keras-trpo train`` uses; the ``CartPole-v1`` and ``Pendulum-v1`` presets
are the hyperparameters of ``examples/cartpole.py`` and ``examples/pendulum.py``.
Presets marked ``"status": "untuned"`` (BipedalWalker-v3) are rl-baselines3-zoo's
TRPO settings used as they are, in keras_trpo's KL units; ``"tuned"`` ones were changed here on
measured evidence, each change and its ablations in the preset's ``notes`` and in
docs/benchmarks.md. ``default``
holds the library defaults and is used for an environment that has no preset of its own.
``MiniGrid-Empty-8x8-v0`` (image only) and ``MiniGrid-Empty-8x8-v0-dict`` (image and
direction, a ``Dict`` observation) train CNNs on MiniGrid (tuned: one seed measured, see their notes;
``pip install "keras-trpo[minigrid]"``);
``Pong-v5`` (for ``ALE/Pong-v5``) is an untuned Atari starting point (``pip install "keras-trpo[atari]"``).

A preset file holds:

- ``env_id``: the environment it was made for (``null`` for ``default``);
- ``status`` (``tuned`` / ``untuned``) and ``notes`` (where the values come from);
- ``total_steps``: the training budget in env steps;
- ``num_envs`` and ``vectorization_mode``: the ``gymnasium.make_vec`` arguments;
- optional, for environments of other packages (default: none):

  - ``env_modules``: modules imported before the env id is looked up, e.g. ``["minigrid"]``
    or ``["ale_py"]`` (importing them registers their environments with gymnasium);
  - ``env_kwargs``: keyword arguments of the environment (``gymnasium.make_vec(..., **env_kwargs)``),
    e.g. ``{"frameskip": 1}``;
  - ``wrappers``: ``[{"class": "module.path.Name", "kwargs": {...}}, ...]``, applied to every
    sub-environment in order (``gymnasium.make_vec(..., wrappers=...)``), e.g.
    ``minigrid.wrappers.ImgObsWrapper``;
- ``rollouts``: ``steps`` (env steps per iteration, over all ``num_envs`` envs), ``gamma``, ``gae_lambda``,
  ``normalize_rewards`` (optional, ``false`` when absent);
- ``model``: keyword arguments of :class:`keras_trpo.TRPO`; ``policy_network`` / ``value_network``
  are ``null`` (the default MLP of ``hidden_units`` / ``value_hidden_units``, ``null`` meaning 64, 64)
  or a name from :data:`keras_trpo.networks.BUILDERS` (``"nature_cnn"``, ``"minigrid_cnn"``, ``"mlp"``;
  for a ``Dict`` observation a CNN name builds :class:`keras_trpo.networks.Combined`), with ``null`` widths;
- ``optimizer``: the critic optimizer, as ``keras.optimizers.get`` takes it;
- ``eval_episodes``: episodes of the final deterministic evaluation;
- ``intra_op_threads`` (optional, ``null`` when absent): TensorFlow's intra-op threads for the run, set by
  :func:`keras_trpo.training.train` before TensorFlow's first op (:func:`keras_trpo.training.set_intra_op_threads`).
  The presets of the 64×64 MLPs set ``1`` (faster here, and other floats than TensorFlow's own setting: README,
  "Speed on a CPU"); the CNN presets and ``default`` leave TensorFlow's own (one thread per core).
- ``max_kl_final`` (optional, ``null`` when absent): anneals the trust region linearly from ``model.max_kl`` at
  the first iteration to this value at the last (TRPO+ in "Implementation Matters", Engstrom et al. 2020, anneals
  it per env), through :class:`keras_trpo.callbacks.TrustRegionSchedule`, which :func:`keras_trpo.training.train`
  adds (metrics.csv then has a ``max_kl`` column; a run of one iteration keeps ``model.max_kl``). The saved
  model holds the last iteration's bound (``model.max_kl`` of model.keras is ``max_kl_final``): training it
  further starts there. ``null``: ``model.max_kl`` throughout.

Example:

```python
from keras_trpo import presets

preset = presets.load_preset("CartPole-v1")
env = preset.make_env()
model = preset.build_model(env, seed=0)            # compiled keras_trpo.TRPO
rollouts = preset.build_rollouts(env, model, seed=0)
model.fit(rollouts, epochs=preset.iterations())
```

:func:`keras_trpo.training.train` runs that flow (seeding, fit, final evaluation) for
``keras-trpo train`` and the examples. :func:`preset_for_env` finds a preset by name or by its
``env_id`` (``preset_for_env("ALE/Pong-v5")`` is ``Pong-v5``: a file name cannot hold the ``/``).

Loading a preset imports neither TensorFlow nor the packages it names: ``env_modules`` and the
wrapper classes are imported by :meth:`Preset.load_env_dependencies`, which :meth:`Preset.make_env` calls.

This module finds and reads the preset files; the package's other modules (each imports only the ones
after it):

- ``preset.py``: :class:`Preset` (validation, :meth:`~Preset.override`, building the env, model and rollouts)
  and :data:`MODEL_ARGUMENTS`;
- ``environments.py``: checks ``env_modules``, ``env_kwargs`` and ``wrappers``; imports the modules and wrappers;
- ``errors.py``: :class:`PresetError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from keras_trpo.presets.errors import PresetError
from keras_trpo.presets.preset import MODEL_ARGUMENTS, Preset

__all__ = [
    "DEFAULT_PRESET",
    "MODEL_ARGUMENTS",
    "PRESET_DIR",
    "Preset",
    "PresetError",
    "load_preset",
    "preset_for_env",
    "preset_names",
]

PRESET_DIR = Path(__file__).resolve().parent
DEFAULT_PRESET = "default"


def preset_names() -> list[str]:
    """Names of the presets shipped with keras_trpo (the JSON file stems), sorted."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


def preset_for_env(env_id: str) -> "Preset":
    """The preset for ``env_id``: the one named after it, else the first (by name) made for it
    (its ``env_id``; ``"ALE/Pong-v5"`` finds ``Pong-v5``), else ``default`` with ``env_id`` filled in."""
    names = preset_names()
    if env_id in names:
        return load_preset(env_id)
    for name in names:
        preset = load_preset(name)
        if preset.env_id == env_id:
            return preset
    return dataclasses.replace(load_preset(DEFAULT_PRESET), env_id=env_id)


def load_preset(name_or_path) -> "Preset":
    """Loads a shipped preset by name (``"CartPole-v1"``) or any preset JSON file by path.

    Raises:
        PresetError: no such preset or file, or the file is not a valid preset.
    """
    text = os.fspath(name_or_path)
    if text in preset_names():
        path = PRESET_DIR / f"{text}.json"
        name = text
    elif text.endswith(".json") or os.sep in text:
        path = Path(text)
        name = path.stem
        if not path.is_file():
            raise PresetError(f"preset file {text!r} does not exist")
    else:
        raise PresetError(f"unknown preset {text!r}; available presets: {', '.join(preset_names())}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PresetError(f"cannot read preset file {os.fspath(path)!r}: {error}") from None
    return Preset.from_dict(data, name=name, source=os.fspath(path))
