"""`ssm-jax eval` and `ssm-jax adapt`: a trained run's return on held-out tasks, before and after adaptation.

Both serve every run `ssm-jax train` makes, through the trainer protocol: a meta-RL run adapts by gradient rounds
(standard or hybrid, optionally online); an RL² run adapts in context, so `adapt` reports the return of each episode
of its trials (episode k + 1 is its round k), and the flags of gradient adaptation are refused in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import numpy as np

from ssm_jax import run_files, runs, sweep
from ssm_jax.adapt.adapter import ADAPTATION_MODES, REPLAY_CHOICES
from ssm_jax.adapt.rl import TASK_REPLAY_LOSSES
from ssm_jax.cli.online import adapt_online, plot_online
from ssm_jax.config import InContextRunConfig, RunConfig, build_run, initial_state, load_run_config, replace
from ssm_jax.config.parsing import UsageError
from ssm_jax.report import aligned_table, mean_ci, new_figure, plot_ci_curve, save_figure, steps_label
from ssm_jax.trainers import Trainer, TrainState


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    checkpoint: str
    """A run directory of `ssm-jax train` (its latest step) or one of its checkpoints/step_<n>/."""
    eval_tasks: int = 16
    """Held-out tasks, one episode each."""
    seed: int | None = None
    """Seed of the held-out tasks (None: the run's own, whose tasks training never drew)."""
    output: str | None = None
    """JSON path (None: eval.json in the run directory)."""

    def __post_init__(self):
        if self.eval_tasks < 2:
            raise ValueError(f"eval_tasks must be >= 2 (a confidence interval needs two), got {self.eval_tasks}")


@dataclasses.dataclass(frozen=True)
class AdaptArgs(EvalArgs):
    """`ssm-jax adapt`'s flags; its JSON goes to `--output`, else `adapt_<mode>.json` (with `--online`,
    `adapt_<mode>_online_every<N>_window<W>_scale<S>.json`) in the run directory, one file per setting, its plot
    beside it as `.png` (with `--online`, a second panel: the online episodes frozen and adapting)."""

    adapt_rounds: int | None = None
    """Adaptation rounds: each samples trajectories with the current policy, then takes one gradient step (None: the
    run's own; an RL² run's are the episodes of its trials after the first)."""
    adaptation_mode: Literal[ADAPTATION_MODES] = "standard"
    """hybrid adds experience_weight x a term on replayed experience, from the sources --replay names."""
    replay: Literal[REPLAY_CHOICES] | None = None
    """What hybrid replays: the run's meta-training buffer (meta), the task's own earlier trajectories (task), or
    both (None: the run's evaluation setting)."""
    task_replay_loss: Literal[TASK_REPLAY_LOSSES] | None = None
    """The task buffer's term: clipped_pg or kl_anchor (None: the run's evaluation setting)."""
    eval_trajectories: int | None = None
    """Trajectories per round (None: the run's eval_trajectories, else its trajectories_per_task)."""
    online: bool = False
    """Also adapt during one episode per task (every --online-every steps, on the last --online-window steps),
    against the same episodes with no adaptation."""
    online_every: int = 10
    online_window: int = 20
    online_lr_scale: float = 0.1
    """Online updates' rate, x the run's adaptation rate (later updates x later_rounds_lr_scale too); at 1 online
    adaptation diverges on navigation (the replay study's verdict, docs/adaptation.md)."""

    def __post_init__(self):
        super().__post_init__()
        if min(self.adapt_rounds or 1, self.eval_trajectories or 1) < 1:
            raise ValueError(
                f"adapt_rounds and eval_trajectories must be >= 1, got {self.adapt_rounds}, {self.eval_trajectories}"
            )
        if min(self.online_every, self.online_window) < 1:
            raise ValueError(f"online_every and online_window must be >= 1: {self.online_every}, {self.online_window}")
        if not self.online_lr_scale > 0:
            raise ValueError(f"online_lr_scale must be > 0, got {self.online_lr_scale}")


RUN_KINDS = (RunConfig, InContextRunConfig)
"""The runs `ssm-jax train` makes, which `eval` and `adapt` serve."""


class Restored(NamedTuple):
    run_dir: Path
    checkpoint: Path
    config: RunConfig | InContextRunConfig
    trainer: Trainer
    state: TrainState
    tasks: Any
    """Held-out tasks `[tasks]`."""
    key: jax.Array


def _run_config(args: EvalArgs) -> RunConfig | InContextRunConfig:
    """The config of the run `args.checkpoint` belongs to (read, nothing built).

    Raises:
        UsageError: no such checkpoint, or not a run of `ssm-jax train` (one line).
    """
    path = Path(args.checkpoint)
    if not path.exists():
        raise UsageError(f"no checkpoint at {path}")
    try:
        return load_run_config(run_files.run_dir_of(path), RUN_KINDS)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _restore(args: EvalArgs, config: RunConfig | InContextRunConfig) -> Restored:
    """`args.checkpoint` restored into the trainer of `config` (the run's, its evaluation protocol changed as the
    command asks: the params do not depend on it), with `args.eval_tasks` held-out tasks of the run's seed (or
    `args.seed`) and their key."""
    path = Path(args.checkpoint)
    run_dir = run_files.run_dir_of(path)
    env, trainer = build_run(config)
    target = initial_state(config, trainer)
    try:
        state, path = (
            run_files.restore_latest(run_dir, target)
            if path == run_dir
            else (run_files.restore_step(path, target)[0], path)
        )
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    diverged = runs.non_finite(state)
    if diverged:
        raise UsageError(f"{path}: the checkpoint holds a non-finite {diverged[0][0]} (the run diverged)")
    eval_key = sweep.run_keys(config.seed if args.seed is None else args.seed).eval
    tasks, keys = sweep.held_out_tasks(env, eval_key[None], args.eval_tasks)
    return Restored(run_dir, path, config, trainer, state, jax.tree.map(lambda x: x[0], tasks), keys[0])


def evaluate(args: EvalArgs) -> dict:
    """`ssm-jax eval`: the trained policy's return on held-out tasks, one episode each, no adaptation."""
    config = _run_config(args)
    one = {"eval_trials": 1} if isinstance(config, InContextRunConfig) else {"adapt_rounds": 1, "eval_trajectories": 1}
    run = _restore(args, replace(config, **one))  # an RL² run's episode 1 of one trial: before it adapts
    output = Path(args.output) if args.output else run.run_dir / "eval.json"
    run_files.check_writable(output)  # before anything compiles
    with runs.announce(f"eval: compiling and running {args.eval_tasks} held-out episodes"):
        returns, _ = jax.block_until_ready(jax.jit(run.trainer.evaluate)(run.state, run.key, run.tasks))
    returns = np.asarray(returns[:, 0])
    (mean, half), std = mean_ci(returns), np.std(returns, ddof=1)
    result = {
        "checkpoint": str(run.checkpoint),
        "iteration": int(run.state.iteration),
        "eval_tasks": args.eval_tasks,
        "return_mean": float(mean),
        "return_std": float(std),
        "return_ci95": float(half),
        "returns": returns,
    }
    run_files.write_json(output, result)
    print(aligned_table([["checkpoint", str(run.checkpoint)], ["held-out tasks", str(args.eval_tasks)],
                          ["return", f"{mean:.2f} ± {half:.2f} (std {std:.2f})"]]))  # fmt: skip
    return result


def adapt(args: AdaptArgs) -> dict:
    """`ssm-jax adapt`: return on held-out tasks after 0..K rounds of standard or hybrid adaptation (an RL² run: of
    episodes 1..M of its trials)."""
    config = _run_config(args)
    in_context = isinstance(config, InContextRunConfig)
    if in_context:
        _check_in_context_flags(args, config)
        changes = {}
    else:
        changes = {"adapt_rounds": args.adapt_rounds or config.evaluation.adapt_rounds}
        for name, value in (
            ("eval_trajectories", args.eval_trajectories),
            ("replay", args.replay),
            ("task_replay_loss", args.task_replay_loss),
        ):
            if value is not None:
                changes[name] = value
    run = _restore(args, replace(config, **changes))
    mode = "in_context" if in_context else args.adaptation_mode
    setting = mode + (f"_{args.replay}" if args.replay and mode == "hybrid" else "")
    if args.online:  # each online setting its own file: a second --online-lr-scale does not overwrite the first
        setting += f"_online_every{args.online_every}_window{args.online_window}_scale{args.online_lr_scale:g}"
    output = Path(args.output) if args.output else run.run_dir / f"adapt_{setting}.json"  # one file per setting
    run_files.check_writable(output)  # before anything compiles
    evaluate = jax.jit(run.trainer.evaluate, static_argnames="mode")
    episodes = config.trainer.episodes_per_trial if in_context else None
    rounds = (
        f"RL² trials of {episodes} episodes" if in_context else f"{changes['adapt_rounds']} {mode} adaptation round(s)"
    )
    with runs.announce(f"adapt: compiling and running {rounds} on {args.eval_tasks} held-out tasks"):
        returns, _ = jax.block_until_ready(evaluate(run.state, run.key, run.tasks, mode=args.adaptation_mode))
    returns = np.asarray(returns)
    (mean, half), std = mean_ci(returns), np.std(returns, axis=0, ddof=1)
    gain_mean, gain_half = mean_ci(returns[:, 1:] - returns[:, :1])
    result = {
        "checkpoint": str(run.checkpoint),
        "iteration": int(run.state.iteration),
        "adaptation_mode": mode,
        "replay": run.config.evaluation.replay if mode == "hybrid" else None,
        "task_replay_loss": run.config.evaluation.task_replay_loss if mode == "hybrid" else None,
        "eval_tasks": args.eval_tasks,
        "returns": mean,
        "returns_std": std,
        "returns_ci95": half,
        "paired_gain": {"mean": gain_mean, "ci95": gain_half},
        "per_task_returns": returns,
    }
    if args.online:
        result["online"] = adapt_online(args, run)
    run_files.write_json(output, result)
    fig, axes = new_figure(1, 2 if args.online else 1, figsize=(9.5 if args.online else 5.5, 3.6), squeeze=False)
    ax = axes[0, 0]
    steps = plot_ci_curve(ax, returns, f"{'in-context' if in_context else mode} adaptation", band=True)
    ax.set_xticks(steps, [str(k + 1) for k in steps] if in_context else [str(k) for k in steps])
    ax.set_xlabel("episode of the trial" if in_context else "adaptation steps on the held-out task")
    ax.set_ylabel(f"episode return\n(mean, 95% CI over {args.eval_tasks} tasks)")
    ax.legend()
    if args.online:
        plot_online(axes[0, 1], result["online"])
    save_figure(fig, output.with_suffix(".png"))
    described = "in context (RL²: no gradient step)" if in_context else mode
    if mode == "hybrid":
        task_term = "" if result["replay"] == "meta" else f", task term {result['task_replay_loss']}"
        described += f" (replays {result['replay']}{task_term})"
    rows = [["checkpoint", str(run.checkpoint)], ["mode", described], ["held-out tasks", str(args.eval_tasks)]]
    for k in range(returns.shape[1]):
        gain = "" if k == 0 else f"   (paired gain {gain_mean[k - 1]:+.2f} ± {gain_half[k - 1]:.2f})"
        label = f"episode {k + 1}" if in_context else f"after {steps_label(k)}"
        rows.append([label, f"{mean[k]:.2f} ± {half[k]:.2f}{gain}"])
    if args.online:
        online = result["online"]
        rows.append(["online, frozen", f"{online['frozen_mean']:.2f} ± {online['frozen_ci95']:.2f}"])
        rows.append(
            [
                f"online, every {args.online_every}",
                f"{online['adapting_mean']:.2f} ± {online['adapting_ci95']:.2f}   (paired gain "
                f"{online['paired_gain']:+.2f} ± {online['paired_gain_ci95']:.2f}; "
                f"{online['adaptations']:.0f} updates)",
            ]
        )
    print(aligned_table(rows))
    return result


def _check_in_context_flags(args: AdaptArgs, config: InContextRunConfig) -> None:
    """A one-line `UsageError` for a flag of gradient adaptation on an RL² run, which adapts in context only."""
    episodes = config.trainer.episodes_per_trial
    gradient_flags = {
        "--adaptation-mode hybrid": args.adaptation_mode != "standard",
        "--replay": args.replay is not None,
        "--task-replay-loss": args.task_replay_loss is not None,
        "--eval-trajectories": args.eval_trajectories is not None,
        "--online": args.online,
    }
    given = [flag for flag, set_ in gradient_flags.items() if set_]
    if given:
        raise UsageError(
            f"{args.checkpoint} is an RL² run: it adapts in context over the {episodes} episodes of a trial, with no "
            f"gradient step, so {given[0]} does not apply"
        )
    if args.adapt_rounds not in (None, episodes - 1):
        raise UsageError(
            f"{args.checkpoint} is an RL² run whose trials have {episodes} episodes: its adaptation rounds are the "
            f"{episodes - 1} after the first (--adapt-rounds {episodes - 1}, or leave it out)"
        )
