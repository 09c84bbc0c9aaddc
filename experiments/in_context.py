"""In-context adaptation (RL²): a sequence policy's memory across episodes, beside MAML on the same held-out tasks.

    python -m experiments.in_context                      # navigation-2d at MAML's navigation budget (8M env steps)
    python -m experiments.in_context --compare-with docs/results/maml_navigation_mlp   # beside recorded MAML runs
    python -m experiments.in_context --preset halfcheetah-vel --models gru s5
    python -m experiments.in_context --preset smoke       # seconds, for tests

For each policy of `--models` (default s5, ssm, gru and the memoryless mlp) it trains RL²
(`ssm_jax.trainers.in_context`: PPO + GAE over trials of K episodes of one task, the carry kept across episodes and
reset between trials) for `--num-seeds` seeds as one vmapped program, then runs fresh trials of the frozen policy on the
held-out tasks each seed draws (`sweep.held_out_tasks`: the tasks a MAML run with that seed evaluates on) and reports
the return of episode 1..K, with no gradient step. With `--compare-with RUN_DIR ...` (meta-RL runs of the same family
and horizon, one per policy), the report puts MAML's return after 0..3 gradient steps, the pretrained baseline and
random init beside it, each with the env steps it trained on and the env steps each took on the held-out task, and pairs
each RL² policy with MAML (of the same policy where one was compared) on the tasks of the seeds both ran.

Writes under `<out_dir>/<timestamp>/`: config.json, metrics.jsonl, results.json, results.md, episodes.png (return
against env steps on the held-out task) and orbax checkpoints of each model's stacked states,
`<model>/checkpoints/step_<n>/`. `--resume <run dir>` continues the model in training from its newest checkpoint
(the models before it are restored, not retrained) and ends as the uninterrupted run would; Ctrl-C saves the last
finished chunk and exits 0.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np

from experiments.common import resume_command, run_directory, run_main, seed_records
from ssm_jax import run_files, runs, sweep
from ssm_jax.cli import exit_with_error
from ssm_jax.config import CONFIGS, InContextRunConfig, RunConfig, build_in_context
from ssm_jax.config.io import read_config
from ssm_jax.report import format_ci, markdown_table, mean_ci, new_figure, physics, save_figure, steps_label
from ssm_jax.trainers import HParams

PRESETS = {
    "navigation": CONFIGS["in-context-navigation"],
    "halfcheetah-vel": CONFIGS["in-context-halfcheetah-vel"],
    "pendulum": CONFIGS["in-context-pendulum"],
    "smoke": CONFIGS["in-context-smoke"],
}
"""The presets, by their names in `ssm_jax.config.CONFIGS`."""

MAML_ROWS = ("MAML + standard", "pretrained", "random init")
"""The rows of a compared meta-RL run's results, where it has them."""


def main(args: InContextRunConfig) -> dict:
    """Trains and evaluates RL² for each model; returns the results dict (also in results.json)."""
    compared = []
    for run in args.compare_with:
        try:
            compared.append(_compared_run(args, Path(run)))
        except ValueError as error:
            exit_with_error(f"--compare-with {run}: {error}")
    with run_directory(args) as run_dir:
        return _main(args, run_dir, compared)


def _main(args: InContextRunConfig, run_dir: Path, compared: list[dict]) -> dict:
    started = time.perf_counter()
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    grid = sweep.make_grid(seeds)
    keys, hparams = grid.keys, grid.hparams(HParams.create(args.inner_lr, args.outer_lr, args.experience_weight))
    pooled = lambda per_run: np.asarray(per_run).reshape(-1, *np.shape(per_run)[2:])  # [R, E, ...] -> [R * E, ...]
    models = {}
    for index, model in enumerate(args.models):
        env, trainer = build_in_context(args, model)
        programs = sweep.make_programs(trainer, args.chunk_size)
        states = programs.init(keys.init, hparams)
        model_dir, start = run_dir / model, 0
        if args.resume:
            kept = lambda record, step, model=model: (
                record["model"] in args.models[:index] or (record["model"] == model and record["iteration"] <= step)
            )  # the models after this one run again
            try:
                states, start = runs.resume(model_dir, states, log, kept)
            except ValueError as error:
                exit_with_error(f"--resume {run_dir}: {error}")
        model_dir.mkdir(exist_ok=True)
        trained_at = time.perf_counter()
        states = _train(args, programs.train, states, keys.train, log, model, seeds, run_dir, start)
        train_seconds = time.perf_counter() - trained_at
        tasks, eval_keys = sweep.held_out_tasks(env, keys.eval, args.evaluation.eval_tasks)
        returns, extras = programs.evaluate(states, eval_keys, tasks)
        params = jax.tree.map(lambda x: x[0], states.params)
        models[model] = {
            "per_task_returns": pooled(returns),
            "per_task_metric": pooled(extras["task_metric"]) if "task_metric" in extras else None,
            "train_seconds": train_seconds,
            "evaluate_seconds": time.perf_counter() - trained_at - train_seconds,
            "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
        }
    if args.resume:
        run_files.write_config(run_dir, args)  # its own, unless --iterations extended it
    results = {
        "run_dir": str(run_dir),
        "env": args.env,
        "task_metric_name": env.task_metric_name,
        "seeds": seeds,
        "held_out_tasks": len(seeds) * args.evaluation.eval_tasks,
        "episodes": args.trainer.episodes_per_trial,
        "horizon": args.trainer.horizon,
        "train_env_steps": args.iterations * args.trainer.env_steps_per_iteration,
        "models": models,
        "compared": compared,
        "seconds": time.perf_counter() - started,
    }
    run_files.write_json(run_dir / "results.json", results)
    print(write_report(run_dir, args))
    print(f"results in {run_dir}")
    return results


def _train(args, chunk, states, train_keys, log, model, seeds, run_dir, start):
    """`runs.train_phase` for one model's stacked states: one record per seed and chunk, checkpoints under
    `run_dir/<model>/`."""
    records = seed_records({"model": model}, seeds, time.perf_counter())

    saving = runs.Checkpoints(
        run_dir / model,
        args,
        args.checkpoint_every,
        resume_command(run_dir, "experiments.in_context"),
        args.keep_checkpoints,
    )
    episodes = args.trainer.episodes_per_trial
    postfix = lambda m: {
        "ep1": float(np.mean(m["episode_1_return"])),
        "last": float(np.mean(m[f"episode_{episodes}_return"])),
    }
    description = f"RL² {model}" + ("" if len(seeds) == 1 else f" ({len(seeds)} seeds)")
    return runs.train_phase(
        chunk, states, train_keys, args.iterations, args.chunk_size, description, log, records, saving, postfix,
        start, run_labels=[f"seed {seed}" for seed in seeds],
    )  # fmt: skip


def _compared_run(args: InContextRunConfig, run_dir: Path) -> dict:
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
    their_seeds = list(range(config.seed, config.seed + config.num_seeds))
    shared = [seed for seed in range(args.seed, args.seed + args.num_seeds) if seed in their_seeds]
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
    """Markdown tables: RL² per model (episode 1..K, paired change, budget, wall time), the compared MAML run's rows,
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


if __name__ == "__main__":
    run_main(main, PRESETS, "navigation")
