"""The meta-RL experiment's report. `summarise` turns a run's evaluation into results.json; `write_report` renders
results.md (tables with paired 95% CIs, the inner step, the paper's rows) and the plots from the recorded files
alone, so a run and its results page (`experiments.results_pages`) print the same; `experiments.meta_rl` runs the
pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax import run_files
from ssm_jax.config.family import RunConfig
from ssm_jax.report import (
    REFERENCES,
    beside_the_paper,
    both_finite,
    format_ci,
    format_mean_ci,
    gap_closed,
    markdown_table,
    mean_ci,
    new_figure,
    paired_difference,
    paired_gains,
    physics,
    plot_adaptation,
    reference_caption,
    save_figure,
    steps_label,
)


def plot_learning(path: Path, records: list[dict]):
    fig, ax = new_figure(figsize=(6, 3.8))
    for phase, key, label in (
        ("maml", "pre_adaptation_return", "MAML, before adaptation"),
        ("maml", "post_adaptation_return", "MAML, after 1 step"),
        ("pretrained", "post_adaptation_return", "pretrained (the outer step on all tasks)"),
    ):
        by_iteration = {}
        for r in records:
            if r["phase"] == phase and key in r:
                by_iteration.setdefault(r["iteration"], []).append(r[key])
        if by_iteration:
            iterations = sorted(by_iteration)
            ax.plot(iterations, [np.mean(by_iteration[i]) for i in iterations], marker="o", ms=3, label=label)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean episode return\n(training tasks, mean over seeds)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def summarise(curves, task_metrics, metric_name, oracle, records, train_seconds, total_seconds) -> dict:
    """The results dict results.json holds: per method (`curves[name]: [tasks, K + 1]`, seeds pooled) the mean
    return after 0..K rounds with its 95% CI and the per-task returns, the paired gains and comparisons, the task
    metric, the oracle's per-task returns (`[tasks]` or None) and the inner step's size at the end of meta-training
    (from the metrics log's `records`)."""
    comparisons = {
        "hybrid_minus_standard": paired_difference(curves, "MAML + hybrid", "MAML + standard"),
        "maml_minus_pretrained": paired_difference(curves, "MAML + standard", "pretrained"),
    }
    if "MAML + standard" in curves and "pretrained" in curves:
        finite = both_finite(curves, "MAML + standard", "pretrained")
        maml, pretrained = curves["MAML + standard"][finite], curves["pretrained"][finite]
        mean, half = mean_ci((maml[:, 1] - maml[:, 0]) - (pretrained[:, 1] - pretrained[:, 0]))
        diverged = lambda name: int((~np.isfinite(curves[name]).all(axis=1)).sum())
        comparisons["one_step_gain_maml_minus_pretrained"] = {
            "mean": float(mean), "ci95": float(half), "tasks": int(finite.sum()), "of": len(finite),
            "diverged": {name: diverged(name) for name in ("MAML + standard", "pretrained")},
        }  # fmt: skip
    inner = [r for r in records if r.get("phase") == "maml" and "inner_kl" in r]
    last_inner = {}
    if inner:
        last_iteration = max(r["iteration"] for r in inner)
        final = [r for r in inner if r["iteration"] == last_iteration]
        last_inner = {
            k: float(np.mean([r[k] for r in final]))
            for k in ("inner_kl", "inner_grad_norm", "inner_clip_fraction", "inner_lr_mean")
        }
    return {
        "returns": {name: mean_ci(r)[0] for name, r in curves.items()},
        "returns_ci95": {name: mean_ci(r)[1] for name, r in curves.items()},
        "per_task_returns": curves,
        "paired_gain": paired_gains(curves),
        "comparisons": {k: v for k, v in comparisons.items() if v is not None},
        "gap_closed": gap_closed(curves, oracle),
        "inner_step": last_inner,
        "task_metric_name": metric_name,
        "task_metric": {name: mean_ci(t)[0] for name, t in task_metrics.items()},
        "task_metric_ci95": {name: mean_ci(t)[1] for name, t in task_metrics.items()},
        "per_task_oracle": oracle,
        "oracle_return": None if oracle is None else float(np.mean(oracle)),
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
    }


def write_report(run_dir: Path, args: RunConfig) -> str:
    """Renders `run_dir`'s results.json (and metrics.jsonl's learning curve) into results.md, and with `args.plots`
    learning_curve.png and adaptation_curve.png; returns the markdown."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    text = _render(results, args)
    (run_dir / "results.md").write_text(text)
    if args.plots:
        metrics = Path(run_dir) / "metrics.jsonl"
        if metrics.exists():
            plot_learning(run_dir / "learning_curve.png", run_files.MetricsLog(metrics).records())
        oracle = results["per_task_oracle"]
        curves = {name: np.asarray(r) for name, r in results["per_task_returns"].items()}
        plot_adaptation(
            run_dir / "adaptation_curve.png", curves, None if oracle is None else np.asarray(oracle),
            REFERENCES.get(args.env, {}),
        )  # fmt: skip
    return text


def headline(results: dict) -> str | None:
    """The run's verdict in one line: MAML + standard's one-step gain minus pretrained's, paired 95% CI, and whether
    it clears zero; None without both methods."""
    g = results["comparisons"].get("one_step_gain_maml_minus_pretrained")
    if g is None:
        return None
    if g["mean"] - g["ci95"] > 0:
        verdict = "MAML adapts: its one-step gain beats the pretrained baseline's"
    elif g["mean"] + g["ci95"] < 0:
        verdict = "MAML adapts less than the pretrained baseline: its one-step gain is below pretrained's"
    else:
        verdict = "No separation: MAML's one-step gain is not distinguishable from the pretrained baseline's"
    left_out = _left_out(g)
    return (
        f"{verdict}, {g['mean']:+.1f} ± {g['ci95']:.1f} (MAML − pretrained, paired 95% CI on held-out tasks{left_out})"
    )


def _left_out(gain: dict) -> str:
    """ "; pretrained's step diverged on 1 of 16 tasks, left out of the pair", or "" where no adaptation diverged."""
    diverged = [f"{name}'s step diverged on {count}" for name, count in gain.get("diverged", {}).items() if count]
    return f"; {' and '.join(diverged)} of {gain['of']} tasks, left out of the pair" if diverged else ""


def _step_sizes(step_sizes: dict | None, args: RunConfig) -> str:
    """The test-time step size each method was scored at and its validation scores per multiple ('' without)."""
    if not step_sizes:
        return ""
    evaluation = args.evaluation
    decays = evaluation.later_rounds_lr_grid or (evaluation.later_rounds_lr_scale,)
    score = lambda x: f"{x:.1f}" if np.isfinite(x) else "diverged"
    rows = [
        [
            name if i == 0 else "", f"x{decay:g}",
            f"**{args.inner_lr * chosen['scale']:.4g}** (x{chosen['scale']:g})"
            if decay == (evaluation.later_rounds_lr_scale if chosen["schedule"] is None else chosen["schedule"])
            else "",
            *map(score, scores),
        ]
        for name, chosen in step_sizes.items()
        for i, (decay, scores) in enumerate(zip(decays, chosen["scores"], strict=True))
    ]  # fmt: skip
    return (
        f"\n\nEach method at its best test-time step size: the multiple of the inner lr ({args.inner_lr}), and the "
        f"decay after round 1, with the best mean return over rounds 1..{evaluation.adapt_rounds} on "
        f"{evaluation.eval_tasks} validation tasks per seed (never the held-out ones); the tables above are at the "
        "chosen one. Validation scores:\n\n"
        + markdown_table(
            ["method", "decay after round 1", "chosen", *[f"x{s:g}" for s in evaluation.step_size_grid]], rows
        )
    )


def _render(results: dict, args: RunConfig) -> str:
    rounds = args.evaluation.adapt_rounds
    steps = list(range(rounds + 1))
    metric_name, oracle = results["task_metric_name"], results["per_task_oracle"]
    metric_column = [] if metric_name is None else [f"{metric_name} after {rounds}"]
    rows = [
        [
            name,
            *map(format_mean_ci, results["returns"][name], results["returns_ci95"][name]),
            *([format_mean_ci(results["task_metric"][name][-1], results["task_metric_ci95"][name][-1])]
              if metric_name else []),
        ]
        for name in results["returns"]
    ]  # fmt: skip
    if oracle is not None:
        rows.append(
            ["oracle (trained on each eval task, its last iteration)", format_ci(np.asarray(oracle))[0],
             *[""] * rounds, *[""] * len(metric_column)]
        )  # fmt: skip
    table = markdown_table(["method", *[steps_label(k) for k in steps], *metric_column], rows)
    table += "\n\nPaired change from 0 steps (same tasks and keys):\n\n" + markdown_table(
        ["method", *[f"after {k}" for k in steps[1:]]],
        [
            [name, *[f"{m:+.1f} ± {h:.1f}" for m, h in zip(g["mean"], g["ci95"], strict=True)]]
            for name, g in results["paired_gain"].items()
        ],
    )
    table += _step_sizes(results.get("step_sizes"), args)
    comparisons = results["comparisons"]
    for key, label in (
        ("hybrid_minus_standard", "MAML + hybrid − MAML + standard"),
        ("maml_minus_pretrained", "MAML + standard − pretrained"),
    ):
        if key in comparisons:
            value = comparisons[key]
            pairs = zip(steps, value["mean"], value["ci95"], strict=True)
            tasks, of = value.get("tasks"), len(next(iter(results["per_task_returns"].values())))
            label += f" (over the {tasks} of {of} tasks where both stayed finite)" if tasks not in (None, of) else ""
            table += f"\n\nPaired difference {label}: " + ", ".join(
                f"{steps_label(k)} {m:+.1f} ± {h:.1f}" for k, m, h in pairs
            )
    if "one_step_gain_maml_minus_pretrained" in comparisons:
        g = comparisons["one_step_gain_maml_minus_pretrained"]
        gain = f"{g['mean']:+.1f} ± {g['ci95']:.1f}"
        table += f"\n\nOne-step gain, MAML + standard − pretrained (paired{_left_out(g)}): {gain}"
    if results["gap_closed"]:
        table += "\n\nFraction of the random-init → oracle gap closed after 0 / 1 steps: " + "; ".join(
            f"{name} {' → '.join(f'{v:.2f}' for v in values)}" for name, values in results["gap_closed"].items()
        )
    inner = results["inner_step"]
    if inner:
        table += (
            f"\n\nInner step at the end of meta-training (last chunk, mean over seeds): KL(pre ‖ post) "
            f"{inner['inner_kl']:.4f} nats, gradient norm {inner['inner_grad_norm']:.3f}, clipped "
            f"{inner['inner_clip_fraction']:.0%}, mean inner lr {inner['inner_lr_mean']:.4f}"
        )
    reference = REFERENCES.get(args.env, {})
    reference_text = ""
    if reference:
        width = max(len(v) for v in reference.values())
        reference_text = f"\n\n{reference_caption(args.env, args.backend)}:\n\n" + (
            markdown_table(
                ["reference", *[steps_label(k) for k in range(width)]],
                [
                    [name, *[f"{v:.1f}" for v in values], *[""] * (width - len(values))]
                    for name, values in reference.items()
                ],
            )
        )
        ours = {"MAML" if name == "MAML + standard" else name: values for name, values in results["returns"].items()}
        beside = beside_the_paper(args.env, args.backend, ours)
        reference_text += f"\n\nAfter 0 → 1 steps, beside Finn et al.'s: {beside}." if beside else ""
    plots = (
        "\n\n![learning curve](learning_curve.png)\n\n![adaptation curve](adaptation_curve.png)" if args.plots else ""
    )
    trainer, later_scale = args.trainer, args.evaluation.later_rounds_lr_scale
    return (
        f"# {args.env}, {args.evaluation.eval_tasks} held-out tasks x {args.num_seeds} seed(s), {args.model} policy"
        f"{physics(args.env, args.backend)}\n\n"
        f"Mean episode return (± 95% CI over held-out tasks and seeds) after k adaptation rounds (inner lr "
        f"{args.inner_lr}{', learned' if trainer.learn_inner_lr else ''}"
        f"{f', x {later_scale} after the first step' if later_scale != 1 else ''}, "
        f"{trainer.inner_steps} inner step(s) in meta-training); {args.iterations} meta-iterations of "
        f"{trainer.tasks_per_batch} tasks x {trainer.trajectories_per_task} trajectories x horizon {trainer.horizon}; "
        f"MAML training {results['train_seconds']:.0f} s, total {results['total_seconds']:.0f} s.\n\n"
        f"{table}{reference_text}{plots}\n"
    )
