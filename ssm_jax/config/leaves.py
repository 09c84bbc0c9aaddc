"""Configs by leaf name: every leaf field of a config tree is one name (leaf names are unique in each tree), so a
change, a flag or an older flat file addresses a field without its section.

    replace(config, horizon=20, hidden_dim=16, seed=1)     # `dataclasses.replace` at any depth
    extend(StudyConfig, config, budgets=(1e6,))            # `config` as a subclass instance, with changes
"""

from __future__ import annotations

import dataclasses
from typing import Any


def float_leaves(config: Any):
    """`(field name, value)` for every float leaf of `config`, sections included."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from float_leaves(value)
        elif isinstance(value, float):
            yield f.name, value
        elif isinstance(value, tuple):
            yield from ((f.name, v) for v in value if isinstance(v, float))


def _sections(cls: type) -> dict[str, type]:
    """The fields of `cls` that are configs themselves (by their defaults), by name."""
    sections = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            sections[f.name] = type(default)
    return sections


def from_leaves(cls: type, flat: dict[str, Any]):
    sections = _sections(cls)
    values = {name: from_leaves(section, flat) for name, section in sections.items()}
    values.update({f.name: flat[f.name] for f in dataclasses.fields(cls) if f.name in flat and f.name not in sections})
    return cls(**values)


def flatten(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{key}_" if key == "env" else ""))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def replace(config: Any, **changes) -> Any:
    """`dataclasses.replace` by leaf name, at any depth: `replace(config, horizon=20, hidden_dim=16, seed=1)`."""
    return _replace(config, changes, top=True)


def extend(cls: type, config: Any, **changes) -> Any:
    """`config` as an instance of `cls`, a subclass of its class (an experiment's own config), with `changes` by leaf
    name (`cls`'s own fields among them)."""
    inherited = _field_names(type(config))
    own = {name: changes.pop(name) for name in list(changes) if name not in inherited and name in _field_names(cls)}
    return cls(**vars(replace(config, **changes)), **own)


def _replace(config: Any, changes: dict, top: bool = False) -> Any:
    own = {name: changes.pop(name) for name in list(changes) if name in _field_names(type(config))}
    for name in _sections(type(config)):
        if name not in own:
            section = _replace(getattr(config, name), changes)
            if section is not getattr(config, name):
                own[name] = section
    if top and changes:
        raise TypeError(f"{type(config).__name__} has no field {', '.join(changes)}")
    return dataclasses.replace(config, **own) if own else config


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
