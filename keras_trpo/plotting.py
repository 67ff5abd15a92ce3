"""Learning curves from ``keras-trpo train`` run directories (``metrics.csv`` + ``config.json``).

Runs that share a label (env id, preset name and any hyperparameter overrides,
from each run's ``config.json``; so runs that differ only in their seed) are
drawn as their mean with a band from the lowest to the highest run at each
step; a label with a single run is drawn as a plain line.

Example:

```python
from keras_trpo.plotting import plot_runs
plot_runs(["runs/cartpole-s0", "runs/cartpole-s1", "runs/cartpole-s2"], "curve.png")
```
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"


class RunError(ValueError):
    """A directory that is not a readable ``keras-trpo train`` run."""


@dataclass
class Run:
    """The metrics of one training run: ``columns[name]`` is a float array, one entry per iteration."""

    path: str
    label: str
    config: dict
    columns: dict = field(default_factory=dict)

    def curve(self, metric: str = "episode_return", x: str = "env_steps") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` for the iterations where ``metric`` is finite (NaN: no episode finished)."""
        if metric not in self.columns:
            available = ", ".join(sorted(k for k in self.columns if not k.startswith("val_")))
            raise RunError(f"run {self.path!r} has no {metric!r} column; it has: {available}")
        xs, ys = self.columns[x], self.columns[metric]
        keep = np.isfinite(xs) & np.isfinite(ys)
        return xs[keep], ys[keep]


def find_runs(paths) -> list[str]:
    """Expands each path: a run directory itself, or a directory whose sub-directories are runs."""
    found = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise RunError(f"no such run directory: {path!r}")
        if not os.path.isdir(path):
            raise RunError(f"{path!r} is not a directory; expected a run directory written by 'keras-trpo train'")
        if os.path.isfile(os.path.join(path, METRICS_FILE)):
            found.append(path)
            continue
        children = sorted(
            os.path.join(path, name)
            for name in os.listdir(path)
            if os.path.isfile(os.path.join(path, name, METRICS_FILE))
        )
        if not children:
            raise RunError(f"{path!r} has no {METRICS_FILE} (and no run sub-directories with one)")
        found.extend(children)
    return found


def load_run(path) -> Run:
    """Reads ``metrics.csv`` and ``config.json`` of a run directory."""
    path = os.fspath(path)
    metrics_path = os.path.join(path, METRICS_FILE)
    if not os.path.isfile(metrics_path):
        raise RunError(f"{path!r} has no {METRICS_FILE}; expected a run directory written by 'keras-trpo train'")
    config = {}
    config_path = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    columns: dict[str, list[float]] = {}
    with open(metrics_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                columns.setdefault(key, []).append(_to_float(value))
    if not columns.get("epoch"):
        raise RunError(f"{metrics_path!r} has no rows yet")
    return Run(path=path, label=run_label(config), config=config,
               columns={k: np.asarray(v, float) for k, v in columns.items()})


#: Overrides that do not change the learning curve's hyperparameters (the budget, the final evaluation).
_NEUTRAL_OVERRIDES = ("total_steps", "eval_episodes")


def run_label(config: dict) -> str:
    """``"ENV_ID (preset NAME[, overrides])"``: runs that differ only in their seed share a label."""
    env_id = config.get("env_id", "unknown env")
    preset = config.get("preset")
    if not preset:
        return str(env_id)
    overrides = {k: v for k, v in (config.get("overrides") or {}).items() if k not in _NEUTRAL_OVERRIDES}
    extra = "".join(f", {key}={json.dumps(value)}" for key, value in sorted(overrides.items()))
    return f"{env_id} (preset {preset}{extra})"


def _to_float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan  # "NA", "nan", empty


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2:
        return y
    window = min(window, len(y))
    kernel = np.ones(window)
    # Trailing mean with a shorter window at the start (no shift of the curve).
    sums = np.convolve(y, kernel)[: len(y)]
    counts = np.convolve(np.ones_like(y), kernel)[: len(y)]
    return sums / counts


def group_curves(runs, metric="episode_return", smooth=1):
    """Groups runs by label; returns ``[(label, x, mean, low, high, n_runs)]`` in first-seen order.

    Several runs of one label are interpolated onto the union of their env
    steps, within the range that all of them cover; ``low`` and ``high`` are
    the minimum and maximum over the runs there. A label with one run has
    ``low = high = None``.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    curves = []
    for label, members in groups.items():
        series = []
        for run in members:
            x, y = run.curve(metric)
            if len(x):
                series.append((x, _smooth(y, smooth)))
        if not series:
            raise RunError(f"no finite {metric!r} value in the runs labelled {label!r}")
        if len(series) == 1:
            x, y = series[0]
            curves.append((label, x, y, None, None, 1))
            continue
        low = max(x[0] for x, _ in series)
        high = min(x[-1] for x, _ in series)
        grid = np.unique(np.concatenate([x for x, _ in series]))
        grid = grid[(grid >= low) & (grid <= high)]
        if len(grid) == 0:
            raise RunError(f"the runs labelled {label!r} cover no common range of env steps")
        stacked = np.stack([np.interp(grid, x, y) for x, y in series])
        curves.append((label, grid, stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0), len(series)))
    return curves


def plot_runs(
    run_dirs,
    output,
    *,
    metric: str = "episode_return",
    smooth: int = 1,
    title: str | None = None,
    dpi: int = 120,
) -> str:
    """Draws ``metric`` against env steps for the runs in ``run_dirs`` and saves ``output`` (PNG, SVG, PDF).

    Args:
        run_dirs: run directories, or directories of run directories.
        output: image path; the format follows its extension.
        metric: a ``metrics.csv`` column (``episode_return``, ``eval_return``, ``kl``, ...).
        smooth: trailing moving-average window in iterations (1: none).
        title: figure title (default: the metric name and the run count).
        dpi: resolution of raster images.

    Returns:
        ``output``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    runs = [load_run(path) for path in find_runs(run_dirs)]
    curves = group_curves(runs, metric=metric, smooth=smooth)
    figure, axes = plt.subplots(figsize=(7.0, 4.2), dpi=dpi)
    try:
        for index, (label, x, mean, low, high, n) in enumerate(curves):
            color = f"C{index % 10}"
            if low is None:
                axes.plot(x, mean, color=color, linewidth=1.6, label=label)
            else:
                axes.plot(x, mean, color=color, linewidth=1.8, label=f"{label}: mean of {n} runs, band min–max")
                axes.fill_between(x, low, high, color=color, alpha=0.25, linewidth=0)
        axes.set_xlabel("environment steps")
        pretty = {
            "episode_return": "episode return (training batches)",
            "eval_return": "deterministic evaluation return",
        }.get(metric, metric)
        axes.set_ylabel(pretty + (f", {smooth}-iteration mean" if smooth > 1 else ""))
        axes.set_title(title or f"TRPO learning curve{'s' if len(runs) > 1 else ''} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
        figure.tight_layout()
        directory = os.path.dirname(os.path.abspath(output))
        os.makedirs(directory, exist_ok=True)
        figure.savefig(output)
    finally:
        plt.close(figure)
    return os.fspath(output)
