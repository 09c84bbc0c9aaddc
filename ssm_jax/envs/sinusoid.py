"""Sinusoid regression tasks (Finn et al. 2017): `y = A sin(ω x + φ)`, A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5].

The frequency ω is 1 unless a range is given (Li et al. 2017's Meta-SGD distribution uses U[0.8, 1.2]).

    dist = SinusoidDistribution()
    tasks = dist.sample_tasks(key, n)              # SinusoidParams, leaves [n]
    x, y = dist.sample_points(key, task, k)        # one task: x, y [k, 1]; vmap over tasks
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.types import Array, PRNGKey


@struct.dataclass
class SinusoidParams:
    amplitude: Array
    phase: Array
    frequency: Array


@dataclasses.dataclass(frozen=True)
class SinusoidDistribution:
    amplitude_range: tuple[float, float] = (0.1, 5.0)
    phase_range: tuple[float, float] = (0.0, float(jnp.pi))
    frequency_range: tuple[float, float] = (1.0, 1.0)
    input_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self):
        for name in ("amplitude_range", "phase_range", "frequency_range", "input_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"SinusoidDistribution.{name} needs low <= high, got ({low}, {high})")

    def sample_tasks(self, key: PRNGKey, n: int) -> SinusoidParams:
        """`n` tasks; every leaf has shape `[n]`."""
        keys = jax.random.split(key, 3)
        ranges = (self.amplitude_range, self.phase_range, self.frequency_range)
        values = [jax.random.uniform(k, (n,), minval=lo, maxval=hi) for k, (lo, hi) in zip(keys, ranges, strict=True)]
        return SinusoidParams(*values)

    def evaluate(self, task: SinusoidParams, x: Array) -> Array:
        return task.amplitude * jnp.sin(task.frequency * x + task.phase)

    def sample_points(self, key: PRNGKey, task: SinusoidParams, num_points: int) -> tuple[Array, Array]:
        """`num_points` inputs of one task, uniform over `input_range`: `(x [k, 1], y [k, 1])`."""
        low, high = self.input_range
        x = jax.random.uniform(key, (num_points, 1), minval=low, maxval=high)
        return x, self.evaluate(task, x)
