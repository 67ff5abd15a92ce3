"""ONNX export of a TRPO policy: ``TRPO.export("policy.onnx", format="onnx")`` (issue 30).

One ``.onnx`` file holds one graph (ONNX has one graph per file), so the SavedModel's deterministic
signatures become the outputs of one graph, built by ``tf2onnx`` from
:class:`keras_trpo.export.ServingModule`'s own ``serving_default``, ``value`` and ``distribution_params``
functions (no second copy of the signature code). ``N`` is the batch size, free from call to call.

| inputs (the SavedModel's names and dtypes)         | outputs                                           |
|----------------------------------------------------|---------------------------------------------------|
| ``observations`` ``[N, *obs]`` in the space's dtype | ``actions``: ``serving_default``'s deterministic  |
|   (a ``Dict`` space: one input per key)            |   action (Box: the mean clipped to the bounds)    |
| masked: + ``action_mask`` int8 ``[N, n]``          | ``values`` float32 ``[N]``                        |
| recurrent: + ``policy_h``, ... float32 ``[N, u]``, | ``logits``, or ``mean`` and ``log_std`` (Box)     |
|   ``episode_start`` int8 ``[N]``                   | recurrent: + ``next_policy_h``, ...               |

- Observation normalization runs inside the graph: clients send raw observations.
- A recurrent model's next state is named ``next_<name>`` (``next_policy_h``): ONNX forbids an output named
  like an input. A client starts from zeros ``[N, u]`` (``u``: the input's second dimension) and feeds each
  ``next_<name>`` back as ``<name>``, with ``episode_start`` 1 where an episode starts (that row's state is
  zeroed first), as with the SavedModel.
- Not in the graph: ``sample`` and ``log_prob`` (a seeded sampler has no ONNX op for TF's stateless
  random ops); sample from ``logits`` or ``mean``/``log_std`` in the client if needed.

Running it needs only ``onnxruntime`` (``pip install "keras-trpo[onnx]"``); writing it needs ``tf2onnx``
and ``onnx``. docs/serving.md has a usage example.
"""

from __future__ import annotations

import contextlib
import importlib
import logging

import tensorflow as tf

from keras_trpo import export, export_paths

#: The ONNX opset written: every op the policies need exists there, and runtimes from 2022 on read it.
OPSET = 17
#: The prefix of a recurrent model's next-state outputs (``next_policy_h``).
NEXT_STATE_PREFIX = "next_"
INSTALL_HINT = 'pip install "keras-trpo[onnx]"'
#: The graph's first outputs; the distribution parameters and then the next state follow, each by name (log_std before mean).
FIRST_OUTPUTS = ("actions", "values")
_ONNX_DOMAINS = ("", "ai.onnx")


def export_onnx(model, filepath, *, overwrite=False, verbose=False, opset=OPSET, **kwargs) -> str:
    """Writes ``model``'s deterministic policy, value and distribution parameters as one ONNX graph.

    Args:
        model: a built :class:`keras_trpo.TRPO`.
        filepath: the ``.onnx`` file to write (its directory is created if missing).
        overwrite: replace an existing file.
        verbose: print the path written.
        opset: the ONNX opset (default :data:`OPSET`).

    Returns:
        The absolute path of the written file.

    Raises:
        ImportError: ``tf2onnx`` or ``onnx`` is missing (one line: the pip command).
        TypeError, ValueError: a bad argument or model; FileExistsError: the file exists and not ``overwrite``.
        RuntimeError: ``tf2onnx`` left an op it could not convert (a custom network's op, say).
    """
    path = _check_arguments(filepath, overwrite, verbose, opset, kwargs)
    tf2onnx, onnx = _require_converters()
    export.check_model(model)  # not built, not a TRPO: the SavedModel export's one-line errors
    module = export.ServingModule(model)
    function = _one_graph_function(module)
    with _quiet("tf2onnx", unless=verbose):  # its per-op ERROR logs would bury _check_converted's one line
        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=opset)
    _order_outputs_and_name_batch(proto)
    _check_converted(onnx, proto, model)
    export_paths.write_file(proto.SerializeToString(), path, overwrite=overwrite)
    if verbose:
        print(f"Saved the TRPO policy as ONNX at {path}")
    return path


def _check_arguments(filepath, overwrite, verbose, opset, kwargs) -> str:
    export_paths.check_file_options("onnx", kwargs, "overwrite=, verbose= and opset=", overwrite=overwrite,
                                    verbose=verbose)
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an int >= 13 (the ONNX opset, default {OPSET}); got {opset!r}.")
    return export_paths.resolve_file_path(filepath, suffix=export_paths.SUFFIXES["onnx"], format="onnx", overwrite=overwrite)


def _require_converters():
    """``(tf2onnx, onnx)``, or one line naming the missing package and the pip command."""
    modules = []
    for name in ("tf2onnx", "onnx"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise ImportError(f"format='onnx' needs {name}, which is not installed: {INSTALL_HINT}") from None
    return tuple(modules)


@contextlib.contextmanager
def _quiet(logger_name: str, *, unless: bool):
    """Silences the ``logger_name`` logger inside the block (unless ``unless``), then restores its level."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    if not unless:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_graph_function(module: export.ServingModule):
    """A ``tf.function`` of the signatures' inputs returning every output of the ONNX graph, by name.

    It calls the module's ``serving_default``, ``value`` and ``distribution_params`` (each returns the
    same next state, taken from ``serving_default``); tf2onnx inlines them and merges their common ops.
    """
    specs = module.serving_default.input_signature

    def outputs(*inputs):
        served = dict(module.serving_default(*inputs))
        actions = served.pop("actions")
        params = {k: v for k, v in module.distribution_params(*inputs).items() if k not in served}
        next_state = {NEXT_STATE_PREFIX + k: v for k, v in served.items()}
        return {"actions": actions, "values": module.value(*inputs)["values"], **params, **next_state}

    return tf.function(outputs, input_signature=specs, autograph=False)


def _order_outputs_and_name_batch(proto) -> None:
    """Outputs in the module docstring's order (tf2onnx sorts them by name); the batch dimension named ``N``."""
    graph = proto.graph
    rank = {name: i for i, name in enumerate(FIRST_OUTPUTS)}
    outputs = sorted(graph.output, key=lambda o: (rank.get(o.name, len(rank)), o.name.startswith(NEXT_STATE_PREFIX),
                                                  o.name))
    copies = [type(o)() for o in outputs]
    for copy, original in zip(copies, outputs):
        copy.CopyFrom(original)
    del graph.output[:]
    graph.output.extend(copies)
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"


def _check_converted(onnx, proto, model) -> None:
    """Refuses a graph that ONNX runtimes cannot run: tf2onnx keeps an op it cannot convert as a TF op."""
    foreign = sorted({f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in proto.graph.node
                      if node.domain not in _ONNX_DOMAINS})
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        foreign = foreign or [first_line]
    if foreign:
        raise RuntimeError(f"tf2onnx could not convert model {model.name!r} to ONNX ({'; '.join(foreign)}); a custom "
                           "network may use a TensorFlow op without an ONNX counterpart. Export it with "
                           "format='tf_saved_model' or 'litert' instead (docs/serving.md).")
