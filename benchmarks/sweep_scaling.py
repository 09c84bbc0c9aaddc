"""Vmapped sweeps against sequential runs: N navigation meta-training runs as one `jax.vmap`ped program.

    python -m benchmarks.sweep_scaling [--sizes 1 2 4 8] [--iterations 5]

For each N, the seconds of `iterations` meta-iterations of N runs (seeds 0..N-1, navigation at the paper's
batch: 20 tasks x 20 trajectories x horizon 100, MLP 2 x 100, one inner step, second order) trained by one
compiled vmapped chunk, against N one-run chunks called in sequence (the one-run program compiled once). Compile
time is excluded from both and reported apart. Writes `benchmarks/results/sweep_scaling.json` and prints a table:
`vmapped_over_one` is the wall time of N vmapped runs over that of one run (the target: <= 2.5 at N = 8).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import tyro

from benchmarks.common import report
from experiments import navigation
from experiments.meta_rl import _build
from ssm_jax import sweep
from ssm_jax.train import HParams


@dataclasses.dataclass(frozen=True)
class Args:
    sizes: tuple[int, ...] = (1, 2, 4, 8)
    iterations: int = 5
    """Meta-iterations timed per measurement (one chunk)."""


def _timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - start, out


def main(args: Args) -> list[dict]:
    base = dataclasses.replace(navigation.PRESETS["default"], chunk_size=args.iterations)
    _, trainer = _build(base)
    hparams = HParams.create(base.inner_lr, base.outer_lr, base.experience_weight)
    single = sweep.make_programs(trainer, args.iterations)  # N = 1 program, reused for the sequential runs
    rows = []
    for n in args.sizes:
        grid = sweep.make_grid(range(n))
        programs = sweep.make_programs(trainer, args.iterations) if n > 1 else single
        keys = grid.keys
        states = programs.init(keys.init, grid.hparams(hparams))
        compile_s, (states, _) = _timed(programs.train, states, keys.train)  # the first call compiles
        vmapped_s, _ = _timed(programs.train, states, jax.vmap(jax.random.fold_in, (0, None))(keys.train, 1))
        sequential_s = 0.0
        for i in range(n):
            one = jax.tree.map(lambda x, i=i: x[i : i + 1], keys)
            state = single.init(one.init, sweep.make_grid([i]).hparams(hparams))
            seconds, _ = _timed(single.train, state, one.train)
            sequential_s += seconds
        rows.append(
            {
                "runs": n,
                "vmapped_s": vmapped_s,
                "sequential_s": sequential_s,
                "vmapped_s_per_run": vmapped_s / n,
                "speedup_over_sequential": sequential_s / vmapped_s,
                "compile_s": compile_s - vmapped_s,
            }
        )
        print(f"N={n}: vmapped {vmapped_s:.2f} s, sequential {sequential_s:.2f} s", flush=True)
    one_run = rows[0]["vmapped_s"] if rows[0]["runs"] == 1 else None
    for row in rows:
        row["vmapped_over_one"] = None if one_run is None else row["vmapped_s"] / one_run
    report(
        "sweep_scaling",
        rows,
        ["runs", "vmapped_s", "vmapped_s_per_run", "sequential_s", "speedup_over_sequential", "vmapped_over_one"],
        note=f"{args.iterations} meta-iterations per measurement",
    )
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
