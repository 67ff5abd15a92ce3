"""The ``keras-trpo`` command line: its argument parser and ``main``, which runs a command and turns
errors into one line on stderr. The commands live in train.py, models.py (evaluate, export, info),
plot.py and presets.py.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from collections.abc import Callable

from keras_trpo.cli.common import PROG, CLIError
from keras_trpo.cli.models import EXPORT_FORMATS, cmd_evaluate, cmd_export, cmd_info
from keras_trpo.cli.plot import cmd_plot
from keras_trpo.cli.presets import cmd_presets
from keras_trpo.cli.train import cmd_train
from keras_trpo.presets import PresetError
from keras_trpo.validation import integer_problem

#: ``add_parser`` of the subcommands, with the options every command shares: makes one command's parser.
_NewCommand = Callable[..., argparse.ArgumentParser]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) so that bad input reads as one message."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, the rule and message of
    :func:`keras_trpo.validation.integer_problem` (argparse names the option)."""

    def parse(text: str) -> int:
        try:
            value: object = int(text)
        except ValueError:
            value = text
        problem = integer_problem(value, minimum)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return int(text)

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)
_seed = _non_negative_int


def _assignment(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. model.max_kl=0.01); got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value  # a bare string such as relu
    return key.strip(), parsed


_TF_LOGS_HELP = ("show TensorFlow's start-up log (C++ lines such as 'oneDNN custom operations are on' and, "
                 "without a GPU, 'failed call to cuInit'), hidden by default")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Trust Region Policy Optimization with Keras: train, evaluate, export, plot, inspect.",
        epilog="Run 'keras-trpo COMMAND --help' for the options of a command. Docs: README.md, section 'Command line'.",
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of unexpected errors")
    parser.add_argument("--tf-logs", action="store_true", help=_TF_LOGS_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Every command also takes --debug after its name (keras-trpo train ... --debug), not shown in its help.
    hidden_debug = _Parser(add_help=False)
    hidden_debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    new_command = functools.partial(commands.add_parser, parents=[hidden_debug])
    for add_command in (_add_train, _add_evaluate, _add_export, _add_plot, _add_info, _add_presets):
        add_command(new_command)
    return parser


def _add_tf_logs(command: argparse.ArgumentParser) -> None:
    """--tf-logs after the command's name, for the commands that load TensorFlow."""
    command.add_argument("--tf-logs", action="store_true", default=argparse.SUPPRESS, help=_TF_LOGS_HELP)


def _add_imports(command: argparse.ArgumentParser) -> None:
    """--import MODULE, for the commands that load a .keras file."""
    command.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                         help="import MODULE before loading, for a .keras file whose networks are your own registered "
                         "classes (@keras.saving.register_keras_serializable): a module name (my_nets, found on the "
                         "Python path or in the current directory) or a file (path/to/my_nets.py); repeatable")


def _add_train(new_command: _NewCommand) -> None:
    train = new_command(
        "train",
        help="train a policy; writes a run directory",
        description="Train TRPO on a gymnasium environment with a hyperparameter preset. Writes a run "
        "directory: config.json (resolved configuration), metrics.csv (per-iteration metrics), "
        "tensorboard/ (TensorBoard logs), model.keras (Keras checkpoint), saved_model/1 (SavedModel "
        "for TF Serving) and results.json (final deterministic evaluation).",
    )
    train.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id, e.g. CartPole-v1, "
                       "MiniGrid-Empty-8x8-v0, ALE/Pong-v5")
    train.add_argument("--preset", metavar="NAME", help="preset name or JSON file (default: the preset named "
                       "after ENV_ID or made for it, else 'default'); see 'keras-trpo presets'")
    train.add_argument("--steps", type=_positive_int, metavar="N", help="total env steps (default: the preset's)")
    train.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed (default 0)")
    train.add_argument("--num-envs", type=_positive_int, metavar="K", help="parallel envs (default: the preset's)")
    train.add_argument("--batch", type=_positive_int, metavar="N",
                       help="env steps per TRPO iteration, a multiple of --num-envs (default: the preset's)")
    train.add_argument("--set", type=_assignment, action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset value, e.g. --set model.max_kl=0.01 --set model.hidden_units=[32,32] "
                       "--set model.policy_network=nature_cnn --set env_kwargs.frameskip=1 (VALUE is JSON, "
                       "or a string if it is not)")
    train.add_argument("--out", metavar="DIR", help="run directory to create (default: runs/ENV_ID-PRESET-seedS-TIME)")
    train.add_argument("--eval-episodes", type=_positive_int, metavar="N", help="episodes of the final evaluation")
    train.add_argument("--eval-every", type=_non_negative_int, default=0, metavar="N",
                       help="also evaluate every N iterations during training, log eval_return and export the "
                       "best policy to DIR/best_saved_model (default 0: only after training)")
    train.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                       help="save model.keras every N iterations (default: a tenth of the run)")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                       help="0: one progress line per tenth of the run (default); 1: Keras progress bar; "
                       "2: one Keras line per iteration")
    train.add_argument("--intra-op-threads", type=_positive_int, metavar="N",
                       help="threads TensorFlow splits one op over (default: the preset's intra_op_threads: 1 for "
                       "the environments' 64x64 MLP presets; TensorFlow's own, one per core, for the CNN presets "
                       "and the default preset; --set "
                       "intra_op_threads=null for TensorFlow's own). It changes the run's floats (README, Speed on a CPU)")
    _add_tf_logs(train)
    train.set_defaults(func=cmd_train)


def _add_evaluate(new_command: _NewCommand) -> None:
    evaluate = new_command(
        "evaluate",
        help="evaluate a SavedModel or .keras policy (its mode, or sampled actions with --stochastic)",
        description="Run the deterministic policy of a SavedModel (its serving_default signature), a .keras "
        "file or a run directory on ENV_ID and print the episode returns (with --stochastic: sampled actions). The environment is made as in "
        "training: with the env_modules, env_kwargs and wrappers of --preset, else of the run directory "
        "the model is in, else of the preset of ENV_ID.",
    )
    evaluate.add_argument("path", metavar="PATH", help="SavedModel directory (or its base directory), .keras file or run directory")
    evaluate.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id to evaluate on, e.g. CartPole-v1 "
                          "(the environment the policy was trained on)")
    evaluate.add_argument("--preset", metavar="NAME", help="preset name or JSON file whose environment settings "
                          "(env_modules, env_kwargs, wrappers) make ENV_ID (default: the run directory's, else the "
                          "preset of ENV_ID)")
    evaluate.add_argument("--episodes", type=_positive_int, default=10, metavar="N", help="episodes (default 10)")
    evaluate.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the first reset (default 0), "
                          "and of the sampler with --stochastic")
    evaluate.add_argument("--stochastic", action="store_true",
                          help="sample actions instead of taking the mode: a .keras file or a run directory (its "
                          "model.keras) samples with NumPy's generator seeded with --seed, as the final evaluation of "
                          "keras-trpo train does (with --seed and --episodes as in results.json, it repeats "
                          "stochastic_eval_returns); a SavedModel samples through its sample signature")
    evaluate.add_argument("--video", metavar="FILE",
                          help="also record the first episode to this .mp4 (gymnasium RecordVideo; the episodes and "
                          'returns are those without --video; needs moviepy: pip install "keras-trpo[video]")')
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_imports(evaluate)
    _add_tf_logs(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def _add_export(new_command: _NewCommand) -> None:
    export = new_command(
        "export",
        help="export a .keras checkpoint for serving: a TF Serving SavedModel, LiteRT (.tflite) or ONNX",
        description="Export CHECKPOINT (a .keras file or a run directory). --format saved_model (the default): a "
        "SavedModel for TF Serving; OUT is a model base directory (the next integer version is created in it) or a "
        "version directory such as out/1. --format litert or onnx: OUT is the file to write (policy.tflite, "
        "policy.onnx). Optional packages: --warmup needs tensorflow-serving-api (pip install \"keras-trpo[serving]\"), "
        "--format onnx tf2onnx and onnx (keras-trpo[onnx]); a .tflite runs with ai-edge-litert (keras-trpo[litert]). "
        "docs/serving.md says which format carries sampling, state, masks and normalization.",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help=".keras file, or run directory holding model.keras")
    export.add_argument("out", metavar="OUT", help="saved_model: model base directory (gets the next integer version) "
                        "or version directory (e.g. saved_models/cartpole/3); litert, onnx: the file to write "
                        "(e.g. policy.tflite, policy.onnx)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="saved_model",
                        help="saved_model (default): TF Serving SavedModel; litert: .tflite for the LiteRT interpreter; "
                        "onnx: .onnx for ONNX Runtime")
    export.add_argument("--warmup", action="store_true",
                        help="saved_model only: also write TF Serving's warmup requests "
                        "(assets.extra/tf_serving_warmup_requests: each signature at batch sizes 1 and 8, observations "
                        "drawn from the observation space with a fixed seed), which TF Serving runs when it loads the "
                        'version, so no client pays for the first, cold call; needs pip install "keras-trpo[serving]"')
    export.add_argument("--overwrite", action="store_true", help="replace an existing version directory (or file)")
    _add_imports(export)
    _add_tf_logs(export)
    export.set_defaults(func=cmd_export)


def _add_plot(new_command: _NewCommand) -> None:
    plot = new_command(
        "plot",
        help="plot learning curves of run directories",
        description="Plot return against env steps from the metrics.csv of each run: one line per run, or the "
        "mean with a min-max band (or --band ci95) when several runs share a label (env id, preset, planned env steps and "
        "overrides: runs that differ only in their seed). Where a run of a label ends early, the others "
        "go on (dashed line).",
    )
    plot.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or directories holding runs")
    plot.add_argument("-o", "--output", required=True, metavar="FILE", help="image to write (.png, .svg, .pdf)")
    plot.add_argument("--metric", default="episode_return", help="metrics.csv column to plot (default episode_return)")
    plot.add_argument("--smooth", type=_positive_int, default=1, metavar="K", help="moving average over K iterations")
    plot.add_argument("--title", help="figure title")
    plot.add_argument("--band", choices=["minmax", "ci95"], default="minmax",
                      help="band around the mean of runs that share a label: lowest to highest run (minmax, the "
                      "default) or a 95%% percentile-bootstrap confidence interval of the mean (ci95)")
    plot.set_defaults(func=cmd_plot)


def _add_info(new_command: _NewCommand) -> None:
    info = new_command(
        "info",
        help="list the signatures of a SavedModel (or describe a .keras model)",
        description="For a SavedModel: every signature with its input and output names, dtypes and shapes. "
        "For a .keras file: spaces, hyperparameters and weights. For a run directory: its configuration "
        "and its SavedModel.",
    )
    info.add_argument("path", metavar="PATH", help="SavedModel directory (or its base directory), .keras file or "
                      "run directory")
    _add_imports(info)
    _add_tf_logs(info)
    info.set_defaults(func=cmd_info)


def _add_presets(new_command: _NewCommand) -> None:
    presets = new_command("presets", help="list the hyperparameter presets, or show one")
    presets.add_argument("name", nargs="?", metavar="NAME", help="show this preset as JSON")
    presets.set_defaults(func=cmd_presets)


def main(argv=None) -> int:
    """Console-script entry point: returns the exit status."""
    parser = build_parser()
    argv = [os.fspath(a) for a in (sys.argv[1:] if argv is None else argv)]
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        status = args.func(args)
    except CLIError as error:
        _fail(str(error))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as error:  # noqa: BLE001 - one line instead of a traceback; --debug re-raises
        if args.debug:
            raise
        if isinstance(error, PresetError):
            _fail(str(error))
        else:
            _fail(f"{type(error).__name__}: {error} (run with --debug for the traceback)")
        return 1
    return int(status or 0)


def _fail(message: str):
    one_line = re.sub(r"\s+", " ", str(message)).strip()
    if len(one_line) > 600:
        one_line = one_line[:597] + "..."
    sys.stdout.flush()
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
