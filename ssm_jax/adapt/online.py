"""Online adaptation inside a rollout: every `every` steps, adapt on the most recent `window` items.

    online = make_online_adaptation(adapter, window=32, every=8)
    state = online.init(params, example_item)
    state, metrics = online.step(state, item, buffer_state, key)   # inside a lax.scan over time
    state.params                                                     # the params to act with next

Pure and vmappable over tasks. The items form the adapter's batch (leading axis = the window's items).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.adapt.adapter import Adapter, AdaptState
from ssm_jax.types import Array, Params, PRNGKey, PyTree


@struct.dataclass
class OnlineState:
    params: Params
    adapt_state: AdaptState
    window: PyTree
    filled: Array
    t: Array


class OnlineAdaptation(NamedTuple):
    init: Any
    step: Any


def make_online_adaptation(adapter: Adapter, window: int, every: int) -> OnlineAdaptation:
    """Adapts on the last `window` items every `every` steps once the window is full."""
    if window < 1 or every < 1:
        raise ValueError(f"window and every must be >= 1, got {window}, {every}")

    def init(params: Params, example_item: PyTree) -> OnlineState:
        items = jax.tree.map(lambda x: jnp.zeros((window, *jnp.shape(x)), jnp.result_type(x)), example_item)
        zero = jnp.zeros((), jnp.int32)
        return OnlineState(params, adapter.init(params), items, zero, zero)

    def step(state: OnlineState, item: PyTree, buffer_state: Any, key: PRNGKey) -> tuple[OnlineState, dict]:
        items = jax.tree.map(lambda w, x: jnp.concatenate([w[1:], jnp.asarray(x, w.dtype)[None]]), state.window, item)
        t = state.t + 1
        filled = jnp.minimum(state.filled + 1, window)
        due = (filled == window) & (t % every == 0)

        def adapt(_):
            adapt_state, params, metrics = adapter.update(state.adapt_state, state.params, items, buffer_state, key)
            return adapt_state, params, metrics

        def skip(_):
            shapes = jax.eval_shape(adapt, None)[2]
            return state.adapt_state, state.params, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        adapt_state, params, metrics = jax.lax.cond(due, adapt, skip, None)
        metrics = {**metrics, "adapted": due}
        return OnlineState(params, adapt_state, items, filled, t), metrics

    return OnlineAdaptation(init, step)
