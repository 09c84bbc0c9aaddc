"""SSM-MetaRL's serious benchmark, for real: task family × sequence model × adaptation mode × seeds.

    python -m experiments.benchmark                                   # cpu preset: world models, 6 models, 2 families
    python -m experiments.benchmark --preset smoke                    # 2 models x 1 family x 2 seeds, for tests
    python -m experiments.benchmark --objective rl --envs navigation-2d --methods ssm mlp
    python -m experiments.benchmark --match-params 5000               # every model sized to about 5000 parameters
    python -m experiments.benchmark --resume runs/benchmark/<stamp>   # skips the cells already written

A cell is one (family, model): its seeds run as one vmapped program (one compile per cell), MAML-trained, then
adapted on held-out tasks in each mode: `none` (no step), `standard` and `hybrid` (one step, the step MAML was
trained for). `--objective world_model` scores the query's one-step prediction MSE (`experiments.world_model`,
lower is better); `--objective rl` the episode return (`experiments.meta_rl`, the flagship's trainer, higher is
better). Each cell writes `cells/<family>__<model>.json` with its per-task scores; the run aggregates them into
results.md / results.json (mean and 95% CI per mode, and per cell the paired difference hybrid − standard with
its CI and a plain verdict: helps, hurts or ties) and benchmark.png (bars per family). `--match-params N` sizes
each model's hidden width so that its parameter count is the closest to N; the tables give every count.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from experiments import meta_rl, world_model
from experiments.common import run_main
from ssm_jax import envs, run_files
from ssm_jax.config import CONFIGS, world_model_env
from ssm_jax.config.studies import BenchmarkArgs
from ssm_jax.meta.world_model import make_world_model
from ssm_jax.models import NetworkConfig, make_gaussian_policy
from ssm_jax.report.benchmark import MODES, aggregate
from ssm_jax.report.writers import publish

PRESETS = {name.removeprefix("benchmark-"): CONFIGS[name] for name in CONFIGS if name.startswith("benchmark-")}
"""The presets, by their names in `ssm_jax.config.CONFIGS` (`benchmark-<preset>`)."""


def parameter_count(args: BenchmarkArgs, env_name: str, method: str, network: NetworkConfig) -> int:
    """Parameters of `method` at `network`'s sizes for the objective's model (shapes only, nothing runs)."""
    if args.objective == "world_model":
        base = dataclasses.replace(args.world_model, env=env_name)
        model = make_world_model(world_model_env(base), method, network, base.trainer.model)
        shapes = jax.eval_shape(model.init, jax.random.key(0))
    else:
        env = envs.make_meta_rl(env_name, args.rl.trainer.horizon, args.rl.backend, args.rl.goals)
        policy = make_gaussian_policy(
            method, env.observation_size, env.action_size, network, max(args.rl.trainer.window, 16)
        )
        shapes = jax.eval_shape(policy.init, jax.random.key(0), jax.ShapeDtypeStruct((1, env.observation_size), float))
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)))


def matched_network(args: BenchmarkArgs, env_name: str, method: str, base: NetworkConfig) -> NetworkConfig:
    """`base` with the hidden width (4..1024, a multiple of 4 for the transformer's heads) whose count is closest to
    `args.match_params`; the count grows with the width, so a bisection finds it."""
    count = lambda width: parameter_count(args, env_name, method, dataclasses.replace(base, hidden_dim=width))
    low, high = 1, 256  # widths 4 * low .. 4 * high
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(4 * middle) < args.match_params else (low, middle)
    candidates = {4 * w for w in (low - 1, low) if w >= 1}
    return dataclasses.replace(base, hidden_dim=min(candidates, key=lambda w: abs(count(w) - args.match_params)))


def run_cell(args: BenchmarkArgs, env_name: str, method: str, cell_dir: Path) -> dict:
    """One (family, model) cell over `args.num_seeds` vmapped seeds: per-task scores after 0..K steps per mode."""
    base = args.world_model if args.objective == "world_model" else args.rl
    network = base.network if args.match_params is None else matched_network(args, env_name, method, base.network)
    if args.objective == "world_model":
        cell = dataclasses.replace(
            base, env=env_name, model=method, network=network, seed=args.seed, num_seeds=args.num_seeds
        )
        cell_dir.mkdir(parents=True, exist_ok=True)
        results = world_model.run_seeds(cell, world_model_env(cell), run_files.MetricsLog(cell_dir / "metrics.jsonl"))
        curves = {mode: results["mse"][f"MAML + {mode}"] for mode in MODES}
        extra = {"open_loop": {mode: results["open_loop"][f"MAML + {mode}"] for mode in MODES}}
        extra["baselines"] = {k: v for k, v in results["mse"].items() if not k.startswith("MAML")}
    else:
        cell = dataclasses.replace(
            base, env=env_name, model=method, network=network, seed=args.seed, num_seeds=args.num_seeds,
            adaptation_mode="both", out_dir=str(cell_dir), plots=False,
        )  # fmt: skip
        per_task = meta_rl.main(cell)["per_task_returns"]
        standard = np.asarray(per_task["MAML + standard"])
        curves = {"none": standard[:, :1], "standard": standard, "hybrid": np.asarray(per_task["MAML + hybrid"])}
        extra = {"baselines": {k: v for k, v in per_task.items() if not k.startswith("MAML")}}
    count = parameter_count(args, env_name, method, network)
    return {
        "env": env_name,
        "method": method,
        "parameters": count,
        "network": dataclasses.asdict(network),
        "curves": curves,
        **extra,
    }


def main(args: BenchmarkArgs) -> dict:
    run_dir = Path(args.resume) if args.resume else run_files.make_run_dir(args.out_dir)
    if not args.resume:
        run_files.write_config(run_dir, args)
    (run_dir / "cells").mkdir(exist_ok=True)
    started, cells = time.perf_counter(), []
    grid = [(family, method) for family in args.envs for method in args.methods]
    for family, method in tqdm(grid, desc="cells", dynamic_ncols=True):
        path = run_dir / "cells" / f"{family}__{method}.json"
        if not path.exists():  # --resume: a finished cell is read, not run again
            run_files.write_json(path, run_cell(args, family, method, run_dir / "cells" / f"{family}__{method}"))
        cells.append(json.loads(path.read_text()))
    eval_tasks = (
        args.world_model.trainer.eval_tasks if args.objective == "world_model" else args.rl.evaluation.eval_tasks
    )
    results = {
        "run_dir": str(run_dir),
        "objective": args.objective,
        "held_out_tasks": args.num_seeds * eval_tasks,
        "rows": aggregate(args.objective, cells),
        "seconds": time.perf_counter() - started,
    }
    publish(run_dir, results, args)
    return results


if __name__ == "__main__":
    run_main(main, PRESETS, "cpu")
