"""Return and advantage estimators, per sequence and time-major (rlax's convention: `x_t` is `[T]`).

`discounted_returns` and `gae` take one trajectory's `r_t`, `done_t` (and values); vmap them over envs.
`linear_baseline` is MAML-RL's linear feature baseline (ridge regression of returns on `[o, o², t, t², t³, 1]`)
fitted over all envs of a `Trajectory` (`[T, N, ...]`).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from ssm_jax.rollout import Trajectory
from ssm_jax.types import Array


def discounted_returns(r_t: Array, done_t: Array, gamma: float, bootstrap: Array | float = 0.0) -> Array:
    """`G_t = r_t + γ (1 − done_t) G_{t+1}`, with `G_T = bootstrap`. All `[T]`."""
    chex.assert_rank([r_t, done_t], 1)

    def body(next_return, inputs):
        reward, done = inputs
        value = reward + gamma * (1.0 - done) * next_return
        return value, value

    _, returns = jax.lax.scan(
        body, jnp.asarray(bootstrap, jnp.float32), (r_t, done_t.astype(jnp.float32)), reverse=True
    )
    return returns


def gae(
    r_t: Array,
    v_t: Array,
    v_tp1: Array,
    terminated_t: Array,
    done_t: Array,
    gamma: float,
    lam: float,
) -> Array:
    """Generalised advantage estimates `[T]`.

    `v_tp1[t]` is the value of the observation after step t (before any reset). It bootstraps unless the episode
    terminated there; the recursion stops at every episode end (`done_t`, termination or truncation).
    """
    chex.assert_rank([r_t, v_t, v_tp1, terminated_t, done_t], 1)
    deltas = r_t + gamma * (1.0 - terminated_t.astype(jnp.float32)) * v_tp1 - v_t

    def body(next_advantage, inputs):
        delta, done = inputs
        advantage = delta + gamma * lam * (1.0 - done) * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(body, jnp.zeros((), jnp.float32), (deltas, done_t.astype(jnp.float32)), reverse=True)
    return advantages


def episode_time(reset_t: Array) -> Array:
    """Step index within the episode, from the carry-reset flags `[T]` (True at each episode's first step)."""
    chex.assert_rank(reset_t, 1)

    def body(t, reset):
        t = jnp.where(reset, 0, t + 1)
        return t, t

    return jax.lax.scan(body, jnp.asarray(-1, jnp.int32), reset_t)[1]


def _baseline_features(obs: Array, t: Array) -> Array:
    obs = jnp.clip(obs, -10.0, 10.0)
    t = t[..., None].astype(jnp.float32) / 100.0
    return jnp.concatenate([obs, obs**2, t, t**2, t**3, jnp.ones_like(t)], axis=-1)


def linear_baseline(traj: Trajectory, returns: Array, reg: float = 1e-5) -> tuple[Array, Array]:
    """MAML-RL's linear feature baseline fitted to `returns` `[T, N]`.

    Returns `(values, next_values)`, each `[T, N]`: the fit at each observation and at the pre-reset next
    observation (for bootstrapping on truncation).
    """
    t = jax.vmap(episode_time, in_axes=1, out_axes=1)(traj.resets)
    features = _baseline_features(traj.obs, t)
    flat = features.reshape(-1, features.shape[-1])
    gram = flat.T @ flat
    weights = jnp.linalg.solve(
        gram + reg * jnp.eye(gram.shape[0]) * (1.0 + jnp.trace(gram) / gram.shape[0]), flat.T @ returns.reshape(-1)
    )
    return features @ weights, _baseline_features(traj.next_obs, t + 1) @ weights


def trial_advantages(rewards: Array, values: Array, valid: Array, gamma: float, lam: float) -> tuple[Array, Array]:
    """GAE over whole trials `[T, B]` (RL²'s: no episode boundary stops it, and no bootstrap at the trial's end at
    T), standardised over the steps where `valid [T, B]` is 1. Returns `(advantages, value targets)`, both `[T, B]`
    (the targets: the advantages before standardising plus `values`)."""
    num_steps = rewards.shape[0]
    next_values = jnp.concatenate([values[1:], jnp.zeros_like(values[:1])])
    trial_end = jnp.zeros(num_steps, jnp.float32).at[-1].set(1.0)
    advantage = jax.vmap(
        lambda r, v, nv: gae(r, v, nv, jnp.zeros_like(trial_end), trial_end, gamma, lam), in_axes=1, out_axes=1
    )(rewards, values, next_values)
    count = jnp.maximum(jnp.sum(valid), 1.0)
    mean = jnp.sum(advantage * valid) / count
    std = jnp.sqrt(jnp.sum((advantage - mean) ** 2 * valid) / count)
    return (advantage - mean) / (std + 1e-8), advantage + values
