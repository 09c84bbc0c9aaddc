"""Adaptation while acting, for a meta-RL policy: one episode per task in which the policy adapts every few steps on
its most recent transitions (`adapt.online`), optionally on a task that changes mid-episode.

    episode = make_online_rl_episode(meta_rl, env, policy, AdapterConfig(...), rl_config, horizon, window, every)
    ret, extras = episode(key, task, params, buffer_state, weight, obs_stats, learning_rate)
    returns, extras = online_returns(episode, meta_rl, key, tasks, params, buffer_state, weight, obs_stats, lr)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssm_jax.adapt.adapter import AdapterConfig, make_adapter, replayed_sources
from ssm_jax.adapt.online import make_online_adaptation
from ssm_jax.adapt.rl import check_task_loss, task_replay_loss
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize
from ssm_jax.meta.policy_losses import RLConfig, mean_episode_return, prepare_batch
from ssm_jax.meta.rl import MetaRL
from ssm_jax.models.heads import HeadedModel
from ssm_jax.rollout import Trajectory, action_log_prob, sample_action
from ssm_jax.types import Array, Params, PRNGKey, PyTree, tree_where


def make_online_rl_episode(
    meta_rl: MetaRL,
    env: TaskEnv,
    policy: HeadedModel,
    adapter_config: AdapterConfig,
    rl_config: RLConfig,
    horizon: int,
    window: int,
    every: int,
    replay: str = "meta",
    task_loss: str = "clipped_pg",
    switch_at: int | None = None,
    later_updates_lr_scale: float = 1.0,
):
    """Builds `episode(key, task, params, buffer_state, weight, obs_stats, learning_rate)`: one episode of `horizon`
    steps in which the policy adapts while it acts. Every `every` steps, once `window` transitions have been seen,
    the online adapter (`adapt.online`) takes one adapter step on the policy-gradient batch of the last `window`
    transitions (advantages from that window alone); the next actions come from the updated params, with the
    policy's carry kept. Updates after the first take `learning_rate x later_updates_lr_scale` (the rule of
    `make_rl_adaptation`'s later rounds). The hybrid term (`weight`; 0 is the standard step) replays `replay`'s
    sources: `meta`, the meta-training buffer; `task`, a task buffer of every window adapted on so far in this
    episode (empty at its start), scored by `task_loss` (`TASK_REPLAY_LOSSES`) with each window's own behaviour
    log-probabilities.

    With `switch_at`, `task` is a pair `(first, second)` and the env plays `second` from step `switch_at` on (the
    goal or the dynamics change mid-episode; the agent is not told).

    Returns `(return, extras)`: the episode's undiscounted return (its first episode, should the env end it early),
    and `extras["adaptations"]`, the updates taken; with `switch_at` also `extras["after_switch"]` (the reward
    summed over steps `switch_at ..`, across any restarts), and `extras["params_at_switch"]` and
    `extras["final_params"]`, to measure what the agent kept of the first task.
    """
    if window > horizon:
        raise ValueError(f"window={window} must not exceed horizon={horizon}")
    if switch_at is not None and not 0 < switch_at < horizon:
        raise ValueError(f"switch_at={switch_at} must be inside the episode (0, {horizon})")
    if not later_updates_lr_scale > 0:
        raise ValueError(f"later_updates_lr_scale must be > 0, got {later_updates_lr_scale}")
    sources = replayed_sources(replay)
    check_task_loss(task_loss)

    def window_trajectory(items) -> Trajectory:
        """Windows of transitions `[B, window, ...]` as a time-major trajectory `[window, B]` whose replay starts
        the carry afresh."""
        column = {k: jnp.swapaxes(v, 0, 1) for k, v in items.items()}
        column["resets"] = column["resets"].at[0].set(True)
        num = column["reward"].shape[1]
        return Trajectory(**column, initial_carry=policy.initial_carry((num,)), metrics={})

    def episode(key, task, params, buffer_state, weight, obs_stats, learning_rate):
        one_window = lambda items: jax.tree.map(lambda x: x[None], items)
        window_batch = lambda items: prepare_batch(window_trajectory(items), rl_config, obs_stats)
        replay_loss = task_replay_loss(meta_rl, task_loss, anchor=params)
        adapter = make_adapter(
            "hybrid",
            lambda p, items: meta_rl.inner_loss(p, window_batch(one_window(items))),
            adapter_config,
            experience_loss_fn=meta_rl.bc_loss,
            task_loss_fn=lambda p, windows: replay_loss(p, window_batch(windows)),
        )
        task_capacity = horizon // every + 1 if "task" in sources else None
        online = make_online_adaptation(adapter, window, every, task_capacity)
        meta_buffer = buffer_state if "meta" in sources else None
        first_task, second_task = task if switch_at is not None else (task, task)
        reset_key, steps_key = jax.random.split(key)
        obs, env_state = env.reset(reset_key, first_task)
        example = {
            "obs": obs, "action": jnp.zeros(env.action_size), "reward": jnp.zeros(()), "done": jnp.zeros((), bool),
            "terminated": jnp.zeros((), bool), "truncated": jnp.zeros((), bool), "log_prob": jnp.zeros(()),
            "next_obs": obs, "resets": jnp.zeros((), bool),
        }  # fmt: skip
        state = online.init(params, example)
        first_lr = jax.tree.map(lambda lr: jnp.asarray(lr, jnp.float32), learning_rate)
        state = state.replace(adapt_state=state.adapt_state.replaying(weight, sources).replace(learning_rate=first_lr))

        def step(carry, inputs):
            state, env_state, obs, policy_carry, reset, params_at_switch = carry
            step_key, t = inputs
            current = first_task if switch_at is None else tree_where(t >= switch_at, second_task, first_task)
            action_key, env_key, adapt_key = jax.random.split(step_key, 3)
            policy_carry, out = policy.step(state.params, policy_carry, normalize(obs_stats, obs), reset)
            action = sample_action(action_key, out["pi"])
            next_obs, env_state, reward, done, info = env.step(env_key, env_state, action, current)
            item = {
                "obs": obs, "action": action, "reward": reward, "done": done, "terminated": info["terminated"],
                "truncated": info["truncated"], "log_prob": action_log_prob(out["pi"], action),
                "next_obs": info["final_obs"], "resets": reset,
            }  # fmt: skip
            if switch_at is not None:
                params_at_switch = tree_where(t == switch_at, state.params, params_at_switch)
            state, metrics = online.step(state, item, meta_buffer, adapt_key)
            scale = jnp.where(state.adapt_state.step > 0, later_updates_lr_scale, 1.0)
            later_lr = jax.tree.map(lambda lr: lr * scale, first_lr)
            state = state.replace(adapt_state=state.adapt_state.replace(learning_rate=later_lr))
            return (state, env_state, next_obs, policy_carry, done, params_at_switch), (
                reward,
                done,
                metrics["adapted"],
            )

        first = (state, env_state, obs, policy.initial_carry(()), jnp.ones((), bool), params)
        inputs = (jax.random.split(steps_key, horizon), jnp.arange(horizon))
        last, (rewards, dones, adapted) = jax.lax.scan(step, first, inputs)
        before_first_end = (jnp.cumsum(dones) - dones) == 0
        extras = {"adaptations": jnp.sum(adapted)}
        if switch_at is not None:
            extras["after_switch"] = jnp.sum(rewards[switch_at:])
            extras["params_at_switch"], extras["final_params"] = last[5], last[0].params
        return jnp.sum(jnp.where(before_first_end, rewards, 0.0)), extras

    return episode


def online_returns(
    episode,
    meta_rl: MetaRL,
    key: PRNGKey,
    tasks: Any,
    params: Params,
    buffer_state: Any,
    weight: Array,
    obs_stats: RunningMeanStd,
    learning_rate: PyTree,
    switch_to: Any = None,
) -> tuple[Array, dict]:
    """`episode` (`make_online_rl_episode`'s) on each of `tasks` (leading axis E), each with its own key: `(returns
    [E], extras)`, `extras["adaptations"] [E]`. With `switch_to` (tasks `[E]`; the episode built with `switch_at`)
    each task changes to its `switch_to` task mid-episode, and `extras` add `after_switch` (the return after the
    switch) and `first_task_at_switch` / `first_task_at_end`: the mean return on the first task of fresh frozen
    episodes (`meta_rl`'s trajectory count, one key for both: paired) with the params the agent had at the switch
    and at the end (their difference: what it forgot)."""

    def one(k, task, second):
        run = lambda k, task: episode(k, task, params, buffer_state, weight, obs_stats, learning_rate)
        if second is None:
            return run(k, task)
        episode_key, first_task_key = jax.random.split(k)
        ret, extras = run(episode_key, (task, second))
        first_task_return = lambda p: mean_episode_return(
            meta_rl.sample_trajectories(first_task_key, task, p, obs_stats)
        )
        return ret, {
            "adaptations": extras["adaptations"],
            "after_switch": extras["after_switch"],
            "first_task_at_switch": first_task_return(extras["params_at_switch"]),
            "first_task_at_end": first_task_return(extras["final_params"]),
        }

    keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
    return jax.vmap(one)(keys, tasks, switch_to)
