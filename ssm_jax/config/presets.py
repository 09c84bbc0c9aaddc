"""Preset builders: the changes every preset of one kind shares, written once (the named presets themselves are
`ssm_jax.config.registry.CONFIGS`)."""

from __future__ import annotations

from ssm_jax.config.family import RunConfig
from ssm_jax.config.leaves import extend, replace
from ssm_jax.models import NetworkConfig
from ssm_jax.trainers.meta_rl import TrainerConfig
from ssm_jax.trainers.protocol import EvalConfig


def navigation(name: str, **changes) -> RunConfig:
    """2D navigation at MAML-RL's settings (Finn et al.'s Table 4): raw positions in, inner lr 0.5, TRPO outer
    steps (4 conjugate-gradient iterations: rllab's 10 cost 2.5x the time for the same returns), 40 held-out goals
    adapted with twice the training batch, steps 2 and 3 at a tenth of the rate."""
    base = RunConfig(
        env="navigation-2d",
        model="mlp",
        network=NetworkConfig(state_dim=32, hidden_dim=100, num_layers=2),
        trainer=TrainerConfig(
            tasks_per_batch=20, trajectories_per_task=20, horizon=100, outer_optimizer="trpo", cg_iters=4,
            normalize_observations=False, window=10,
        ),
        evaluation=EvalConfig(eval_tasks=40, eval_trajectories=40, later_rounds_lr_scale=0.1),
        inner_lr=0.5,
        iterations=100,
        chunk_size=10,
        checkpoint_every=50,
        adaptation_mode="standard",
        pretrained=False,  # the paper's table has no pretrained row; --pretrained adds one (doubles the time)
        out_dir="runs/navigation",
    )  # fmt: skip
    return replace(base, name=name, **changes)


def ppo(config: RunConfig) -> RunConfig:
    """`config` with PPO outer steps, standardised inputs and inner lr 0.1: the `-ppo` variants."""
    return replace(config, outer_optimizer="ppo", normalize_observations=True, inner_lr=0.1)


def smoke(config: RunConfig, **changes) -> RunConfig:
    """`config` at a test's size (seconds), with `changes` by leaf name: the `-smoke` variants."""
    return replace(
        config, hidden_dim=16, state_dim=8, iterations=2, chunk_size=1, tasks_per_batch=2, trajectories_per_task=2,
        horizon=20, window=5, eval_tasks=2, checkpoint_every=2, step_size_grid=(), later_rounds_lr_grid=(), **changes,
    )  # fmt: skip


def study(cls: type, base: RunConfig, out_dir: str, eval_tasks: int = 64, **changes) -> RunConfig:
    """A budget study (or levers sweep) on `base`: `eval_tasks` held-out (or validation) tasks, the
    one adaptation round it compares, standard adaptation, every method at the inner lr (no step-size choice)."""
    return extend(
        cls, base, eval_tasks=eval_tasks, adapt_rounds=1, adaptation_mode="standard", out_dir=out_dir,
        step_size_grid=(), later_rounds_lr_grid=(), **changes,
    )  # fmt: skip
