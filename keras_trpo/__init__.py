"""keras_trpo: Trust Region Policy Optimization as a Keras model.

```python
import gymnasium, keras, keras_trpo
env = gymnasium.make_vec("CartPole-v1", num_envs=8, vectorization_mode="sync")
model = keras_trpo.TRPO.for_env(env, max_kl=0.01)
model.compile(optimizer=keras.optimizers.Adam(1e-3))   # trains the critic
```

``import keras_trpo`` imports Keras and TensorFlow and registers :class:`TRPO` for
``keras.models.load_model``, whether Keras was imported before or after it. With the environment
variable ``KERAS_TRPO_LAZY_IMPORT=1`` it imports neither: the public names are imported when first
used (PEP 562 module ``__getattr__``), TRPO's registration with them. The ``keras-trpo`` command
sets it: its entry point, :func:`keras_trpo_command.main`, sits outside this package (importing any
``keras_trpo`` module runs this file first), so that ``keras-trpo --help``, ``presets`` and ``plot``
start without TensorFlow; its other commands load it first (``keras_trpo.cli.startup``).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = [
    "TRPO",
    "Rollouts",
    "RolloutError",
    "StaleBatchError",
    "compute_gae",
    "evaluate",
    "RunningNormalization",
    "REJECTION_REASONS",
    "UpdateRejectedWarning",
    "callbacks",
    "ops",
    "policies",
]
_SUBMODULES = ("callbacks", "ops", "policies")
#: ``KERAS_TRPO_LAZY_IMPORT=1``: ``import keras_trpo`` imports neither Keras nor TensorFlow (see above).
LAZY_IMPORT_VARIABLE = "KERAS_TRPO_LAZY_IMPORT"

if TYPE_CHECKING:  # what the public names are, for type checkers and readers
    from keras_trpo import callbacks, ops, policies
    from keras_trpo.advantages import compute_gae
    from keras_trpo.errors import REJECTION_REASONS, RolloutError, StaleBatchError, UpdateRejectedWarning
    from keras_trpo.evaluation import evaluate
    from keras_trpo.model import TRPO
    from keras_trpo.normalization import RunningNormalization
    from keras_trpo.rollouts import Rollouts


def _backend_error(backend: object) -> ImportError:
    return ImportError(
        f"keras_trpo needs the TensorFlow Keras backend; KERAS_BACKEND is {backend!r}. Set KERAS_BACKEND=tensorflow."
    )


def _check_backend() -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise _backend_error(keras.backend.backend())


def _load_public_api() -> None:
    """Imports Keras (after checking its backend) and the public names into this module."""
    _check_backend()
    from keras_trpo.advantages import compute_gae
    from keras_trpo.errors import REJECTION_REASONS, RolloutError, StaleBatchError, UpdateRejectedWarning
    from keras_trpo.evaluation import evaluate
    from keras_trpo.model import TRPO
    from keras_trpo.normalization import RunningNormalization
    from keras_trpo.rollouts import Rollouts

    public = dict(
        TRPO=TRPO, Rollouts=Rollouts, RolloutError=RolloutError, StaleBatchError=StaleBatchError,
        compute_gae=compute_gae, evaluate=evaluate, RunningNormalization=RunningNormalization,
        REJECTION_REASONS=REJECTION_REASONS, UpdateRejectedWarning=UpdateRejectedWarning,
    )  # fmt: skip
    public.update({name: importlib.import_module(f"{__name__}.{name}") for name in _SUBMODULES})
    globals().update(public)


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        # Only that submodule: keras_trpo.model runs "from keras_trpo import ops" while it loads.
        _check_backend()
        return importlib.import_module(f"{__name__}.{name}")
    if name in __all__:
        _load_public_api()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# The environment variable is checked at import even when Keras is not imported yet (the
# keras.json setting is checked when it is).
if os.environ.get("KERAS_BACKEND") not in (None, "", "tensorflow"):
    raise _backend_error(os.environ["KERAS_BACKEND"])
if os.environ.get(LAZY_IMPORT_VARIABLE) != "1":
    _load_public_api()
