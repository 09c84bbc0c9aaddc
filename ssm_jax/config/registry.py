"""The registry of named configs: every preset of every entry point is a name here.

`ssm-jax train --config NAME` runs one; an experiment's `--preset P` is the name `<experiment>-P` (`experiments.
halfcheetah_vel --preset long` is `halfcheetah-vel-long`), so each setting is written once.
"""

from __future__ import annotations

import dataclasses

from ssm_jax.config.family import (
    ExperimentConfig,
    InContextRunConfig,
    RunConfig,
    SinusoidRunConfig,
    WorldModelRunConfig,
)
from ssm_jax.config.leaves import extend, replace
from ssm_jax.config.presets import navigation, ppo, smoke, study
from ssm_jax.config.studies import (
    REGIMES,
    BenchmarkArgs,
    LeverArgs,
    ReplayArgs,
    ReplayWorldModelArgs,
    StudyArgs,
    SweepArgs,
)
from ssm_jax.meta.world_model import WorldModelConfig
from ssm_jax.models import NetworkConfig
from ssm_jax.trainers.in_context import InContextConfig
from ssm_jax.trainers.protocol import EvalConfig
from ssm_jax.trainers.world_model import WorldModelTrainerConfig

_FLAGSHIP = replace(
    RunConfig(), outer_epochs=5, iterations=125, step_size_grid=(0.3, 1.0, 3.0), later_rounds_lr_grid=(0.1, 0.3, 1.0)
)
"""The flagship's CPU preset: each method at its best test-time step size and decay after round 1 (chosen on
validation goals),
5 PPO epochs, the setting `experiments.levers` chose on validation goals, and 125
meta-iterations (2.0M env steps per method), the smallest of the budget study's budgets at which MAML separates
from the pretrained baseline at seeds 0 and 1 alike with both at MAML's inner lr (at 1.04M seed 0 does, seed 1 does
not); with each method at its best step size neither seed separates at 2M (docs/results/halfcheetah_vel_cpu)."""
CONFIGS: dict[str, ExperimentConfig] = {
    "basic": replace(
        ppo(navigation("basic")),
        hidden_dim=32,
        tasks_per_batch=8,
        trajectories_per_task=8,
        horizon=50,
        eval_tasks=16,
        eval_trajectories=None,
        iterations=20,
        chunk_size=5,
        checkpoint_every=5,
        out_dir="runs/cli",
    ),
    "navigation": navigation(
        "navigation", step_size_grid=(0.03, 0.1, 0.3, 1.0, 2.0), later_rounds_lr_grid=(0.1, 0.5, 1.0)
    ),  # each method at its best step size and decay after round 1, chosen on validation goals
    "navigation-ppo": ppo(navigation("navigation-ppo")),
    "navigation-ssm": ppo(navigation("navigation-ssm", model="ssm")),
    "navigation-smoke": smoke(navigation("navigation-smoke")),
    "halfcheetah-vel": _FLAGSHIP,
    # 3M env steps, 64 held-out goals: on spring, the smallest budget where MAML separated (`experiments.budget_study`).
    "halfcheetah-vel-long": replace(_FLAGSHIP, name="halfcheetah-vel-long", iterations=190, eval_tasks=64),
    "halfcheetah-vel-smoke": smoke(
        _FLAGSHIP,
        name="halfcheetah-vel-smoke",
        outer_epochs=1,
        buffer_size=64,
        experience_batch_size=4,
        oracle_iterations=2,
    ),
    "halfcheetah-vel-paper": replace(
        _FLAGSHIP,
        name="halfcheetah-vel-paper",
        backend="mjx",
        iterations=500,
        chunk_size=10,
        tasks_per_batch=40,
        trajectories_per_task=20,
        outer_lr=1e-3,
        outer_epochs=5,
        buffer_size=20_000,
        eval_tasks=40,
        oracle=True,
        oracle_iterations=200,
        checkpoint_every=50,
    ),
    "halfcheetah-dir": replace(_FLAGSHIP, name="halfcheetah-dir", env="halfcheetah-dir"),
    "world-model": replace(WorldModelRunConfig(), step_size_grid=(0.1, 0.3, 1.0, 3.0)),
    "world-model-smoke": WorldModelRunConfig(
        name="world-model-smoke",
        network=NetworkConfig(state_dim=8, hidden_dim=16),
        trainer=WorldModelTrainerConfig(
            model=WorldModelConfig(horizon=20, window=10, support_trajectories=2),
            train_tasks=4,
            trajectories_per_task=3,
            tasks_per_batch=2,
            eval_tasks=3,
            buffer_size=64,
            experience_batch_size=8,
            oracle_iterations=5,
        ),
        iterations=4,
        chunk_size=2,
        checkpoint_every=4,
    ),
    "world-model-paper": WorldModelRunConfig(
        name="world-model-paper",
        network=NetworkConfig(state_dim=64, hidden_dim=128),
        trainer=WorldModelTrainerConfig(
            model=WorldModelConfig(horizon=200, window=20, support_trajectories=4),
            train_tasks=256,
            trajectories_per_task=8,
            tasks_per_batch=32,
            eval_tasks=40,
            buffer_size=20_000,
        ),
        iterations=3000,
        chunk_size=100,
        checkpoint_every=100,
    ),
    "in-context-navigation": InContextRunConfig(
        trainer=InContextConfig(
            tasks_per_batch=16,
            trials_per_task=8,
            horizon=100,
            reward_scale=0.1,
            normalize_observations=False,
            eval_trials=10,
        )
    ),
    "in-context-smoke": InContextRunConfig(
        name="in-context-smoke",
        models=("gru", "mlp"),
        network=NetworkConfig(state_dim=8, hidden_dim=16),
        trainer=InContextConfig(
            tasks_per_batch=2,
            trials_per_task=2,
            horizon=20,
            minibatches=2,
            ppo_epochs=1,
            normalize_observations=False,
            eval_trials=2,
        ),
        evaluation=EvalConfig(eval_tasks=2),  # navigation-smoke's horizon and held-out tasks
        iterations=4,
        chunk_size=2,
        checkpoint_every=2,
        num_seeds=2,
    ),
    "in-context-halfcheetah-vel": InContextRunConfig(
        name="in-context-halfcheetah-vel",
        env="halfcheetah-vel",
        trainer=InContextConfig(tasks_per_batch=8, trials_per_task=4, horizon=200, reward_scale=0.1, eval_trials=4),
        evaluation=EvalConfig(eval_tasks=16),  # the flagship CPU preset's held-out tasks
        iterations=75,  # 0.96M env steps: the flagship CPU preset's budget
        chunk_size=15,
        checkpoint_every=15,
    ),
    "in-context-pendulum": InContextRunConfig(
        name="in-context-pendulum",
        env="pendulum-params",
        trainer=InContextConfig(tasks_per_batch=8, trials_per_task=4, horizon=200, reward_scale=0.01, eval_trials=4),
        evaluation=EvalConfig(eval_tasks=16),  # as the flagship preset's MAML on this family
        iterations=75,
        chunk_size=15,
        checkpoint_every=15,
    ),
    "sinusoid": SinusoidRunConfig(),
    "sinusoid-smoke": SinusoidRunConfig(
        name="sinusoid-smoke", iterations=1500, chunk_size=500, checkpoint_every=500, eval_tasks=100, plots=False
    ),
    "sinusoid-paper": SinusoidRunConfig(name="sinusoid-paper", shots=(5, 10, 20), iterations=70_000),
}
"""Named configs: `ssm-jax train --config NAME`, and the experiments' presets (`experiments.halfcheetah_vel
--preset long` is `halfcheetah-vel-long`). basic: 2D navigation in seconds. navigation: MAML-RL's own setup;
navigation-ppo: PPO outer steps and standardised inputs; navigation-ssm: that with the SSM policy. halfcheetah-vel: the
flagship's CPU preset (2M env steps); -long: 3M; -paper: MAML-RL's scale on mjx, for a GPU.
halfcheetah-dir: forward/backward (Finn et al. Fig. 5). in-context-*: RL² (`experiments.in_context`) on navigation
(MAML's navigation budget, 8M env steps), halfcheetah-vel and pendulum-params. world-model: a meta-learned SSM
dynamics model on pendulum-params (`experiments.world_model`); sinusoid: Finn et al.'s regression
(`experiments.sinusoid`); -smoke: seconds, for tests."""
_REPLAY = extend(
    ReplayArgs, CONFIGS["navigation"], name="replay-navigation", num_seeds=3, eval_tasks=64, eval_trajectories=20,
    pretrained=False, random_baseline=False, out_dir="runs/replay", step_size_grid=(), later_rounds_lr_grid=(),
)  # fmt: skip
CONFIGS.update({
    "replay-navigation": _REPLAY,
    **{
        f"replay-{name}": dataclasses.replace(_REPLAY, name=f"replay-{name}", regimes=(regime,))
        for regime, name in ((regime, regime.replace("_", "-")) for regime in REGIMES)
    },
    "replay-world-model": extend(
        ReplayWorldModelArgs, CONFIGS["world-model"], name="replay-world-model", num_seeds=3, eval_tasks=64,
        support_trajectories=1, adapt_rounds=30, out_dir="runs/replay", step_size_grid=(),
    ),
    "replay-world-model-smoke": extend(
        ReplayWorldModelArgs, CONFIGS["world-model-smoke"], name="replay-world-model-smoke", eval_tasks=4,
        support_trajectories=1, adapt_rounds=3, alphas=(0.0, 1.0), out_dir="runs/replay",
    ),
    "replay-smoke": extend(
        ReplayArgs, CONFIGS["navigation-smoke"], name="replay-smoke", eval_tasks=4, alphas=(0.0, 1.0), many_steps=3,
        support_trajectories=2, online_window=5, online_every=5, pretrained=False, random_baseline=False,
        out_dir="runs/replay",
    ),
})  # fmt: skip
"""`experiments.replay`'s presets: the meta-RL regimes on 2D navigation at the paper's settings (all, or one each),
the world-model regime, and smoke runs."""


CONFIGS.update({
    "budget-study-vel": study(StudyArgs, CONFIGS["halfcheetah-vel"], "runs/budget_study"),
    "budget-study-dir": study(StudyArgs, CONFIGS["halfcheetah-dir"], "runs/budget_study"),
    "budget-study-smoke": study(
        StudyArgs, CONFIGS["halfcheetah-vel-smoke"], "runs/budget_study", 2, budgets=(160, 320)
    ),
    "levers-vel": study(LeverArgs, CONFIGS["halfcheetah-vel"], "runs/levers"),
    "levers-dir": study(LeverArgs, CONFIGS["halfcheetah-dir"], "runs/levers"),
    "levers-smoke": study(
        LeverArgs, CONFIGS["halfcheetah-vel-smoke"], "runs/levers", 2, budgets=(160, 320), variants=("base", "TRPO")
    ),
})  # fmt: skip
"""`experiments.budget_study`'s and `experiments.levers`' presets: the flagship's CPU batch on HalfCheetah-Vel or
-Dir, and smoke runs."""

CONFIGS.update({  # navigation (ppo) at half the paper's batch on each axis: about 3 minutes on 2 cores
    "sweep-default": extend(
        SweepArgs, CONFIGS["navigation-ppo"], name="sweep", num_seeds=3, out_dir="runs/sweep", iterations=40,
        tasks_per_batch=10, trajectories_per_task=10, eval_tasks=20,
    ),
    "sweep-smoke": extend(
        SweepArgs, ppo(CONFIGS["navigation-smoke"]), name="sweep-smoke", num_seeds=2, out_dir="runs/sweep"
    ),
})  # fmt: skip
"""`experiments.sweep`'s presets."""


CONFIGS["benchmark-cpu"] = BenchmarkArgs(  # experiments.world_model's cpu preset, lighter: 12 cells x 5 seeds <= 1 h
    world_model=replace(
        CONFIGS["world-model"],
        iterations=200,
        train_tasks=32,
        tasks_per_batch=8,
        eval_tasks=10,
        oracle_iterations=100,
        step_size_grid=(),
    ),
    rl=CONFIGS["navigation-ppo"],
)
CONFIGS["benchmark-smoke"] = dataclasses.replace(
    BenchmarkArgs(),
    preset="smoke",
    envs=("pendulum-params",),
    methods=("ssm", "mlp"),
    num_seeds=2,
    world_model=CONFIGS["world-model-smoke"],
    rl=ppo(CONFIGS["navigation-smoke"]),
)
"""`experiments.benchmark`'s presets: the cpu one (12 cells x 5 seeds, under an hour) and a smoke run."""

META_RL_CONFIGS = {name: config for name, config in CONFIGS.items() if type(config) is RunConfig}
"""The meta-RL named configs (`ssm-jax eval` and `adapt` read their runs)."""
IN_CONTEXT_CONFIGS = {name: config for name, config in CONFIGS.items() if type(config) is InContextRunConfig}
"""The in-context (RL²) named configs; `ssm-jax train --config` runs these and the meta-RL ones."""
