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

import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from experiments.common import run_main
from ssm_jax import distributed, sweep
from ssm_jax.cli import exit_with_error
from ssm_jax.config import CONFIGS, PPO, RunConfig, build, extend
from ssm_jax.config.io import register_config
from ssm_jax.report import markdown_table, mean_ci, new_figure, save_figure, steps_label
from ssm_jax.run_files import MetricsLog, make_run_dir, write_config, write_json
from ssm_jax.runs import non_finite, train_phase
from ssm_jax.trainers import HParams


@register_config
@dataclasses.dataclass(frozen=True)
class SweepArgs(RunConfig):
    """A `RunConfig` (every run's shared settings; its inner_lr, outer_lr and experience_weight are the values of
    the fields not swept) and the values to sweep."""

    RESUMABLE: ClassVar[bool] = False
    ADDED_FIELDS: ClassVar[dict] = {"task_devices": 1}
    """Sweeps stored before `task_devices` split no run's tasks."""

    name: str = "sweep"
    num_seeds: int = 3
    sweep_inner_lr: tuple[float, ...] = (0.05, 0.1)
    """Inner learning rates to sweep (empty: the config's inner_lr)."""
    sweep_outer_lr: tuple[float, ...] = ()
    """Outer learning rates to sweep (empty: the config's outer_lr)."""
    sweep_experience_weight: tuple[float, ...] = ()
    """Hybrid experience weights to sweep (empty: the config's; the evaluation here is standard)."""
    distributed: bool = False
    """Join JAX's multi-process runtime first (`ssm_jax.distributed.initialize`: one process per host, started by
    `python -m ssm_jax.launch`, SLURM, Open MPI or a TPU pod); the runs are then split over every process's
    devices."""
    task_devices: int = 1
    """Devices each run's meta-batch of tasks is split over (the mesh's "tasks" axis); the runs are split over the
    rest (the "runs" axis: the run count must be a multiple of the device count divided by this)."""
    out_dir: str = "runs/sweep"

    def __post_init__(self):
        super().__post_init__()
        if not any(self.swept().values()):
            raise ValueError(
                f"sweep at least one of {', '.join(f'sweep_{n}' for n in sweep.SWEEPABLE)} (seeds alone: "
                "experiments.navigation --num-seeds)"
            )

    def swept(self) -> dict[str, tuple[float, ...]]:
        """The `HParams` field -> the values swept (empty: not swept)."""
        return {name: getattr(self, f"sweep_{name}") for name in sweep.SWEEPABLE}


PRESETS = {  # navigation (ppo) at half the paper's batch on each axis: about 3 minutes on 2 cores
    "default": extend(
        SweepArgs, CONFIGS["navigation-ppo"], name="sweep", num_seeds=3, out_dir="runs/sweep", iterations=40,
        tasks_per_batch=10, trajectories_per_task=10, eval_tasks=20,
    ),
    "smoke": extend(
        SweepArgs, CONFIGS["navigation-smoke"], **PPO, name="sweep-smoke", num_seeds=2, out_dir="runs/sweep"
    ),
}  # fmt: skip


def main(args: SweepArgs) -> dict:
    if args.distributed:
        try:
            distributed.initialize()
        except distributed.DistributedError as error:
            exit_with_error(str(error))
    swept = {name: values for name, values in args.swept().items() if values}
    grid = sweep.make_grid(range(args.seed, args.seed + args.num_seeds), **swept)
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
    records = lambda iteration, metrics: [
        {**run, "iteration": iteration, **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
        for i, run in enumerate(grid.runs())
    ]  # one record per run and chunk
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
            value: _pooled(returns[[i for i, run in enumerate(runs) if run[name] == value and not run["diverged"]]])
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
        write_json(run_dir / "results.json", results)
        print(write_report(run_dir, args))
        print(f"results in {run_dir}")
    return results


def write_report(run_dir: Path, args: SweepArgs) -> str:
    """Renders `run_dir`'s results.json and runs.json into results.md (the pooled table per swept value, then each
    run's mean return) and `sweep_<field>.png`; returns the markdown. The results pages
    (`experiments.results_pages`) call it on the recorded files."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    per_run = json.loads((Path(run_dir) / "runs.json").read_text())
    aggregate = {
        name: {float(v): stats for v, stats in by_value.items()} for name, by_value in results["aggregate"].items()
    }
    swept = {name: values for name, values in args.swept().items() if values}
    rounds, train_seconds = args.evaluation.adapt_rounds, results["train_seconds"]
    fields = list(swept)
    run_rows = [
        [*(f"{run[name]:g}" for name in fields), run["seed"], *(f"{m:.1f}" for m in run["return_mean"]),
         "yes" if run["diverged"] else ""]
        for run in per_run
    ]  # fmt: skip
    run_table = markdown_table([*fields, "seed", *[steps_label(k) for k in range(rounds + 1)], "diverged"], run_rows)
    text = (
        f"# Sweep: {args.env}, {', '.join(fields)}\n\n"
        f"{results['runs']} runs ({args.num_seeds} seeds x {', '.join(f'{n} {list(v)}' for n, v in swept.items())}) of "
        f"{args.env}, {args.iterations} meta-iterations each, trained in one vmapped program: {train_seconds:.0f} s "
        f"({results['seconds_per_run']:.1f} s per run). Return after 0..{rounds} standard steps, pooled "
        f"over seeds and {args.evaluation.eval_tasks} held-out tasks per run (mean ± 95% CI):\n\n"
        f"{_table(aggregate, rounds)}\n\nEach run's mean return over its held-out tasks:\n\n{run_table}\n"
    )
    if results["diverged_runs"]:
        text += f"\nDiverged (a non-finite state; left out of the pooled table): {results['diverged_runs']}\n"
    text += "".join(f"\n![sweep over {name}](sweep_{name}.png)\n" for name in aggregate)
    (run_dir / "results.md").write_text(text)
    for name, by_value in aggregate.items():
        _plot(run_dir / f"sweep_{name}.png", name, by_value, rounds)
    return text


def _pooled(returns: np.ndarray) -> dict:
    """Runs' returns `[n, E, K + 1]` pooled over runs and tasks: mean and 95% half-width per step (NaN for n = 0:
    every run of the value diverged)."""
    if not len(returns):
        return {"mean": [float("nan")] * returns.shape[-1], "ci95": [float("nan")] * returns.shape[-1], "runs": 0}
    mean, half = mean_ci(returns.reshape(-1, returns.shape[-1]))
    return {"mean": mean.tolist(), "ci95": half.tolist(), "runs": len(returns)}


def _table(aggregate: dict, steps: int) -> str:
    rows = []
    for name, by_value in aggregate.items():
        for value, stats in by_value.items():
            cells = [f"{m:.1f} ± {h:.1f}" for m, h in zip(stats["mean"], stats["ci95"], strict=True)]
            rows.append([name, f"{value:g}", *cells])
    return markdown_table(["field", "value", *[steps_label(k) for k in range(steps + 1)]], rows)


def _plot(path, name: str, by_value: dict, steps: int) -> None:
    values = sorted(by_value)
    fig, ax = new_figure(figsize=(5, 3.5))
    for step in (0, 1, steps) if steps > 1 else (0, 1):
        mean = np.array([by_value[v]["mean"][step] for v in values])
        half = np.array([by_value[v]["ci95"][step] for v in values])
        ax.errorbar(values, mean, yerr=half, marker="o", capsize=3, label=f"after {steps_label(step)}")
    if len(values) > 1 and values[0] > 0 and values[-1] / values[0] >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel("held-out return (mean ± 95% CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    run_main(main, PRESETS, "default")
