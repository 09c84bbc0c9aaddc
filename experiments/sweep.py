"""A sweep over seeds and traced hyperparameters as one compiled program (`ssm_jax.sweep`).

    python -m experiments.sweep                                        # navigation: 3 seeds x inner lr 0.05, 0.1
    python -m experiments.sweep --num-seeds 8 --sweep-inner-lr 0.1 --sweep-outer-lr 1e-3 3e-3 1e-2
    python -m experiments.sweep --preset smoke                         # seconds, for tests
    python -m ssm_jax.launch -n 2 -- python -m experiments.sweep --distributed   # runs over 2 processes' devices
    python -m experiments.sweep --task-devices 2 ...                   # and each run's tasks over 2 devices

Every run of the grid (each swept value with each seed) meta-trains in one `jax.jit(jax.vmap(trainer.train))`
program and is evaluated on its own held-out tasks by one vmapped evaluation (standard adaptation). Run `i` is the
run `python -m experiments.navigation --preset ppo --seed s --inner-lr v ...` would make alone, with the same keys.
The sweep's config is a `RunConfig` (every flag of the experiments: `--iterations`, `--model`, ...; by default
`navigation-ppo`, whose three PPO epochs cost less than the default's TRPO step) with the values to sweep
(`--sweep-inner-lr`, `--sweep-outer-lr`, `--sweep-experience-weight`): only the seed and the `HParams` fields
vary inside one program.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl (one record per run and chunk), runs.json (one
row per run), results.json (per swept value: return after 0..K steps, pooled over seeds and held-out tasks, mean
and 95% CI; seconds per run), results.md and `sweep_<field>.png` per swept field.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments.common import run_main
from ssm_jax import distributed, sweep
from ssm_jax.config import CONFIGS, build
from ssm_jax.config.parsing import exit_with_error
from ssm_jax.config.studies import SweepArgs
from ssm_jax.report.sweep import pooled
from ssm_jax.report.writers import publish
from ssm_jax.run_files import MetricsLog, make_run_dir, write_config, write_json
from ssm_jax.runs import non_finite, run_records, train_phase
from ssm_jax.trainers import HParams

PRESETS = {name.removeprefix("sweep-"): CONFIGS[name] for name in CONFIGS if name.startswith("sweep-")}
"""The presets, by their names in `ssm_jax.config.CONFIGS` (`sweep-<preset>`)."""


def main(args: SweepArgs) -> dict:
    if args.distributed:
        try:
            distributed.initialize()
        except distributed.DistributedError as error:
            exit_with_error(str(error))
    swept = {name: values for name, values in args.swept().items() if values}
    grid = sweep.make_grid(args.seeds, **swept)
    devices = jax.device_count()
    if devices % args.task_devices or args.trainer.tasks_per_batch % args.task_devices:
        exit_with_error(
            f"--task-devices {args.task_devices} must divide the {devices} devices and --tasks-per-batch "
            f"{args.trainer.tasks_per_batch}"
        )
    if grid.size % (devices // args.task_devices):
        exit_with_error(f"{grid.size} runs cannot be split evenly over {devices // args.task_devices} devices")
    base = args
    run_dir = make_run_dir(args.out_dir)
    write_config(run_dir, args)
    mesh = distributed.make_mesh(tasks=args.task_devices) if devices > 1 else None
    env, trainer = build(base, distributed.task_sharding(mesh) if args.task_devices > 1 else None)
    programs = sweep.make_programs(trainer, base.chunk_size, spmd_axis_name=None if mesh is None else distributed.RUNS)
    place = (lambda runs: runs) if mesh is None else (lambda runs: distributed.shard_runs(runs, mesh))
    hparams = grid.hparams(HParams.create(base.inner_lr, base.outer_lr, base.experience_weight))
    keys = grid.keys

    started = time.perf_counter()
    states = place(programs.init(keys.init, hparams))
    records = run_records({}, grid.runs(), started)  # one record per run and chunk
    postfix = lambda m: {"return": float(np.mean(m["post_adaptation_return"][:, -1]))}
    log = MetricsLog(run_dir / "metrics.jsonl")
    train = lambda states, chunk_keys: programs.train(states, place(chunk_keys))
    states = train_phase(
        train, states, keys.train, base.iterations, base.chunk_size, f"sweep ({grid.size} runs)", log, records,
        postfix=postfix, halt_on_divergence=False,  # the other runs finish; the diverged ones are reported per run
    )  # fmt: skip
    jax.block_until_ready(states)
    train_seconds = time.perf_counter() - started
    tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, base.evaluation.eval_tasks)
    returns, _ = programs.evaluate(states, place(eval_keys), place(tasks))
    returns = distributed.host_copy(returns)  # [R, E, K + 1]

    diverged = {run for _, run in non_finite(states, run_axis=True)}  # these are left out of the pooled table
    runs = [
        {**run, "diverged": i in diverged, "return_mean": returns[i].mean(axis=0).tolist()}
        for i, run in enumerate(grid.runs())
    ]
    aggregate = {
        name: {
            value: pooled(returns[[i for i, run in enumerate(runs) if run[name] == value and not run["diverged"]]])
            for value in sorted(set(values))
        }
        for name, values in grid.values.items()
    }
    results = {
        "runs": len(runs),
        "processes": jax.process_count(),
        "devices": devices,
        "train_seconds": train_seconds,
        "seconds_per_run": train_seconds / len(runs),
        "aggregate": aggregate,
        "diverged_runs": [run for run in runs if run["diverged"]],
        "run_dir": str(run_dir),
    }
    if distributed.is_writer():
        write_json(run_dir / "runs.json", runs)
        publish(run_dir, results, args)
    return results


if __name__ == "__main__":
    run_main(main, PRESETS, "default")
