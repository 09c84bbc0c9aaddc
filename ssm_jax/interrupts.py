"""Ctrl-C and SIGTERM in an entry point: at any moment they stop cleanly, never through a traceback or a crash.

    with interrupts.abort_on_interrupt():        # an entry point's whole run: Ctrl-C exits 130 at once, SIGTERM 143
        with interrupts.stop_at_chunk_end() as requested:   # the host loop: the first signal is a request
            ...                                   # read `requested()` (the signal, or 0) at the end of each chunk
        with interrupts.completing():            # a checkpoint or config being written: an abort waits for it

The first Ctrl-C or SIGTERM while training stops the loop at the end of the chunk in flight; the caller saves it and
exits with `stopped_exit_code` (0 after Ctrl-C, the user's own stop; 143 after SIGTERM, a scheduler's preemption,
so a job script sees the run did not finish). At any other moment (importing, compiling, evaluating), or a second
time, the process ends at once with exit code 128 + the signal (`ABORTED`, 130, for Ctrl-C; `TERMINATED`, 143, for
SIGTERM) by `os._exit`: a `KeyboardInterrupt` unwinding through XLA crashes the process, and nothing in flight needs
unwinding. A write that must not be cut short (`completing`) finishes first, so an abort leaves every checkpoint
complete and no staging directory. This module imports nothing heavy, so `python -m ssm_jax` installs the abort
before it imports JAX.
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
TERMINATED = 143
"""The exit code of a SIGTERM: after the chunk in flight is saved, or at once outside training (128 + SIGTERM)."""
SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What stops a run: Ctrl-C, and a scheduler's SIGTERM (preemption, a time limit)."""


def stopped_exit_code(signum: int) -> int:
    """The exit code of a run stopped at a chunk's end by `signum`: 0 for Ctrl-C, 143 for SIGTERM."""
    return 0 if signum == signal.SIGINT else 128 + signum


class _Writes:
    """How many writes that must not be cut short are in flight, and whether an abort waits for them."""

    in_flight = 0
    abort_pending: int | None = None  # the signal of an abort waiting for them


def _name(signum: int) -> str:
    return "interrupt" if signum == signal.SIGINT else signal.Signals(signum).name


def abort(signum: int | None = signal.SIGINT, frame: object = None) -> None:
    """Ends the process at once with exit 128 + `signum` (130 for Ctrl-C) and one line on stderr; within
    `completing`, once the write in flight is complete (the line says so when the signal arrives). A half-written
    metrics line is skipped when read, and the kernel releases the run's lock."""
    signum = signal.SIGINT if signum is None else signum
    if _Writes.in_flight:
        if _Writes.abort_pending is None:
            line = f"\n{_name(signum)}: aborting once the checkpoint being written is complete"
            print(line, file=sys.stderr, flush=True)
        _Writes.abort_pending = signum
        return
    print(f"\n{_name(signum)}: aborted; the newest checkpoint is intact", file=sys.stderr, flush=True)
    _exit(signum)


def _exit(signum: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


@contextlib.contextmanager
def completing() -> Iterator[None]:
    """Within the block (one write to a run directory: a checkpoint step, config.json), an abort waits until the
    block has finished."""
    _Writes.in_flight += 1
    try:
        yield
    finally:
        _Writes.in_flight -= 1
        if not _Writes.in_flight and _Writes.abort_pending is not None:
            _exit(_Writes.abort_pending)  # its line was printed when the signal arrived


def _on_main_thread() -> bool:
    """Signal handlers can only be set from the main thread (a notebook's or a test's worker thread keeps Python's)."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def abort_on_interrupt() -> Iterator[None]:
    """Within the block (an entry point's whole run), Ctrl-C or SIGTERM aborts at once (`abort`);
    `stop_at_chunk_end` narrows them to a stop at the end of the chunk in flight while the host loop trains."""
    with _handling(abort):
        yield


@contextlib.contextmanager
def _handling(handler: Callable[[int, object], None]) -> Iterator[None]:
    """`handler` for every signal of `SIGNALS` within the block (on the main thread only: a notebook's or a test's
    worker thread keeps Python's), the previous handlers restored after it."""
    if not _on_main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def stop_at_chunk_end() -> Iterator[Callable[[], int]]:
    """Turns the first SIGINT or SIGTERM into a request the loop reads at the end of a chunk (the block yields the
    reader, which returns the signal, or 0 when none came); a second signal aborts at once. A request that arrives
    after the loop's last read (its last chunk done and saved) aborts when the block ends without an error: the loop
    has no chunk left to stop after, and what follows it runs under `abort_on_interrupt`."""
    requested, seen = [], [False]  # seen: whether the loop has read a request (it then stops, raising)

    def request(signum, frame):
        if requested:
            abort(signum)
            return
        requested.append(signum)
        again = "Ctrl-C again aborts" if signum == signal.SIGINT else "then exits 143"
        print(f"\n{_name(signum)}: stopping after the chunk in flight ({again})", file=sys.stderr, flush=True)

    def reader() -> int:
        seen[0] = seen[0] or bool(requested)
        return requested[0] if requested else 0

    with _handling(request):
        yield reader
    if requested and not seen[0]:
        abort(requested[0])


def ignore_while_exiting() -> None:
    """Ctrl-C or SIGTERM once an entry point's work is done is ignored, so the process exits with the code its work
    earned: Python restores the default SIGINT action while it shuts down, and a press then would kill it (exit -2)."""
    if _on_main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
