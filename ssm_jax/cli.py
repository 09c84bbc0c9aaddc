"""`ssm-jax train | eval | adapt | info` (also `python -m ssm_jax`): the library's trainer from the command line.

    ssm-jax train --config navigation                      # a named config; every field is a flag
    ssm-jax train --config basic --iterations 40 --model ssm --trainer.tasks-per-batch 8
    ssm-jax train --resume runs/cli/<stamp>                # continues from checkpoints/latest, bit for bit
    ssm-jax eval  --checkpoint runs/cli/<stamp> --episodes 32
    ssm-jax adapt --checkpoint runs/cli/<stamp> --adapt-steps 3 --adaptation-mode hybrid
    ssm-jax info

`train` writes `<out-dir>/<UTC stamp>/`: config.json (the run's `RunConfig`, the one source of truth on resume),
metrics.jsonl (one record per chunk: the iteration and the means of `Trainer.train`'s metrics), train.json,
learning_curve.png and orbax checkpoints `checkpoints/step_<n>/` every `checkpoint_every` iterations and at the
end, with `checkpoints/latest` pointing at the newest. Ctrl-C finishes the chunk in flight, saves it, says where
and exits 0; `--resume` after Ctrl-C or a kill ends with the params and metrics of the uninterrupted run. `eval`
and `adapt` evaluate on held-out tasks drawn from the run's seed (`sweep.run_keys(seed).eval`, the experiments' held-out
tasks), print a table and write eval.json / adapt.json (and adapt.png, the curve with its 95% CI) into the run.

A user's mistake (an unknown config, env, model or flag value, a missing, damaged or mismatched checkpoint, a flag
that contradicts a resumed run) is one line on stderr and exit code 2, before anything compiles.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn, TypeVar

import jax
import matplotlib.pyplot as plt
import numpy as np
import tyro

from ssm_jax import envs, runs, sweep
from ssm_jax.adapt import strategy_names
from ssm_jax.adapt.adapter import ADAPTATION_MODES
from ssm_jax.checkpoint import config_from_json, config_to_json, restore
from ssm_jax.envs.brax_tasks import BACKENDS
from ssm_jax.models import MODEL_NAMES, NetworkConfig, make_gaussian_policy
from ssm_jax.report import mean_ci, plot_ci_curve, save_figure
from ssm_jax.train import HParams, Trainer, TrainerConfig, TrainState, make_meta_rl_trainer

ConfigT = TypeVar("ConfigT")


class UsageError(Exception):
    """A user's mistake: printed as one line, exit code 2."""


def exit_with_error(message: str) -> NoReturn:
    """One line on stderr, exit code 2, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _one_line(event: Any) -> None:
    """tyro's parse-error hook: the common mistakes become a one-line `UsageError` instead of tyro's box."""
    errors = tyro._errors  # pinned tyro; its hook module is private, so anything unrecognised keeps tyro's box
    if isinstance(event, errors.InvalidChoice):
        name = event.argument.display_name()
        raise UsageError(f"invalid value {event.value!r} for {name}; expected one of {', '.join(event.choices)}")
    if isinstance(event, errors.UnrecognizedArgs):
        raise UsageError(f"unrecognized argument(s) {' '.join(event.tokens)} (see {event.prog} --help)")
    if isinstance(event, errors.InstantiationFailure):
        name = "" if event.argument is None else f"{'/'.join(event.argument.lowered.name_or_flags)}: "
        raise UsageError(f"{name}{' '.join(str(event.message).split())}")


def parse(
    cls: type[ConfigT], args: Sequence[str], prog: str, description: str, default: ConfigT | None = None
) -> ConfigT:
    """`tyro.cli(cls, default=default, args=args)`.

    Raises:
        UsageError: a bad flag or value (including a `__post_init__` ValueError), in one line, before anything
            compiles (tyro's own box remains for rarer mistakes, with exit code 2 too).
    """
    defaults = {} if default is None else {"default": default}
    with tyro._errors.on_parse_error(_one_line):
        return tyro.cli(cls, args=list(args), prog=prog, description=description, **defaults)


def resumed_config(run_dir: Path, args: Sequence[str], prog: str, ignored: Sequence[str] = ()) -> Any:
    """The config stored in `run_dir/config.json`, with `args` parsed on top of it: a resumed run keeps its own
    config, so a flag that changes a field (other than those `ignored`) is a `UsageError` naming it."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: not a run directory (no config.json)")
    stored = _read_config(path)
    config = parse(type(stored), args, prog, f"Resuming {run_dir}.", stored)
    contradicting = [d for d in _differences(stored, config) if d[0] not in ignored]
    if contradicting:
        field, given, kept = contradicting[0]
        flag = "--" + field.replace("_", "-")
        raise UsageError(f"--resume {run_dir}: {flag} {given!r} (the run has {kept!r}); a resumed run keeps its config")
    return config


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: Literal[envs.META_RL_ENVS] = "navigation-2d"
    """The meta-RL task family."""
    backend: Literal[BACKENDS] = "spring"
    """brax physics backend (brax families only)."""
    goals: Literal[envs.GOAL_SETS] = "uniform"
    """halfcheetah-vel goals: U[0, 2], or the seeds' 0.5, 1, ..., 2.5."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: the env, the policy, the trainer's static config and the traced hyperparameters."""

    env: EnvConfig = EnvConfig()
    model: Literal[MODEL_NAMES] = "mlp"
    """The policy's sequence model."""
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    inner_lr: float = 0.1
    outer_lr: float = 3e-3
    experience_weight: float = 0.1
    """Weight of the hybrid adapter's behaviour-cloning term."""
    iterations: int = 50
    """Meta-iterations in all."""
    chunk_size: int = 10
    """Meta-iterations per jitted call (one host sync, log record and progress update each)."""
    checkpoint_every: int = 10
    """Meta-iterations between checkpoints (a multiple of chunk_size); the last iteration is always saved."""
    keep_checkpoints: int = 2
    """Steps kept under checkpoints/ (the older one stays usable should the newest be damaged)."""
    seed: int = 0

    def __post_init__(self):
        HParams.create(self.inner_lr, self.outer_lr, self.experience_weight)
        if self.chunk_size < 1 or self.iterations < 1 or self.iterations % self.chunk_size:
            raise ValueError(f"iterations={self.iterations} must be a multiple of chunk_size={self.chunk_size}")
        if self.checkpoint_every < 1 or self.checkpoint_every % self.chunk_size:
            raise ValueError(f"checkpoint_every={self.checkpoint_every} must be a multiple of chunk_size")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")


_NAVIGATION = RunConfig(
    network=NetworkConfig(hidden_dim=100),
    trainer=TrainerConfig(
        tasks_per_batch=20, trajectories_per_task=20, horizon=100, window=10, eval_trajectories=40,
        later_rounds_lr_scale=0.1,
    ),
    iterations=100,
)  # fmt: skip
_HALFCHEETAH = RunConfig(
    env=EnvConfig(name="halfcheetah-vel"),
    model="ssm",
    trainer=TrainerConfig(tasks_per_batch=5, trajectories_per_task=8, horizon=200),
    iterations=60,
    chunk_size=5,
)
CONFIGS: dict[str, RunConfig] = {
    "basic": RunConfig(
        network=NetworkConfig(hidden_dim=32),
        trainer=TrainerConfig(
            tasks_per_batch=8, trajectories_per_task=8, horizon=50, window=10, later_rounds_lr_scale=0.1
        ),
        iterations=20,
        chunk_size=5,
        checkpoint_every=5,
    ),
    "navigation": _NAVIGATION,
    "navigation-ssm": dataclasses.replace(_NAVIGATION, model="ssm"),
    "halfcheetah-vel": _HALFCHEETAH,
    "halfcheetah-dir": dataclasses.replace(_HALFCHEETAH, env=EnvConfig(name="halfcheetah-dir")),
}
"""Named configs for `ssm-jax train --config NAME`: basic (2D navigation in seconds), navigation and
navigation-ssm (Finn et al.'s settings, as `experiments.navigation`), halfcheetah-vel and halfcheetah-dir (the
flagship's CPU preset)."""


def build(config: RunConfig) -> tuple[envs.TaskEnv, Trainer]:
    """The env and the trainer `config` describes."""
    env = envs.make_meta_rl(config.env.name, config.trainer.horizon, config.env.backend, config.env.goals)
    policy = make_gaussian_policy(
        config.model, env.observation_size, env.action_size, config.network, window=max(config.trainer.window, 16)
    )
    return env, make_meta_rl_trainer(env, policy, config.trainer)


def initial_state(config: RunConfig, trainer: Trainer) -> TrainState:
    """The run's state before training (seeded by `sweep.run_keys(config.seed).init`, as the experiments)."""
    hparams = HParams.create(config.inner_lr, config.outer_lr, config.experience_weight)
    return jax.jit(trainer.init)(sweep.run_keys(config.seed).init, hparams)


def _differences(stored: Any, given: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """`(dotted field, given value, stored value)` for every leaf field where two configs differ."""
    if dataclasses.is_dataclass(stored) and type(stored) is type(given):
        return [
            diff
            for f in dataclasses.fields(stored)
            for diff in _differences(getattr(stored, f.name), getattr(given, f.name), f"{prefix}{f.name}.")
        ]
    return [] if stored == given else [(prefix.rstrip("."), given, stored)]


def _read_config(path: Path) -> Any:
    try:
        return config_from_json(path.read_text())
    except ValueError as error:
        raise UsageError(str(error)) from None


def _load_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    config = _read_config(path) if path.is_file() else None
    if not isinstance(config, RunConfig):
        raise UsageError(f"{run_dir} is not a run directory of ssm-jax train (no RunConfig in config.json)")
    return config


def _summary_table(rows: list[list[str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def train(argv: Sequence[str]) -> int:
    """`ssm-jax train`: meta-trains one run with checkpoints; see the module docstring."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--out-dir", default="runs/cli")
    known, rest = pre.parse_known_args(argv)
    if known.config is not None and known.config not in CONFIGS:
        raise UsageError(f"unknown config {known.config!r}; expected one of {', '.join(CONFIGS)}")
    prog = "ssm-jax train"
    also = f"Also --config {{{','.join(CONFIGS)}}}, --out-dir DIR (default runs/cli), --resume RUN_DIR."
    if known.resume is not None:
        run_dir = Path(known.resume)
        _load_run_config(run_dir)
        if known.config is not None:
            raise UsageError(f"--resume {run_dir}: --config {known.config}; a resumed run keeps its config")
        config = resumed_config(run_dir, rest, prog)  # its --help describes the run's config
        if not runs.checkpoint_steps(run_dir):
            raise UsageError(f"--resume {run_dir}: no checkpoint in it (expected {runs.CHECKPOINTS}/step_<n>/)")
    else:
        name = known.config or "basic"
        config = parse(RunConfig, rest, prog, f"Config {name!r}. {also}", CONFIGS[name])
        run_dir = runs.make_run_dir(known.out_dir)
        (run_dir / "config.json").write_text(config_to_json(config))
    try:
        return _train(config, run_dir, resume=known.resume is not None)
    except BaseException:
        if known.resume is None and not runs.checkpoint_steps(run_dir):
            shutil.rmtree(run_dir)  # a run that failed before its first checkpoint leaves nothing behind
        raise


def _train(config: RunConfig, run_dir: Path, resume: bool) -> int:
    started = time.perf_counter()
    _, trainer = build(config)
    state = initial_state(config, trainer)
    log = runs.MetricsLog(run_dir / "metrics.jsonl")
    if resume:
        try:
            state, path = runs.restore_latest(run_dir, target=state)
        except ValueError as error:
            raise UsageError(f"--resume {run_dir}: {error}") from None
        restored = int(state.iteration)
        log.keep(lambda record: record["iteration"] <= restored)  # what a killed run logged after its checkpoint
        print(f"resumed {run_dir} from {path.name} (iteration {restored})")

    def save(iteration: int, state: TrainState) -> Path:
        return runs.save_step(run_dir, state, config, iteration, keep=config.keep_checkpoints)

    def on_chunk(iteration: int, state: TrainState, metrics: dict) -> None:
        log.log({"iteration": iteration, **jax.tree.map(np.mean, metrics)})
        if iteration % config.checkpoint_every == 0 or iteration == config.iterations:
            save(iteration, state)

    chunk = jax.jit(lambda state, key: trainer.train(state, key, config.chunk_size), donate_argnums=0)
    try:
        state = runs.train_in_chunks(
            chunk,
            state,
            sweep.run_keys(config.seed).train,
            config.iterations,
            config.chunk_size,
            "train",
            on_chunk=on_chunk,
            postfix=lambda m: {"return": float(np.mean(m["post_adaptation_return"]))},
            start=int(state.iteration),
        )
    except runs.Interrupted as stop:
        path = save(stop.iteration, stop.state)
        print(f"interrupted at iteration {stop.iteration}: saved {path}; continue: ssm-jax train --resume {run_dir}")
        return 0
    records = log.records()
    summary = {
        "run_dir": str(run_dir),
        "iteration": int(state.iteration),
        "checkpoint": str(run_dir / runs.CHECKPOINTS / runs.LATEST),
        "final_metrics": {k: v for k, v in records[-1].items() if k != "iteration"},
        "seconds": time.perf_counter() - started,
    }
    runs.write_json(run_dir / "train.json", summary)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, label in (("pre_adaptation_return", "before the inner step"), ("post_adaptation_return", "after it")):
        ax.plot([r["iteration"] for r in records], [r[key] for r in records], marker="o", ms=3, label=label)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean episode return (training tasks)")
    ax.legend()
    save_figure(fig, run_dir / "learning_curve.png")
    rows = [["run", str(run_dir)], ["iterations", str(summary["iteration"])]]
    rows += [[k, f"{v:.4g}"] for k, v in summary["final_metrics"].items()]
    print(_summary_table(rows))
    return 0


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    checkpoint: str
    """A run directory of `ssm-jax train` (its latest step) or one of its checkpoints/step_<n>/."""
    episodes: int = 16
    """Held-out tasks, one episode each."""
    seed: int | None = None
    """Seed of the held-out tasks (None: the run's own, whose tasks training never drew)."""
    output: str | None = None
    """JSON path (None: eval.json in the run directory)."""

    def __post_init__(self):
        if self.episodes < 2:
            raise ValueError(f"episodes must be >= 2 (a confidence interval needs two), got {self.episodes}")


@dataclasses.dataclass(frozen=True)
class AdaptArgs(EvalArgs):
    adapt_steps: int = 3
    """Adaptation rounds: each samples trajectories with the current policy, then takes one gradient step."""
    adaptation_mode: Literal[ADAPTATION_MODES] = "standard"
    """hybrid adds experience_weight x behaviour cloning on windows replayed from the run's buffer."""
    trajectories: int | None = None
    """Trajectories per round (None: the run's TrainerConfig.eval_trajectories or trajectories_per_task)."""
    online: bool = False
    """Also adapt during one episode per task (every --online-every steps, on the last --online-window steps),
    against the same episodes with no adaptation."""
    online_every: int = 10
    online_window: int = 20

    def __post_init__(self):
        super().__post_init__()
        if self.adapt_steps < 1 or (self.trajectories is not None and self.trajectories < 1):
            raise ValueError(f"adapt_steps and trajectories must be >= 1, got {self.adapt_steps}, {self.trajectories}")
        if min(self.online_every, self.online_window) < 1:
            raise ValueError(f"online_every and online_window must be >= 1: {self.online_every}, {self.online_window}")


class _Restored(NamedTuple):
    run_dir: Path
    checkpoint: Path
    config: RunConfig
    trainer: Trainer
    state: TrainState
    tasks: Any
    """Held-out tasks `[episodes]`."""
    key: jax.Array


def _restore(args: EvalArgs, trainer_changes: dict) -> _Restored:
    """`args.checkpoint` restored into a trainer with `trainer_changes` (evaluation sizes only: the params do not
    depend on them), with `args.episodes` held-out tasks of the run's seed (or `args.seed`) and their key."""
    path = Path(args.checkpoint)
    if not path.exists():
        raise UsageError(f"no checkpoint at {path}")
    run_dir = runs.run_dir_of(path)
    config = _load_run_config(run_dir)
    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, **trainer_changes))
    env, trainer = build(config)
    target = initial_state(config, trainer)
    try:
        state, path = runs.restore_latest(run_dir, target) if path == run_dir else (restore(path, target)[0], path)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    eval_key = sweep.run_keys(config.seed if args.seed is None else args.seed).eval
    tasks, keys = sweep.held_out_tasks(env, eval_key[None], args.episodes)
    return _Restored(run_dir, path, config, trainer, state, jax.tree.map(lambda x: x[0], tasks), keys[0])


def evaluate(args: EvalArgs) -> dict:
    """`ssm-jax eval`: the trained policy's return on held-out tasks, one episode each, no adaptation."""
    run = _restore(args, {"adapt_rounds": 1, "eval_trajectories": 1})
    returns, _ = jax.jit(run.trainer.evaluate)(run.state, run.key, run.tasks, 0.0)
    returns = np.asarray(returns[:, 0])
    (mean, half), std = mean_ci(returns), np.std(returns, ddof=1)
    result = {
        "checkpoint": str(run.checkpoint),
        "iteration": int(run.state.iteration),
        "episodes": args.episodes,
        "return_mean": float(mean),
        "return_std": float(std),
        "return_ci95": float(half),
        "returns": returns,
    }
    runs.write_json(Path(args.output) if args.output else run.run_dir / "eval.json", result)
    print(_summary_table([["checkpoint", str(run.checkpoint)], ["episodes", str(args.episodes)],
                          ["return", f"{mean:.2f} ± {half:.2f} (std {std:.2f})"]]))  # fmt: skip
    return result


def adapt(args: AdaptArgs) -> dict:
    """`ssm-jax adapt`: return on held-out tasks after 0..K rounds of standard or hybrid adaptation."""
    changes = {"adapt_rounds": args.adapt_steps}
    if args.trajectories is not None:
        changes["eval_trajectories"] = args.trajectories
    run = _restore(args, changes)
    weight = run.config.experience_weight if args.adaptation_mode == "hybrid" else 0.0
    returns, _ = jax.jit(run.trainer.evaluate)(run.state, run.key, run.tasks, weight)
    returns = np.asarray(returns)
    (mean, half), std = mean_ci(returns), np.std(returns, axis=0, ddof=1)
    gain_mean, gain_half = mean_ci(returns[:, 1:] - returns[:, :1])
    result = {
        "checkpoint": str(run.checkpoint),
        "iteration": int(run.state.iteration),
        "adaptation_mode": args.adaptation_mode,
        "episodes": args.episodes,
        "returns": mean,
        "returns_std": std,
        "returns_ci95": half,
        "paired_gain": {"mean": gain_mean, "ci95": gain_half},
        "per_task_returns": returns,
    }
    if args.online:
        result["online"] = _adapt_online(args, run, weight)
    output = Path(args.output) if args.output else run.run_dir / "adapt.json"
    runs.write_json(output, result)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.set_xticks(plot_ci_curve(ax, returns, f"{args.adaptation_mode} adaptation", band=True))
    ax.set_xlabel("adaptation steps on the held-out task")
    ax.set_ylabel(f"episode return\n(mean, 95% CI over {args.episodes} tasks)")
    ax.legend()
    save_figure(fig, output.with_suffix(".png"))
    rows = [["checkpoint", str(run.checkpoint)], ["mode", args.adaptation_mode], ["tasks", str(args.episodes)]]
    for k in range(args.adapt_steps + 1):
        gain = "" if k == 0 else f"   (paired gain {gain_mean[k - 1]:+.2f} ± {gain_half[k - 1]:.2f})"
        rows.append([f"after {k} steps", f"{mean[k]:.2f} ± {half[k]:.2f}{gain}"])
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
    print(_summary_table(rows))
    return result


def _adapt_online(args: AdaptArgs, run: _Restored, weight: float) -> dict:
    """One episode per held-out task adapting online, and the same episodes frozen (paired)."""
    horizon = run.config.trainer.horizon
    if args.online_window > horizon:
        raise UsageError(f"--online-window {args.online_window} exceeds the run's horizon {horizon}")
    online = jax.jit(run.trainer.evaluate_online, static_argnames=("window", "every"))
    adapting, updates = online(run.state, run.key, run.tasks, weight, args.online_window, args.online_every)
    frozen, _ = online(run.state, run.key, run.tasks, weight, args.online_window, horizon + 1)
    adapting, frozen = np.asarray(adapting), np.asarray(frozen)
    (adapting_mean, adapting_half), (frozen_mean, frozen_half) = mean_ci(adapting), mean_ci(frozen)
    gain, gain_half = mean_ci(adapting - frozen)
    return {
        "every": args.online_every,
        "window": args.online_window,
        "adapting_mean": adapting_mean,
        "adapting_ci95": adapting_half,
        "frozen_mean": frozen_mean,
        "frozen_ci95": frozen_half,
        "paired_gain": gain,
        "paired_gain_ci95": gain_half,
        "adaptations": float(np.mean(updates)),
        "per_task": {"adapting": adapting, "frozen": frozen},
    }


def info() -> dict:
    """`ssm-jax info`: devices, versions, models, envs, adaptation strategies and named configs."""
    packages = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "brax", "gymnax", "mujoco", "tyro", "numpy")
    versions = {}
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    result = {
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "versions": versions,
        "models": list(MODEL_NAMES),
        "envs": list(envs.META_RL_ENVS),
        "adaptation_modes": list(ADAPTATION_MODES),
        "strategies": list(strategy_names()),
        "configs": list(CONFIGS),
    }
    rows = [[k, ", ".join(v) if isinstance(v, list) else str(v)] for k, v in result.items() if k != "versions"]
    rows += [[name, version] for name, version in versions.items()]
    print(_summary_table(rows))
    return result


_COMMANDS = ("train", "eval", "adapt", "info")


def main(argv: Sequence[str] | None = None) -> int:
    """The `ssm-jax` entry point; returns the exit code (a `UsageError` exits 2 with one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: ssm-jax {{{','.join(_COMMANDS)}}} [--help] [flags]\n\n{__doc__}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "train":
            return train(rest)
        if command == "eval":
            evaluate(parse(EvalArgs, rest, "ssm-jax eval", "Return on held-out tasks, no adaptation."))
        elif command == "adapt":
            adapt(parse(AdaptArgs, rest, "ssm-jax adapt", "Test-time adaptation on held-out tasks."))
        elif command == "info":
            info()
        else:
            raise UsageError(f"unknown command {command!r}; expected one of {', '.join(_COMMANDS)}")
    except UsageError as error:
        exit_with_error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
