"""The benchmark's report: the table of modes per (family, model) cell with the paired hybrid − standard verdict, and
its bar plot; `experiments.benchmark` runs the cells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.report import format_mean_ci, markdown_table, mean_ci, new_figure, save_figure

MODES = ("none", "standard", "hybrid")


def _score(curves: dict, mode: str) -> np.ndarray:
    """Per-task score after one step (`none`: before any)."""
    values = np.asarray(curves[mode])
    return values[:, min(1, values.shape[1] - 1)]


def aggregate(objective: str, cells: list[dict]) -> list[dict]:
    """Per cell: mean and 95% CI half-width per mode after one step (held-out tasks of every seed pooled), and
    hybrid − standard paired with its verdict."""
    lower_is_better = objective == "world_model"
    rows = []
    for cell in cells:
        scores = {mode: _score(cell["curves"], mode) for mode in MODES}
        diff_mean, diff_half = mean_ci(scores["hybrid"] - scores["standard"])
        better = -diff_mean if lower_is_better else diff_mean
        if not np.isfinite(diff_mean):
            verdict = "cannot be compared (a mode diverged)"
        else:
            verdict = "ties" if abs(diff_mean) <= diff_half else ("helps" if better > 0 else "hurts")
        rows.append(
            {
                "env": cell["env"], "method": cell["method"], "parameters": cell["parameters"],
                **{mode: mean_ci(scores[mode]) for mode in MODES},
                "hybrid_minus_standard": (diff_mean, diff_half), "verdict": f"hybrid {verdict}",
            }
        )  # fmt: skip
    return rows


def write_report(run_dir: Path, args) -> str:
    """Renders `run_dir`'s results.json (`config.studies.BenchmarkArgs` `args`) into results.md and benchmark.png;
    returns the markdown. The results pages (`experiments.results_pages`) call it on the recorded files."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    lower_is_better, rows = results["objective"] == "world_model", results["rows"]
    digits = 4 if lower_is_better else 1
    table = [
        [r["env"], r["method"], r["parameters"], *(format_mean_ci(*r[mode], digits) for mode in MODES),
         format_mean_ci(*r["hybrid_minus_standard"], digits), r["verdict"]]
        for r in rows
    ]  # fmt: skip
    metric = "query one-step MSE (lower is better)" if lower_is_better else "episode return (higher is better)"
    header = ["family", "model", "parameters", "none", "standard, 1 step", "hybrid, 1 step", "hybrid − standard", ""]
    text = (
        f"# Benchmark ({results['objective']}): {len(args.envs)} families × {len(args.methods)} models × 3 modes\n\n"
        f"**{metric}**, mean ± 95% CI over {results['held_out_tasks']} held-out tasks ({args.num_seeds} seeds pooled); "
        "the last columns are the paired difference and what it says (a CI that contains 0 ties).\n\n"
        f"{markdown_table(header, table)}\n\n![benchmark](benchmark.png)\n"
    )
    (run_dir / "results.md").write_text(text)
    plot(run_dir / "benchmark.png", results["objective"], rows)
    return text


def plot(path: Path, objective: str, rows: list[dict]) -> None:
    """benchmark.png: bars per mode for each model, one panel per family."""
    families = list(dict.fromkeys(r["env"] for r in rows))
    fig, axes = new_figure(1, len(families), figsize=(5 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        cells = [r for r in rows if r["env"] == family]
        x = np.arange(len(cells))
        for i, mode in enumerate(MODES):
            means, halves = zip(*(r[mode] for r in cells), strict=True)
            ax.bar(x + (i - 1) * 0.27, means, 0.27, yerr=halves, capsize=2, label=mode)
        ax.set_xticks(x, [r["method"] for r in cells])
        ax.set_title(family)
        if objective == "world_model":
            ax.set_yscale("log")
    axes[0][0].set_ylabel("query MSE" if objective == "world_model" else "episode return")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
