"""Test-time adaptation of a meta-RL policy on a new task: sample, adapt, repeat.

    curve = make_rl_adaptation(meta_rl, AdapterConfig(...), rl_config, num_rounds=3)
    returns, extras = curve(key, task, params, buffer_state, experience_weight, obs_stats, learning_rate)

Each of `num_rounds` rounds samples `num_envs` trajectories with the current params on the task, then takes one
adapter update (`standard`: policy-gradient steps on those trajectories; `hybrid`: plus `experience_weight x` the
behaviour-cloning loss on windows replayed from the read-only buffer). Returns the mean episode return before
adapting and after each round: `[num_rounds + 1]`. `experience_weight` is traced: 0 gives exactly the standard
adapter, so one compiled function evaluates both modes. `obs_stats` (the meta-training observation statistics) are
frozen: sampling and the adapter's loss both standardise with them, and nothing here updates them.
`learning_rate` is a scalar or, for Meta-SGD, the learned params-shaped tree of inner rates; rounds after the
first use it times `later_rounds_lr_scale` (MAML-RL's test script halves it: a policy meta-trained for one step
takes its first step at the meta-trained size, and normalised advantages keep every later step as large unless the
rate shrinks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssm_jax.adapt.adapter import Adapter, AdapterConfig, make_adapter
from ssm_jax.adapt.online import make_online_adaptation
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize
from ssm_jax.meta.policy_losses import RLConfig, mean_episode_return, prepare_batch
from ssm_jax.meta.rl import MetaRL
from ssm_jax.models.heads import HeadedModel
from ssm_jax.rollout import Trajectory, action_log_prob, sample_action
from ssm_jax.types import Array, Params, PRNGKey, PyTree


def make_policy_adapter(meta_rl: MetaRL, adapter_config: AdapterConfig, mode: str = "hybrid") -> Adapter:
    """The test-time adapter of a meta-RL policy: `meta_rl`'s inner policy-gradient loss on the current task's
    batch, plus (hybrid) behaviour cloning on replayed (observation window -> action) items."""
    return make_adapter(mode, meta_rl.inner_loss, adapter_config, experience_loss_fn=meta_rl.bc_loss)


def make_rl_adaptation(
    meta_rl: MetaRL,
    adapter_config: AdapterConfig,
    rl_config: RLConfig,
    num_rounds: int,
    mode: str = "hybrid",
    later_rounds_lr_scale: float = 1.0,
):
    """Builds `curve(key, task, params, buffer_state, experience_weight, obs_stats, learning_rate)`, returning
    `(returns [K+1], metrics)` for `K = num_rounds`: `metrics[name] [K+1]` is the mean over each round's steps of
    the env's per-step `Trajectory.metrics[name]`.

    With `mode="standard"` the buffer state may be None and `experience_weight` is ignored.
    """
    if num_rounds < 1 or not later_rounds_lr_scale > 0:
        raise ValueError(
            f"num_rounds must be >= 1 and later_rounds_lr_scale > 0, got {num_rounds}, {later_rounds_lr_scale}"
        )
    adapter = make_policy_adapter(meta_rl, adapter_config, mode)

    def curve(
        key: PRNGKey,
        task: Any,
        params: Params,
        buffer_state: Any,
        experience_weight: Array,
        obs_stats: RunningMeanStd | None,
        learning_rate: PyTree,
    ):
        first_lr = jax.tree.map(lambda lr: jnp.asarray(lr, jnp.float32), learning_rate)
        astate = adapter.init(params).replace(
            experience_weight=jnp.asarray(experience_weight, jnp.float32), learning_rate=first_lr
        )

        def round_(carry, inputs):
            astate, params = carry
            round_key, lr_scale = inputs
            sample_key, update_key = jax.random.split(round_key)
            traj = meta_rl.sample_trajectories(sample_key, task, params, obs_stats)
            batch = prepare_batch(traj, rl_config, obs_stats)
            astate = astate.replace(learning_rate=jax.tree.map(lambda lr: lr * lr_scale, first_lr))
            astate, params, _ = adapter.update(astate, params, batch, buffer_state, update_key)
            return (astate, params), (mean_episode_return(traj), jax.tree.map(jnp.mean, traj.metrics))

        # K + 1 rounds, the last one's update unused: one rollout in the program instead of two (brax compiles
        # dominate small runs), for one extra adapter update.
        lr_scales = jnp.full((num_rounds + 1,), later_rounds_lr_scale, jnp.float32).at[0].set(1.0)
        rounds = (jax.random.split(key, num_rounds + 1), lr_scales)
        _, (returns, metrics) = jax.lax.scan(round_, (astate, params), rounds)
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
):
    """Builds `episode(key, task, params, buffer_state, experience_weight, obs_stats, learning_rate)`: one episode of
    `horizon` steps in which the policy adapts while it acts. Every `every` steps, once `window` transitions have
    been seen, the online adapter (`adapt.online`) takes one adapter step (hybrid; `experience_weight` 0 is the
    standard one) on the policy-gradient batch of the last `window` transitions (advantages from that window alone);
    the next actions come from the updated params, with the policy's carry kept.

    Returns `(return, adaptations)`: the episode's undiscounted return (its first episode, should the env end it
    early) and how many updates were taken.
    """
    if window > horizon:
        raise ValueError(f"window={window} must not exceed horizon={horizon}")

    def window_trajectory(items) -> Trajectory:
        column = {k: v[:, None] for k, v in items.items()}
        column["resets"] = column["resets"].at[0].set(True)  # the replay starts the carry afresh
        return Trajectory(**column, initial_carry=policy.initial_carry((1,)), metrics={})

    def episode(key, task, params, buffer_state, experience_weight, obs_stats, learning_rate):
        window_loss = lambda p, items: meta_rl.inner_loss(
            p, prepare_batch(window_trajectory(items), rl_config, obs_stats)
        )
        adapter = make_adapter("hybrid", window_loss, adapter_config, experience_loss_fn=meta_rl.bc_loss)
        online = make_online_adaptation(adapter, window, every)
        reset_key, steps_key = jax.random.split(key)
        obs, env_state = env.reset(reset_key, task)
        example = {
            "obs": obs, "action": jnp.zeros(env.action_size), "reward": jnp.zeros(()), "done": jnp.zeros((), bool),
            "terminated": jnp.zeros((), bool), "truncated": jnp.zeros((), bool), "log_prob": jnp.zeros(()),
            "next_obs": obs, "resets": jnp.zeros((), bool),
        }  # fmt: skip
        state = online.init(params, example)
        state = state.replace(
            adapt_state=state.adapt_state.replace(
                experience_weight=jnp.asarray(experience_weight, jnp.float32),
                learning_rate=jax.tree.map(lambda lr: jnp.asarray(lr, jnp.float32), learning_rate),
            )
        )

        def step(carry, step_key):
            state, env_state, obs, policy_carry, reset = carry
            action_key, env_key, adapt_key = jax.random.split(step_key, 3)
            policy_carry, out = policy.step(state.params, policy_carry, normalize(obs_stats, obs), reset)
            action = sample_action(action_key, out["pi"])
            next_obs, env_state, reward, done, info = env.step(env_key, env_state, action, task)
            item = {
                "obs": obs, "action": action, "reward": reward, "done": done, "terminated": info["terminated"],
                "truncated": info["truncated"], "log_prob": action_log_prob(out["pi"], action),
                "next_obs": info["final_obs"], "resets": reset,
            }  # fmt: skip
            state, metrics = online.step(state, item, buffer_state, adapt_key)
            return (state, env_state, next_obs, policy_carry, done), (reward, done, metrics["adapted"])

        first = (state, env_state, obs, policy.initial_carry(()), jnp.ones((), bool))
        _, (rewards, dones, adapted) = jax.lax.scan(step, first, jax.random.split(steps_key, horizon))
        before_first_end = (jnp.cumsum(dones) - dones) == 0
        return jnp.sum(jnp.where(before_first_end, rewards, 0.0)), jnp.sum(adapted)

    return episode
