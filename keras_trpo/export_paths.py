"""Where an export is written: TF Serving's version directories, and the one file of LiteRT and ONNX (issue 30).

Every path rule of :mod:`keras_trpo.export` (SavedModel), :mod:`keras_trpo.export_litert` and
:mod:`keras_trpo.export_onnx` lives here, so ``keras-trpo export`` checks ``OUT`` with the same rules before
it loads a model; so do the arguments the one-file formats share and the atomic write of their file. A leaf
of the export modules: it imports nothing from keras_trpo.
"""

from __future__ import annotations

import os
import re
import uuid

_VERSION = re.compile(r"^\d+$")
#: The file suffix of each one-file format.
SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}


def file_format(filepath) -> str | None:
    """The one-file format whose suffix ``filepath`` ends in (``"litert"``, ``"onnx"``), or None."""
    return next((fmt for fmt, suffix in SUFFIXES.items() if os.fspath(filepath).endswith(suffix)), None)


def resolve_version_dir(filepath, *, overwrite: bool = False) -> str:
    """Returns the version directory ``export`` writes for ``filepath`` (see module docstring)."""
    path = os.path.normpath(os.path.abspath(os.fspath(filepath)))
    name = os.path.basename(path)
    fmt = file_format(name)
    if fmt is not None:  # model.export("policy.tflite") would make a directory of that name
        raise ValueError(f"filepath {os.fspath(filepath)!r} names a {SUFFIXES[fmt]} file, but the SavedModel format "
                         f"writes a directory; pass format={fmt!r} to write that file, or a directory path.")
    if _VERSION.match(name):
        if os.path.isfile(path):
            raise ValueError(f"filepath {os.fspath(filepath)!r} is a file; expected a directory.")
        if os.path.isdir(path) and os.listdir(path) and not overwrite:
            raise FileExistsError(
                f"filepath {os.fspath(filepath)!r} is an existing, non-empty version directory. Pass "
                f"overwrite=True to replace it, or pass its parent {os.path.dirname(path)!r} to write the "
                "next version."
            )
        return path
    if os.path.isfile(path):
        raise ValueError(f"filepath {os.fspath(filepath)!r} is a file; expected a directory.")
    if not os.path.isdir(path):
        return os.path.join(path, "1")
    entries = os.listdir(path)
    if "saved_model.pb" in entries or "saved_model.pbtxt" in entries:
        raise ValueError(
            f"filepath {os.fspath(filepath)!r} is a SavedModel directory itself, not a model base directory. "
            "TF Serving needs <base>/<name>/<version>/: pass a base directory such as "
            "'saved_models/cartpole' (the next version is created in it) or a version directory such as "
            "'saved_models/cartpole/1'."
        )
    versions, others = [], []
    for entry in entries:
        if not os.path.isdir(os.path.join(path, entry)) or entry.startswith("."):
            continue  # README files, temporary export directories
        (versions if _VERSION.match(entry) else others).append(entry)
    if others:
        raise ValueError(
            f"filepath {os.fspath(filepath)!r} holds non-version sub-directories {sorted(others)}; a model "
            "base directory may only hold integer version directories. Pass the model's own directory, e.g. "
            f"{os.path.join(os.fspath(filepath), sorted(others)[0])!r}, or a version directory such as "
            f"{os.path.join(os.fspath(filepath), '1')!r}."
        )
    return os.path.join(path, str(max((int(v) for v in versions), default=0) + 1))


def resolve_file_path(filepath, *, suffix: str, format: str, overwrite: bool = False) -> str:
    """The absolute path a one-file format (``.tflite``, ``.onnx``) writes for ``filepath``; one line otherwise."""
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(f"filepath must be a str or os.PathLike path ending in {suffix!r}; got "
                        f"{type(filepath).__name__}.")
    path = os.path.abspath(os.fspath(filepath))
    if not path.endswith(suffix):
        raise ValueError(f"filepath must name a {suffix} file for format={format!r}; got {os.fspath(filepath)!r}. "
                         f"Pass e.g. {os.path.join(os.path.dirname(os.fspath(filepath)), 'policy' + suffix)!r}.")
    if os.path.isdir(path):
        raise ValueError(f"filepath {os.fspath(filepath)!r} is a directory; format={format!r} writes one file.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"filepath {os.fspath(filepath)!r} exists; pass overwrite=True to replace it.")
    return path


def check_file_options(format: str, kwargs: dict, takes: str, *, overwrite, verbose) -> None:
    """The arguments every one-file format shares: no unknown keyword (``takes`` lists the known ones), and
    ``overwrite`` and ``verbose`` bools."""
    if kwargs:
        raise TypeError(f"TRPO.export(format={format!r}) got unexpected arguments {sorted(kwargs)}; it takes {takes}.")
    for name, value in (("overwrite", overwrite), ("verbose", verbose)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool; got {value!r}.")


def write_file(data: bytes, path: str, *, overwrite: bool) -> None:
    """Writes ``data`` to a temporary file beside ``path`` (its directory made if missing), then renames it over
    ``path``: no reader sees half a file. A file that appeared at ``path`` since :func:`resolve_file_path` is kept
    unless ``overwrite``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(staging, "wb") as file:
            file.write(data)
        if os.path.exists(path) and not overwrite:  # written by someone else since the path was resolved
            raise FileExistsError(f"filepath {path!r} was created during the export; pass overwrite=True to "
                                  "replace it.")
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise
