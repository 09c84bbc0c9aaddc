"""The wall time of an experiment's whole command, and how much of it JAX spent tracing, lowering and compiling.

    python -m benchmarks.command_time                                   # README command 1 on mujoco, then spring
    python -m benchmarks.command_time --preset smoke --backends spring mujoco

For each backend, `python -m <module> --preset <preset> --backend <backend>` runs in a fresh process (writing into
a scratch directory), under listeners on JAX's own compile events (`jax.monitoring`: jaxpr tracing, lowering to
MLIR, XLA's compile), which sum the seconds of each. The commands run one after the other, so a shared machine's
load can fall on one more than another: compare the compile seconds, which depend little on load, and read the
wall times with that in mind. Writes `benchmarks/results/command_time.json` and prints a table.
"""

from __future__ import annotations

import dataclasses
import json
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import HarnessArgs, report
from ssm_jax.config.parsing import command_line

COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
}
"""JAX's duration events (jax._src.dispatch) and the column each sums into."""


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    module: str = "experiments.halfcheetah_vel"
    """The command: `python -m <module>`."""
    preset: str = "cpu"
    """Its --preset (cpu: README command 1)."""
    backends: tuple[str, ...] = ("mujoco", "spring")


def timed_run(result_path: str, module: str, argv: list[str]) -> None:
    """Runs `python -m module *argv` in this process with JAX's compile events summed; writes the sums and the wall
    time to `result_path` as JSON."""
    import jax

    totals = dict.fromkeys(COMPILE_EVENTS.values(), 0.0)

    def listen(event: str, seconds: float, **kwargs) -> None:
        del kwargs
        if event in COMPILE_EVENTS:
            totals[COMPILE_EVENTS[event]] += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    start = time.perf_counter()
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    Path(result_path).write_text(json.dumps({"wall_s": time.perf_counter() - start, **totals}))


def main(args: Args) -> list[dict]:
    rows = []
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix="ssm_jax_command_time_") as scratch:
            result = Path(scratch) / "times.json"
            flags = ["--preset", args.preset, "--backend", backend, "--out-dir", str(Path(scratch) / "runs")]
            command = [sys.executable, "-m", "benchmarks.command_time", "--timed-run", str(result), args.module, *flags]
            print(f"running python -m {args.module} {' '.join(flags)}", flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times = json.loads(result.read_text())
        compile_s = sum(times[column] for column in COMPILE_EVENTS.values())
        rows.append({"command": f"python -m {args.module} --preset {args.preset}", "backend": backend,
                     **times, "compile_s": compile_s, "compile_share": compile_s / times["wall_s"]})  # fmt: skip
    report("command_time", rows, ["command", "backend", "wall_s", "compile_s", "xla_compile_s", "compile_share"])
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--timed-run"]:
        timed_run(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main(command_line(Args))
