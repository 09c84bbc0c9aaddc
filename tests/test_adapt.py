import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax.adapt import (
    AdapterConfig,
    get_strategy,
    make_adapter,
    make_online_adaptation,
    predictive_entropy,
    register_strategy,
    strategies,
    strategy_names,
)
from ssm_jax.buffer import make_experience_buffer
from ssm_jax.buffer import ordered as buffer_ordered
from ssm_jax.meta import sequence_mse_loss
from ssm_jax.models import ModelConfig, make_model

CONFIG = ModelConfig(input_dim=2, output_dim=1, state_dim=8, hidden_dim=16)
MODEL = make_model("ssm", CONFIG)


regression_loss = sequence_mse_loss(MODEL)


def make_task(key, n=8, steps=12, scale=1.0):
    xs = jax.random.normal(key, (n, steps, 2))
    ys = scale * jnp.cumsum(xs[..., :1], axis=1) / 4.0
    return xs, ys


@pytest.fixture(scope="module")
def params():
    return MODEL.init(jax.random.key(0), jnp.zeros((12, 2)))


@pytest.fixture(scope="module")
def filled_buffer():
    buf = make_experience_buffer(64)
    state = buf.init(jax.tree.map(lambda x: x[0], make_task(jax.random.key(9))))
    return buf.freeze(buf.add(state, make_task(jax.random.key(10), n=64, scale=-1.0)))


def _tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_standard_adaptation_reduces_loss(params, key):
    adapter = make_adapter("standard", regression_loss, AdapterConfig(learning_rate=0.01, num_steps=30))
    batch = make_task(key)
    _, adapted, metrics = jax.jit(adapter.update)(adapter.init(params), params, batch, None, key)
    assert float(metrics["loss_after"]) < 0.5 * float(metrics["loss_before"])
    assert float(regression_loss(adapted, batch)[0]) == pytest.approx(float(metrics["loss_after"]), rel=1e-5)
    assert int(metrics["skipped_steps"]) == 0 and float(metrics["step_norm"]) > 0
    assert float(metrics["prediction_variance"]) > 0


def test_hybrid_with_zero_weight_is_standard_bit_for_bit(params, filled_buffer, key):
    cfg = AdapterConfig(experience_weight=0.0)
    batch = make_task(key)
    standard = make_adapter("standard", regression_loss, cfg)
    hybrid = make_adapter("hybrid", regression_loss, cfg)
    _, p_std, m_std = jax.jit(standard.update)(standard.init(params), params, batch, filled_buffer, key)
    _, p_hyb, m_hyb = jax.jit(hybrid.update)(hybrid.init(params), params, batch, filled_buffer, key)
    assert _tree_equal(p_std, p_hyb)
    assert float(m_std["loss_after"]) == float(m_hyb["loss_after"])


def test_hybrid_with_experience_changes_update(params, filled_buffer, key):
    cfg = AdapterConfig(experience_weight=1.0)
    batch = make_task(key)
    standard = make_adapter("standard", regression_loss, cfg)
    _, p_std, _ = jax.jit(standard.update)(standard.init(params), params, batch, None, key)
    hybrid = make_adapter("hybrid", regression_loss, cfg)
    _, p_hyb, metrics = jax.jit(hybrid.update)(hybrid.init(params), params, batch, filled_buffer, key)
    assert not _tree_equal(p_std, p_hyb)
    assert float(metrics["experience_loss"]) > 0


def test_hybrid_with_empty_buffer_is_standard_and_finite(params, key):
    batch = make_task(key)
    buf = make_experience_buffer(16)
    empty = buf.init(jax.tree.map(lambda x: x[0], batch))
    cfg = AdapterConfig(experience_weight=0.5)
    standard = make_adapter("standard", regression_loss, cfg)
    hybrid = make_adapter("hybrid", regression_loss, cfg)
    _, p_std, _ = jax.jit(standard.update)(standard.init(params), params, batch, None, key)
    _, p_hyb, metrics = jax.jit(hybrid.update)(hybrid.init(params), params, batch, empty, key)
    assert _tree_equal(p_std, p_hyb)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(metrics))


@pytest.fixture(scope="module")
def task_buffer():
    """A task buffer holding earlier items of the current task."""
    buf = make_experience_buffer(32)
    state = buf.init(jax.tree.map(lambda x: x[0], make_task(jax.random.key(11))))
    return buf.add(state, make_task(jax.random.key(12), n=16))


def test_hybrid_with_zero_weights_and_both_buffers_is_standard_bit_for_bit(params, filled_buffer, task_buffer, key):
    cfg = AdapterConfig(experience_weight=0.0, task_weight=0.0, num_steps=3)
    batch = make_task(key)
    standard = make_adapter("standard", regression_loss, cfg)
    hybrid = make_adapter("hybrid", regression_loss, cfg)
    _, p_std, _ = jax.jit(standard.update)(standard.init(params), params, batch, None, key)
    update = jax.jit(hybrid.update)
    for meta in (filled_buffer, None):
        _, p_hyb, metrics = update(hybrid.init(params), params, batch, meta, key, task_buffer=task_buffer)
        assert _tree_equal(p_std, p_hyb)
        assert float(metrics["task_replay_loss"]) > 0  # replayed, at weight 0


def test_replaying_the_tasks_own_data_changes_the_update(params, task_buffer, key):
    """The task term moves the params, each weight acts on its own source, and what the buffer holds matters."""
    batch = make_task(key)
    hybrid = make_adapter("hybrid", regression_loss, AdapterConfig(experience_weight=1.0, task_weight=0.0))
    update = jax.jit(hybrid.update)
    _, p_off, _ = update(hybrid.init(params), params, batch, None, key, task_buffer=task_buffer)
    on = hybrid.init(params).replace(task_weight=jnp.asarray(1.0))
    _, p_on, metrics = update(on, params, batch, None, key, task_buffer=task_buffer)
    assert not _tree_equal(p_off, p_on)
    assert float(metrics["experience_loss"]) == 0.0 and float(metrics["task_replay_loss"]) > 0
    buf = make_experience_buffer(32)
    other = buf.add(buf.init(jax.tree.map(lambda x: x[0], batch)), make_task(jax.random.key(13), n=16, scale=3.0))
    _, p_other, _ = update(on, params, batch, None, key, task_buffer=other)
    assert not _tree_equal(p_on, p_other)


def test_online_task_buffer_starts_empty_and_holds_every_window_of_this_task(params, key):
    windows_loss = lambda p, windows: regression_loss(p, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), windows))
    config = AdapterConfig(num_steps=1, task_weight=1.0)
    adapter = make_adapter("hybrid", regression_loss, config, task_loss_fn=windows_loss)
    online = make_online_adaptation(adapter, window=4, every=2, task_capacity=8)
    xs, ys = make_task(key, n=10)
    state = online.init(params, (xs[0], ys[0]))
    assert int(state.task_buffer.size) == 0

    def body(state, inputs):
        item, k = inputs
        return online.step(state, item, None, k)

    run = jax.jit(lambda s, xs, ys: jax.lax.scan(body, s, ((xs, ys), jax.random.split(key, 10))))
    final, metrics = run(state, xs, ys)
    adapted = np.flatnonzero(np.asarray(metrics["adapted"]))  # steps 3, 5, 7, 9: windows ending there
    items, mask = buffer_ordered(final.task_buffer)
    assert int(final.task_buffer.size) == len(adapted) == 4
    for slot, t in enumerate(adapted):
        np.testing.assert_array_equal(np.asarray(items[0][slot]), np.asarray(xs[t - 3 : t + 1]))
    assert not np.asarray(mask)[4:].any()
    # a new task starts from a fresh state: its buffer is empty and holds only its own windows afterwards
    other_xs, other_ys = make_task(jax.random.key(14), n=10)
    fresh = online.init(params, (other_xs[0], other_ys[0]))
    assert int(fresh.task_buffer.size) == 0
    other, _ = run(fresh, other_xs, other_ys)
    held = np.asarray(buffer_ordered(other.task_buffer)[0][0][:4]).reshape(-1, 2)
    assert {tuple(row) for row in held} <= {tuple(row) for row in np.asarray(other_xs).reshape(-1, 2)}


def test_nonfinite_batch_skips_update(params, key):
    xs, ys = make_task(key)
    adapter = make_adapter("standard", regression_loss, AdapterConfig(num_steps=3))
    astate = adapter.init(params)
    new_state, adapted, metrics = jax.jit(adapter.update)(astate, params, (xs, ys.at[0, 3, 0].set(jnp.nan)), None, key)
    assert _tree_equal(adapted, params)
    assert _tree_equal(new_state.opt_state.inner_state, astate.opt_state.inner_state)  # Adam moments untouched
    assert int(metrics["skipped_steps"]) == 3 and int(new_state.skipped) == 3
    assert int(new_state.opt_state.total_notfinite) == 3  # optax.apply_if_finite counted the same skips


def test_trust_region_and_ema_anchor_bound_drift(params, key):
    eps = 0.05
    cfg = AdapterConfig(learning_rate=0.05, num_steps=20, trust_region_eps=eps, ema_decay=0.9)
    adapter = make_adapter("standard", regression_loss, cfg)
    astate, adapted, _ = jax.jit(adapter.update)(adapter.init(params), params, make_task(key), None, key)
    drift = optax.tree.norm(jax.tree.map(jnp.subtract, adapted, astate.anchor))
    assert float(drift) <= eps + 1e-6
    unbounded = make_adapter("standard", regression_loss, AdapterConfig(learning_rate=0.05, num_steps=20))
    _, free, _ = jax.jit(unbounded.update)(unbounded.init(params), params, make_task(key), None, key)
    assert float(optax.tree.norm(jax.tree.map(jnp.subtract, free, params))) > 2 * eps


def test_max_step_bound_holds_per_parameter(params, key):
    scale = 1e-3
    cfg = AdapterConfig(learning_rate=0.5, num_steps=1, max_step_scale=scale, optimizer="sgd", grad_clip_norm=None)
    adapter = make_adapter("standard", regression_loss, cfg)
    _, adapted, _ = jax.jit(adapter.update)(adapter.init(params), params, make_task(key), None, key)
    ratios = [
        float(jnp.linalg.norm(new - old) / jnp.linalg.norm(old))
        for new, old in zip(jax.tree.leaves(adapted), jax.tree.leaves(params), strict=True)
    ]
    assert max(ratios) <= scale * (1 + 1e-3)  # slack only for float32 rounding of p + Δp
    assert max(ratios) > 0.9 * scale  # the bound was active


def test_tent_moves_entropy_in_expected_direction(key):
    classifier = make_model("mlp", ModelConfig(input_dim=3, output_dim=4, hidden_dim=16))
    xs = jax.random.normal(key, (32, 1, 3))
    params = classifier.init(key, xs[0])

    def unsupervised_loss(params, batch):
        logits = jax.vmap(lambda x: classifier.apply(params, (), x)[1])(batch)
        return jnp.zeros(()), {"logits": logits}

    def entropy_after(weight):
        cfg = AdapterConfig(strategy="tent", entropy_weight=weight, num_steps=10, learning_rate=0.01)
        adapter = make_adapter("standard", unsupervised_loss, cfg)
        _, adapted, _ = jax.jit(adapter.update)(adapter.init(params), params, xs, None, key)
        return float(predictive_entropy(unsupervised_loss(adapted, xs)[1]["logits"]))

    before = float(predictive_entropy(unsupervised_loss(params, xs)[1]["logits"]))
    assert entropy_after(1.0) < before - 1e-3
    assert entropy_after(-1.0) > before + 1e-3


def test_vmap_over_tasks_equals_per_task(params, filled_buffer, key):
    adapter = make_adapter("hybrid", regression_loss, AdapterConfig(num_steps=3))
    keys = jax.random.split(key, 4)
    batches = jax.vmap(make_task)(keys)
    astates = jax.vmap(lambda _: adapter.init(params))(jnp.arange(4))
    _, adapted, metrics = jax.jit(jax.vmap(adapter.update, in_axes=(0, None, 0, None, 0)))(
        astates, params, batches, filled_buffer, keys
    )
    update = jax.jit(adapter.update)
    for i in range(4):
        batch = jax.tree.map(lambda x: x[i], batches)
        _, single, m = update(adapter.init(params), params, batch, filled_buffer, keys[i])
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(jax.tree.map(lambda x: x[i], adapted)), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        assert float(m["loss_after"]) == pytest.approx(float(metrics["loss_after"][i]), rel=1e-4)


def test_jitted_update_loop_compiles_once(params, filled_buffer, key):
    adapter = make_adapter("hybrid", regression_loss, AdapterConfig(num_steps=2))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(astate, params, batch, buffer_state, key):
        return adapter.update(astate, params, batch, buffer_state, key)

    astate = adapter.init(params)
    p = params
    for k in jax.random.split(key, 5):
        astate, p, metrics = update(astate, p, make_task(k), filled_buffer, k)
    assert int(astate.step) == 10
    assert float(metrics["feature_shift"]) >= 0


def test_online_adaptation_adapts_every_k_steps(params, key):
    adapter = make_adapter("standard", regression_loss, AdapterConfig(num_steps=2))
    online = make_online_adaptation(adapter, window=4, every=2)
    xs, ys = make_task(key, n=10)
    state = online.init(params, (xs[0], ys[0]))

    def body(state, inputs):
        item, k = inputs
        return online.step(state, item, None, k)

    state, metrics = jax.jit(lambda s: jax.lax.scan(body, s, ((xs, ys), jax.random.split(key, 10))))(state)
    np.testing.assert_array_equal(np.asarray(metrics["adapted"]), [0, 0, 0, 1, 0, 1, 0, 1, 0, 1])
    assert int(state.adapt_state.step) == 8
    assert not _tree_equal(state.params, params)


def test_registry_and_config_errors(monkeypatch):
    monkeypatch.setattr(strategies, "_STRATEGIES", dict(strategies._STRATEGIES))  # "halve" stays in this test

    @register_strategy("halve")
    def halve(loss, aux, config):
        return 0.5 * loss

    assert get_strategy("halve")(2.0, None, None) == 1.0
    with pytest.raises(ValueError, match="unknown strategy 'nope'; registered: .*halve, none, tent"):
        AdapterConfig(strategy="nope")
    with pytest.raises(ValueError, match="unknown adaptation mode 'fancy'"):
        make_adapter("fancy", regression_loss)
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd"):
        AdapterConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="hybrid adaptation needs a buffer_state .* or a task_buffer"):
        make_adapter("hybrid", regression_loss).update(None, None, None, None, None)
    monkeypatch.undo()
    assert "halve" not in strategy_names()
