"""Causal pre-LN transformer attending to a rolling span of S steps (`ModelConfig.attention_span`).

`step` writes the new key/value into a ring of S slots and attends over the filled slots, so each step costs
O(S). `sequence` computes the same thing in parallel: queries attend to the incoming cache and to the new
steps under a mask that keeps the last S positions of the current episode (a reset starts a new episode and
clears the span). The two agree for every T, not only T ≤ S. Positions are counted from the last reset and
enter as sinusoidal embeddings.

Carry: `TransformerCarry(k: [..., L, S, H], v: [..., L, S, H], pos: [...] int32)`; slot `s` holds position
`p` with `p % S == s`, and the filled slots are those with `s < min(pos, S)`.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from ssm_jax.models.base import ModelConfig
from ssm_jax.models.mlp import MLP
from ssm_jax.types import Array


class TransformerCarry(NamedTuple):
    k: Array
    v: Array
    pos: Array


def _sinusoid(pos: Array, width: int) -> Array:
    """Sinusoidal embedding of integer positions `[...] -> [..., width]`."""
    half = width // 2
    freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half) / max(half, 1))
    angles = pos[..., None].astype(jnp.float32) * freqs
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(emb, [(0, 0)] * pos.ndim + [(0, width - 2 * half)])


class TransformerCore(nn.Module):
    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embed = nn.Dense(cfg.hidden_dim)
        self.attn_norms = [nn.LayerNorm() for _ in range(cfg.num_layers)]
        self.qkv = [nn.Dense(3 * cfg.hidden_dim) for _ in range(cfg.num_layers)]
        self.attn_out = [nn.Dense(cfg.hidden_dim) for _ in range(cfg.num_layers)]
        self.mlp_norms = [nn.LayerNorm() for _ in range(cfg.num_layers)]
        self.mlps = [MLP((2 * cfg.hidden_dim, cfg.hidden_dim)) for _ in range(cfg.num_layers)]
        self.final_norm = nn.LayerNorm()
        self.decoder = nn.Dense(cfg.output_dim)

    def _attend(self, q: Array, k: Array, v: Array, mask: Array) -> Array:
        """Multi-head attention. `q: [Tq, H]`, `k, v: [Tk, H]`, `mask: [Tq, Tk]` -> `[Tq, H]`."""
        heads = self.config.num_heads
        split = lambda a: a.reshape(a.shape[0], heads, -1)
        q, k, v = split(q), split(k), split(v)
        logits = jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        logits = jnp.where(mask[None], logits, jnp.finfo(logits.dtype).min)
        weights = nn.softmax(logits, axis=-1)
        return jnp.einsum("hqk,khd->qhd", weights, v).reshape(q.shape[0], -1)

    def _layers(self, h: Array, attend_layer) -> tuple[Array, list]:
        """Runs the residual stack on `h: [Tq, H]`; `attend_layer(i, q, k, v)` returns (attention, new cache)."""
        caches = []
        for i in range(self.config.num_layers):
            q, k, v = jnp.split(self.qkv[i](self.attn_norms[i](h)), 3, axis=-1)
            attended, cache = attend_layer(i, q, k, v)
            h = h + self.attn_out[i](attended)
            h = h + self.mlps[i](self.mlp_norms[i](h))
            caches.append(cache)
        return self.decoder(self.final_norm(h)), caches

    def __call__(self, carry: TransformerCarry, x: Array) -> tuple[TransformerCarry, Array]:
        span, width = self.config.attention_span, self.config.hidden_dim
        pos = carry.pos
        slot = pos % span
        mask = (jnp.arange(span) < jnp.minimum(pos + 1, span))[None]
        h = (self.embed(x) + _sinusoid(pos, width))[None]

        def attend_layer(i, q, k, v):
            keys = carry.k[i].at[slot].set(k[0])
            values = carry.v[i].at[slot].set(v[0])
            return self._attend(q, keys, values, mask), (keys, values)

        y, caches = self._layers(h, attend_layer)
        keys, values = (jnp.stack(c) for c in zip(*caches, strict=True))
        return TransformerCarry(keys, values, pos + 1), y[0]

    def sequence(self, carry: TransformerCarry, xs: Array, resets: Array) -> tuple[TransformerCarry, Array]:
        span, width = self.config.attention_span, self.config.hidden_dim
        steps = xs.shape[0]
        t = jnp.arange(steps)
        episode = jnp.cumsum(resets)
        episode_start = jnp.maximum.accumulate(jnp.where(resets, t, 0))
        pos = jnp.where(episode == 0, carry.pos + t, t - episode_start)

        slots = jnp.arange(span)
        cached_pos = carry.pos - 1 - jnp.mod(carry.pos - 1 - slots, span)
        cache_filled = slots < jnp.minimum(carry.pos, span)
        cache_mask = (episode == 0)[:, None] & cache_filled[None] & (pos[:, None] - cached_pos[None] < span)
        new_mask = (
            (t[None, :] <= t[:, None]) & (episode[None, :] == episode[:, None]) & (pos[:, None] - pos[None, :] < span)
        )
        mask = jnp.concatenate([cache_mask, new_mask], axis=1)

        # Final ring: slot s takes the last step of the final episode with pos % S == s; otherwise the old
        # entry survives if no reset happened, else it is cleared.
        writes = (pos[None, :] % span == slots[:, None]) & (episode[None, :] == episode[-1])
        last_write = jnp.max(jnp.where(writes, t[None, :], -1), axis=1)
        keep_old = episode[-1] == 0

        def attend_layer(i, q, k, v):
            keys = jnp.concatenate([carry.k[i], k])
            values = jnp.concatenate([carry.v[i], v])
            written = (last_write >= 0)[:, None]
            idx = jnp.maximum(last_write, 0)
            new_k = jnp.where(written, k[idx], jnp.where(keep_old, carry.k[i], 0.0))
            new_v = jnp.where(written, v[idx], jnp.where(keep_old, carry.v[i], 0.0))
            return self._attend(q, keys, values, mask), (new_k, new_v)

        h = self.embed(xs) + _sinusoid(pos, width)
        ys, caches = self._layers(h, attend_layer)
        keys, values = (jnp.stack(c) for c in zip(*caches, strict=True))
        return TransformerCarry(keys, values, pos[-1] + 1), ys


def transformer_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> TransformerCarry:
    shape = (*batch_shape, config.num_layers, config.attention_span, config.hidden_dim)
    return TransformerCarry(
        jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros(batch_shape, jnp.int32)
    )
