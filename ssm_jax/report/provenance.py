"""Where a recorded run came from: the command, the commit, the machine and the wall time, in `provenance.json`
beside its results. `experiments.common.run_main` writes it when an experiment finishes; the results pages
(`experiments.results_pages`) print it under their title."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from ssm_jax import run_files
from ssm_jax.xla_flags import USER_FLAGS_VARIABLE

FILE = "provenance.json"


def machine() -> dict:
    """The machine a run's numbers depend on: CPU model and cores, architecture, the JAX backend's devices, jaxlib."""
    import jax

    cpuinfo = Path("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE) if cpuinfo.exists() else []
    devices = jax.devices()
    return {
        "cpu": models[0].strip() if models else platform.processor(),
        "cores": os.cpu_count(),
        "architecture": platform.machine(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "jaxlib": importlib.metadata.version("jaxlib"),
    }


def describe_machine(recorded: dict) -> str:
    """`"2-core AMD EPYC 7B13 (x86_64), 1 x cpu, jaxlib 0.10.2"`."""
    return (
        f"{recorded['cores']}-core {recorded['cpu']} ({recorded['architecture']}), {recorded['devices']}, "
        f"jaxlib {recorded['jaxlib']}"
    )


def commit() -> str:
    """The checkout's short commit, with " + uncommitted changes" when tracked files differ from it. `$SSM_JAX_COMMIT`,
    where the sender of a copy of a clean checkout set it, names that copy's commit (an accelerator machine gets the
    working tree beside a stale .git); code that is not a git checkout names the installed version."""
    if os.environ.get("SSM_JAX_COMMIT"):
        return f"{os.environ['SSM_JAX_COMMIT']} (a copy of that checkout)"
    checkout = Path(__file__).resolve().parent.parent
    git = lambda *args: subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True, check=False)
    try:
        head = git("rev-parse", "--short", "HEAD")
    except FileNotFoundError:  # no git on this machine
        head = subprocess.CompletedProcess([], returncode=127)
    if head.returncode != 0:
        try:
            return f"ssm-jax {importlib.metadata.version('ssm-jax')} (not a git checkout)"
        except importlib.metadata.PackageNotFoundError:
            return "unknown (not a git checkout, not installed)"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


NUMERIC_ENVIRONMENT = ("XLA_FLAGS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION", "JAX_PLATFORMS")
"""Environment variables that change what a run computes or where; a recorded command starts with those set."""


def record(run_dir: Path, module: str, argv: list[str], code: str, seconds: float) -> None:
    """Writes `run_dir/provenance.json` for a run of `python -m <module> <argv>` from commit `code` (`commit()` as
    the run started: the code it loaded) that took `seconds`; the command starts with the variables of
    `NUMERIC_ENVIRONMENT` that were set (XLA_FLAGS as the user gave them: the entry point adds the portable flags
    to every run, `ssm_jax.xla_flags.configure_entry_point`)."""
    given = {**os.environ, "XLA_FLAGS": os.environ.get(USER_FLAGS_VARIABLE, os.environ.get("XLA_FLAGS", ""))}
    settings = [f"{name}={given[name]}" for name in NUMERIC_ENVIRONMENT if given.get(name)]
    command = " ".join([*settings, "python", "-m", module, *argv])
    value = {"experiment": module, "command": command, "commit": code, "seconds": seconds, "machine": machine()}
    run_files.write_json(Path(run_dir) / FILE, value)


def wall_time(seconds: float) -> str:
    """`"42 s"`, `"9 min 5 s"`, or whole minutes from 10 minutes on."""
    total = round(seconds)
    return f"{total} s" if total < 60 else f"{total // 60} min {total % 60} s" if total < 600 else f"{total // 60} min"


def describe(recorded: dict) -> str:
    """One paragraph: the command, the commit, the wall time and the machine."""
    took = wall_time(recorded["seconds"])
    return (
        f"Recorded run: `{recorded['command']}` at commit {recorded['commit']}; {took} wall on a "
        f"{describe_machine(recorded['machine'])}.{' ' + recorded['note'] if 'note' in recorded else ''} "
        "Regenerate this page from the recorded files with `python -m experiments.results_pages`."
    )


def current_module() -> str | None:
    """The `experiments.x` module running as `__main__`, if any."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return spec.name if spec is not None and spec.name.startswith("experiments.") else None
