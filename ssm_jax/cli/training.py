"""`ssm-jax train`: meta-trains one run in jitted chunks, with checkpoints, exact resume and Ctrl-C saves. A named
meta-RL config trains MAML (or, with `--method pretrained`, its baseline); an in-context one (`in-context-*`) trains
RL² for the one policy `--models` names (by default the config's first). One seed: `--num-seeds` above 1 is refused."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ssm_jax import checkpoint, distributed, interrupts, run_files, runs
from ssm_jax.config import (
    IN_CONTEXT_CONFIGS,
    META_RL_CONFIGS,
    InContextRunConfig,
    RunConfig,
    build_run,
    initial_state,
    load_run_config,
    training_key,
)
from ssm_jax.config.parsing import UsageError, parse, resumed_config
from ssm_jax.report import aligned_table, new_figure, save_figure

TRAINABLE = {**META_RL_CONFIGS, **IN_CONTEXT_CONFIGS}
"""The named configs `ssm-jax train --config` runs."""


def train(argv: Sequence[str]) -> int:
    """`ssm-jax train`: meta-trains one run with checkpoints; see the module docstring."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--distributed", action="store_true")
    known, rest = pre.parse_known_args(argv)
    if known.config is not None and known.config not in TRAINABLE:
        raise UsageError(f"unknown config {known.config!r}; expected one of {', '.join(TRAINABLE)}")
    prog = "ssm-jax train"
    also = (
        f"Also --config {{{','.join(TRAINABLE)}}}, --resume RUN_DIR and --distributed (join JAX's "
        "multi-process runtime first: python -m ssm_jax.launch, SLURM, Open MPI, TPU pods)."
    )
    try:
        distributed.refuse_running_alone(known.distributed)
        if known.distributed:
            distributed.initialize()
    except distributed.DistributedError as error:
        raise UsageError(str(error)) from None
    if known.resume is not None:
        run_dir = Path(known.resume)
        try:
            load_run_config(run_dir, kinds=(RunConfig, InContextRunConfig))
        except ValueError as error:
            raise UsageError(str(error)) from None
        if known.config is not None:
            raise UsageError(f"--resume {run_dir}: --config {known.config}; a resumed run keeps its config")
        config = resumed_config(run_dir, rest, prog)  # its --help describes the run's config
    else:
        name = known.config or "basic"
        config = parse(type(TRAINABLE[name]), rest, prog, f"Config {name!r}. {also}", one_run(TRAINABLE[name]))
        if config.num_seeds != 1:
            raise UsageError(
                f"ssm-jax train runs one seed (got --num-seeds {config.num_seeds}); the experiments run several"
            )
        if isinstance(config, InContextRunConfig) and len(config.models) != 1:
            raise UsageError(
                f"ssm-jax train trains one policy: pass --models with one of {' '.join(config.models)} "
                "(python -m experiments.in_context trains several)"
            )
        _check_devices(config)  # before the run directory: a refused run leaves nothing behind
        try:
            run_dir = run_files.make_run_dir(config.out_dir)
        except run_files.RunDirError as error:
            raise UsageError(str(error)) from None
    try:
        if known.resume is None:
            run_files.write_config(run_dir, config)
        with run_files.lock(run_dir):
            return _train(config, run_dir, resume=known.resume is not None)
    except run_files.RunInUse as error:
        raise UsageError(str(error)) from None
    except runs.Diverged as error:  # the run directory stays: its metrics show how it diverged
        print(f"error: {error}", file=sys.stderr)
        return 3
    except BaseException:
        if known.resume is None and jax.process_count() == 1 and not run_files.checkpoint_steps(run_dir):
            shutil.rmtree(run_dir)  # a run that failed before its first checkpoint leaves nothing behind
        raise


def one_run(config: RunConfig | InContextRunConfig) -> RunConfig | InContextRunConfig:
    """A named config as `ssm-jax train` runs it by default: one seed, and an in-context config's first policy (the
    experiments run its seeds and policies side by side)."""
    config = dataclasses.replace(config, num_seeds=1)
    return dataclasses.replace(config, models=config.models[:1]) if isinstance(config, InContextRunConfig) else config


def _program(config: RunConfig | InContextRunConfig, mesh) -> tuple[Any, dict[str, str]]:
    """The trainer `config` runs and the training metrics its learning curve shows, `{metric: label}`."""
    _, trainer = build_run(config, distributed.task_sharding(mesh) if jax.device_count() > 1 else None)
    if isinstance(config, InContextRunConfig):
        last = config.trainer.episodes_per_trial
        return trainer, {"episode_1_return": "episode 1", f"episode_{last}_return": f"episode {last}"}
    return trainer, {"pre_adaptation_return": "before the inner step", "post_adaptation_return": "after it"}


def _check_devices(config: RunConfig | InContextRunConfig) -> None:
    """A one-line `UsageError` unless the run's tasks split evenly over every device."""
    devices = jax.device_count()
    if config.trainer.tasks_per_batch % devices:
        raise UsageError(
            f"--tasks-per-batch {config.trainer.tasks_per_batch} cannot be split evenly over {devices} devices"
        )


def _train(config: RunConfig | InContextRunConfig, run_dir: Path, resume: bool) -> int:
    started = time.perf_counter()
    _check_devices(config)
    devices = jax.device_count()
    mesh = distributed.make_mesh(runs=1, tasks=devices)  # one run: its meta-batch of tasks over every device
    trainer, curves = _program(config, mesh)
    state = distributed.replicate(initial_state(config, trainer), mesh)
    log = run_files.MetricsLog(run_dir / "metrics.jsonl")
    start = 0
    if resume:
        try:
            state, start = runs.resume(run_dir, state, log, kept=lambda record, step: record["iteration"] <= step)
        except ValueError as error:
            raise UsageError(f"--resume {run_dir}: {error}") from None
        if start == config.iterations:
            print(f"{run_dir} is finished (iteration {start}): nothing to do; --iterations above {start} extends it")
            return 0
        run_files.write_config(run_dir, config)  # its own, unless --iterations extended it

    chunk_records = lambda iteration, metrics: [{"iteration": iteration, **jax.tree.map(np.mean, metrics)}]
    resume_command = f"ssm-jax train --resume {run_dir}"
    if jax.process_count() > 1:
        resume_command = f"python -m ssm_jax.launch -n {jax.process_count()} -- {resume_command} --distributed"
    checkpoints = runs.Checkpoints(run_dir, config, config.checkpoint_every, resume_command, config.keep_checkpoints)
    train_chunk = jax.jit(lambda state, key: trainer.train(state, key, config.chunk_size), donate_argnums=0)
    chunk = lambda state, key: train_chunk(state, distributed.replicate(key, mesh))
    try:
        state = runs.train_phase(
            chunk,
            state,
            training_key(config),
            config.iterations,
            config.chunk_size,
            "train",
            log,
            chunk_records,
            checkpoints,
            postfix=lambda m: {"return": float(np.mean(m[list(curves)[-1]]))},
            start=start,
        )
    except runs.Interrupted as stop:
        return interrupts.stopped_exit_code(stop.signum)
    if not distributed.is_writer():
        return 0
    records = log.records()
    summary = {
        "run_dir": str(run_dir),
        "iteration": int(state.iteration),
        "checkpoint": str(
            checkpoint.step_path(run_dir / run_files.CHECKPOINTS, config.iterations)
        ),  # the phase saved it
        "final_metrics": {k: v for k, v in records[-1].items() if k != "iteration"},
        "seconds": time.perf_counter() - started,
    }
    run_files.write_json(run_dir / "train.json", summary)
    if config.plots:
        fig, ax = new_figure(figsize=(5.5, 3.6))
        for key, label in curves.items():
            ax.plot([r["iteration"] for r in records], [r[key] for r in records], marker="o", ms=3, label=label)
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("mean episode return (training tasks)")
        ax.legend()
        save_figure(fig, run_dir / "learning_curve.png")
    rows = [["run", str(run_dir)], ["iterations", str(summary["iteration"])]]
    rows += [[k, f"{v:.4g}"] for k, v in summary["final_metrics"].items()]
    print(aligned_table(rows))
    return 0
