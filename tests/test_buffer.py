from collections import deque

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssm_jax import buffer
from ssm_jax.buffer import cut_windows, make_experience_buffer

# Jitted once for the whole module: an eager call compiles every primitive for every new shape, and hypothesis
# draws many capacities and batch sizes (16 s eager, against a compile per distinct shape).
_init = jax.jit(buffer.init, static_argnums=0)
_add = jax.jit(buffer.add)
_ordered = jax.jit(buffer.ordered)
_sample = jax.jit(buffer.sample, static_argnums=2)


def _item(value):
    return {"obs": jnp.full((2,), value, jnp.float32), "target": jnp.asarray(value, jnp.int32)}


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 7),
    batches=st.lists(st.integers(1, 12), min_size=0, max_size=6),
    seed=st.integers(0, 99),
)
def test_buffer_matches_deque_model(capacity, batches, seed):
    state = _init(capacity, _item(0))
    reference = deque(maxlen=capacity)
    counter = 1
    for n in batches:
        values = np.arange(counter, counter + n)
        counter += n
        state = _add(state, {"obs": jnp.repeat(jnp.asarray(values, jnp.float32)[:, None], 2, 1), "target": values})
        reference.extend(values.tolist())
    items, mask = _ordered(state)
    assert int(buffer.size(state)) == len(reference)
    np.testing.assert_array_equal(np.asarray(mask), np.arange(capacity) < len(reference))
    np.testing.assert_array_equal(np.asarray(items["target"])[: len(reference)], list(reference))
    batch, sample_mask = _sample(state, jax.random.key(seed), 16)
    assert bool(jnp.all(sample_mask)) == bool(reference)
    if reference:
        assert set(np.asarray(batch["target"]).tolist()) <= set(reference)
        np.testing.assert_array_equal(batch["obs"][:, 0], batch["target"].astype(np.float32))
    else:
        assert not np.any(np.asarray(batch["target"]))


def test_masked_add_keeps_only_selected_in_order():
    buf = make_experience_buffer(4)
    state = buf.init(jnp.zeros(()))
    state = buf.add(state, jnp.arange(1.0, 7.0), mask=jnp.array([1, 0, 1, 1, 0, 1], bool))
    items, mask = buf.ordered(state)
    np.testing.assert_array_equal(items[np.asarray(mask)], [1.0, 3.0, 4.0, 6.0])
    state = buf.add(state, jnp.arange(7.0, 9.0), mask=jnp.array([0, 1], bool))
    items, mask = buf.ordered(state)
    np.testing.assert_array_equal(items, [3.0, 4.0, 6.0, 8.0])


def test_empty_buffer_samples_zeros_with_false_mask_under_jit():
    buf = make_experience_buffer(5)
    state = buf.init({"x": jnp.ones((3,))})
    batch, mask = jax.jit(buf.sample, static_argnums=2)(state, jax.random.key(0), 4)
    assert batch["x"].shape == (4, 3) and not bool(jnp.any(mask))
    assert bool(jnp.all(batch["x"] == 0)) and bool(jnp.all(jnp.isfinite(batch["x"])))


def test_vmap_over_tasks_and_donation_and_no_retrace():
    buf = make_experience_buffer(8)
    states = jax.vmap(lambda _: buf.init(jnp.zeros(3)))(jnp.arange(4))
    items = jnp.arange(4 * 5 * 3, dtype=jnp.float32).reshape(4, 5, 3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def add_all(states, items):
        return jax.vmap(buf.add)(states, items)

    add_donated = jax.jit(add_all, donate_argnums=0)
    for _ in range(3):
        states = add_donated(states, items)
    for task in range(4):
        single = buf.init(jnp.zeros(3))
        for _ in range(3):
            single = buf.add(single, items[task])
        np.testing.assert_array_equal(states.items[task], single.items)
        assert int(states.size[task]) == 8


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="capacity must be a positive int, got 0"):
        make_experience_buffer(0)
    buf = make_experience_buffer(3)
    state = buf.init({"obs": jnp.zeros((2,)), "target": jnp.zeros(())})
    with pytest.raises(ValueError, match=r"leaf \['obs'\]: items need shape \[n, \*\(2,\)\], got \(4, 3\)"):
        buf.add(state, {"obs": jnp.zeros((4, 3)), "target": jnp.zeros(4)})
    with pytest.raises(ValueError, match=r"leaf \['target'\]: items have dtype int32, the buffer stores float32"):
        buf.add(state, {"obs": jnp.zeros((4, 2)), "target": jnp.zeros(4, jnp.int32)})
    with pytest.raises(ValueError, match="tree structure"):
        buf.add(state, {"obs": jnp.zeros((4, 2))})
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        buf.sample(state, jax.random.key(0), 0)
    with pytest.raises(ValueError, match="frozen"):
        buf.add(buf.freeze(state), {"obs": jnp.zeros((1, 2)), "target": jnp.zeros(1)})


def test_cut_windows_respects_episode_boundaries():
    seq = {"x": jnp.arange(8.0)}
    dones = jnp.array([0, 0, 1, 0, 0, 0, 0, 1], bool)
    windows, valid = cut_windows(seq, dones, length=3)
    assert windows["x"].shape == (6, 3)
    np.testing.assert_array_equal(windows["x"][0], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(valid), [True, False, False, True, True, True])
