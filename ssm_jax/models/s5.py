"""Diagonal structured SSM (S5-style): complex diagonal state matrix, ZOH discretisation, associative scan.

Each layer keeps a complex state `x: [P]` and runs `x_t = Λ̄ x_{t-1} + B̄ u_t`, `y_t = Re(C x_t) + D ⊙ u_t`
with `Λ̄ = exp(ΛΔ)`, `B̄ = (Λ̄ − 1)/Λ · B` (zero-order hold). Λ starts at the S4D-Lin approximation of HiPPO
(`−1/2 + iπn`), Δ is a learned per-mode log-timestep. Over a sequence the recurrence is a
`jax.lax.associative_scan` whose reset-aware operator zeroes `Λ̄` at reset steps; the stack wraps each layer
in pre-LayerNorm, GELU, a GLU gate and a residual connection.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm_jax.models.base import ModelConfig
from ssm_jax.types import Array


def _linear_recurrence(a: Array, b: Array) -> Array:
    """All states of `x_t = a_t x_{t-1} + b_t` from `x_{-1} = 0`, by associative scan. `a, b: [T, P]`."""

    def combine(first, second):
        a1, b1 = first
        a2, b2 = second
        return a2 * a1, a2 * b1 + b2

    return jax.lax.associative_scan(combine, (a, b))[1]


class S5Layer(nn.Module):
    """One diagonal SSM layer over `u: [..., H]` with complex state `[..., P]`."""

    state_dim: int
    hidden_dim: int
    dt_min: float
    dt_max: float

    def setup(self):
        p, h = self.state_dim, self.hidden_dim
        self.log_neg_re = self.param("log_neg_re", lambda k, s: jnp.full(s, np.log(0.5), jnp.float32), (p,))
        self.im = self.param("im", lambda k, s: jnp.pi * jnp.arange(s[0], dtype=jnp.float32), (p,))
        self.b = self.param("b", nn.initializers.lecun_normal(), (p, h, 2))
        self.c = self.param("c", nn.initializers.normal(stddev=0.5 / np.sqrt(p)), (h, p, 2))
        self.d = self.param("d", nn.initializers.normal(stddev=1.0), (h,))
        self.log_dt = self.param(
            "log_dt",
            lambda k, s: jax.random.uniform(k, s, jnp.float32, np.log(self.dt_min), np.log(self.dt_max)),
            (p,),
        )

    def discretise(self) -> tuple[Array, Array]:
        """ZOH: returns `Λ̄: [P]` and `B̄: [P, H]` (complex)."""
        lam = -jnp.exp(self.log_neg_re) + 1j * self.im
        lam_bar = jnp.exp(lam * jnp.exp(self.log_dt))
        b = self.b[..., 0] + 1j * self.b[..., 1]
        return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * b

    def _readout(self, x: Array, u: Array) -> Array:
        c = self.c[..., 0] + 1j * self.c[..., 1]
        return jnp.real(x @ c.T) + self.d * u

    def __call__(self, x: Array, u: Array) -> tuple[Array, Array]:
        lam_bar, b_bar = self.discretise()
        x = lam_bar * x + u @ b_bar.T
        return x, self._readout(x, u)

    def sequence(self, x0: Array, us: Array, resets: Array) -> tuple[Array, Array]:
        """`x0: [P]`, `us: [T, H]`, `resets: [T]` -> `(x_T: [P], ys: [T, H])`."""
        lam_bar, b_bar = self.discretise()
        a = jnp.where(resets[:, None], 0.0, lam_bar[None, :]).astype(lam_bar.dtype)
        b = (us @ b_bar.T).at[0].add(a[0] * x0)
        xs = _linear_recurrence(a, b)
        return xs[-1], self._readout(xs, us)


class S5Core(nn.Module):
    """Encoder `Dense(H)`, `num_layers` residual S5 blocks, decoder `Dense(O)`. Carry: tuple of `[..., P]` complex."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.encoder = nn.Dense(cfg.hidden_dim)
        self.layers = [S5Layer(cfg.state_dim, cfg.hidden_dim, cfg.dt_min, cfg.dt_max) for _ in range(cfg.num_layers)]
        self.norms = [nn.LayerNorm() for _ in range(cfg.num_layers)]
        self.gates = [nn.Dense(cfg.hidden_dim) for _ in range(cfg.num_layers)]
        self.decoder = nn.Dense(cfg.output_dim)

    def _gated(self, i: int, y: Array) -> Array:
        y = nn.gelu(y)
        return y * nn.sigmoid(self.gates[i](y))

    def __call__(self, carry: tuple, x: Array) -> tuple[tuple, Array]:
        u = self.encoder(x)
        states = []
        for i, layer in enumerate(self.layers):
            state, y = layer(carry[i], self.norms[i](u))
            u = u + self._gated(i, y)
            states.append(state)
        return tuple(states), self.decoder(u)

    def sequence(self, carry: tuple, xs: Array, resets: Array) -> tuple[tuple, Array]:
        u = self.encoder(xs)
        states = []
        for i, layer in enumerate(self.layers):
            state, y = layer.sequence(carry[i], self.norms[i](u), resets)
            u = u + self._gated(i, y)
            states.append(state)
        return tuple(states), self.decoder(u)


def s5_carry(config: ModelConfig, batch_shape: tuple[int, ...]) -> tuple:
    return tuple(jnp.zeros((*batch_shape, config.state_dim), jnp.complex64) for _ in range(config.num_layers))
