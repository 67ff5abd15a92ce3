"""The type check: mypy on the public API and the core, as configured in pyproject.toml ([tool.mypy]).

TensorFlow, TensorFlow Probability and Keras ship no type information, so their names are ``Any``
to mypy (``ignore_missing_imports``); what is checked is keras_trpo's own annotated code and its
calls into gymnasium and numpy, which are typed. mypy is in the ``test`` extra.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: The modules (and packages) mypy checks, relative to the repository.
CHECKED = [
    "keras_trpo/model.py",
    "keras_trpo/forward.py",
    "keras_trpo/trainer.py",
    "keras_trpo/feeding.py",
    "keras_trpo/update.py",
    "keras_trpo/critic.py",
    "keras_trpo/ops.py",
    "keras_trpo/distribute.py",
    "keras_trpo/rollouts.py",
    "keras_trpo/buffer.py",
    "keras_trpo/evaluation.py",
    "keras_trpo/networks.py",
    "keras_trpo/callbacks",
    "keras_trpo/policies.py",
    "keras_trpo/acting.py",
    "keras_trpo/actor_critic.py",
    "keras_trpo/observations.py",
    "keras_trpo/validation.py",
    "keras_trpo/spaces.py",
    "keras_trpo/errors.py",
]

#: A user's line with a wrong annotation on a checked function's result: mypy must report it, or the
#: configuration has stopped checking keras_trpo (``ignore_errors``, ``follow_imports = "skip"``, ...).
PROBE = """\
from keras_trpo.evaluation import episode_quota

quota: str = episode_quota(4, 2)
"""


def test_mypy_passes_on_the_checked_modules(tmp_path):
    missing = [path for path in CHECKED if not (ROOT / path).exists()]
    assert not missing, f"{missing} no longer exist: update CHECKED in {pathlib.Path(__file__).name}"
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
         str(tmp_path / "cache"), "--no-error-summary", "--show-error-codes", *CHECKED, str(probe)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if re.search(r":\d+: error:", line)]
    ours = [line for line in errors if not line.startswith(str(probe))]
    assert not ours and result.returncode in (0, 1), f"mypy found type errors:\n{output}"
    assert any(line.startswith(f"{probe}:3:") and "[assignment]" in line for line in errors), (
        f"mypy did not report the probe's wrong annotation (quota: str = a list[int]):\n{output}"
    )
