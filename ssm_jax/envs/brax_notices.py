"""brax, loaded on first use with its Python-level notices filtered: `brax_environment(name, backend)`.

`import ssm_jax.envs` does not import brax; the first brax family built does. Two of brax's notices are dropped there,
each at the Python level (no file descriptor is touched, so a native crash's message always reaches the terminal):
- mujoco.mjx's "Failed to import warp ..." lines on stdout (its optional GPU backend, absent here);
- brax's UserWarning that it is "not actively being maintained" (a `warnings` filter, scoped to the load).

One notice still prints, once per process, when halfcheetah's model first loads: mujoco's C parser writes
"WARNING: compiler attribute 'settotalmass' is deprecated" straight to stderr, out of Python's reach.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from typing import Any

__all__ = ["brax_environment", "without_optional_gpu_notices"]

_OPTIONAL_GPU_NOTICES = ("Failed to import warp", "Failed to import mujoco_warp")
_UNMAINTAINED_WARNING = "Brax System, piplines and environments are not actively being maintained"


@contextlib.contextmanager
def without_optional_gpu_notices():
    """Drops the "Failed to import warp: ..." lines printed (by Python's `print`) while inside; any other output
    passes through."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    sys.stdout.writelines(
        line for line in captured.getvalue().splitlines(keepends=True) if not line.startswith(_OPTIONAL_GPU_NOTICES)
    )


def brax_environment(name: str, backend: str, **kwargs: Any):
    """`brax.envs.get_environment(name, backend=backend, **kwargs)`, importing brax on first call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNMAINTAINED_WARNING)
        with without_optional_gpu_notices():
            from brax import envs
        return envs.get_environment(name, backend=backend, **kwargs)
