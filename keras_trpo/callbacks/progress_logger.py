"""One compact progress line every few iterations, for ``fit(verbose=0)``."""

from __future__ import annotations

import math

from keras_trpo.callbacks._logs import Logs, PrintFn
from keras_trpo.callbacks.steps_per_second import StepsPerSecond
from keras_trpo.validation import check_int


class ProgressLogger(StepsPerSecond):
    """Prints one compact line every ``every`` iterations (epochs).

    The line shows the iteration, env steps so far, the mean return of the
    episodes finished in that batch (or says that none finished), the KL of the
    step, the line-search shrinks, the critic loss and env steps per second,
    plus ``eval_return`` and ``max_kl`` when other callbacks put them in the
    logs before it. Use it with ``fit(..., verbose=0)``. Like
    :class:`StepsPerSecond` it adds ``steps_per_second`` to the logs of every
    iteration.

    Args:
        every: print every this many iterations.
        print_fn: where lines go (``print`` by default; e.g. ``logging.info``).

    Example:

    ```python
    model.fit(rollouts, epochs=100, verbose=0, callbacks=[keras_trpo.callbacks.ProgressLogger(10)])
    # iteration   10 | env steps    10240 | episode return    45.3 | kl 0.0152 | line search 0 | ...
    ```
    """

    def __init__(self, every: int = 10, print_fn: PrintFn = print) -> None:
        super().__init__()
        self.every = check_int("every", every)
        self.print_fn = print_fn

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        logs = {} if logs is None else logs
        super().on_epoch_end(epoch, logs)  # adds steps_per_second
        if (epoch + 1) % self.every:
            return
        episode_return = float(logs.get("episode_return", math.nan))
        returned = "no episode finished" if math.isnan(episode_return) else f"{episode_return:7.1f}"
        env_steps = int(logs.get("env_steps", 0))
        line = (
            f"iteration {epoch + 1:4d} | env steps {env_steps:8d} | episode return {returned} | "
            f"kl {logs.get('kl', math.nan):.4f} | line search {int(logs.get('line_search_steps', 0))} | "
            f"value loss {logs.get('value_loss', math.nan):.3g} | {logs.get('steps_per_second', math.nan):,.0f} steps/s"
        )
        if "eval_return" in logs:
            line += f" | eval return {float(logs['eval_return']):.1f}"
        if "max_kl" in logs:
            line += f" | max_kl {float(logs['max_kl']):.4g}"
        self.print_fn(line)
