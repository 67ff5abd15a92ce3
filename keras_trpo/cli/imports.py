"""``--import MODULE`` of ``keras-trpo evaluate``, ``export`` and ``info``: the user's modules that register custom
Keras classes (networks decorated with ``@keras.saving.register_keras_serializable()``), imported before a
``.keras`` file is loaded. A ``.keras`` file names its classes but holds no code, so a fresh process knows only
the classes of the modules it imported.

MODULE is a module name (``my_nets``, ``pkg.nets``: found on ``sys.path`` or in the current directory) or the
path of a Python file (``path/to/my_nets.py``, imported as the module ``my_nets``, with its directory on
``sys.path``). :func:`check_imports` checks them before TensorFlow loads; :func:`import_modules` imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from keras_trpo.cli.common import CLIError

#: How to write --import, for the messages.
USAGE = "--import MODULE (a module name such as my_nets, or a file such as path/to/my_nets.py)"


def check_imports(values) -> list[tuple[str, str | None, str]]:
    """``(module name, file or None, the value)`` for each ``--import`` value; a missing file or module is a CLIError.

    Nothing is executed: a file must exist, and a module name's top-level package must be found.
    """
    found = []
    for value in values or ():
        value = os.fspath(value)
        if value.endswith(".py") or "/" in value or os.sep in value:
            path = os.path.abspath(value)
            name = os.path.splitext(os.path.basename(path))[0]
            if not os.path.isfile(path) or not value.endswith(".py"):
                raise CLIError(f"--import {value}: no such Python file; expected {USAGE}")
            if not name.isidentifier():
                raise CLIError(f"--import {value}: {name!r} is not a valid module name; rename the file")
            found.append((name, path, value))
            continue
        _search_current_directory()
        top = value.partition(".")[0]
        if not all(part.isidentifier() for part in value.split(".")) or importlib.util.find_spec(top) is None:
            raise CLIError(f"--import {value}: no module named {top!r} on the Python path or in the current directory "
                           f"{os.getcwd()!r}; expected {USAGE}")
        found.append((value, None, value))
    return found


def import_modules(found) -> None:
    """Imports what :func:`check_imports` returned, in order; an error while importing is a CLIError."""
    for name, path, value in found:
        try:
            if path is None:
                importlib.import_module(name)
                continue
            directory = os.path.dirname(path)
            if directory not in sys.path:
                sys.path.append(directory)  # the file's own imports of its neighbours
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # as `import name` would: Keras records classes by their module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        except Exception as error:  # noqa: BLE001 - the user's code: any error, in one line
            raise CLIError(f"--import {value}: importing it raised {type(error).__name__}: {error}") from None


def _search_current_directory() -> None:
    """``python -m`` searches the current directory; the ``keras-trpo`` console script does not: add it, last."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
