"""A run's checkpoints, managed by orbax's `CheckpointManager`: each step holds the whole train state and the config
that built it.

    path = save("runs/x/checkpoints", 100, state, config, keep=2)  # .../step_100/{state, config}; older steps pruned
    steps("runs/x/checkpoints")                                     # [.., 100]: complete steps, ascending
    state, config = restore("runs/x/checkpoints", 100, target=state)

orbax writes a step into a temporary directory and renames it once complete, so a killed save leaves no step behind
(a leftover temporary is removed the next time the directory is opened), and `keep` bounds how many steps stay.
Arrays are saved as they are, sharded `jax.Array`s included: nothing is gathered to one host.

The config is stored as JSON (orbax's `JsonSave`, written by `ssm_jax.config.io`, which rebuilds only registered
config classes). Each step also records a SHA-256 of its state's leaves (names, dtypes, shapes and bytes), which
`restore` checks: a flipped byte in a step's files is a `CorruptCheckpoint`, never silently restored values (arrays
spread over several hosts are not hashed). Steps written before the manager (a `config.json` file beside
`state/`) or before the checksum still restore.

A save that finds its device full is one `OutOfSpace` line (where, how much the step may need, how much is free) and
leaves no staging directory. orbax's own reports of a failure (absl ERROR lines, tracebacks from its writer threads
and from tensorstore callbacks that outlive its event loop) are not shown: every failure reaches the caller as the
exception this module raises.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding

from ssm_jax import distributed
from ssm_jax.config.io import config_from_json, config_to_json
from ssm_jax.disk import out_of_space, space_errno
from ssm_jax.types import PyTree

STEP_PREFIX = "step"
_LEGACY_CONFIG_FILE = "config.json"


class CorruptCheckpoint(ValueError):
    """The checkpoint's files are unreadable or incomplete (as opposed to made by another configuration)."""


class CheckpointMismatch(ValueError):
    """The checkpoint is intact but was made by another configuration."""


class _OrbaxNoise(logging.Filter):
    """Drops orbax's log records, and asyncio's about orbax's tasks: a failure reaches the caller as this module's
    exception. Installed only around one use of orbax, so a future that asyncio finds unretrieved there is one of
    orbax's, even when its exception (a tensorstore write's) carries no orbax frame."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "asyncio" and "never retrieved" in record.getMessage():
            return False
        texts = [record.pathname, record.getMessage()]
        if record.exc_info and record.exc_info[2] is not None:
            texts += [frame.filename for frame in traceback.extract_tb(record.exc_info[2])]
        return not any("/orbax/" in text.replace("\\", "/") for text in texts)


def _is_noise(error: BaseException | None, culprit: object = None) -> bool:
    """A tensorstore callback that outlived orbax's event loop, or one of orbax's coroutines collected unfinished
    after a failed save."""
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    code = getattr(culprit, "cr_code", None)
    return code is not None and "/orbax/" in code.co_filename.replace("\\", "/")


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
    """Within the block (one use of orbax), keeps orbax's reports of a failure off stderr: its log records,
    asyncio's about its failed tasks, the tracebacks of callbacks that outlive its event loop, and its unfinished
    coroutines (collected before the block ends, so their warnings fall inside it). Everything is restored on leaving:
    a user's program keeps its own hooks, filters and warnings."""
    noise = _OrbaxNoise()
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    for logger in loggers:
        logger.addFilter(noise)
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def quiet_excepthook(kind, error, trace):
        if not _is_noise(error):
            excepthook(kind, error, trace)

    def quiet_unraisablehook(unraisable):
        if not _is_noise(unraisable.exc_value, unraisable.object):
            unraisablehook(unraisable)

    sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)
            try:
                yield
            finally:
                gc.collect()
    finally:
        sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
        for logger in loggers:
            logger.removeFilter(noise)


@contextlib.contextmanager
def _manager(directory: str | Path, keep: int | None = None) -> Iterator[ocp.CheckpointManager]:
    """orbax's manager of `directory`, open for the block, its noise kept off stderr (`_quiet_orbax`)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, step_prefix=STEP_PREFIX, create=keep is not None, enable_async_checkpointing=False
    )
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
        "checksum": ocp.JsonCheckpointHandler(),
    }
    with (
        _quiet_orbax(),
        ocp.CheckpointManager(Path(directory).absolute(), options=options, item_handlers=handlers) as manager,
    ):
        yield manager


def step_path(directory: str | Path, step: int) -> Path:
    """Where step `step` of `directory` lives."""
    return Path(directory).absolute() / f"{STEP_PREFIX}_{step}"


def save(directory: str | Path, step: int, state: PyTree, config: Any, keep: int = 2) -> Path:
    """Saves `state` (a pytree of arrays, sharded or not) and `config` (a registered dataclass, or None) as step
    `step` of `directory`, then removes all but the newest `keep` steps. Returns the step's path. A step already
    saved is kept as it is: a step number is an iteration of one run, so its state is the same (a Ctrl-C at a
    checkpoint's iteration saves it twice)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    config_json = json.loads(config_to_json(config))  # before anything is written: an unstorable config raises
    try:
        with _manager(directory, keep) as manager:
            if step not in manager.all_steps():
                items = {
                    "state": ocp.args.StandardSave(state),
                    "config": ocp.args.JsonSave(config_json),
                    "checksum": ocp.args.JsonSave({"sha256": _checksum(state)}),
                }
                manager.save(step, args=ocp.args.Composite(**items))
    except Exception as error:
        code = space_errno(error)
        if code is None:
            raise
        for staging in Path(directory).glob(f"{STEP_PREFIX}_{step}.orbax-checkpoint-tmp*"):
            shutil.rmtree(staging, ignore_errors=True)
        needed = sum(getattr(leaf, "nbytes", 0) for leaf in jax.tree.leaves(state))  # orbax compresses: at most this
        raise out_of_space(step_path(directory, step), needed, code) from None
    return step_path(directory, step)


def steps(directory: str | Path) -> list[int]:
    """The complete steps saved in `directory`, ascending ([] if there is none). Under several processes every
    process calls it together (the manager's barriers): a directory any of them sees is opened by all."""
    if not distributed.any_process(Path(directory).is_dir()):
        return []
    with _manager(directory) as manager:
        return sorted(manager.all_steps())


def remove(directory: str | Path, removed: list[int]) -> None:
    """Deletes the steps `removed` of `directory` (damaged ones, which a resumed run then saves anew)."""
    with _manager(directory) as manager:
        for step in removed:
            manager.delete(step)


def restore(directory: str | Path, step: int, target: PyTree | None = None) -> tuple[PyTree, Any]:
    """Restores `(state, config)` of step `step` of `directory`; with `target`, the state takes `target`'s tree
    structure and placement (shardings).

    Raises:
        FileNotFoundError: no such step.
        CorruptCheckpoint: the step is unreadable or incomplete (a `ValueError`).
        ValueError: a leaf's shape or dtype, or the tree structure, is not `target`'s (the message names the first
            leaf that differs), or the config names a class outside the registry.
    """
    path = step_path(directory, step)
    if step not in steps(directory):
        raise FileNotFoundError(f"no checkpoint at {path}")
    legacy_config = path / _LEGACY_CONFIG_FILE
    items = {}
    if not legacy_config.is_file():
        items["config"] = ocp.args.JsonRestore()
    if (path / "checksum").is_dir():
        items["checksum"] = ocp.args.JsonRestore()
    try:
        if not (path / "state" / "_METADATA").is_file():  # without it orbax reads the tree as another one
            raise FileNotFoundError(f"{path / 'state' / '_METADATA'} is missing")
        with _manager(directory) as manager:
            stored = manager.item_metadata(step)["state"]
            if target is not None:
                _check_matches(path, stored, target)
            abstract = jax.tree.map(_abstract, target if target is not None else stored)
            items["state"] = ocp.args.StandardRestore(abstract)
            restored = manager.restore(step, args=ocp.args.Composite(**items))
        config_text = legacy_config.read_text() if legacy_config.is_file() else json.dumps(restored["config"])
        recorded = restored["checksum"]["sha256"] if "checksum" in items else None
        if recorded is not None and recorded != _checksum(restored["state"]):
            raise ValueError("the state's contents differ from the checksum recorded when it was saved")
    except CheckpointMismatch:
        raise
    except Exception as err:
        reason = " ".join(str(err).split(" [tensorstore_spec=")[0].split())  # tensorstore appends its whole spec
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        raise CorruptCheckpoint(f"corrupt or incomplete checkpoint at {path}: {type(err).__name__}: {reason}") from err
    return restored["state"], config_from_json(config_text)


def _checksum(state: PyTree) -> str | None:
    """SHA-256 of every leaf (its name, dtype, shape and bytes), in name order, so a raw restore (dicts) and a
    restore into the state's own classes hash alike; None when an array spans several hosts."""
    leaves = sorted(
        ((_names(key), leaf) for key, leaf in jax.tree_util.tree_leaves_with_path(state)), key=lambda x: x[0]
    )
    if any(isinstance(leaf, jax.Array) and not leaf.is_fully_addressable for _, leaf in leaves):
        return None
    digest = hashlib.sha256()
    for names, leaf in leaves:
        array = np.ascontiguousarray(jax.device_get(leaf))
        digest.update(f"{'/'.join(names)}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _abstract(leaf: Any) -> Any:
    """The restore target of one leaf: its shape, dtype and (for a `jax.Array`) sharding; a stored leaf's metadata
    (no target) goes to this process's first device, whatever devices saved it."""
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if not isinstance(leaf, np.ndarray | np.generic | int | float | bool):  # orbax's metadata of a stored leaf
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=SingleDeviceSharding(jax.local_devices()[0]))
    array = np.asarray(leaf)
    return jax.ShapeDtypeStruct(array.shape, array.dtype)


def _names(path: tuple) -> tuple[str, ...]:
    """A key path as plain names, alike for dict keys, attributes and sequence indices (orbax stores all three as
    dict keys)."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _check_matches(path: Path, stored: Any, target: PyTree) -> None:
    """Raises a one-line ValueError if the stored tree (orbax's metadata) is not `target`'s, naming the first leaf
    whose shape or dtype differs."""
    stored_leaves = {_names(key): leaf for key, leaf in jax.tree_util.tree_leaves_with_path(stored)}
    target_leaves = jax.tree_util.tree_leaves_with_path(target)
    if stored_leaves.keys() != {_names(key) for key, _ in target_leaves}:
        raise CheckpointMismatch(f"checkpoint at {path} does not match the target's tree structure")
    for key, expected in target_leaves:
        value = stored_leaves[_names(key)]
        abstract = _abstract(expected)
        got, want = (tuple(value.shape), np.dtype(value.dtype)), (tuple(abstract.shape), np.dtype(abstract.dtype))
        if got != want:
            raise CheckpointMismatch(
                f"checkpoint at {path} does not match the target at {jax.tree_util.keystr(key)}: stored "
                f"{got[1]}{list(got[0])}, expected {want[1]}{list(want[0])}"
            )
