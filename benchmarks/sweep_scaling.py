"""Vmapped sweeps against sequential runs: N meta-training runs as one `jax.vmap`ped program.

    python -m benchmarks.sweep_scaling [--sizes 1 2 4 8] [--workloads navigation sinusoid]

For each workload and N, the seconds of N runs (seeds 0..N-1) trained by one compiled vmapped program, against N
one-run calls in sequence (the one-run program compiled once). Compile time is excluded from both and reported
apart. Workloads:

- `navigation`: `navigation_iterations` meta-iterations at the paper's batch (20 tasks x 20 trajectories x horizon
  100, MLP 2 x 100, one inner step, second order, three PPO epochs), through `ssm_jax.sweep.make_programs`;
- `sinusoid`: `sinusoid_iterations` MAML updates of the paper's regression (MLP 2 x 40, meta-batch 25, 10 shots).

Writes `benchmarks/results/sweep_scaling.json` and prints a table: `vmapped_over_one` is the wall time of N
vmapped runs over that of one run (the target: <= 2.5 at N = 8).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax

from benchmarks.common import HarnessArgs, report
from ssm_jax import sweep
from ssm_jax.config import CONFIGS, build, build_regression
from ssm_jax.config.parsing import command_line
from ssm_jax.trainers import HParams

WORKLOADS = ("navigation", "sinusoid")
Runner = Callable[[Sequence[int], int], object]
"""`runner(seeds, round)` trains one run per seed (round folds into the training keys) and returns its outputs."""


@dataclasses.dataclass(frozen=True)
class Args(HarnessArgs):
    sizes: tuple[int, ...] = (1, 2, 4, 8)
    workloads: tuple[str, ...] = WORKLOADS
    navigation_iterations: int = 5
    """Meta-iterations timed per navigation measurement (one chunk)."""
    sinusoid_iterations: int = 1000
    """MAML updates timed per sinusoid measurement."""

    def __post_init__(self):
        super().__post_init__()
        unknown = sorted(set(self.workloads) - set(WORKLOADS))
        if unknown:
            raise ValueError(f"unknown workloads {unknown}; expected any of {', '.join(WORKLOADS)}")
        if not self.sizes or min(self.sizes) < 1:
            raise ValueError(f"sizes must be ints >= 1, got {self.sizes}")


def program_runners(trainer, config, iterations: int) -> Callable[[int], Runner]:
    """Runners of `trainer`'s vmapped training program (`sweep.make_programs`), `iterations` per call, with
    `config`'s hyperparameters."""
    hparams = HParams.create(config.inner_lr, config.outer_lr, config.experience_weight)

    def make_runner(_: int) -> Runner:
        programs = sweep.make_programs(trainer, iterations)

        def run(seeds, round_):
            grid = sweep.make_grid(seeds)
            states = programs.init(grid.keys.init, grid.hparams(hparams))
            return programs.train(states, jax.vmap(jax.random.fold_in, (0, None))(grid.keys.train, round_))

        return run

    return make_runner


def navigation_runners(iterations: int) -> Callable[[int], Runner]:
    config = CONFIGS["navigation-ppo"]
    return program_runners(build(config)[1], config, iterations)


def sinusoid_runners(iterations: int) -> Callable[[int], Runner]:
    config = CONFIGS["sinusoid"]
    return program_runners(build_regression(config, 10, "maml"), config, iterations)


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def scaling(workload: str, make_runner: Callable[[int], Runner], sizes: Sequence[int]) -> list[dict]:
    single = make_runner(1)  # the N = 1 program, reused for the sequential runs
    _timed(single, [0], 0)
    rows = []
    for n in sizes:
        runner = make_runner(n) if n > 1 else single
        first_s = _timed(runner, list(range(n)), 0)  # compiles (N > 1)
        vmapped_s = _timed(runner, list(range(n)), 1)
        sequential_s = sum(_timed(single, [i], 1) for i in range(n))
        rows.append(
            {
                "workload": workload,
                "runs": n,
                "vmapped_s": vmapped_s,
                "sequential_s": sequential_s,
                "vmapped_s_per_run": vmapped_s / n,
                "speedup_over_sequential": sequential_s / vmapped_s,
                "compile_s": max(first_s - vmapped_s, 0.0),
            }
        )
        print(f"{workload} N={n}: vmapped {vmapped_s:.2f} s, sequential {sequential_s:.2f} s", flush=True)
    one_run = next((row["vmapped_s"] for row in rows if row["runs"] == 1), None)
    for row in rows:
        row["vmapped_over_one"] = None if one_run is None else row["vmapped_s"] / one_run
    return rows


def main(args: Args) -> list[dict]:
    runners = {
        "navigation": lambda: navigation_runners(args.navigation_iterations),
        "sinusoid": lambda: sinusoid_runners(args.sinusoid_iterations),
    }
    rows = [row for workload in args.workloads for row in scaling(workload, runners[workload](), args.sizes)]
    columns = ["workload", "runs", "vmapped_s", "vmapped_s_per_run", "sequential_s", "speedup_over_sequential"]
    report(
        "sweep_scaling",
        rows,
        [*columns, "vmapped_over_one"],
        note=f"navigation {args.navigation_iterations} meta-iterations, sinusoid {args.sinusoid_iterations} updates",
    )
    return rows


if __name__ == "__main__":
    main(command_line(Args))
