"""Orbax checkpoints of a full train state plus the frozen config that built it.

    save("runs/x/ckpt_100", state, config)      # state: any pytree of arrays; config: a frozen dataclass
    state, config = restore("runs/x/ckpt_100")  # dicts/lists of arrays, and the config rebuilt
    state, config = restore(path, target=state) # restored into the structure of `target` (NamedTuples, ...)

A checkpoint is a directory holding `state/` (orbax) and `config.json`. `save` writes into a temporary sibling
directory and swaps it in with renames only once everything is on disk, so an interrupted or failed save never
replaces a good checkpoint with a partial one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ssm_jax.types import PyTree

_CONFIG_FILE = "config.json"
_STATE_DIR = "state"


class CorruptCheckpoint(ValueError):
    """The checkpoint's files are unreadable or incomplete (as opposed to made by another configuration)."""


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        module = type(value).__module__
        if module == "__main__":  # run as `python -m pkg.mod`: record the importable name
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            module = spec.name if spec is not None else module
        return {"__dataclass__": f"{module}:{type(value).__qualname__}", "fields": fields}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store config value {value!r} of type {type(value).__name__} in {_CONFIG_FILE}")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__dataclass__" in value:
        module_name, qualname = value["__dataclass__"].split(":")
        cls: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls(**{k: _decode(v) for k, v in value["fields"].items()})
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def config_to_json(config: Any) -> str:
    """Serialises a (nested) frozen dataclass so that `config_from_json` rebuilds an equal object."""
    return json.dumps(_encode(config), indent=2)


def config_from_json(text: str) -> Any:
    """The config `config_to_json` wrote.

    Raises:
        ValueError: the text is not such a config, or names a class this version of the code does not have.
    """
    try:
        return _decode(json.loads(text))
    except (ImportError, AttributeError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"a config this version cannot read ({type(error).__name__}: {error})") from error


def save(path: str | os.PathLike, state: PyTree, config: Any) -> Path:
    """Saves `state` (pytree of arrays) and `config` (frozen dataclass, or None) to the directory `path`.

    An existing checkpoint at `path` is replaced only after the new one is completely written.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    config_text = config_to_json(config)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.saving-", dir=path.parent))
    try:
        state = jax.tree.map(np.asarray, jax.device_get(state))
        with ocp.PyTreeCheckpointer() as checkpointer:
            checkpointer.save(staging / _STATE_DIR, state)
        (staging / _CONFIG_FILE).write_text(config_text)
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, retired / path.name)
            os.replace(staging, path)
            shutil.rmtree(retired)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return path


def restore(path: str | os.PathLike, target: PyTree | None = None) -> tuple[PyTree, Any]:
    """Restores `(state, config)` from `path`; with `target`, the state takes `target`'s tree structure.

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        CorruptCheckpoint: the checkpoint is unreadable or incomplete (a `ValueError`).
        ValueError: a leaf's shape or dtype, or the tree structure, is not `target`'s (the message names the first
            leaf that differs).
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        config = config_from_json((path / _CONFIG_FILE).read_text())
        with ocp.PyTreeCheckpointer() as checkpointer:
            if target is None:
                state = checkpointer.restore(path / _STATE_DIR)
            else:
                state = checkpointer.restore(path / _STATE_DIR, item=jax.tree.map(np.asarray, target))
    except Exception as err:
        if "tree structures do not match" in str(err):  # orbax: the stored tree is not the target's
            raise ValueError(f"checkpoint at {path} does not match the target's tree structure") from err
        raise CorruptCheckpoint(f"corrupt or incomplete checkpoint at {path}: {type(err).__name__}: {err}") from err
    if target is not None:
        _check_matches(path, state, target)
    return state, config


def _check_matches(path: Path, state: PyTree, target: PyTree) -> None:
    """Raises a one-line ValueError naming the first leaf whose stored shape or dtype is not the target's (orbax
    returns the stored arrays as they are)."""
    stored = jax.tree_util.tree_leaves_with_path(state)
    for (key, value), expected in zip(stored, jax.tree.leaves(target), strict=True):
        got, want = ((np.shape(x), np.asarray(x).dtype) for x in (value, expected))
        if got != want:
            raise ValueError(
                f"checkpoint at {path} does not match the target at {jax.tree_util.keystr(key)}: stored "
                f"{got[1]}{list(got[0])}, expected {want[1]}{list(want[0])}"
            )
