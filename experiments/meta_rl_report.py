"""The meta-RL experiment's report: results.md (tables with paired 95% CIs, the inner step, the paper's rows),
results.json and the learning curve; `experiments.meta_rl` runs the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.report import (
    REFERENCES,
    format_ci,
    gap_closed,
    markdown_table,
    mean_ci,
    new_figure,
    paired_difference,
    paired_gains,
    save_figure,
)
from ssm_jax import runs


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
    ax.set_ylabel("mean episode return (training tasks, mean over seeds)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def summarise(args, run_dir, curves, task_metrics, metric_name, oracle, records, train_seconds, total_seconds):
    rounds = args.evaluation.adapt_rounds
    steps = list(range(rounds + 1))
    metric_column = [] if metric_name is None else [f"{metric_name} after {rounds}"]
    rows = [
        [name, *format_ci(returns), *([format_ci(task_metrics[name][:, -1])[0]] if metric_name else [])]
        for name, returns in curves.items()
    ]
    if oracle is not None:
        rows.append(
            [
                "oracle (trained on each eval task, its last iteration)",
                format_ci(oracle)[0],
                *[""] * rounds,
                *[""] * len(metric_column),
            ]
        )
    table = markdown_table(["method", *[f"{k} steps" for k in steps], *metric_column], rows)
    gains = paired_gains(curves)
    table += "\n\nPaired change from 0 steps (same tasks and keys):\n\n" + markdown_table(
        ["method", *[f"after {k}" for k in steps[1:]]],
        [
            [name, *[f"{m:+.1f} ± {h:.1f}" for m, h in zip(g["mean"], g["ci95"], strict=True)]]
            for name, g in gains.items()
        ],
    )
    comparisons = {
        "hybrid_minus_standard": paired_difference(curves, "MAML + hybrid", "MAML + standard"),
        "maml_minus_pretrained": paired_difference(curves, "MAML + standard", "pretrained"),
    }
    if "MAML + standard" in curves and "pretrained" in curves:
        gain_diff = (curves["MAML + standard"][:, 1] - curves["MAML + standard"][:, 0]) - (
            curves["pretrained"][:, 1] - curves["pretrained"][:, 0]
        )
        mean, half = mean_ci(gain_diff)
        comparisons["one_step_gain_maml_minus_pretrained"] = {"mean": float(mean), "ci95": float(half)}
    for label, value in (
        ("MAML + hybrid − MAML + standard", comparisons["hybrid_minus_standard"]),
        ("MAML + standard − pretrained", comparisons["maml_minus_pretrained"]),
    ):
        if value is not None:
            table += f"\n\nPaired difference {label}: " + ", ".join(
                f"{k} steps {m:+.1f} ± {h:.1f}" for k, m, h in zip(steps, value["mean"], value["ci95"], strict=True)
            )
    if "one_step_gain_maml_minus_pretrained" in comparisons:
        g = comparisons["one_step_gain_maml_minus_pretrained"]
        table += f"\n\nOne-step gain, MAML + standard − pretrained (paired): {g['mean']:+.1f} ± {g['ci95']:.1f}"
    gap = gap_closed(curves, oracle)
    if gap:
        table += "\n\nFraction of the random-init → oracle gap closed after 0 / 1 steps: " + "; ".join(
            f"{name} {' → '.join(f'{v:.2f}' for v in values)}" for name, values in gap.items()
        )
    inner = [r for r in records if r.get("phase") == "maml" and "inner_kl" in r]
    last_inner = {}
    if inner:
        last_iteration = max(r["iteration"] for r in inner)
        final = [r for r in inner if r["iteration"] == last_iteration]
        last_inner = {
            k: float(np.mean([r[k] for r in final]))
            for k in ("inner_kl", "inner_grad_norm", "inner_clip_fraction", "inner_lr_mean")
        }
        table += (
            f"\n\nInner step at the end of meta-training (last chunk, mean over seeds): KL(pre ‖ post) "
            f"{last_inner['inner_kl']:.4f} nats, gradient norm {last_inner['inner_grad_norm']:.3f}, clipped "
            f"{last_inner['inner_clip_fraction']:.0%}, mean inner lr {last_inner['inner_lr_mean']:.4f}"
        )
    reference = REFERENCES.get(args.env, {})
    reference_text = ""
    if reference:
        width = max(len(v) for v in reference.values())
        reference_text = "\n\nReference (Finn et al. 2017; MuJoCo for the brax families: compare shapes):\n\n" + (
            markdown_table(
                ["reference", *[f"{k} steps" for k in range(width)]],
                [
                    [name, *[f"{v:.1f}" for v in values], *[""] * (width - len(values))]
                    for name, values in reference.items()
                ],
            )
        )
    trainer, later_scale = args.trainer, args.evaluation.later_rounds_lr_scale
    text = (
        f"# {args.env}, {args.evaluation.eval_tasks} held-out tasks x {args.num_seeds} seed(s), {args.model} policy"
        f"{'' if args.env == 'navigation-2d' else f', {args.backend} backend'}\n\n"
        f"Mean episode return (± 95% CI over held-out tasks and seeds) after k adaptation rounds (inner lr "
        f"{args.inner_lr}{', learned' if trainer.learn_inner_lr else ''}"
        f"{f', x {later_scale} after the first step' if later_scale != 1 else ''}, "
        f"{trainer.inner_steps} inner step(s) in meta-training); {args.iterations} meta-iterations of "
        f"{trainer.tasks_per_batch} tasks x {trainer.trajectories_per_task} trajectories x horizon {trainer.horizon}; "
        f"MAML training {train_seconds:.0f} s, total {total_seconds:.0f} s.\n\n{table}{reference_text}\n"
    )
    (run_dir / "results.md").write_text(text)
    results = {
        "run_dir": str(run_dir),
        "returns": {name: mean_ci(r)[0] for name, r in curves.items()},
        "returns_ci95": {name: mean_ci(r)[1] for name, r in curves.items()},
        "per_task_returns": curves,
        "paired_gain": gains,
        "comparisons": {k: v for k, v in comparisons.items() if v is not None},
        "gap_closed": gap,
        "inner_step": last_inner,
        "task_metric_name": metric_name,
        "task_metric": {name: mean_ci(t)[0] for name, t in task_metrics.items()},
        "oracle_return": None if oracle is None else float(np.mean(oracle)),
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
    }
    runs.write_json(run_dir / "results.json", results)
    print(text)
    print(f"results in {run_dir}")
    return results
