"""Experience replay at test time: hybrid adaptation against standard in the regimes where replay can matter.

    python -m experiments.replay                          # navigation: many-step, online, task switch (3 seeds)
    python -m experiments.replay --preset online          # one of them (many-step, online, task-switch)
    python -m experiments.replay --preset world-model     # pendulum world model: one support trajectory, 30 steps
    python -m experiments.replay --preset smoke           # seconds, for tests (and world-model-smoke)

Hybrid adaptation adds `α x` a term on replayed experience to the current task's loss. Its sources (`adapt.rl`):
the meta-training buffer (`meta`: behaviour cloning of other tasks' windows; world models: their windows' MSE), the
task buffer of the current task's own experience (`task`, empty at each task's start: the PPO-clipped importance-
weighted policy gradient on its earlier trajectories, `clipped_pg`, or KL to the meta-trained policy on its states,
`kl_anchor`; world models: the support's windows' MSE), or `both`. Each variant is one compiled program evaluated
at every α of `--alphas` at once (the seeds x α grid is one vmapped run axis); α = 0 is the standard adapter, bit
for bit, on the same keys, so every difference is paired. Regimes, scores and verdict: `ssm_jax.report.replay`.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from experiments.common import run_main
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import CONFIGS, compiled_programs, replace, world_model_env
from ssm_jax.config.studies import RL_VARIANTS, WORLD_MODEL_VARIANTS, ReplayArgs, ReplayWorldModelArgs
from ssm_jax.report.replay import METRICS, verdicts
from ssm_jax.report.writers import publish
from ssm_jax.trainers import HParams
from ssm_jax.trainers.world_model import make_world_model_trainer

PRESETS = {name.removeprefix("replay-"): config for name, config in CONFIGS.items() if name.startswith("replay-")}
"""The presets, by their names in `ssm_jax.config.CONFIGS` (`replay-<preset>`)."""


def main(args: ReplayArgs | ReplayWorldModelArgs) -> dict:
    """Meta-trains, then scores one regime after another; results.json and results.md are rewritten as each regime
    finishes (a stopped study keeps the regimes it finished). Returns the results dict."""
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    started = time.perf_counter()
    world_model = isinstance(args, ReplayWorldModelArgs)
    regimes = _world_model_scores(args, log) if world_model else _rl_scores(args, log)
    last = "world_model" if world_model else args.regimes[-1]
    results = {"run_dir": str(run_dir), "alphas": list(args.alphas), "regimes": {}, "scores": {}}
    for name, scores in regimes:
        results["regimes"][name] = verdicts(scores, args.alphas, METRICS[name][1])
        results["scores"][name] = scores
        results["seconds"] = time.perf_counter() - started
        publish(run_dir, results, args, final=name == last)
    return results


def _train(args, programs, states, keys, log, phase: str):
    seeds = args.seeds
    records = runs.run_records({"phase": phase}, [{"seed": seed} for seed in seeds], time.perf_counter())
    return runs.train_phase(
        programs.train, states, keys, args.iterations, args.chunk_size, f"{phase} ({len(seeds)} seeds)", log,
        records, run_labels=[f"seed {seed}" for seed in seeds],
    )  # fmt: skip


def _rl_scores(args: ReplayArgs, log: run_files.MetricsLog):
    """Meta-trains MAML for every seed, then yields `(regime, {variant: [A, S, E]})` regime by regime (α = 0 is
    standard), with the regimes' extra arrays (`frozen` `[S, E]`, `<variant>: forgetting` `[A, S, E]`)."""
    env, programs = compiled_programs(args)
    grid = sweep.make_grid(args.seeds)
    hparams = grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    states = _train(args, programs, programs.init(grid.keys.init, hparams), grid.keys.train, log, "MAML")
    tasks, eval_keys = sweep.held_out_tasks(env, grid.keys.eval, args.evaluation.eval_tasks)
    num_alphas = len(args.alphas)
    swept_states, swept_keys = (
        sweep.with_experience_weights(states, args.alphas),
        sweep.tile_runs(eval_keys, num_alphas),
    )
    swept_tasks = sweep.tile_runs(tasks, num_alphas)
    for regime in args.regimes:
        scores = {}
        for label, (replay, task_loss) in RL_VARIANTS.items():
            print(f"{regime}: {label}, alphas {', '.join(map(str, args.alphas))}", flush=True)
            variant = replace(args, replay=replay, task_replay_loss=task_loss)
            if regime == "many_step":
                variant = replace(
                    variant, adapt_rounds=1, steps_per_round=args.many_steps,
                    eval_trajectories=args.support_trajectories,
                )  # fmt: skip
                evaluate = compiled_programs(variant)[1].evaluate
                states = sweep.scale_inner_lr(swept_states, args.many_step_lr_scale)
                returns = evaluate(states, swept_keys, swept_tasks, "hybrid")[0]
                scores[label] = sweep.by_weight(returns[..., -1], num_alphas)
                continue
            online = _online_program(variant, args, switch=regime == "task_switch")
            returns, extras = online(swept_states, swept_keys, swept_tasks, args.online_every)
            if regime == "online":
                scores[label] = sweep.by_weight(returns, num_alphas)
                if "frozen" not in scores:  # the same episodes with no update (every > horizon): one per seed
                    frozen = online(swept_states, swept_keys, swept_tasks, args.trainer.horizon + 1)[0]
                    scores["frozen"] = sweep.by_weight(frozen, num_alphas)[0]
            else:
                scores[label] = sweep.by_weight(extras["after_switch"], num_alphas)
                forgot = extras["first_task_at_switch"] - extras["first_task_at_end"]
                scores[f"{label}: forgetting"] = sweep.by_weight(forgot, num_alphas)
        yield regime, scores


def _online_program(variant: ReplayArgs, args: ReplayArgs, switch: bool):
    """`online(states [R], keys [R], tasks [R, E], every) -> (returns [R, E], extras)`: the programs'
    `evaluate_online` (hybrid, each run's weight); with `switch`, each task changes to the next one at half time."""
    evaluate_online = compiled_programs(variant)[1].evaluate_online

    def online(states, keys, tasks, every):
        switch_to = jax.tree.map(lambda x: jnp.roll(x, 1, axis=1), tasks) if switch else None
        window, scale = args.online_window, args.online_lr_scale
        return evaluate_online(states, keys, tasks, "hybrid", window, every, switch_to, scale)

    return online


def _world_model_scores(args: ReplayWorldModelArgs, log: run_files.MetricsLog):
    """Meta-trains the world model for every seed, then yields `("world_model", {variant: [A, S, E]})` (query MSE
    after the last step; α = 0 is standard)."""
    env = world_model_env(args)
    grid = sweep.make_grid(args.seeds)
    hparams = grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    programs = sweep.make_programs(
        make_world_model_trainer(env, args.model, args.network, args.trainer), args.chunk_size
    )
    states = _train(args, programs, programs.init(grid.keys.init, hparams), grid.keys.train, log, "MAML")
    tasks, eval_keys = sweep.held_out_tasks(env, grid.keys.eval, args.trainer.eval_tasks)
    num_alphas, scores = len(args.alphas), {}
    swept = (
        sweep.with_experience_weights(states, args.alphas),
        sweep.tile_runs(eval_keys, num_alphas),
        sweep.tile_runs(tasks, num_alphas),
    )
    for label, replay in WORLD_MODEL_VARIANTS.items():
        print(f"world model: {label}, alphas {', '.join(map(str, args.alphas))}", flush=True)
        trainer_config = dataclasses.replace(args.trainer, replay=replay)
        trainer = make_world_model_trainer(env, args.model, args.network, trainer_config)
        mse = sweep.make_programs(trainer, args.chunk_size).evaluate(*swept, "hybrid")[0]
        scores[label] = sweep.by_weight(mse[..., -1], num_alphas)
    yield "world_model", scores


if __name__ == "__main__":
    run_main(main, PRESETS, "navigation")
