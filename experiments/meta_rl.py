"""MAML-RL experiments on any meta-RL task family, with standard and experience-augmented hybrid test-time adaptation.
`experiments.halfcheetah_vel` (the flagship; also `--env halfcheetah-dir`) and `experiments.navigation` (Finn et al.'s
2D navigation table) name their presets in `ssm_jax.config.CONFIGS`; every flag is a leaf field of `RunConfig`.

Meta-training (MAML-RL on returns): per task, for each of `inner_steps` inner steps, trajectories from the current
policy and one policy-gradient step (linear feature baseline, normalised advantages); trajectories from the adapted
policy; then `outer_epochs` Adam steps on their PPO-clipped surrogate, differentiated through the inner steps. The
policy sees observations standardised by running statistics gathered from meta-training rollouts (started from
one round of rollouts of the initial policy), frozen for evaluation and saved in checkpoints. The ExperienceBuffer
is filled during meta-training only and frozen before evaluation (`ssm_jax.trainers.meta_rl` has the details).

Evaluation on held-out tasks (a fixed set drawn from a separate key): mean episode return after 0..K adaptation
rounds (each round samples trajectories with the current policy, then takes one policy-gradient step with the
inner learning rate, or the learned per-parameter rates with `--learn-inner-lr`; rounds after the first scale it
by `--later-rounds-lr-scale`, as MAML-RL's test script halves it) for MAML + standard, MAML + hybrid
(+ `experience_weight` x behaviour cloning on replayed windows), a pretrained baseline (one policy trained by the
same outer step on every trajectory of MAML's env budget, with no inner step: `ssm_jax.meta.rl.pretrain_update`),
random initialisation and, with `--oracle`, a policy trained on each evaluation task (`train_per_task`; its return
at the last training iteration). All methods see the same evaluation keys, so differences are paired. Also the
env's task metric where the family has one (`env.task_metric_name`: |v_x - v_goal| for velocity goals, speed along
the goal direction, distance to the goal), read from the simulator through `Trajectory.metrics`. With
`--step-size-grid` each method adapts at its best test-time step size (and with `--later-rounds-lr-grid` decay),
chosen on validation tasks drawn apart from the held-out ones (`sweep.at_best_step_size`).

With `--num-seeds N` the whole pipeline runs for seeds `seed … seed + N − 1` as one run axis of the vmapped
programs (`ssm_jax.sweep.make_programs`: one compile, whatever N; each seed draws its own training and evaluation
tasks, with the keys it would draw alone) and the tables and plots pool held-out tasks over seeds.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md, learning_curve.png,
adaptation_curve.png, and orbax checkpoints of the stacked states `[num_seeds, ...]`, `checkpoints/step_<n>/`
(`ssm_jax.runs`). `--resume <run dir>` continues MAML's training from the newest one with the run's own config.json
and ends as the uninterrupted run would; Ctrl-C saves the last finished chunk and exits 0.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import resume_command, run_directory
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import RunConfig, compiled_programs, replace
from ssm_jax.config.parsing import exit_with_error
from ssm_jax.report.meta_rl import headline, summarise
from ssm_jax.report.writers import publish
from ssm_jax.trainers import HParams


def _train(args, chunk, states, keys, log, phase, seeds, run_dir, checkpoints=True, start=0):
    """Runs `chunk` (vmapped over the runs, one per seed in `seeds`) from iteration `start` until `args.iterations`
    through `runs.train_phase`: one record per seed and chunk, and with `checkpoints` the stacked `TrainState` saved
    every `checkpoint_every` iterations and at the end."""
    records = runs.run_records({"phase": phase}, [{"seed": s} for s in seeds], time.perf_counter())
    module = "experiments.navigation" if args.env == "navigation-2d" else "experiments.halfcheetah_vel"
    command = resume_command(run_dir, module)  # the module whose presets the run's config comes from
    saving = runs.Checkpoints(run_dir, args, args.checkpoint_every, command, args.keep_checkpoints)
    description = phase if len(seeds) == 1 else f"{phase} ({len(seeds)} seeds)"
    postfix = lambda m: {"return": float(np.mean(m["post_adaptation_return"]))}
    return runs.train_phase(
        chunk, states, keys, args.iterations, args.chunk_size, description, log, records,
        saving if checkpoints else None, postfix, start,
        run_labels=[f"seed {seed}" for seed in seeds],
    )  # fmt: skip


def main(args: RunConfig) -> dict:
    """Meta-trains, runs the baselines and evaluates on held-out tasks for each seed; returns the results dict
    (`returns[method]`: mean return after 0..K adaptation rounds, pooled over held-out tasks and seeds)."""
    with run_directory(args) as run_dir:
        return _main(args, run_dir)


def _main(args: RunConfig, run_dir: Path) -> dict:
    start_time = time.perf_counter()
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    env, programs = compiled_programs(args)
    hparams = HParams.create(args.inner_lr, args.outer_lr, args.experience_weight)
    curves, task_metrics, oracle, train_seconds, step_sizes = _run_seeds(args, env, hparams, programs, log, run_dir)

    results = summarise(
        curves, task_metrics, env.task_metric_name, oracle, log.records(), train_seconds,
        time.perf_counter() - start_time,
    )  # fmt: skip
    results.update(run_dir=str(run_dir), **({"step_sizes": step_sizes} if step_sizes else {}))
    publish(run_dir, results, args)
    if (verdict := headline(results)) is not None:
        print(verdict)
    return results


def _run_seeds(args, env, hparams, programs, log, run_dir):
    """Meta-training, baselines and held-out evaluation for seeds `seed … seed + num_seeds − 1`, as one run axis
    of the vmapped programs (each run keyed as `sweep.run_keys(seed)`, so it is the run its seed makes alone).

    Returns `(curves, task_metrics, oracle, meta_train_seconds, step_sizes)`: `curves[label]` and
    `task_metrics[label]` are `[num_seeds * eval_tasks, adapt_rounds + 1]` (seed-major), `oracle` is `[num_seeds *
    eval_tasks]` or None, `step_sizes[label]` each method's choice (`sweep.at_best_step_size`; none without a grid)."""
    started = time.perf_counter()
    seeds = args.seeds
    grid = sweep.make_grid(seeds)
    keys, run_hparams = grid.keys, grid.hparams(hparams)
    initial = programs.init(keys.init, run_hparams)  # training donates its states; these stay for random init
    states = jax.tree.map(jnp.copy, initial)
    start = 0
    if args.resume:
        try:
            kept = lambda record, step: record["phase"] == "maml" and record["iteration"] <= step  # the rest runs again
            states, start = runs.resume(run_dir, states, log, kept)
        except ValueError as error:  # damaged, or from another configuration: one line, exit 2
            exit_with_error(f"--resume {run_dir}: {error}")
        run_files.write_config(run_dir, args)  # its own, unless --iterations extended it
    trained = {"MAML": _train(args, programs.train, states, keys.train, log, "maml", seeds, run_dir, start=start)}
    train_seconds = time.perf_counter() - started
    if args.pretrained:
        pretrained = programs.init(keys.init, run_hparams, adapt=False)
        trained["pretrained"] = _train(
            args, programs.train, pretrained, keys.pretrain, log, "pretrained", seeds, run_dir, checkpoints=False
        )
    if args.random_baseline:
        trained["random init"] = initial

    eval_tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, args.evaluation.eval_tasks)
    validation = sweep.held_out_tasks(env, sweep.validation_keys(keys.eval), args.evaluation.eval_tasks)[::-1]
    schedules = {d: compiled_programs(replace(args, later_rounds_lr_scale=d))[1].evaluate  # a program per decay
                 for d in args.evaluation.later_rounds_lr_grid} or {None: programs.evaluate}  # fmt: skip
    pooled = lambda per_run: np.asarray(per_run).reshape(-1, *np.shape(per_run)[2:])  # [R, E, ...] -> [R * E, ...]
    curves, task_metrics, step_sizes = {}, {}, {}
    for name, trained_state in trained.items():
        modes = ("standard", "hybrid") if name == "MAML" and args.adaptation_mode == "both" else (args.adaptation_mode,)
        for mode in modes if name == "MAML" else ("standard",):
            label, state, evaluate = f"{name} + {mode}" if name == "MAML" else name, trained_state, programs.evaluate
            if grid := args.evaluation.step_size_grid:  # each method at its best step size, on validation tasks
                with runs.announce(f"choosing {label}'s step size on validation tasks"):
                    state, step_sizes[label] = sweep.at_best_step_size(schedules, state, *validation, grid, mode)
                evaluate = schedules[step_sizes[label]["schedule"]]  # the chosen decay after round 1
            with runs.announce(f"evaluating {label} on {len(seeds) * args.evaluation.eval_tasks} held-out tasks"):
                returns, extra = jax.block_until_ready(evaluate(state, eval_keys, eval_tasks, mode))
            curves[label] = pooled(returns)
            task_metrics[label] = pooled(extra.get("task_metric", returns * np.nan))

    oracle = None
    if args.oracle:
        with runs.announce(f"training the oracle on each held-out task ({args.oracle_iterations} iterations)"):
            trained_oracle = programs.oracle(initial, keys.oracle, eval_tasks, iterations=args.oracle_iterations)
            oracle = pooled(jax.block_until_ready(trained_oracle)[..., -1])
    return curves, task_metrics, oracle, train_seconds, step_sizes
