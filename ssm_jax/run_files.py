"""A run on disk: its directory (made, locked, writable), its config.json and JSON files, its metrics log and its
step checkpoints (`checkpoints/step_<n>/`), which `ssm_jax.runs`'s host loop writes and resumes from.

    run_dir = make_run_dir("runs/cli")                       # runs/cli/<UTC timestamp>/
    with lock(run_dir): ...                                  # one writer per run directory
    log = MetricsLog(run_dir / "metrics.jsonl")
    save_step(run_dir, state, config, step=10)               # checkpoints/step_10/, the newest `keep` kept
    state, path = restore_latest(run_dir, target=state)      # the newest intact step
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import platform
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ssm_jax import checkpoint, disk, distributed, interrupts
from ssm_jax.config.io import config_to_json

CHECKPOINTS = "checkpoints"
PROCESSES = "processes.json"
"""The process and device count of a run started on several processes (none: one process)."""
_STEP = re.compile(r"step_(\d+)")


class RunDirError(OSError):
    """A run directory cannot be made where it was asked for (one line)."""


def make_run_dir(root: str | Path) -> Path:
    """A fresh `root/<UTC timestamp>` directory (suffixed if that name is taken). Under several processes, process 0
    makes it and every process gets its name.

    Raises:
        RunDirError: `root` cannot hold one (read-only, not a directory, no permission), in one line.
    """
    made = _make_run_dir(root) if distributed.is_writer() else ""
    run_dir = Path(distributed.agree(str(made)))
    if jax.process_count() > 1:
        write_json(run_dir / PROCESSES, {"processes": jax.process_count(), "devices": jax.device_count()})
    return run_dir


def _make_run_dir(root: str | Path) -> Path:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    for suffix in [""] + [f"-{i}" for i in range(1, 100)]:
        path = root / f"{stamp}{suffix}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise RunDirError(f"cannot make a run directory under {root}: {error.strerror or error}") from None
    raise RunDirError(f"cannot make a run directory under {root}: 100 runs started within one second")


class RunInUse(RuntimeError):
    """Another process holds the run directory (`lock`)."""


@contextlib.contextmanager
def lock(run_dir: str | Path) -> Iterator[None]:
    """Makes this process the run directory's one writer while the block runs: an exclusive `flock` on
    `run_dir/.lock`, which names its holder. The kernel releases it when the holder exits, however it exits, so a
    killed run's lock never blocks its resume. Under several processes, process 0 (the one writer) holds it.

    Raises:
        RunInUse: another process holds it (one line naming the process).
    """
    if not distributed.is_writer():
        yield
        return
    path, holder = Path(run_dir) / ".lock", f"process {os.getpid()} on {platform.node()}"
    with disk.full_device_as_one_line(path, len(holder)), _writable(run_dir):
        file = open(path, "a+b", buffering=0)  # held while the block runs: closed by the `with` below; unbuffered,
        # so a full device fails the write below, not the close
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            other = file.read().decode(errors="replace").strip() or "another process"
            raise RunInUse(f"{run_dir} is in use by {other}: one train or resume of a run at a time") from None
        with disk.full_device_as_one_line(path, len(holder)):
            file.seek(0)
            file.truncate()
            if file.write(holder.encode()) < len(holder.encode()):  # a short write: the device is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


@contextlib.contextmanager
def _writable(run_dir: str | Path) -> Iterator[None]:
    """Within the block, a run directory this process may not write (read-only, no permission) raises `RunDirError`
    in one line."""
    try:
        yield
    except OSError as error:
        if not isinstance(error, PermissionError) and error.errno != errno.EROFS:
            raise
        raise RunDirError(f"cannot write to the run directory {run_dir}: {error.strerror}") from None


def check_writable(path: str | Path) -> None:
    """Raises `RunDirError` (one line) unless this process may create or replace the file `path`: checked before a
    command computes what it will write there."""
    directory = Path(path).parent
    if not os.access(directory, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
        raise RunDirError(f"cannot write {path}: its directory is read-only or not ours (pass --output elsewhere)")


def write_config(run_dir: str | Path, config: Any) -> None:
    """`run_dir/config.json`, the run's config, replaced atomically (`resume` is not stored: it names where the run
    is, not what it is). Only process 0 writes."""
    if not distributed.is_writer():
        return
    if dataclasses.is_dataclass(config) and getattr(config, "resume", None) is not None:
        config = dataclasses.replace(config, resume=None)
    staging, text = Path(run_dir) / ".config.json.saving", config_to_json(config)
    with interrupts.completing(), disk.full_device_as_one_line(staging, len(text)):
        try:
            staging.write_text(text)
            os.replace(staging, Path(run_dir) / "config.json")
        finally:
            staging.unlink(missing_ok=True)  # a write cut short (a full device) leaves nothing behind


def to_python(tree: Any) -> Any:
    """Arrays and numpy scalars to plain Python floats/ints/lists, for JSON."""

    def convert(x):
        array = np.asarray(x)
        return array.item() if array.ndim == 0 else array.tolist()

    return jax.tree.map(convert, jax.device_get(tree))


def write_json(path: Path, value: Any) -> None:
    """`value` as JSON at `path` (only process 0 writes)."""
    if not distributed.is_writer():
        return
    text = json.dumps(to_python(value), indent=2, allow_nan=True)
    with disk.full_device_as_one_line(path, len(text)):
        path.write_text(text)


class MetricsLog:
    """`metrics.jsonl`: one JSON object per line, appended (by process 0 only; the others' logs write nothing)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.writes = distributed.is_writer()
        if self.writes:
            self.path.touch()

    def log(self, record: Mapping[str, Any]) -> None:
        if not self.writes:
            return
        line = json.dumps(to_python(dict(record))) + "\n"
        with disk.full_device_as_one_line(self.path, len(line)), self.path.open("a") as f:
            f.write(line)

    def records(self) -> list[dict]:
        """Every complete record (a line cut short by a kill is skipped)."""
        records = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
        return records

    def keep(self, predicate: Callable[[dict], bool]) -> None:
        """Rewrites the log with only the records `predicate` accepts (a resume drops what follows its checkpoint)."""
        if not self.writes:
            return
        kept = "".join(json.dumps(r) + "\n" for r in self.records() if predicate(r))
        staging = self.path.with_name(f".{self.path.name}.keep")
        with interrupts.completing(), disk.full_device_as_one_line(staging, len(kept)):
            staging.write_text(kept)
            os.replace(staging, self.path)


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The complete steps saved under `run_dir/checkpoints/`, ascending."""
    return checkpoint.steps(Path(run_dir) / CHECKPOINTS)


def run_dir_of(path: str | Path) -> Path:
    """The run directory of `path`: a run directory itself, or one of its `checkpoints/step_<n>/`."""
    path = Path(path)
    return path.parent.parent if _STEP.fullmatch(path.name) and path.parent.name == CHECKPOINTS else path


def step_of(path: str | Path) -> int:
    """The step of a `checkpoints/step_<n>/` path."""
    match = _STEP.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint step (expected {CHECKPOINTS}/step_<n>/)")
    return int(match.group(1))


def save_step(run_dir: str | Path, state: Any, config: Any, step: int, keep: int = 2) -> Path:
    """Saves `state` and `config` as `run_dir/checkpoints/step_<step>/` and removes all but the newest `keep` steps
    (the one before the newest stays, should the newest ever be damaged). A Ctrl-C abort waits for it."""
    with interrupts.completing():
        return checkpoint.save(Path(run_dir) / CHECKPOINTS, step, state, config, keep=keep)


def restore_step(path: str | Path, target: Any = None) -> tuple[Any, Any]:
    """`(state, config)` of one `run_dir/checkpoints/step_<n>/`."""
    path = Path(path)
    return checkpoint.restore(path.parent, step_of(path), target)


def restore_latest(run_dir: str | Path, target: Any) -> tuple[Any, Path]:
    """The newest step under `run_dir/checkpoints/` that restores into `target`: `(state, its path)`. A damaged
    step is skipped with a one-line warning on stderr, and the one before it is used.

    Raises:
        FileNotFoundError: no checkpoint in `run_dir`.
        ValueError: every step is damaged, or the newest was made by another configuration (its message names the
            first leaf whose shape or dtype differs).
    """
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {CHECKPOINTS}/step_<n>/)")
    damaged = []
    for step in reversed(steps):
        try:
            state, _ = checkpoint.restore(Path(run_dir) / CHECKPOINTS, step, target=target)
        except checkpoint.CorruptCheckpoint as error:
            damaged.append(str(error))
            print(f"warning: {error}; trying the step before it", file=sys.stderr)
            continue
        return state, checkpoint.step_path(Path(run_dir) / CHECKPOINTS, step)
    raise ValueError(f"no intact checkpoint in {run_dir}: {damaged[0]}")
