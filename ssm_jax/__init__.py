"""ssm_jax: meta-reinforcement learning with State Space Models in pure functional JAX/Flax."""

__version__ = "0.1.0"
