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

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from experiments.common import run_main
from experiments.meta_rl import compiled_programs
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import CONFIGS, RunConfig, extend
from ssm_jax.config.io import register_config
from ssm_jax.report import (
    beside_the_paper,
    format_mean_ci,
    markdown_table,
    mean_ci,
    new_figure,
    paper_returns,
    physics,
    reference_caption,
    save_figure,
)
from ssm_jax.trainers import HParams

METHODS = {"MAML": True, "pretrained": False}  # label -> `adapt` of the trainer's init


@register_config
@dataclasses.dataclass(frozen=True)
class StudyArgs(RunConfig):
    RESUMABLE: ClassVar[bool] = False
    UNREAD_FIELDS: ClassVar[frozenset[str]] = frozenset({"iterations", "checkpoint_every", "keep_checkpoints"})
    """Fields of `RunConfig` the study never reads (its budgets set how long it trains; it keeps no checkpoint): a
    recorded study does not go stale when their defaults move."""

    budgets: tuple[float, ...] = (5e5, 1e6, 2e6, 3e6, 5e6, 1e7)
    """Env steps per method at which both methods are evaluated, ascending (the largest sets how long each trains;
    --iterations is not read)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.budgets or any(b <= 0 for b in self.budgets) or list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"budgets must be positive and strictly ascending, got {self.budgets}")


def budget_iterations(args: StudyArgs) -> list[int]:
    """Each budget's meta-iterations: its env steps rounded up to whole chunks."""
    chunks = [math.ceil(b / (args.trainer.env_steps_per_iteration * args.chunk_size)) for b in args.budgets]
    return [c * args.chunk_size for c in chunks]


def main(args: StudyArgs) -> dict:
    """Trains both methods to each budget in turn, evaluates them there, and writes the table and plot."""
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    grid = sweep.make_grid(range(args.seed, args.seed + args.num_seeds))
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
    records = lambda iteration, metrics: [
        {"phase": phase, **run, "iteration": iteration, **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
        for i, run in enumerate(grid.runs())
    ]  # the study keeps no checkpoint: Ctrl-C stops it, results.json keeps the finished budgets
    postfix = lambda m: {"return": float(np.mean(m["post_adaptation_return"]))}
    description, start = f"{phase} to {until} iterations", int(np.max(states.iteration))
    return runs.train_phase(
        programs.train, states, key, until, args.chunk_size, description, log, records, postfix=postfix, start=start,
        run_labels=[", ".join(f"{name} {value:g}" for name, value in run.items()) for run in grid.runs()],
        halt_on_divergence=False,
    )  # fmt: skip


def budget_row(budget, iterations, env_steps, curves, seconds) -> dict:
    """One budget's numbers: per method the return after 0 and 1 steps and the one-step gain (mean, 95% CI over
    held-out tasks and seeds), the paired difference of the gains, env steps and training seconds so far. A task on
    which a method's return is not finite (its training or its adaptation step diverged) is counted in `diverged`
    and left out of both methods' statistics, so the comparison stays paired; where a method has no finite task
    left, the other keeps all of its own and the difference is NaN."""
    finite = {name: np.isfinite(returns).all(axis=1) for name, returns in curves.items()}
    paired = np.all(list(finite.values()), axis=0)
    kept = {name: returns[paired if paired.any() else finite[name]] for name, returns in curves.items()}
    gains = {name: returns[:, 1] - returns[:, 0] for name, returns in kept.items()}
    difference = gains["MAML"] - gains["pretrained"] if paired.any() else np.full(1, np.nan)
    return {
        "budget": budget,
        "iterations": iterations,
        "env_steps": env_steps,
        "train_seconds": dict(seconds),
        "returns": {name: [summary(returns[:, k]) for k in range(2)] for name, returns in kept.items()},
        "one_step_gain": {name: summary(gain) for name, gain in gains.items()},
        "gain_difference": summary(difference),
        "diverged": {name: int(np.sum(~ok)) for name, ok in finite.items()},
        "per_task_returns": curves,
    }


def _write(args, run_dir: Path, rows: list[dict], random_init: np.ndarray) -> dict:
    """results.json, results.md and budget_study.png for the budgets finished so far; returns the results dict."""
    verdict = _verdict(rows)
    results = {"run_dir": str(run_dir), "rows": rows, "random_init": random_init, "verdict": verdict}
    run_files.write_json(run_dir / "results.json", results)
    print(write_report(run_dir, args))
    print(f"results in {run_dir}")
    return results


def summary(values: np.ndarray) -> dict:
    """`{"mean", "ci95"}` of `values` `[n]` (95% CI half-width over the samples; NaN for none)."""
    if not len(values):
        return {"mean": float("nan"), "ci95": float("nan")}
    return dict(zip(("mean", "ci95"), map(float, mean_ci(values)), strict=True))


def clears_zero(stat: dict) -> bool:
    """Whether a `summary`'s 95% CI lies above zero (False for NaN: a diverged run)."""
    return stat["mean"] - stat["ci95"] > 0


def _verdict(rows: list[dict]) -> str:
    separated = [r for r in rows if clears_zero(r["gain_difference"])]
    if separated:
        return (
            f"MAML's one-step gain beats pretrained's, paired 95% CI clear of zero, from {separated[0]['env_steps']:,} "
            "env steps on."
        )
    return "At no budget run here is MAML's one-step gain above pretrained's with the paired 95% CI clear of zero."


def write_report(run_dir: Path, args: StudyArgs) -> str:
    """Renders `run_dir`'s results.json into results.md (and with `args.plots` budget_study.png); returns the
    markdown. The results pages (`experiments.results_pages`) call it on the recorded files."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    rows = [  # from the recorded per-task returns, whatever the statistics the run stored
        budget_row(
            r["budget"], r["iterations"], r["env_steps"],
            {name: np.asarray(returns, float) for name, returns in r["per_task_returns"].items()}, r["train_seconds"],
        )
        for r in results["rows"]
    ]  # fmt: skip
    fmt = lambda s: format_mean_ci(s["mean"], s["ci95"])
    signed = lambda s: f"{s['mean']:+.1f} ± {s['ci95']:.1f}" if np.isfinite(s["mean"]) else "diverged"
    paper = paper_returns(args.env, args.backend)
    paper_maml = paper.get("MAML", ())[1:2]  # Finn et al.'s MAML after one step, where it compares
    table = markdown_table(
        ["env steps", "iterations", "MAML 0 → 1 step", "pretrained 0 → 1 step", "gain MAML − pretrained",
         *[f"MAML after 1 step − Finn et al.'s {v:.1f}" for v in paper_maml], "train wall (MAML + pretrained)"],
        [
            [
                f"{r['env_steps']:,}",
                r["iterations"],
                *[f"{fmt(r['returns'][m][0])} → {fmt(r['returns'][m][1])}" for m in METHODS],
                signed(r["gain_difference"]),
                *[f"{r['returns']['MAML'][1]['mean'] - v:+.1f}" for v in paper_maml],
                " + ".join(f"{r['train_seconds'][m] / 60:.1f}" for m in METHODS) + " min",
            ]
            for r in rows
        ],
    )  # fmt: skip
    random_mean, random_half = mean_ci(results["random_init"])
    largest = {name: [r["mean"] for r in rows[-1]["returns"][name]] for name in METHODS}
    beside = beside_the_paper(args.env, args.backend, {**largest, "random init": random_mean})
    beside = (
        f"\n\n{reference_caption(args.env, args.backend)}. At {rows[-1]['env_steps']:,} env steps, after 0 → 1 steps: "
        f"{beside}."
    )
    trainer, eval_tasks = args.trainer, args.evaluation.eval_tasks
    diverged = _diverged_note(rows, eval_tasks * args.num_seeds)
    plot = "\n\n![budget study](budget_study.png)" if args.plots else ""
    text = (
        f"# Budget study: {args.env}, {args.model} policy{physics(args.env, args.backend)}, {eval_tasks} held-out "
        f"tasks x {args.num_seeds} seed(s)\n\nReturn before → after one adaptation step (mean ± 95% CI over held-out "
        f"tasks); the gain difference is paired (same tasks and keys). {trainer.env_steps_per_iteration:,} env steps "
        f"per meta-iteration for either method ({trainer.tasks_per_batch} tasks x {trainer.inner_steps + 1} rounds x "
        f"{trainer.trajectories_per_task} trajectories x horizon {trainer.horizon}). Random init: "
        f"{random_mean[0]:.1f} ± {random_half[0]:.1f} → {random_mean[1]:.1f} ± {random_half[1]:.1f}.\n\n"
        f"{table}{diverged}\n\n{_verdict(rows)}{beside if paper else ''}{plot}\n"
    )
    (run_dir / "results.md").write_text(text)
    if args.plots:
        _plot(run_dir / "budget_study.png", rows, random_mean, paper)
    return text


def _diverged_note(rows: list[dict], tasks: int) -> str:
    """One line per budget at which a method's one adaptation step diverged on some tasks ("" if none did)."""
    notes = [
        f"{name}'s return is not finite (its training or its adaptation step diverged) on {count} of {tasks} tasks "
        f"at {r['env_steps']:,} env steps"
        for r in rows
        for name, count in r["diverged"].items()
        if count
    ]
    return f"\n\n{'; '.join(notes)}: such a row leaves those tasks out for both methods." if notes else ""


def _plot(path: Path, rows: list[dict], random_mean: np.ndarray, paper: dict) -> None:
    fig, ax = new_figure(figsize=(6, 3.8))
    steps = np.array([r["env_steps"] for r in rows]) / 1e6
    for name, color in zip(METHODS, ("C0", "C1"), strict=True):
        for k, style in ((0, ":"), (1, "-")):
            mean = [r["returns"][name][k]["mean"] for r in rows]
            half = [r["returns"][name][k]["ci95"] for r in rows]
            label = f"{name}, {'before adapting' if k == 0 else 'after 1 step'}"
            ax.errorbar(steps, mean, yerr=half, color=color, ls=style, marker="o", ms=4, capsize=3, label=label)
    ax.axhline(random_mean[0], color="grey", ls="--", label="random init")
    for name, color in zip(METHODS, ("C0", "C1"), strict=True):
        if name in paper:
            ax.axhline(paper[name][1], color=color, ls="-.", lw=1, label=f"{name} after 1 step, Finn et al.")
    ax.set_xscale("log")
    ax.set_xlabel("env steps per method (millions)")
    ax.set_ylabel("episode return on held-out tasks\n(mean, 95% CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


STUDY = {"eval_tasks": 64, "adapt_rounds": 1, "adaptation_mode": "standard", "out_dir": "runs/budget_study"}
"""The study's changes to a named config: 64 held-out tasks, the one adaptation round it compares."""


PRESETS = {
    "vel": extend(StudyArgs, CONFIGS["halfcheetah-vel"], **STUDY),
    "dir": extend(StudyArgs, CONFIGS["halfcheetah-dir"], **STUDY),
    "smoke": extend(StudyArgs, CONFIGS["halfcheetah-vel-smoke"], **{**STUDY, "eval_tasks": 2}, budgets=(160, 320)),
}
"""The study on the flagship's CPU batch (`ssm_jax.config.CONFIGS`), on HalfCheetah-Vel or -Dir."""

if __name__ == "__main__":
    run_main(main, PRESETS, "vel")
