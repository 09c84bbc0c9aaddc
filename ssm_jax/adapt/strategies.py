"""Loss strategies for test-time adaptation, with a registry (`none`, `tent`).

A strategy maps `(loss, aux, config) -> loss`. `aux` is the second output of the user's
`loss_fn(params, batch) -> (loss, aux)`; strategies that need the model's output distribution read
`aux["logits"]` (categorical logits `[..., K]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ssm_jax.types import Array

Strategy = Callable[[Array, Any, Any], Array]
_STRATEGIES: dict[str, Strategy] = {}


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Decorator registering `fn(loss, aux, config) -> loss` under `name`."""

    def register(fn: Strategy) -> Strategy:
        _STRATEGIES[name] = fn
        return fn

    return register


def get_strategy(name: str) -> Strategy:
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; registered: {', '.join(sorted(_STRATEGIES))}")
    return _STRATEGIES[name]


def strategy_names() -> tuple[str, ...]:
    return tuple(sorted(_STRATEGIES))


def predictive_entropy(logits: Array) -> Array:
    """Mean entropy of `softmax(logits)` over all leading axes."""
    log_p = jax.nn.log_softmax(logits)
    return jnp.mean(-jnp.sum(jnp.exp(log_p) * log_p, axis=-1))


@register_strategy("none")
def _none(loss: Array, aux: Any, config: Any) -> Array:
    del aux, config
    return loss


@register_strategy("tent")
def _tent(loss: Array, aux: Any, config: Any) -> Array:
    """Tent (Wang et al., ICLR 2021): add `entropy_weight` x predictive entropy, minimising it."""
    if not isinstance(aux, dict) or "logits" not in aux:
        raise ValueError('strategy "tent" needs loss_fn to return aux={"logits": ...}')
    return loss + config.entropy_weight * predictive_entropy(aux["logits"])
