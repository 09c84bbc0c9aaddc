"""LSTM and GRU baselines: a flax cell of `state_dim` units, then the readout `Dense(H) -> ReLU -> Dense(O)`."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssm_jax.models.base import ModelConfig
from ssm_jax.models.mlp import MLP
from ssm_jax.types import Array, Carry


class RecurrentCore(nn.Module):
    """`cell` is "lstm" (carry `(c, h)`, each `[..., P]`) or "gru" (carry `h: [..., P]`)."""

    config: ModelConfig
    cell: str

    @nn.compact
    def __call__(self, carry: Carry, x: Array) -> tuple[Carry, Array]:
        cfg = self.config
        cell = nn.OptimizedLSTMCell(cfg.state_dim) if self.cell == "lstm" else nn.GRUCell(cfg.state_dim)
        carry, h = cell(carry, x)
        return carry, MLP((cfg.hidden_dim, cfg.output_dim), name="readout")(h)


def lstm_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> tuple[Array, Array]:
    zeros = jnp.zeros((*batch_shape, config.state_dim), jnp.float32)
    return (zeros, zeros)


def gru_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> Array:
    return jnp.zeros((*batch_shape, config.state_dim), jnp.float32)
