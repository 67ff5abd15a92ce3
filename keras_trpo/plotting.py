"""Learning curves from ``keras-trpo train`` run directories (``metrics.csv`` + ``config.json``).

Runs that share a label (env id, preset name, planned env steps and any
hyperparameter overrides, from each run's ``config.json``; so runs that differ
only in their seed) are drawn as their mean with a band from the lowest to the
highest run at each step (``band="ci95"``: a 95% percentile-bootstrap confidence interval of the
mean instead), over every step that some run reaches: where a run
has ended early (interrupted) the mean is over the others and the line is
dashed. A label with a single run is drawn as a plain line (a dot for a single
iteration).

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
from typing import NamedTuple

import numpy as np

METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.json"
#: What the band around a mean of several runs shows: ``"minmax"`` (lowest to highest run) or ``"ci95"``.
BANDS = {"minmax": "min-max band", "ci95": "95% bootstrap CI of the mean"}
#: Resamples of the ``ci95`` band (seeded: the same runs draw the same band).
BOOTSTRAP_REPS = 2000


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


#: Overrides that do not change the learning curve's hyperparameters. The budget (``total_steps``,
#: ``--steps``) is in the label as the run's planned env steps instead.
_NEUTRAL_OVERRIDES = ("total_steps", "eval_episodes")


def run_label(config: dict) -> str:
    """``"ENV_ID (preset NAME, N env steps[, overrides])"``: runs that differ only in their seed share a label.

    ``N`` is the run's planned length (iterations x env steps per iteration), so that a short run
    (``--steps 100``) is not averaged with full ones.
    """
    env_id = config.get("env_id", "unknown env")
    preset = config.get("preset")
    if not preset:
        return str(env_id)
    overrides = {k: v for k, v in (config.get("overrides") or {}).items() if k not in _NEUTRAL_OVERRIDES}
    extra = "".join(f", {key}={json.dumps(value)}" for key, value in sorted(overrides.items()))
    steps = planned_env_steps(config)
    length = f", {steps:,} env steps" if steps else ""
    return f"{env_id} (preset {preset}{length}{extra})"


def planned_env_steps(config: dict) -> int | None:
    """The env steps a run was started for, from its ``config.json`` (None if it does not say)."""
    planned = config.get("planned_env_steps")
    if isinstance(planned, int):
        return planned
    iterations, steps = config.get("iterations"), (config.get("rollouts") or {}).get("steps")
    if isinstance(iterations, int) and isinstance(steps, int):
        return iterations * steps
    total = config.get("total_steps")
    return total if isinstance(total, int) else None


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


class Curve(NamedTuple):
    """What is drawn for one label: its runs' ``metric`` against env steps ``x``.

    With several runs, ``mean``, ``low`` and ``high`` are the mean and the band (minimum and maximum,
    or the bootstrap confidence interval of the mean: ``band``) at each ``x`` over the runs that reach it, and ``counts`` says how many do (fewer than ``n_runs`` where
    a run starts later or ends earlier); with one run, ``mean`` is that run and ``low``/``high`` are None.
    """

    label: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    n_runs: int
    counts: np.ndarray
    env_id: str | None = None
    ends: tuple = ()  # the last env steps of each run
    band: str = "minmax"  # a key of BANDS

    def early_ends(self) -> list[float]:
        """The last env steps of the runs that end before the longest one, in order."""
        return sorted(end for end in self.ends if end < self.x[-1])


def group_curves(runs, metric="episode_return", smooth=1, band="minmax") -> list[Curve]:
    """Groups runs by label; returns one :class:`Curve` per label, in first-seen order.

    Several runs of one label are interpolated onto the union of their env steps; each point
    uses the runs whose range covers it, so the curve spans every run (a run that stopped early
    does not cut the others short).
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {sorted(BANDS)}; got {band!r}.")
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
        env_id = members[0].config.get("env_id")
        ends = tuple(float(x[-1]) for x, _ in series)
        if len(series) == 1:
            x, y = series[0]
            curves.append(Curve(label, x, y, None, None, 1, np.ones(len(x), int), env_id, ends))
            continue
        grid = np.unique(np.concatenate([x for x, _ in series]))
        stacked = np.full((len(series), len(grid)), np.nan)
        for row, (x, y) in enumerate(series):
            covered = (grid >= x[0]) & (grid <= x[-1])
            stacked[row, covered] = np.interp(grid[covered], x, y)
        counts = np.sum(np.isfinite(stacked), axis=0)  # >= 1: every grid point is some run's
        low, high = (np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)) if band == "minmax" else \
            bootstrap_mean_interval(stacked)
        curves.append(Curve(label, grid, np.nanmean(stacked, axis=0), low, high, len(series), counts, env_id, ends,
                            band))
    return curves


def bootstrap_mean_interval(stacked: np.ndarray, level: float = 0.95, reps: int = BOOTSTRAP_REPS,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean of each column of ``stacked`` ``[runs, points]``.

    Each resample draws as many runs as reach the point, with replacement, from those that reach it
    (NaN: a run that does not); the interval is the ``(1 ± level) / 2`` quantiles of the resampled means.
    With 2 or 3 runs it is the lowest-to-highest band (all resamples of the lowest run are likelier than
    2.5%); from 4 runs on it is narrower.
    """
    rng = np.random.default_rng(seed)
    low, high = np.empty(stacked.shape[1]), np.empty(stacked.shape[1])
    reached = np.isfinite(stacked)
    for pattern in np.unique(reached, axis=1).T:  # the columns that the same runs reach, at once
        columns = (reached == pattern[:, None]).all(axis=0)
        values = stacked[pattern][:, columns]  # [runs reaching, columns]
        picks = rng.integers(0, len(values), size=(reps, len(values)))
        means = values[picks].mean(axis=1)  # [reps, columns]
        low[columns], high[columns] = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high


def describe(curve: Curve) -> str:
    """``LABEL: 3 runs (mean, min-max band), 1,024-99,328 env steps[; 1 run ends at 1,024]``."""
    runs = f"{curve.n_runs} run{'s' if curve.n_runs > 1 else ''}"
    if curve.n_runs > 1:
        runs += f" (mean, {BANDS[curve.band]})"
    span = f"{curve.x[0]:,.0f}-{curve.x[-1]:,.0f} env steps" if len(curve.x) > 1 else f"{curve.x[0]:,.0f} env steps"
    text = f"{curve.label}: {runs}, {span}"
    early = curve.early_ends()
    if early:
        text += (f"; {len(early)} run{'s end' if len(early) > 1 else ' ends'} early (at "
                 + ", ".join(f"{end:,.0f}" for end in early) + "), dashed where not every run is averaged")
    return text


def draw(curves, *, metric: str = "episode_return", smooth: int = 1, title: str | None = None, dpi: int = 120):
    """A matplotlib Figure of ``curves`` (from :func:`group_curves`); close it with ``plt.close``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7.0, 4.2), dpi=dpi, layout="constrained")
    envs = list(dict.fromkeys(str(curve.env_id) for curve in curves if curve.env_id))
    for index, curve in enumerate(curves):
        color = f"C{index % 10}"
        marker = "o" if len(curve.x) < 2 else None  # a single point draws no line without one
        name = curve.label
        if len(envs) == 1 and name.startswith(f"{envs[0]} (") and name.endswith(")"):
            name = name[len(envs[0]) + 2 : -1]  # the title names the env
        if curve.low is None:
            axes.plot(curve.x, curve.mean, color=color, linewidth=1.6, marker=marker, label=_wrap(name))
            continue
        axes.fill_between(curve.x, curve.low, curve.high, color=color, alpha=0.25, linewidth=0)
        full = curve.counts == curve.n_runs
        label = f"{name}: mean of {curve.n_runs} runs, " + ("band min–max" if curve.band == "minmax" else
                                                           f"band: {BANDS[curve.band]}")
        if full.all():
            axes.plot(curve.x, curve.mean, color=color, linewidth=1.8, marker=marker, label=_wrap(label))
            continue
        # Solid where every run is averaged, dashed where some have not started or have ended.
        # A dashed segment includes its solid neighbours so that the line is continuous.
        near_partial = ~full | np.convolve(~full, np.ones(3), mode="same").astype(bool)
        axes.plot(curve.x, np.where(full, curve.mean, np.nan), color=color, linewidth=1.8, marker=marker,
                  label=_wrap(label + " (dashed: fewer runs)"))
        axes.plot(curve.x, np.where(near_partial, curve.mean, np.nan), color=color, linewidth=1.8,
                  linestyle="--", marker=marker)
    axes.set_xlabel("environment steps")
    pretty = {
        "episode_return": "episode return (training batches)",
        "eval_return": "deterministic evaluation return",
    }.get(metric, metric)
    axes.set_ylabel(pretty + (f", {smooth}-iteration mean" if smooth > 1 else ""))
    n_runs = sum(curve.n_runs for curve in curves)
    default = f"TRPO learning curve{'s' if n_runs > 1 else ''} ({n_runs} run{'s' if n_runs != 1 else ''})"
    axes.set_title(title or (f"{', '.join(envs)}: {default}" if envs else default))
    axes.grid(True, alpha=0.3)
    figure.legend(loc="outside lower center", fontsize="small")  # below the axes: never over a curve
    axes.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    return figure


def _wrap(label: str, width: int = 100) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width)) or label


def write_plot(runs, output, *, metric="episode_return", smooth=1, title=None, dpi=120, references=(),
               band="minmax") -> list[Curve]:
    """Draws ``runs`` (:class:`Run` objects) into ``output``; returns the curves drawn.

    ``references``: ``(label, value)`` pairs drawn as dashed horizontal lines (e.g. a published score).
    """
    import matplotlib.pyplot as plt

    curves = group_curves(runs, metric=metric, smooth=smooth, band=band)
    figure = draw(curves, metric=metric, smooth=smooth, title=title, dpi=dpi)
    axes = figure.axes[0]
    for i, (label, value) in enumerate(references):
        axes.axhline(float(value), color=f"C{len(curves) + i}", linestyle="--", linewidth=1.2, label=label)
    if references:  # the legend again, now with the reference lines
        for legend in list(figure.legends):
            legend.remove()
        figure.legend(loc="outside lower center", fontsize="small")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        figure.savefig(output)
    finally:
        plt.close(figure)
    return curves


def plot_runs(
    run_dirs,
    output,
    *,
    metric: str = "episode_return",
    smooth: int = 1,
    title: str | None = None,
    dpi: int = 120,
    references=(),
    band: str = "minmax",
) -> str:
    """Draws ``metric`` against env steps for the runs in ``run_dirs`` and saves ``output`` (PNG, SVG, PDF).

    Args:
        run_dirs: run directories, or directories of run directories.
        output: image path; the format follows its extension.
        metric: a ``metrics.csv`` column (``episode_return``, ``eval_return``, ``kl``, ...).
        smooth: trailing moving-average window in iterations (1: none).
        title: figure title (default: the env ids and the run count).
        dpi: resolution of raster images.
        references: ``(label, value)`` pairs drawn as dashed horizontal lines.
        band: around the mean of several runs, ``"minmax"`` (the lowest to the highest run) or ``"ci95"``
            (a 95% percentile-bootstrap confidence interval of the mean, :func:`bootstrap_mean_interval`).

    Returns:
        ``output``.
    """
    runs = [load_run(path) for path in find_runs(run_dirs)]
    write_plot(runs, output, metric=metric, smooth=smooth, title=title, dpi=dpi, references=references, band=band)
    return os.fspath(output)
