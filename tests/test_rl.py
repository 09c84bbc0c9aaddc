import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax import envs
from ssm_jax.adapt import AdapterConfig
from ssm_jax.adapt.rl import make_rl_adaptation
from ssm_jax.meta import MAMLConfig
from ssm_jax.meta.rl import (
    PolicyBatch,
    RLConfig,
    discounted_returns,
    episode_time,
    experience_windows,
    gae,
    make_maml_rl,
    make_policy_losses,
    prepare_batch,
    train_per_task,
)
from ssm_jax.models import GaussianHead, ModelConfig, attach_heads, make_model
from ssm_jax.rollout import rollout


def test_discounted_returns_and_gae_match_hand_computation():
    rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
    dones = jnp.array([False, True, False, True])
    np.testing.assert_allclose(discounted_returns(rewards, dones, 0.5), [1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4])
    values = jnp.array([0.5, 1.0, 1.5, 2.0])
    next_values = jnp.array([1.0, 10.0, 2.0, 20.0])
    terminated = jnp.array([False, False, False, True])  # step 1 is a truncation: bootstrap from V(final obs)=10
    g, lam = 0.9, 0.8
    d = [1 + g * 1.0 - 0.5, 2 + g * 10.0 - 1.0, 3 + g * 2.0 - 1.5, 4 - 2.0]
    expected = [d[0] + g * lam * d[1], d[1], d[2] + g * lam * d[3], d[3]]
    np.testing.assert_allclose(gae(rewards, values, next_values, terminated, dones, g, lam), expected, rtol=1e-6)
    np.testing.assert_array_equal(episode_time(jnp.array([True, False, False, True, False])), [0, 1, 2, 0, 1])


def _tiny_policy():
    return attach_heads(make_model("mlp", ModelConfig(2, 8, hidden_dim=8, num_layers=1)), pi=GaussianHead(2))


def test_ppo_and_pg_losses_match_hand_computation(key):
    policy = _tiny_policy()
    params = policy.init(key, jnp.zeros((1, 2)))
    obs = jax.random.normal(key, (3, 4, 2))
    action = jax.random.normal(jax.random.key(1), (3, 4, 2))
    advantage = jax.random.normal(jax.random.key(2), (3, 4))
    old = jax.random.normal(jax.random.key(3), (3, 4)) - 2.0
    batch = PolicyBatch(obs, action, advantage, old, jnp.zeros((3, 4), bool).at[:, 0].set(True), ())
    config = RLConfig(clip_eps=0.2)
    inner, ppo, _ = make_policy_losses(policy, config)
    _, out = jax.vmap(lambda o: policy.apply(params, (), o))(obs)
    mean, log_std = out["pi"].mean, out["pi"].log_std
    log_prob = np.sum(-0.5 * ((action - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), axis=-1)
    ratio = np.exp(log_prob - old)
    surrogate = np.minimum(ratio * advantage, np.clip(ratio, 0.8, 1.2) * advantage)
    np.testing.assert_allclose(ppo(params, batch)[0], -surrogate.mean(), rtol=1e-5)
    np.testing.assert_allclose(inner(params, batch)[0], -(log_prob * advantage).mean(), rtol=1e-5)
    lvc_batch = batch._replace(old_log_prob=jnp.asarray(log_prob))
    grad_pg = jax.grad(lambda p: inner(p, batch)[0])(params)
    grad_lvc = jax.grad(lambda p: make_policy_losses(policy, RLConfig(inner_objective="lvc"))[0](p, lvc_batch)[0])(
        params
    )
    for a, b in zip(jax.tree.leaves(grad_pg), jax.tree.leaves(grad_lvc), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # LVC has the PG gradient at the sampling params
    with pytest.raises(ValueError, match="inner_objective must be one of pg, lvc"):
        RLConfig(inner_objective="dice")


def _nav_meta_rl(outer_epochs=1):
    env = envs.make("navigation-2d")
    policy = attach_heads(make_model("mlp", ModelConfig(2, 32, hidden_dim=32)), pi=GaussianHead(2))
    rl = RLConfig()
    return env, policy, rl, make_maml_rl(env, policy, MAMLConfig(inner_lr=0.1), rl, 10, 100, outer_epochs)


def test_maml_rl_meta_step_jitted_vmapped_single_trace(key):
    chex.clear_trace_counter()
    env, policy, _, meta_rl = _nav_meta_rl()
    state = meta_rl.init(policy.init(key, jnp.zeros((1, 2))), optax.adam(1e-3))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, key, tasks):
        state, metrics, query = meta_rl.meta_update(state, key, tasks)
        items, valid = jax.vmap(lambda q: experience_windows(q, 10))(query)  # per task
        return state, metrics, (jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), items), valid.reshape(-1))

    initial = jax.tree.map(jnp.copy, state)
    history = []
    for k in jax.random.split(key, 3):
        state, metrics, ((obs, actions), valid) = step(state, k, env.sample_tasks(k, 4))
        history.append(metrics)
    assert int(state.step) == 3
    replay = initial
    for k, expected in zip(jax.random.split(key, 3), history, strict=True):  # same seed -> identical metrics
        replay, metrics_again, _ = step(replay, k, env.sample_tasks(k, 4))
        for a, b in zip(jax.tree.leaves(metrics_again), jax.tree.leaves(expected), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    assert obs.shape == (4 * 10 * 10, 10, 2) and actions.shape == (400, 10, 2) and bool(jnp.all(valid))
    assert all(bool(jnp.isfinite(v)) for v in jax.tree.leaves(metrics))
    assert float(metrics["meta_grad_norm"]) > 0


def test_maml_rl_learns_to_adapt_on_navigation(key):
    env, policy, rl, meta_rl = _nav_meta_rl(outer_epochs=3)
    init_params = policy.init(key, jnp.zeros((1, 2)))
    state = meta_rl.init(init_params, optax.adam(3e-3))

    @jax.jit
    def chunk(state, key):
        def body(state, k):
            task_key, update_key = jax.random.split(k)
            state, metrics, _ = meta_rl.meta_update(state, update_key, env.sample_tasks(task_key, 20))
            return state, metrics

        return jax.lax.scan(body, state, jax.random.split(key, 10))

    for k in jax.random.split(jax.random.key(1), 6):
        state, _ = chunk(state, k)
    adapter = AdapterConfig(learning_rate=0.1, num_steps=1, optimizer="sgd", grad_clip_norm=None)
    curve = jax.jit(jax.vmap(make_rl_adaptation(meta_rl, adapter, rl, 1, mode="standard"), (0, 0, None, None, None)))
    held_out = env.sample_tasks(jax.random.key(123), 40)
    keys = jax.random.split(jax.random.key(7), 40)
    trained, _ = curve(keys, held_out, state.params, None, 0.0)
    untrained, _ = curve(keys, held_out, init_params, None, 0.0)
    pre, post = float(trained[:, 0].mean()), float(trained[:, 1].mean())
    random_return = float(untrained[:, 0].mean())
    assert post > pre + 10.0, (pre, post)
    assert post > random_return + 20.0, (random_return, post)


def test_meta_update_with_zero_inner_lr_is_a_ppo_step_on_the_query(key):
    # The flagship's pretrained baseline runs MAML's program with inner lr 0: that must be plain PPO on all tasks.
    env, policy, rl, meta_rl = _nav_meta_rl()
    params = policy.init(key, jnp.zeros((1, 2)))
    optimizer = optax.sgd(0.1)  # not Adam: its g / |g| amplifies float32 round-off on near-zero gradients
    state = meta_rl.init(params, optimizer).replace(inner_lr=jnp.zeros((), jnp.float32))
    new_state, _, query = jax.jit(meta_rl.meta_update)(state, jax.random.key(5), env.sample_tasks(key, 3))

    batches = jax.vmap(lambda t: prepare_batch(t, rl))(query)
    grads = jax.grad(lambda p: jnp.mean(jax.vmap(lambda b: meta_rl.outer_loss(p, b)[0])(batches)))(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    expected = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(new_state.params, expected, atol=1e-6)
    assert float(optax.tree.norm(jax.tree.map(jnp.subtract, expected, params))) > 1e-3  # the step did something


def test_train_per_task_oracle_improves_on_each_goal(key):
    env, policy, _, meta_rl = _nav_meta_rl(outer_epochs=3)
    params = policy.init(key, jnp.zeros((1, 2)))
    tasks = env.sample_tasks(jax.random.key(11), 4)
    train = jax.jit(train_per_task, static_argnums=(0, 2, 5))
    returns = np.asarray(train(meta_rl, params, optax.adam(1e-2), jax.random.key(12), tasks, 40))
    assert returns.shape == (4, 40)
    assert np.all(returns[:, -5:].mean(axis=1) > returns[:, 0] + 10.0), returns[:, [0, -1]]


def test_rollout_of_experience_windows_respects_boundaries(key):
    env = envs.make("navigation-2d", horizon=5)
    policy = _tiny_policy()
    traj = rollout(key, env, envs.NavigationTask(jnp.zeros(2)), policy, policy.init(key, jnp.zeros((1, 2))), 2, 12)
    (obs, actions), valid = experience_windows(traj, 4)
    assert obs.shape == (2 * 3, 4, 2)
    # episodes end at steps 4 and 9: windows [0,4) ok, [4,8) crosses the end at 4, [8,12) crosses 9
    np.testing.assert_array_equal(np.asarray(valid).reshape(2, 3), [[True, False, False]] * 2)
    np.testing.assert_allclose(actions[0], traj.action[:4, 0])


@pytest.mark.parametrize("name", ["s5", "lstm", "gru", "transformer"])
def test_every_model_runs_the_meta_rl_pipeline(name, key):
    """The seeds' comparison (SSM vs LSTM vs GRU vs Transformer vs MLP) needs every core to meta-train and adapt;
    ssm runs it in the halfcheetah smoke test and mlp in the navigation learning test."""
    env = envs.make("navigation-2d", horizon=6)
    cfg = ModelConfig(2, 8, state_dim=4, hidden_dim=8, num_layers=1, num_heads=2, window=8)
    policy = attach_heads(make_model(name, cfg), pi=GaussianHead(2))
    rl = RLConfig()
    meta_rl = make_maml_rl(env, policy, MAMLConfig(inner_lr=0.1, inner_grad_clip=1.0), rl, 2, 6)
    state = meta_rl.init(policy.init(key, jnp.zeros((1, 2))), optax.adam(1e-3))
    state, metrics, _ = jax.jit(meta_rl.meta_update)(state, key, env.sample_tasks(key, 2))
    assert all(bool(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)) and float(metrics["meta_grad_norm"]) > 0
    adapter = AdapterConfig(learning_rate=0.1, num_steps=1, optimizer="sgd")
    returns, _ = jax.jit(make_rl_adaptation(meta_rl, adapter, rl, 1, mode="standard"))(
        key, envs.NavigationTask(jnp.array([0.2, 0.1])), state.params, None, 0.0
    )
    assert returns.shape == (2,) and bool(jnp.all(jnp.isfinite(returns)))
