"""Task distributions: a static description plus a task-parameter pytree with a leading task axis."""

from ssm_jax.envs.sinusoid import SinusoidDistribution, SinusoidParams

__all__ = ["SinusoidDistribution", "SinusoidParams"]
