"""The one host loop of a training run: chunks, progress, Ctrl-C, divergence, checkpoints and exact resume (the run's
files are `ssm_jax.run_files`).

    run_dir = make_run_dir("runs/cli")                       # runs/cli/<UTC timestamp>/ (run_files)
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
import functools
import json
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
from ssm_jax.run_files import CHECKPOINTS, PROCESSES, MetricsLog, checkpoint_steps, restore_latest, save_step, step_of
from ssm_jax.sweep import chunk_keys


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


def run_records(
    label: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], started: float
) -> Callable[[int, Any], list[dict]]:
    """`train_phase`'s `records` for a state whose leading axis holds `runs` (each described by its fields: `{"seed":
    3}`, or a sweep's `Grid.runs()`): after each chunk, one record per run with `label`, the run's fields, the
    iteration, the seconds since `started` and the chunk's mean of each metric."""

    def records(iteration: int, metrics: Any) -> list[dict]:
        elapsed = time.perf_counter() - started
        return [
            {**label, **run, "iteration": iteration, "elapsed_s": elapsed,
             **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
            for i, run in enumerate(runs)
        ]  # fmt: skip

    return records


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
