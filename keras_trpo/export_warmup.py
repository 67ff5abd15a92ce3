"""TF Serving's warmup file for an exported policy: ``model.export(path, warmup=True)`` (or ``warmup=env``).

**Why.** TensorFlow initializes lazily: the first call of each signature of a freshly loaded SavedModel
(graph optimization, kernel selection, memory pools) is orders of magnitude slower than the calls after
it, and without warmup a client pays for that on its first request to every signature. TF Serving runs
the requests of ``<version>/assets.extra/tf_serving_warmup_requests`` while it loads the version, before
it makes the version AVAILABLE (TF Serving's "SavedModel Warmup" guide: a TFRecord file of
``PredictionLog`` records, at most 1000). A record that fails fails the warmup, and with it the load of
that version, so every request here must run: tests/test_export_warmup.py runs each one through the loaded
SavedModel and through the TF1 session path that TF Serving uses.

**What the file holds.** One ``PredictionLog`` (``predict_log.request``: a ``PredictRequest`` naming its
``model_spec.signature_name``, inputs as ``TensorProto``) per signature of the SavedModel and per batch size
in :data:`BATCH_SIZES`: ``serving_default``, ``sample``, ``value``, ``log_prob``, ``distribution_params``,
and ``get_initial_state`` for a recurrent model: 10 records (12 recurrent). The inputs of each request are
those of the signature's own ``structured_input_signature`` (names, dtypes, shapes), so the file cannot
disagree with the SavedModel:

- the observations (``observations``, or one input per ``Dict`` key), in the space's dtypes (``uint8``
  images, ``int64`` ``Discrete``): ``warmup=True`` draws them from the model's observation space with the
  seed :data:`SEED` (the same file at every export); ``warmup=env`` (a gymnasium ``Env`` or ``VectorEnv``)
  takes them from a few ``env.reset(seed=SEED + k * num_envs)``, which resets the env (it is not closed);
- ``action_mask`` (a masked model): all actions legal, or the env's masks (read as in training:
  :class:`keras_trpo.masking.MaskReader`);
- ``actions`` (``log_prob``): drawn from the action space with the seed :data:`SEED`, legal under the mask;
- ``seed`` (``sample``): ``[SEED, SEED]``; a recurrent model's state: zeros, ``episode_start``: ones;
  ``batch_size`` (``get_initial_state``): the batch size.

Writing the file needs ``tensorflow-serving-api`` (the ``serving`` extra: ``pip install "keras-trpo[serving]"``)
for the ``PredictionLog`` protos; serving it needs nothing more than TF Serving.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import gymnasium
import numpy as np
import tensorflow as tf

from keras_trpo import masking

#: Where TF Serving looks for the warmup file, inside a version directory.
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
#: The batch sizes of the requests: one request per signature at each.
BATCH_SIZES = (1, 8)
#: The seed of the observations drawn from the space, the actions, the ``sample`` seed and the env resets.
SEED = 0
#: TF Serving's limit on the number of warmup records.
MAX_RECORDS = 1000
SERVING_EXTRA = 'pip install "keras-trpo[serving]"'


def check_warmup(warmup: Any) -> None:
    """Raises, before anything is computed or written, unless ``warmup`` is usable.

    ``False``: nothing to check. ``True`` or an env: ``tensorflow-serving-api`` must be importable.

    Raises:
        TypeError: ``warmup`` is neither a bool nor a gymnasium ``Env`` / ``VectorEnv``.
        ImportError: ``tensorflow-serving-api`` is not installed (one line naming the extra).
    """
    if warmup is False:
        return
    if warmup is not True and not isinstance(warmup, (gymnasium.Env, gymnasium.vector.VectorEnv)):
        raise TypeError(
            f"warmup must be True (requests from observations drawn from the observation space), False, or a "
            f"gymnasium Env or VectorEnv whose resets give the observations; got {warmup!r} "
            f"({type(warmup).__name__})."
        )
    _prediction_log_pb2()


def _prediction_log_pb2():
    try:
        from tensorflow_serving.apis import prediction_log_pb2
    except ImportError as error:
        raise ImportError(
            "warmup= writes TF Serving's PredictionLog records with tensorflow-serving-api, which is not "
            f"installed (the 'serving' extra): {SERVING_EXTRA}"
        ) from error
    return prediction_log_pb2


def warmup_requests(model: Any, signatures: dict, warmup: Any, *, start_key: str) -> list:
    """The ``PredictionLog`` records of ``model``'s warmup file, one per signature and batch size.

    Args:
        model: the exported :class:`keras_trpo.TRPO`.
        signatures: ``{signature name: concrete function}``, what ``tf.saved_model.save`` is given: each
            request holds exactly the inputs of its function's ``structured_input_signature``.
        warmup: ``True`` (observations drawn from the observation space) or a gymnasium env (from its resets).
        start_key: the recurrent signatures' episode-start input (``keras_trpo.export.START_KEY``).

    Raises:
        ValueError: the env's observations (or masks) do not fit the model, before anything is written.
    """
    prediction_log_pb2 = _prediction_log_pb2()
    rows = max(BATCH_SIZES)
    batch = _observations(model, warmup, rows)
    batch["actions"] = _actions(model.action_space, batch.get(masking.MASK_KEY) if model.action_mask else None, rows)
    records = []
    for n in BATCH_SIZES:
        values = {"seed": np.array([SEED, SEED]), "batch_size": np.array(n),
                  **{name: value[:n] for name, value in batch.items()}}
        if model.is_recurrent:
            values.update({name: np.zeros((n, units)) for name, units in model.state_sizes().items()})
            values[start_key] = np.ones(n)
        records += [_request(prediction_log_pb2, name, function, values) for name, function in signatures.items()]
    assert len(records) <= MAX_RECORDS, f"{len(records)} warmup records; TF Serving reads at most {MAX_RECORDS}"
    return records


def write_warmup_file(version_dir: str, records: list) -> str:
    """Writes ``records`` as ``<version_dir>/assets.extra/tf_serving_warmup_requests``; returns its path."""
    path = os.path.join(version_dir, WARMUP_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path


def _request(prediction_log_pb2, signature_name: str, function, values: dict):
    """One ``PredictionLog``: a ``PredictRequest`` to ``signature_name`` with ``function``'s inputs, from ``values``."""
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.signature_name = signature_name
    for spec in tf.nest.flatten(function.structured_input_signature):
        value = np.asarray(values[spec.name]).astype(spec.dtype.as_numpy_dtype, copy=False)
        if not spec.shape.is_compatible_with(value.shape):
            raise AssertionError(f"warmup input {spec.name!r} of {signature_name!r} has shape {list(value.shape)}; "
                                 f"the signature takes {spec.shape}")
        request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(value))
    return log


def _observations(model: Any, warmup: Any, rows: int) -> dict:
    """``{input name: [rows, ...]}``: the observation inputs, and a masked model's ``action_mask`` (int8)."""
    spec = model.observation_spec
    if warmup is True:
        space = copy.deepcopy(model.observation_space)  # seeded without touching the model's own space
        space.seed(SEED)
        samples = [space.sample() for _ in range(rows)]
        batch = spec.structure(np.stack([s[k] if spec.structured else s for s in samples]) for k in spec.keys)
        masks = np.ones((rows, masking.mask_size(model.action_space)), bool) if model.action_mask else None
    else:
        batch, masks = _env_observations(model, warmup, rows)
    names = [s.name for s in tf.nest.flatten(spec.tensor_specs(space_dtypes=True))]
    inputs = dict(zip(names, spec.flatten(batch)))
    if masks is not None:
        inputs[masking.MASK_KEY] = masks.astype(np.int8)  # a model observing its mask entry: that input, the mask
    return inputs


def _env_observations(model: Any, env: Any, rows: int) -> tuple:
    """``(observations [rows, ...] as the model takes them, masks [rows, n] or None)`` from a few resets of ``env``."""
    vector = env if isinstance(env, gymnasium.vector.VectorEnv) else gymnasium.vector.SyncVectorEnv([lambda: env])
    reader = masking.MaskReader(vector, model.action_space) if model.action_mask else None
    spec, parts, masks = model.observation_spec, [], []
    for k in range(math.ceil(rows / vector.num_envs)):
        raw, _ = vector.reset(seed=SEED + k * vector.num_envs)
        if reader is not None:
            masks.append(reader(raw))
        observations, _ = masking.split(raw, None, spec.keys, masked=False)  # without an entry the model does not see
        spec.check(observations, what="the warmup env's observations")
        parts.append(observations)
    batch = spec.map(lambda leaf, *arrays: np.concatenate(arrays)[:rows], *parts)
    return batch, (np.concatenate(masks)[:rows] if reader is not None else None)


def _actions(action_space: gymnasium.spaces.Space, masks: Any, rows: int) -> np.ndarray:
    """``[rows, *action shape]`` actions drawn from ``action_space`` (seeded), each legal under its row of ``masks``."""
    space = copy.deepcopy(action_space)
    space.seed(SEED)
    if masks is None:
        return np.stack([space.sample() for _ in range(rows)])
    if isinstance(space, gymnasium.spaces.Discrete):
        return np.stack([space.sample(mask=row) for row in masks.astype(np.int8)])
    splits = np.cumsum(space.nvec)[:-1]  # MultiDiscrete: one mask per component
    return np.stack([space.sample(mask=tuple(np.split(row, splits))) for row in masks.astype(np.int8)])
