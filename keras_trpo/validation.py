"""Argument and batch checks: one clear line naming the argument, what was expected and what came.

A leaf module: it imports nothing from keras_trpo. Every check runs in Python,
before any TensorFlow computation. Each rule is checked here once; callers with their own
error type (presets: ``PresetError``; the command line: argparse) wrap the message.

The argument checks import neither NumPy nor TensorFlow (``keras-trpo presets`` and ``--help``
use them without loading either); the batch checks and dtypes import TensorFlow when called.
"""

from __future__ import annotations

import math
import numbers
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

#: The arrays of a ``train_step`` batch, each with the batch dimension first.
BATCH_KEYS = ("observations", "actions", "advantages", "returns")
#: Optional scalar batch entries from ``Rollouts`` that ``train_step`` copies into its logs.
LOG_KEYS = ("episode_return", "episode_length", "episodes", "env_steps")


def _is_integer(value: object) -> bool:
    """A Python or NumPy integer; ``bool`` is not one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A Python or NumPy real number; ``bool`` is not one."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer_problem(value: object, minimum: int = 1) -> str | None:
    """What is wrong with ``value`` as an integer ``>= minimum`` (``bool`` is not one), or ``None``.

    The one integer rule: ``"must be an integer >= 1; got 0"``. :func:`check_int` raises it;
    presets and the command line, which raise their own errors, wrap it.
    """
    if not _is_integer(value) or value < minimum:  # type: ignore[operator]
        return f"must be an integer >= {minimum}; got {value!r}"
    return None


def check_int(name: str, value: object, minimum: int = 1, *, non_integer: type[Exception] = ValueError) -> int:
    """Returns ``value`` as an ``int`` if it is an integer ``>= minimum`` (``bool`` is not).

    Raises:
        ValueError: naming ``name``, the allowed range and the value received (``non_integer``,
            ValueError by default, for a value that is not an integer at all).
    """
    problem = integer_problem(value, minimum)
    if problem is not None:
        raise (ValueError if _is_integer(value) else non_integer)(f"{name} {problem}.")
    return int(value)  # type: ignore[call-overload]


def check_steps(steps: object, num_envs: int) -> int:
    """``steps`` as an int: an integer >= 1 (TypeError otherwise) that is a multiple of ``num_envs`` (ValueError)."""
    steps = check_int("steps", steps, non_integer=TypeError)
    if steps % num_envs:
        lower = max(num_envs, steps - steps % num_envs)
        raise ValueError(f"steps must be a multiple of the number of sub-environments ({num_envs}); got {steps}. "
                         f"Use steps={lower} or steps={lower + num_envs}.")
    return steps


def check_unit_interval(name: str, value: object) -> float:
    """Returns ``value`` as a float if it is a number in [0, 1].

    Raises:
        TypeError: ``value`` is not a real number (``bool`` and strings included).
        ValueError: ``value`` is outside [0, 1] or not finite.
    """
    if not _is_real(value):
        raise TypeError(f"{name} must be a number in [0, 1]; got {value!r}.")
    if not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}.")
    return float(value)  # type: ignore[arg-type]


def check_bool(name: str, value: object) -> bool:
    """Returns ``value`` if it is ``True`` or ``False``; TypeError naming ``name`` otherwise (``1`` is not)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return value


def layer_widths(name: str, value: object) -> tuple[int, ...] | None:
    """``value`` as a tuple of layer widths (``None`` stays ``None``); one line naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, (numbers.Integral, str)) or not hasattr(value, "__iter__"):
        hint = f": use ({value},) for one hidden layer" if isinstance(value, numbers.Integral) else ""
        raise ValueError(f"{name} must be a list of layer widths such as (64, 64); got {value!r}{hint}.")
    return tuple(check_int(f"{name}[{i}]", width) for i, width in enumerate(value))


_HYPERPARAMETER_RULES = {
    "max_kl": (lambda v: v > 0, "a number > 0"),
    "damping": (lambda v: v >= 0, "a number >= 0"),
    "cg_iterations": (lambda v: v >= 1, "an integer >= 1"),
    "backtrack_coefficient": (lambda v: 0 < v < 1, "a number in the open interval (0, 1)"),
    "backtrack_iterations": (lambda v: v >= 1, "an integer >= 1"),
    "fvp_fraction": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "value_epochs": (lambda v: v >= 0, "an integer >= 0"),
    "value_batch_size": (lambda v: v >= 1, "an integer >= 1"),
}
_INTEGER_HYPERPARAMETERS = {"cg_iterations", "backtrack_iterations", "value_epochs", "value_batch_size"}


def check_hyperparameters(**values) -> None:
    """Raises TypeError/ValueError naming the TRPO hyperparameter and its allowed range."""
    for name, value in values.items():
        check, allowed = _HYPERPARAMETER_RULES[name]
        if not _is_real(value) or (name in _INTEGER_HYPERPARAMETERS and not float(value).is_integer()):
            raise TypeError(f"{name} must be {allowed}; got {value!r} of type {type(value).__name__}.")
        if not math.isfinite(value) or not check(value):
            raise ValueError(f"{name} must be {allowed}; got {value!r}.")


def float_dtype() -> tf.DType:
    """The float dtype TRPO computes in: Keras' ``floatx`` (float32 by default, or float64)."""
    import keras
    import tensorflow as tf

    return tf.as_dtype(keras.config.floatx())


def check_float_policy(dtype: Any = None) -> None:
    """Raises ValueError unless ``dtype`` (or the global Keras dtype policy) computes in Keras' ``floatx``.

    TRPO's KL, Fisher-vector products, conjugate gradient and line search need one full-precision
    float type throughout: float32 (the default), or float64 with ``keras.config.set_floatx("float64")``.
    """
    import keras

    policy = keras.dtype_policies.get(dtype or keras.config.dtype_policy())
    floatx = keras.config.floatx()
    if floatx not in ("float32", "float64") or (policy.compute_dtype, policy.variable_dtype) != (floatx, floatx):
        raise ValueError(f"TRPO computes in float32 (or float64); the dtype policy is {policy.name!r} with floatx "
                         f"{floatx!r}. Its KL, Fisher-vector products and line search need full precision: call "
                         "keras.config.set_dtype_policy('float32') first (or set_floatx and set_dtype_policy 'float64').")


def unwrap(data: Any) -> Any:
    """``data``, or the dict Keras packed into a tuple: ``(x,)`` from ``fit``, ``(x, None, None)`` from ``train_on_batch``.

    Only empty ``y`` and ``sample_weight`` are dropped; a tuple with targets is returned as it is, and
    ``train_step`` refuses it (TRPO's batches carry their advantages and returns).
    """
    if isinstance(data, (tuple, list)) and data and all(extra is None for extra in data[1:]):
        return data[0]
    return data


def batch_signature(batch: Mapping) -> dict:
    """``{key: tf.TensorSpec([None, *per-sample shape], dtype)}`` of a dict of arrays or tensors.

    A dict entry (the observations of a ``Dict`` space) gets a dict of specs.
    """
    import numpy as np
    import tensorflow as tf

    signature = {}
    for key, value in batch.items():
        if isinstance(value, Mapping):
            signature[key] = batch_signature(value)
            continue
        value = value if hasattr(value, "dtype") else np.asarray(value)
        signature[key] = tf.TensorSpec((None, *tuple(value.shape)[1:]), tf.as_dtype(value.dtype))
    return signature


def batch_size(batch: Mapping) -> int:
    """Rows of a batch (its ``advantages``: every entry has as many)."""
    return len(batch["advantages"])


def check_batch_shape(name: str, shape: tuple, sample_shape: tuple, expected: str, hint: str = "") -> None:
    """Raises ValueError unless ``shape`` is ``[N, *sample_shape]``; ``None`` dims (symbolic tensors) pass.

    The one shape rule of batch arrays (``validate_batch`` and ``ObservationSpec.check``). Never
    reshapes: a wrong width would otherwise become extra rows. ``expected``: ``"expected ..."``.
    """
    if len(shape) != 1 + len(sample_shape) or any(s is not None and s != e for s, e in zip(shape[1:], sample_shape)):
        raise ValueError(f"{name} has shape {list(shape)}; {expected}{hint}.")


def check_rows(name: str, rows: int | None, n: int | None, other: str, expected: str) -> int | None:
    """The batch size so far: ``n`` (``None`` until known) checked against this array's ``rows``.

    The one rule that every array of a batch has the same N; ``other`` names the arrays before,
    with its verb (``"other entries have"``).
    """
    if rows is None:
        return n
    if n is not None and rows != n:
        raise ValueError(f"{name} has {rows} rows but {other} {n}; {expected}.")
    return rows


def validate_batch(data: Any, spec: Mapping, cast_actions: Callable[[Any], tf.Tensor]) -> dict:
    """Checks a ``train_step`` batch against ``spec`` and returns it as tensors.

    Args:
        data: a dict (or a 1-tuple holding one) with the :data:`BATCH_KEYS`, and
            optionally ``policy_version`` and the :data:`LOG_KEYS`.
        spec: ``{key: (per-sample shape, "integer" | "floating" | "mask")}`` (keys beyond :data:`BATCH_KEYS`,
            such as a masked model's ``action_masks``, are required too);
            ``spec["observations"]`` is the model's :class:`~keras_trpo.observations.ObservationSpec`,
            which checks the observations' structure and keeps their dtypes (``uint8`` stays ``uint8``).
        cast_actions: casts the actions to the dtype of the policy head.

    Returns:
        The batch: float32 tensors (actions cast by ``cast_actions``, observations in the
        observation space's dtypes), and
        ``policy_version`` (int64) and the log entries as scalars.

    Raises:
        TypeError: ``data`` is not a dict.
        ValueError: a missing key, a wrong shape or dtype, an empty batch, or
            samples counts that differ between keys.
    """
    data = unwrap(data)
    keys = (*BATCH_KEYS, *(key for key in spec if key not in BATCH_KEYS))  # and action_masks for a masked model
    expected_all = ", ".join(_describe_key(spec, k) for k in keys)
    if not isinstance(data, Mapping):
        raise TypeError(f"train_step expects a dict with {expected_all}; got {type(data).__name__}.")
    if "action_masks" in data and "action_masks" not in spec:
        raise ValueError("batch has 'action_masks' but the model does not mask actions (action_mask=False); build it "
                         "with action_mask=True (TRPO.for_env detects masks), or drop the key.")
    batch: dict = {}
    n = None
    for key in keys:
        if key not in data:
            raise ValueError(f"batch is missing key {key!r}; expected {expected_all}.")
        if key == "observations":
            n = spec[key].check(data[key], what="batch['observations']")
            batch[key] = spec[key].tensors(data[key])
        else:
            batch[key], n = _checked_array(key, data[key], spec, n, cast_actions)
    if n == 0:
        raise ValueError(f"batch is empty (N = 0); expected {expected_all} with N >= 1.")
    batch.update(_scalar_entries(data))
    return batch


def _describe_key(spec: Mapping, key: str) -> str:
    if key == "observations":
        return f"observations {spec[key].describe()}"
    shape, dtype = spec[key]
    return f"{key} [N" + "".join(f", {d}" for d in shape) + f"] ({dtype})"


def _checked_array(
    key: str, value: Any, spec: Mapping, n: int | None, cast_actions: Callable
) -> tuple[Any, int | None]:
    """One array entry of a batch as a tensor, and the batch size so far."""
    import numpy as np
    import tensorflow as tf

    if not hasattr(value, "dtype") or not hasattr(value, "shape"):
        value = np.asarray(value)
    name, expected = f"batch[{key!r}]", f"expected {_describe_key(spec, key)}"
    shape = tuple(value.shape)
    expected_shape, expected_dtype = spec[key]
    check_batch_shape(name, shape, expected_shape, expected)
    n = check_rows(name, shape[0], n, "batch['observations'] has", f"{expected} with the same N for every key")
    dtype = tf.as_dtype(value.dtype)
    ok = {
        "integer": dtype.is_integer or dtype.is_bool,
        "mask": dtype.is_integer or dtype.is_bool,
        "floating": dtype.is_floating,
    }[expected_dtype]
    if not ok:
        raise ValueError(f"{name} has dtype {dtype.name}; {expected}.")
    if expected_dtype == "mask":
        return tf.cast(value, tf.bool), n
    return (cast_actions(value) if key == "actions" else tf.cast(value, float_dtype())), n


def _scalar_entries(data: Mapping) -> dict:
    """``policy_version`` (int64) and the :data:`LOG_KEYS` present in ``data``, as scalars."""
    import tensorflow as tf

    scalars = {}
    for key in ("policy_version", *LOG_KEYS):
        if key in data:
            value = data[key]
            shape = tuple(getattr(value, "shape", ()))
            if len(shape) > 1 or shape == (0,):
                raise ValueError(
                    f"batch[{key!r}] must be a scalar or a vector repeating one value ([1] or [N]); "
                    f"got shape {list(shape)}."
                )
            value = tf.cast(value, tf.int64 if key == "policy_version" else float_dtype())
            scalars[key] = tf.reshape(value, [-1])[0]
    return scalars


# --------------------------------------------------------------------------
# fit's callbacks
# --------------------------------------------------------------------------
#: Log keys measured on the batch, i.e. on the weights before the update of their iteration
#: (keras_trpo.callbacks.best_policy explains what that means for "best model" callbacks).
BATCH_STATISTICS = tuple(key for key in LOG_KEYS if key != "env_steps")  # env_steps is a counter


def measured_before_update(key: object) -> bool:
    """True for a log key measured on the batch (:data:`BATCH_STATISTICS`), before the update."""
    return key in BATCH_STATISTICS


_warned: weakref.WeakSet[Any] = weakref.WeakSet()


def warn_about_keras_best_callbacks(callbacks: Any) -> None:
    """Warns (once per callback) about each Keras callback in ``callbacks`` that would keep the updated
    policy for a batch statistic: ``keras.callbacks.ModelCheckpoint(save_best_only=True)`` or
    ``keras.callbacks.EarlyStopping(restore_best_weights=True)`` monitoring one of :data:`BATCH_STATISTICS`."""
    import keras

    for callback in callbacks or ():
        monitor = getattr(callback, "monitor", None)
        # keras_trpo's own best callbacks (callbacks.best_policy.KeepsWeightsBeforeUpdate) keep the right weights.
        if hasattr(callback, "keeps_weights_before_update") or not measured_before_update(monitor):
            continue
        if isinstance(callback, keras.callbacks.ModelCheckpoint) and callback.save_best_only:
            name, does, ours = "ModelCheckpoint", "save_best_only=True) saves", "ModelCheckpoint"
        elif isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
            name, does, ours = "EarlyStopping", "restore_best_weights=True) restores", "EarlyStopping"
        else:
            continue
        if callback in _warned:
            continue
        _warned.add(callback)
        warnings.warn(
            f"keras.callbacks.{name}(monitor={monitor!r}, {does} the weights after the update of the best "
            f"iteration, not the policy that collected its batch ({monitor} is measured on the batch, before "
            f"the update). Use keras_trpo.callbacks.{ours}(monitor={monitor!r}, ...), which keeps the weights "
            "that collected the batch, or monitor eval_return (keras_trpo.callbacks.Evaluation), measured on "
            "the updated weights.",
            UserWarning,
            stacklevel=3,
        )


def warn_about_backup_without_rollouts(x: Any, callbacks: Any) -> None:
    """Warns (once per callback) about a ``keras.callbacks.BackupAndRestore`` with no ``RolloutsBackup`` of ``x``.

    It restores the model only: a resumed run's ``Rollouts`` (``x``, anything with ``get_state``) would
    start again from ``env_steps`` 0, fresh episodes and a fresh sampling RNG.
    """
    import keras

    callbacks = list(callbacks or ())
    if not hasattr(x, "get_state") or any(getattr(c, "rollouts", None) is x for c in callbacks):
        return
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.BackupAndRestore) and callback not in _warned:
            _warned.add(callback)
            warnings.warn(
                "keras.callbacks.BackupAndRestore restores the model but not the rollouts: a resumed run would "
                "restart env_steps, the episodes and the action sampling. Add "
                "keras_trpo.callbacks.RolloutsBackup(rollouts, backup_dir) after it, with the same backup_dir.",
                UserWarning,
                stacklevel=3,
            )
