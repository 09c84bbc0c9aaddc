"""`RunConfig`: one `ssm-jax train` run, its named configs, and the env and trainer it builds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import jax

from ssm_jax import envs, sweep
from ssm_jax.cli.parsing import UsageError, read_config
from ssm_jax.config_io import register_config
from ssm_jax.envs.brax_tasks import BACKENDS
from ssm_jax.models import MODEL_NAMES, NetworkConfig, make_gaussian_policy
from ssm_jax.train import HParams, Trainer, TrainerConfig, TrainState, make_meta_rl_trainer


@register_config
@dataclasses.dataclass(frozen=True)
class EnvConfig:
    name: Literal[envs.META_RL_ENVS] = "navigation-2d"
    """The meta-RL task family."""
    backend: Literal[BACKENDS] = "spring"
    """brax physics backend (brax families only)."""
    goals: Literal[envs.GOAL_SETS] = "uniform"
    """halfcheetah-vel goals: U[0, 2], or SSM-MetaRL's 0.5, 1, ..., 2.5."""


@register_config
@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run: the env, the policy, the trainer's static config and the traced hyperparameters."""

    env: EnvConfig = EnvConfig()
    model: Literal[MODEL_NAMES] = "mlp"
    """The policy's sequence model."""
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    method: Literal["maml", "pretrained"] = "maml"
    """maml, or the pretrained baseline: one policy trained by the same outer step on every trajectory of MAML's
    env budget (evaluated with the same adaptation steps)."""
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
navigation-ssm (Finn et al.'s batch with PPO outer steps, as `experiments.navigation --preset ppo`; add
`--trainer.outer-optimizer trpo --trainer.cg-iters 4 --trainer.no-normalize-observations --inner-lr 0.5` for
MAML-RL's own setup, the experiment's default), halfcheetah-vel and halfcheetah-dir (the flagship's CPU preset)."""


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
    init = jax.jit(trainer.init, static_argnames="adapt")
    return init(sweep.run_keys(config.seed).init, hparams, adapt=config.method == "maml")


def training_key(config: RunConfig) -> jax.Array:
    """The run's training key: `sweep.run_keys(config.seed)`'s for its method, as the experiments draw it."""
    keys = sweep.run_keys(config.seed)
    return keys.train if config.method == "maml" else keys.pretrain


def load_run_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    config = read_config(path) if path.is_file() else None
    if not isinstance(config, RunConfig):
        raise UsageError(f"{run_dir} is not a run directory of ssm-jax train (no RunConfig in config.json)")
    return config
