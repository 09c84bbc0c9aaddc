"""The world-model experiment's report (`experiments.world_model`): per metric the query error after 0..K
adaptation steps of each method and mode (95% CIs over held-out tasks), the paired differences after one step,
and one plot per metric; from results.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.family import WorldModelRunConfig
from ssm_jax.report.compare import format_ci, markdown_table, physics
from ssm_jax.report.core import mean_ci, new_figure, plot_ci_curve, save_figure, steps_label

METHODS = ("MAML", "pretrained")
MODES = ("none", "standard", "hybrid")
METRICS = {"mse": "one-step MSE", "open_loop": "10-step open-loop error"}
ORACLE_NAMES = {"scratch": "oracle"}
"""The oracle (a fresh model fitted to each held-out task's support) under the name runs recorded before the
glossary (`ssm_jax.types`) gave it one word."""


def _plot(path: Path, curves: dict, ylabel: str) -> None:
    fig, ax = new_figure(figsize=(6, 3.8))
    for name, values in curves.items():
        if values.shape[1] > 1:
            ax.set_xticks(plot_ci_curve(ax, values, name, band=True))
        else:
            mean, _ = mean_ci(values[:, 0])
            ax.axhline(mean, ls="--", color="k" if name == "oracle" else "grey", lw=1, label=f"{name} ({mean:.3g})")
    ax.set_yscale("log")
    before = max(float(np.mean(values[:, 0])) for values in curves.values())
    ax.set_ylim(top=30 * before)  # a diverging baseline would otherwise flatten every other curve
    ax.set_xlabel("adaptation steps on the held-out task's support")
    ax.set_ylabel(f"query {ylabel}\n(mean, 95% CI over tasks)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


@np.errstate(invalid="ignore", over="ignore")  # a diverged baseline's inf - inf prints as "diverged"
def report(results: dict, steps: int) -> str:
    """Markdown tables (error after 0..K steps, 95% CIs) per metric, and paired differences after one step."""
    lines = []
    header = ["method + mode", *(steps_label(k) for k in range(steps + 1))]
    for name, label in METRICS.items():
        curves = results[name]
        rows = [
            [method, *format_ci(values, 4), *["—"] * (steps + 1 - values.shape[1])] for method, values in curves.items()
        ]
        lines += [f"**{label}** (standardised units; lower is better)", "", markdown_table(header, rows), ""]
        maml = curves["MAML + standard"]
        for other in ("MAML + hybrid", "pretrained + none", "pretrained + standard"):
            diff = format_ci(curves[other][:, min(1, curves[other].shape[1] - 1)] - maml[:, 1], 4)[0]
            lines.append(f"- {other} − MAML + standard after one step: {diff}")
        lines.append(
            f"- oracle − MAML + standard after one step: {format_ci(curves['oracle'][:, 0] - maml[:, 1], 4)[0]}"
        )
        lines.append("")
    return "\n".join(lines)


def _step_sizes(step_sizes: dict | None, args: WorldModelRunConfig) -> str:
    """The step size each method and mode was scored at, with its validation scores per multiple ('' without)."""
    if not step_sizes:
        return ""
    score = lambda x: f"{x:.4f}" if np.isfinite(x) else "diverged"
    rows = [
        [name, f"**{args.inner_lr * chosen['scale']:.4g}** (x{chosen['scale']:g})", *map(score, chosen["scores"][0])]
        for name, chosen in step_sizes.items()
    ]
    header = ["method + mode", "chosen step size", *[f"x{s:g}" for s in args.trainer.step_size_grid]]
    return (
        f"\nEach method and mode at its best test-time step size: the multiple of the inner lr ({args.inner_lr}) with "
        f"the lowest mean query MSE over rounds 1..{args.trainer.adapt_rounds} on {args.trainer.eval_tasks} validation "
        "tasks per seed (never the held-out ones); the tables above are at the chosen one. Validation MSE:\n\n"
        f"{markdown_table(header, rows)}\n"
    )


def write_report(run_dir: Path, args: WorldModelRunConfig) -> str:
    """Renders `run_dir`'s results.json into results.md and the plots (one per metric); returns the markdown. The
    results pages (`experiments.results_pages`) call it on the recorded files."""
    summary = json.loads((Path(run_dir) / "results.json").read_text())
    per_task = {
        name: {
            ORACLE_NAMES.get(method, method): np.asarray(values, dtype=np.float64)
            for method, values in summary["per_task"][name].items()
        }
        for name in METRICS
    }
    on = f"{args.env}{physics(args.env, args.backend)}"
    title = f"# World model: {args.model} on {on} ({summary['parameters']} parameters)\n\n"
    plots = "".join(f"\n![{label}]({name}.png)\n" for name, label in METRICS.items()) if args.plots else ""
    text = title + report(per_task, args.trainer.adapt_rounds) + _step_sizes(summary.get("step_sizes"), args) + plots
    (run_dir / "results.md").write_text(text)
    if args.plots:
        for name, label in METRICS.items():
            _plot(run_dir / f"{name}.png", per_task[name], label)
    return text
