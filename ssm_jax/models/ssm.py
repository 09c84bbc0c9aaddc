"""The seeds' SSM cell: `h' = MLP_A(h) + B x`, `y = MLP_C(h') + D x`, scanned over time."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssm_jax.models.base import ModelConfig
from ssm_jax.models.mlp import MLP
from ssm_jax.types import Array


class SSMCell(nn.Module):
    """One step of the seeds' state space model.

    `MLP_A = Dense(H) -> ReLU -> Dense(P)`, `MLP_C = Dense(H) -> ReLU -> Dense(O)`; `B` and `D` are bias-free
    linear maps of the input. Carry `h: [..., P]`, input `x: [..., D]`, output `y: [..., O]`.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, h: Array, x: Array) -> tuple[Array, Array]:
        cfg = self.config
        h_next = MLP((cfg.hidden_dim, cfg.state_dim), name="mlp_a")(h) + nn.Dense(
            cfg.state_dim, use_bias=False, name="b"
        )(x)
        y = MLP((cfg.hidden_dim, cfg.output_dim), name="mlp_c")(h_next) + nn.Dense(
            cfg.output_dim, use_bias=False, name="d"
        )(x)
        return h_next, y


def ssm_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> Array:
    return jnp.zeros((*batch_shape, config.state_dim), jnp.float32)
