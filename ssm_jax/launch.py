"""`python -m ssm_jax.launch`: starts N processes of one command on this machine, JAX's multi-process runtime
joining them (`jax.distributed`, coordinated on localhost).

    python -m ssm_jax.launch -n 2 -- ssm-jax train --config navigation --distributed
    python -m ssm_jax.launch -n 2 --devices-per-process 2 -- python -m experiments.sweep --distributed --task-devices 2

Each process gets JAX's `JAX_COORDINATOR_ADDRESS` (127.0.0.1 and a free port) and its process count and id
(`SSM_JAX_NUM_PROCESSES`, `SSM_JAX_PROCESS_ID`), which `ssm_jax.distributed.initialize()` reads; nothing else is
home-made: the runtime is JAX's. `--devices-per-process K` fakes K host CPU devices in each (XLA's
`--xla_force_host_platform_device_count`), so two processes make a 2K-device mesh on one CPU.

Process 0's output is the launcher's; the others' is kept aside and shown (its last lines) only if that process
fails. When one process fails the others are killed (a collective would otherwise wait for it for ever) and the
launcher exits with its code; `--timeout` kills them all after that many seconds (exit 124). Ctrl-C in a terminal
reaches every process (they share the launcher's process group) and they stop together at the end of a chunk;
SIGTERM sent to the launcher alone is passed on to each: every process stops at the end of the same chunk, the run
saves it, and the launcher exits 143 once all have (a process that exits 143 is stopped, not failed). `ssm-jax train`
and the experiments refuse to run as one of several launched processes without `--distributed` (each would train
alone).

On a cluster no launcher is needed: SLURM (`srun`), Open MPI (`mpirun`) and TPU pods start the processes and JAX
detects them (docs: Scaling out).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import tyro

from ssm_jax.config.parsing import UsageError, parse
from ssm_jax.distributed import PROCESS_COUNT_VARIABLE, PROCESS_ID_VARIABLE
from ssm_jax.interrupts import TERMINATED

TIMED_OUT = 124
_TAIL_LINES = 30


@dataclasses.dataclass(frozen=True)
class LaunchArgs:
    """Starts N processes of the command after `--`, joined by JAX's multi-process runtime on localhost."""

    processes: Annotated[int, tyro.conf.arg(aliases=("-n",))] = 2
    """Processes to start (process ids 0 .. N-1)."""
    devices_per_process: int = 0
    """Fake this many host CPU devices in each process (0: leave XLA_FLAGS as they are)."""
    port: int = 0
    """The coordinator's port on 127.0.0.1 (0: a free one)."""
    timeout: float = 0.0
    """Kill every process after this many seconds and exit 124 (0: no limit)."""

    def __post_init__(self):
        if self.processes < 1 or self.devices_per_process < 0 or self.timeout < 0 or not 0 <= self.port < 65536:
            raise ValueError(
                f"need processes >= 1, devices_per_process >= 0, timeout >= 0 and a port in 0..65535; got {self}"
            )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_environment(args: LaunchArgs, process_id: int, port: int) -> dict[str, str]:
    """The environment of process `process_id`: this one's, plus the coordinator, the process count and id and,
    with `devices_per_process`, XLA's host device count."""
    env = {
        **os.environ,
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        PROCESS_COUNT_VARIABLE: str(args.processes),
        PROCESS_ID_VARIABLE: str(process_id),
    }
    if args.devices_per_process:
        flag = f"--xla_force_host_platform_device_count={args.devices_per_process}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    return env


def launch(command: Sequence[str], args: LaunchArgs) -> int:
    """Runs `command` as `args.processes` processes; returns 0 if all exit 0, else the first failure's exit code
    (124 on timeout). A negative code (a signal) is returned as 128 + the signal's number, as a shell does."""
    port = args.port or _free_port()
    with tempfile.TemporaryDirectory(prefix="ssm_jax_launch_") as logs:
        processes, log_paths = [], []
        for process_id in range(args.processes):
            log_path = Path(logs) / f"process_{process_id}.log"
            output = None if process_id == 0 else log_path.open("w")
            env = process_environment(args, process_id, port)
            stderr = None if output is None else subprocess.STDOUT
            processes.append(subprocess.Popen(list(command), env=env, stdout=output, stderr=stderr))
            if output is not None:
                output.close()  # the process holds its own copy of the descriptor
            log_paths.append(log_path)
        terminate = lambda signum, frame: [p.send_signal(signal.SIGTERM) for p in processes if p.poll() is None]
        previous_term = signal.signal(signal.SIGTERM, terminate)
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends Ctrl-C to every process
        try:
            code = _wait(processes, args.timeout)
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)
        if code == TIMED_OUT:
            print(f"error: the {args.processes} processes ran past --timeout {args.timeout:g} s", file=sys.stderr)
        for process_id, (process, log_path) in enumerate(zip(processes, log_paths, strict=True)):
            if process_id and process.returncode not in (0, -signal.SIGKILL):
                tail = log_path.read_text(errors="replace").splitlines()[-_TAIL_LINES:]
                print(f"process {process_id} exited with code {process.returncode}; its last lines:", file=sys.stderr)
                print("\n".join(f"  [{process_id}] {line}" for line in tail), file=sys.stderr)
    return code


STOP_GRACE = 60.0
"""Seconds the other processes get to follow one that stopped on SIGTERM (143) before they are killed: the stop at a
chunk's end is agreed by all and they exit together, but one stopped alone (SIGTERM while it compiled) would leave
the others waiting in a collective for ever."""


def _wait(processes: list[subprocess.Popen], timeout: float) -> int:
    """Waits for every process; the first to fail (or the timeout) kills the rest, and those still running
    `STOP_GRACE` seconds after one stopped on SIGTERM are killed too. Returns the exit code."""
    deadline = time.monotonic() + timeout if timeout else None
    stop_deadline = None
    while True:
        codes = [process.poll() for process in processes]
        failed = [code for code in codes if code not in (None, 0, TERMINATED)]  # 143: stopped, its chunk saved
        if TERMINATED in codes and stop_deadline is None:
            stop_deadline = time.monotonic() + STOP_GRACE
        stopped_late = stop_deadline is not None and time.monotonic() > stop_deadline
        if failed or stopped_late or (deadline is not None and time.monotonic() > deadline):
            for process in processes:
                if process.poll() is None:
                    process.kill()
            for process in processes:
                process.wait()
            if failed:
                return 128 - failed[0] if failed[0] < 0 else failed[0]
            return TERMINATED if stopped_late else TIMED_OUT
        if all(code in (0, TERMINATED) for code in codes):
            return TERMINATED if TERMINATED in codes else 0
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("error: name the command after --, e.g. python -m ssm_jax.launch -n 2 -- ssm-jax train", file=sys.stderr)
        return 2
    split = argv.index("--")
    try:
        args = parse(LaunchArgs, argv[:split], "python -m ssm_jax.launch", LaunchArgs.__doc__)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return launch(argv[split + 1 :], args)


if __name__ == "__main__":
    raise SystemExit(main())
