"""The sweep's report (`experiments.sweep`): per swept value the return after 0..K adaptation steps pooled over seeds
and held-out tasks (mean, 95% CI), each run's mean return, and one plot per swept field; from results.json and
runs.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.studies import SweepArgs
from ssm_jax.report.compare import markdown_table
from ssm_jax.report.core import mean_ci, new_figure, save_figure, steps_label


def write_report(run_dir: Path, args: SweepArgs) -> str:
    """Renders `run_dir`'s results.json and runs.json into results.md (the pooled table per swept value, then each
    run's mean return) and `sweep_<field>.png`; returns the markdown. The results pages
    (`experiments.results_pages`) call it on the recorded files."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    per_run = json.loads((Path(run_dir) / "runs.json").read_text())
    aggregate = {
        name: {float(v): stats for v, stats in by_value.items()} for name, by_value in results["aggregate"].items()
    }
    swept = {name: values for name, values in args.swept().items() if values}
    rounds, train_seconds = args.evaluation.adapt_rounds, results["train_seconds"]
    fields = list(swept)
    run_rows = [
        [*(f"{run[name]:g}" for name in fields), run["seed"], *(f"{m:.1f}" for m in run["return_mean"]),
         "yes" if run["diverged"] else ""]
        for run in per_run
    ]  # fmt: skip
    run_table = markdown_table([*fields, "seed", *[steps_label(k) for k in range(rounds + 1)], "diverged"], run_rows)
    text = (
        f"# Sweep: {args.env}, {', '.join(fields)}\n\n"
        f"{results['runs']} runs ({args.num_seeds} seeds x {', '.join(f'{n} {list(v)}' for n, v in swept.items())}) of "
        f"{args.env}, {args.iterations} meta-iterations each, trained in one vmapped program: {train_seconds:.0f} s "
        f"({results['seconds_per_run']:.1f} s per run). Return after 0..{rounds} standard steps, pooled "
        f"over seeds and {args.evaluation.eval_tasks} held-out tasks per run (mean ± 95% CI):\n\n"
        f"{_table(aggregate, rounds)}\n\nEach run's mean return over its held-out tasks:\n\n{run_table}\n"
    )
    if results["diverged_runs"]:
        text += f"\nDiverged (a non-finite state; left out of the pooled table): {results['diverged_runs']}\n"
    text += "".join(f"\n![sweep over {name}](sweep_{name}.png)\n" for name in aggregate)
    (run_dir / "results.md").write_text(text)
    for name, by_value in aggregate.items():
        _plot(run_dir / f"sweep_{name}.png", name, by_value, rounds)
    return text


def pooled(returns: np.ndarray) -> dict:
    """Runs' returns `[n, E, K + 1]` pooled over runs and tasks: mean and 95% half-width per step (NaN for n = 0:
    every run of the value diverged)."""
    if not len(returns):
        return {"mean": [float("nan")] * returns.shape[-1], "ci95": [float("nan")] * returns.shape[-1], "runs": 0}
    mean, half = mean_ci(returns.reshape(-1, returns.shape[-1]))
    return {"mean": mean.tolist(), "ci95": half.tolist(), "runs": len(returns)}


def _table(aggregate: dict, steps: int) -> str:
    rows = []
    for name, by_value in aggregate.items():
        for value, stats in by_value.items():
            cells = [f"{m:.1f} ± {h:.1f}" for m, h in zip(stats["mean"], stats["ci95"], strict=True)]
            rows.append([name, f"{value:g}", *cells])
    return markdown_table(["field", "value", *[steps_label(k) for k in range(steps + 1)]], rows)


def _plot(path, name: str, by_value: dict, steps: int) -> None:
    values = sorted(by_value)
    fig, ax = new_figure(figsize=(5, 3.5))
    for step in (0, 1, steps) if steps > 1 else (0, 1):
        mean = np.array([by_value[v]["mean"][step] for v in values])
        half = np.array([by_value[v]["ci95"][step] for v in values])
        ax.errorbar(values, mean, yerr=half, marker="o", capsize=3, label=f"after {steps_label(step)}")
    if len(values) > 1 and values[0] > 0 and values[-1] / values[0] >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(name)
    ax.set_ylabel("held-out return (mean ± 95% CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
