"""Running mean/std observation normalisation as a pytree, updated functionally (Chan et al. parallel merge).

    stats = RunningMeanStd.create(obs_size)
    stats = update_stats(stats, observations)     # [..., obs_size]; meta-training only
    policy_input = normalize(stats, obs)          # frozen for evaluation and test-time adaptation

`normalize(None, x)` returns `x`, so code paths without statistics (unit tests, raw inputs) share one call.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from ssm_jax.types import Array


@struct.dataclass
class RunningMeanStd:
    """Per-feature `mean [size]`, `var [size]` and the sample `count` they summarise."""

    mean: Array
    var: Array
    count: Array

    @classmethod
    def create(cls, size: int) -> RunningMeanStd:
        return cls(jnp.zeros(size, jnp.float32), jnp.ones(size, jnp.float32), jnp.zeros((), jnp.float32))


def update_stats(stats: RunningMeanStd, batch: Array) -> RunningMeanStd:
    """Merges a batch `[..., size]` (all leading axes are samples) into the statistics."""
    batch = batch.reshape(-1, batch.shape[-1])
    n = batch.shape[0]
    batch_mean, batch_var = jnp.mean(batch, axis=0), jnp.var(batch, axis=0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + delta**2 * stats.count * n / total
    return RunningMeanStd(mean, m2 / total, total)


def normalize(stats: RunningMeanStd | None, x: Array, clip: float = 10.0) -> Array:
    """`clip((x − mean) / std, ±clip)` over the last axis of `x` `[..., size]`; `x` itself when `stats` is None."""
    if stats is None:
        return x
    return jnp.clip((x - stats.mean) / jnp.sqrt(stats.var + 1e-8), -clip, clip).astype(x.dtype)
