"""Budget study: MAML against the fair pretrained baseline at growing env budgets, on the same held-out tasks.

    python -m experiments.budget_study                         # HalfCheetah-Vel, 0.5M to 10M env steps, 64 goals
    python -m experiments.budget_study --preset dir            # HalfCheetah-Dir, the same budgets
    python -m experiments.budget_study --budgets 1e6 3e6       # any budgets (env steps per method)
    python -m experiments.budget_study --preset smoke          # seconds, for tests

Each method trains once, to the largest budget, with the CPU preset's batch (`experiments.halfcheetah_vel`). At
each budget (its env steps rounded up to whole chunks of meta-iterations) the training pauses and both methods are
evaluated on the same held-out tasks with the same keys: the return before and after one adaptation step, and the
paired difference of their one-step gains. A smaller budget's row is exactly the run that stops there: the
hyperparameters are constant and chunk `c` always draws the same key (`sweep.chunk_keys`).

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json (rewritten after every budget, so
an interrupted study keeps the budgets it finished), results.md and budget_study.png (return after 0 and 1 steps
against env steps). Ctrl-C stops at the end of a chunk and keeps what was evaluated; the study has no resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from experiments.common import run_main
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import CONFIGS, compiled_programs
from ssm_jax.config.studies import StudyArgs
from ssm_jax.report.budget_study import METHODS, budget_row, verdict
from ssm_jax.report.writers import publish
from ssm_jax.trainers import HParams


def budget_iterations(args: StudyArgs) -> list[int]:
    """Each budget's meta-iterations: its env steps rounded up to whole chunks."""
    chunks = [math.ceil(b / (args.trainer.env_steps_per_iteration * args.chunk_size)) for b in args.budgets]
    return [c * args.chunk_size for c in chunks]


def main(args: StudyArgs) -> dict:
    """Trains both methods to each budget in turn, evaluates them there, and writes the table and plot."""
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    grid = sweep.make_grid(args.seeds)
    budgets = evaluated_budgets(args, grid, lambda eval_keys: eval_keys, log)
    random_init = _pooled(next(budgets)[2]["random init"])
    rows, results = [], {}
    for budget, (until, seconds, curves) in zip(args.budgets, budgets, strict=True):
        curves = {name: _pooled(returns) for name, returns in curves.items()}
        rows.append(budget_row(budget, until, until * args.trainer.env_steps_per_iteration, curves, seconds))
        results = _write(args, run_dir, rows, random_init)
    return results


def evaluated_budgets(args: StudyArgs, grid: sweep.Grid, goal_keys, log, label: str = "") -> Iterator[tuple]:
    """Trains MAML and pretrained for every run of `grid` (seeds x traced hyperparameters, one vmapped program each)
    to each of `args.budgets` in turn. Yields `(iterations, train seconds per method, {method: returns [R, E, 2]})`:
    first the untrained policy (`{"random init": ...}`, 0 iterations), then one per budget; the returns are each
    run's before and after one adaptation step on the tasks drawn from `goal_keys(RunKeys.eval)` (the same tasks and
    keys for both methods). `label` prefixes the log's phases. A run whose state turns non-finite trains on (its
    returns are NaN from then on) and the other runs and the other method finish."""
    env, programs = compiled_programs(args)
    keys, hparams = grid.keys, grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    eval_tasks, eval_keys = sweep.held_out_tasks(env, goal_keys(keys.eval), args.evaluation.eval_tasks)
    evaluate = lambda states: np.asarray(programs.evaluate(states, eval_keys, eval_tasks)[0])
    states = {name: programs.init(keys.init, hparams, adapt=adapt) for name, adapt in METHODS.items()}
    seconds, train_keys = dict.fromkeys(METHODS, 0.0), {"MAML": keys.train, "pretrained": keys.pretrain}
    yield 0, dict(seconds), {"random init": evaluate(states["MAML"])}
    for until in budget_iterations(args):
        curves = {}
        for name in METHODS:
            started = time.perf_counter()
            states[name] = _train_to(args, grid, programs, states[name], train_keys[name], until, log, label + name)
            seconds[name] += time.perf_counter() - started
            curves[name] = evaluate(states[name])
        yield until, dict(seconds), curves


def _pooled(returns: np.ndarray) -> np.ndarray:
    """Runs' returns `[R, E, K]` as one sample `[R * E, K]`, run-major."""
    return returns.reshape(-1, returns.shape[-1])


def _train_to(args, grid, programs, states, key, until, log, phase):
    """Trains `states` (stacked runs) from their iteration to `until`, one log record per run and chunk. Chunk `c`
    draws key `c` of `sweep.chunk_keys` whatever `until` is (prefix-stable), so the segments make one run."""
    records = runs.run_records({"phase": phase}, grid.runs(), time.perf_counter())
    # the study keeps no checkpoint: Ctrl-C stops it, results.json keeps the finished budgets
    postfix = lambda m: {"return": float(np.mean(m["post_adaptation_return"]))}
    description, start = f"{phase} to {until} iterations", int(np.max(states.iteration))
    return runs.train_phase(
        programs.train, states, key, until, args.chunk_size, description, log, records, postfix=postfix, start=start,
        run_labels=[", ".join(f"{name} {value:g}" for name, value in run.items()) for run in grid.runs()],
        halt_on_divergence=False,
    )  # fmt: skip


def _write(args, run_dir: Path, rows: list[dict], random_init: np.ndarray) -> dict:
    """results.json, results.md and budget_study.png for the budgets finished so far; returns the results dict."""
    results = {"run_dir": str(run_dir), "rows": rows, "random_init": random_init, "verdict": verdict(rows)}
    publish(run_dir, results, args)
    return results


PRESETS = {name.removeprefix("budget-study-"): CONFIGS[name] for name in CONFIGS if name.startswith("budget-study-")}
"""The presets, by their names in `ssm_jax.config.CONFIGS` (`budget-study-<preset>`)."""

if __name__ == "__main__":
    run_main(main, PRESETS, "vel")
