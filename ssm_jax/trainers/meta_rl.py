"""The meta-RL training program that every entry point calls: pure `init / train / evaluate / oracle`.

    trainer = make_meta_rl_trainer(env, policy, TrainerConfig(tasks_per_batch=20, ...))
    hparams = HParams.create(inner_lr=0.1, outer_lr=3e-3, experience_weight=0.1)
    state = trainer.init(key, hparams)                    # MAML; adapt=False gives the pretrained baseline
    state, metrics = trainer.train(state, key, 10)        # 10 meta-iterations in one lax.scan (jit it)
    returns, extras = trainer.evaluate(state, key, tasks, "hybrid")  # [E, adapt_rounds + 1], held-out tasks

`TrainerConfig` is static (changing one recompiles), as is `EvalConfig` (the evaluation protocol); `HParams` are
traced (a sweep is a `jax.vmap` over states); `TrainState` is everything a checkpoint needs.

Each meta-iteration draws `tasks_per_batch` tasks, runs MAML-RL's meta-update (`meta.rl.make_maml_rl`) and writes
the adapted policy's query windows to the buffer (the pretrained baseline: windows of all it sampled; meta-training
is the only writer, evaluation freezes it).

The pretrained baseline is `init(key, hparams, adapt=False)`: a state whose `train` runs `meta.rl`'s
`pretrain_update` instead (the same outer step on every trajectory of MAML's env budget, no inner step). The oracle
trains a policy per task with that update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ssm_jax.adapt import AdapterConfig
from ssm_jax.adapt.adapter import Adapter
from ssm_jax.adapt.online_rl import make_online_rl_episode, online_returns
from ssm_jax.adapt.rl import make_policy_adapter, make_rl_adaptation
from ssm_jax.buffer import BufferState, experience_windows, freeze, make_experience_buffer
from ssm_jax.config.io import register_config
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize
from ssm_jax.meta.maml import MAMLConfig, MetaState, with_outer_lr
from ssm_jax.meta.policy_losses import INNER_OBJECTIVES, RLConfig
from ssm_jax.meta.rl import MetaRL, make_maml_rl, train_per_task
from ssm_jax.meta.trust_region import TrustRegionConfig
from ssm_jax.models.heads import HeadedModel
from ssm_jax.trainers.protocol import (
    MATMUL_PRECISIONS,
    EvalConfig,
    HParams,
    Trainer,
    at_precision,
    check_choices,
    check_positive,
)
from ssm_jax.types import Array, PRNGKey

OUTER_OPTIMIZERS = ("ppo", "trpo")


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
        check_positive(self, "tasks_per_batch", "trajectories_per_task", "horizon", "inner_steps", "outer_epochs",
                       "cg_iters", "window", "buffer_size", "experience_batch_size")  # fmt: skip
        check_choices(
            self,
            inner_objective=INNER_OBJECTIVES,
            outer_optimizer=OUTER_OPTIMIZERS,
            matmul_precision=MATMUL_PRECISIONS,
        )
        if self.window > self.horizon:
            raise ValueError(f"TrainerConfig.window={self.window} must not exceed horizon={self.horizon}")
        if self.outer_optimizer == "trpo" and self.learn_inner_lr:
            raise ValueError("TrainerConfig: the trpo outer step does not learn inner rates (learn_inner_lr needs ppo)")
        if not self.max_kl > 0:
            raise ValueError(f"TrainerConfig.max_kl must be > 0, got {self.max_kl}")

    @property
    def env_steps_per_iteration(self) -> int:
        """Env steps one meta-iteration samples, MAML's or the pretrained baseline's alike: `inner_steps + 1`
        rounds of `trajectories_per_task` trajectories of `horizon` steps for each of `tasks_per_batch` tasks."""
        return self.tasks_per_batch * (self.inner_steps + 1) * self.trajectories_per_task * self.horizon


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


class MetaRLParts(NamedTuple):
    """The meta-RL `Trainer`'s own parts: the evaluation protocol, the env and policy, MAML-RL's functions, and the
    test-time adapter `evaluate` uses (hybrid; experience weight 0 makes it the standard one), for interactive use
    (`ssm_jax.agent`) with `adaptation_lr(state)` and `rl_config`."""

    evaluation: EvalConfig
    env: TaskEnv
    policy: HeadedModel
    rl_config: RLConfig
    meta_rl: MetaRL
    adapter: Adapter


DEFAULT_EVALUATION = EvalConfig()


def _learns_inner_lr(state: TrainState) -> bool:
    """Meta-SGD states carry a params-shaped tree of inner rates; the others a scalar."""
    return not jax.tree_util.treedef_is_leaf(jax.tree.structure(state.meta.inner_lr))


def adaptation_lr(state: TrainState) -> Any:
    """The inner rate test-time adaptation uses: the learned per-parameter rates under Meta-SGD, else the
    hyperparameter (the pretrained baseline's own rate is 0)."""
    return state.meta.inner_lr if _learns_inner_lr(state) else state.hparams.inner_lr


def make_meta_rl_trainer(
    env: TaskEnv,
    policy: HeadedModel,
    config: TrainerConfig,
    evaluation: EvalConfig = DEFAULT_EVALUATION,
    task_sharding: jax.sharding.Sharding | None = None,
) -> Trainer:
    """Builds the `Trainer` of MAML-RL on `env` with `policy`, evaluating by the protocol `evaluation`. `evaluate`'s
    extras hold the env's per-step metrics
    (`Trajectory.metrics`, e.g. `task_metric`) averaged over each round. `task_sharding` (e.g.
    `distributed.task_sharding(mesh)`) splits each meta-iteration's tasks over devices; None leaves placement to
    jit."""
    rl_config = RLConfig(inner_objective=config.inner_objective)
    buf = make_experience_buffer(config.buffer_size)
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)  # the rate comes from `HParams`

    maml_config = MAMLConfig(
        num_inner_steps=config.inner_steps, first_order=config.first_order, learn_inner_lr=config.learn_inner_lr,
        inner_grad_clip=config.inner_grad_clip,
    )  # fmt: skip
    trust_region = TrustRegionConfig(config.max_kl, config.cg_iters) if config.outer_optimizer == "trpo" else None
    build = lambda num_envs: make_maml_rl(
        env, policy, maml_config, rl_config, num_envs, config.horizon, config.outer_epochs, trust_region,
        config.normalize_observations,
    )  # fmt: skip
    meta_rl = build(config.trajectories_per_task)
    eval_rl = build(evaluation.eval_trajectories or config.trajectories_per_task)
    adapter_config = AdapterConfig(
        num_steps=evaluation.steps_per_round,
        optimizer="sgd",
        grad_clip_norm=config.inner_grad_clip,  # the same (optionally clipped) SGD step as the inner loop
        experience_batch_size=config.experience_batch_size,
    )
    adapter = make_policy_adapter(eval_rl, adapter_config)
    curve = make_rl_adaptation(
        eval_rl,
        adapter_config,
        rl_config,
        evaluation.adapt_rounds,
        later_rounds_lr_scale=evaluation.later_rounds_lr_scale,
        replay=evaluation.replay,
        task_loss=evaluation.task_replay_loss,
    )

    def init(key: PRNGKey, hparams: HParams, adapt: bool = True) -> TrainState:
        """The state before training. The same key gives the same initial params and statistics whatever `adapt`,
        so MAML, the pretrained baseline and random init start from one policy."""
        params_key, task_key, stats_key = jax.random.split(key, 3)
        params = policy.init(params_key, jnp.zeros((1, env.observation_size)))
        tasks = env.sample_tasks(task_key, config.tasks_per_batch)
        obs_stats = meta_rl.initial_obs_stats(stats_key, tasks, params)
        if adapt:
            meta = meta_rl.init(params, optimizer)
            meta = meta.replace(inner_lr=jax.tree.map(lambda x: jnp.full_like(x, hparams.inner_lr), meta.inner_lr))
        else:
            meta = meta_rl.init_pretrain(params, optimizer)
        meta = with_outer_lr(meta, hparams.outer_lr)
        example = (jnp.zeros((config.window, env.observation_size)), jnp.zeros((config.window, env.action_size)))
        state = TrainState(meta, obs_stats, buf.init(example), jnp.zeros((), jnp.int32), hparams, adapt)
        return jax.tree.map(jnp.array, state)  # every leaf its own buffer: training donates the state

    def train(state: TrainState, key: PRNGKey, num_iterations: int) -> tuple[TrainState, dict]:
        """`num_iterations` (static) meta-iterations in one `lax.scan` (MAML's, or the pretrained baseline's for a
        state made with `adapt=False`); metrics stacked `[num_iterations]`."""
        update = meta_rl.meta_update if state.meta_learning else meta_rl.pretrain_update

        def iteration(state: TrainState, k: PRNGKey):
            task_key, update_key = jax.random.split(k)
            tasks = env.sample_tasks(task_key, config.tasks_per_batch)
            if task_sharding is not None:
                tasks = jax.lax.with_sharding_constraint(tasks, task_sharding)
            meta = with_outer_lr(state.meta, state.hparams.outer_lr)  # a sweep may have replaced the hparams
            meta, obs_stats, metrics, sampled = update(meta, state.obs_stats, update_key, tasks)
            policy_obs = normalize(state.obs_stats, sampled.obs)  # the statistics the policy sampled them through
            items, valid = experience_windows(policy_obs, sampled.action, sampled.done, config.window)
            buffer = buf.add(state.buffer, items, valid)
            return state.replace(meta=meta, obs_stats=obs_stats, buffer=buffer, iteration=state.iteration + 1), metrics

        return jax.lax.scan(iteration, state, jax.random.split(key, num_iterations))

    def evaluate(state: TrainState, key: PRNGKey, tasks: Any, mode: str = "standard"):
        """Adaptation curves on `tasks` (leading axis E): `(returns [E, adapt_rounds + 1], extras)`, each task with
        its own key. `mode` (static): `standard`, or `hybrid` with the state's `hparams.experience_weight` on the
        sources `evaluation.replay` names (so a sweep over the weight sweeps the hybrid curve). Observation
        statistics are frozen, the meta-training buffer is read-only, and each task's buffer starts empty. The inner
        rate is the state's (learned under Meta-SGD; the hyperparameter for the pretrained baseline, whose own is
        0)."""
        weight = state.hparams.adapter_weight(mode)
        learning_rate = adaptation_lr(state)
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        one = lambda k, task: curve(
            k, task, state.meta.params, freeze(state.buffer), weight, state.obs_stats, learning_rate
        )
        return jax.vmap(one)(keys, tasks)

    def oracle(state: TrainState, key: PRNGKey, tasks: Any, iterations: int) -> Array:
        """Per-task training from `state`'s params and statistics (`meta.rl.train_per_task`): `[E, iterations]`."""
        adam = optax.adam(state.hparams.outer_lr)
        return train_per_task(meta_rl, state.meta.params, state.obs_stats, adam, key, tasks, iterations)

    def evaluate_online(
        state: TrainState,
        key: PRNGKey,
        tasks: Any,
        mode: str,
        window: int,
        every: int,
        switch_to: Any = None,
        lr_scale: float = 1.0,
    ) -> tuple[Array, dict]:
        """One episode per task (leading axis E, each with its own key) that adapts while it acts: every `every`
        steps (static) one adapter step on the last `window` (static) transitions (`adapt.online_rl`;
        `mode` and the replayed sources as in `evaluate`; updates after the first at `later_rounds_lr_scale` x the
        rate, as later rounds). `every > horizon` never adapts: the same episodes, frozen.
        With `switch_to` (tasks `[E]`), each task changes to its `switch_to` task at half the horizon. `lr_scale`
        multiplies the adaptation rate (the hyperparameter, or Meta-SGD's learned rates).

        Returns `(returns [E], extras)` as `adapt.online_rl.online_returns`."""
        switch_at = None if switch_to is None else config.horizon // 2
        episode = make_online_rl_episode(
            eval_rl, env, policy, adapter_config, rl_config, config.horizon, window, every,
            evaluation.replay, evaluation.task_replay_loss, switch_at, evaluation.later_rounds_lr_scale,
        )  # fmt: skip
        learning_rate = jax.tree.map(lambda lr: lr * lr_scale, adaptation_lr(state))
        return online_returns(
            episode, eval_rl, key, tasks, state.meta.params, freeze(state.buffer), state.hparams.adapter_weight(mode),
            state.obs_stats, learning_rate, switch_to,
        )  # fmt: skip

    functions = (init, train, evaluate, oracle, evaluate_online)
    programs = (at_precision(fn, config.matmul_precision) for fn in functions)
    return Trainer(config, *programs, MetaRLParts(evaluation, env, policy, rl_config, meta_rl, adapter))
