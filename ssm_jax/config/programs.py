"""From a config to what runs it: the env and `Trainer` a config describes, its run's initial state and keys, and
the config stored in a run directory.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax

from ssm_jax import envs, sweep
from ssm_jax.config.family import InContextRunConfig, RunConfig, SinusoidRunConfig, WorldModelRunConfig
from ssm_jax.config.io import read_config
from ssm_jax.models import make_gaussian_policy
from ssm_jax.trainers.in_context import make_in_context_trainer
from ssm_jax.trainers.meta_rl import make_meta_rl_trainer
from ssm_jax.trainers.protocol import HParams, Trainer
from ssm_jax.trainers.regression import RegressionTrainerConfig, make_regression_trainer


def build(config: RunConfig, task_sharding: jax.sharding.Sharding | None = None) -> tuple[envs.TaskEnv, Trainer]:
    """The env and the trainer `config` describes (`task_sharding`: see `make_meta_rl_trainer`)."""
    env = envs.make_meta_rl(config.env, config.trainer.horizon, config.backend, config.goals)
    policy = make_gaussian_policy(
        config.model,
        env.observation_size,
        env.action_size,
        config.network,
        attention_span=max(config.trainer.window, 16),
    )
    return env, make_meta_rl_trainer(env, policy, config.trainer, config.evaluation, task_sharding)


def build_in_context(config: InContextRunConfig, model: str) -> tuple[envs.TaskEnv, Trainer]:
    """The env and the in-context trainer of `model` that `config` describes."""
    horizon = config.trainer.horizon
    if config.env in envs.META_RL_ENVS:
        env = envs.make_meta_rl(config.env, horizon, config.backend, config.goals)
    else:
        env = envs.make(config.env, horizon=horizon)
    return env, make_in_context_trainer(env, model, config.network, config.trainer)


def build_run(
    config: RunConfig | InContextRunConfig, task_sharding: jax.sharding.Sharding | None = None
) -> tuple[envs.TaskEnv, Trainer]:
    """The env and trainer of one `ssm-jax train` run: `build` for meta-RL, the RL² trainer of the config's first
    policy (the one `ssm-jax train` trains) for an in-context config."""
    if isinstance(config, InContextRunConfig):
        return build_in_context(config, config.models[0])
    return build(config, task_sharding)


def compiled_programs(args: RunConfig) -> tuple:
    """The env and the trainer's programs vmapped over runs (`ssm_jax.sweep.make_programs`), built once per process for
    each program (what `args` describes): they depend only on the env, the policy, the trainer's and the evaluation's
    static configs and the chunk size, so a second `main` with other seeds, hyperparameters or output directory
    reuses them."""
    program_fields = ("env", "backend", "goals", "model", "network", "trainer", "evaluation", "chunk_size")
    chunk = args.chunk_size
    program = RunConfig(**{f: getattr(args, f) for f in program_fields}, iterations=chunk, checkpoint_every=chunk)
    return _compiled(program)


@functools.cache
def _compiled(program: RunConfig) -> tuple:
    env, trainer = build(program)
    return env, sweep.make_programs(trainer, program.chunk_size)


def world_model_env(config: WorldModelRunConfig) -> envs.TaskEnv:
    """The task family a world-model config learns the dynamics of, at its model's horizon."""
    options = {"backend": config.backend} if config.env in envs.FAMILIES else {}
    return envs.make(config.env, horizon=config.trainer.model.horizon, **options)


def build_regression(config: SinusoidRunConfig, shots: int, method: str) -> Trainer:
    """The regression trainer of `method` (`SINUSOID_METHODS`) at `shots` shots that `config` describes."""
    trainer_config = RegressionTrainerConfig(
        shots=shots,
        tasks_per_batch=config.tasks_per_batch,
        inner_steps=config.inner_steps,
        first_order=method == "fomaml",
        learn_inner_lr=method == "meta_sgd",
        hidden_dim=config.hidden_dim,
        eval_points=config.eval_points,
        adapt_rounds=config.adapt_rounds,
    )
    return make_regression_trainer(envs.SinusoidDistribution(frequency_range=config.frequency_range), trainer_config)


def _meta_learns(config: RunConfig | InContextRunConfig) -> bool:
    """Whether `config` trains the meta-learner (MAML, or RL²) rather than the pretrained baseline."""
    return getattr(config, "method", "maml") == "maml"


def initial_state(config: RunConfig | InContextRunConfig, trainer: Trainer) -> Any:
    """The state of `config.seed`'s run before training (`sweep.run_keys(seed).init`, as every entry point)."""
    hparams = HParams.create(config.inner_lr, config.outer_lr, config.experience_weight)
    init = jax.jit(trainer.init, static_argnames="adapt")
    return init(sweep.run_keys(config.seed).init, hparams, adapt=_meta_learns(config))


def training_key(config: RunConfig | InContextRunConfig) -> jax.Array:
    """`sweep.run_keys(config.seed)`'s training key for `config.method` (RL² trains with MAML's key)."""
    keys = sweep.run_keys(config.seed)
    return keys.train if _meta_learns(config) else keys.pretrain


def load_run_config(run_dir: Path, kinds: tuple[type, ...] = (RunConfig,)) -> Any:
    """The config in `run_dir/config.json`, one of `kinds` (by default a meta-RL run's `RunConfig`).

    Raises:
        ValueError: there is none, or the file holds another kind of config (one line).
    """
    path = Path(run_dir) / "config.json"
    config = read_config(path) if path.is_file() else None
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"{run_dir} is not a run directory (no run's config in config.json)")
    if not isinstance(config, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        kind = "an RL² (in-context) run" if isinstance(config, InContextRunConfig) else f"a {type(config).__name__} run"
        raise ValueError(f"{run_dir} is {kind}; this command takes a {names} run's directory")
    return config
