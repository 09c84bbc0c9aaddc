"""`ssm-jax adapt --online`: one episode per held-out task adapting while it acts, against the same episodes frozen,
and its panel of the adaptation plot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np

from ssm_jax import runs
from ssm_jax.config.parsing import UsageError
from ssm_jax.report import mean_ci

if TYPE_CHECKING:
    from ssm_jax.cli.evaluation import AdaptArgs, Restored


def plot_online(ax, online: dict) -> None:
    """The online episodes' returns, frozen against adapting (mean and 95% CI over tasks, each task's pair joined)."""
    frozen, adapting = (np.asarray(online["per_task"][k]) for k in ("frozen", "adapting"))
    for pair in zip(frozen, adapting, strict=True):
        ax.plot([0, 1], pair, color="0.8", lw=0.8)
    means, halves = (online["frozen_mean"], online["adapting_mean"]), (online["frozen_ci95"], online["adapting_ci95"])
    ax.errorbar([0, 1], means, yerr=halves, marker="o", capsize=4, color="C1")
    ax.set_xticks([0, 1], ["frozen", f"adapting every {online['every']}"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_ylabel("return of one episode")
    ax.set_title(f"online (window {online['window']}, rate x{online['lr_scale']:g})", fontsize=9)


def adapt_online(args: AdaptArgs, run: Restored) -> dict:
    """One episode per held-out task adapting online, and the same episodes frozen (paired)."""
    horizon = run.config.trainer.horizon
    if args.online_window > horizon:
        raise UsageError(f"--online-window {args.online_window} exceeds the run's horizon {horizon}")
    online = jax.jit(run.trainer.evaluate_online, static_argnames=("mode", "window", "every"))
    settings = (args.adaptation_mode, args.online_window)
    scale = args.online_lr_scale
    with runs.announce(f"adapt: one episode per task adapting online, and frozen, on {args.eval_tasks} tasks"):
        adapting, extras = online(run.state, run.key, run.tasks, *settings, args.online_every, lr_scale=scale)
        frozen, _ = online(run.state, run.key, run.tasks, *settings, horizon + 1, lr_scale=scale)
        adapting, frozen = jax.block_until_ready((adapting, frozen))
    adapting, frozen = np.asarray(adapting), np.asarray(frozen)
    (adapting_mean, adapting_half), (frozen_mean, frozen_half) = mean_ci(adapting), mean_ci(frozen)
    gain, gain_half = mean_ci(adapting - frozen)
    return {
        "every": args.online_every,
        "window": args.online_window,
        "lr_scale": args.online_lr_scale,
        "adapting_mean": adapting_mean,
        "adapting_ci95": adapting_half,
        "frozen_mean": frozen_mean,
        "frozen_ci95": frozen_half,
        "paired_gain": gain,
        "paired_gain_ci95": gain_half,
        "adaptations": float(np.mean(extras["adaptations"])),
        "per_task": {"adapting": adapting, "frozen": frozen},
    }
