"""Ctrl-C in an entry point: at any moment it stops cleanly, never through a traceback or a crash.

    with interrupts.abort_on_interrupt():        # an entry point's whole run: Ctrl-C exits 130 at once
        with interrupts.stop_at_chunk_end() as requested:   # the host loop: the first Ctrl-C is a request
            ...                                   # read `requested()` at the end of each chunk
        with interrupts.completing():            # a checkpoint or config being written: an abort waits for it

The first Ctrl-C while training stops the loop at the end of the chunk in flight (the caller saves it and exits 0);
at any other moment (importing, compiling, evaluating), or a second time, the process ends at once with exit code
`ABORTED` (130) by `os._exit`: a `KeyboardInterrupt` unwinding through XLA crashes the process, and nothing in
flight needs unwinding. A write that must not be cut short (`completing`) finishes first, so an abort leaves every
checkpoint complete and no staging directory. This module imports nothing heavy, so `python -m ssm_jax` installs
the abort before it imports JAX.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

ABORTED = 130
"""The exit code of a Ctrl-C that abandons the work in flight (the shell's 128 + SIGINT)."""


class _Writes:
    """How many writes that must not be cut short are in flight, and whether an abort waits for them."""

    in_flight = 0
    abort_pending = False


def abort(signum: int | None = None, frame: object = None) -> None:
    """Ends the process at once with exit `ABORTED` and one line on stderr; within `completing`, once the write in
    flight is complete. A half-written metrics line is skipped when read, and the kernel releases the run's lock."""
    if _Writes.in_flight:
        if not _Writes.abort_pending:
            print("\ninterrupt: aborting once the checkpoint being written is complete", file=sys.stderr, flush=True)
        _Writes.abort_pending = True
        return
    print("\ninterrupt: aborted; the newest checkpoint is intact", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(ABORTED)


@contextlib.contextmanager
def completing() -> Iterator[None]:
    """Within the block (one write to a run directory: a checkpoint step, config.json), an abort waits until the
    block has finished."""
    _Writes.in_flight += 1
    try:
        yield
    finally:
        _Writes.in_flight -= 1
        if not _Writes.in_flight and _Writes.abort_pending:
            _Writes.abort_pending = False
            abort()


def _on_main_thread() -> bool:
    """Signal handlers can only be set from the main thread (a notebook's or a test's worker thread keeps Python's)."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def abort_on_interrupt() -> Iterator[None]:
    """Within the block (an entry point's whole run), Ctrl-C aborts at once (`abort`); `stop_at_chunk_end` narrows
    it to a stop at the end of the chunk in flight while the host loop trains."""
    if not _on_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, abort)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def stop_at_chunk_end() -> Iterator[Callable[[], bool]]:
    """Turns the first SIGINT into a request the loop reads at the end of a chunk (the block yields the reader);
    the second aborts at once. A request that arrives after the loop's last read (its last chunk done and saved)
    aborts when the block ends without an error: the loop has no chunk left to stop after, and what follows it runs
    under `abort_on_interrupt`."""
    if not _on_main_thread():
        yield lambda: False
        return
    requested, seen = [], [False]  # seen: whether the loop has read a request (it then stops, raising)

    def request(signum, frame):
        if requested:
            abort()
        requested.append(signum)
        print("\ninterrupt: stopping after the chunk in flight (Ctrl-C again aborts)", file=sys.stderr, flush=True)

    def reader() -> bool:
        seen[0] = seen[0] or bool(requested)
        return bool(requested)

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield reader
    finally:
        signal.signal(signal.SIGINT, previous)
    if requested and not seen[0]:
        abort()


def ignore_while_exiting() -> None:
    """Ctrl-C once an entry point's work is done is ignored, so the process exits with the code its work earned:
    Python restores the default SIGINT action while it shuts down, and a press then would kill it (exit -2)."""
    if _on_main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
