"""Online adaptation inside a rollout: every `every` steps, adapt on the most recent `window` items.

    online = make_online_adaptation(adapter, window=32, every=8, task_capacity=16)
    state = online.init(params, example_item)                      # the task buffer starts empty
    state, metrics = online.step(state, item, buffer_state, key)   # inside a lax.scan over time
    state.params                                                     # the params to act with next

Pure and vmappable over tasks. The items form the adapter's batch (leading axis = the window's items). With
`task_capacity`, the state also keeps a task buffer (`ssm_jax.buffer`) of the windows adapted on so far (one item
per adaptation, leaves `[window, ...]`; the newest `task_capacity` kept), which the adapter's hybrid term replays
(`task_buffer`): everything the agent has seen of this task, not only the last window. A new `init` per task
empties it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax import buffer as buffer_lib
from ssm_jax.adapt.adapter import Adapter, AdaptState
from ssm_jax.types import Array, Params, PRNGKey, PyTree


@struct.dataclass
class OnlineState:
    params: Params
    adapt_state: AdaptState
    window: PyTree
    filled: Array
    t: Array
    task_buffer: buffer_lib.BufferState | None = None


class OnlineAdaptation(NamedTuple):
    init: Any
    step: Any


def make_online_adaptation(
    adapter: Adapter, window: int, every: int, task_capacity: int | None = None
) -> OnlineAdaptation:
    """Adapts on the last `window` items every `every` steps once the window is full; with `task_capacity`, also
    replaying a task buffer of the windows adapted on so far (see the module docstring)."""
    if window < 1 or every < 1 or (task_capacity is not None and task_capacity < 1):
        raise ValueError(f"window, every and task_capacity must be >= 1, got {window}, {every}, {task_capacity}")

    def init(params: Params, example_item: PyTree) -> OnlineState:
        items = jax.tree.map(lambda x: jnp.zeros((window, *jnp.shape(x)), jnp.result_type(x)), example_item)
        zero = jnp.zeros((), jnp.int32)
        task_buffer = None if task_capacity is None else buffer_lib.init(task_capacity, items)
        return OnlineState(params, adapter.init(params), items, zero, zero, task_buffer)

    def step(state: OnlineState, item: PyTree, buffer_state: Any, key: PRNGKey) -> tuple[OnlineState, dict]:
        items = jax.tree.map(lambda w, x: jnp.concatenate([w[1:], jnp.asarray(x, w.dtype)[None]]), state.window, item)
        t = state.t + 1
        filled = jnp.minimum(state.filled + 1, window)
        due = (filled == window) & (t % every == 0)

        def adapt(_):
            task_buffer = state.task_buffer
            if task_buffer is not None:
                task_buffer = buffer_lib.add(task_buffer, jax.tree.map(lambda x: x[None], items))
            adapt_state, params, metrics = adapter.update(
                state.adapt_state, state.params, items, buffer_state, key, task_buffer=task_buffer
            )
            return adapt_state, params, task_buffer, metrics

        def skip(_):
            shapes = jax.eval_shape(adapt, None)[3]
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return state.adapt_state, state.params, state.task_buffer, zeros

        adapt_state, params, task_buffer, metrics = jax.lax.cond(due, adapt, skip, None)
        metrics = {**metrics, "adapted": due}
        return OnlineState(params, adapt_state, items, filled, t, task_buffer), metrics

    return OnlineAdaptation(init, step)
