"""Stateless MLP baseline (the MAML paper's network) and the small MLP block other models reuse."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from ssm_jax.models.base import ModelConfig
from ssm_jax.types import Array


class MLP(nn.Module):
    """Dense layers with ReLU between them (none after the last). `x: [..., D] -> [..., features[-1]]`."""

    features: Sequence[int]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i, width in enumerate(self.features):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if i < len(self.features) - 1:
                x = nn.relu(x)
        return x


class MLPCore(nn.Module):
    """`num_layers` hidden layers of `hidden_dim` with ReLU, then a linear output. The carry is `()`."""

    config: ModelConfig

    @nn.compact
    def __call__(self, carry: tuple, x: Array) -> tuple[tuple, Array]:
        cfg = self.config
        return carry, MLP((cfg.hidden_dim,) * cfg.num_layers + (cfg.output_dim,))(x)

    def sequence(self, carry: tuple, xs: Array, resets: Array) -> tuple[tuple, Array]:
        """All steps of `xs: [T, D]` as one batched call: the network has no state, so there is nothing to scan
        (and `resets` changes nothing)."""
        del resets
        return self(carry, xs)


def mlp_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> tuple:
    del config, batch_shape
    return ()
