import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax.meta import MAMLConfig, make_maml, sequence_mse_loss
from ssm_jax.models import ModelConfig, make_model

NET = make_model("mlp", ModelConfig(input_dim=1, output_dim=1, hidden_dim=6, num_layers=2))
# Eager calls compile every primitive for every new shape; the tests below jit what they evaluate, hand
# computations included (same maths, one compile).
init_net = jax.jit(NET.init)


def point_loss(params, batch):
    x, y = batch
    preds = NET.apply(params, (), x)[1]
    return jnp.mean((preds - y) ** 2), {"predictions": preds}


@functools.partial(jax.jit, static_argnames=("n_tasks", "shots"))
def sine_tasks(key, n_tasks=2, shots=5):
    k_amp, k_phase, k_x = jax.random.split(key, 3)
    amp = jax.random.uniform(k_amp, (n_tasks, 1, 1), minval=0.5, maxval=2.0)
    phase = jax.random.uniform(k_phase, (n_tasks, 1, 1), maxval=jnp.pi)
    x = jax.random.uniform(k_x, (n_tasks, 2 * shots, 1), minval=-3, maxval=3)
    y = amp * jnp.sin(x + phase)
    return (x[:, :shots], y[:, :shots]), (x[:, shots:], y[:, shots:])


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _central_differences(f, tree, eps=1e-6):
    flat, unravel = jax.flatten_util.ravel_pytree(tree)
    basis = jnp.eye(flat.size, dtype=flat.dtype) * eps
    plus = jax.vmap(lambda d: f(unravel(flat + d)))(basis)
    minus = jax.vmap(lambda d: f(unravel(flat - d)))(basis)
    return (plus - minus) / (2 * eps)


def _rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.fixture
def x64():
    with jax.enable_x64(True):  # scoped: the flag is restored even if the test fails
        yield


def _f64(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def test_second_order_meta_gradient_matches_finite_differences(x64):
    maml = make_maml(point_loss, MAMLConfig(inner_lr=0.1, num_inner_steps=2))
    params = _f64(init_net(jax.random.key(0), jnp.zeros((1, 1))))
    tasks = _f64(sine_tasks(jax.random.key(1)))
    f = jax.jit(lambda p: maml.outer_loss(p, None, tasks)[0])
    grad = _flat(jax.grad(f)(params))
    assert grad.dtype == jnp.float64
    fd = _central_differences(f, params)
    assert _rel_err(grad, fd) < 1e-3
    first_order = make_maml(point_loss, MAMLConfig(inner_lr=0.1, num_inner_steps=2, first_order=True))
    fo_grad = _flat(jax.jit(jax.grad(lambda p: first_order.outer_loss(p, None, tasks)[0]))(params))
    assert _rel_err(fo_grad, fd) > 1e-2  # the check above is sensitive to the second-order terms


def test_one_inner_step_called_directly_equals_the_scanned_step(x64):
    """One inner step is a call, not a one-step scan (faster to differentiate twice): same loss and meta-gradient
    as the scan over a one-step per-step support."""
    called = make_maml(point_loss, MAMLConfig(inner_lr=0.1))
    scanned = make_maml(point_loss, MAMLConfig(inner_lr=0.1, support_per_step=True))
    params = _f64(init_net(jax.random.key(0), jnp.zeros((1, 1))))
    supports, queries = _f64(sine_tasks(jax.random.key(3)))
    per_step = jax.tree.map(lambda x: x[:, None], supports)
    loss_and_grad = lambda maml, tasks: jax.jit(jax.value_and_grad(lambda p: maml.outer_loss(p, None, tasks)[0]))
    loss, grad = loss_and_grad(called, (supports, queries))(params)
    scan_loss, scan_grad = loss_and_grad(scanned, (per_step, queries))(params)
    np.testing.assert_allclose(loss, scan_loss, rtol=1e-12)
    np.testing.assert_allclose(_flat(grad), _flat(scan_grad), rtol=1e-10, atol=1e-12)
    assert (
        _rel_err(
            _flat(grad), _central_differences(lambda p: called.outer_loss(p, None, (supports, queries))[0], params)
        )
        < 1e-3
    )


def test_first_order_equals_hand_written_stop_gradient(x64):
    maml = make_maml(point_loss, MAMLConfig(inner_lr=0.1, num_inner_steps=2, first_order=True))
    params = _f64(init_net(jax.random.key(0), jnp.zeros((1, 1))))
    tasks = _f64(sine_tasks(jax.random.key(2)))

    def by_hand(params):
        losses = []
        for i in range(2):
            support, query = jax.tree.map(lambda x, i=i: x[i], tasks)
            fast = params
            for _ in range(2):
                g = jax.lax.stop_gradient(jax.grad(lambda p, s=support: point_loss(p, s)[0])(fast))
                fast = jax.tree.map(lambda p, g: p - 0.1 * g, fast, g)
            losses.append(point_loss(fast, query)[0])
        return jnp.mean(jnp.stack(losses))

    ours = jax.jit(jax.grad(lambda p: maml.outer_loss(p, None, tasks)[0]))(params)
    np.testing.assert_allclose(_flat(ours), _flat(jax.jit(jax.grad(by_hand))(params)), rtol=1e-10, atol=1e-12)


def test_meta_sgd_learning_rate_gradient_matches_finite_differences(x64):
    maml = make_maml(point_loss, MAMLConfig(inner_lr=0.1, num_inner_steps=2, learn_inner_lr=True))
    state = maml.init(_f64(init_net(jax.random.key(0), jnp.zeros((1, 1)))), optax.adam(1e-3))
    assert jax.tree.structure(state.inner_lr) == jax.tree.structure(state.params)
    tasks = _f64(sine_tasks(jax.random.key(3)))
    f = jax.jit(lambda lr: maml.outer_loss(state.params, lr, tasks)[0])
    grad = _flat(jax.grad(f)(state.inner_lr))
    assert float(jnp.linalg.norm(grad)) > 1e-4
    assert _rel_err(grad, _central_differences(f, state.inner_lr)) < 1e-3
    new_state, _ = maml.step(state, tasks)
    assert not np.allclose(_flat(new_state.inner_lr), _flat(state.inner_lr))


@pytest.mark.parametrize("name", ["ssm", "lstm"])
def test_maml_over_sequence_models_jitted_vmapped_no_retrace(name, key):
    chex.clear_trace_counter()
    model = make_model(name, ModelConfig(input_dim=2, output_dim=1, state_dim=8, hidden_dim=16))
    loss_fn = sequence_mse_loss(model)
    maml = make_maml(loss_fn, MAMLConfig(inner_lr=0.05, num_inner_steps=2, loss_diagnostics=True))

    @jax.jit
    def tasks_for(key, n=3):
        xs = jax.random.normal(key, (n, 2, 4, 10, 2))  # [tasks, support|query, B, T, D]
        scale = jnp.linspace(-1.0, 1.0, n)[:, None, None, None, None]
        ys = scale * jnp.cumsum(xs[..., :1], axis=-2) / 3.0
        return (xs[:, 0], ys[:, 0]), (xs[:, 1], ys[:, 1])

    tasks = tasks_for(key)
    state = maml.init(jax.jit(model.init)(key, tasks[0][0][0, 0]), optax.adam(1e-2))
    batch_loss, _ = jax.jit(maml.outer_loss)(state.params, None, tasks)
    meta_loss = jax.jit(maml.meta_loss)
    per_task = [meta_loss(state.params, jax.tree.map(lambda x, i=i: x[i], tasks))[0] for i in range(3)]
    np.testing.assert_allclose(batch_loss, jnp.mean(jnp.stack(per_task)), rtol=1e-5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, tasks):
        return maml.update(state, tasks)

    losses = []
    for k in jax.random.split(key, 20):
        state, metrics = step(state, tasks_for(k))
        losses.append(float(metrics["meta_loss"]))
    assert int(state.step) == 20
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert float(metrics["post_support_loss"]) < float(metrics["pre_support_loss"])


def test_bad_input_raises_before_tracing(key):
    with pytest.raises(ValueError, match="num_inner_steps must be an int >= 1, got 0"):
        MAMLConfig(num_inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr must be > 0, got -0.1"):
        MAMLConfig(inner_lr=-0.1)
    maml = make_maml(point_loss)
    state = maml.init(NET.init(key, jnp.zeros((1, 1))))
    (xs, ys), query = sine_tasks(key, n_tasks=3)
    with pytest.raises(ValueError, match=r"same leading task axis, got leading sizes \[2, 3\]"):
        maml.step(state, ((xs[:2], ys), query))


def test_support_per_step_descends_on_each_batch_in_turn_and_reports_grad_norms(key):
    """MAML-RL's K inner steps each use their own support batch: step k on support[k], the norms before clipping."""
    params = init_net(key, jnp.zeros((5, 1)))
    (x, y), _ = sine_tasks(jax.random.key(3), n_tasks=3)  # three batches, one per inner step
    config = MAMLConfig(inner_lr=0.05, num_inner_steps=3, support_per_step=True, inner_grad_clip=0.5)
    maml = make_maml(point_loss, config)
    fast, norms = jax.jit(maml.adapt_with_grad_norms)(params, (x, y))
    support_grad = jax.jit(lambda p, batch: jax.grad(lambda p: point_loss(p, batch)[0])(p))
    expected, expected_norms = params, []
    for k in range(3):
        grads = support_grad(expected, (x[k], y[k]))
        expected_norms.append(float(optax.tree.norm(grads)))
        scale = min(1.0, 0.5 / expected_norms[-1])
        expected = jax.tree.map(lambda p, g: p - 0.05 * scale * g, expected, grads)
    chex.assert_trees_all_close(fast, expected, atol=1e-6)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-5)
    first_step, first_norm = jax.jit(maml.inner_step)(params, (x[0], y[0]))
    grads = support_grad(params, (x[0], y[0]))
    scale = min(1.0, 0.5 / expected_norms[0])
    chex.assert_trees_all_close(first_step, jax.tree.map(lambda p, g: p - 0.05 * scale * g, params, grads), atol=1e-6)
    np.testing.assert_allclose(first_norm, expected_norms[0], rtol=1e-5)
    with pytest.raises(ValueError, match="support_per_step needs a leading axis of num_inner_steps=3"):
        maml.adapt(params, (x[:2], y[:2]))
