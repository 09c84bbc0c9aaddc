"""The sinusoid experiment's report (`experiments.sinusoid`): query MSE after 0, 1, 5 and K steps per shot count and
method (95% CIs over held-out tasks), the published figures beside them, and the curves plot; from results.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.family import SinusoidRunConfig
from ssm_jax.report.compare import REFERENCE_MAML_PAPER, REFERENCE_META_SGD_PAPER, format_mean_ci, markdown_table
from ssm_jax.report.core import new_figure, plot_mean_ci_curve, save_figure, steps_label

LABELS = {"maml": "MAML", "fomaml": "FOMAML", "meta_sgd": "Meta-SGD", "pretrained": "pretrained"}


def _plot_curves(path: Path, results: dict):
    """Query MSE against adaptation steps, one panel per K, from results.json's means and CIs. Each panel's top is
    10x its largest pre-adaptation error, so a curve that diverges leaves the panel instead of flattening the rest."""
    shots_list = list(results["shots"])
    fig, axes = new_figure(1, len(shots_list), figsize=(4.5 * len(shots_list), 3.6), squeeze=False)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        for method, summary in results["shots"][shots].items():
            plot_mean_ci_curve(ax, np.asarray(summary["mse_mean"]), np.asarray(summary["mse_ci95"]), LABELS[method])
        ax.set_yscale("log")
        before = np.array([summary["mse_mean"][0] for summary in results["shots"][shots].values()])
        if np.isfinite(before).any():
            ax.set_ylim(top=10 * before[np.isfinite(before)].max())
        ax.set_xlabel("gradient steps on the support")
        ax.set_ylabel("query MSE (95% CI)")
        ax.set_title(f"{shots}-shot, held-out tasks")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def _finn_et_al(shots: int, method: str) -> str:
    values = REFERENCE_MAML_PAPER.get(method) if shots == 5 else None
    return " / ".join(f"{v:.2f}" for v in values) if values else ""


def _li_et_al(shots: int, method: str) -> str:
    return REFERENCE_META_SGD_PAPER.get(shots, {}).get(method, "")


REFERENCE_COLUMNS = {
    (1.0, 1.0): ("Finn et al. 2017, 1 / 5 / 10 steps", _finn_et_al),
    (0.8, 1.2): ("Li et al. 2017, 1 step", _li_et_al),
}
"""The published figures for a frequency range, as (column label, (shots, method) -> cell); the MAML paper's
distribution (ω = 1, 5-shot only) and Meta-SGD's (ω in [0.8, 1.2], Li et al. Table 1 as quoted in secondary copies:
its 10-shot figures are unconfirmed)."""


def write_report(run_dir: Path, args: SinusoidRunConfig) -> str:
    """Renders `run_dir`'s results.json into results.md (and with `args.plots` mse_vs_steps.png); returns the
    markdown. The results pages (`experiments.results_pages`) call it on the recorded files."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    columns = (0, 1, min(5, args.adapt_rounds), args.adapt_rounds)
    reference_label, reference = REFERENCE_COLUMNS.get(tuple(args.frequency_range), (None, None))
    rows = [
        [shots, LABELS[method]]
        + [format_mean_ci(summary["mse_mean"][k], summary["mse_ci95"][k], digits=3) for k in columns]
        + ([reference(int(shots), method)] if reference else [])
        for shots, per_method in results["shots"].items()
        for method, summary in per_method.items()
    ]
    header = ["K", "method", *(steps_label(k) for k in columns), *([reference_label] if reference else [])]
    distribution = f"amplitude U[0.1,5], phase U[0,π], frequency U{list(args.frequency_range)}, x U[-5,5]"
    caption = "A curve that leaves the top of its panel diverged."
    plot = f"\n\n![query MSE against steps](mse_vs_steps.png)\n\n{caption}" if args.plots else ""
    meta_sgd_diverged = any(
        not np.all(np.isfinite(per_method["meta_sgd"]["mse_mean"][1:]))
        for per_method in results["shots"].values()
        if "meta_sgd" in per_method
    )
    why = (
        f"\n\nMeta-SGD learns its per-parameter rates for the {args.inner_steps} step(s) it meta-trains (as Li et al. "
        "train and report it, one step); repeated, that learned step diverges, so its curve after its trained steps "
        "is not a reading of Meta-SGD.\n"
        if meta_sgd_diverged
        else ""
    )
    text = (
        f"# Sinusoid regression, {args.eval_tasks} held-out tasks x {args.num_seeds} seed(s) ({distribution})\n\n"
        f"Query MSE (mean ± 95% CI) after k SGD steps (lr {args.inner_lr}; Meta-SGD uses its learned lr), "
        f"{args.iterations} meta-iterations, meta-batch {args.tasks_per_batch}.\n\n"
        f"{markdown_table(header, rows)}{plot}\n{why}"
    )
    (run_dir / "results.md").write_text(text)
    if args.plots:
        _plot_curves(run_dir / "mse_vs_steps.png", results)
    return text
