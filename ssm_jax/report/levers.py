"""The levers sweep's report (`experiments.levers`): each setting's paired difference of one-step gains (MAML −
pretrained) on validation goals at each budget, the setting the rule chose, and the plot; rendered from
results.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.studies import LeverArgs
from ssm_jax.report.budget_study import clears_zero
from ssm_jax.report.compare import markdown_table, physics
from ssm_jax.report.core import new_figure, save_figure


def choose(settings: list[dict]) -> int | None:
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
