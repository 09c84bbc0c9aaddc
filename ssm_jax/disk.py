"""A write that finds its device full, its quota or its file size limit reached, as one line: where, how much it
needed, how much is free (`OutOfSpace`). Checkpoints, config files and metrics logs all write through it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


class OutOfSpace(OSError):
    """A write found its device full, or its quota or file size limit reached (one line: where, how much it
    needed, how much is free)."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def space_errno(error: BaseException) -> int | None:
    """The errno if `error`, or an exception it was raised from, is a full device, quota or file size limit (as
    Python's `OSError` or as tensorstore reports it: `[os_error_code='28']`); None otherwise."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            return error.errno
        reported = [code for code in _NO_SPACE if f"os_error_code='{code}'" in str(error)]
        if reported:
            return reported[0]
        error = error.__cause__ or error.__context__
    return None


def out_of_space(path: str | Path, needed: int, code: int = errno.ENOSPC) -> OutOfSpace:
    """The one-line error for a write of at most `needed` bytes under `path` that failed with `code`."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    reason = os.strerror(code)
    return OutOfSpace(
        f"{reason[0].lower()}{reason[1:]} writing {path}: it needs up to {_size(needed)}, {_size(free)} is free"
    )


@contextlib.contextmanager
def full_device_as_one_line(path: str | Path, needed: int) -> Iterator[None]:
    """Within the block (a write of at most `needed` bytes under `path`), a full device raises `OutOfSpace`."""
    try:
        yield
    except OSError as error:
        code = space_errno(error)
        if code is None:
            raise
        raise out_of_space(path, needed, code) from None


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{n} bytes"
