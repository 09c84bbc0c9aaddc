"""The one interface every sequence model offers, and its static configuration.

A model is a pure Flax module whose `__call__(carry, x) -> (carry, y)` is one time step. `SequenceModel`
wraps it into four pure functions:

    params = model.init(key, xs)                          # xs: [T, D]
    carry, ys = model.apply(params, carry, xs, resets)    # xs: [T, D], resets: [T] bool, ys: [T, O]
    carry, y = model.step(params, carry, x, reset)        # x: [D], reset: [] bool, y: [O]
    carry = model.initial_carry(batch_shape=())

`resets[t]` re-initialises the carry *before* step t (popjaxrl's reset-aware scan). Inputs are unbatched;
`jax.vmap` over a leading axis for batches and tasks (the carry then comes from `initial_carry((B,))` or a
vmapped `initial_carry()`). A module may define `sequence(carry, xs, resets)` with a parallel algorithm
(S5's associative scan, the transformer's masked attention); otherwise `apply` is a `jax.lax.scan` of the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssm_jax.config.io import register_config
from ssm_jax.types import Array, Carry, Params, PRNGKey, cast_floating, params_dtype, tree_where


@register_config
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static sizes of a sequence model. Changing any field recompiles.

    Attributes:
        input_dim: D, features per time step.
        output_dim: O, features produced per time step.
        state_dim: P, recurrent state size (ssm hidden state, s5 modes, lstm/gru units).
        hidden_dim: H, width of the MLPs / residual stream (ssm's MLP_A and MLP_C, mlp layers, s5, transformer).
        num_layers: hidden layers of `mlp`; stacked layers of `s5` and `transformer`.
        num_heads: attention heads of `transformer` (must divide `hidden_dim`).
        attention_span: S, steps `transformer` attends to (its key/value cache); `step` attends to the last S.
        dt_min, dt_max: range of the initial S5 timesteps (log-uniform).
    """

    input_dim: int
    output_dim: int
    state_dim: int = 64
    hidden_dim: int = 64
    num_layers: int = 2
    num_heads: int = 4
    attention_span: int = 64
    dt_min: float = 0.001
    dt_max: float = 0.1

    def __post_init__(self):
        for field in (
            "input_dim",
            "output_dim",
            "state_dim",
            "hidden_dim",
            "num_layers",
            "num_heads",
            "attention_span",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{field} must be a positive int, got {value!r}")
        if not 0 < self.dt_min < self.dt_max:
            raise ValueError(f"ModelConfig needs 0 < dt_min < dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")


def _check_sequence(config: ModelConfig, xs: Array, resets: Array) -> None:
    if xs.ndim != 2 or xs.shape[-1] != config.input_dim:
        raise ValueError(f"xs must have shape [T, {config.input_dim}] (vmap for batches), got {xs.shape}")
    if resets.shape != xs.shape[:1]:
        raise ValueError(f"resets must have shape [T]={xs.shape[:1]}, got {resets.shape}")


@dataclasses.dataclass(frozen=True)
class SequenceModel:
    """Pure functions of a Flax sequence module; see the module docstring for the contract.

    Attributes:
        name: registry name ("ssm", "s5", "mlp", "lstm", "gru", "transformer").
        config: the static sizes.
        module: the Flax module; `__call__(carry, x)` is one step.
        carry_fn: `carry_fn(batch_shape) -> carry` of zeros (float32; cast to the params' dtype on use).
    """

    name: str
    config: ModelConfig
    module: nn.Module
    carry_fn: Callable[[tuple[int, ...]], Carry]

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Carry:
        """The reset state, with leaves of shape `batch_shape + [...]`."""
        return self.carry_fn(tuple(batch_shape))

    def init(self, key: PRNGKey, xs: Array) -> Params:
        """Initialises params from an example sequence `xs: [T, D]` (only its first step is used)."""
        xs = jnp.asarray(xs)
        _check_sequence(self.config, xs, jnp.zeros(xs.shape[:1], bool))
        carry = cast_floating(self.initial_carry(), jnp.result_type(xs.dtype, jnp.float32))
        return self.module.init(key, carry, xs[0])

    def step(self, params: Params, carry: Carry, x: Array, reset: Array | bool = False) -> tuple[Carry, Array]:
        """One online step. `x: [D]`; if `reset`, the carry is re-initialised first. Returns `(carry, y: [O])`."""
        carry = self._reset(params, carry, jnp.asarray(reset))
        return self.module.apply(params, carry, x)

    def apply(self, params: Params, carry: Carry, xs: Array, resets: Array | None = None) -> tuple[Carry, Array]:
        """Runs the model over `xs: [T, D]` with `resets: [T]` bool. Returns `(final carry, ys: [T, O])`."""
        xs = jnp.asarray(xs)
        resets = jnp.zeros(xs.shape[:1], bool) if resets is None else jnp.asarray(resets, bool)
        _check_sequence(self.config, xs, resets)
        carry = cast_floating(carry, params_dtype(params))
        if hasattr(self.module, "sequence"):
            return self.module.apply(params, carry, xs, resets, method="sequence")

        def body(carry, inputs):
            x, reset = inputs
            return self.step(params, carry, x, reset)

        return jax.lax.scan(body, carry, (xs, resets))

    def _reset(self, params: Params, carry: Carry, reset: Array) -> Carry:
        dtype = params_dtype(params)
        fresh = cast_floating(self.initial_carry(), dtype)
        return tree_where(reset, fresh, cast_floating(carry, dtype))
