"""A training run on disk, host side: its directory, metrics log, the chunked host loop and step checkpoints.

    run_dir = make_run_dir("runs/cli")                       # runs/cli/<UTC timestamp>/
    log = MetricsLog(run_dir / "metrics.jsonl")
    checkpoints = Checkpoints(run_dir, config, every=50, resume=f"ssm-jax train --resume {run_dir}")
    state = train_phase(chunk, state, key, 100, 10, "train", log, records, checkpoints)  # progress, Ctrl-C, saves
    state, iteration = resume(run_dir, target=state, log=log, kept=...)  # the newest intact step, the log cut to it

`train_phase` is the one host loop: the CLI and every experiment train through it (vmapped seeds and sweeps alike:
the state may hold a leading run axis). Resume is exact: training chunk `c` always draws key `c` of
`sweep.chunk_keys`, a checkpoint holds the whole state, and `resume` drops what a killed run logged after its last
checkpoint, so a resumed run ends with the params and metrics of the uninterrupted one. Ctrl-C or SIGTERM lets the
chunk in flight finish, saves it and raises `Interrupted` (a second signal aborts at once); entry points exit 0
(Ctrl-C) or 143 (SIGTERM) on it. A chunk that leaves a non-finite value in the state raises `Diverged` before
anything saves it, so the newest checkpoint stays the last finite state; entry points exit 3 on it with one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import functools
import json
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ssm_jax import checkpoint, distributed, interrupts
from ssm_jax.config.io import config_to_json
from ssm_jax.sweep import chunk_keys

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
    with checkpoint.full_device_as_one_line(path, len(holder)), _writable(run_dir):
        file = open(path, "a+b", buffering=0)  # held while the block runs: closed by the `with` below; unbuffered,
        # so a full device fails the write below, not the close
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            other = file.read().decode(errors="replace").strip() or "another process"
            raise RunInUse(f"{run_dir} is in use by {other}: one train or resume of a run at a time") from None
        with checkpoint.full_device_as_one_line(path, len(holder)):
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
    with interrupts.completing(), checkpoint.full_device_as_one_line(staging, len(text)):
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
    with checkpoint.full_device_as_one_line(path, len(text)):
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
        with checkpoint.full_device_as_one_line(self.path, len(line)), self.path.open("a") as f:
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
        with interrupts.completing(), checkpoint.full_device_as_one_line(staging, len(kept)):
            staging.write_text(kept)
            os.replace(staging, self.path)


class Diverged(Exception):
    """A training chunk left a non-finite value in the state (the chunk ending at `iteration`; `quantity` is the
    first such leaf, `run` the run it belongs to where the state holds several). Nothing saved it: the newest
    checkpoint, `checkpoint` (None if there is none), is the last finite state."""

    def __init__(self, iteration: int, quantity: str, run: Any = None, checkpoint: Path | None = None):
        self.iteration, self.quantity, self.run, self.checkpoint = iteration, quantity, run, checkpoint
        where = "" if run is None else f" (run {run})"
        newest = "no checkpoint was saved" if checkpoint is None else f"the last finite checkpoint is {checkpoint}"
        super().__init__(f"diverged at iteration {iteration}: {quantity}{where} is not finite; {newest}")


@functools.partial(jax.jit, static_argnums=1)
def _finite(tree: Any, run_axis: bool) -> Any:
    """Per float leaf: whether it is all finite (`[R]`, one flag per run, with a leading run axis)."""

    def finite(x):
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.ones(x.shape[:1] if run_axis else (), bool)
        return jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)) if run_axis else None)

    return jax.tree.map(finite, tree)


def non_finite(tree: Any, run_axis: bool = False) -> list[tuple[str, int | None]]:
    """`(leaf path, run index)` for every float leaf of `tree` holding a non-finite value (run index None without
    a run axis; one entry per diverged run with one); empty when all is finite. One small reduction on device."""
    arrays = jax.tree.map(jnp.asarray, tree)
    flags = distributed.host_copy(_finite(arrays, run_axis))
    found = []
    for path, ok in jax.tree_util.tree_flatten_with_path(flags)[0]:
        name = jax.tree_util.keystr(path)
        if run_axis:
            found += [(name, int(run)) for run in np.flatnonzero(~ok)]
        elif not ok:
            found.append((name, None))
    return found


@contextlib.contextmanager
def announce(description: str) -> Iterator[None]:
    """One line on stderr as a long single step starts (`description…`: compiling and running an evaluation, which
    shows no progress of its own) and its wall time when it ends, so a user never waits on a silent terminal. Only
    process 0 prints."""
    writes = distributed.is_writer()
    if writes:
        print(f"{description}…", file=sys.stderr, flush=True)
    started = time.perf_counter()
    yield
    if writes:
        print(f"{description}: done, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM (`signum`) during `train_in_chunks`: `state` is the last finished chunk's, at `iteration`;
    entry points exit with `interrupts.stopped_exit_code(signum)`."""

    def __init__(self, iteration: int, state: Any, signum: int = signal.SIGINT):
        super().__init__(f"interrupted at iteration {iteration}")
        self.iteration = iteration
        self.state = state
        self.signum = signum


def train_in_chunks(
    update_chunk: Callable[[Any, jax.Array], tuple[Any, Any]],
    state: Any,
    key: jax.Array,
    iterations: int,
    chunk_size: int,
    description: str,
    on_chunk: Callable[[int, Any, Any], None] | None = None,
    postfix: Callable[[Any], Mapping[str, float]] | None = None,
    start: int = 0,
) -> Any:
    """Runs `update_chunk(state, key) -> (state, stacked metrics)` (jitted, `chunk_size` iterations per call;
    `key` may be a sweep's stacked train keys `[R]`, each run's chunks keyed as if it ran alone) from iteration
    `start` until `iterations`, syncing to the host once per chunk for the progress bar and
    `on_chunk(iteration, state, metrics)` (the state that chunk returned, before the next call donates it; the
    metrics as numpy, gathered from every process). Under several processes only process 0 shows progress, and a
    Ctrl-C seen by any process stops them all at the end of the same chunk.

    Raises:
        Interrupted: Ctrl-C or SIGTERM; raised once the chunk in flight has finished and `on_chunk` has seen it.
    """
    if iterations % chunk_size or start % chunk_size:
        raise ValueError(f"iterations={iterations} and start={start} must be multiples of chunk_size={chunk_size}")
    keys = chunk_keys(key, iterations // chunk_size)
    writes = distributed.is_writer()
    live, started = writes and _live_progress(), time.perf_counter()
    bar = tqdm(total=iterations, initial=start, desc=description, dynamic_ncols=True, leave=False, disable=not live)
    if writes and not live and start < iterations:  # a log file: say so before the first chunk's compile
        print(f"{description}: {start}/{iterations}, compiling the first chunk", file=sys.stderr, flush=True)
    with bar, interrupts.stop_at_chunk_end() as interrupt_requested:
        for chunk in range(start // chunk_size, iterations // chunk_size):
            state, metrics = update_chunk(state, keys[chunk])
            metrics = distributed.host_copy(metrics)
            done = (chunk + 1) * chunk_size
            if on_chunk is not None:
                on_chunk(done, state, metrics)
            shown = {} if postfix is None else {k: f"{v:.4g}" for k, v in postfix(metrics).items()}
            bar.set_postfix(shown)
            bar.update(chunk_size)
            if writes and not live:  # a log file or CI: one plain line per chunk instead of carriage-return redraws
                fields = "".join(f", {k} {v}" for k, v in shown.items())
                print(
                    f"{description}: {done}/{iterations}{fields}, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            requested = interrupt_requested()
            if distributed.any_process(bool(requested)):  # another process's signal: a scheduler's SIGTERM
                raise Interrupted(done, state, requested or signal.SIGTERM)
    return state


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """Where and how often a phase of a run saves its state: `run_dir/checkpoints/step_<n>/` with `config`, every
    `every` iterations and at the end, the newest `keep` kept; `resume` is the command that continues the run."""

    run_dir: Path
    config: Any
    every: int
    resume: str
    keep: int = 2


def train_phase(
    update_chunk: Callable[[Any, jax.Array], tuple[Any, Any]],
    state: Any,
    key: jax.Array,
    iterations: int,
    chunk_size: int,
    description: str,
    log: MetricsLog,
    records: Callable[[int, Any], list[dict]],
    checkpoints: Checkpoints | None = None,
    postfix: Callable[[Any], Mapping[str, float]] | None = None,
    start: int = 0,
    run_labels: Sequence[Any] | None = None,
    halt_on_divergence: bool = True,
) -> Any:
    """The host loop every entry point shares: `train_in_chunks` from iteration `start`, writing `records(iteration,
    metrics)` to `log` after each chunk and, with `checkpoints`, saving the state at every `checkpoints.every`
    iterations and at the end; a run starting from scratch first saves its initial state as step 0, so it always has
    a finite checkpoint, even if its first chunk diverges. `run_labels` name the runs of a state with a leading run
    axis (seeds, or a sweep's runs); None: a single run. With `halt_on_divergence`, each chunk's state is checked
    before it is saved (`non_finite`); a sweep turns it off to let its other runs finish and reports the diverged
    ones.

    Raises:
        Interrupted: Ctrl-C or SIGTERM, once the chunk in flight has finished; its state is saved first (with
            `checkpoints`), and one line says where and how to continue.
        Diverged: a chunk left a non-finite value in the state; its records are logged, the state is not saved.
    """

    def on_chunk(iteration: int, state: Any, metrics: Any) -> None:
        for record in records(iteration, metrics):
            log.log(record)
        diverged = non_finite(state, run_axis=run_labels is not None) if halt_on_divergence else []
        if diverged:
            quantity, run = diverged[0]
            newest = checkpoint_steps(checkpoints.run_dir) if checkpoints is not None else []
            last = checkpoint.step_path(checkpoints.run_dir / CHECKPOINTS, newest[-1]) if newest else None
            raise Diverged(iteration, quantity, None if run is None else run_labels[run], last)
        if checkpoints is not None and (iteration % checkpoints.every == 0 or iteration == iterations):
            save_step(checkpoints.run_dir, state, checkpoints.config, iteration, keep=checkpoints.keep)

    if checkpoints is not None and start == 0 and not checkpoint_steps(checkpoints.run_dir):
        save_step(checkpoints.run_dir, state, checkpoints.config, 0, keep=checkpoints.keep)
    try:
        return train_in_chunks(update_chunk, state, key, iterations, chunk_size, description, on_chunk, postfix, start)
    except Interrupted as stop:
        how = "interrupted" if stop.signum == signal.SIGINT else f"stopped by {signal.Signals(stop.signum).name}"
        if checkpoints is None:
            print(f"{how} at iteration {stop.iteration} of {description}, which keeps no checkpoint", flush=True)
        else:
            path = save_step(checkpoints.run_dir, stop.state, checkpoints.config, stop.iteration, checkpoints.keep)
            print(f"{how} at iteration {stop.iteration}: saved {path}; continue: {checkpoints.resume}", flush=True)
        raise


def resume(run_dir: str | Path, target: Any, log: MetricsLog, kept: Callable[[dict, int], bool]) -> tuple[Any, int]:
    """`(state, iteration)` of the newest intact checkpoint of `run_dir`, restored into `target`; the log keeps
    the records `kept(record, iteration)` accepts (a killed run logged past its checkpoint; those are run again).
    Damaged steps newer than it are removed (one line on stderr), so the resumed run saves them anew. A run killed
    before its first checkpoint starts again: `(target, 0)`.

    Raises:
        FileNotFoundError, ValueError: as `restore_latest`.
        ValueError: the run was started on another number of processes (one line naming it).
    """
    _check_processes(Path(run_dir))
    if not checkpoint_steps(run_dir):
        log.keep(lambda record: kept(record, 0))
        print(f"resumed {run_dir} from the start (no checkpoint yet)")
        return target, 0
    state, path = restore_latest(run_dir, target)
    iteration = step_of(path)
    damaged = [step for step in checkpoint_steps(run_dir) if step > iteration]
    if damaged:  # training again from `iteration` saves these steps anew (every process: orbax's barrier)
        with interrupts.completing():
            checkpoint.remove(Path(run_dir) / CHECKPOINTS, damaged)
        if distributed.is_writer():
            names = ", ".join(f"step_{step}" for step in damaged)
            print(f"removed the damaged {names}: the run trains again from {path.name}", file=sys.stderr)
    log.keep(lambda record: kept(record, iteration))
    print(f"resumed {run_dir} from {path.name} (iteration {iteration})")
    return state, iteration


def _check_processes(run_dir: Path) -> None:
    """Raises a one-line ValueError unless this job has as many processes as the run at `run_dir` was started on."""
    path = run_dir / PROCESSES
    started_on = json.loads(path.read_text())["processes"] if path.is_file() else 1
    if started_on != jax.process_count():
        how = "without ssm_jax.launch" if started_on == 1 else f"with python -m ssm_jax.launch -n {started_on}"
        raise ValueError(
            f"it was started on {started_on} process(es) and this is {jax.process_count()}: resume it on "
            f"{started_on} ({how})"
        )


def _live_progress() -> bool:
    """Whether a redrawn progress bar will be readable: a terminal, or a notebook's widget."""
    return sys.stderr.isatty() or any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


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
