import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm_jax.models import (
    MODEL_NAMES,
    CategoricalHead,
    GaussianHead,
    ModelConfig,
    ValueHead,
    attach_heads,
    make_model,
)

T = 10


def _setup(name, config, key):
    """The model, its params and inputs `[T, input_dim]`. Init and the equivalence tests' applies are jitted: an
    eager Flax init or transformer apply dispatches (and compiles) op by op, 5-10x slower than one program."""
    model = make_model(name, config)
    k_init, k_x = jax.random.split(key)
    xs = jax.random.normal(k_x, (T, config.input_dim))
    return model, jax.jit(model.init)(k_init, xs), xs


def _run_steps(model, params, carry, xs, resets):
    step = jax.jit(model.step)
    ys = []
    for t in range(xs.shape[0]):
        carry, y = step(params, carry, xs[t], resets[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def _assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_apply_equals_repeated_step(name, tiny_config, key):
    model, params, xs = _setup(name, tiny_config, key)
    resets = jnp.zeros(T, bool).at[4].set(True)
    carry_seq, ys_seq = jax.jit(model.apply)(params, model.initial_carry(), xs, resets)
    carry_step, ys_step = _run_steps(model, params, model.initial_carry(), xs, resets)
    assert ys_seq.shape == (T, tiny_config.output_dim)
    np.testing.assert_allclose(ys_seq, ys_step, atol=1e-5)
    _assert_trees_close(carry_seq, carry_step, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reset_restarts_from_initial_carry(name, tiny_config, key):
    model, params, xs = _setup(name, tiny_config, key)
    cut = 6
    resets = jnp.zeros(T, bool).at[cut].set(True)
    apply = jax.jit(model.apply)
    _, ys = apply(params, model.initial_carry(), xs, resets)
    _, ys_tail = apply(params, model.initial_carry(), xs[cut:])
    np.testing.assert_allclose(ys[cut:], ys_tail, atol=1e-5)
    if name != "mlp":  # the head of the sequence must matter to a stateful model
        _, ys_no_reset = apply(params, model.initial_carry(), xs)
        assert not np.allclose(ys_no_reset[cut:], ys_tail, atol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_chunked_apply_carries_state(name, tiny_config, key):
    model, params, xs = _setup(name, tiny_config, key)
    apply = jax.jit(model.apply)
    _, ys = apply(params, model.initial_carry(), xs)
    carry, ys_a = apply(params, model.initial_carry(), xs[:4])
    _, ys_b = apply(params, carry, xs[4:])
    np.testing.assert_allclose(jnp.concatenate([ys_a, ys_b]), ys, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_vmap_over_tasks_equals_per_task(name, tiny_config, key):
    model, params, _ = _setup(name, tiny_config, key)
    xs = jax.random.normal(jax.random.key(1), (3, T, tiny_config.input_dim))
    resets = jnp.zeros((3, T), bool).at[1, 5].set(True)
    carries = model.initial_carry((3,))
    _, ys = jax.jit(jax.vmap(model.apply, in_axes=(None, 0, 0, 0)))(params, carries, xs, resets)
    apply = jax.jit(model.apply)
    for i in range(3):
        _, ys_i = apply(params, model.initial_carry(), xs[i], resets[i])
        np.testing.assert_allclose(ys[i], ys_i, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_jit_matches_eager_and_gradients_are_finite(name, tiny_config, key):
    model, params, xs = _setup(name, tiny_config, key)
    resets = jnp.zeros(T, bool).at[3].set(True)

    def loss(p):
        return jnp.mean(model.apply(p, model.initial_carry(), xs, resets)[1] ** 2)

    np.testing.assert_allclose(jax.jit(loss)(params), loss(params), rtol=1e-5)
    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_float64_params_compute_in_float64(name, tiny_config, key):
    with jax.enable_x64(True):
        model, params, xs = _setup(name, tiny_config, key)
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
        _, ys = jax.jit(model.apply)(params, model.initial_carry(), xs.astype(jnp.float64))
        assert ys.dtype == jnp.float64


def test_ssm_step_matches_hand_computation(tiny_config, key):
    model, params, xs = _setup("ssm", tiny_config, key)
    p = params["params"]
    relu = lambda v: np.maximum(v, 0.0)
    dense = lambda layer, v: v @ np.asarray(layer["kernel"]) + np.asarray(layer["bias"])
    h = np.asarray(jax.random.normal(jax.random.key(2), (tiny_config.state_dim,)))
    x = np.asarray(xs[0])
    h_next = dense(p["mlp_a"]["dense_1"], relu(dense(p["mlp_a"]["dense_0"], h))) + x @ np.asarray(p["b"]["kernel"])
    y = dense(p["mlp_c"]["dense_1"], relu(dense(p["mlp_c"]["dense_0"], h_next))) + x @ np.asarray(p["d"]["kernel"])
    carry, out = model.step(params, jnp.asarray(h), xs[0])
    np.testing.assert_allclose(carry, h_next, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)


def test_s5_associative_scan_equals_sequential_scan(tiny_config, key):
    from ssm_jax.models.s5 import S5Layer

    layer = S5Layer(tiny_config.state_dim, tiny_config.hidden_dim, tiny_config.dt_min, tiny_config.dt_max)
    us = jax.random.normal(key, (T, tiny_config.hidden_dim))
    x0 = jnp.zeros(tiny_config.state_dim, jnp.complex64) + 0.3j
    resets = jnp.zeros(T, bool).at[5].set(True)
    params = layer.init(jax.random.key(3), x0, us[0])
    x_final, ys = layer.apply(params, x0, us, resets, method="sequence")

    lam_bar, b_bar = layer.apply(params, method="discretise")
    x, ys_ref = x0, []
    for t in range(T):
        x = jnp.where(resets[t], 0.0, lam_bar * x) + b_bar @ us[t]
        ys_ref.append(layer.apply(params, x, us[t], method="_readout"))
    np.testing.assert_allclose(ys, jnp.stack(ys_ref), atol=1e-5)
    np.testing.assert_allclose(x_final, x, atol=1e-5)


def test_transformer_window_limits_attention(key):
    config = ModelConfig(input_dim=2, output_dim=2, hidden_dim=8, num_heads=2, num_layers=1, attention_span=3)
    model, params, _ = _setup("transformer", config, key)
    xs = jax.random.normal(key, (8, 2))
    other = xs.at[:2].set(-xs[:2])  # differs only outside the last 3 steps of the final query
    apply = jax.jit(model.apply)
    _, ys = apply(params, model.initial_carry(), xs)
    _, ys_other = apply(params, model.initial_carry(), other)
    np.testing.assert_allclose(ys[-1], ys_other[-1], atol=1e-5)
    assert not np.allclose(ys[2], ys_other[2], atol=1e-4)


def test_heads_compose_with_any_core(tiny_config, key):
    policy = attach_heads(make_model("gru", tiny_config), pi=GaussianHead(4), value=ValueHead())
    xs = jax.random.normal(key, (T, tiny_config.input_dim))
    params = jax.jit(policy.init)(key, xs)
    _, out = jax.jit(policy.apply)(params, policy.initial_carry(), xs)
    assert out["pi"].mean.shape == (T, 4) and out["pi"].log_std.shape == (T, 4) and out["value"].shape == (T,)
    _, step_out = jax.jit(policy.step)(params, policy.initial_carry(), xs[0])
    np.testing.assert_allclose(step_out["pi"].mean, out["pi"].mean[0], atol=1e-6)
    discrete = attach_heads(make_model("ssm", tiny_config), pi=CategoricalHead(5))
    _, logits = jax.jit(discrete.apply)(jax.jit(discrete.init)(key, xs), discrete.initial_carry(), xs)
    assert logits["pi"].shape == (T, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_dim": 0, "output_dim": 2}, "ModelConfig.input_dim must be a positive int"),
        ({"input_dim": 3, "output_dim": 2, "state_dim": -1}, "ModelConfig.state_dim must be a positive int"),
        ({"input_dim": 3, "output_dim": 2, "hidden_dim": 2.5}, "ModelConfig.hidden_dim must be a positive int"),
        ({"input_dim": 3, "output_dim": 2, "dt_min": 0.5, "dt_max": 0.1}, "dt_min < dt_max"),
    ],
)
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_model_and_bad_inputs_raise(tiny_config, key):
    with pytest.raises(ValueError, match="unknown model 'rnn'; expected one of ssm, s5, mlp, lstm, gru, transformer"):
        make_model("rnn", tiny_config)
    with pytest.raises(ValueError, match="num_heads=3 must divide hidden_dim=16"):
        make_model("transformer", ModelConfig(3, 2, hidden_dim=16, num_heads=3))
    model, params, xs = _setup("ssm", tiny_config, key)
    with pytest.raises(ValueError, match=r"xs must have shape \[T, 3\]"):
        model.apply(params, model.initial_carry(), jnp.zeros((T, 4)))
    with pytest.raises(ValueError, match="resets must have shape"):
        model.apply(params, model.initial_carry(), xs, jnp.zeros(T + 1, bool))
