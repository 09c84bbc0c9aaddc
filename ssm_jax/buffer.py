"""ExperienceBuffer: an immutable pytree ring buffer with pure `init / add / sample / size` (flashbax style).

    buf = make_experience_buffer(capacity=10_000)
    state = buf.init(example_item)              # example_item: one item, e.g. (obs_window [L, D], target [L, O])
    state = buf.add(state, items)               # items: leading axis n (n may exceed capacity)
    batch, mask = buf.sample(state, key, 32)    # batch leaves [32, ...]; mask [32] bool
    buf.size(state)

`add` writes at `(index + arange(n)) % capacity`, so the oldest items are evicted first, exactly like SSM-MetaRL's
`deque(maxlen=capacity)`. `sample` draws uniformly with replacement from the filled part; the mask is all True
once anything is stored, and an empty buffer gives a zero batch with an all-False mask (never NaN).

Contamination rule (seeds): the buffer is written during meta-training only. `freeze(state)` marks a state
read-only; `add` on a frozen state raises. Adapters receive the state and only ever `sample` from it; they
return no buffer state, so test-time code has nothing to write back.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.types import Array, PRNGKey, PyTree


@struct.dataclass
class BufferState:
    """`items`: pytree with leaves `[capacity, ...]`; `index`: next write slot; `size`: filled slots."""

    items: PyTree
    index: Array
    size: Array
    frozen: bool = struct.field(pytree_node=False, default=False)

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.items)[0].shape[0]


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def init(capacity: int, example_item: PyTree) -> BufferState:
    """An empty buffer whose slots have the shapes and dtypes of `example_item` (one item, no leading axis)."""
    _check_positive("capacity", capacity)
    if not jax.tree.leaves(example_item):
        raise ValueError("example_item must contain at least one array")
    items = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), example_item)
    return BufferState(items=items, index=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def _check_items(state: BufferState, items: PyTree) -> int:
    """Checks `items` against the stored layout and returns the leading size n."""
    stored, new = jax.tree.structure(state.items), jax.tree.structure(items)
    if stored != new:
        raise ValueError(f"items have tree structure {new}, but the buffer stores {stored}")
    sizes = set()
    for (path, slot), leaf in zip(jax.tree.leaves_with_path(state.items), jax.tree.leaves(items), strict=True):
        name = jax.tree_util.keystr(path) or "item"
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[1:] != slot.shape[1:]:
            raise ValueError(
                f"leaf {name}: items need shape [n, *{tuple(slot.shape[1:])}], got {tuple(jnp.shape(leaf))}"
            )
        if jnp.result_type(leaf) != slot.dtype:
            raise ValueError(f"leaf {name}: items have dtype {jnp.result_type(leaf)}, the buffer stores {slot.dtype}")
        sizes.add(jnp.shape(leaf)[0])
    if len(sizes) != 1:
        raise ValueError(f"all item leaves need the same leading size n, got {sorted(sizes)}")
    return sizes.pop()


def add(state: BufferState, items: PyTree, mask: Array | None = None) -> BufferState:
    """Appends the n items of `items` (leaves `[n, ...]`), or only those where `mask: [n]` is True.

    When more than `capacity` items are added, only the newest `capacity` are kept.
    """
    if state.frozen:
        raise ValueError("this buffer state is frozen: test-time code may not add to it (contamination rule)")
    n = _check_items(state, items)
    capacity = state.capacity
    if mask is None:
        count = jnp.asarray(n, jnp.int32)
    else:
        mask = jnp.asarray(mask, bool)
        if mask.shape != (n,):
            raise ValueError(f"mask must have shape [{n}], got {mask.shape}")
        order = jnp.argsort(~mask, stable=True)  # selected items first, in their original order
        items = jax.tree.map(lambda x: x[order], items)
        count = jnp.sum(mask, dtype=jnp.int32)
    j = jnp.arange(n, dtype=jnp.int32)
    # Keep the newest min(count, capacity) selected items; their slots are distinct. Others go out of bounds
    # and are dropped, so no slot is written twice (duplicate scatter order is implementation-defined).
    kept = (j < count) & (j >= count - capacity)
    slots = jnp.where(kept, (state.index + j) % capacity, capacity)
    new_items = jax.tree.map(lambda buf, x: buf.at[slots].set(x, mode="drop"), state.items, items)
    return state.replace(
        items=new_items,
        index=(state.index + count) % capacity,
        size=jnp.minimum(state.size + count, capacity),
    )


def sample(state: BufferState, key: PRNGKey, batch_size: int) -> tuple[PyTree, Array]:
    """Uniform sample with replacement from the filled slots. Returns `(batch [batch_size, ...], mask [batch_size])`."""
    _check_positive("batch_size", batch_size)
    slots = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    filled = state.size > 0
    batch = jax.tree.map(lambda x: jnp.where(filled, x[slots], jnp.zeros_like(x[slots])), state.items)
    return batch, jnp.full((batch_size,), filled)


def size(state: BufferState) -> Array:
    return state.size


def ordered(state: BufferState) -> tuple[PyTree, Array]:
    """All slots oldest first, with a mask of the filled ones: `(items [capacity, ...], mask [capacity])`."""
    capacity = state.capacity
    start = (state.index - state.size) % capacity
    order = (start + jnp.arange(capacity)) % capacity
    return jax.tree.map(lambda x: x[order], state.items), jnp.arange(capacity) < state.size


def freeze(state: BufferState) -> BufferState:
    """A read-only view of `state` for test-time use: `add` refuses it."""
    return state.replace(frozen=True)


def cut_windows(sequence: PyTree, dones: Array, length: int, stride: int = 1) -> tuple[PyTree, Array]:
    """Fixed-length windows of a trajectory that do not cross an episode boundary.

    Args:
        sequence: pytree with leaves `[T, ...]`.
        dones: `[T]` bool, True on the last step of an episode.
        length: L, steps per window. stride: steps between window starts.

    Returns:
        `(windows, valid)`: leaves `[M, L, ...]` with `M = (T - L) // stride + 1`, and `valid: [M]`, False for
        windows that contain an episode end before their last step. Pass `valid` as `add`'s mask.
    """
    _check_positive("length", length)
    _check_positive("stride", stride)
    steps = jnp.shape(dones)[0]
    if length > steps:
        raise ValueError(f"window length {length} exceeds the trajectory length {steps}")
    starts = jnp.arange(0, steps - length + 1, stride)
    index = starts[:, None] + jnp.arange(length)[None, :]
    windows = jax.tree.map(lambda x: x[index], sequence)
    valid = ~jnp.any(jnp.asarray(dones, bool)[index[:, :-1]], axis=1)
    return windows, valid


def experience_windows(obs: Array, action: Array, done: Array, length: int) -> tuple[tuple[Array, Array], Array]:
    """Non-overlapping `(policy-input window [L, D], actions [L, A])` items from time-major trajectories of a batch
    of tasks: `obs [E, T, N, D]` as the policy saw it (standardised), `action [E, T, N, A]`, `done [E, T, N]`.

    Returns `(items, valid)` with leading axis `E * N * (T // L)`; windows crossing an episode end are invalid.
    """
    per_env = lambda o, a, d: cut_windows((o, a), d, length, stride=length)
    per_task = jax.vmap(per_env, in_axes=1)
    (obs, action), valid = jax.vmap(per_task)(obs, action, done)
    flatten = lambda x: x.reshape(-1, *x.shape[3:])
    return (flatten(obs), flatten(action)), valid.reshape(-1)


class ExperienceBuffer(NamedTuple):
    """The buffer's pure functions bound to a capacity; see the module docstring."""

    capacity: int
    init: Any
    add: Any
    sample: Any
    size: Any
    ordered: Any
    freeze: Any


def make_experience_buffer(capacity: int) -> ExperienceBuffer:
    """Builds the pure buffer functions for a ring of `capacity` items."""
    _check_positive("capacity", capacity)
    return ExperienceBuffer(
        capacity=capacity,
        init=lambda example_item: init(capacity, example_item),
        add=add,
        sample=sample,
        size=size,
        ordered=ordered,
        freeze=freeze,
    )
