"""The environment settings of a preset: ``env_modules``, ``env_kwargs`` and ``wrappers``.

They let a preset make environments of other packages (MiniGrid, Atari, ...); the file format
is in :mod:`keras_trpo.presets`. This module checks them when a preset loads and imports them
only when an environment is made.

:func:`check_env_settings` checks their form when a preset is loaded, without importing anything;
:func:`load_env_dependencies` imports the modules and wrapper classes (for
:meth:`keras_trpo.presets.Preset.make_env`), naming the pip extra of keras-trpo that installs a missing one.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re

from keras_trpo.presets.errors import PresetError

#: The pip extra of keras-trpo that installs a top-level module a preset imports.
_EXTRAS = {"minigrid": "minigrid", "ale_py": "atari", "cv2": "atari", "mujoco": "mujoco"}
#: ``gymnasium.make_vec`` arguments that are preset keys of their own, not environment arguments.
_MAKE_VEC_ARGUMENTS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_env_settings(name, env_modules, env_kwargs, wrappers) -> None:
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


def load_env_dependencies(name: str, env_modules: list, wrappers: list) -> list:
    """Imports ``env_modules`` and the wrapper classes of preset ``name``; returns the wrappers as
    ``gymnasium.make_vec`` takes them.

    Raises:
        PresetError: a module or class cannot be imported (naming the pip extra that installs it),
            or a wrapper does not take its ``kwargs``.
    """
    for module in env_modules:
        _import(module, f"{name}: cannot import env_modules entry {module!r}")
    return [_wrapper(name, index, wrapper) for index, wrapper in enumerate(wrappers)]


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
