"""The budget study's report (`experiments.budget_study`): per budget MAML's and pretrained's return before and after
one adaptation step on the same held-out tasks, the paired difference of their one-step gains, the verdict (from
which budget it clears zero), Finn et al.'s numbers beside ours, and the plot; rendered from the per-task returns
results.json records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.studies import StudyArgs
from ssm_jax.report.compare import (
    beside_the_paper,
    format_mean_ci,
    markdown_table,
    paper_returns,
    physics,
    reference_caption,
)
from ssm_jax.report.core import mean_ci, new_figure, save_figure

METHODS = {"MAML": True, "pretrained": False}
"""The compared methods: label -> `adapt` of the trainer's `init`."""


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


def summary(values: np.ndarray) -> dict:
    """`{"mean", "ci95"}` of `values` `[n]` (95% CI half-width over the samples; NaN for none)."""
    if not len(values):
        return {"mean": float("nan"), "ci95": float("nan")}
    return dict(zip(("mean", "ci95"), map(float, mean_ci(values)), strict=True))


def clears_zero(stat: dict) -> bool:
    """Whether a `summary`'s 95% CI lies above zero (False for NaN: a diverged run)."""
    return stat["mean"] - stat["ci95"] > 0


def verdict(rows: list[dict]) -> str:
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
        f"{table}{diverged}\n\n{verdict(rows)}{beside if paper else ''}{plot}\n"
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
