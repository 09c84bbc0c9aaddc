"""Sinusoid regression (Finn et al. 2017): MAML, FOMAML, Meta-SGD and a pretrained baseline on held-out tasks.

    python -m experiments.sinusoid                      # default preset: 10-shot, 20k iterations (CPU, minutes)
    python -m experiments.sinusoid --preset smoke       # seconds
    python -m experiments.sinusoid --preset paper       # 5/10/20-shot, 70k iterations, as in the paper
    python -m experiments.sinusoid --frequency-range 0.8 1.2   # Li et al. 2017 (Meta-SGD) distribution

Network: MLP 2x40 ReLU. Meta-training: meta-batch 25, inner SGD lr 0.01, 1 inner step, Adam 1e-3 outer, K support
and K query points per task. The pretrained baseline trains the same net with Adam on all tasks' points (no
inner loop). Evaluation: `eval_tasks` held-out tasks from a separate key, K support points, `eval_points` query
points, MSE after 0..`adapt_rounds` SGD steps (Meta-SGD with its learned per-parameter lr), 95% CIs over tasks.

Writes under `runs/sinusoid/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md,
fits_<K>shot.png (fitted curves) and mse_vs_steps.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import resume_command, run_directory, run_main
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import CONFIGS, SinusoidRunConfig, build_regression
from ssm_jax.envs import SinusoidDistribution
from ssm_jax.report import (
    mean_ci,
    new_figure,
    save_figure,
)
from ssm_jax.report.sinusoid import LABELS
from ssm_jax.report.writers import publish
from ssm_jax.run_files import MetricsLog
from ssm_jax.trainers import HParams

PRESETS = {
    "default": CONFIGS["sinusoid"],
    "smoke": CONFIGS["sinusoid-smoke"],
    "paper": CONFIGS["sinusoid-paper"],
}
"""The presets, by their names in `ssm_jax.config.CONFIGS`."""


def train(args: SinusoidRunConfig, shots: int, method: str, grid: sweep.Grid, run_dir: Path, log: MetricsLog):
    """Meta-trains (or pretrains) one method for every seed of `grid` (one vmapped program) through
    `runs.train_phase`, checkpointing under `run_dir/phases/<phase>/`; with `args.resume`, from that phase's newest
    checkpoint. Returns `(trainer, programs, states)`."""
    trainer = build_regression(args, shots, method)
    programs = sweep.make_programs(trainer, args.chunk_size)
    phase, phase_dir = f"{shots}-shot {method}", run_dir / "phases" / f"{shots}shot_{method}"
    hparams = grid.hparams(HParams.create(args.inner_lr, args.outer_lr))
    states = programs.init(grid.keys.init, hparams, adapt=method != "pretrained")
    start = 0
    if args.resume:  # from the phase's newest checkpoint; from the start if it saved none
        kept = lambda record, step: record["phase"] != phase or record["iteration"] <= step
        states, start = runs.resume(phase_dir, states, log, kept)
        run_files.write_config(run_dir, args)  # its own, unless --iterations extended it
    records = lambda iteration, metrics: [
        {"phase": phase, "shots": shots, "method": method, "seed": seed, "iteration": iteration,
         **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
        for i, seed in enumerate(grid.seeds)
    ]  # fmt: skip
    command = resume_command(run_dir, "experiments.sinusoid")
    checkpoints = runs.Checkpoints(phase_dir, args, args.checkpoint_every, command, args.keep_checkpoints)
    train_key = grid.keys.train if method != "pretrained" else grid.keys.pretrain
    states = runs.train_phase(
        programs.train, states, train_key, args.iterations, args.chunk_size, f"{LABELS[method]} {shots}-shot", log,
        records, checkpoints, postfix=lambda m: {"loss": float(np.mean(m["post_query_loss"]))}, start=start,
        run_labels=[f"seed {seed}" for seed in grid.seeds],
    )  # fmt: skip
    return trainer, programs, states


def _plot_fits(path: Path, args: SinusoidRunConfig, fitted: dict, eval_tasks, key):
    """Ground truth, support points and each method's fit (seed `args.seed`) before and after `adapt_rounds` steps, on
    3 held-out tasks."""
    first = lambda tree, i=0: jax.tree.map(lambda v: v[i], tree)
    trainer = next(iter(fitted.values()))[0]
    dist = trainer.parts.distribution
    x_grid = jnp.linspace(*dist.input_range, 200)[:, None]
    tasks = first(eval_tasks)
    support = jax.vmap(dist.sample_points, in_axes=(0, 0, None))(jax.random.split(key, 3), first(tasks, slice(3)),
                                                                    trainer.config.shots)  # fmt: skip
    fig, axes = new_figure(1, 3, figsize=(13, 3.6), sharey=True)
    for i, ax in enumerate(axes):
        task_support = first(support, i)
        ax.plot(x_grid[:, 0], dist.evaluate(first(tasks, i), x_grid)[:, 0], "k-", lw=2, label="ground truth")
        ax.plot(
            task_support[0][:, 0], task_support[1][:, 0], "k^", ms=7, label=f"{trainer.config.shots} support points"
        )
        for method, (method_trainer, states) in fitted.items():
            meta = first(states.meta)
            adapted = method_trainer.parts.adapt(meta.params, task_support, meta.inner_lr)
            for steps, style, params in ((0, ":", meta.params), (args.adapt_rounds, "-", adapted)):
                prediction = method_trainer.parts.apply(params, x_grid)[:, 0]
                ax.plot(x_grid[:, 0], prediction, style, label=f"{LABELS[method]}, {steps} steps")
        ax.set_title(f"held-out task {i}")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main(args: SinusoidRunConfig) -> dict:
    with run_directory(args) as run_dir:
        return _main(args, run_dir)


def _main(args: SinusoidRunConfig, run_dir: Path) -> dict:
    logger = MetricsLog(run_dir / "metrics.jsonl")
    grid = sweep.make_grid(args.seeds)
    dist = SinusoidDistribution(frequency_range=args.frequency_range)
    eval_tasks, eval_keys = sweep.held_out_tasks(dist, grid.keys.eval, args.eval_tasks)
    results: dict = {"shots": {}, "run_dir": str(run_dir)}
    for shots in args.shots:
        fitted, per_method = {}, {}
        for method in args.methods:
            start = time.perf_counter()
            trainer, programs, states = train(args, shots, method, grid, run_dir, logger)
            mse = np.asarray(programs.evaluate(states, eval_keys, eval_tasks)[0])
            mean, half = mean_ci(mse.reshape(-1, mse.shape[-1]))  # over seeds x tasks
            fitted[method] = (trainer, states)
            per_method[method] = {"mse_mean": mean, "mse_ci95": half, "train_seconds": time.perf_counter() - start}
        results["shots"][shots] = per_method
        if args.plots:
            selected = {m: fitted[m] for m in ("maml", "pretrained") if m in fitted}
            _plot_fits(run_dir / f"fits_{shots}shot.png", args, selected, eval_tasks, eval_keys[0])
    publish(run_dir, results, args)
    return results


if __name__ == "__main__":
    run_main(main, PRESETS, "default")
