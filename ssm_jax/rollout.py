"""`lax.scan` rollouts of a sequence policy in parallel envs of one task, carrying the policy's recurrent state.

    traj = rollout(key, env, task, policy, params, num_envs=8, horizon=200, obs_stats=stats)
    # vmap over tasks: jax.vmap(lambda k, t: rollout(k, env, t, policy, params, 8, 200))(keys, tasks)

`policy` is a `HeadedModel` with a `"pi"` head (`GaussianHead` or `CategoricalHead`; other heads are ignored:
the losses use MAML-RL's linear feature baseline, not a learned value). It sees the observation standardised by
`obs_stats` (a frozen `RunningMeanStd`; None feeds it raw), while the trajectory records the raw observation, so
the losses replay it through the same statistics (`normalize(obs_stats, traj.obs)`). The env auto-resets; the
policy carry is reset before the first step of every episode (popjaxrl style), and `traj.resets` records where.
Re-running `policy.apply(params, traj.initial_carry[n], traj.obs[:, n], traj.resets[:, n])` reproduces the
rollout's outputs, which is how the RL losses evaluate (and differentiate) a trajectory.

With `in_context=True` the rollout is an RL² trial: the carry is reset only before step 0 and survives every
episode boundary, and the policy reads `context_inputs` (the standardised observation, the previous action, the
previous reward and whether this step starts an episode; the previous action and reward are zeros at an episode's
first step). `trial_inputs(env, traj, obs_stats)` rebuilds those inputs from the recorded trajectory, so
`policy.apply(params, traj.initial_carry[n], trial_inputs(env, traj, obs_stats)[:, n], traj.resets[:, n])`
reproduces an in-context rollout too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize
from ssm_jax.models.heads import (
    GaussianParams,
    HeadedModel,
    categorical_log_prob,
    categorical_sample,
    gaussian_log_prob,
    gaussian_sample,
)
from ssm_jax.types import Array, Params, PRNGKey


class Trajectory(NamedTuple):
    """Time-major record of `num_envs` parallel envs over `horizon` steps (leading axes `[T, N]`).

    `done = terminated | truncated`; `next_obs` is the observation after the action, before any reset (bootstrap
    from it on truncation); `resets[t]` is True where the policy carry was re-initialised before step t;
    `initial_carry` is the policy carry before step 0 (leaves `[N, ...]`); `metrics` holds the env's per-step
    diagnostics from `info["metrics"]` (`{name: [T, N]}`, e.g. `task_metric`; empty for families without any).
    """

    obs: Array
    action: Array
    reward: Array
    done: Array
    terminated: Array
    truncated: Array
    log_prob: Array
    next_obs: Array
    resets: Array
    initial_carry: Any
    metrics: dict


def sample_action(key: PRNGKey, pi: GaussianParams | Array) -> Array:
    """Samples from a policy head output (`GaussianParams` or categorical logits), any leading shape."""
    return gaussian_sample(key, pi) if isinstance(pi, GaussianParams) else categorical_sample(key, pi)


def action_log_prob(pi: GaussianParams | Array, action: Array) -> Array:
    """Log probability of `action` under a policy head output, any leading shape."""
    return gaussian_log_prob(pi, action) if isinstance(pi, GaussianParams) else categorical_log_prob(pi, action)


def context_size(env: TaskEnv) -> int:
    """Features of `context_inputs` for `env`: observation, previous action (one-hot where discrete), previous
    reward and the episode-start flag."""
    return env.observation_size + env.action_size + 2


def context_inputs(env: TaskEnv, obs: Array, prev_action: Array, prev_reward: Array, first: Array) -> Array:
    """The in-context policy's input `[..., context_size(env)]`: `obs [..., D]` (standardised), `prev_action`
    (`[..., A]`, or integer `[...]` one-hot encoded for discrete envs), `prev_reward [...]` and `first [...]`
    (this step starts an episode). At an episode's first step the previous action and reward read as zeros, so what
    crosses an episode boundary crosses it in the carry alone (a memoryless policy sees every episode alike)."""
    if env.discrete:
        prev_action = jax.nn.one_hot(prev_action, env.action_size, dtype=obs.dtype)
    within = ~first[..., None]
    previous = (jnp.where(within, prev_action, 0.0), jnp.where(within, prev_reward[..., None], 0.0))
    features = (obs, *(x.astype(obs.dtype) for x in previous), first[..., None].astype(obs.dtype))
    return jnp.concatenate(features, axis=-1)


def trial_inputs(env: TaskEnv, traj: Trajectory, obs_stats: RunningMeanStd | None = None) -> Array:
    """The inputs an in-context rollout fed its policy, rebuilt from the trajectory `[T, N, ...]`: each step's
    previous action, reward and episode end, shifted by one (zeros, and an episode start, at step 0)."""
    shift = lambda x: jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]])
    first = shift(traj.done).at[0].set(True)
    return context_inputs(env, normalize(obs_stats, traj.obs), shift(traj.action), shift(traj.reward), first)


def rollout(
    key: PRNGKey,
    env: TaskEnv,
    task: Any,
    policy: HeadedModel,
    params: Params,
    num_envs: int,
    horizon: int,
    obs_stats: RunningMeanStd | None = None,
    in_context: bool = False,
) -> Trajectory:
    """Samples `num_envs` envs of `task` for `horizon` steps with `policy` (inputs standardised by `obs_stats`).
    With `in_context` (static), each env's `horizon` steps are one trial: the carry persists across episodes and
    the policy reads `context_inputs` (see the module docstring).

    Returns a `Trajectory` with leaves `[horizon, num_envs, ...]` of raw observations. Deterministic given `key`.
    """
    if num_envs < 1 or horizon < 1:
        raise ValueError(f"num_envs and horizon must be >= 1, got {num_envs}, {horizon}")
    reset_key, steps_key = jax.random.split(key)
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, num_envs), task)
    initial_carry = policy.initial_carry((num_envs,))
    policy_step = jax.vmap(policy.step, in_axes=(None, 0, 0, 0))
    env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def body(carry, step_key):
        states, obs, policy_carry, first, trial_start, prev_action, prev_reward = carry
        action_key, env_key = jax.random.split(step_key)
        inputs = normalize(obs_stats, obs)
        if in_context:
            inputs = context_inputs(env, inputs, prev_action, prev_reward, first)
        resets = trial_start if in_context else first
        policy_carry, out = policy_step(params, policy_carry, inputs, resets)
        action = sample_action(action_key, out["pi"])
        next_obs, states, reward, done, info = env_step(jax.random.split(env_key, num_envs), states, action, task)
        record = Trajectory(
            obs=obs,
            action=action,
            reward=reward,
            done=done,
            terminated=info["terminated"],
            truncated=info["truncated"],
            log_prob=action_log_prob(out["pi"], action),
            next_obs=info["final_obs"],
            resets=resets,
            initial_carry=None,
            metrics=info["metrics"],
        )
        carry = (states, next_obs, policy_carry, done, jnp.zeros_like(done), action.astype(prev_action.dtype), reward)
        return carry, record

    first = jnp.ones(num_envs, bool)
    no_action = jnp.zeros(
        (num_envs,) if env.discrete else (num_envs, env.action_size), jnp.int32 if env.discrete else obs.dtype
    )
    start = (states, obs, initial_carry, first, first, no_action, jnp.zeros(num_envs, jnp.float32))
    _, traj = jax.lax.scan(body, start, jax.random.split(steps_key, horizon))
    return traj._replace(initial_carry=initial_carry)


def episode_returns(traj: Trajectory, episodes: int) -> Array:
    """Undiscounted return of each of the first `episodes` episodes of every env's trial: `[N, episodes]` from a
    `Trajectory [T, N]`."""
    episode = jnp.cumsum(traj.done, axis=0) - traj.done  # the episode index of each step
    return jnp.einsum("tn,tnk->nk", traj.reward, jax.nn.one_hot(episode, episodes, dtype=traj.reward.dtype))


def episode_means(values: Array, done: Array, episodes: int) -> Array:
    """Mean of `values [T, N]` over the steps of each of the first `episodes` episodes, then over envs: `[episodes]`."""
    membership = jax.nn.one_hot(jnp.cumsum(done, axis=0) - done, episodes, dtype=values.dtype)  # [T, N, K]
    return jnp.sum(values[..., None] * membership, axis=(0, 1)) / jnp.maximum(jnp.sum(membership, axis=(0, 1)), 1.0)
