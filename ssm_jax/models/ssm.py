"""SSM-MetaRL's SSM cell: `h' = MLP_A(h) + B x`, `y = MLP_C(h') + D x`, scanned over time."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssm_jax.models.base import ModelConfig
from ssm_jax.models.mlp import MLP
from ssm_jax.types import Array


class SSMCell(nn.Module):
    """One step of SSM-MetaRL's state space model.

    `MLP_A = Dense(H) -> ReLU -> Dense(P)`, `MLP_C = Dense(H) -> ReLU -> Dense(O)`; `B` and `D` are bias-free
    linear maps of the input. Carry `h: [..., P]`, input `x: [..., D]`, output `y: [..., O]`.
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.mlp_a = MLP((cfg.hidden_dim, cfg.state_dim))
        self.b = nn.Dense(cfg.state_dim, use_bias=False)
        self.mlp_c = MLP((cfg.hidden_dim, cfg.output_dim))
        self.d = nn.Dense(cfg.output_dim, use_bias=False)

    def __call__(self, h: Array, x: Array) -> tuple[Array, Array]:
        h_next = self.mlp_a(h) + self.b(x)
        return h_next, self.mlp_c(h_next) + self.d(x)

    def sequence(self, h: Array, xs: Array, resets: Array) -> tuple[Array, Array]:
        """All steps of `xs: [T, D]` (`resets: [T]` zero the state before a step). Only `h' = MLP_A(h) + B x_t` is
        sequential: `B x` and the readout `MLP_C(h') + D x` run over all T steps at once, outside the scan."""

        def recur(cell, h, inputs):
            bx, reset = inputs
            h = cell.mlp_a(jnp.where(reset, jnp.zeros_like(h), h)) + bx
            return h, h

        scan = nn.scan(recur, variable_broadcast="params", split_rngs={"params": False})
        h_last, hs = scan(self, h, (self.b(xs), resets))
        return h_last, self.mlp_c(hs) + self.d(xs)


def ssm_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> Array:
    return jnp.zeros((*batch_shape, config.state_dim), jnp.float32)
