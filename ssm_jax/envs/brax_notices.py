"""brax's own output on import and on model loading, filtered: the two notices it prints on every run are dropped,
anything else passes through. Import brax's envs from here (`from ssm_jax.envs.brax_notices import brax_envs`)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings

__all__ = ["brax_envs", "without_model_loading_notices", "without_optional_gpu_notices"]

_OPTIONAL_GPU_NOTICES = ("Failed to import warp", "Failed to import mujoco_warp")


@contextlib.contextmanager
def without_optional_gpu_notices():
    """mujoco.mjx prints "Failed to import warp: ..." on stdout at import when its optional GPU backend (NVIDIA Warp)
    is absent, which it always is here; drop those lines and pass any other output through."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        yield
    sys.stdout.writelines(
        line for line in captured.getvalue().splitlines(keepends=True) if not line.startswith(_OPTIONAL_GPU_NOTICES)
    )


with without_optional_gpu_notices():
    from brax import envs as brax_envs

_MODEL_LOADING_NOTICE = "WARNING: compiler attribute 'settotalmass' is deprecated"
_UNMAINTAINED_WARNING = "Brax System, piplines and environments are not actively being maintained"


@contextlib.contextmanager
def without_model_loading_notices():
    """Loading brax's halfcheetah makes mujoco warn (from C, on file descriptor 2) that the model's `settotalmass`
    is deprecated, and brax warn that it is unmaintained, on every run. Drop exactly those two; any other output
    passes through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNMAINTAINED_WARNING)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines, after_notice = captured.read().decode(errors="replace").splitlines(keepends=True), False
            for line in lines:
                dropped = line.startswith(_MODEL_LOADING_NOTICE) or (after_notice and not line.strip())
                after_notice = line.startswith(_MODEL_LOADING_NOTICE)  # mujoco follows it with a blank line
                if not dropped:
                    sys.stderr.write(line)
