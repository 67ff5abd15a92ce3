"""``keras-trpo plot``: learning curves of run directories (keras_trpo.plotting; no TensorFlow)."""

from __future__ import annotations

import re

from keras_trpo import plotting
from keras_trpo.cli.common import CLIError


def cmd_plot(args) -> int:
    if not re.search(r"\.(png|svg|pdf|jpg|jpeg)$", args.output, re.IGNORECASE):
        raise CLIError(f"-o must name a .png, .svg, .pdf or .jpg file; got {args.output!r}")
    try:
        run_dirs = plotting.find_runs(args.runs)
        runs = [plotting.load_run(path) for path in run_dirs]
        plotting.plot_runs(run_dirs, args.output, metric=args.metric, smooth=args.smooth, title=args.title)
    except plotting.RunError as error:
        raise CLIError(str(error)) from None
    labels = {}
    for run in runs:
        labels.setdefault(run.label, []).append(run.path)
    described = "; ".join(
        f"{label}: {len(paths)} run{'s' if len(paths) > 1 else ''}{' (mean, min-max band)' if len(paths) > 1 else ''}"
        for label, paths in labels.items()
    )
    print(f"Wrote {args.output}: {args.metric} against env steps for {described}")
    return 0
