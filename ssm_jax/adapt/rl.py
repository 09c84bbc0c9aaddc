"""Test-time adaptation of a meta-RL policy on a new task: sample, adapt, repeat.

    curve = make_rl_adaptation(meta_rl, AdapterConfig(...), rl_config, num_rounds=3, replay="task")
    returns, extras = curve(key, task, params, buffer_state, weight, obs_stats, learning_rate)

Each of `num_rounds` rounds samples `num_envs` trajectories with the current params on the task, then takes one
adapter update (`AdapterConfig.num_steps` gradient steps) on them: `standard` is the policy-gradient loss on those
trajectories; `hybrid` adds `weight x` a term on replayed experience, from the sources `replay` names:

- `meta`: the read-only meta-training buffer, behaviour cloning of (observation window -> action) pairs that the
  meta-trained policy's adapted versions took on *other* tasks;
- `task`: a task buffer of this task's own trajectories, empty when the curve starts and filled with every round's
  batch as it is sampled (before that round's update; nothing crosses tasks, which `jax.vmap` keeps apart). Its term
  is `task_replay_loss`: `clipped_pg`, the PPO-clipped importance-weighted policy gradient on the stored
  trajectories with their behaviour log-probabilities and advantages, or `kl_anchor`, KL(meta-trained ‖ current)
  on the stored states.

Returns the mean episode return before adapting and after each round: `[num_rounds + 1]`. `weight` is traced: 0
gives exactly the standard adapter, so one compiled function evaluates both modes. `obs_stats` (the meta-training
observation statistics) are frozen: sampling and the adapter's loss both standardise with them, and nothing here
updates them. `learning_rate` is a scalar or, for Meta-SGD, the learned params-shaped tree of inner rates; rounds
after the first use it times `later_rounds_lr_scale` (MAML-RL's test script halves it: a policy meta-trained for
one step takes its first step at the meta-trained size, and normalised advantages keep every later step as large
unless the rate shrinks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssm_jax import buffer as buffer_lib
from ssm_jax.adapt.adapter import Adapter, AdapterConfig, make_adapter, replayed_sources
from ssm_jax.adapt.online import make_online_adaptation
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize
from ssm_jax.meta.policy_losses import PolicyBatch, RLConfig, mean_episode_return, prepare_batch
from ssm_jax.meta.rl import MetaRL
from ssm_jax.models.heads import HeadedModel
from ssm_jax.rollout import Trajectory, action_log_prob, sample_action
from ssm_jax.types import Array, Params, PRNGKey, PyTree, tree_where

TASK_REPLAY_LOSSES = ("clipped_pg", "kl_anchor")
"""The RL task-buffer terms: PPO-clipped importance-weighted policy gradient, or KL to the meta-trained policy."""
_TIME_MAJOR = ("obs", "action", "advantage", "old_log_prob", "resets")


def batch_items(batch: PolicyBatch) -> PolicyBatch:
    """A time-major batch `[T, N, ...]` as N task-buffer items `[N, T, ...]` (one per trajectory), and, being its
    own inverse, sampled items `[B, T, ...]` back as a time-major batch `[T, B, ...]`."""
    return batch._replace(**{f: jnp.swapaxes(getattr(batch, f), 0, 1) for f in _TIME_MAJOR})


def check_task_loss(name: str) -> None:
    if name not in TASK_REPLAY_LOSSES:
        raise ValueError(f"unknown task replay loss {name!r}; expected one of {', '.join(TASK_REPLAY_LOSSES)}")


def task_replay_loss(meta_rl: MetaRL, name: str, anchor: Params | None = None):
    """`loss(params, batch) -> (loss, aux)` on replayed time-major `PolicyBatch`es of the current task: `clipped_pg`
    (`meta_rl.outer_loss`, PPO's clipped surrogate against the stored behaviour log-probs) or `kl_anchor`
    (KL(π_anchor ‖ π_params) on the stored states, with `anchor` the meta-trained params)."""
    check_task_loss(name)
    if name == "clipped_pg":
        return meta_rl.outer_loss
    if anchor is None:
        raise ValueError("the kl_anchor task replay loss needs the meta-trained params as its anchor")
    return lambda params, batch: (meta_rl.policy_kl(anchor, params, batch), {})


def make_policy_adapter(
    meta_rl: MetaRL,
    adapter_config: AdapterConfig,
    mode: str = "hybrid",
    task_loss: str = "clipped_pg",
    anchor: Params | None = None,
) -> Adapter:
    """The test-time adapter of a meta-RL policy: `meta_rl`'s inner policy-gradient loss on the current task's
    batch, plus (hybrid) behaviour cloning on (observation window -> action) items replayed from the meta-training
    buffer, and `task_replay_loss(meta_rl, task_loss, anchor)` on task-buffer items (`[B, T, ...]` trajectories)."""
    replay = task_replay_loss(meta_rl, task_loss, anchor)
    return make_adapter(
        mode,
        meta_rl.inner_loss,
        adapter_config,
        experience_loss_fn=meta_rl.bc_loss,
        task_loss_fn=lambda params, items: replay(params, batch_items(items)),
    )


def make_rl_adaptation(
    meta_rl: MetaRL,
    adapter_config: AdapterConfig,
    rl_config: RLConfig,
    num_rounds: int,
    mode: str = "hybrid",
    later_rounds_lr_scale: float = 1.0,
    replay: str = "meta",
    task_loss: str = "clipped_pg",
):
    """Builds `curve(key, task, params, buffer_state, weight, obs_stats, learning_rate)`, returning
    `(returns [K+1], metrics)` for `K = num_rounds`: `metrics[name] [K+1]` is the mean over each round's steps of
    the env's per-step `Trajectory.metrics[name]`. `replay` (`meta`, `task` or `both`) names the hybrid term's
    sources, each at `weight`; `task_loss` the task buffer's term (`TASK_REPLAY_LOSSES`).

    With `mode="standard"` the buffer state may be None and `weight` is ignored.
    """
    if num_rounds < 1 or not later_rounds_lr_scale > 0:
        raise ValueError(
            f"num_rounds must be >= 1 and later_rounds_lr_scale > 0, got {num_rounds}, {later_rounds_lr_scale}"
        )
    sources = replayed_sources(replay) if mode == "hybrid" else ()
    check_task_loss(task_loss)

    def curve(
        key: PRNGKey,
        task: Any,
        params: Params,
        buffer_state: Any,
        weight: Array,
        obs_stats: RunningMeanStd | None,
        learning_rate: PyTree,
    ):
        adapter = make_policy_adapter(meta_rl, adapter_config, mode, task_loss, anchor=params)
        first_lr = jax.tree.map(lambda lr: jnp.asarray(lr, jnp.float32), learning_rate)
        astate = adapter.init(params).replaying(weight, sources).replace(learning_rate=first_lr)
        meta_buffer = buffer_state if "meta" in sources else None

        def round_(carry, inputs):
            astate, params, task_buffer = carry
            round_key, lr_scale = inputs
            sample_key, update_key = jax.random.split(round_key)
            traj = meta_rl.sample_trajectories(sample_key, task, params, obs_stats)
            batch = prepare_batch(traj, rl_config, obs_stats)
            if task_buffer is not None:
                task_buffer = buffer_lib.add(task_buffer, batch_items(batch))
            astate = astate.replace(learning_rate=jax.tree.map(lambda lr: lr * lr_scale, first_lr))
            astate, params, _ = adapter.update(astate, params, batch, meta_buffer, update_key, task_buffer=task_buffer)
            return (astate, params, task_buffer), (mean_episode_return(traj), jax.tree.map(jnp.mean, traj.metrics))

        task_buffer = None
        if "task" in sources:  # every round's trajectories, this task's only: empty at the start
            sampled = lambda: prepare_batch(meta_rl.sample_trajectories(key, task, params, obs_stats), rl_config)
            items = batch_items(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(sampled)))
            num_envs = items.obs.shape[0]
            task_buffer = buffer_lib.init((num_rounds + 1) * num_envs, jax.tree.map(lambda x: x[0], items))
        # K + 1 rounds, the last one's update unused: one rollout in the program instead of two (brax compiles
        # dominate small runs), for one extra adapter update.
        lr_scales = jnp.full((num_rounds + 1,), later_rounds_lr_scale, jnp.float32).at[0].set(1.0)
        rounds = (jax.random.split(key, num_rounds + 1), lr_scales)
        _, (returns, metrics) = jax.lax.scan(round_, (astate, params, task_buffer), rounds)
        return returns, metrics

    return curve


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
