"""Experience replay at test time: hybrid adaptation against standard in the regimes where replay can matter.

    python -m experiments.replay                          # navigation: many-step, online, task switch (3 seeds)
    python -m experiments.replay --preset online          # one of them (many-step, online, task-switch)
    python -m experiments.replay --preset world-model     # pendulum world model: one support trajectory, 30 steps
    python -m experiments.replay --preset smoke           # seconds, for tests (and world-model-smoke)

Hybrid adaptation adds `α x` a term on replayed experience to the current task's loss. Its sources (`adapt.rl`):
the meta-training buffer (`meta`: behaviour cloning of other tasks' windows; world models: their windows' MSE), the
task buffer of the current task's own experience (`task`, empty at each task's start: the PPO-clipped importance-
weighted policy gradient on its earlier trajectories, `clipped_pg`, or KL to the meta-trained policy on its states,
`kl_anchor`; world models: the support's windows' MSE), or `both`. Each variant is one compiled program evaluated
at every α of `--alphas` at once (the seeds x α grid is one vmapped run axis); α = 0 is the standard adapter, bit
for bit, on the same keys, so every difference is paired.

Regimes (MAML meta-trained once per seed, then evaluated on `eval_tasks` held-out tasks per seed):
- `many_step`: one support of `support_trajectories` trajectories, then `many_steps` gradient steps on it from the
  meta-trained start; scored by the return of fresh trajectories after them.
- `online`: one episode per task that adapts every `online_every` steps on the last `online_window` transitions
  (`adapt.online_rl.make_online_rl_episode`); the task buffer holds every window seen so far. Also against the same
  episodes frozen.
- `task_switch`: the same online episode, whose goal changes to another held-out task's at half the horizon;
  scored by the return after the switch, and what the agent forgot of the first task (frozen return on it with the
  params it had at the switch minus with its final params).
- world model (`--preset world-model`): meta-trained for one-trajectory supports, then `adapt_steps` SGD steps;
  scored by the query's one-step MSE (lower is better).

Rates are multiples of the meta-trained inner lr: `many_step_lr_scale` and `online_lr_scale` (a tenth by default:
at the full rate, many steps and online updates diverge). The verdict is honest about selection: each variant's α
is chosen on the first half of every seed's held-out tasks, and its difference from standard (paired, 95% CI, over
the tasks where neither diverged, beside each one's count of diverged tasks) is reported on the other half.
Writes results.json (with every per-task score, from which results.md is rendered), results.md and
alpha_sweep.png under `<out_dir>/<timestamp>/`, the first two after each regime.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import run_main
from experiments.meta_rl import compiled_programs
from ssm_jax import run_files, runs, sweep
from ssm_jax.config import CONFIGS, RunConfig, WorldModelRunConfig, build, extend, replace
from ssm_jax.config.io import register_config
from ssm_jax.report import format_mean_ci, markdown_table, mean_ci, new_figure, save_figure
from ssm_jax.trainers import HParams
from ssm_jax.trainers.world_model import make_world_model_trainer

REGIMES = ("many_step", "online", "task_switch")
RL_VARIANTS = {
    "meta": ("meta", "clipped_pg"),
    "task (clipped PG)": ("task", "clipped_pg"),
    "task (KL anchor)": ("task", "kl_anchor"),
    "both (clipped PG)": ("both", "clipped_pg"),
}
"""Hybrid variants of the meta-RL regimes: label -> (`EvalConfig.replay`, `EvalConfig.task_replay_loss`)."""
WORLD_MODEL_VARIANTS = {"meta": "meta", "task": "task", "both": "both"}
METRICS = {
    "many_step": ("return after the steps", 1.0),
    "online": ("episode return", 1.0),
    "task_switch": ("return after the switch", 1.0),
    "world_model": ("query one-step MSE", -1.0),
}
"""Each regime's score and its sign (+1: higher is better), by regime."""


def _check_alphas(alphas: tuple[float, ...]) -> None:
    if len(alphas) < 2 or alphas[0] != 0.0 or any(a <= 0 for a in alphas[1:]):
        raise ValueError(f"alphas must start with 0 (the standard adapter) followed by positive weights, got {alphas}")


@register_config
@dataclasses.dataclass(frozen=True)
class ReplayArgs(RunConfig):
    """The meta-RL regimes on a `RunConfig` (the meta-training), with the replay study's own settings."""

    RESUMABLE: ClassVar[bool] = False
    ADDED_FIELDS: ClassVar[dict] = {"online_lr_scale": 1.0}
    """What a config stored before these fields existed ran with (`config_io` fills them in when reading one)."""

    regimes: tuple[str, ...] = REGIMES
    alphas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    """Weights of the hybrid term, evaluated in one program; the first must be 0 (standard)."""
    many_steps: int = 20
    """Gradient steps of the many-step regime."""
    many_step_lr_scale: float = 0.1
    """The many-step regime's rate, x the inner lr hyperparameter (Meta-SGD's learned rates are not scaled): every
    step at the rate of the protocol's later steps."""
    support_trajectories: int = 10
    """Trajectories of the many-step regime's support."""
    online_window: int = 20
    online_every: int = 10
    online_lr_scale: float = 0.1
    """The online regimes' rate, x the inner lr (their first update; later ones x later_rounds_lr_scale too). At the
    first step's own rate (1) every online adapter diverges on some tasks and all fall far below the frozen
    episodes (the recorded H200 run)."""

    def __post_init__(self):
        super().__post_init__()
        _check_alphas(self.alphas)
        unknown = sorted(set(self.regimes) - set(REGIMES))
        if not self.regimes or unknown:
            raise ValueError(f"regimes must be some of {', '.join(REGIMES)}, got {self.regimes}")
        if not (self.many_step_lr_scale > 0 and self.online_lr_scale > 0):
            raise ValueError(
                f"many_step_lr_scale and online_lr_scale must be > 0, got {self.many_step_lr_scale}, "
                f"{self.online_lr_scale}"
            )
        if min(self.many_steps, self.support_trajectories, self.online_window, self.online_every) < 1:
            raise ValueError("many_steps, support_trajectories, online_window and online_every must be >= 1")
        if self.evaluation.eval_tasks < 2 or self.evaluation.eval_tasks % 2:
            raise ValueError(f"eval_tasks must be even (half choose α, half judge), got {self.evaluation.eval_tasks}")


@register_config
@dataclasses.dataclass(frozen=True)
class ReplayWorldModelArgs(WorldModelRunConfig):
    """The world-model regime: a `WorldModelRunConfig` with the α grid."""

    alphas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    """Weights of the hybrid term, evaluated in one program; the first must be 0 (standard)."""

    def __post_init__(self):
        super().__post_init__()
        _check_alphas(self.alphas)
        if self.trainer.eval_tasks < 2 or self.trainer.eval_tasks % 2:
            raise ValueError(f"eval_tasks must be even (half choose α, half judge), got {self.trainer.eval_tasks}")


_NAVIGATION = extend(
    ReplayArgs, CONFIGS["navigation"], name="replay-navigation", num_seeds=3, eval_tasks=64, eval_trajectories=20,
    pretrained=False, random_baseline=False, out_dir="runs/replay",
)  # fmt: skip
PRESETS = {
    "navigation": _NAVIGATION,
    **{
        name: dataclasses.replace(_NAVIGATION, name=f"replay-{name}", regimes=(regime,))
        for regime, name in ((regime, regime.replace("_", "-")) for regime in REGIMES)
    },
    "world-model": extend(
        ReplayWorldModelArgs, CONFIGS["world-model"], name="replay-world-model", num_seeds=3, eval_tasks=64,
        support_trajectories=1, adapt_steps=30, out_dir="runs/replay",
    ),
    "world-model-smoke": extend(
        ReplayWorldModelArgs, CONFIGS["world-model-smoke"], name="replay-world-model-smoke", eval_tasks=4,
        support_trajectories=1, adapt_steps=3, alphas=(0.0, 1.0), out_dir="runs/replay",
    ),
    "smoke": extend(
        ReplayArgs, CONFIGS["navigation-smoke"], name="replay-smoke", eval_tasks=4, alphas=(0.0, 1.0), many_steps=3,
        support_trajectories=2, online_window=5, online_every=5, pretrained=False, random_baseline=False,
        out_dir="runs/replay",
    ),
}  # fmt: skip
"""The presets: the meta-RL regimes on 2D navigation at the paper's settings (all, or one each), the world-model
regime, and smoke runs."""


def _tile(tree, times: int):
    """Leaves `[S, ...]` -> `[S * times, ...]`, each seed's entry repeated `times` times (seed-major)."""
    return jax.tree.map(lambda x: jnp.repeat(x, times, axis=0), tree)


def _with_alphas(states, alphas: tuple[float, ...]):
    """States `[S]` -> `[S * A]`: each seed's state once per α, its `hparams.experience_weight` set to that α."""
    tiled = _tile(states, len(alphas))
    weights = jnp.tile(jnp.asarray(alphas, jnp.float32), jax.tree.leaves(states)[0].shape[0])
    return tiled.replace(hparams=tiled.hparams.replace(experience_weight=weights))


def _with_lr_scale(states, scale: float):
    """States whose adaptation rate (`hparams.inner_lr`) is `scale` x their own."""
    return states.replace(hparams=states.hparams.replace(inner_lr=states.hparams.inner_lr * scale))


def _by_alpha(values, num_alphas: int) -> np.ndarray:
    """`[S * A, E]` (seed-major) -> `[A, S, E]`."""
    values = np.asarray(values)
    return values.reshape(-1, num_alphas, values.shape[-1]).swapaxes(0, 1)


def main(args: ReplayArgs | ReplayWorldModelArgs) -> dict:
    """Meta-trains, then scores one regime after another; results.json and results.md are rewritten as each regime
    finishes (a stopped study keeps the regimes it finished). Returns the results dict."""
    run_dir = run_files.make_run_dir(args.out_dir)
    run_files.write_config(run_dir, args)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    started = time.perf_counter()
    regimes = _world_model_scores(args, log) if isinstance(args, ReplayWorldModelArgs) else _rl_scores(args, log)
    results = {"run_dir": str(run_dir), "alphas": list(args.alphas), "regimes": {}, "scores": {}}
    for name, scores in regimes:
        results["regimes"][name] = verdicts(scores, args.alphas, METRICS[name][1])
        results["scores"][name] = scores
        results["seconds"] = time.perf_counter() - started
        run_files.write_json(run_dir / "results.json", results)
        report = write_report(run_dir, args)
    print(report)
    print(f"results in {run_dir}")
    return results


def _train(args, programs, states, keys, log, phase: str):
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    records = lambda iteration, metrics: [
        {"phase": phase, "seed": seed, "iteration": iteration, **jax.tree.map(lambda m, i=i: np.mean(m[i]), metrics)}
        for i, seed in enumerate(seeds)
    ]  # fmt: skip
    return runs.train_phase(
        programs.train, states, keys, args.iterations, args.chunk_size, f"{phase} ({len(seeds)} seeds)", log,
        records, run_labels=[f"seed {seed}" for seed in seeds],
    )  # fmt: skip


def _rl_scores(args: ReplayArgs, log: run_files.MetricsLog):
    """Meta-trains MAML for every seed, then yields `(regime, {variant: [A, S, E]})` regime by regime (α = 0 is
    standard), with the regimes' extra arrays (`frozen` `[S, E]`, `<variant>: forgetting` `[A, S, E]`)."""
    env, programs = compiled_programs(args)
    grid = sweep.make_grid(range(args.seed, args.seed + args.num_seeds))
    hparams = grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    states = _train(args, programs, programs.init(grid.keys.init, hparams), grid.keys.train, log, "MAML")
    tasks, eval_keys = sweep.held_out_tasks(env, grid.keys.eval, args.evaluation.eval_tasks)
    num_alphas = len(args.alphas)
    swept_states, swept_keys = _with_alphas(states, args.alphas), _tile(eval_keys, num_alphas)
    swept_tasks = _tile(tasks, num_alphas)
    for regime in args.regimes:
        scores = {}
        for label, (replay, task_loss) in RL_VARIANTS.items():
            print(f"{regime}: {label}, alphas {', '.join(map(str, args.alphas))}", flush=True)
            variant = replace(args, replay=replay, task_replay_loss=task_loss)
            if regime == "many_step":
                variant = replace(
                    variant, adapt_rounds=1, steps_per_round=args.many_steps,
                    eval_trajectories=args.support_trajectories,
                )  # fmt: skip
                evaluate = compiled_programs(variant)[1].evaluate
                states = _with_lr_scale(swept_states, args.many_step_lr_scale)
                returns = evaluate(states, swept_keys, swept_tasks, "hybrid")[0]
                scores[label] = _by_alpha(returns[..., -1], num_alphas)
                continue
            online = _online_program(variant, args, switch=regime == "task_switch")
            returns, extras = online(swept_states, swept_keys, swept_tasks, args.online_every)
            if regime == "online":
                scores[label] = _by_alpha(returns, num_alphas)
                if "frozen" not in scores:  # the same episodes with no update (every > horizon): one per seed
                    frozen = online(swept_states, swept_keys, swept_tasks, args.trainer.horizon + 1)[0]
                    scores["frozen"] = _by_alpha(frozen, num_alphas)[0]
            else:
                scores[label] = _by_alpha(extras["after_switch"], num_alphas)
                forgot = extras["first_task_at_switch"] - extras["first_task_at_end"]
                scores[f"{label}: forgetting"] = _by_alpha(forgot, num_alphas)
        yield regime, scores


def _online_program(variant: ReplayArgs, args: ReplayArgs, switch: bool):
    """`online(states [R], keys [R], tasks [R, E], every) -> (returns [R, E], extras)`: `evaluate_online` (hybrid,
    each run's weight) vmapped over runs and jitted; with `switch`, each task changes to the next one at half time."""
    trainer = build(variant)[1]

    def one(state, key, tasks, every):
        switch_to = jax.tree.map(lambda x: jnp.roll(x, 1, axis=0), tasks) if switch else None
        window = args.online_window
        return trainer.evaluate_online(state, key, tasks, "hybrid", window, every, switch_to, args.online_lr_scale)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)), static_argnums=3)


def _world_model_scores(args: ReplayWorldModelArgs, log: run_files.MetricsLog):
    """Meta-trains the world model for every seed, then yields `("world_model", {variant: [A, S, E]})` (query MSE
    after the last step; α = 0 is standard)."""
    from experiments.world_model import make_env  # the world-model experiment's env choice

    env = make_env(args)
    grid = sweep.make_grid(range(args.seed, args.seed + args.num_seeds))
    hparams = grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    programs = sweep.make_programs(
        make_world_model_trainer(env, args.model, args.network, args.trainer), args.chunk_size
    )
    states = _train(args, programs, programs.init(grid.keys.init, hparams), grid.keys.train, log, "MAML")
    tasks, eval_keys = sweep.held_out_tasks(env, grid.keys.eval, args.trainer.eval_tasks)
    num_alphas, scores = len(args.alphas), {}
    swept = (_with_alphas(states, args.alphas), _tile(eval_keys, num_alphas), _tile(tasks, num_alphas))
    for label, replay in WORLD_MODEL_VARIANTS.items():
        print(f"world model: {label}, alphas {', '.join(map(str, args.alphas))}", flush=True)
        trainer_config = dataclasses.replace(args.trainer, replay=replay)
        trainer = make_world_model_trainer(env, args.model, args.network, trainer_config)
        mse = sweep.make_programs(trainer, args.chunk_size).evaluate(*swept, "hybrid")[0]
        scores[label] = _by_alpha(mse[..., -1], num_alphas)
    yield "world_model", scores


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
            f"{args.trainer.model.support_trajectories}-trajectory supports, {args.trainer.adapt_steps} SGD steps at "
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


if __name__ == "__main__":
    run_main(main, PRESETS, "navigation")
