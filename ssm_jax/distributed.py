"""Runs and tasks over devices: a named mesh, GSPMD shardings, and multi-host start-up.

    mesh = distributed.make_mesh(runs=4)                  # devices on named axes ("runs", "tasks"), Auto (GSPMD)
    states = distributed.shard_runs(states, mesh)         # a sweep's leading run axis split over "runs"
    states, metrics = programs.train(states, chunk_keys)  # jit partitions the vmapped program: each device its runs

    trainer = make_meta_rl_trainer(env, policy, config, task_sharding=distributed.task_sharding(mesh))
    # one run, its meta-batch of tasks split over "tasks": each device samples, adapts and differentiates its tasks,
    # and XLA inserts the cross-device reduction of the meta-gradient (a mean over tasks)

Sharding never changes what is computed, only where (tested on 4 host devices against the single-device step). The
mesh axes are `AxisType.Auto`: `jax.make_mesh` now defaults to Explicit axes, which this GSPMD code does not use.

Several hosts: call `initialize()` first on every process (JAX's multi-process convention: the same program on
each host, `jax.distributed.initialize` with the coordinator's address, the process count and this process's id,
or none of them on a cluster JAX detects: SLURM, Open MPI, TPU pods); `jax.devices()` then lists every host's
devices and a mesh over them spans the hosts.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

RUNS, TASKS = "runs", "tasks"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """`jax.distributed.initialize` for multi-host runs (call before anything touches a device); with no arguments
    JAX detects the cluster (SLURM, Open MPI, Cloud TPU)."""
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(runs: int | None = None, tasks: int = 1) -> jax.sharding.Mesh:
    """A `(runs, tasks)` mesh over all devices; `runs` defaults to the device count divided by `tasks`."""
    count = jax.device_count()
    runs = count // tasks if runs is None else runs
    if runs < 1 or tasks < 1 or runs * tasks != count:
        raise ValueError(f"a mesh of runs={runs} x tasks={tasks} must use all {count} devices")
    return jax.make_mesh((runs, tasks), (RUNS, TASKS), axis_types=(AxisType.Auto, AxisType.Auto))


def shard_runs(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places `tree` (leaves with a leading run axis `[R, ...]`, R a multiple of the mesh's "runs" size) split along
    that axis over "runs" and replicated over "tasks"."""
    size = mesh.shape[RUNS]
    for shape in map(np.shape, jax.tree.leaves(tree)):
        if not shape or shape[0] % size:
            raise ValueError(f"every leaf needs a leading run axis divisible by {size} devices, got shape {shape}")
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(RUNS)))


def task_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The sharding of a meta-batch of tasks (leading task axis) over the mesh's "tasks" axis."""
    return NamedSharding(mesh, PartitionSpec(TASKS))
