"""The ``keras-trpo`` console script: :func:`keras_trpo.cli.main`, with ``keras_trpo`` imported lazily.

Importing any ``keras_trpo`` module runs ``keras_trpo/__init__.py`` first, which imports TensorFlow
(4-5 s and its C++ start-up log) unless ``KERAS_TRPO_LAZY_IMPORT=1``. This entry point lives outside
the package so that it can set that variable before: ``keras-trpo --help``, ``presets`` and ``plot``
then start in a fraction of a second, and the commands that need TensorFlow load it themselves, with
its start-up log hidden (``keras_trpo.cli.startup``). ``python -m keras_trpo_command`` is the same;
``python -m keras_trpo.cli`` runs the same commands after ``import keras_trpo`` has loaded TensorFlow.
"""

from __future__ import annotations

import os


def main() -> int:
    """Runs ``keras-trpo`` with the process's arguments; returns the exit status."""
    os.environ["KERAS_TRPO_LAZY_IMPORT"] = "1"  # keras_trpo.LAZY_IMPORT_VARIABLE (not imported: it is the point)
    from keras_trpo.cli import main as run

    return run()
