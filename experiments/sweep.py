"""A sweep over seeds and traced hyperparameters as one compiled program (`ssm_jax.sweep`).

    python -m experiments.sweep                                        # navigation: 3 seeds x inner lr 0.05, 0.1
    python -m experiments.sweep --num-seeds 8 --sweep-inner-lr 0.1 --sweep-outer-lr 1e-3 3e-3 1e-2
    python -m experiments.sweep --preset smoke                         # seconds, for tests
    python -m experiments.sweep --distributed ...                      # one process per host; runs over all devices

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
from experiments.report import markdown_table, mean_ci, new_figure, save_figure
from ssm_jax import distributed, sweep
from ssm_jax.cli import exit_with_error
from ssm_jax.config_io import register_config
from ssm_jax.configs import CONFIGS, PPO, RunConfig, build, extend
from ssm_jax.report import steps_label
from ssm_jax.runs import MetricsLog, make_run_dir, non_finite, train_phase, write_config, write_json
from ssm_jax.train import HParams


@register_config
@dataclasses.dataclass(frozen=True)
class SweepArgs(RunConfig):
    """A `RunConfig` (every run's shared settings; its inner_lr, outer_lr and experience_weight are the values of
    the fields not swept) and the values to sweep."""

    RESUMABLE: ClassVar[bool] = False

    name: str = "sweep"
    num_seeds: int = 3
    sweep_inner_lr: tuple[float, ...] = (0.05, 0.1)
    """Inner learning rates to sweep (empty: the config's inner_lr)."""
    sweep_outer_lr: tuple[float, ...] = ()
    """Outer learning rates to sweep (empty: the config's outer_lr)."""
    sweep_experience_weight: tuple[float, ...] = ()
    """Hybrid experience weights to sweep (empty: the config's; the evaluation here is standard)."""
    distributed: bool = False
    """Call `jax.distributed.initialize()` first (one process per host; JAX detects SLURM, Open MPI and TPU pods).
    With several devices the runs are split over all of them (the run count must be a multiple of the device
    count)."""
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
        distributed.initialize()
    swept = {name: values for name, values in args.swept().items() if values}
    grid = sweep.make_grid(range(args.seed, args.seed + args.num_seeds), **swept)
    if grid.size % jax.device_count():
        exit_with_error(f"{grid.size} runs cannot be split evenly over {jax.device_count()} devices")
    base = args
    run_dir = make_run_dir(args.out_dir)
    write_config(run_dir, args)
    env, trainer = build(base)
    programs = sweep.make_programs(trainer, base.chunk_size)
    hparams = grid.hparams(HParams.create(base.inner_lr, base.outer_lr, base.experience_weight))
    keys = grid.keys

    started = time.perf_counter()
    states = programs.init(keys.init, hparams)
    if jax.device_count() > 1:
        states = distributed.shard_runs(states, distributed.make_mesh())
    records = lambda iteration, metrics: [
        {**run, "iteration": iteration, **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
        for i, run in enumerate(grid.runs())
    ]  # one record per run and chunk
    postfix = lambda m: {"return": float(np.mean(m["post_adaptation_return"][:, -1]))}
    log = MetricsLog(run_dir / "metrics.jsonl")
    states = train_phase(
        programs.train, states, keys.train, base.iterations, base.chunk_size, f"sweep ({grid.size} runs)", log, records,
        postfix=postfix, halt_on_divergence=False,  # the other runs finish; the diverged ones are reported per run
    )  # fmt: skip
    jax.block_until_ready(states)
    train_seconds = time.perf_counter() - started
    tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, base.evaluation.eval_tasks)
    returns, _ = programs.evaluate(states, eval_keys, tasks)
    returns = np.asarray(returns)  # [R, E, K + 1]

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
        "train_seconds": train_seconds,
        "seconds_per_run": train_seconds / len(runs),
        "aggregate": aggregate,
        "diverged_runs": [run for run in runs if run["diverged"]],
        "run_dir": str(run_dir),
    }
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
