"""Loading TensorFlow for the commands that need it (train, evaluate, export, info) without its
C++ start-up log on the terminal.

While it loads and looks for a GPU, TensorFlow 2.21 writes 7-10 lines to the process's stderr
from C++ (absl logging, before ``TF_CPP_MIN_LOG_LEVEL`` applies): "oneDNN custom operations are
on", "Could not find cuda drivers", the CPU-instructions note and, on a machine without a GPU,
``E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)``: TensorFlow probing for a CUDA GPU,
harmless on a CPU-only machine. A graph that transposes ``uint8`` tensors (image observations)
adds ``E0000 ... oneDNN supports DT_UINT8 only on platforms with AVX-512. Falling back to the default
Eigen-based implementation``, logged once per process: start-up runs one such graph so that it is said
with the others rather than in the middle of training. :func:`load_tensorflow` points file descriptor 2 at a temporary
file while TensorFlow, Keras and keras_trpo load and the devices are listed, then restores it, so
Python warnings and errors after start-up reach stderr as usual. If loading fails, the captured
lines are written to stderr before the error. ``--tf-logs`` leaves stderr alone.
"""

from __future__ import annotations

import os
import sys
import tempfile

from keras_trpo.cli.common import CLIError


def load_tensorflow(show_logs: bool = False, intra_op_threads: int | None = None, strict: bool = True) -> None:
    """Imports TensorFlow, lists its devices and loads keras_trpo's model; hides their C++ log
    lines unless ``show_logs``. Nothing is hidden once TensorFlow is imported (in-process callers).

    ``intra_op_threads`` (``None``: TensorFlow's default) is set before any TensorFlow op runs
    (:func:`keras_trpo.training.set_intra_op_threads`; ``strict=False``, for a preset's value: a warning
    instead of the error).

    Raises:
        CLIError: ``intra_op_threads`` is given (``strict``) but this process's TensorFlow already runs with
            another setting.
    """
    if show_logs or "tensorflow" in sys.modules:
        _set_intra_op_threads(intra_op_threads, strict)
        _load()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    captured = tempfile.TemporaryFile()
    loaded = False
    try:
        os.dup2(captured.fileno(), 2)
        _set_intra_op_threads(intra_op_threads, strict)
        _load()
        loaded = True
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if not loaded:  # show what TensorFlow said before the error that follows
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", errors="replace"))
            sys.stderr.flush()
        captured.close()


def _set_intra_op_threads(intra_op_threads, strict):
    """Sets TensorFlow's intra-op pool before any op runs (nothing, and no import, for ``None``)."""
    if intra_op_threads is None:
        return
    from keras_trpo import training

    try:
        training.set_intra_op_threads(intra_op_threads, strict=strict)
    except training.ThreadSettingError as error:
        raise CLIError(f"--intra-op-threads {intra_op_threads}: TensorFlow already runs in this process with "
                       f"{error.current or 'its default'} intra-op threads; run keras-trpo in a new process") from None


def _load():
    import tensorflow as tf

    tf.config.list_physical_devices()  # the CUDA probe (cuInit) happens here
    tf.function(tf.transpose, autograph=False)(tf.zeros([2, 3], tf.uint8))  # oneDNN's uint8 note
    import keras_trpo

    keras_trpo.TRPO  # noqa: B018 - Keras, TensorFlow Probability and the model (registers TRPO for load_model)
