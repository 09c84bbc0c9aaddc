"""What a meta-RL run is: its static `TrainerConfig`, its traced `HParams` and the `TrainState` a checkpoint holds.

Static choices (sizes, the env, the model, the inner-step program) live in the frozen `TrainerConfig`: changing one
recompiles. Traced hyperparameters (`HParams`) live in the state, so a sweep is a `jax.vmap` over states, not a
recompile (rejax's split). `ssm_jax.train` builds the program that runs on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

import jax.numpy as jnp
from flax import struct

from ssm_jax.adapt.adapter import ADAPTATION_MODES, REPLAY_CHOICES
from ssm_jax.adapt.rl import TASK_REPLAY_LOSSES
from ssm_jax.buffer import BufferState
from ssm_jax.config_io import register_config
from ssm_jax.envs.normalize import RunningMeanStd
from ssm_jax.meta.maml import MetaState
from ssm_jax.meta.policy_losses import INNER_OBJECTIVES
from ssm_jax.types import Array

OUTER_OPTIMIZERS = ("ppo", "trpo")
MATMUL_PRECISIONS = (None, "default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


@register_config
@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Static settings of the training program (changing one recompiles). Trajectories are per task."""

    tasks_per_batch: int = 5
    """Tasks per meta-iteration."""
    trajectories_per_task: int = 8
    """Trajectories per task and sampling round (N)."""
    horizon: int = 200
    """Steps per episode (T)."""
    inner_steps: int = 1
    """Inner steps in meta-training, each on fresh trajectories."""
    learn_inner_lr: bool = False
    """Meta-SGD: learn per-parameter inner rates and adapt with them at test time."""
    first_order: bool = False
    """First-order MAML (no gradient through the inner step)."""
    inner_grad_clip: float | None = None
    """Clip the inner gradient to this global norm (None: no clip)."""
    inner_objective: Literal[INNER_OBJECTIVES] = "pg"
    """pg: vanilla policy gradient (MAML-RL); lvc: ProMP's low-variance curvature objective."""
    outer_epochs: int = 3
    """PPO epochs per meta-iteration."""
    outer_optimizer: Literal[OUTER_OPTIMIZERS] = "ppo"
    """"ppo": `outer_epochs` Adam steps on the clipped surrogate; "trpo": one trust-region step (MAML-RL's)."""
    max_kl: float = 0.01
    """The TRPO step's bound on the adapted policies' KL, nats (MAML-RL's `step_size`)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations (Fisher-vector products) per TRPO step; rllab's default is 10."""
    normalize_observations: bool = True
    """Standardise policy inputs with running statistics; False passes them raw (MAML-RL's navigation)."""
    buffer_size: int = 10_000
    """ExperienceBuffer capacity in windows."""
    window: int = 16
    """W: steps per buffer window (the hybrid adapter replays windows of W steps)."""
    experience_batch_size: int = 32
    """Windows replayed per hybrid step."""
    matmul_precision: Literal[MATMUL_PRECISIONS] = "highest"
    """Precision of the float32 matmuls in every traced program: "highest" is full float32 on every backend (GPUs
    otherwise use TF32, with which 1 of 8 navigation runs at the paper's settings diverged to NaN on an H200 while
    all 8 finished in float32); None keeps JAX's default (faster on GPU)."""

    def __post_init__(self):
        sizes = (
            "tasks_per_batch",
            "trajectories_per_task",
            "inner_steps",
            "outer_epochs",
            "cg_iters",
            "window",
            "buffer_size",
            "experience_batch_size",
        )
        for name in sizes:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.window > self.horizon:
            raise ValueError(f"TrainerConfig.window={self.window} must not exceed horizon={self.horizon}")
        if self.inner_objective not in INNER_OBJECTIVES:
            raise ValueError(
                f"TrainerConfig.inner_objective must be one of {INNER_OBJECTIVES}, got {self.inner_objective!r}"
            )
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(
                f"TrainerConfig.outer_optimizer must be one of {OUTER_OPTIMIZERS}, got {self.outer_optimizer!r}"
            )
        if self.outer_optimizer == "trpo" and self.learn_inner_lr:
            raise ValueError("TrainerConfig: the trpo outer step does not learn inner rates (learn_inner_lr needs ppo)")
        if not self.max_kl > 0:
            raise ValueError(f"TrainerConfig.max_kl must be > 0, got {self.max_kl}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(
                f"TrainerConfig.matmul_precision must be one of {MATMUL_PRECISIONS}, got {self.matmul_precision!r}"
            )

    @property
    def env_steps_per_iteration(self) -> int:
        """Env steps one meta-iteration samples, MAML's or the pretrained baseline's alike: `inner_steps + 1`
        rounds of `trajectories_per_task` trajectories of `horizon` steps for each of `tasks_per_batch` tasks."""
        return self.tasks_per_batch * (self.inner_steps + 1) * self.trajectories_per_task * self.horizon


@register_config
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol on held-out tasks: `eval_tasks` tasks per seed, each adapted for `adapt_rounds`
    rounds (K; each samples `eval_trajectories` trajectories with the current policy, then takes one gradient step
    at the inner rate, scaled by `later_rounds_lr_scale` after the first). Static: changing one recompiles
    `evaluate`, never `train`."""

    ADDED_FIELDS: ClassVar[dict] = {"steps_per_round": 1, "replay": "meta", "task_replay_loss": "clipped_pg"}
    """What a config stored before these fields existed ran with (`config_io` fills them in when reading one)."""

    eval_tasks: int = 16
    """Held-out tasks per seed."""
    adapt_rounds: int = 3
    """K: test-time adaptation rounds (sample, then one step)."""
    eval_trajectories: int | None = None
    """Trajectories per test-time round (None: the trainer's trajectories_per_task)."""
    later_rounds_lr_scale: float = 1.0
    """Factor on the inner rate for rounds after the first (MAML-RL's test script halves it)."""
    steps_per_round: int = 1
    """Gradient steps of each round's update on its trajectories (1: the step MAML was meta-trained for)."""
    replay: Literal[REPLAY_CHOICES] = "task"
    """What hybrid adaptation replays, at the experience weight: the meta-training buffer (`meta`), the current
    task's own earlier trajectories (`task`), or `both`. `task` by the replay study's verdict (docs/adaptation.md):
    with a loss chosen per regime it helps wherever replay helps, and `meta` (cloning other tasks' actions) helps
    only as a brake on a drifting adapter."""
    task_replay_loss: Literal[TASK_REPLAY_LOSSES] = "kl_anchor"
    """The task buffer's term: `clipped_pg` (PPO-clipped importance-weighted policy gradient) or `kl_anchor` (KL to
    the meta-trained policy on the task's own states). `kl_anchor` by the verdict: best in the many-step and
    task-switch regimes, and zero at the meta-trained params, so a first step is the standard one; `clipped_pg`
    is best for online adaptation at a tenth of the rate."""

    def __post_init__(self):
        if min(self.eval_tasks, self.adapt_rounds, self.steps_per_round) < 1:
            raise ValueError(
                f"eval_tasks, adapt_rounds and steps_per_round must be >= 1, got {self.eval_tasks}, "
                f"{self.adapt_rounds}, {self.steps_per_round}"
            )
        for name, value, choices in (
            ("replay", self.replay, REPLAY_CHOICES),
            ("task_replay_loss", self.task_replay_loss, TASK_REPLAY_LOSSES),
        ):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
        if self.eval_trajectories is not None and self.eval_trajectories < 1:
            raise ValueError(f"eval_trajectories must be >= 1 or None, got {self.eval_trajectories}")
        if not self.later_rounds_lr_scale > 0:
            raise ValueError(f"later_rounds_lr_scale must be > 0, got {self.later_rounds_lr_scale}")


@struct.dataclass
class HParams:
    """Traced hyperparameters (scalars; a leading run axis under a sweep)."""

    inner_lr: Array
    outer_lr: Array
    experience_weight: Array

    @classmethod
    def create(cls, inner_lr: float = 0.1, outer_lr: float = 3e-3, experience_weight: float = 0.1) -> HParams:
        cls.check(inner_lr, outer_lr, experience_weight)
        return cls(*(jnp.asarray(v, jnp.float32) for v in (inner_lr, outer_lr, experience_weight)))

    @staticmethod
    def check(inner_lr: float, outer_lr: float, experience_weight: float) -> None:
        """Raises a one-line ValueError unless inner_lr > 0, outer_lr > 0 and experience_weight >= 0 (on the host:
        a config's validation makes no array, so it never initialises a JAX backend)."""
        if not (inner_lr > 0 and outer_lr > 0 and experience_weight >= 0):
            raise ValueError(
                f"HParams need inner_lr > 0, outer_lr > 0 and experience_weight >= 0, "
                f"got {inner_lr}, {outer_lr}, {experience_weight}"
            )

    def adapter_weight(self, mode: str) -> Array:
        """The test-time adapter's experience weight in `mode` (static): 0 for `standard`, `experience_weight` for
        `hybrid` (the hybrid adapter at weight 0 is exactly the standard one)."""
        if mode not in ADAPTATION_MODES:
            raise ValueError(f"unknown adaptation mode {mode!r}; expected one of {', '.join(ADAPTATION_MODES)}")
        return self.experience_weight if mode == "hybrid" else jnp.zeros_like(self.experience_weight)


@struct.dataclass
class TrainState:
    """Everything a checkpoint needs: the MAML state (params, inner lr, optimizer state), the observation
    statistics, the experience buffer, the iteration and the hyperparameters; and, static, which program trains
    it."""

    meta: MetaState
    obs_stats: RunningMeanStd
    buffer: BufferState
    iteration: Array
    hparams: HParams
    meta_learning: bool = struct.field(pytree_node=False, default=True)
    """True: MAML; False: the pretrained baseline. Static: the two are different programs."""


class TrainerProtocol(Protocol):
    """What every trainer provides (the meta-RL one of `ssm_jax.train`, the world-model one of
    `ssm_jax.train_world_model`, the in-context one of `ssm_jax.train_in_context`): pure functions of a state pytree
    that holds everything a run needs (params, optimizer, statistics, buffer, data, hparams), which
    `sweep.make_programs` vmaps over runs and `runs` drives.

    - `init(key, hparams, adapt=True) -> state` (`adapt=False`: the pretrained baseline's state, where the program
      has one);
    - `train(state, key, num_iterations) -> (state, metrics {name: [num_iterations]})`, `num_iterations` static;
    - `evaluate(state, key, tasks, mode="standard") -> (scores [E, ...], extras)`, `mode` static (`hybrid` reads
      `state.hparams.experience_weight`): scores after 0..K adaptation steps, or in episodes 1..K for in-context
      adaptation;
    - `oracle(state, key, tasks, iterations) -> per-task results` (a model trained on each task alone), where the
      program has one (the in-context trainer has none).
    """

    init: Callable[..., Any]
    train: Callable[..., tuple[Any, dict]]
    evaluate: Callable[..., tuple[Array, Any]]
