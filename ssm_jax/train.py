"""The meta-RL training program that every entry point calls: pure `init / train / evaluate / oracle`.

    trainer = make_meta_rl_trainer(env, policy, TrainerConfig(tasks_per_batch=20, ...))
    hparams = HParams.create(inner_lr=0.1, outer_lr=3e-3, experience_weight=0.1)
    state = trainer.init(key, hparams)                    # MAML; adapt=False gives the pretrained baseline
    state, metrics = trainer.train(state, key, 10)        # 10 meta-iterations in one lax.scan (jit it)
    returns, extras = trainer.evaluate(state, key, tasks, "hybrid")  # [E, adapt_rounds + 1], held-out tasks

`TrainerConfig` (static: changing one recompiles), `EvalConfig` (the evaluation protocol, static too), `HParams`
(traced: a sweep is a `jax.vmap` over states) and `TrainState` (everything a checkpoint needs) are defined in
`ssm_jax.train_config` and re-exported here.

Each meta-iteration draws `tasks_per_batch` tasks, runs MAML-RL's meta-update (`meta.rl.make_maml_rl`) and writes
the adapted policy's query windows to the buffer (the pretrained baseline: windows of all it sampled; meta-training
is the only writer, evaluation freezes it).

The pretrained baseline is `init(key, hparams, adapt=False)`: a state whose `train` runs `meta.rl`'s
`pretrain_update` instead (the same outer step on every trajectory of MAML's env budget, no inner step). The oracle
trains a policy per task with that update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ssm_jax.adapt import AdapterConfig
from ssm_jax.adapt.adapter import Adapter
from ssm_jax.adapt.rl import make_online_rl_episode, make_policy_adapter, make_rl_adaptation
from ssm_jax.buffer import experience_windows, freeze, make_experience_buffer
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import normalize
from ssm_jax.meta.maml import MAMLConfig, with_outer_lr
from ssm_jax.meta.policy_losses import RLConfig, mean_episode_return
from ssm_jax.meta.rl import MetaRL, make_maml_rl, train_per_task
from ssm_jax.meta.trust_region import TrustRegionConfig
from ssm_jax.models.heads import HeadedModel
from ssm_jax.train_config import MATMUL_PRECISIONS, EvalConfig, HParams, TrainerConfig, TrainState
from ssm_jax.types import Array, PRNGKey

__all__ = [
    "MATMUL_PRECISIONS",
    "EvalConfig",
    "HParams",
    "TrainState",
    "Trainer",
    "TrainerConfig",
    "adaptation_lr",
    "make_meta_rl_trainer",
]  # fmt: skip


DEFAULT_EVALUATION = EvalConfig()


class Trainer(NamedTuple):
    """The pure training program for one (env, policy, config); see the module docstring. `adapter` is the test-time
    adapter `evaluate` uses (hybrid; experience weight 0 makes it the standard one), for interactive use
    (`ssm_jax.agent`) with `adaptation_lr(state)` and `rl_config`."""

    config: TrainerConfig
    evaluation: EvalConfig
    env: TaskEnv
    policy: HeadedModel
    rl_config: RLConfig
    meta_rl: MetaRL
    adapter: Adapter
    init: Callable[..., TrainState]
    train: Callable[[TrainState, PRNGKey, int], tuple[TrainState, dict]]
    evaluate: Callable[..., tuple[Array, dict]]
    oracle: Callable[[TrainState, PRNGKey, Any, int], Array]
    evaluate_online: Callable[..., tuple[Array, dict]]


def _learns_inner_lr(state: TrainState) -> bool:
    """Meta-SGD states carry a params-shaped tree of inner rates; the others a scalar."""
    return not jax.tree_util.treedef_is_leaf(jax.tree.structure(state.meta.inner_lr))


def adaptation_lr(state: TrainState) -> Any:
    """The inner rate test-time adaptation uses: the learned per-parameter rates under Meta-SGD, else the
    hyperparameter (the pretrained baseline's own rate is 0)."""
    return state.meta.inner_lr if _learns_inner_lr(state) else state.hparams.inner_lr


def at_precision(fn: Callable, precision: str | None) -> Callable:
    """`fn` tracing its matmuls at `precision` (`jax.default_matmul_precision`; read when the program is traced)."""
    if precision is None:
        return fn

    @functools.wraps(fn)
    def traced_at_precision(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)

    return traced_at_precision


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

    def build(learn_inner_lr: bool, num_envs: int) -> MetaRL:
        maml_config = MAMLConfig(
            num_inner_steps=config.inner_steps,
            first_order=config.first_order,
            learn_inner_lr=learn_inner_lr,
            inner_grad_clip=config.inner_grad_clip,
        )
        trust_region = None
        if config.outer_optimizer == "trpo":
            trust_region = TrustRegionConfig(max_kl=config.max_kl, cg_iters=config.cg_iters)
        return make_maml_rl(
            env,
            policy,
            maml_config,
            rl_config,
            num_envs,
            config.horizon,
            config.outer_epochs,
            trust_region,
            config.normalize_observations,
        )

    meta_rl = build(config.learn_inner_lr, config.trajectories_per_task)
    eval_rl = build(config.learn_inner_lr, evaluation.eval_trajectories or config.trajectories_per_task)
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
        steps (static) one adapter step on the last `window` (static) transitions (`adapt.rl.make_online_rl_episode`;
        `mode` and the replayed sources as in `evaluate`; updates after the first at `later_rounds_lr_scale` x the
        rate, as later rounds). `every > horizon` never adapts: the same episodes, frozen.
        With `switch_to` (tasks `[E]`), each task changes to its `switch_to` task at half the horizon. `lr_scale`
        multiplies the adaptation rate (the hyperparameter, or Meta-SGD's learned rates).

        Returns `(returns [E], extras)`: `extras["adaptations"] [E]`; with `switch_to` also `after_switch` (return
        over the second half), and `first_task_at_switch` / `first_task_at_end`, the mean return on the first task
        of fresh frozen episodes (the evaluation's trajectory count) with the params the agent had at the switch
        and at the end (their difference: what it forgot)."""
        switch_at = None if switch_to is None else config.horizon // 2
        episode = make_online_rl_episode(
            eval_rl, env, policy, adapter_config, rl_config, config.horizon, window, every,
            evaluation.replay, evaluation.task_replay_loss, switch_at, evaluation.later_rounds_lr_scale,
        )  # fmt: skip
        weight = state.hparams.adapter_weight(mode)
        learning_rate = jax.tree.map(lambda lr: lr * lr_scale, adaptation_lr(state))

        def one(k, task, second):
            run = lambda k, task: episode(
                k, task, state.meta.params, freeze(state.buffer), weight, state.obs_stats, learning_rate
            )
            if second is None:
                return run(k, task)
            episode_key, first_task_key = jax.random.split(k)
            ret, extras = run(episode_key, (task, second))
            first_task_return = lambda params: mean_episode_return(
                eval_rl.sample_trajectories(first_task_key, task, params, state.obs_stats)
            )  # the same key for both: paired
            return ret, {
                "adaptations": extras["adaptations"],
                "after_switch": extras["after_switch"],
                "first_task_at_switch": first_task_return(extras["params_at_switch"]),
                "first_task_at_end": first_task_return(extras["final_params"]),
            }

        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        return jax.vmap(one)(keys, tasks, switch_to)

    functions = (init, train, evaluate, oracle, evaluate_online)
    programs = (at_precision(fn, config.matmul_precision) for fn in functions)
    return Trainer(config, evaluation, env, policy, rl_config, meta_rl, adapter, *programs)
