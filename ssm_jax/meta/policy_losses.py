"""Policy losses for sequence policies, and the batch they read.

`prepare_batch` turns a `Trajectory` into a `PolicyBatch`, both time-major (`[T, N, ...]`, as the rollout's scan
writes them; per-sequence maths takes `[T]` and is vmapped over the env axis 1): observations standardised by the
frozen `obs_stats`, advantages from the linear feature baseline with no bootstrap at episode ends (every task
here ends at its fixed horizon or terminates, and the reference pads with 0 there; only a rollout cut mid-episode
bootstraps from the baseline at its last observation).

Losses, each `loss(params, batch) -> (loss, aux)`: `pg_loss` (vanilla policy gradient, MAML-RL's inner step),
`surrogate_loss` (the likelihood-ratio surrogate `exp(log π − log π_old)·A`: ProMP's low-variance curvature inner
objective, and the TRPO outer step's loss), `ppo_loss` (clipped surrogate, optional KL penalty; the default outer
step) and `behaviour_cloning_loss` (MSE of action means on replayed windows; the hybrid adapter's experience term).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ssm_jax.config.io import register_config
from ssm_jax.envs.normalize import RunningMeanStd, normalize
from ssm_jax.meta.estimators import discounted_returns, gae, linear_baseline
from ssm_jax.models.heads import (
    GaussianParams,
    HeadedModel,
    categorical_entropy,
    categorical_kl,
    gaussian_entropy,
    gaussian_kl,
)
from ssm_jax.rollout import Trajectory, action_log_prob
from ssm_jax.types import Array, Params

INNER_OBJECTIVES = ("pg", "lvc")


class PolicyLosses(NamedTuple):
    """`inner` is `pg` or `surrogate`, as `RLConfig.inner_objective` says."""

    inner: Callable
    ppo: Callable
    surrogate: Callable
    behaviour_cloning: Callable


class PolicyBatch(NamedTuple):
    """Trajectories prepared for the policy losses; leaves time-major `[T, N, ...]` (carry leaves `[N, ...]`)."""

    obs: Array
    action: Array
    advantage: Array
    old_log_prob: Array
    resets: Array
    initial_carry: Any


@register_config
@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Estimator and loss settings shared by the inner, outer and pretraining updates."""

    gamma: float = 0.99
    gae_lambda: float = 1.0
    inner_objective: str = "pg"
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    normalize_advantages: bool = True

    def __post_init__(self):
        if self.inner_objective not in INNER_OBJECTIVES:
            raise ValueError(
                f"RLConfig.inner_objective must be one of {', '.join(INNER_OBJECTIVES)}, got {self.inner_objective!r}"
            )
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1 or self.clip_eps <= 0:
            raise ValueError(
                f"RLConfig needs 0 < gamma <= 1, 0 <= gae_lambda <= 1, clip_eps > 0; got {self.gamma}, "
                f"{self.gae_lambda}, {self.clip_eps}"
            )


def prepare_batch(traj: Trajectory, config: RLConfig, obs_stats: RunningMeanStd | None = None) -> PolicyBatch:
    """Standardises `traj`'s observations with `obs_stats` and computes advantages from the linear baseline fitted
    on `traj` itself (no gradient, no bootstrap at episode ends). Returns the time-major `[T, N, ...]` batch."""
    traj = jax.lax.stop_gradient(traj)
    traj = traj._replace(obs=normalize(obs_stats, traj.obs), next_obs=normalize(obs_stats, traj.next_obs))
    returns = jax.vmap(lambda r, d: discounted_returns(r, d, config.gamma), in_axes=1, out_axes=1)(
        traj.reward, traj.done
    )
    values, next_values = linear_baseline(traj, returns)
    advantages = jax.vmap(
        lambda r, v, nv, d: gae(r, v, nv, d, d, config.gamma, config.gae_lambda), in_axes=1, out_axes=1
    )(traj.reward, values, next_values, traj.done)
    if config.normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    return PolicyBatch(
        obs=traj.obs,
        action=traj.action,
        advantage=advantages,
        old_log_prob=traj.log_prob,
        resets=traj.resets,
        initial_carry=traj.initial_carry,
    )


def policy_outputs(policy: HeadedModel, params: Params, batch: PolicyBatch) -> dict:
    """Re-runs `policy` over every env's trajectory (reset-aware), returning head outputs with leaves `[T, N, ...]`."""
    run = lambda carry, obs, resets: policy.apply(params, carry, obs, resets)[1]
    return jax.vmap(run, in_axes=(0, 1, 1), out_axes=1)(batch.initial_carry, batch.obs, batch.resets)


def action_entropy(pi) -> Array:
    """Entropy of a policy head output (`GaussianParams` or logits), summed over action dimensions: `[...]`."""
    return gaussian_entropy(pi) if isinstance(pi, GaussianParams) else categorical_entropy(pi)


def distribution_kl(pre, post) -> Array:
    """Mean over steps of KL(pre ‖ post) of two action distributions (`GaussianParams` or logits), in nats."""
    kl = gaussian_kl(pre, post) if isinstance(pre, GaussianParams) else categorical_kl(pre, post)
    return jnp.mean(kl)


def policy_kl(policy: HeadedModel, params: Params, new_params: Params, batch: PolicyBatch) -> Array:
    """Mean over the batch's steps of KL(π_params ‖ π_new_params), in nats: the size of an update."""
    return distribution_kl(policy_outputs(policy, params, batch)["pi"], policy_outputs(policy, new_params, batch)["pi"])


def surrogate_objective(pi, batch: PolicyBatch, entropy_coef: float = 0.0) -> tuple[Array, Array]:
    """The likelihood-ratio surrogate `−mean(exp(log π − log π_old)·A)` (minus `entropy_coef` × entropy) of the
    action distribution `pi` (leaves `[T, N, ...]`) on `batch`; returns `(loss, log_prob [T, N])`."""
    log_prob = action_log_prob(pi, batch.action)
    ratio = jnp.exp(log_prob - batch.old_log_prob)
    return -jnp.mean(ratio * batch.advantage) - entropy_coef * jnp.mean(action_entropy(pi)), log_prob


def make_policy_losses(policy: HeadedModel, config: RLConfig) -> PolicyLosses:
    """The policy losses for `policy`, each `loss(params, batch) -> (loss, aux)`; see the module docstring."""

    def log_probs(params, batch):
        pi = policy_outputs(policy, params, batch)["pi"]
        return action_log_prob(pi, batch.action), pi

    def pg_loss(params, batch: PolicyBatch):
        log_prob, pi = log_probs(params, batch)
        loss = -jnp.mean(log_prob * batch.advantage) - config.entropy_coef * jnp.mean(action_entropy(pi))
        return loss, {"log_prob": log_prob}

    def surrogate_loss(params, batch: PolicyBatch):
        loss, log_prob = surrogate_objective(policy_outputs(policy, params, batch)["pi"], batch, config.entropy_coef)
        return loss, {"log_prob": log_prob}

    def ppo_loss(params, batch: PolicyBatch):
        log_prob, pi = log_probs(params, batch)
        log_ratio = log_prob - batch.old_log_prob
        ratio = jnp.exp(log_ratio)
        clipped = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
        surrogate = jnp.minimum(ratio * batch.advantage, clipped * batch.advantage)
        approx_kl = jnp.mean(ratio - 1.0 - log_ratio)  # non-negative estimator of KL(old || new)
        loss = -jnp.mean(surrogate) + config.kl_coef * approx_kl - config.entropy_coef * jnp.mean(action_entropy(pi))
        return loss, {"log_prob": log_prob, "approx_kl": approx_kl}

    def behaviour_cloning_loss(params, windows):
        """`windows = (obs [B, L, D], actions [B, L, A])`: MSE between the policy's action means and `actions`."""
        obs, actions = windows
        run = lambda o: policy.apply(params, policy.initial_carry(), o)[1]["pi"]
        pi = jax.vmap(run)(obs)
        mean = pi.mean if isinstance(pi, GaussianParams) else jax.nn.softmax(pi)
        return jnp.mean((mean - actions) ** 2), {}

    inner = pg_loss if config.inner_objective == "pg" else surrogate_loss
    return PolicyLosses(inner, ppo_loss, surrogate_loss, behaviour_cloning_loss)


def mean_episode_return(traj: Trajectory) -> Array:
    """Undiscounted return of each env's first episode, averaged over envs (MAML-RL samples one path per
    trajectory; steps after an early termination belong to a restarted episode and are not scored)."""
    before_first_end = (jnp.cumsum(traj.done, axis=0) - traj.done) == 0
    return jnp.mean(jnp.sum(jnp.where(before_first_end, traj.reward, 0.0), axis=0))


def ppo_loss(
    out: dict,
    batch: PolicyBatch,
    returns: Array,
    valid: Array,
    clip_eps: float,
    value_coef: float,
    entropy_coef: float,
) -> tuple[Array, dict]:
    """PPO's loss of the head outputs `out` (`pi`, `value`; leaves `[T, B, ...]`) on `batch`: the clipped surrogate,
    `value_coef` x the squared error to `returns [T, B]` and `-entropy_coef` x the entropy, each averaged over the
    steps where `valid [T, B]` is 1. Returns `(loss, metrics)`: the three terms, the approximate KL and the clipped
    fraction."""
    mean = lambda x: jnp.sum(x * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    log_ratio = action_log_prob(out["pi"], batch.action) - batch.old_log_prob
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    policy_loss = -mean(jnp.minimum(ratio * batch.advantage, clipped * batch.advantage))
    value_loss = mean((out["value"] - returns) ** 2)
    entropy = mean(action_entropy(out["pi"]))
    total = policy_loss + value_coef * value_loss - entropy_coef * entropy
    return total, {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": mean(ratio - 1.0 - log_ratio),
        "clip_fraction": mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
    }
