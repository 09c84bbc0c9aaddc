"""The MAML-RL meta-step and its fair pretrained baseline, for sequence policies (estimators in
`meta.estimators`, losses in `meta.policy_losses`).

Observations reach the policy standardised by a `RunningMeanStd` (`obs_stats`): sampling and every loss replay
apply the same frozen statistics, and each update merges the raw observations it sampled into them afterwards.

`make_maml_rl` builds the meta-step on the MAML core: per task (vmapped), for each of the K inner steps it samples
support trajectories with the current fast params and takes one inner PG/LVC step (differentiable), then samples
query trajectories with the adapted policy and takes `outer_epochs` optimizer steps on the PPO surrogate of the
adapted policy, differentiated through the inner steps (second order unless `first_order`); with a
`TrustRegionConfig` it instead takes one TRPO step (`meta.trust_region`) on the likelihood-ratio surrogate under a
bound on the adapted policies' KL on the query, as MAML-RL does. It measures its inner step once per iteration,
outside the outer epochs: KL(pre ‖ post) on the support, the inner gradient norm and the fraction of clipped steps.

The pretrained baseline (`pretrain_update`, Finn et al.'s "pretrained on all tasks") samples as many trajectories
per task as MAML's K + 1 rounds, all with the current policy, and takes the same outer step (PPO epochs or TRPO) on
every one of them, with no inner step and so no second-order cost.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, update_stats
from ssm_jax.meta.maml import MAML, MAMLConfig, MetaState, make_maml
from ssm_jax.meta.policy_losses import (
    PolicyBatch,
    RLConfig,
    distribution_kl,
    make_policy_losses,
    mean_episode_return,
    policy_kl,
    policy_outputs,
    prepare_batch,
    surrogate_objective,
)
from ssm_jax.meta.trust_region import TrustRegionConfig, trust_region_step
from ssm_jax.models.heads import HeadedModel
from ssm_jax.rollout import Trajectory, action_log_prob, rollout
from ssm_jax.types import Array, Params, PRNGKey


class MetaRL(NamedTuple):
    maml: MAML
    sample_trajectories: Callable[[PRNGKey, Any, Params, RunningMeanStd], Trajectory]
    initial_obs_stats: Callable
    meta_update: Callable
    pretrain_update: Callable
    outer_update: Callable
    inner_step_kl: Callable
    init: Callable
    init_pretrain: Callable
    inner_loss: Callable
    outer_loss: Callable
    bc_loss: Callable
    policy_kl: Callable


def make_maml_rl(
    env: TaskEnv,
    policy: HeadedModel,
    maml_config: MAMLConfig,
    rl_config: RLConfig,
    num_envs: int,
    horizon: int,
    outer_epochs: int = 1,
    trust_region: TrustRegionConfig | None = None,
    normalize_observations: bool = True,
) -> MetaRL:
    """MAML-RL on `env` with `policy`: `num_envs` trajectories of `horizon` steps per task and sampling round. The
    outer step is `outer_epochs` optimizer steps on the PPO surrogate, or with `trust_region` one TRPO step. With
    `normalize_observations=False` the statistics stay the identity (mean 0, variance 1): the policy sees raw
    observations, as MAML-RL's does.

    - `initial_obs_stats(key, tasks, params) -> RunningMeanStd`: statistics of one round of rollouts of `params`
      on raw observations (tasks with a leading axis), to start training from.
    - `meta_update(state, obs_stats, key, tasks) -> (state, obs_stats, metrics, query_trajectories)`: one
      meta-iteration over a batch of tasks (leading axis `[E]`; query leaves `[E, T, N, ...]`). Sampling and losses
      use `obs_stats`; the returned statistics include this iteration's raw observations. Metrics include the pre-
      and post-adaptation mean episode return, `inner_kl` (KL(pre ‖ post) on the first support batch, nats),
      `inner_grad_norm` (first inner step, before clipping) and `inner_clip_fraction`.
    - `pretrain_update(state, obs_stats, key, tasks) -> (state, obs_stats, metrics, trajectories)`: the
      pretrained baseline's iteration (state from `init_pretrain`): `(K + 1) * num_envs` trajectories per task with
      the current policy (MAML's env budget; leaves `[E, T, (K + 1) * num_envs, ...]`) and the outer step on all of
      them. The oracle (`train_per_task`) runs it per task.

    Both report `env_steps`, the env steps the update sampled. Their phases, for profiling
    (`benchmarks/meta_iteration.py`): `sample_trajectories(key, task, params, obs_stats)`, `maml.inner_step`,
    `outer_update(state, support, query) -> (state, metrics)` (MAML's outer step on tasks `[E]`) and
    `inner_step_kl(adapted, support_batch)` (the logged inner-step KL, one replay).
    """
    if outer_epochs < 1:
        raise ValueError(f"outer_epochs must be >= 1, got {outer_epochs}")
    if trust_region is not None and maml_config.learn_inner_lr:
        raise ValueError("the TRPO outer step does not learn inner rates; learn_inner_lr needs the PPO outer step")
    losses = make_policy_losses(policy, rl_config)
    inner_loss, ppo_loss, bc_loss = losses.inner, losses.ppo, losses.behaviour_cloning
    maml_config = dataclasses.replace(maml_config, support_per_step=True, loss_diagnostics=False)
    maml = make_maml(inner_loss, maml_config, outer_loss_fn=ppo_loss)
    num_inner_steps = maml_config.num_inner_steps
    rounds = num_inner_steps + 1  # sampling rounds per task and iteration: K supports and a query

    def sample_trajectories(key, task, params, obs_stats, trajectories=num_envs):
        return rollout(key, env, task, policy, jax.lax.stop_gradient(params), trajectories, horizon, obs_stats)

    def merge_stats(obs_stats: RunningMeanStd, obs: Array) -> RunningMeanStd:
        return update_stats(obs_stats, obs) if normalize_observations else obs_stats

    def initial_obs_stats(key: PRNGKey, tasks: Any, params: Params) -> RunningMeanStd:
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        trajs = jax.vmap(sample_trajectories, in_axes=(0, 0, None, None))(keys, tasks, params, None)
        return merge_stats(RunningMeanStd.create(env.observation_size), trajs.obs)

    def env_steps(tasks: Any) -> Array:
        """The env steps one update samples on `tasks`: K + 1 rounds of `num_envs` trajectories per task."""
        return jnp.asarray(jax.tree.leaves(tasks)[0].shape[0] * rounds * num_envs * horizon, jnp.float32)

    def sample_task(key, task, params, inner_lr, obs_stats):
        """K support rounds, each sampled with the current fast params and followed by one inner step, then a query
        round with the adapted params: one scan, so the compiled program holds one rollout (env compiles dominate
        small runs). Returns the support batches `[K, ...]`, the query batch, the trajectories `[K + 1, ...]`,
        the adapted params and the inner gradient norms `[K]`."""

        def round_(fast, inputs):
            round_key, is_support = inputs
            traj = sample_trajectories(round_key, task, fast, obs_stats)
            batch = prepare_batch(traj, rl_config, obs_stats)
            fast, grad_norm = jax.lax.cond(
                is_support,
                lambda: maml.inner_step(fast, batch, inner_lr),
                lambda: (fast, jnp.zeros((), jnp.float32)),
            )
            return fast, (batch, traj, grad_norm)

        is_support = jnp.arange(rounds) < num_inner_steps
        keys = jax.random.split(key, rounds)
        adapted, (batches, trajs, grad_norms) = jax.lax.scan(round_, params, (keys, is_support))
        support = jax.tree.map(lambda x: x[:num_inner_steps], batches)
        query = jax.tree.map(lambda x: x[num_inner_steps], batches)
        return support, query, trajs, adapted, grad_norms[:num_inner_steps]

    def trust_region_update(state: MetaState, distributions: Callable, batches: Any) -> tuple[MetaState, dict]:
        """One TRPO step on the likelihood-ratio surrogate of `distributions(params)` (the action distributions
        that read `batches`, leading task axis), within `max_kl` of the policies that sampled them. The KL's
        Hessian is elementwise in the distributions, so each Fisher-vector product is one linearised pass."""

        def surrogate(pi):
            loss = jax.vmap(lambda p, b: surrogate_objective(p, b, rl_config.entropy_coef)[0])(pi, batches)
            return jnp.mean(loss), {}

        params, metrics = trust_region_step(distributions, surrogate, distribution_kl, state.params, trust_region)
        return state.replace(params=params, step=state.step + 1), metrics

    def maml_outer_update(state: MetaState, support: Any, query: Any) -> tuple[MetaState, dict]:
        """The outer step on tasks `[E]`: PPO epochs through the inner steps, or one TRPO step on the adapted
        policies' query distributions."""
        if trust_region is None:
            update = lambda s, _: maml.update(s, (support, query))
            state, metrics = jax.lax.scan(update, state, None, length=outer_epochs)
            return state, jax.tree.map(lambda m: m[-1], metrics)

        def adapted_policies(params):
            adapted = jax.vmap(maml.adapt, in_axes=(None, 0, None))(params, support, state.inner_lr)
            return jax.vmap(lambda fast, batch: policy_outputs(policy, fast, batch)["pi"])(adapted, query)

        return trust_region_update(state, adapted_policies, query)

    def inner_step_kl(adapted: Params, batch: PolicyBatch) -> Array:
        """KL(pre ‖ post) of the inner step on a support `batch` sampled by the pre-update policy, in nats: the
        estimator `E_pre[r − 1 − log r]` with `r = π_post / π_pre` (non-negative, unbiased), which reads the
        sampled log-probabilities and so replays only the adapted policy."""
        log_ratio = action_log_prob(policy_outputs(policy, adapted, batch)["pi"], batch.action) - batch.old_log_prob
        return jnp.mean(jnp.exp(log_ratio) - 1.0 - log_ratio)

    def meta_update(state: MetaState, obs_stats: RunningMeanStd, key: PRNGKey, tasks: Any):
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        support, query, trajs, adapted, grad_norms = jax.vmap(sample_task, in_axes=(0, 0, None, None, None))(
            keys, tasks, state.params, state.inner_lr, obs_stats
        )
        state, metrics = maml_outer_update(state, support, query)
        first_support = jax.tree.map(lambda x: x[:, 0], support)
        episode_returns = jax.vmap(jax.vmap(mean_episode_return))(trajs)  # [E, K + 1]
        clip = maml_config.inner_grad_clip
        metrics.update(
            pre_adaptation_return=jnp.mean(episode_returns[:, 0]),
            post_adaptation_return=jnp.mean(episode_returns[:, -1]),
            inner_kl=jnp.mean(jax.vmap(inner_step_kl)(adapted, first_support)),
            inner_grad_norm=jnp.mean(grad_norms[:, 0]),
            inner_clip_fraction=jnp.mean(grad_norms > clip) if clip is not None else jnp.zeros(()),
            inner_lr_mean=jnp.mean(jnp.stack([jnp.mean(x) for x in jax.tree.leaves(state.inner_lr)])),
            env_steps=env_steps(tasks),
        )
        query_traj = jax.tree.map(lambda x: x[:, -1], trajs)
        return state, merge_stats(obs_stats, trajs.obs), metrics, query_traj

    def pretrain_update(state: MetaState, obs_stats: RunningMeanStd, key: PRNGKey, tasks: Any):
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        sample = lambda k, task: sample_trajectories(k, task, state.params, obs_stats, rounds * num_envs)
        trajs = jax.vmap(sample)(keys, tasks)
        batches = jax.vmap(lambda t: prepare_batch(t, rl_config, obs_stats))(trajs)
        if trust_region is None:

            def epoch(state, _):
                objective = lambda p: jnp.mean(jax.vmap(lambda b: ppo_loss(p, b)[0])(batches))
                loss, grads = jax.value_and_grad(objective)(state.params)
                updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
                params = optax.apply_updates(state.params, updates)
                state = state.replace(params=params, opt_state=opt_state, step=state.step + 1)
                return state, {"meta_loss": loss, "meta_grad_norm": optax.tree.norm(grads)}

            state, metrics = jax.lax.scan(epoch, state, None, length=outer_epochs)
            metrics = jax.tree.map(lambda m: m[-1], metrics)
        else:
            distributions = lambda p: jax.vmap(lambda b: policy_outputs(policy, p, b)["pi"])(batches)
            state, metrics = trust_region_update(state, distributions, batches)
        mean_return = jnp.mean(jax.vmap(mean_episode_return)(trajs))
        metrics.update(
            pre_adaptation_return=mean_return, post_adaptation_return=mean_return, env_steps=env_steps(tasks)
        )
        return state, merge_stats(obs_stats, trajs.obs), metrics, trajs

    def init_pretrain(params: Params, optimizer: optax.GradientTransformation) -> MetaState:
        """State for `pretrain_update`: a plain optimizer over params, whatever the MAML config, and inner lr 0
        (it takes no inner step)."""
        return MetaState(
            params, jnp.zeros((), jnp.float32), optimizer.init(params), jnp.zeros((), jnp.int32), optimizer
        )

    return MetaRL(
        maml,
        sample_trajectories,
        initial_obs_stats,
        meta_update,
        pretrain_update,
        maml_outer_update,
        inner_step_kl,
        maml.init,
        init_pretrain,
        inner_loss,
        ppo_loss,
        bc_loss,
        functools.partial(policy_kl, policy),
    )


def train_per_task(
    meta_rl: MetaRL,
    params: Params,
    obs_stats: RunningMeanStd,
    optimizer: optax.GradientTransformation,
    key: PRNGKey,
    tasks: Any,
    iterations: int,
) -> Array:
    """The oracle baseline: a separate copy of `params` (and of `obs_stats`) trained with `pretrain_update` on each
    task (leading axis E).

    Returns the mean episode return of each task's trajectories at every iteration, `[E, iterations]`; column `i`
    is sampled with the params after `i` updates, so the last column measures the policy one update short of the
    end (that keeps a second rollout out of the compiled program).
    """

    def train(key, task):
        one_task = jax.tree.map(lambda x: x[None], task)

        def body(carry, k):
            state, stats = carry
            state, stats, metrics, _ = meta_rl.pretrain_update(state, stats, k, one_task)
            return (state, stats), metrics["post_adaptation_return"]

        carry = (meta_rl.init_pretrain(params, optimizer), obs_stats)
        _, returns = jax.lax.scan(body, carry, jax.random.split(key, iterations))
        return returns

    return jax.vmap(train)(jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0]), tasks)
