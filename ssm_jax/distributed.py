"""Runs and tasks over devices and processes: a named mesh, GSPMD shardings, and JAX's multi-process runtime.

    mesh = distributed.make_mesh(runs=2, tasks=2)         # every process's devices on named axes ("runs", "tasks")
    states = distributed.shard_runs(states, mesh)         # a sweep's leading run axis split over "runs"
    states, metrics = programs.train(states, distributed.shard_runs(chunk_keys, mesh))
    metrics = distributed.host_copy(metrics)              # the whole value on every process, as numpy

    trainer = make_meta_rl_trainer(env, policy, config, task_sharding=distributed.task_sharding(mesh))
    # one run's meta-batch of tasks split over "tasks": each device samples, adapts and differentiates its tasks,
    # and XLA inserts the cross-device reduction of the meta-gradient (a mean over tasks)

Sharding never changes what is computed, only where (tested against the single-device program on 4 host devices,
and on 2 processes of 2 devices each). The mesh axes are `AxisType.Auto`: `jax.make_mesh` now defaults to Explicit
axes, which this GSPMD code does not use.

Several processes (JAX's multi-controller convention: every process runs the same program on its own devices):
`initialize()` first, before anything touches a device. It takes the coordinator's address, the process count and
this process's id from `python -m ssm_jax.launch` (localhost), or lets JAX detect its cluster (SLURM, Open MPI, TPU
pods). `jax.devices()` then lists every process's devices and a mesh spans them. Every process computes the same
keys and host values (the seed is the only source), places them with `shard_runs`/`replicate`, and reads results
back with `host_copy`; only `is_writer()` (process 0) writes logs, results and plots, while every process takes
part in a checkpoint (orbax writes each array's shards from the processes that hold them). On CPU the collectives
across processes are gloo's (JAX's default there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

RUNS, TASKS = "runs", "tasks"
PROCESS_COUNT_VARIABLE, PROCESS_ID_VARIABLE = "SSM_JAX_NUM_PROCESSES", "SSM_JAX_PROCESS_ID"
"""Set by `ssm_jax.launch` for each process it starts (beside JAX's own `JAX_COORDINATOR_ADDRESS`)."""


_joined = False
"""Whether this process joined the multi-process runtime (`initialize`)."""


class DistributedError(RuntimeError):
    """JAX's multi-process runtime cannot start here (one line)."""


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """`jax.distributed.initialize`, once per process, before anything touches a device. Arguments left out come
    from `ssm_jax.launch`'s environment variables, else from JAX's cluster detection (SLURM, Open MPI, Cloud TPU).

    Raises:
        DistributedError: no coordinator could be found (one line saying how to start the processes).
    """
    if num_processes is None and PROCESS_COUNT_VARIABLE in os.environ:
        num_processes = int(os.environ[PROCESS_COUNT_VARIABLE])
        process_id = int(os.environ[PROCESS_ID_VARIABLE])
    stop = signal.getsignal(signal.SIGTERM)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except ValueError as error:
        raise DistributedError(
            f"cannot start JAX's multi-process runtime ({error}): start every process with python -m ssm_jax.launch "
            "-n N -- ..., under SLURM or Open MPI, or on a TPU pod"
        ) from None
    if stop is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)  # JAX's preemption notifier took SIGTERM over: a stop would be lost
    global _joined
    _joined = True


def refuse_running_alone(joins: bool) -> None:
    """Raises a one-line `DistributedError` when `ssm_jax.launch` started this process as one of several and the
    entry point will not join them (`joins`: its `--distributed`): each process would train alone."""
    launched = int(os.environ.get(PROCESS_COUNT_VARIABLE, "1"))
    if launched > 1 and not joins:
        raise DistributedError(
            f"started as one of {launched} processes by python -m ssm_jax.launch without --distributed: each would "
            "train alone (pass --distributed, or run one process)"
        )


@contextlib.contextmanager
def failing_fast() -> Iterator[None]:
    """An entry point's body: once this process has joined several (`initialize`), a failure in the block (an
    exception, or a `SystemExit` with a nonzero code) ends the process at once, its traceback or message already
    printed. Otherwise it would wait at JAX's shutdown barrier for the others, which wait for it in their next
    collective, until a timeout minutes later; ended, it lets the launcher (or the cluster) stop the others."""
    try:
        yield
    except SystemExit as exit_info:
        if _joined and exit_info.code not in (None, 0):
            _end_now(exit_info.code if isinstance(exit_info.code, int) else 1)
        raise
    except BaseException:
        if _joined:
            traceback.print_exc()
            _end_now(1)
        raise


def _end_now(code: int) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def is_writer() -> bool:
    """Whether this process writes the run's files (logs, results, plots): process 0 of the job."""
    return jax.process_index() == 0


def make_mesh(runs: int | None = None, tasks: int = 1) -> jax.sharding.Mesh:
    """A `(runs, tasks)` mesh over all devices of all processes; `runs` defaults to the device count divided by
    `tasks`."""
    count = jax.device_count()
    runs = count // tasks if runs is None else runs
    if runs < 1 or tasks < 1 or runs * tasks != count:
        raise ValueError(f"a mesh of runs={runs} x tasks={tasks} must use all {count} devices")
    return jax.make_mesh((runs, tasks), (RUNS, TASKS), axis_types=(AxisType.Auto, AxisType.Auto))


def shard_runs(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places `tree` (leaves with a leading run axis `[R, ...]`, R a multiple of the mesh's "runs" size; the same
    value on every process) split along that axis over "runs" and replicated over "tasks"."""
    size = mesh.shape[RUNS]
    for shape in map(np.shape, jax.tree.leaves(tree)):
        if not shape or shape[0] % size:
            raise ValueError(f"every leaf needs a leading run axis divisible by {size} devices, got shape {shape}")
    return _put(tree, NamedSharding(mesh, PartitionSpec(RUNS)))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places `tree` (the same value on every process) whole on every device of `mesh`."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def task_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The sharding of a meta-batch of tasks (leading task axis) over the mesh's "tasks" axis."""
    return NamedSharding(mesh, PartitionSpec(TASKS))


def host_copy(tree: Any) -> Any:
    """`tree` as numpy on this host: arrays spread over several processes are gathered (every process must call
    this together), the others fetched."""

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable and not leaf.is_fully_replicated:
            return multihost_utils.process_allgather(leaf, tiled=True)
        return jax.device_get(leaf)

    return jax.tree.map(fetch, tree)


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (every process calls this together; one process: `flag`)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


def agree(text: str, limit: int = 4096) -> str:
    """Process 0's `text` on every process (a run directory's name made by one of them)."""
    if jax.process_count() == 1:
        return text
    encoded = text.encode()
    if len(encoded) > limit:
        raise ValueError(f"{text!r} is longer than {limit} bytes")
    buffer = np.zeros(limit, np.uint8)
    buffer[: len(encoded)] = np.frombuffer(encoded, np.uint8)
    length, buffer = multihost_utils.broadcast_one_to_all((np.int32(len(encoded)), buffer))
    return bytes(np.asarray(buffer)[: int(length)]).decode()


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """`jax.device_put` onto `sharding`; where it spans processes, each process builds its own shards from its copy
    of the whole value (typed keys travel as their key data)."""

    def put(leaf):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf))
        if sharding.is_fully_addressable:
            return jax.device_put(leaf, sharding)
        whole = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(whole.shape, sharding, lambda index: whole[index])

    return jax.tree.map(put, tree)
