"""``keras-trpo plot``: learning curves of run directories (keras_trpo.plotting; no TensorFlow)."""

from __future__ import annotations

import re

from keras_trpo.cli.common import CLIError


def cmd_plot(args) -> int:
    from keras_trpo import plotting  # imports numpy, which 'keras-trpo --help' does not need

    if not re.search(r"\.(png|svg|pdf|jpg|jpeg)$", args.output, re.IGNORECASE):
        raise CLIError(f"-o must name a .png, .svg, .pdf or .jpg file; got {args.output!r}")
    try:
        runs = [plotting.load_run(path) for path in plotting.find_runs(args.runs)]
        curves = plotting.write_plot(runs, args.output, metric=args.metric, smooth=args.smooth, title=args.title,
                                     band=args.band)
    except plotting.RunError as error:
        raise CLIError(str(error)) from None
    described = "; ".join(plotting.describe(curve) for curve in curves)
    print(f"Wrote {args.output}: {args.metric} against env steps for {described}")
    return 0
