"""The :class:`Preset` data class: one preset's values, validated, overridable, and the objects it builds.

:func:`keras_trpo.presets.load_preset` reads a preset file into a ``Preset`` (the file format is
described in :mod:`keras_trpo.presets`); its environment settings are checked and imported by
:mod:`keras_trpo.presets.environments`. Nothing here imports TensorFlow until a model or
rollouts are built.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from keras_trpo.presets import environments
from keras_trpo.presets.errors import PresetError
from keras_trpo.validation import check_bool, check_int, check_unit_interval

_TOP_LEVEL_KEYS = (
    "env_id",
    "status",
    "notes",
    "total_steps",
    "num_envs",
    "vectorization_mode",
    "env_modules",
    "env_kwargs",
    "wrappers",
    "rollouts",
    "model",
    "optimizer",
    "eval_episodes",
    "intra_op_threads",
    "max_kl_final",
)
#: Keys a preset file may leave out, with the value they then take.
_OPTIONAL_KEYS: dict[str, Any] = {"status": "untuned", "notes": "", "env_modules": [], "env_kwargs": {}, "wrappers": [],
                  "intra_op_threads": None, "max_kl_final": None}
_ROLLOUT_KEYS = ("steps", "gamma", "gae_lambda", "normalize_rewards")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A complete set of training hyperparameters for one environment.

    Build one with :func:`keras_trpo.presets.load_preset`; change values with :meth:`override`.

    Example:

    ```python
    preset = load_preset("Pendulum-v1").override({"model.max_kl": 0.01, "num_envs": 4})
    ```
    """

    name: str
    env_id: str | None
    status: str
    notes: str
    total_steps: int
    num_envs: int
    vectorization_mode: str
    rollouts: dict
    model: dict
    optimizer: dict
    eval_episodes: int
    env_modules: list = dataclasses.field(default_factory=list)
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    wrappers: list = dataclasses.field(default_factory=list)
    intra_op_threads: int | None = None
    max_kl_final: float | None = None
    source: str | None = None

    @classmethod
    def from_dict(cls, data: dict, *, name: str, source: str | None = None) -> "Preset":
        """Validates ``data`` (the content of a preset file) and returns the preset."""
        if not isinstance(data, dict):
            raise PresetError(f"preset {name!r} must be a JSON object; got {type(data).__name__}")
        unknown = sorted(set(data) - set(_TOP_LEVEL_KEYS))
        missing = [key for key in _TOP_LEVEL_KEYS if key not in data and key not in _OPTIONAL_KEYS]
        if unknown:
            raise PresetError(f"preset {name!r} has unknown keys {unknown}; allowed: {list(_TOP_LEVEL_KEYS)}")
        if missing:
            raise PresetError(f"preset {name!r} is missing keys {missing}")
        for key in ("rollouts", "model", "optimizer"):
            if not isinstance(data[key], dict):
                raise PresetError(f"{name}: {key} must be a JSON object; got {data[key]!r}")
        rollouts = {"normalize_rewards": False, **data["rollouts"]}
        if "steps" in rollouts:
            rollouts["steps"] = _as_int(f"{name}: rollouts.steps", rollouts["steps"])
        preset = cls(
            name=name,
            env_id=data["env_id"],
            status=str(data.get("status", _OPTIONAL_KEYS["status"])),
            notes=str(data.get("notes", _OPTIONAL_KEYS["notes"])),
            total_steps=_as_int(f"{name}: total_steps", data["total_steps"]),
            num_envs=_as_int(f"{name}: num_envs", data["num_envs"]),
            vectorization_mode=data["vectorization_mode"],
            rollouts=rollouts,
            model=dict(data["model"]),
            optimizer=copy.deepcopy(data["optimizer"]),
            eval_episodes=_as_int(f"{name}: eval_episodes", data["eval_episodes"]),
            env_modules=copy.deepcopy(data.get("env_modules", _OPTIONAL_KEYS["env_modules"])),
            env_kwargs=copy.deepcopy(data.get("env_kwargs", _OPTIONAL_KEYS["env_kwargs"])),
            wrappers=copy.deepcopy(data.get("wrappers", _OPTIONAL_KEYS["wrappers"])),
            intra_op_threads=data.get("intra_op_threads", _OPTIONAL_KEYS["intra_op_threads"]),
            max_kl_final=data.get("max_kl_final", _OPTIONAL_KEYS["max_kl_final"]),
            source=source,
        )
        preset.validate()
        return preset

    def validate(self) -> None:
        """Raises :class:`PresetError` naming the first invalid value."""
        if self.vectorization_mode not in ("sync", "async"):
            raise PresetError(f"{self.name}: vectorization_mode must be 'sync' or 'async'; got {self.vectorization_mode!r}")
        environments.check_env_settings(self.name, self.env_modules, self.env_kwargs, self.wrappers)
        if sorted(self.rollouts) != sorted(_ROLLOUT_KEYS):
            raise PresetError(f"{self.name}: rollouts must have exactly the keys {list(_ROLLOUT_KEYS)}; got {sorted(self.rollouts)}")
        with _as_preset_error():
            check_bool(f"{self.name}: rollouts.normalize_rewards", self.rollouts["normalize_rewards"])
            for key in ("gamma", "gae_lambda"):
                check_unit_interval(f"{self.name}: rollouts.{key}", self.rollouts[key])
        threads = self.intra_op_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise PresetError(f"{self.name}: intra_op_threads must be a positive integer or null (TensorFlow's own "
                              f"setting); got {threads!r}")
        final = self.max_kl_final
        if final is not None and (isinstance(final, bool) or not isinstance(final, (int, float)) or not final > 0
                                  or final == float("inf")):
            raise PresetError(f"{self.name}: max_kl_final must be a finite number > 0 (the trust region at the last "
                              f"iteration) or null (a constant model.max_kl); got {final!r}")
        if self.rollouts["steps"] % self.num_envs:
            raise PresetError(
                f"{self.name}: rollouts.steps ({self.rollouts['steps']}) must be a multiple of num_envs ({self.num_envs})"
            )
        allowed = _model_arguments()
        unknown = sorted(set(self.model) - allowed)
        if unknown:
            raise PresetError(f"{self.name}: unknown model arguments {unknown}; TRPO takes {sorted(allowed)}")
        if not isinstance(self.optimizer, dict) or "class_name" not in self.optimizer:
            raise PresetError(
                f"{self.name}: optimizer must be an object like "
                '{"class_name": "Adam", "config": {"learning_rate": 0.001}}'
            )

    # ------------------------------------------------------------------
    def kl_schedule(self, iterations: int, start: float):
        """``epoch -> max_kl``, linear from ``start`` (the built model's ``max_kl``) at the first iteration to
        ``max_kl_final`` at the last of ``iterations`` (a single iteration keeps ``start``), for
        :class:`keras_trpo.callbacks.TrustRegionSchedule`; None without ``max_kl_final``."""
        if self.max_kl_final is None:
            return None
        final = float(self.max_kl_final)
        return lambda epoch: start + (final - start) * min(epoch, iterations - 1) / max(iterations - 1, 1)

    def to_dict(self) -> dict:
        """The preset as stored in a file (plus ``name`` and ``source``), JSON-serializable."""
        data = {key: copy.deepcopy(getattr(self, key)) for key in _TOP_LEVEL_KEYS}
        return {"name": self.name, **data, "source": self.source}

    def override(self, values: dict) -> "Preset":
        """Returns a copy with ``values`` applied; keys are dotted paths into the preset.

        Only existing keys can be set (``"model.max_kl"``, ``"rollouts.steps"``,
        ``"optimizer.config.learning_rate"``, ``"num_envs"``, ...), so that a typo
        is an error rather than a silently ignored setting; ``env_kwargs.<name>`` may
        add an environment argument.

        Setting a network replaces the default MLP: ``{"model.policy_network": "nature_cnn"}``
        also sets ``model.hidden_units`` to ``None`` unless ``values`` sets it too (and setting
        ``hidden_units`` clears ``policy_network`` the same way; likewise for the value network),
        since TRPO takes one or the other.

        Raises:
            PresetError: an unknown key or an invalid resulting preset.
        """
        data = {key: copy.deepcopy(getattr(self, key)) for key in _TOP_LEVEL_KEYS}
        for dotted, value in values.items():
            parts = dotted.split(".")
            node = data
            for depth, part in enumerate(parts):
                last = depth == len(parts) - 1
                known = isinstance(node, dict) and (
                    part in node
                    or (parts[0] == "model" and depth == 1 and part in _model_arguments())
                    or (parts[0] == "env_kwargs" and depth == 1)
                )
                if not isinstance(node, dict) or not known:
                    raise PresetError(f"unknown preset key {dotted!r}; {_describe_keys(data)}")
                if last:
                    node[part] = value
                else:
                    node = node[part]
        for network, units in (("policy_network", "hidden_units"), ("value_network", "value_hidden_units")):
            for given, other in ((network, units), (units, network)):
                if values.get(f"model.{given}") is not None and f"model.{other}" not in values:
                    data["model"][other] = None  # the one just set replaces the other
        return Preset.from_dict(data, name=self.name, source=self.source)

    def iterations(self, total_steps: int | None = None) -> int:
        """TRPO iterations (``fit`` epochs) for ``total_steps`` env steps (the preset's by default); at least 1.

        ``iterations() * rollouts["steps"]`` env steps are trained: ``total_steps`` rounded down to whole
        iterations, the total that ``keras-trpo presets`` and ``train`` show)."""
        total = self.total_steps if total_steps is None else int(total_steps)
        return max(1, total // int(self.rollouts["steps"]))

    # ------------------------------------------------------------------
    def load_env_dependencies(self) -> list:
        """Imports ``env_modules`` and the wrapper classes; returns the wrappers as ``make_vec`` takes them.

        Raises:
            PresetError: a module or class cannot be imported (naming the pip extra that installs it,
                e.g. ``pip install "keras-trpo[minigrid]"``), or a wrapper does not take its ``kwargs``.
        """
        return environments.load_env_dependencies(self.name, self.env_modules, self.wrappers)

    def make_env(self, env_id: str | None = None, num_envs: int | None = None, vectorization_mode: str | None = None,
                 extra_wrappers=(), **kwargs):
        """``gymnasium.make_vec`` with the preset's ``num_envs``, ``vectorization_mode``, ``env_kwargs``
        (updated with ``kwargs``) and ``wrappers`` (then ``extra_wrappers``, e.g.
        :func:`keras_trpo.evaluation.video_wrapper`), after importing its ``env_modules``.

        Raises:
            PresetError: see :meth:`load_env_dependencies`.
            gymnasium.error.Error: gymnasium cannot create the environment.
        """
        import gymnasium

        env_id = env_id or self.env_id
        if env_id is None:
            raise PresetError(f"preset {self.name!r} is not tied to an environment; pass env_id")
        wrappers = self.load_env_dependencies()
        return gymnasium.make_vec(
            env_id,
            num_envs=int(num_envs or self.num_envs),
            vectorization_mode=vectorization_mode or self.vectorization_mode,
            wrappers=[*wrappers, *extra_wrappers],
            **{**copy.deepcopy(self.env_kwargs), **kwargs},
        )

    def build_model(self, env, seed: int | None = None):
        """A :class:`keras_trpo.TRPO` for ``env`` with the preset's arguments, compiled with its optimizer."""
        import keras

        from keras_trpo.model import TRPO

        model = TRPO.for_env(env, **self.model, seed=seed)
        model.compile(optimizer=keras.optimizers.get(copy.deepcopy(self.optimizer)))
        return model

    def build_rollouts(self, env, model, seed: int | None = None):
        """A :class:`keras_trpo.Rollouts` with the preset's ``steps``, ``gamma`` and ``gae_lambda``."""
        from keras_trpo.rollouts import Rollouts

        return Rollouts(env, model, **self.rollouts, seed=seed)


#: Keyword arguments of :class:`keras_trpo.TRPO` a preset may set (``seed`` comes from the caller).
#: Kept here, not read from the signature, so that loading a preset does not import TensorFlow;
#: ``tests/test_cli.py`` checks that it matches ``TRPO.__init__``.
MODEL_ARGUMENTS = (
    "policy_network",
    "value_network",
    "hidden_units",
    "value_hidden_units",
    "activation",
    "max_kl",
    "damping",
    "cg_iterations",
    "backtrack_coefficient",
    "backtrack_iterations",
    "fvp_fraction",
    "fisher_product",
    "normalize_advantages",
    "value_epochs",
    "value_batch_size",
    "log_std_init",
    "normalize_observations",
    # null: TRPO.for_env detects the env's action masks (keras_trpo.masking); true requires them, false ignores them.
    "action_mask",
    # null: detect a recurrent network (keras_trpo.recurrent); true gives the networks an LSTM.
    "recurrent",
    "sequence_length",
    # state-dependent exploration for Box actions (keras_trpo.exploration)
    "use_sde",
    "sde_sample_freq",
)


def _model_arguments() -> set:
    return set(MODEL_ARGUMENTS)


def _describe_keys(data: dict) -> str:
    keys: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys.extend(f"{key}.{sub}" for sub in value)
        else:
            keys.append(key)
    return "known keys: " + ", ".join(keys)


def _as_int(name: str, value: object) -> int:
    """``value`` as an int >= 1; integral floats (``1e6`` in JSON) are accepted."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    with _as_preset_error():
        return check_int(name, value)


@contextlib.contextmanager
def _as_preset_error() -> Iterator[None]:
    """The checks of :mod:`keras_trpo.validation` raise :class:`PresetError` here, with their message."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise PresetError(str(error)) from None
