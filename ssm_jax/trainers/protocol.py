"""The one protocol every training program satisfies, and what all of them share.

    trainer = make_meta_rl_trainer(env, policy, TrainerConfig())    # or make_in_context_trainer, ...
    state = trainer.init(key, HParams.create(), adapt=True)         # adapt=False: the pretrained baseline
    state, metrics = trainer.train(state, key, 10)                  # 10 iterations in one lax.scan (jit it)
    scores, extras = trainer.evaluate(state, key, tasks, "standard")

Every `make_*_trainer` of `ssm_jax.trainers` returns a `Trainer`: the same fields for every program, `None` where a
program has no such function (the in-context trainer has no oracle; only the meta-RL one adapts online), and the
program's own parts (env, policy, losses) in `parts`. Every state holds `iteration` and `hparams`. Static choices
live in each trainer's frozen config (changing one recompiles); the traced `HParams` live in the state, so a sweep
is a `jax.vmap` over states, not a recompile (rejax's split). `EvalConfig` is the evaluation protocol of the
programs that adapt on held-out tasks by sampling (meta-RL, in-context).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.adapt.adapter import ADAPTATION_MODES, REPLAY_CHOICES
from ssm_jax.adapt.rl import TASK_REPLAY_LOSSES
from ssm_jax.config.io import register_config
from ssm_jax.types import Array

MATMUL_PRECISIONS = (None, "default", "high", "highest", "bfloat16", "tensorfloat32", "float32")


@register_config
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The evaluation protocol on held-out tasks: `eval_tasks` tasks per seed, each adapted for `adapt_rounds`
    rounds (K; each samples `eval_trajectories` trajectories with the current policy, then takes one gradient step
    at the inner rate, scaled by `later_rounds_lr_scale` after the first). Static: changing one recompiles
    `evaluate`, never `train`."""

    ADDED_FIELDS: ClassVar[dict] = {
        "steps_per_round": 1, "replay": "meta", "task_replay_loss": "clipped_pg", "step_size_grid": {"__tuple__": []},
        "later_rounds_lr_grid": {"__tuple__": []},
    }  # fmt: skip
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

    step_size_grid: tuple[float, ...] = ()
    """Multiples of the inner rate each method that adapts by gradient steps (MAML, pretrained, random init) tries
    on validation tasks before the held-out ones; each is scored on the held-out tasks at its best
    (`sweep.at_best_step_size`). Empty: every method at the inner rate."""
    later_rounds_lr_grid: tuple[float, ...] = ()
    """With `step_size_grid`, the values of `later_rounds_lr_scale` tried with each multiple (empty: the config's
    own); each method is scored at its best pair."""

    def __post_init__(self):
        for name in ("step_size_grid", "later_rounds_lr_grid"):
            if not all(0 < scale < float("inf") for scale in getattr(self, name)):
                raise ValueError(f"{name} must hold positive finite multiples, got {getattr(self, name)}")
        if self.later_rounds_lr_grid and not self.step_size_grid:
            raise ValueError("later_rounds_lr_grid is tried with each multiple of step_size_grid: set that too")
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


class Trainer(NamedTuple):
    """The one shape of every training program: pure functions of a state pytree that holds all a run needs
    (params, optimizer state, statistics, buffer, data, `iteration`, `hparams`), which `sweep.make_programs` vmaps
    over runs and `runs.train_phase` drives.

    - `init(key, hparams, adapt=True) -> state`; `adapt=False` asks for the pretrained baseline's state (one policy
      trained on all tasks, adapted at test time with the same steps), or raises a one-line ValueError where the
      program has none;
    - `train(state, key, num_iterations) -> (state, metrics {name: [num_iterations]})`, `num_iterations` static;
    - `evaluate(state, key, tasks, mode="standard") -> (scores [E, ...], extras)`, `mode` static (`hybrid` reads
      `state.hparams.experience_weight`): scores after 0..K adaptation steps, or in episodes 1..K in context;
    - `oracle(state, key, tasks, iterations) -> per-task results` (a model trained on each task alone), or None;
    - `evaluate_online(state, key, tasks, mode, window, every, ...)`: adaptation while acting, or None;
    - `config`: the program's static config; `parts`: what only this program has (a NamedTuple), for the Agent,
      tests and plots.
    """

    config: Any
    init: Callable[..., Any]
    train: Callable[..., tuple[Any, dict]]
    evaluate: Callable[..., tuple[Array, Any]]
    oracle: Callable[..., Any] | None
    evaluate_online: Callable[..., tuple[Array, dict]] | None
    parts: Any


def at_precision(fn: Callable | None, precision: str | None) -> Callable | None:
    """`fn` tracing its matmuls at `precision` (`jax.default_matmul_precision`; read when the program is traced)."""
    if fn is None or precision is None:
        return fn

    @functools.wraps(fn)
    def traced_at_precision(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)

    return traced_at_precision


def check_positive(config: Any, *names: str) -> None:
    """Raises a one-line ValueError unless each field `names` of `config` is an int >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive int, got {value!r}")


def check_choices(config: Any, **choices: tuple) -> None:
    """Raises a one-line ValueError unless each field `name` of `config` is one of `choices[name]`."""
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"{type(config).__name__}.{name} must be one of {allowed}, got {getattr(config, name)!r}")
