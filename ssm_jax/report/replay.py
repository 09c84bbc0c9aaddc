"""The replay study's report (`experiments.replay`): per regime and hybrid variant, the α chosen on the first half of
each seed's held-out tasks and its paired difference from standard on the other half, the diverged counts, and the
α-sweep plot, rendered from the per-task scores in results.json alone.

Regimes (MAML meta-trained once per seed, then evaluated on `eval_tasks` held-out tasks per seed):
- `many_step`: one support of `support_trajectories` trajectories, then `many_steps` gradient steps on it from the
  meta-trained start; scored by the return of fresh trajectories after them.
- `online`: one episode per task that adapts every `online_every` steps on the last `online_window` transitions
  (`adapt.online_rl.make_online_rl_episode`); the task buffer holds every window seen so far. Also against the same
  episodes frozen.
- `task_switch`: the same online episode, whose goal changes to another held-out task's at half the horizon;
  scored by the return after the switch, and what the agent forgot of the first task (frozen return on it with the
  params it had at the switch minus with its final params).
- world model (`--preset world-model`): meta-trained for one-trajectory supports, then `adapt_rounds` SGD steps;
  scored by the query's one-step MSE (lower is better).

Rates are multiples of the meta-trained inner lr: `many_step_lr_scale` and `online_lr_scale` (a tenth by default:
at the full rate, many steps and online updates diverge). The verdict is honest about selection: each variant's α
is chosen on the first half of every seed's held-out tasks, and its difference from standard (paired, 95% CI, over
the tasks where neither diverged, beside each one's count of diverged tasks) is reported on the other half.
Writes results.json (with every per-task score, from which results.md is rendered), results.md and
alpha_sweep.png under `<out_dir>/<timestamp>/`, the first two after each regime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.studies import ReplayArgs, ReplayWorldModelArgs
from ssm_jax.report.compare import format_mean_ci, markdown_table
from ssm_jax.report.core import mean_ci, new_figure, save_figure

METRICS = {
    "many_step": ("return after the steps", 1.0),
    "online": ("episode return", 1.0),
    "task_switch": ("return after the switch", 1.0),
    "world_model": ("query one-step MSE", -1.0),
}
"""Each regime's score and its sign (+1: higher is better), by regime."""


def verdicts(scores: dict, alphas: tuple[float, ...], sign: float) -> dict:
    """Per variant of one regime (`scores[variant]`: `[A, S, E]`, α = 0 the standard adapter; `sign` +1 when higher
    scores are better, -1 when lower). A task whose score is not finite is one the adapter diverged on. Returns,
    per variant: `sweep`, the paired difference from standard at each α > 0 over the tasks where both are finite
    (mean, CI) and the tasks each diverged on; `chosen_alpha`, chosen on the first half of every seed's tasks (the
    fewest divergences, then the best mean difference); `verdict`, the same on the other half, with a word: a
    variant that diverges on fewer tasks than standard `helps` unless its finite difference hurts (and the mirror
    case `hurts`); otherwise the finite difference decides (`helps`, `hurts`, or `ties` when its CI holds 0)."""
    out = {}
    for label, values in scores.items():
        if label == "frozen" or label.endswith(": forgetting"):
            continue
        values = np.asarray(values, np.float64)
        half = values.shape[-1] // 2
        pooled = lambda x: x.reshape(x.shape[0], -1)
        every, first, second = (pooled(values), pooled(values[..., :half]), pooled(values[..., half:]))
        sweep_ = [paired_summary(every[0], every[a]) for a in range(1, len(alphas))]
        selection = [paired_summary(first[0], first[a]) for a in range(1, len(alphas))]
        choice = max(
            range(len(selection)),
            key=lambda i: (-selection[i]["diverged"], np.nan_to_num(sign * selection[i]["mean"], nan=-np.inf)),
        )
        verdict = paired_summary(second[0], second[1 + choice])
        verdict["word"] = _word(verdict, sign)
        out[label] = {
            "sweep": {"alpha": list(alphas[1:]), **{k: [entry[k] for entry in sweep_] for k in sweep_[0]}},
            "chosen_alpha": alphas[1 + choice],
            "verdict": verdict,
        }
    return out


def paired_summary(standard: np.ndarray, hybrid: np.ndarray) -> dict:
    """`hybrid − standard` over the tasks where both are finite (mean, 95% CI half-width, count), and how many tasks
    each diverged on (`standard_diverged`, `diverged`)."""
    finite = np.isfinite(standard) & np.isfinite(hybrid)
    mean, ci = (float(v) for v in mean_ci(hybrid[finite] - standard[finite])) if finite.sum() > 1 else (np.nan,) * 2
    return {
        "mean": mean,
        "ci95": ci,
        "finite_tasks": int(finite.sum()),
        "diverged": int(np.sum(~np.isfinite(hybrid))),
        "standard_diverged": int(np.sum(~np.isfinite(standard))),
    }


def _word(summary: dict, sign: float) -> str:
    mean, ci = summary["mean"], summary["ci95"]
    finite_word = "ties" if not np.isfinite(mean) or abs(mean) <= ci else ("helps" if sign * mean > 0 else "hurts")
    fewer, more = summary["diverged"] < summary["standard_diverged"], summary["diverged"] > summary["standard_diverged"]
    if fewer and finite_word != "hurts":
        return "helps"
    if more and finite_word != "helps":
        return "hurts"
    return finite_word


def _rows(regime: str, summary: dict) -> list[list[str]]:
    rows = []
    for label, entry in summary.items():
        verdict = entry["verdict"]
        rows.append([
            label, f"{entry['chosen_alpha']:g}", _difference(verdict, _digits(regime)),
            f"{verdict['diverged']} / {verdict['standard_diverged']}", verdict["word"],
        ])  # fmt: skip
    return rows


def _difference(summary: dict, digits: int) -> str:
    mean, ci = summary["mean"], summary["ci95"]
    return format_mean_ci(mean, ci, digits) if np.isfinite(mean) else "no finite pair"


def _digits(regime: str) -> int:
    return 4 if regime == "world_model" else 1


def write_report(run_dir: Path, args: ReplayArgs | ReplayWorldModelArgs) -> str:
    """results.md (and alpha_sweep.png with `args.plots`) from the per-task scores in the run's results.json (the
    verdicts are recomputed from them); returns the markdown."""
    results = json.loads((run_dir / "results.json").read_text())
    alphas = tuple(results["alphas"])
    regimes = {name: verdicts(scores, alphas, METRICS[name][1]) for name, scores in sorted(results["scores"].items())}
    lines = [
        "# Hybrid adaptation against standard, per regime",
        f"{args.num_seeds} seeds x {_eval_tasks(args)} held-out tasks each; α chosen on the first half of every "
        "seed's tasks among " + ", ".join(f"{a:g}" for a in alphas[1:]) + " (the fewest diverged tasks, then the "
        "best mean), judged on the other half. Differences are hybrid − standard on the same tasks and keys "
        "(paired), with 95% CIs, over the tasks where neither diverged (a non-finite score); the diverged column "
        "counts each adapter's (hybrid / standard). Fewer divergences with no worse finite difference is `helps`.",
    ]
    lines.append(_protocol(args))
    for regime, summary in regimes.items():
        metric, sign = METRICS[regime]
        digits = _digits(regime)
        lines += [f"## {regime.replace('_', ' ')}", f"Score: {metric} ({'higher' if sign > 0 else 'lower'} is better)."]
        scores = {label: np.asarray(values, np.float64) for label, values in results["scores"][regime].items()}
        standard = scores[next(iter(summary))][0].reshape(-1)
        lines.append(f"Standard: {_finite_mean(standard, digits)}.")
        if "frozen" in scores:
            frozen = scores["frozen"].reshape(-1)
            lines.append(
                f"Frozen (the same episodes, no update): {_finite_mean(frozen, digits)}; standard − frozen "
                f"{_difference(paired_summary(frozen, standard), digits)}."
            )
        header = ["hybrid replays", "α chosen", "hybrid − standard", "diverged", "verdict"]
        lines.append(markdown_table(header, _rows(regime, summary)))
        sweep_rows = [
            [label, *(f"{_difference({'mean': m, 'ci95': c}, digits)} ({d})" for m, c, d in
                      zip(entry["sweep"]["mean"], entry["sweep"]["ci95"], entry["sweep"]["diverged"], strict=True))]
            for label, entry in summary.items()
        ]  # fmt: skip
        lines += ["α sweep on all tasks, hybrid − standard (hybrid's diverged tasks):",
                  markdown_table(["hybrid replays", *(f"α = {a:g}" for a in alphas[1:])], sweep_rows)]  # fmt: skip
        lines += _regime_notes(regime, scores, summary, alphas)
    if args.plots:
        _plot(run_dir / "alpha_sweep.png", regimes, alphas)
        lines.append("![hybrid − standard against α](alpha_sweep.png)")
    text = "\n\n".join(lines) + "\n"
    (run_dir / "results.md").write_text(text)
    return text


def _protocol(args: ReplayArgs | ReplayWorldModelArgs) -> str:
    """One sentence naming each regime's settings (rates as multiples of the inner lr)."""
    if isinstance(args, ReplayWorldModelArgs):
        return (
            f"World model ({args.model} on {args.env}): meta-trained and adapted with "
            f"{args.trainer.model.support_trajectories}-trajectory supports, {args.trainer.adapt_rounds} SGD steps at "
            f"the inner lr {args.inner_lr:g}."
        )
    later = args.evaluation.later_rounds_lr_scale
    return (
        f"MAML on {args.env} ({args.model} policy, inner lr {args.inner_lr:g}). Many-step: {args.many_steps} steps "
        f"on {args.support_trajectories} trajectories at {args.many_step_lr_scale:g}x the inner lr. Online and task "
        f"switch: an update every {args.online_every} steps on the last {args.online_window} transitions, the first "
        f"at {args.online_lr_scale:g}x the inner lr and later ones at {later:g}x that; the task switches at step "
        f"{args.trainer.horizon // 2} of {args.trainer.horizon}."
    )


def _finite_mean(values: np.ndarray, digits: int) -> str:
    finite = np.isfinite(values)
    diverged = f", diverged on {int(np.sum(~finite))} of {values.size}" if not finite.all() else ""
    return f"{format_mean_ci(*map(float, mean_ci(values[finite])), digits)}{diverged}"


def _eval_tasks(args) -> int:
    return args.trainer.eval_tasks if isinstance(args, ReplayWorldModelArgs) else args.evaluation.eval_tasks


def _regime_notes(regime: str, scores: dict, summary: dict, alphas: tuple[float, ...]) -> list[str]:
    """For the online regime, each variant at its chosen α against the frozen episodes; for the task switch, what
    each forgot of the first task beside standard."""
    notes = []
    at_chosen = lambda values, entry: values[alphas.index(entry["chosen_alpha"])].reshape(-1)
    if regime == "online":
        frozen = scores["frozen"].reshape(-1)
        rows = []
        for label, entry in summary.items():
            gain = paired_summary(frozen, at_chosen(scores[label], entry))
            rows.append([label, f"{entry['chosen_alpha']:g}", _difference(gain, 1), str(gain["diverged"])])
        notes += ["Each at its chosen α against the same episodes frozen (all tasks):",
                  markdown_table(["hybrid replays", "α", "hybrid − frozen", "diverged"], rows)]  # fmt: skip
    if regime == "task_switch":
        rows = []
        for label, entry in summary.items():
            forgetting = scores[f"{label}: forgetting"]
            rows.append([
                label, f"{entry['chosen_alpha']:g}", _finite_mean(forgetting[0].reshape(-1), 1),
                _finite_mean(at_chosen(forgetting, entry), 1),
            ])  # fmt: skip
        notes += ["Forgetting of the first task (its frozen return with the params at the switch minus with the "
                  "final params; positive: forgot), all tasks:",
                  markdown_table(["hybrid replays", "α", "standard", "hybrid"], rows)]  # fmt: skip
    return notes


def _plot(path: Path, regimes: dict, alphas: tuple[float, ...]) -> None:
    fig, axes = new_figure(1, len(regimes), figsize=(4.2 * len(regimes), 3.4), squeeze=False)
    for ax, (regime, summary) in zip(axes[0], regimes.items(), strict=True):
        for label, entry in summary.items():
            sweep_ = entry["sweep"]
            ax.errorbar(alphas[1:], sweep_["mean"], yerr=sweep_["ci95"], label=label, marker="o", capsize=3)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(alphas[1] / 2, alphas[-1] * 2)  # set: a panel whose every point diverged has no data
        ax.set_xlabel("α")
        ax.set_title(f"{regime.replace('_', ' ')}: {METRICS[regime][0]}", fontsize=9)
    axes[0][0].set_ylabel("hybrid − standard")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)
