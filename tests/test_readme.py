"""The README's Python snippets and its keras-trpo error examples, run as printed (issue 24, item 6).

Every ```python block of README.md is either run here or listed in NOT_RUN with the reason. A snippet runs
in a fresh namespace, in a temporary working directory, with nothing of keras_trpo patched; only the
training budget is cut, by the textual substitutions of its case (``epochs=97`` -> ``epochs=1``, ...), each
of which must occur exactly once. Snippets that continue an earlier one (they use its ``model``) run after
it in the same namespace. Catches: a snippet that no longer runs (a renamed argument, a missing import such
as the Dict example's ``import minigrid``), and error messages or preset lists that drifted from the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from keras_trpo import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Snippet:
    marker: str  #: a line that only this snippet holds
    substitutions: tuple = ()  #: (as printed, run with): each must occur exactly once

    def code(self) -> str:
        (code,) = [snippet for snippet in python_snippets() if self.marker in snippet]
        for printed, run in self.substitutions:
            assert code.count(printed) == 1, (self.marker, printed)
            code = code.replace(printed, run)
        return code


USAGE = Snippet('print(keras_trpo.evaluate(model, "CartPole-v1", episodes=10, seed=10_000))', (("epochs=97", "epochs=1"),))
MINIGRID_CNN = Snippet('model.export("saved_models/minigrid")',
                       (("steps=2048", "steps=256"), ("epochs=40", "epochs=1")))
MINIGRID_DICT = Snippet("def dict_cnn():")
FOR_KERAS_USERS = Snippet('callbacks.ExportBest("saved_models/cartpole")',
                          (("num_envs=8", "num_envs=2"), ("steps=1024", "steps=64"), ("epochs=97", "epochs=3")))
SCHEDULE = Snippet("callbacks.TrustRegionSchedule(lambda epoch: 0.02 if epoch < 100 else 0.01)",
                   (("epochs=200", "epochs=2"),))
EXPORT = Snippet('path = model.export("saved_models/cartpole")')
PRESETS = Snippet('presets.load_preset("Hopper-v5")', (("epochs=preset.iterations()", "epochs=1"),))
THREADS = Snippet("tf.config.threading.set_intra_op_parallelism_threads(1)")
MASKED = Snippet('path = model.export("saved_models/invalid_action")', (("epochs=20", "epochs=2"),))
RECURRENT = Snippet('path = model.export("saved_models/cartpole_novel")', (("epochs=80", "epochs=2"),))
SDE = Snippet("model = keras_trpo.TRPO.for_env(env, use_sde=True", (("epochs=100", "epochs=2"),))

#: Cases run in process: the snippets in order, in one fresh namespace.
IN_PROCESS = {
    "usage": [USAGE],
    "minigrid-cnn": [MINIGRID_CNN],
    "for-keras-users": [FOR_KERAS_USERS, SCHEDULE, EXPORT],  # the schedule and export examples use its model
    "presets": [PRESETS],
    "masked-actions": [MASKED],
    "policies-with-memory": [RECURRENT],
    "state-dependent-exploration": [SDE],
}
#: Cases run in a fresh process, with a check after the snippet: the Dict example, so that the env ids
#: another snippet registered (import minigrid) do not hide a missing import, and the thread setting, which
#: TensorFlow refuses once it has run an op.
SUBPROCESS = {
    "minigrid-dict": (MINIGRID_DICT, "assert isinstance(model, keras_trpo.TRPO)"),
    "thread-setting": (THREADS, "assert tf.config.threading.get_intra_op_parallelism_threads() == 1"),
}
#: Snippets not run, and why.
NOT_RUN = {
    "stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)": (
        "gRPC client: needs a running TF Serving server and tensorflow-serving-api; "
        "tests/test_export.py::test_tensorflow_model_server_serves_rest_and_grpc sends these requests"),
    'request.model_spec.name = "minigrid"': "gRPC request of a Dict model: needs a TF Serving server (as above)",
}


def test_every_python_snippet_is_run_or_says_why_not():
    """Catches: a new README snippet that the suite does not run."""
    markers = [s.marker for case in IN_PROCESS.values() for s in case]
    markers += [snippet.marker for snippet, _ in SUBPROCESS.values()] + list(NOT_RUN)
    for snippet in python_snippets():
        owners = [marker for marker in markers if marker in snippet]
        assert len(owners) == 1, f"README snippet matched by {owners}; add a case for it:\n{snippet}"
    assert len(python_snippets()) == len(markers)


@pytest.mark.parametrize("case", list(IN_PROCESS))
def test_python_snippet_runs(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # they write saved_models/, logs/, cartpole.keras, ...
    namespace = {"__name__": "__main__"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for snippet in IN_PROCESS[case]:
            exec(compile(snippet.code(), f"README.md ({case})", "exec"), namespace)
    # Python shows a DeprecationWarning only when the warned-about line is the user's own code (here
    # third-party code raises some about numpy 2); everything else a reader would see is listed here.
    # The thread setting warns because this test process's TensorFlow already runs; a reader's new process does
    # not (tests/test_cli_threads.py runs that in a subprocess).
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if not (issubclass(w.category, DeprecationWarning) and not w.filename.startswith("README.md"))
             and "TensorFlow already runs in this process" not in str(w.message)]
    assert shown == []
    if case == "for-keras-users":
        history = namespace["history"].history
        assert len(history["kl"]) == 3 and len(history["eval_return"]) == 2  # Evaluation(every=10): 1st and last
        assert os.path.isfile("cartpole.keras") and os.path.isfile("cartpole.csv")
        assert glob.glob("logs/cartpole/events.out.tfevents.*")
        versions = sorted(int(version) for version in os.listdir("saved_models/cartpole"))
        assert len(versions) >= 2 and versions == list(range(1, len(versions) + 1))  # ExportBest's, then export's
        assert namespace["path"] == os.path.abspath(f"saved_models/cartpole/{versions[-1]}")
        assert os.path.isfile(os.path.join(namespace["path"], "assets.extra", "tf_serving_warmup_requests"))
        assert os.path.getsize("cartpole.tflite") > 0 and os.path.getsize("cartpole.onnx") > 0
    if case == "masked-actions":  # for_env detected the masks, and the exported policy takes them
        import tensorflow as tf

        signature = tf.saved_model.load(namespace["path"]).signatures["serving_default"]
        assert namespace["model"].action_mask and "action_mask" in signature.structured_input_signature[1]
    if case == "policies-with-memory":  # the LSTM towers carry a state, and the exported signatures take it
        import tensorflow as tf

        model, state = namespace["model"], namespace["state"]
        assert model.recurrent_towers == (True, True) and sorted(state) == sorted(model.state_sizes())
        inputs = tf.saved_model.load(namespace["path"]).signatures["serving_default"].structured_input_signature[1]
        assert {"episode_start", *state} <= set(inputs)
    if case == "usage":
        assert len(capsys.readouterr().out.splitlines()[-1].split(",")) == 10  # the ten evaluation returns


@pytest.mark.parametrize("case", list(SUBPROCESS))
def test_python_snippet_runs_in_a_fresh_process(case, tmp_path):
    snippet, check = SUBPROCESS[case]
    result = subprocess.run([sys.executable, "-c", f"{snippet.code()}\n{check}\n"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]


def console_examples(heading: str) -> list[tuple[str, str]]:
    """``(command line, its output)`` for each ``$ keras-trpo ...`` of the console block after ``heading``."""
    text = README.read_text(encoding="utf-8").split(heading, 1)[1]
    block = text.split("```console\n", 1)[1].split("```", 1)[0]
    examples = []
    for line in block.splitlines():
        if line.startswith("$ "):
            examples.append([line[2:], []])
        else:
            examples[-1][1].append(line)
    return [(command, "\n".join(output) + "\n") for command, output in examples]


@pytest.mark.parametrize("heading", ["### Errors", "### Presets"])
def test_console_examples_print_what_the_readme_shows(heading, tmp_path, monkeypatch):
    """The error examples and the preset list, run through the keras-trpo entry point (none loads TensorFlow
    or trains). Catches: a README that lists 7 presets where the CLI lists 17, or a reworded error."""
    monkeypatch.chdir(tmp_path)  # runs/nope does not exist here
    examples = console_examples(heading)
    assert examples
    for command, printed in examples:
        argv = shlex.split(command)
        assert argv[0] == "keras-trpo", command
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(argv[1:])
            except SystemExit:  # argparse's usage errors
                pass
        assert out.getvalue() + err.getvalue() == printed, command
