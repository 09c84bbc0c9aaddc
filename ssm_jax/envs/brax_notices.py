"""brax, loaded on first use with its Python-level notices filtered: `brax_environment(name, backend)`.

`import ssm_jax.envs` does not import brax; the first brax family built does. Two of brax's notices are dropped there,
each at the Python level (no file descriptor is touched, so a native crash's message always reaches the terminal):
- mujoco.mjx's "Failed to import warp ..." lines on stdout (its optional GPU backend, absent here);
- brax's UserWarning that it is "not actively being maintained" (a `warnings` filter, scoped to the load).

mujoco's own warnings go through a Python handler (`mujoco.set_mju_user_warning`) installed with the first brax
family: its default handler also appends each warning to `MUJOCO_LOG.TXT` in the working directory. Warnings reach
stderr as one line each, except the deprecation notice brax's halfcheetah model triggers when it loads ("compiler
attribute 'settotalmass' is deprecated"), which is dropped; each kind of warning is shown once (a policy whose step
diverged sends NaN actions, and mujoco warns at every env step of it).
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
_MODEL_DEPRECATION = "compiler attribute 'settotalmass' is deprecated"


_SHOWN: set[str] = set()
"""The kinds of mujoco warning already shown (the message up to its simulation time)."""


def _mujoco_warning(message: str) -> None:
    """mujoco's warnings: on stderr, never in a file, each kind once (a diverged policy's NaN actions would print
    one per env step); brax's model deprecation notice dropped."""
    kind = message.split(" Time = ")[0]
    if _MODEL_DEPRECATION in message or kind in _SHOWN:
        return
    _SHOWN.add(kind)
    print(f"mujoco warning: {message} (shown once; repeats of it are not)", file=sys.stderr)


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
            import mujoco
            from brax import envs
        mujoco.set_mju_user_warning(_mujoco_warning)
        return envs.get_environment(name, backend=backend, **kwargs)
