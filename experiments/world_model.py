"""Meta-learned world models (SSM-MetaRL's supervised objective, with the action): MAML vs pretrained vs the oracle.

    python -m experiments.world_model                              # cpu preset: SSM on pendulum-params, ~1-2 min
    python -m experiments.world_model --env halfcheetah-gravity    # the dynamics change (also ant-mass)
    python -m experiments.world_model --env halfcheetah-vel        # the reward changes
    python -m experiments.world_model --preset smoke               # seconds, for tests
    python -m experiments.world_model --preset paper --num-seeds 5 # larger pool and model, more iterations

A sequence model predicts `(next_obs − obs, reward)` from `(obs, action)` windows of random-action trajectories
(`ssm_jax.trainers.world_model`). MAML meta-trains it across a pool of tasks of the family; the pretrained baseline
is the same program with inner lr 0 (one model fitted to every task); the oracle trains a fresh model on
each held-out task's support alone. On held-out tasks each model adapts on the support (disjoint trajectories from
the query) in mode `none` (no step), `standard` (SGD steps at the inner lr) or `hybrid` (plus `experience_weight` ×
the loss on windows replayed from the meta-training buffer), scored after 0..K steps by the query's one-step MSE
and 10-step open-loop error, in standardised units (statistics of the meta-training data). Seeds run as one
vmapped program; every method sees the same held-out data, so differences are paired.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md, mse.png and
open_loop.png (error against adaptation steps per method and mode).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments.common import run_main
from ssm_jax import envs, run_files, runs, sweep
from ssm_jax.config import CONFIGS, WorldModelRunConfig, world_model_env
from ssm_jax.report import (
    mean_ci,
)
from ssm_jax.report.world_model import METRICS
from ssm_jax.report.writers import publish
from ssm_jax.trainers import HParams
from ssm_jax.trainers.world_model import make_world_model_trainer

PRESETS = {
    "cpu": CONFIGS["world-model"],
    "smoke": CONFIGS["world-model-smoke"],
    "paper": CONFIGS["world-model-paper"],
}
"""The presets, by their names in `ssm_jax.config.CONFIGS`."""


def run_seeds(args: WorldModelRunConfig, env: envs.TaskEnv, log: run_files.MetricsLog) -> dict:
    """Every method and mode for `args.num_seeds` seeds as one run axis of `sweep.make_programs` (each seed's keys
    from `sweep.run_keys`, as every experiment draws them). Returns per-task arrays pooled over seeds:
    `{"mse" | "open_loop": {"<method> + <mode>": [S * E, K + 1] ([S * E, 1] for none), "oracle": [S * E, 1]},
    "parameters": int}`."""
    trainer = make_world_model_trainer(env, args.model, args.network, args.trainer)
    grid = sweep.make_grid(args.seeds)
    keys, hparams = grid.keys, grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    programs = sweep.make_programs(trainer, args.chunk_size)
    tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, args.trainer.eval_tasks)
    pooled = lambda x: np.asarray(x).reshape(-1, *np.shape(x)[2:])
    results = {**{name: {} for name in METRICS}, "step_sizes": {}}
    validation = sweep.held_out_tasks(env, sweep.validation_keys(keys.eval), args.trainer.eval_tasks)[::-1]
    for method, train_keys in (("MAML", keys.train), ("pretrained", keys.pretrain)):
        states = programs.init(keys.init, hparams, adapt=method == "MAML")
        records = runs.run_records({"method": method}, [{"seed": seed} for seed in grid.seeds], time.perf_counter())
        description = f"{method} ({args.model}, {args.env})"
        postfix = lambda m: {"query_loss": float(np.mean(m["post_query_loss"]))}
        states = runs.train_phase(
            programs.train, states, train_keys, args.iterations, args.chunk_size, description, log, records,
            postfix=postfix, run_labels=[f"seed {seed}" for seed in grid.seeds],
        )  # fmt: skip
        for mode in ("standard", "hybrid"):
            at_rate = states
            if scales := args.trainer.step_size_grid:  # each method at its best step size, on validation tasks
                choice = sweep.at_best_step_size({None: programs.evaluate}, states, *validation, scales, mode, False)
                at_rate, results["step_sizes"][f"{method} + {mode}"] = choice
            mse, extras = programs.evaluate(at_rate, eval_keys, tasks, mode)
            for name, values in (("mse", mse), ("open_loop", extras["open_loop"])):
                if mode == "standard":
                    results[name][f"{method} + none"] = pooled(values)[:, :1]
                results[name][f"{method} + {mode}"] = pooled(values)
    # the oracle on the held-out data evaluation saw (the same keys collect it)
    mse, extras = programs.oracle(states, eval_keys, tasks, iterations=args.trainer.oracle_iterations)
    for name, values in (("mse", mse), ("open_loop", extras["open_loop"])):
        results[name]["oracle"] = pooled(values)[:, None]
    params = trainer.parts.world_model.init(jax.random.key(0))
    results["parameters"] = int(sum(x.size for x in jax.tree.leaves(params)))
    return results


def main(args: WorldModelRunConfig) -> dict:
    env = world_model_env(args)
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    started = time.perf_counter()
    results = run_seeds(args, env, run_files.MetricsLog(run_dir / "metrics.jsonl"))
    summary = {
        "run_dir": str(run_dir),
        "env": args.env,
        "model": args.model,
        "parameters": results["parameters"],
        "seeds": args.num_seeds,
        "held_out_tasks": args.num_seeds * args.trainer.eval_tasks,
        "seconds": time.perf_counter() - started,
        **{name: {k: mean_ci(v)[0] for k, v in results[name].items()} for name in METRICS},
        "ci95": {name: {k: mean_ci(v)[1] for k, v in results[name].items()} for name in METRICS},
        "per_task": {name: results[name] for name in METRICS},
        **({"step_sizes": results["step_sizes"]} if results["step_sizes"] else {}),
    }
    publish(run_dir, summary, args)
    return summary


if __name__ == "__main__":
    run_main(main, PRESETS, "cpu")
