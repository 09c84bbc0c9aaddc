"""In-context adaptation (RL²): a sequence policy's memory across episodes, beside MAML on the same held-out tasks.

    python -m experiments.in_context                      # navigation-2d at MAML's navigation budget (8M env steps)
    python -m experiments.in_context --compare-with docs/results/maml_navigation_mlp   # beside recorded MAML runs
    python -m experiments.in_context --preset halfcheetah-vel --models gru s5
    python -m experiments.in_context --preset smoke       # seconds, for tests

For each policy of `--models` (default s5, ssm, gru and the memoryless mlp) it trains RL²
(`ssm_jax.trainers.in_context`: PPO + GAE over trials of M episodes of one task, the carry kept across episodes and
reset between trials) for `--num-seeds` seeds as one vmapped program, then runs fresh trials of the frozen policy on the
held-out tasks each seed draws (`sweep.held_out_tasks`: the tasks a MAML run with that seed evaluates on) and reports
the return of episode 1..M, with no gradient step. With `--compare-with RUN_DIR ...` (meta-RL runs of the same family
and horizon, one per policy), the report puts MAML's return after 0..3 gradient steps, the pretrained baseline and
random init beside it, each with the env steps it trained on and the env steps each took on the held-out task, and pairs
each RL² policy with MAML (of the same policy where one was compared) on the tasks of the seeds both ran.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md, episodes.png (return
against env steps on the held-out task) and orbax checkpoints of each model's stacked states,
`<model>/checkpoints/step_<n>/`. `--resume <run dir>` continues the model in training from its newest checkpoint
(the models before it are restored, not retrained) and ends as the uninterrupted run would; Ctrl-C saves the last
finished chunk and exits 0.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from experiments.common import resume_command, run_directory, run_main
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import CONFIGS, InContextRunConfig, build_in_context
from ssm_jax.config.parsing import exit_with_error
from ssm_jax.report.in_context import compared_run
from ssm_jax.report.writers import publish
from ssm_jax.trainers import HParams

PRESETS = {
    "navigation": CONFIGS["in-context-navigation"],
    "halfcheetah-vel": CONFIGS["in-context-halfcheetah-vel"],
    "pendulum": CONFIGS["in-context-pendulum"],
    "smoke": CONFIGS["in-context-smoke"],
}
"""The presets, by their names in `ssm_jax.config.CONFIGS`."""


def main(args: InContextRunConfig) -> dict:
    """Trains and evaluates RL² for each model; returns the results dict (also in results.json)."""
    compared = []
    for run in args.compare_with:
        try:
            compared.append(compared_run(args, Path(run)))
        except ValueError as error:
            exit_with_error(f"--compare-with {run}: {error}")
    with run_directory(args) as run_dir:
        return _main(args, run_dir, compared)


def _main(args: InContextRunConfig, run_dir: Path, compared: list[dict]) -> dict:
    started = time.perf_counter()
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    seeds = args.seeds
    grid = sweep.make_grid(seeds)
    keys, hparams = grid.keys, grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    pooled = lambda per_run: np.asarray(per_run).reshape(-1, *np.shape(per_run)[2:])  # [R, E, ...] -> [R * E, ...]
    models = {}
    for index, model in enumerate(args.models):
        env, trainer = build_in_context(args, model)
        programs = sweep.make_programs(trainer, args.chunk_size)
        states = programs.init(keys.init, hparams)
        model_dir, start = run_dir / model, 0
        if args.resume:
            kept = lambda record, step, model=model: (
                record["model"] in args.models[:index] or (record["model"] == model and record["iteration"] <= step)
            )  # the models after this one run again
            try:
                states, start = runs.resume(model_dir, states, log, kept)
            except ValueError as error:
                exit_with_error(f"--resume {run_dir}: {error}")
        model_dir.mkdir(exist_ok=True)
        trained_at = time.perf_counter()
        states = _train(args, programs.train, states, keys.train, log, model, seeds, run_dir, start)
        train_seconds = time.perf_counter() - trained_at
        tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, args.evaluation.eval_tasks)
        returns, extras = programs.evaluate(states, eval_keys, tasks)
        params = jax.tree.map(lambda x: x[0], states.params)
        models[model] = {
            "per_task_returns": pooled(returns),
            "per_task_metric": pooled(extras["task_metric"]) if "task_metric" in extras else None,
            "train_seconds": train_seconds,
            "evaluate_seconds": time.perf_counter() - trained_at - train_seconds,
            "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
        }
    if args.resume:
        run_files.write_config(run_dir, args)  # its own, unless --iterations extended it
    results = {
        "run_dir": str(run_dir),
        "env": args.env,
        "task_metric_name": env.task_metric_name,
        "seeds": seeds,
        "held_out_tasks": len(seeds) * args.evaluation.eval_tasks,
        "episodes": args.trainer.episodes_per_trial,
        "horizon": args.trainer.horizon,
        "train_env_steps": args.iterations * args.trainer.env_steps_per_iteration,
        "models": models,
        "compared": compared,
        "seconds": time.perf_counter() - started,
    }
    publish(run_dir, results, args)
    return results


def _train(args, chunk, states, train_keys, log, model, seeds, run_dir, start):
    """`runs.train_phase` for one model's stacked states: one record per seed and chunk, checkpoints under
    `run_dir/<model>/`."""
    records = runs.run_records({"model": model}, [{"seed": s} for s in seeds], time.perf_counter())

    saving = runs.Checkpoints(
        run_dir / model,
        args,
        args.checkpoint_every,
        resume_command(run_dir, "experiments.in_context"),
        args.keep_checkpoints,
    )
    episodes = args.trainer.episodes_per_trial
    postfix = lambda m: {
        "ep1": float(np.mean(m["episode_1_return"])),
        "last": float(np.mean(m[f"episode_{episodes}_return"])),
    }
    description = f"RL² {model}" + ("" if len(seeds) == 1 else f" ({len(seeds)} seeds)")
    return runs.train_phase(
        chunk, states, train_keys, args.iterations, args.chunk_size, description, log, records, saving, postfix,
        start, run_labels=[f"seed {seed}" for seed in seeds],
    )  # fmt: skip


if __name__ == "__main__":
    run_main(main, PRESETS, "navigation")
