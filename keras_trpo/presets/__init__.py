"""Hyperparameter presets: one JSON data file per benchmarked environment.

The files sit next to this module (``keras_trpo/presets/<name>.json``) and are
what ``keras-trpo train`` uses; the ``CartPole-v1`` and ``Pendulum-v1`` presets
are the hyperparameters of ``examples/cartpole.py`` and ``examples/pendulum.py``.
Presets marked ``"status": "untuned"`` (Acrobot and Hopper) are rl-baselines3-zoo's
TRPO settings used as they are; ``"tuned"`` ones were changed here on measured
evidence (HalfCheetah and Walker2d: reward scaling, docs/benchmarks.md). ``default``
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
- ``eval_episodes``: episodes of the final deterministic evaluation.

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
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
from pathlib import Path

PRESET_DIR = Path(__file__).resolve().parent
DEFAULT_PRESET = "default"
_TOP_LEVEL_KEYS = (
    "env_id",
    "status",
    "notes",
    "total_steps",
    "num_envs",
    "vectorization_mode",
    "env_modules",
    "env_kwargs",
    "wrappers",
    "rollouts",
    "model",
    "optimizer",
    "eval_episodes",
)
#: Keys a preset file may leave out, with the value they then take.
_OPTIONAL_KEYS = {"status": "untuned", "notes": "", "env_modules": [], "env_kwargs": {}, "wrappers": []}
_ROLLOUT_KEYS = ("steps", "gamma", "gae_lambda", "normalize_rewards")
#: The pip extra of keras-trpo that installs a top-level module a preset imports.
_EXTRAS = {"minigrid": "minigrid", "ale_py": "atari", "cv2": "atari", "mujoco": "mujoco"}
#: ``gymnasium.make_vec`` arguments that are preset keys of their own, not environment arguments.
_MAKE_VEC_ARGUMENTS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PresetError(ValueError):
    """An unknown preset name, an unreadable preset file or an invalid value in one."""


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


@dataclasses.dataclass(frozen=True)
class Preset:
    """A complete set of training hyperparameters for one environment.

    Build one with :func:`load_preset`; change values with :meth:`override`.

    Example:

    ```python
    preset = load_preset("Pendulum-v1").override({"model.max_kl": 0.01, "num_envs": 4})
    ```
    """

    name: str
    env_id: str | None
    status: str
    notes: str
    total_steps: int
    num_envs: int
    vectorization_mode: str
    rollouts: dict
    model: dict
    optimizer: dict
    eval_episodes: int
    env_modules: list = dataclasses.field(default_factory=list)
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    wrappers: list = dataclasses.field(default_factory=list)
    source: str | None = None

    @classmethod
    def from_dict(cls, data: dict, *, name: str, source: str | None = None) -> "Preset":
        """Validates ``data`` (the content of a preset file) and returns the preset."""
        if not isinstance(data, dict):
            raise PresetError(f"preset {name!r} must be a JSON object; got {type(data).__name__}")
        unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
        missing = [key for key in _TOP_LEVEL_KEYS if key not in data and key not in _OPTIONAL_KEYS]
        if unknown:
            raise PresetError(f"preset {name!r} has unknown keys {unknown}; allowed: {list(_TOP_LEVEL_KEYS)}")
        if missing:
            raise PresetError(f"preset {name!r} is missing keys {missing}")
        for key in ("rollouts", "model", "optimizer"):
            if not isinstance(data[key], dict):
                raise PresetError(f"{name}: {key} must be a JSON object; got {data[key]!r}")
        rollouts = {"normalize_rewards": False, **data["rollouts"]}
        if "steps" in rollouts:
            rollouts["steps"] = _as_int(f"{name}: rollouts.steps", rollouts["steps"])
        preset = cls(
            name=name,
            env_id=data["env_id"],
            status=str(data.get("status", _OPTIONAL_KEYS["status"])),
            notes=str(data.get("notes", _OPTIONAL_KEYS["notes"])),
            total_steps=_as_int(f"{name}: total_steps", data["total_steps"]),
            num_envs=_as_int(f"{name}: num_envs", data["num_envs"]),
            vectorization_mode=data["vectorization_mode"],
            rollouts=rollouts,
            model=dict(data["model"]),
            optimizer=copy.deepcopy(data["optimizer"]),
            eval_episodes=_as_int(f"{name}: eval_episodes", data["eval_episodes"]),
            env_modules=copy.deepcopy(data.get("env_modules", _OPTIONAL_KEYS["env_modules"])),
            env_kwargs=copy.deepcopy(data.get("env_kwargs", _OPTIONAL_KEYS["env_kwargs"])),
            wrappers=copy.deepcopy(data.get("wrappers", _OPTIONAL_KEYS["wrappers"])),
            source=source,
        )
        preset.validate()
        return preset

    def validate(self) -> None:
        """Raises :class:`PresetError` naming the first invalid value."""
        if self.vectorization_mode not in ("sync", "async"):
            raise PresetError(f"{self.name}: vectorization_mode must be 'sync' or 'async'; got {self.vectorization_mode!r}")
        _check_env_settings(self.name, self.env_modules, self.env_kwargs, self.wrappers)
        if sorted(self.rollouts) != sorted(_ROLLOUT_KEYS):
            raise PresetError(f"{self.name}: rollouts must have exactly the keys {list(_ROLLOUT_KEYS)}; got {sorted(self.rollouts)}")
        if not isinstance(self.rollouts["normalize_rewards"], bool):
            raise PresetError(
                f"{self.name}: rollouts.normalize_rewards must be true or false; got {self.rollouts['normalize_rewards']!r}"
            )
        for key in ("gamma", "gae_lambda"):
            value = self.rollouts[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise PresetError(f"{self.name}: rollouts.{key} must be a number in [0, 1]; got {value!r}")
        if self.rollouts["steps"] % self.num_envs:
            raise PresetError(
                f"{self.name}: rollouts.steps ({self.rollouts['steps']}) must be a multiple of num_envs ({self.num_envs})"
            )
        allowed = _model_arguments()
        unknown = sorted(set(self.model) - allowed)
        if unknown:
            raise PresetError(f"{self.name}: unknown model arguments {unknown}; TRPO takes {sorted(allowed)}")
        if not isinstance(self.optimizer, dict) or "class_name" not in self.optimizer:
            raise PresetError(
                f"{self.name}: optimizer must be an object like "
                '{"class_name": "Adam", "config": {"learning_rate": 0.001}}'
            )

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The preset as stored in a file (plus ``name`` and ``source``), JSON-serializable."""
        data = {key: copy.deepcopy(getattr(self, key)) for key in _TOP_LEVEL_KEYS}
        return {"name": self.name, **data, "source": self.source}

    def override(self, values: dict) -> "Preset":
        """Returns a copy with ``values`` applied; keys are dotted paths into the preset.

        Only existing keys can be set (``"model.max_kl"``, ``"rollouts.steps"``,
        ``"optimizer.config.learning_rate"``, ``"num_envs"``, ...), so that a typo
        is an error rather than a silently ignored setting; ``env_kwargs.<name>`` may
        add an environment argument.

        Setting a network replaces the default MLP: ``{"model.policy_network": "nature_cnn"}``
        also sets ``model.hidden_units`` to ``None`` unless ``values`` sets it too (and setting
        ``hidden_units`` clears ``policy_network`` the same way; likewise for the value network),
        since TRPO takes one or the other.

        Raises:
            PresetError: an unknown key or an invalid resulting preset.
        """
        data = {key: copy.deepcopy(getattr(self, key)) for key in _TOP_LEVEL_KEYS}
        for dotted, value in values.items():
            parts = dotted.split(".")
            node = data
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                known = isinstance(node, dict) and (
                    part in node
                    or (parts[0] == "model" and depth == 1 and part in _model_arguments())
                    or (parts[0] == "env_kwargs" and depth == 1)
                )
                if not isinstance(node, dict) or not known:
                    raise PresetError(f"unknown preset key {dotted!r}; {_describe_keys(data)}")
                if last:
                    node[part] = value
                else:
                    node = node[part]
        for network, units in (("policy_network", "hidden_units"), ("value_network", "value_hidden_units")):
            for given, other in ((network, units), (units, network)):
                if values.get(f"model.{given}") is not None and f"model.{other}" not in values:
                    data["model"][other] = None  # the one just set replaces the other
        return Preset.from_dict(data, name=self.name, source=self.source)

    def iterations(self, total_steps: int | None = None) -> int:
        """TRPO iterations (``fit`` epochs) for ``total_steps`` env steps (the preset's by default); at least 1.

        ``iterations() * rollouts["steps"]`` env steps are trained: ``total_steps`` rounded down to whole
        iterations, the total that ``keras-trpo presets`` and ``train`` show)."""
        total = self.total_steps if total_steps is None else int(total_steps)
        return max(1, total // int(self.rollouts["steps"]))

    # ------------------------------------------------------------------
    def load_env_dependencies(self) -> list:
        """Imports ``env_modules`` and the wrapper classes; returns the wrappers as ``make_vec`` takes them.

        Raises:
            PresetError: a module or class cannot be imported (naming the pip extra that installs it,
                e.g. ``pip install "keras-trpo[minigrid]"``), or a wrapper does not take its ``kwargs``.
        """
        for module in self.env_modules:
            _import(module, f"{self.name}: cannot import env_modules entry {module!r}")
        return [_wrapper(self.name, index, wrapper) for index, wrapper in enumerate(self.wrappers)]

    def make_env(self, env_id: str | None = None, num_envs: int | None = None, vectorization_mode: str | None = None,
                 **kwargs):
        """``gymnasium.make_vec`` with the preset's ``num_envs``, ``vectorization_mode``, ``env_kwargs``
        (updated with ``kwargs``) and ``wrappers``, after importing its ``env_modules``.

        Raises:
            PresetError: see :meth:`load_env_dependencies`.
            gymnasium.error.Error: gymnasium cannot create the environment.
        """
        import gymnasium

        env_id = env_id or self.env_id
        if env_id is None:
            raise PresetError(f"preset {self.name!r} is not tied to an environment; pass env_id")
        wrappers = self.load_env_dependencies()
        return gymnasium.make_vec(
            env_id,
            num_envs=int(num_envs or self.num_envs),
            vectorization_mode=vectorization_mode or self.vectorization_mode,
            wrappers=wrappers,
            **{**copy.deepcopy(self.env_kwargs), **kwargs},
        )

    def build_model(self, env, seed: int | None = None):
        """A :class:`keras_trpo.TRPO` for ``env`` with the preset's arguments, compiled with its optimizer."""
        import keras

        from keras_trpo.model import TRPO

        model = TRPO.for_env(env, **self.model, seed=seed)
        model.compile(optimizer=keras.optimizers.get(copy.deepcopy(self.optimizer)))
        return model

    def build_rollouts(self, env, model, seed: int | None = None):
        """A :class:`keras_trpo.Rollouts` with the preset's ``steps``, ``gamma`` and ``gae_lambda``."""
        from keras_trpo.rollouts import Rollouts

        return Rollouts(env, model, **self.rollouts, seed=seed)


#: Keyword arguments of :class:`keras_trpo.TRPO` a preset may set (``seed`` comes from the caller).
#: Kept here, not read from the signature, so that loading a preset does not import TensorFlow;
#: ``tests/test_cli.py`` checks that it matches ``TRPO.__init__``.
MODEL_ARGUMENTS = (
    "policy_network",
    "value_network",
    "hidden_units",
    "value_hidden_units",
    "activation",
    "max_kl",
    "damping",
    "cg_iterations",
    "backtrack_coefficient",
    "backtrack_iterations",
    "fvp_fraction",
    "normalize_advantages",
    "value_epochs",
    "value_batch_size",
    "log_std_init",
    "normalize_observations",
)


def _model_arguments() -> set:
    return set(MODEL_ARGUMENTS)


def _check_env_settings(name, env_modules, env_kwargs, wrappers) -> None:
    """Raises :class:`PresetError` (one line) unless ``env_modules``, ``env_kwargs`` and ``wrappers`` are well formed."""
    if not isinstance(env_modules, list) or not all(isinstance(m, str) and _DOTTED_NAME.match(m) for m in env_modules):
        raise PresetError(f'{name}: env_modules must be a list of module names such as ["minigrid"]; got {env_modules!r}')
    if not isinstance(env_kwargs, dict):
        raise PresetError(f'{name}: env_kwargs must be a JSON object such as {{"frameskip": 1}}; got {env_kwargs!r}')
    reserved = sorted(set(env_kwargs) & set(_MAKE_VEC_ARGUMENTS))
    if reserved:
        raise PresetError(f"{name}: env_kwargs cannot set {reserved}: those are arguments of gymnasium.make_vec, "
                          "not of the environment (num_envs, vectorization_mode and wrappers are preset keys)")
    example = '{"class": "minigrid.wrappers.ImgObsWrapper", "kwargs": {}}'
    if not isinstance(wrappers, list):
        raise PresetError(f"{name}: wrappers must be a list of objects like {example}; got {wrappers!r}")
    for index, wrapper in enumerate(wrappers):
        where = f"{name}: wrappers[{index}]"
        if not isinstance(wrapper, dict) or "class" not in wrapper or set(wrapper) - {"class", "kwargs"}:
            raise PresetError(f"{where} must be an object with the keys class and kwargs (optional), like {example}; "
                              f"got {wrapper!r}")
        path = wrapper["class"]
        if not isinstance(path, str) or "." not in path or not _DOTTED_NAME.match(path):
            raise PresetError(f"{where}.class must be a dotted path module.Name such as "
                              f"'gymnasium.wrappers.FilterObservation'; got {path!r}")
        if not isinstance(wrapper.get("kwargs", {}), dict):
            raise PresetError(f"{where}.kwargs must be a JSON object of keyword arguments; got {wrapper['kwargs']!r}")


def _import(module: str, failure: str):
    """``importlib.import_module(module)``; a PresetError starting with ``failure`` (and naming the pip extra) otherwise."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = (getattr(error, "name", None) or module).split(".")[0]
        if missing in _EXTRAS and importlib.util.find_spec(missing) is None:
            hint = f'pip install "keras-trpo[{_EXTRAS[missing]}]"'
        elif importlib.util.find_spec(missing) is None:
            hint = f"install the package that provides the module {missing!r}"
        else:
            hint = "check the module path"
        raise PresetError(f"{failure}: {type(error).__name__}: {error} ({hint})") from None


def _wrapper(name: str, index: int, wrapper: dict):
    """The wrapper ``{"class": ..., "kwargs": ...}`` as a callable env -> wrapped env (picklable for async envs)."""
    path, kwargs = wrapper["class"], dict(wrapper.get("kwargs", {}))
    where = f"{name}: wrappers[{index}]"
    module_name, _, class_name = path.rpartition(".")
    module = _import(module_name, f"{where}: cannot import {path!r}")
    cls = getattr(module, class_name, None)
    if cls is None or not callable(cls):
        raise PresetError(f"{where}: module {module_name!r} has no wrapper class {class_name!r}")
    try:
        inspect.signature(cls).bind(None, **kwargs)  # None: the env, the first argument
    except TypeError as error:
        raise PresetError(f"{where}: {path} does not take the kwargs {kwargs}: {error}") from None
    except ValueError:  # no signature to check (a builtin): the call will tell
        pass
    return functools.partial(cls, **kwargs)


def _describe_keys(data: dict) -> str:
    keys = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys.extend(f"{key}.{sub}" for sub in value)
        else:
            keys.append(key)
    return "known keys: " + ", ".join(keys)


def _as_int(name, value) -> int:
    """``value`` as an int >= 1; integral floats (``1e6`` in JSON) are accepted."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PresetError(f"{name} must be an integer >= 1; got {value!r}")
    return value
