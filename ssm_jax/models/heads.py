"""Output heads composable with any sequence core, and the distributions they parameterise.

    policy = attach_heads(make_model("ssm", cfg), pi=GaussianHead(action_dim), value=ValueHead())
    params = policy.init(key, xs)                 # {"core": ..., "heads": ...}
    carry, out = policy.apply(params, carry, xs, resets)
    out["pi"].mean: [T, A], out["pi"].log_std: [T, A], out["value"]: [T]

Heads act per time step on the core's output features `[..., O]`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssm_jax.models.base import ModelConfig, SequenceModel
from ssm_jax.types import Array, Carry, Params, PRNGKey


class GaussianParams(NamedTuple):
    """Diagonal Gaussian: `mean: [..., A]`, `log_std: [..., A]`."""

    mean: Array
    log_std: Array


class GaussianHead(nn.Module):
    """Linear mean and a state-independent learned log-std."""

    action_dim: int
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, features: Array) -> GaussianParams:
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.variance_scaling(0.01, "fan_in", "normal"))(
            features
        )
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
        return GaussianParams(mean, jnp.broadcast_to(log_std.astype(mean.dtype), mean.shape))


class CategoricalHead(nn.Module):
    """Linear logits over `num_actions`."""

    num_actions: int

    @nn.compact
    def __call__(self, features: Array) -> Array:
        return nn.Dense(self.num_actions, kernel_init=nn.initializers.variance_scaling(0.01, "fan_in", "normal"))(
            features
        )


class ValueHead(nn.Module):
    """Scalar state value: `[..., O] -> [...]`."""

    @nn.compact
    def __call__(self, features: Array) -> Array:
        return nn.Dense(1)(features)[..., 0]


class RegressionHead(nn.Module):
    """Linear regression output `[..., O] -> [..., output_dim]`."""

    output_dim: int

    @nn.compact
    def __call__(self, features: Array) -> Array:
        return nn.Dense(self.output_dim)(features)


class _Heads(nn.Module):
    heads: dict

    def __call__(self, features: Array) -> dict:
        return {name: head(features) for name, head in self.heads.items()}


@dataclasses.dataclass(frozen=True)
class HeadedModel:
    """A sequence core followed by named heads; the same four functions as `SequenceModel`.

    Outputs are dicts `{head name: head output}`; params are `{"core": ..., "heads": ...}`.
    """

    core: SequenceModel
    heads: _Heads

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def config(self) -> ModelConfig:
        return self.core.config

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Carry:
        return self.core.initial_carry(batch_shape)

    def init(self, key: PRNGKey, xs: Array) -> Params:
        core_key, heads_key = jax.random.split(key)
        core_params = self.core.init(core_key, xs)
        _, features = self.core.apply(core_params, self.core.initial_carry(), xs[:1])
        return {"core": core_params, "heads": self.heads.init(heads_key, features)}

    def apply(self, params: Params, carry: Carry, xs: Array, resets: Array | None = None) -> tuple[Carry, dict]:
        carry, features = self.core.apply(params["core"], carry, xs, resets)
        return carry, self.heads.apply(params["heads"], features)

    def step(self, params: Params, carry: Carry, x: Array, reset: Array | bool = False) -> tuple[Carry, dict]:
        carry, features = self.core.step(params["core"], carry, x, reset)
        return carry, self.heads.apply(params["heads"], features)


def attach_heads(core: SequenceModel, **heads: nn.Module) -> HeadedModel:
    """Composes `core` with named heads, e.g. `attach_heads(core, pi=GaussianHead(6), value=ValueHead())`
    (the meta-RL pipeline reads the `"pi"` head)."""
    if not heads:
        raise ValueError("attach_heads needs at least one head, e.g. pi=GaussianHead(action_dim)")
    return HeadedModel(core, _Heads(heads))


def gaussian_log_prob(dist: GaussianParams, action: Array) -> Array:
    """Log density of `action: [..., A]` summed over the action dimension -> `[...]`."""
    z = (action - dist.mean) * jnp.exp(-dist.log_std)
    return jnp.sum(-0.5 * z**2 - dist.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_entropy(dist: GaussianParams) -> Array:
    """Entropy summed over the action dimension -> `[...]`."""
    return jnp.sum(dist.log_std + 0.5 * (1.0 + jnp.log(2 * jnp.pi)), axis=-1)


def gaussian_kl(p: GaussianParams, q: GaussianParams) -> Array:
    """KL(p ‖ q) of diagonal Gaussians, summed over the action dimension -> `[...]`."""
    var_ratio = jnp.exp(2.0 * (p.log_std - q.log_std))
    mahalanobis = ((p.mean - q.mean) * jnp.exp(-q.log_std)) ** 2
    return jnp.sum(q.log_std - p.log_std + 0.5 * (var_ratio + mahalanobis - 1.0), axis=-1)


def gaussian_sample(key: PRNGKey, dist: GaussianParams) -> Array:
    return dist.mean + jnp.exp(dist.log_std) * jax.random.normal(key, dist.mean.shape, dist.mean.dtype)


def categorical_log_prob(logits: Array, action: Array) -> Array:
    """Log probability of integer `action: [...]` under `logits: [..., K]` -> `[...]`."""
    log_p = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits: Array) -> Array:
    log_p = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def categorical_kl(p_logits: Array, q_logits: Array) -> Array:
    """KL(p ‖ q) of categoricals given logits `[..., K]` -> `[...]`."""
    log_p, log_q = jax.nn.log_softmax(p_logits), jax.nn.log_softmax(q_logits)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def categorical_sample(key: PRNGKey, logits: Array) -> Array:
    return jax.random.categorical(key, logits)
