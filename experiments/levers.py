"""Levers: which of the CPU preset's settings make MAML's one-step gain beat the pretrained baseline's soonest,
chosen on validation goals.

    python -m experiments.levers                             # HalfCheetah-Vel: every variant, 0.5M and 1M, 64 goals
    python -m experiments.levers --variants base "10 tasks"  # some of them
    python -m experiments.levers --preset smoke              # seconds, for tests

Each variant is the budget study (`experiments.budget_study.evaluated_budgets`) of one setting of the structural
levers (`VARIANTS`: batch shape at equal env steps, PPO epochs, TRPO, learned inner rates, inner steps; each its own
program) over a grid of the traced ones (inner and outer lr: one vmapped program for the whole grid). Every setting
is evaluated on *validation* goals, drawn from each seed's evaluation key folded with `VALIDATION`, never on the
held-out goals the recorded pages report on. The choice: the setting whose paired one-step gain difference (MAML −
pretrained) clears zero at the smallest budget, ties broken by the larger difference there.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json (rewritten after every variant),
results.md and levers.png (the gain difference per setting at each budget).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from experiments.budget_study import STUDY, StudyArgs, budget_row, clears_zero, evaluated_budgets
from experiments.common import run_main
from ssm_jax import run_files, sweep
from ssm_jax.config import CONFIGS, extend, replace
from ssm_jax.config.io import register_config
from ssm_jax.report import markdown_table, new_figure, physics, save_figure

VALIDATION = 2
"""Folded into a run's evaluation key to draw its validation goals (`sweep.held_out_tasks` folds in 1 for its
evaluation keys and draws the held-out goals from the key itself)."""

VARIANTS: dict[str, dict] = {
    "base": {"sweep_inner_lr": (0.05, 0.1, 0.2), "sweep_outer_lr": (3e-3, 1e-2)},
    "10 tasks x 4 trajectories": {"tasks_per_batch": 10, "trajectories_per_task": 4},
    "5 PPO epochs": {"outer_epochs": 5},
    "TRPO": {"outer_optimizer": "trpo"},
    "learned inner lr": {"learn_inner_lr": True},
    "2 inner steps": {"inner_steps": 2},
}
"""Each variant's changes to the study's config, by leaf name; `sweep_inner_lr` / `sweep_outer_lr` are the traced
values its grid crosses with the seeds (absent: the config's one value)."""


@register_config
@dataclasses.dataclass(frozen=True)
class LeverArgs(StudyArgs):
    variants: tuple[str, ...] = tuple(VARIANTS)
    """The settings to try, by their names in `VARIANTS`, in this order."""
    budgets: tuple[float, ...] = (5e5, 1e6)

    def __post_init__(self):
        super().__post_init__()
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"unknown variant(s) {unknown}; expected some of {', '.join(map(repr, VARIANTS))}")


def main(args: LeverArgs) -> dict:
    """Runs every variant's grid to each budget on validation goals; writes the table, the choice and the plot."""
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    validation = lambda eval_keys: jax.vmap(jax.random.fold_in, (0, None))(eval_keys, VALIDATION)
    settings, results = [], {}
    for variant in args.variants:
        changes = dict(VARIANTS[variant])
        swept = {name: changes.pop(f"sweep_{name}") for name in sweep.SWEEPABLE if f"sweep_{name}" in changes}
        config = replace(args, **changes)
        grid = sweep.make_grid(range(args.seed, args.seed + args.num_seeds), **swept)
        budgets = evaluated_budgets(config, grid, validation, log, f"{variant}: ")
        next(budgets)  # the untrained policy: not compared here
        rows = {}
        for budget, (until, seconds, curves) in zip(args.budgets, budgets, strict=True):
            env_steps = until * config.trainer.env_steps_per_iteration
            for values, members in _settings(grid).items():
                setting = {name: returns[members].reshape(-1, returns.shape[-1]) for name, returns in curves.items()}
                row = budget_row(budget, until, env_steps, setting, seconds)
                rows.setdefault(values, []).append(
                    {
                        "budget": budget,
                        "env_steps": env_steps,
                        "maml_after_one_step": row["returns"]["MAML"][1],
                        "gain_difference": row["gain_difference"],
                        "diverged": row["diverged"],
                    }
                )
        settings += [{"variant": variant, "values": dict(values), "rows": r} for values, r in rows.items()]
        results = {"run_dir": str(run_dir), "settings": settings, "chosen": _choose(settings)}
        run_files.write_json(run_dir / "results.json", results)
    print(write_report(run_dir, args))
    print(f"results in {run_dir}")
    return results


def _settings(grid: sweep.Grid) -> dict[tuple, list[int]]:
    """The grid's runs grouped by their traced values (every seed of one setting together): values -> run indices."""
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(grid.runs()):
        groups.setdefault(tuple((name, value) for name, value in run.items() if name != "seed"), []).append(i)
    return groups


def _choose(settings: list[dict]) -> int | None:
    """The index of the setting whose gain difference clears zero at the smallest budget (ties: the larger mean
    there), or None if none does."""
    first_clear = lambda s: next((k for k, row in enumerate(s["rows"]) if clears_zero(row["gain_difference"])), None)
    cleared = [
        (k, -s["rows"][k]["gain_difference"]["mean"], i)
        for i, s in enumerate(settings)
        if (k := first_clear(s)) is not None
    ]
    return min(cleared)[2] if cleared else None


def _label(setting: dict) -> str:
    values = ", ".join(f"{name} {value:g}" for name, value in setting["values"].items())
    return setting["variant"] + (f" ({values})" if values else "")


def write_report(run_dir: Path, args: LeverArgs) -> str:
    """Renders `run_dir`'s results.json into results.md and levers.png; returns the markdown. The results pages
    (`experiments.results_pages`) call it on the recorded files."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    settings, chosen = results["settings"], results["chosen"]  # a diverged setting's numbers are NaN
    fmt = lambda s: f"{s['mean']:+.1f} ± {s['ci95']:.1f}" if np.isfinite(s["mean"]) else "diverged"
    budgets = [_budget(b) for b in args.budgets]
    table = markdown_table(
        ["setting", *[f"gain MAML − pretrained, {b}" for b in budgets], f"MAML after 1 step, {budgets[-1]}"],
        [
            [("**chosen:** " if i == chosen else "") + _label(s), *[fmt(row["gain_difference"]) for row in s["rows"]],
             fmt(s["rows"][-1]["maml_after_one_step"])]
            for i, s in enumerate(settings)
        ],
    )  # fmt: skip
    verdict = (
        f"Chosen: **{_label(settings[chosen])}**, the first to clear zero (at the smallest budget; ties: the larger "
        "difference)."
        if chosen is not None
        else "No setting's gain difference clears zero at these budgets."
    )
    trainer = args.trainer
    text = (
        f"# Levers: {args.env}, {args.model} policy{physics(args.env, args.backend)}, {args.evaluation.eval_tasks} "
        f"validation goals x {args.num_seeds} seed(s)\n\nEach setting trained MAML and the pretrained baseline on "
        "the same env steps and was evaluated on validation goals (not the held-out goals of the other pages). The "
        "cells are the paired difference of the one-step gains, MAML − pretrained (mean ± 95% CI over the goals and "
        "seeds), at each budget (env steps per method, rounded up to whole chunks of meta-iterations). The base: "
        f"{trainer.tasks_per_batch} tasks x {trainer.trajectories_per_task} trajectories x horizon {trainer.horizon}, "
        f"inner lr {args.inner_lr:g}, outer lr {args.outer_lr:g}, {trainer.outer_epochs} PPO epochs.\n\n"
        f"{table}\n\n{verdict}\n\n![levers](levers.png)\n"
    )
    (Path(run_dir) / "results.md").write_text(text)
    _plot(Path(run_dir) / "levers.png", settings, chosen, budgets)
    return text


def _budget(env_steps: float) -> str:
    return f"{env_steps / 1e6:g}M"


def _plot(path: Path, settings: list[dict], chosen: int | None, budgets: list[str]) -> None:
    fig, ax = new_figure(figsize=(7, 0.35 * len(settings) + 1.5))
    for k, (budget, marker) in enumerate(zip(budgets, "os^Dv<>", strict=False)):
        means = [s["rows"][k]["gain_difference"]["mean"] for s in settings]
        halves = [s["rows"][k]["gain_difference"]["ci95"] for s in settings]
        label = f"{budget} env steps"
        ax.errorbar(means, np.arange(len(settings)) + 0.15 * k, xerr=halves, fmt=marker, capsize=3, label=label)
    ax.axvline(0.0, color="grey", ls="--")
    diverged = lambda s: " (diverged)" if not np.isfinite(s["rows"][-1]["gain_difference"]["mean"]) else ""
    labels = [("→ " if i == chosen else "") + _label(s) + diverged(s) for i, s in enumerate(settings)]
    ax.set_yticks(np.arange(len(settings)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("one-step gain, MAML − pretrained (validation goals, 95% CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


LEVERS = {**STUDY, "out_dir": "runs/levers"}
"""The sweep's changes to a named config: the budget study's (64 goals, here validation goals; one adaptation round)."""

PRESETS = {
    "vel": extend(LeverArgs, CONFIGS["halfcheetah-vel"], **LEVERS),
    "dir": extend(LeverArgs, CONFIGS["halfcheetah-dir"], **LEVERS),
    "smoke": extend(
        LeverArgs,
        CONFIGS["halfcheetah-vel-smoke"],
        **{**LEVERS, "eval_tasks": 2},
        budgets=(160, 320),
        variants=("base", "TRPO"),
    ),
}
"""The sweep on the flagship's CPU batch (`ssm_jax.config.CONFIGS`), on HalfCheetah-Vel or -Dir."""

if __name__ == "__main__":
    run_main(main, PRESETS, "vel")
