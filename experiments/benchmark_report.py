"""The benchmark's report: the table of modes per (family, model) cell with the paired hybrid − standard verdict, and
its bar plot; `experiments.benchmark` runs the cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.report import format_ci, markdown_table, mean_ci, new_figure, save_figure

MODES = ("none", "standard", "hybrid")


def _score(curves: dict, mode: str) -> np.ndarray:
    """Per-task score after one step (`none`: before any)."""
    values = np.asarray(curves[mode])
    return values[:, min(1, values.shape[1] - 1)]


def aggregate(objective: str, cells: list[dict], num_seeds: int, tasks_per_seed: int) -> tuple[str, list[dict]]:
    """The markdown table and its rows: mean ± 95% CI per mode after one step (held-out tasks of every seed
    pooled), hybrid − standard paired."""
    lower_is_better = objective == "world_model"
    rows, table = [], []
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
        formatted = [format_ci(scores[mode], 4 if lower_is_better else 1)[0] for mode in MODES]
        diff = format_ci(scores["hybrid"] - scores["standard"], 4 if lower_is_better else 1)[0]
        table.append([cell["env"], cell["method"], cell["parameters"], *formatted, diff, f"hybrid {verdict}"])
    metric = "query one-step MSE (lower is better)" if lower_is_better else "episode return (higher is better)"
    header = ["family", "model", "parameters", "none", "standard, 1 step", "hybrid, 1 step", "hybrid − standard", ""]
    text = (
        f"**{metric}**, mean ± 95% CI over {num_seeds * tasks_per_seed} held-out tasks ({num_seeds} seeds pooled); "
        "the last columns "
        f"are the paired difference and what it says (a CI that contains 0 ties).\n\n{markdown_table(header, table)}"
    )
    return text, rows


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
