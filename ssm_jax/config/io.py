"""Configs as JSON: nested frozen dataclasses written with their class names, read back only as registered classes.

    @register_config
    @dataclasses.dataclass(frozen=True)
    class MyConfig: ...

    text = config_to_json(config)   # {"__dataclass__": "pkg.mod:MyConfig", "fields": {...}}
    config = config_from_json(text) # equal to `config`

A file names its classes, and a name outside the registry is refused with one line: reading a config imports no
module outside `ssm_jax` (the library module a name points to is imported, so its classes register) and calls no
constructor outside the registry. Tuples are kept apart from lists. A class that moved module is read under its
old name too (`MOVED`).

A stored config is complete or refused: a missing or unknown field is one line naming it. Files of an older layout
still load: a class that was renamed or merged maps to the function that rebuilds it (`register_renamed`), and a
registered class stored with one of its `LEGACY_FIELDS` (names only the older layout used) is rebuilt by its
`from_fields(dict)` classmethod; both receive the stored fields as plain values. A class whose fields or values
were renamed since (the glossary's words, `ssm_jax.types`) has an `upgrade_fields(fields) -> fields` classmethod
that rewrites its stored fields (still encoded) to today's before they are checked; a renamed field is renamed in
every class (`RENAMED_FIELDS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

_CONFIG_CLASSES: dict[str, type] = {}
_RENAMED: dict[str, Callable[[dict], Any]] = {}
_FAMILY = "ssm_jax.config.family"
MOVED = {
    **{f"ssm_jax.configs:{name}": f"{_FAMILY}:{name}" for name in (
        "ExperimentConfig", "RunConfig", "WorldModelRunConfig", "SinusoidRunConfig", "InContextRunConfig",
    )},
    "ssm_jax.train_config:TrainerConfig": "ssm_jax.trainers.meta_rl:TrainerConfig",
    "ssm_jax.train_config:EvalConfig": "ssm_jax.trainers.protocol:EvalConfig",
    "ssm_jax.train_in_context:InContextConfig": "ssm_jax.trainers.in_context:InContextConfig",
    "ssm_jax.train_world_model:WorldModelTrainerConfig": "ssm_jax.trainers.world_model:WorldModelTrainerConfig",
    "ssm_jax.train_regression:RegressionTrainerConfig": "ssm_jax.trainers.regression:RegressionTrainerConfig",
    **{f"experiments.replay:{name}": f"ssm_jax.config.studies:{name}"
       for name in ("ReplayArgs", "ReplayWorldModelArgs")},
    "experiments.budget_study:StudyArgs": "ssm_jax.config.studies:StudyArgs",
    "experiments.levers:LeverArgs": "ssm_jax.config.studies:LeverArgs",
    "experiments.sweep:SweepArgs": "ssm_jax.config.studies:SweepArgs",
    "experiments.benchmark:Args": "ssm_jax.config.studies:BenchmarkArgs",
}  # fmt: skip
"""Classes that moved module (issue 47's packages), by their stored name: a file names the old module, and the
class is read from the new one."""
RENAMED_FIELDS = {
    "adapt_steps": "adapt_rounds", "later_steps_lr_scale": "later_rounds_lr_scale", "env_name": "env",
    "env_backend": "backend", "env_goals": "goals", "eval_steps": "adapt_rounds", "meta_batch": "tasks_per_batch",
    "train_inner_steps": "inner_steps", "scratch_steps": "oracle_iterations", "scratch_lr": "oracle_lr",
}  # fmt: skip
"""Fields renamed since a file was written (the glossary's one word per thing, `ssm_jax.types`), old name -> new, in
every config class alike."""
ConfigClass = TypeVar("ConfigClass", bound=type)


def _class_name(cls: type) -> str:
    module = cls.__module__
    if module == "__main__":  # run as `python -m pkg.mod`: the importable name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"{module}:{cls.__qualname__}"


def register_config(cls: ConfigClass) -> ConfigClass:
    """Class decorator: a dataclass that configs may hold, and that `config_from_json` may rebuild."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__qualname__} is not a dataclass")
    _CONFIG_CLASSES[_class_name(cls)] = cls
    return cls


def register_renamed(name: str, rebuild: Callable[[dict], Any]) -> None:
    """Configs stored under the class name `name` ("module:QualName", no longer a class) are rebuilt by
    `rebuild(fields)`, `fields` being the stored fields as plain values (nested configs as dicts)."""
    _RENAMED[name] = rebuild


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = _class_name(type(value))
        if name not in _CONFIG_CLASSES:
            raise TypeError(f"cannot store {name} in a config: not a registered config class (register_config)")
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": name, "fields": fields}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store config value {value!r} of type {type(value).__name__} in a config")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__dataclass__" in value:
        name, fields = value["__dataclass__"], value["fields"]
        name = MOVED.get(name, name)
        if name in _RENAMED:
            return _RENAMED[name](_plain(fields))
        module = name.split(":")[0]
        if name not in _CONFIG_CLASSES and module.startswith("ssm_jax."):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)  # the library's own module registers its classes when imported
        if name not in _CONFIG_CLASSES:
            raise ValueError(f"the config names {name}, which is not a registered ssm_jax config class")
        cls = _CONFIG_CLASSES[name]
        own = {f.name for f in dataclasses.fields(cls) if f.init}
        if set(fields) & getattr(cls, "LEGACY_FIELDS", frozenset()):
            return cls.from_fields(_plain(fields))
        fields = {RENAMED_FIELDS.get(name, name): value for name, value in fields.items()}
        if hasattr(cls, "upgrade_fields"):  # values, or fields that moved section, since the file was written
            fields = cls.upgrade_fields(fields)
        added = getattr(cls, "ADDED_FIELDS", {})  # fields newer than the stored config: what it ran with
        fields = {**{k: v for k, v in added.items() if k not in fields}, **fields}
        missing, unknown = sorted(own - set(fields)), sorted(set(fields) - own)
        problems = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has unknown {', '.join(unknown)}"] if unknown else []
        )
        if problems:
            raise ValueError(f"the stored {cls.__qualname__} {' and '.join(problems)}")
        return cls(**{k: _decode(v) for k, v in fields.items()})
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """Stored values with every nested config as a dict of its fields (no class is looked up or built)."""
    if isinstance(value, dict) and "__dataclass__" in value:
        return _plain(value["fields"])
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_plain(v) for v in value["__tuple__"])
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def config_to_json(config: Any) -> str:
    """Serialises a (nested) frozen dataclass of registered classes so that `config_from_json` rebuilds it."""
    return json.dumps(_encode(config), indent=2)


def config_from_json(text: str) -> Any:
    """The config `config_to_json` wrote.

    Raises:
        ValueError: the text is not such a config, or names a class outside the registry (one line).
    """
    try:
        return _decode(json.loads(text))
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"a config this version cannot read ({type(error).__name__}: {error})") from error


def read_config(path: str | Path) -> Any:
    """The config stored in the file `path`.

    Raises:
        ValueError: the file is not such a config (not UTF-8, not JSON, a class outside the registry, a missing or
            unknown field), in one line that names the file.
    """
    try:
        return config_from_json(Path(path).read_text())
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
