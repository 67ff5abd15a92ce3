"""``keras-trpo plot`` and keras_trpo.plotting on run directories written here (config.json and
metrics.csv as ``keras-trpo train`` writes them), without TensorFlow."""

import csv
import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_trpo import cli, plotting  # noqa: E402

C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours


def fake_run(path, *, seed=0, steps=None, iterations=97, batch=1024, rows=None, start=20.0):
    """A run directory of CartPole-v1 with the preset CartPole-v1: ``keras-trpo train CartPole-v1 --seed
    SEED [--steps STEPS]`` with ``rows`` iterations in metrics.csv (fewer than ``iterations``: interrupted)."""
    path.mkdir(parents=True)
    overrides = {} if steps is None else {"total_steps": steps}
    config = {
        "command": f"keras-trpo train CartPole-v1 --seed {seed}" + (f" --steps {steps}" if steps else ""),
        "env_id": "CartPole-v1", "preset": "CartPole-v1", "preset_status": "tuned", "overrides": overrides,
        "seed": seed, "iterations": iterations, "planned_env_steps": iterations * batch,
        "total_steps": steps or 100_000, "num_envs": 8,
        "rollouts": {"normalize_rewards": False, "steps": batch, "gamma": 0.99, "gae_lambda": 0.97},
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=2))
    rows = iterations if rows is None else rows
    with open(path / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "env_steps", "episode_return", "kl"])
        for epoch in range(rows):
            writer.writerow([epoch, float((epoch + 1) * batch), min(500.0, start + 10.0 * epoch + seed), 0.01])
    return path


def lines_of(figure):
    """``{colour: [Line2D, ...]}`` of the data lines (not the legend's)."""
    lines = {}
    for line in figure.axes[0].get_lines():
        lines.setdefault(line.get_color(), []).append(line)
    return lines


def drawn_x(lines):
    """The env steps where the lines draw something (a finite y)."""
    xs = [np.asarray(line.get_xdata(), float)[np.isfinite(np.asarray(line.get_ydata(), float))] for line in lines]
    return np.unique(np.concatenate(xs))


def columns_with(png_path, rgb, tolerance=12):
    with Image.open(png_path) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    hit = np.all(np.abs(pixels - rgb) <= tolerance, axis=2)
    return np.flatnonzero(hit.any(axis=0)), pixels.shape[1]


def test_plot_of_runs_of_different_lengths_draws_every_run_over_its_whole_range(tmp_path, capsys):
    """Issue 15, item 3: a 1-iteration ``--steps 100`` run beside two full runs cut every curve to the
    shortest run (x-axis 980-1,080 with no line) while the command reported success."""
    full = [fake_run(tmp_path / f"seed{seed}", seed=seed) for seed in (0, 1)]
    short = fake_run(tmp_path / "short", seed=2, steps=100, iterations=1)
    image = tmp_path / "mix.png"
    assert cli.main(["plot", str(full[0]), str(full[1]), str(short), "-o", str(image)]) == 0
    # The mean line (C0) of the full runs crosses the plot: its pixels span most of the image's width
    # (the legend's sample line alone is ~5% of it).
    columns, width = columns_with(image, C0)
    assert columns.size and columns.max() - columns.min() > 0.7 * width
    out = capsys.readouterr().out
    assert out == (
        f"Wrote {image}: episode_return against env steps for "
        "CartPole-v1 (preset CartPole-v1, 99,328 env steps): 2 runs (mean, min-max band), 1,024-99,328 env steps; "
        "CartPole-v1 (preset CartPole-v1, 1,024 env steps): 1 run, 1,024 env steps\n"
    )


def test_the_drawn_lines_span_the_data_and_the_title_names_the_env(tmp_path):
    runs = [plotting.load_run(fake_run(tmp_path / f"seed{seed}", seed=seed)) for seed in (0, 1)]
    runs.append(plotting.load_run(fake_run(tmp_path / "short", seed=2, steps=100, iterations=1)))
    curves = plotting.group_curves(runs)
    figure = plotting.draw(curves)
    try:
        assert figure.axes[0].get_title() == "CartPole-v1: TRPO learning curves (3 runs)"
        lines = lines_of(figure)
        np.testing.assert_array_equal(drawn_x(lines["C0"]), 1024.0 * np.arange(1, 98))
        (single,) = lines["C1"]  # the 1-iteration run: one point, drawn as a dot
        assert list(single.get_xdata()) == [1024.0] and single.get_marker() == "o"
        low, high = figure.axes[0].get_xlim()
        assert low <= 1024 and high >= 99_328
    finally:
        plt.close(figure)


def test_an_interrupted_run_does_not_cut_the_others_short(tmp_path, capsys):
    """Same label (same planned length), one run stopped after 30 of 97 iterations: the mean goes on over
    the runs that continue, dashed, and the command says so."""
    for seed in (0, 1):
        fake_run(tmp_path / "runs" / f"seed{seed}", seed=seed)
    fake_run(tmp_path / "runs" / "seed2", seed=2, rows=30)
    image = tmp_path / "curve.png"
    assert cli.main(["plot", str(tmp_path / "runs"), "-o", str(image)]) == 0
    assert capsys.readouterr().out == (
        f"Wrote {image}: episode_return against env steps for CartPole-v1 (preset CartPole-v1, 99,328 env steps): "
        "3 runs (mean, min-max band), 1,024-99,328 env steps; 1 run ends early (at 30,720), "
        "dashed where not every run is averaged\n"
    )
    runs = [plotting.load_run(path) for path in plotting.find_runs([tmp_path / "runs"])]
    (curve,) = plotting.group_curves(runs)
    np.testing.assert_array_equal(curve.counts, [3] * 30 + [2] * 67)
    # Up to 30,720 the mean of the three seeds; after it, of seeds 0 and 1.
    returns = np.minimum(500.0, 20.0 + 10.0 * np.arange(97) + np.arange(3)[:, None])
    expected = np.concatenate([returns[:, :30].mean(axis=0), returns[:2, 30:].mean(axis=0)])
    np.testing.assert_allclose(curve.mean, expected)
    figure = plotting.draw([curve])
    try:
        solid, dashed = lines_of(figure)["C0"]
        assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
        np.testing.assert_array_equal(drawn_x([solid]), 1024.0 * np.arange(1, 31))
        np.testing.assert_array_equal(drawn_x([dashed]), 1024.0 * np.arange(30, 98))  # joined at 30,720
    finally:
        plt.close(figure)


def test_runs_of_one_label_are_interpolated_onto_the_union_of_their_steps():
    def fake(label, steps, returns):
        return plotting.Run(path=label, label=label, config={}, columns={
            "env_steps": np.asarray(steps, float), "episode_return": np.asarray(returns, float)})

    runs = [
        fake("a", [100, 200, 300, 400], [1.0, np.nan, 3.0, 4.0]),  # NaN: no episode finished
        fake("a", [100, 200, 300], [3.0, 4.0, 5.0]),
        fake("b", [100, 200], [7.0, 8.0]),
    ]
    a, b = plotting.group_curves(runs)
    assert (a.label, a.n_runs, b.label, b.n_runs, b.low, b.high) == ("a", 2, "b", 1, None, None)
    np.testing.assert_array_equal(a.x, [100, 200, 300, 400])  # every step that some run reaches
    np.testing.assert_array_equal(a.counts, [2, 2, 2, 1])
    np.testing.assert_allclose(a.mean, [2.0, 3.0, 4.0, 4.0])  # run 1 interpolated at 200: 2.0
    np.testing.assert_allclose(a.low, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(a.high, [3.0, 4.0, 5.0, 4.0])
    assert a.early_ends() == [300.0]
    np.testing.assert_array_equal(b.mean, [7.0, 8.0])
    np.testing.assert_allclose(plotting.group_curves(runs[2:], smooth=2)[0].mean, [7.0, 7.5])


@pytest.mark.parametrize(
    "config,label",
    [
        ({"env_id": "CartPole-v1", "preset": "CartPole-v1", "overrides": {"total_steps": 100},
          "iterations": 1, "planned_env_steps": 1024}, "CartPole-v1 (preset CartPole-v1, 1,024 env steps)"),
        ({"env_id": "CartPole-v1", "preset": "p", "overrides": {"rollouts.steps": 256}, "iterations": 8,
          "rollouts": {"steps": 256}}, "CartPole-v1 (preset p, 2,048 env steps, rollouts.steps=256)"),
        ({"env_id": "Pendulum-v1"}, "Pendulum-v1"),
    ],
)
def test_the_run_label_holds_the_planned_env_steps(config, label):
    assert plotting.run_label(config) == label


def test_the_ci95_band_is_the_bootstrap_interval_of_the_mean():
    """Against normal theory (independent of the bootstrap): for 400 runs drawn from N(mu, sigma), the 95%
    interval of the mean is mu_hat +- 1.96 sigma_hat / sqrt(n), up to the resampling error of 2,000 draws (~5%
    of the half-width; the bound below is 15%). Where fewer runs reach a step, the interval uses those.
    Catches: the min-max band drawn for ci95 (~7x wider), the runs' spread for the mean's (20x), a 68% level
    (half-width 1.0 instead of 1.96 sigma/sqrt(n)), and the runs that do not reach a step resampled as NaN."""
    rng = np.random.default_rng(1)
    values = rng.normal(3.0, 2.0, size=400)

    def fake(value, steps):
        return plotting.Run(path="r", label="a", config={}, columns={
            "env_steps": np.asarray(steps, float), "episode_return": np.full(len(steps), value)})

    runs = [fake(v, [100, 200] if i < 200 else [100]) for i, v in enumerate(values)]
    (curve,) = plotting.group_curves(runs, band="ci95")
    assert curve.band == "ci95" and "95% bootstrap CI of the mean" in plotting.describe(curve)
    for point, reached in ((0, values), (1, values[:200])):
        half = 1.96 * reached.std(ddof=1) / np.sqrt(len(reached))
        assert curve.mean[point] == pytest.approx(reached.mean())
        assert curve.low[point] == pytest.approx(reached.mean() - half, abs=0.15 * half)
        assert curve.high[point] == pytest.approx(reached.mean() + half, abs=0.15 * half)
    (again,) = plotting.group_curves(runs, band="ci95")
    np.testing.assert_array_equal(again.low, curve.low)  # seeded: the same runs draw the same band
    with pytest.raises(ValueError, match=r"^band must be one of \['ci95', 'minmax'\]; got 'iqr'\.$"):
        plotting.group_curves(runs, band="iqr")


def test_keras_trpo_plot_band_ci95_names_its_band(tmp_path, capsys):
    runs = [fake_run(tmp_path / f"s{seed}", seed=seed, rows=5) for seed in range(3)]
    assert cli.main(["plot", *map(str, runs), "-o", str(tmp_path / "ci.png"), "--band", "ci95"]) == 0
    assert "3 runs (mean, 95% bootstrap CI of the mean)" in capsys.readouterr().out
    assert (tmp_path / "ci.png").is_file()
