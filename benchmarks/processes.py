"""One sweep as one process against the same sweep as N processes of this machine (`python -m ssm_jax.launch`).

    python -m benchmarks.processes                              # the default sweep, 1 process vs 2
    python -m benchmarks.processes --processes 2 --preset smoke

Runs `python -m experiments.sweep --preset <preset>` as one process and as `processes` processes joined by JAX's
multi-process runtime (`--distributed`, each process one device: the runs split over them), and as one process
with as many (fake) devices: the same sharded program in one process. The three are taken in turn `rounds` times,
so a shared machine's drift falls on each. Each row: the sweep's training seconds (its results.json; compile
included, as a user waits for it), the wall seconds of the whole command (start-up, compile, training, evaluation,
writing), and the largest difference of its pooled returns from the one-device sweep's and from the one-process
sweep's on as many devices (sharding changes XLA's program and float round-off grows through training; several
processes change nothing more).

Writes `benchmarks/results/processes.json` and prints a table. On one machine the processes share its cores, so
this measures the cost of the multi-process runtime (collectives over gloo, one writer), not a speed-up: that
comes from processes on separate hosts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import HarnessArgs, report
from ssm_jax.config.parsing import command_line


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    processes: int = 2
    rounds: int = 1
    preset: str = "default"
    """The preset of `python -m experiments.sweep` to time."""

    def __post_init__(self):
        super().__post_init__()
        if self.processes < 2 or self.rounds < 1:
            raise ValueError(f"processes must be >= 2 and rounds >= 1, got {self.processes}, {self.rounds}")


def run_sweep(processes: int, devices: int, preset: str, out_dir: Path) -> tuple[dict, float]:
    """`(results.json, wall seconds)` of one sweep as `processes` processes (1: no launcher) with `devices` devices
    in all (fake host CPU devices where a process holds several)."""
    command = [sys.executable, "-m", "experiments.sweep", "--preset", preset, "--out-dir", str(out_dir)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    per_process = devices // processes
    if processes > 1:
        fake = ["--devices-per-process", str(per_process)] if per_process > 1 else []
        command = [sys.executable, "-m", "ssm_jax.launch", "-n", str(processes), *fake, "--", *command, "--distributed"]
    elif per_process > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={per_process}".strip()
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - started
    (run_dir,) = out_dir.iterdir()
    return json.loads((run_dir / "results.json").read_text()), wall


def pooled_means(results: dict) -> np.ndarray:
    return np.array([stats["mean"] for by_value in results["aggregate"].values() for stats in by_value.values()])


def main(args: Args) -> list[dict]:
    layouts = [(1, 1), (1, args.processes), (args.processes, args.processes)]  # (processes, devices)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            runs = {}
            for processes, devices in layouts:
                out_dir = Path(scratch) / f"{round_}_{processes}_{devices}"
                runs[processes, devices] = run_sweep(processes, devices, args.preset, out_dir)
                print(f"round {round_}, {processes} process(es), {devices} device(s): done", flush=True)
            difference = lambda a, b: float(np.max(np.abs(pooled_means(runs[a][0]) - pooled_means(runs[b][0]))))
            for processes, devices in layouts:
                results, wall = runs[processes, devices]
                rows.append(
                    {
                        "round": round_,
                        "processes": processes,
                        "devices": devices,
                        "runs": results["runs"],
                        "train_s": results["train_seconds"],
                        "wall_s": wall,
                        "vs_one_device": difference((processes, devices), (1, 1)),
                        "vs_one_process_same_devices": difference((processes, devices), (1, devices)),
                    }
                )
    columns = ["round", "processes", "devices", "runs", "train_s", "wall_s", "vs_one_device"]
    report(
        "processes", rows, [*columns, "vs_one_process_same_devices"], note=f"experiments.sweep --preset {args.preset}"
    )
    return rows


if __name__ == "__main__":
    main(command_line(Args))
