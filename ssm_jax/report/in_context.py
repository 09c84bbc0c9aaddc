"""The in-context (RL²) experiment's report (`experiments.in_context`): per policy the return of episodes 1..M on
held-out tasks with paired CIs, beside a compared meta-RL run's MAML rows on the tasks both share, and the episodes
plot, rendered from results.json alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssm_jax.config.family import InContextRunConfig, RunConfig
from ssm_jax.config.io import read_config
from ssm_jax.report.compare import format_ci, markdown_table, physics
from ssm_jax.report.core import mean_ci, new_figure, save_figure, steps_label

MAML_ROWS = ("MAML + standard", "pretrained", "random init")
"""The rows of a compared meta-RL run's results, where it has them."""


def compared_run(args: InContextRunConfig, run_dir: Path) -> dict:
    """The MAML side of the comparison: the per-task curves of the meta-RL run at `run_dir` on the seeds both runs
    share, its policy, budget and wall time.

    Raises:
        ValueError: not a finished meta-RL run, or one on another family, horizon or held-out task count (one line).
    """
    config_path, results_path = run_dir / "config.json", run_dir / "results.json"
    if not (config_path.is_file() and results_path.is_file()):
        raise ValueError("not a finished meta-RL run directory (config.json and results.json)")
    config = read_config(config_path)
    if not isinstance(config, RunConfig):
        raise ValueError(f"not a meta-RL run (its config is a {type(config).__name__})")
    mine = (args.env, args.trainer.horizon, args.evaluation.eval_tasks)
    theirs = (config.env, config.trainer.horizon, config.evaluation.eval_tasks)
    if mine != theirs:
        raise ValueError(f"its (env, horizon, held-out tasks) are {theirs}, this run's {mine}")
    their_seeds = config.seeds
    shared = [seed for seed in args.seeds if seed in their_seeds]
    if not shared:
        raise ValueError(f"it ran seeds {their_seeds}, none of this run's")
    recorded = json.loads(results_path.read_text())
    tasks = config.evaluation.eval_tasks
    rows = np.concatenate([np.arange(tasks) + their_seeds.index(seed) * tasks for seed in shared])
    provenance = run_dir / "provenance.json"
    return {
        "run": str(run_dir),
        "provenance": json.loads(provenance.read_text()) if provenance.is_file() else None,
        "model": config.model,
        "seeds": shared,
        "train_env_steps": config.iterations * config.trainer.env_steps_per_iteration,
        "round_env_steps": (config.evaluation.eval_trajectories or config.trainer.trajectories_per_task)
        * config.trainer.horizon,
        "train_seconds": recorded["train_seconds"],
        "per_task_returns": {
            name: np.asarray(recorded["per_task_returns"][name])[rows]
            for name in MAML_ROWS
            if name in recorded["per_task_returns"]
        },
    }


def _env_steps(count: int) -> str:
    """An env-step count as people read it: `8.19M`, or `1,600` below 100k."""
    return f"{count / 1e6:.2f}M" if count >= 100_000 else f"{count:,}"


def _episode_columns(k: int) -> list[str]:
    return [f"episode {i + 1}" for i in range(k)]


def report(results: dict) -> str:
    """Markdown tables: RL² per model (episode 1..M, paired change, budget, wall time), the compared MAML run's rows,
    and the paired differences between them on shared tasks."""
    k, horizon = results["episodes"], results["horizon"]
    models = results["models"]
    per_task = {name: np.asarray(m["per_task_returns"], np.float64) for name, m in models.items()}
    lines = [
        f"**RL²** ({_env_steps(results['train_env_steps'])} training env steps per model and seed; no gradient step "
        f"on the held-out task: episode k starts after {horizon} x (k − 1) env steps on it)",
        "",
    ]
    header = [
        "policy", *_episode_columns(k), f"episode {k} − episode 1", "training env steps", "train s", "parameters"
    ]  # fmt: skip
    budget = _env_steps(results["train_env_steps"])
    rows = [
        [
            name, *format_ci(returns), format_ci(returns[:, -1] - returns[:, 0])[0], budget,
            f"{models[name]['train_seconds']:.0f}", models[name]["parameters"],
        ]
        for name, returns in per_task.items()
    ]  # fmt: skip
    lines += [markdown_table(header, rows), ""]
    if not results["compared"]:
        return "\n".join(lines)
    maml = {}  # the compared runs' curves, by policy
    columns = max(np.shape(v)[1] for c in results["compared"] for v in c["per_task_returns"].values())
    rows = []
    for compared in results["compared"]:
        theirs = {name: np.asarray(values, np.float64) for name, values in compared["per_task_returns"].items()}
        maml[compared["model"]] = (compared["seeds"], theirs)
        made = compared["provenance"]
        origin = f"`{made['command']}` at {made['commit']}" if made else compared["run"]
        for name, values in theirs.items():
            budget = 0 if name == "random init" else compared["train_env_steps"]
            seconds = compared["train_seconds"] if name == "MAML + standard" else None
            rows.append([
                f"{name} ({compared['model']})", *format_ci(values), *["—"] * (columns - values.shape[1]),
                _env_steps(budget), "—" if seconds is None else f"{seconds:.0f}", origin,
            ])  # fmt: skip
    round_steps = ", ".join(sorted({str(c["round_env_steps"]) for c in results["compared"]}))
    lines += [
        f"**MAML** on the same held-out tasks (each gradient step on a task first samples {round_steps} env steps on "
        "it; training env steps per method and seed)",
        "",
        markdown_table(
            ["method (policy)", *map(steps_label, range(columns)), "training env steps", "train s", "run"], rows
        ),
        "",
    ]
    header = [
        "RL² policy", "paired with MAML of", f"episode {k} − MAML after 1 step", "episode 1 − MAML after 0 steps",
        "episode 1 − pretrained",
    ]  # fmt: skip
    rows = []
    for name, returns in per_task.items():
        policy = name if name in maml else next(iter(maml))
        seeds, theirs = maml[policy]
        mine = _shared_rows(returns, results["seeds"], seeds)
        pretrained = format_ci(mine[:, 0] - theirs["pretrained"][:, 0])[0] if "pretrained" in theirs else "—"
        rows.append([
            name, policy, format_ci(mine[:, -1] - theirs["MAML + standard"][:, 1])[0],
            format_ci(mine[:, 0] - theirs["MAML + standard"][:, 0])[0], pretrained,
        ])  # fmt: skip
    tasks = {len(maml[policy][0]) * results["held_out_tasks"] // len(results["seeds"]) for policy in maml}
    lines += [f"**Paired on the held-out tasks both ran** ({', '.join(map(str, tasks))} tasks: the same goals)", ""]
    lines += [markdown_table(header, rows), ""]
    return "\n".join(lines)


def _shared_rows(per_task: np.ndarray, seeds: list[int], shared: list[int]) -> np.ndarray:
    """The rows of seed-major `per_task` `[len(seeds) * E, ...]` that belong to the `shared` seeds."""
    tasks = per_task.shape[0] // len(seeds)
    return np.concatenate([per_task[seeds.index(seed) * tasks : (seeds.index(seed) + 1) * tasks] for seed in shared])


def _plot(path: Path, results: dict) -> None:
    """Return against the env steps taken on the held-out task: RL²'s episodes and MAML's gradient steps. The y axis
    spans the curves' starting points and everything above them, so a baseline that diverges leaves the plot
    instead of flattening the rest (the tables hold its numbers)."""
    fig, ax = new_figure(figsize=(6.4, 4))
    curves = [
        (f"RL² {name}", np.asarray(values["per_task_returns"], np.float64), results["horizon"], "o", "-")
        for name, values in results["models"].items()
    ]
    for compared in results["compared"]:
        curves += [
            (f"{name} ({compared['model']})", np.asarray(values, np.float64), compared["round_env_steps"], "s", "--")
            for name, values in compared["per_task_returns"].items()
        ]
    means = []
    for label, returns, steps_per_point, marker, style in curves:
        mean, half = mean_ci(returns)
        means.append(mean)
        x = steps_per_point * np.arange(returns.shape[1]) + 1
        ax.errorbar(x, mean, yerr=half, marker=marker, ls=style, capsize=3, label=label)
    floor = min(float(m[0]) for m in means)
    top = max(float(np.nanmax(np.where(np.isfinite(m), m, -np.inf))) for m in means)
    ax.set_ylim(floor - 0.15 * (top - floor) - 1e-6, top + 0.1 * (top - floor) + 1e-6)
    ax.set_xscale("log")
    ax.set_xlabel("env steps already taken on the held-out task + 1")
    ax.set_ylabel("episode return\n(mean, 95% CI over tasks and seeds)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def write_report(run_dir: Path, args: InContextRunConfig) -> str:
    """Renders `run_dir`'s results.json into results.md and episodes.png; returns the markdown."""
    results = json.loads((Path(run_dir) / "results.json").read_text())
    title = (
        f"# In-context adaptation (RL²) on {results['env']}{physics(results['env'], args.backend)}: "
        f"{results['held_out_tasks']} held-out tasks x "
        f"{results['episodes']} episodes, seeds {results['seeds']}\n\n"
    )
    text = title + report(results) + ("\n![episodes](episodes.png)\n" if args.plots else "")
    (Path(run_dir) / "results.md").write_text(text)
    if args.plots:
        _plot(Path(run_dir) / "episodes.png", results)
    return text
