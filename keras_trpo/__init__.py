"""keras_trpo: Trust Region Policy Optimization as a Keras model.

```python
import gymnasium, keras, keras_trpo
env = gymnasium.make_vec("CartPole-v1", num_envs=8)
model = keras_trpo.TRPO.for_env(env, max_kl=0.01)
model.compile(optimizer=keras.optimizers.Adam(1e-3))   # trains the critic
```
"""

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras_trpo needs the TensorFlow Keras backend; KERAS_BACKEND is "
        f"{_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from keras_trpo import callbacks, ops, policies  # noqa: E402
from keras_trpo.advantages import compute_gae  # noqa: E402
from keras_trpo.evaluation import evaluate  # noqa: E402
from keras_trpo.errors import REJECTION_REASONS, RolloutError, StaleBatchError, UpdateRejectedWarning  # noqa: E402
from keras_trpo.model import TRPO  # noqa: E402
from keras_trpo.normalization import RunningNormalization  # noqa: E402
from keras_trpo.rollouts import Rollouts  # noqa: E402

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
__version__ = "0.1.0"
