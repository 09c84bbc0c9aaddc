"""The studies' configs: each extends a program's config (`config.family`) with the settings only that study has.
Their presets are names in the registry (`replay-*`, ...)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from ssm_jax import envs, sweep
from ssm_jax.config.family import WORLD_MODEL_ENVS, RunConfig, WorldModelRunConfig
from ssm_jax.config.io import register_config
from ssm_jax.models import MODEL_NAMES

REGIMES = ("many_step", "online", "task_switch")
RL_VARIANTS = {
    "meta": ("meta", "clipped_pg"),
    "task (clipped PG)": ("task", "clipped_pg"),
    "task (KL anchor)": ("task", "kl_anchor"),
    "both (clipped PG)": ("both", "clipped_pg"),
}
"""Hybrid variants of the meta-RL regimes: label -> (`EvalConfig.replay`, `EvalConfig.task_replay_loss`)."""
WORLD_MODEL_VARIANTS = {"meta": "meta", "task": "task", "both": "both"}


def check_alphas(alphas: tuple[float, ...]) -> None:
    if len(alphas) < 2 or alphas[0] != 0.0 or any(a <= 0 for a in alphas[1:]):
        raise ValueError(f"alphas must start with 0 (the standard adapter) followed by positive weights, got {alphas}")


@register_config
@dataclasses.dataclass(frozen=True)
class ReplayArgs(RunConfig):
    """The meta-RL regimes on a `RunConfig` (the meta-training), with the replay study's own settings."""

    RESUMABLE: ClassVar[bool] = False
    ADDED_FIELDS: ClassVar[dict] = {"online_lr_scale": 1.0}
    """What a config stored before these fields existed ran with (`config_io` fills them in when reading one)."""

    regimes: tuple[str, ...] = REGIMES
    alphas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    """Weights of the hybrid term, evaluated in one program; the first must be 0 (standard)."""
    many_steps: int = 20
    """Gradient steps of the many-step regime."""
    many_step_lr_scale: float = 0.1
    """The many-step regime's rate, x the inner lr hyperparameter (Meta-SGD's learned rates are not scaled): every
    step at the rate of the protocol's later steps."""
    support_trajectories: int = 10
    """Trajectories of the many-step regime's support."""
    online_window: int = 20
    online_every: int = 10
    online_lr_scale: float = 0.1
    """The online regimes' rate, x the inner lr (their first update; later ones x later_rounds_lr_scale too). At the
    first step's own rate (1) every online adapter diverges on some tasks and all fall far below the frozen
    episodes (the recorded H200 run)."""

    def __post_init__(self):
        super().__post_init__()
        check_alphas(self.alphas)
        unknown = sorted(set(self.regimes) - set(REGIMES))
        if not self.regimes or unknown:
            raise ValueError(f"regimes must be some of {', '.join(REGIMES)}, got {self.regimes}")
        if not (self.many_step_lr_scale > 0 and self.online_lr_scale > 0):
            raise ValueError(
                f"many_step_lr_scale and online_lr_scale must be > 0, got {self.many_step_lr_scale}, "
                f"{self.online_lr_scale}"
            )
        if min(self.many_steps, self.support_trajectories, self.online_window, self.online_every) < 1:
            raise ValueError("many_steps, support_trajectories, online_window and online_every must be >= 1")
        if self.evaluation.eval_tasks < 2 or self.evaluation.eval_tasks % 2:
            raise ValueError(f"eval_tasks must be even (half choose α, half judge), got {self.evaluation.eval_tasks}")


@register_config
@dataclasses.dataclass(frozen=True)
class ReplayWorldModelArgs(WorldModelRunConfig):
    """The world-model regime: a `WorldModelRunConfig` with the α grid."""

    alphas: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    """Weights of the hybrid term, evaluated in one program; the first must be 0 (standard)."""

    def __post_init__(self):
        super().__post_init__()
        check_alphas(self.alphas)
        if self.trainer.eval_tasks < 2 or self.trainer.eval_tasks % 2:
            raise ValueError(f"eval_tasks must be even (half choose α, half judge), got {self.trainer.eval_tasks}")


@register_config
@dataclasses.dataclass(frozen=True)
class StudyArgs(RunConfig):
    RESUMABLE: ClassVar[bool] = False
    UNREAD_FIELDS: ClassVar[frozenset[str]] = frozenset({"iterations", "checkpoint_every", "keep_checkpoints"})
    """Fields of `RunConfig` the study never reads (its budgets set how long it trains; it keeps no checkpoint): a
    recorded study does not go stale when their defaults move."""

    budgets: tuple[float, ...] = (5e5, 1e6, 2e6, 3e6, 5e6, 1e7)
    """Env steps per method at which both methods are evaluated, ascending (the largest sets how long each trains;
    --iterations is not read)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.budgets or any(b <= 0 for b in self.budgets) or list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"budgets must be positive and strictly ascending, got {self.budgets}")


VARIANTS: dict[str, dict] = {
    "base": {"sweep_inner_lr": (0.05, 0.1, 0.2), "sweep_outer_lr": (3e-3, 1e-2)},
    "10 tasks x 4 trajectories": {"tasks_per_batch": 10, "trajectories_per_task": 4},
    "5 PPO epochs": {"outer_epochs": 5},
    "TRPO": {"outer_optimizer": "trpo"},
    "learned inner lr": {"learn_inner_lr": True},
    "2 inner steps": {"inner_steps": 2},
}
"""Each variant's changes to the study's config, by leaf name; `sweep_inner_lr` / `sweep_outer_lr` are the traced
values its grid crosses with the seeds (absent: the config's one value)."""


@register_config
@dataclasses.dataclass(frozen=True)
class LeverArgs(StudyArgs):
    variants: tuple[str, ...] = tuple(VARIANTS)
    """The settings to try, by their names in `VARIANTS`, in this order."""
    budgets: tuple[float, ...] = (5e5, 1e6)

    def __post_init__(self):
        super().__post_init__()
        unknown = [name for name in self.variants if name not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"unknown variant(s) {unknown}; expected some of {', '.join(map(repr, VARIANTS))}")


@register_config
@dataclasses.dataclass(frozen=True)
class SweepArgs(RunConfig):
    """A `RunConfig` (every run's shared settings; its inner_lr, outer_lr and experience_weight are the values of
    the fields not swept) and the values to sweep."""

    RESUMABLE: ClassVar[bool] = False
    ADDED_FIELDS: ClassVar[dict] = {"task_devices": 1}
    """Sweeps stored before `task_devices` split no run's tasks."""

    name: str = "sweep"
    num_seeds: int = 3
    sweep_inner_lr: tuple[float, ...] = (0.05, 0.1)
    """Inner learning rates to sweep (empty: the config's inner_lr)."""
    sweep_outer_lr: tuple[float, ...] = ()
    """Outer learning rates to sweep (empty: the config's outer_lr)."""
    sweep_experience_weight: tuple[float, ...] = ()
    """Hybrid experience weights to sweep (empty: the config's; the evaluation here is standard)."""
    distributed: bool = False
    """Join JAX's multi-process runtime first (`ssm_jax.distributed.initialize`: one process per host, started by
    `python -m ssm_jax.launch`, SLURM, Open MPI or a TPU pod); the runs are then split over every process's
    devices."""
    task_devices: int = 1
    """Devices each run's meta-batch of tasks is split over (the mesh's "tasks" axis); the runs are split over the
    rest (the "runs" axis: the run count must be a multiple of the device count divided by this)."""
    out_dir: str = "runs/sweep"

    def __post_init__(self):
        super().__post_init__()
        if not any(self.swept().values()):
            raise ValueError(
                f"sweep at least one of {', '.join(f'sweep_{n}' for n in sweep.SWEEPABLE)} (seeds alone: "
                "experiments.navigation --num-seeds)"
            )

    def swept(self) -> dict[str, tuple[float, ...]]:
        """The `HParams` field -> the values swept (empty: not swept)."""
        return {name: getattr(self, f"sweep_{name}") for name in sweep.SWEEPABLE}


OBJECTIVES = ("world_model", "rl")
FAMILIES = {"world_model": WORLD_MODEL_ENVS, "rl": envs.META_RL_ENVS}
"""The task families of each objective."""


@register_config
@dataclasses.dataclass(frozen=True)
class BenchmarkArgs:
    preset: str = "cpu"
    """The preset these values came from (choose it with --preset)."""
    objective: Literal[OBJECTIVES] = "world_model"
    """world_model: query MSE of a meta-learned dynamics model; rl: return of a meta-RL policy."""
    envs: tuple[str, ...] = ("pendulum-params", "halfcheetah-vel")
    """Task families (world_model: any of experiments.world_model's; rl: any meta-RL family)."""
    methods: tuple[Literal[MODEL_NAMES], ...] = MODEL_NAMES
    """Sequence models."""
    num_seeds: int = 5
    seed: int = 0
    match_params: int | None = None
    """Size every model's hidden width to the parameter count closest to this (None: the base network)."""
    world_model: WorldModelRunConfig = dataclasses.field(default_factory=WorldModelRunConfig)
    """The world-model cell's settings (its env, model, seeds and output are set per cell)."""
    rl: RunConfig = dataclasses.field(default_factory=RunConfig)
    """The meta-RL cell's settings (env, model, seeds and output are set per cell)."""
    resume: str | None = None
    """A run directory of this benchmark: its config is kept and its finished cells are skipped."""
    out_dir: str = "runs/benchmark"

    def __post_init__(self):
        unknown = sorted(set(self.envs) - set(FAMILIES[self.objective]))
        if not self.envs or unknown:
            raise ValueError(
                f"envs {unknown} are not {self.objective} families ({', '.join(FAMILIES[self.objective])})"
            )
        if not self.methods or self.num_seeds < 1:
            raise ValueError("the benchmark needs at least one method and num_seeds >= 1")
        if self.match_params is not None and self.match_params < 1:
            raise ValueError(f"match_params must be >= 1, got {self.match_params}")
