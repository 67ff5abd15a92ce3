"""``keras-trpo``: train, evaluate, export, plot and inspect TRPO policies from the shell.

```
keras-trpo train CartPole-v1 --seed 0 --out runs/cartpole-s0
keras-trpo evaluate runs/cartpole-s0/saved_model CartPole-v1 --episodes 10
keras-trpo export runs/cartpole-s0/model.keras saved_models/cartpole
keras-trpo plot runs/cartpole-s* -o curve.png
keras-trpo info runs/cartpole-s0/saved_model/1
keras-trpo presets
```

Every command exits 0 on success. Bad input (an unknown environment or preset,
a non-positive number, a missing path) prints one line starting with
``keras-trpo: error:`` on stderr and exits 2 (usage) or 1 (anything else),
without a Python traceback; ``--debug`` shows the traceback of unexpected errors.
See the "Command line" section of README.md.

Modules: ``parser`` (arguments and :func:`main`), ``common`` (what the commands share), ``imports``
(``--import MODULE``: the user's modules that register custom classes, before a .keras file loads),
``startup`` (loads TensorFlow without its C++ start-up log on the terminal; ``--tf-logs``
shows it), ``train``, ``models`` (evaluate, export, info), ``plot``, ``presets``, and ``example``
(the command line of ``examples/*.py``, not part of ``keras-trpo``). Training itself is
:func:`keras_trpo.training.train`. TensorFlow is imported when a command that needs it runs:
``keras-trpo --help``, ``presets`` and ``plot`` never import it. For that, the console script's entry point,
``keras_trpo_command.main``, sets ``KERAS_TRPO_LAZY_IMPORT=1`` before it imports this package (``import keras_trpo``
otherwise loads TensorFlow); ``python -m keras_trpo.cli`` runs the same commands after it has.
"""

from keras_trpo.cli.common import CLIError
from keras_trpo.cli.parser import build_parser, main

__all__ = ["main", "build_parser", "CLIError"]
