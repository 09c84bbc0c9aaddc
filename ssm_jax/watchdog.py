"""An entry point that stops making progress ends with one line instead of waiting for ever.

    with watchdog.exit_when_stalled():   # an entry point's whole run
        ...

XLA's CPU runtime can wedge: `python -m experiments.benchmark` stopped three times with every thread idle, the main
thread in `BlockUntilReady` waiting for a completion that never arrived (docs/reliability.md). Such a process uses
no CPU at all, while one that compiles, trains, evaluates or saves keeps at least one core busy. A daemon thread
samples the process's CPU time; once it has grown by less than `IDLE_CPU_FRACTION` of the wall time over the last
`SSM_JAX_STALL_SECONDS` seconds (default `DEFAULT_STALL_SECONDS`; 0 turns the watchdog off), it prints one line and
ends the process with exit code `STALLED` (124, as `timeout` does). Checkpoints are written whole or not at all, so
the run resumes from its newest one. On a GPU or TPU the host idles while a chunk runs there, so the watchdog only
judges CPU runs. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator

STALLED = 124
"""The exit code of a process that made no progress for the stall limit."""
DEFAULT_STALL_SECONDS = 900.0
"""Fifteen minutes without CPU use: far past any file-system wait, and no compile or chunk idles the CPU."""
IDLE_CPU_FRACTION = 0.01
"""Below this share of one core over the whole window, the process is stalled."""
STALL_VARIABLE = "SSM_JAX_STALL_SECONDS"


def stall_seconds() -> float:
    """The stall limit from `SSM_JAX_STALL_SECONDS` (0: off)."""
    text = os.environ.get(STALL_VARIABLE, "")
    try:
        value = float(text) if text else DEFAULT_STALL_SECONDS
    except ValueError:
        value = math.nan
    if not value >= 0:  # a user's mistake: one line, exit 2
        print(f"error: {STALL_VARIABLE} must be a number of seconds >= 0, got {text!r}", file=sys.stderr)
        raise SystemExit(2)
    return value


@contextlib.contextmanager
def exit_when_stalled(limit: float | None = None) -> Iterator[None]:
    """Within the block, a process whose CPU time grows by less than `IDLE_CPU_FRACTION` x `limit` seconds over
    `limit` seconds (default `stall_seconds()`) prints one line and exits `STALLED`."""
    limit = stall_seconds() if limit is None else limit
    if limit <= 0:
        yield
        return
    done = threading.Event()
    thread = threading.Thread(target=_watch, args=(limit, done), name="ssm_jax-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _watch(limit: float, done: threading.Event) -> None:
    period = min(limit / 10, 5.0)
    samples: list[tuple[float, float]] = []  # (wall, cpu) over the last `limit` seconds and a period
    while not done.wait(period):
        now = (time.monotonic(), time.process_time())
        samples = [sample for sample in samples if now[0] - sample[0] <= limit + period] + [now]
        wall, cpu = now[0] - samples[0][0], now[1] - samples[0][1]
        if wall >= limit and cpu < IDLE_CPU_FRACTION * wall and not _on_accelerator():
            print(
                f"\nerror: no progress for {wall:.0f} s (the process used {cpu:.2f} s of CPU; XLA's CPU runtime may "
                f"have wedged): stopped; checkpoints are intact, so --resume continues the run ({STALL_VARIABLE} "
                "sets the limit)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(STALLED)


def _on_accelerator() -> bool:
    """Whether JAX computes on a GPU or TPU: the host then idles while a long chunk runs there, which is no stall."""
    jax = sys.modules.get("jax")
    try:
        return jax is not None and jax.default_backend() != "cpu"
    except RuntimeError:  # no backend yet
        return False
