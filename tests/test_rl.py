import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax import envs
from ssm_jax.adapt import AdapterConfig
from ssm_jax.adapt.rl import make_rl_adaptation
from ssm_jax.buffer import experience_windows
from ssm_jax.envs import RunningMeanStd
from ssm_jax.envs.normalize import normalize
from ssm_jax.meta import MAMLConfig
from ssm_jax.meta.estimators import discounted_returns, episode_time, gae, linear_baseline
from ssm_jax.meta.policy_losses import (
    PolicyBatch,
    RLConfig,
    make_policy_losses,
    policy_kl,
    policy_outputs,
    prepare_batch,
)
from ssm_jax.meta.rl import make_maml_rl, train_per_task
from ssm_jax.meta.trust_region import TrustRegionConfig
from ssm_jax.models import GaussianHead, ModelConfig, attach_heads, make_model
from ssm_jax.rollout import Trajectory, action_log_prob, rollout
from ssm_jax.trainers import EvalConfig, HParams, TrainerConfig, make_meta_rl_trainer

SLOW = pytest.mark.slow  # over 15 s on the idle 2-core machine


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
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    obs = jax.random.normal(key, (4, 3, 2))  # time-major: T = 4 steps of N = 3 envs
    action = jax.random.normal(jax.random.key(1), (4, 3, 2))
    advantage = jax.random.normal(jax.random.key(2), (4, 3))
    old = jax.random.normal(jax.random.key(3), (4, 3)) - 2.0
    batch = PolicyBatch(obs, action, advantage, old, jnp.zeros((4, 3), bool).at[0].set(True), ())
    config = RLConfig(clip_eps=0.2)
    inner, ppo = make_policy_losses(policy, config)[:2]
    _, out = jax.jit(jax.vmap(lambda o: policy.apply(params, (), o)))(obs)
    mean, log_std, action, advantage, old = (np.asarray(x) for x in (out["pi"].mean, out["pi"].log_std, *batch[1:4]))
    log_prob = np.sum(-0.5 * ((action - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), axis=-1)
    ratio = np.exp(log_prob - old)
    surrogate = np.minimum(ratio * advantage, np.clip(ratio, 0.8, 1.2) * advantage)
    np.testing.assert_allclose(jax.jit(ppo)(params, batch)[0], -surrogate.mean(), rtol=1e-5)
    np.testing.assert_allclose(jax.jit(inner)(params, batch)[0], -(log_prob * advantage).mean(), rtol=1e-5)
    lvc_batch = batch._replace(old_log_prob=jnp.asarray(log_prob))
    lvc = make_policy_losses(policy, RLConfig(inner_objective="lvc"))[0]
    grad_pg = jax.jit(jax.grad(lambda p: inner(p, batch)[0]))(params)
    grad_lvc = jax.jit(jax.grad(lambda p: lvc(p, lvc_batch)[0]))(params)
    for a, b in zip(jax.tree.leaves(grad_pg), jax.tree.leaves(grad_lvc), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # LVC has the PG gradient at the sampling params
    with pytest.raises(ValueError, match="inner_objective must be one of pg, lvc"):
        RLConfig(inner_objective="dice")


def _nav_meta_rl(outer_epochs=1, num_envs=10):
    env = envs.make("navigation-2d")
    policy = attach_heads(make_model("mlp", ModelConfig(2, 32, hidden_dim=32)), pi=GaussianHead(2))
    rl = RLConfig()
    return env, policy, rl, make_maml_rl(env, policy, MAMLConfig(inner_lr=0.1), rl, num_envs, 100, outer_epochs)


def test_maml_rl_meta_step_jitted_vmapped_single_trace(key):
    chex.clear_trace_counter()
    env, policy, _, meta_rl = _nav_meta_rl()
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    state = meta_rl.init(params, optax.adam(1e-3))
    stats = meta_rl.initial_obs_stats(key, env.sample_tasks(key, 4), params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(carry, key, tasks):
        state, stats = carry
        state, new_stats, metrics, query = meta_rl.meta_update(state, stats, key, tasks)
        windows = experience_windows(normalize(stats, query.obs), query.action, query.done, 10)
        return (state, new_stats), metrics, windows

    initial = jax.tree.map(jnp.copy, (state, stats))
    carry, history = (state, stats), []
    for k in jax.random.split(key, 3):
        carry, metrics, ((obs, actions), valid) = step(carry, k, env.sample_tasks(k, 4))
        history.append(metrics)
    assert int(carry[0].step) == 3
    # the statistics merge every sampled observation: the warm-up round, then two rounds (support, query) per update
    assert float(carry[1].count) == float(stats.count) * (1 + 3 * 2)
    replay = initial
    for k, expected in zip(jax.random.split(key, 3), history, strict=True):  # same seed -> identical metrics
        replay, metrics_again, _ = step(replay, k, env.sample_tasks(k, 4))
        for a, b in zip(jax.tree.leaves(metrics_again), jax.tree.leaves(expected), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    assert obs.shape == (4 * 10 * 10, 10, 2) and actions.shape == (400, 10, 2) and bool(jnp.all(valid))
    assert all(bool(jnp.isfinite(v)) for v in jax.tree.leaves(metrics))
    assert float(metrics["meta_grad_norm"]) > 0
    assert float(metrics["inner_kl"]) > 0 and float(metrics["inner_grad_norm"]) > 0
    assert float(metrics["inner_clip_fraction"]) == 0.0  # no inner clip configured


def test_raw_observations_keep_the_identity_statistics(key):
    """`normalize_observations=False` (MAML-RL's navigation): the statistics stay mean 0 / variance 1 through
    meta-training, and sampling through them is sampling raw observations, bit for bit."""
    env = envs.make("navigation-2d", horizon=10)
    policy = attach_heads(make_model("mlp", ModelConfig(2, 8, hidden_dim=8)), pi=GaussianHead(2))
    meta_rl = make_maml_rl(env, policy, MAMLConfig(inner_lr=0.1), RLConfig(), 4, 10, normalize_observations=False)
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    tasks = env.sample_tasks(key, 2)

    @jax.jit
    def train_then_sample(state):
        stats = meta_rl.initial_obs_stats(key, tasks, params)
        state, stats, _, _ = meta_rl.meta_update(state, stats, key, tasks)
        task = jax.tree.map(lambda x: x[0], tasks)
        return (
            stats,
            meta_rl.sample_trajectories(key, task, params, stats),
            meta_rl.sample_trajectories(key, task, params, None),
        )

    stats, through_stats, raw = train_then_sample(meta_rl.init(params, optax.adam(1e-3)))
    np.testing.assert_array_equal(stats.mean, 0.0)
    np.testing.assert_array_equal(stats.var, 1.0)
    for a, b in zip(jax.tree.leaves(through_stats), jax.tree.leaves(raw), strict=True):
        np.testing.assert_array_equal(a, b)


def test_trpo_meta_step_moves_the_adapted_policies_within_max_kl(key):
    """The TRPO outer step, measured from outside: re-adapting the new params on the same support moves the adapted
    policies by at most `max_kl` on the query (MAML-RL's constraint), and the likelihood-ratio surrogate falls."""
    env = envs.make("navigation-2d", horizon=20)
    policy = attach_heads(make_model("mlp", ModelConfig(2, 16, hidden_dim=16)), pi=GaussianHead(2))
    rl = RLConfig()
    maml_config = MAMLConfig(inner_lr=0.1)
    trust_region = TrustRegionConfig(max_kl=0.01)
    meta_rl = make_maml_rl(env, policy, maml_config, rl, 8, 20, trust_region=trust_region)
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    state = meta_rl.init(params, optax.adam(1e-3))
    tasks = env.sample_tasks(key, 3)
    stats = meta_rl.initial_obs_stats(key, tasks, params)

    @jax.jit
    def step_and_measure(state):
        new_state, _, metrics, _ = meta_rl.meta_update(state, stats, key, tasks)
        task_keys = jax.random.split(key, 3)  # meta_update's per-task keys: the same support and query
        trajectories = jax.vmap(lambda k, task: _support_and_query(meta_rl, rl, stats, k, task, state.params))
        support, query, old_adapted = trajectories(task_keys, tasks)
        readapt = jax.vmap(lambda b: meta_rl.maml.inner_step(new_state.params, b, 0.1)[0])(support)
        kl = jnp.mean(jax.vmap(lambda p, q, b: policy_kl(policy, p, q, b))(old_adapted, readapt, query))
        loss = make_policy_losses(policy, rl).surrogate  # TRPO's objective: the unclipped likelihood ratio times A
        surrogate = lambda adapted: jnp.mean(jax.vmap(lambda p, b: loss(p, b)[0])(adapted, query))
        return metrics, kl, surrogate(old_adapted), surrogate(readapt), new_state

    metrics, kl, before, after, new_state = step_and_measure(state)
    assert float(metrics["outer_step_accepted"]) == 1.0
    assert 0 < float(kl) <= 0.01 and float(kl) == pytest.approx(float(metrics["outer_kl"]), rel=1e-3)
    assert float(after) < float(before)
    assert int(new_state.step) == 1
    with pytest.raises(ValueError, match="does not learn inner rates"):
        make_maml_rl(env, policy, MAMLConfig(learn_inner_lr=True), rl, 8, 20, trust_region=trust_region)


def _support_and_query(meta_rl, rl, stats, key, task, params):
    support_key, query_key = jax.random.split(key)
    support = prepare_batch(meta_rl.sample_trajectories(support_key, task, params, stats), rl, stats)
    adapted = meta_rl.maml.inner_step(params, support, 0.1)[0]
    query = prepare_batch(meta_rl.sample_trajectories(query_key, task, adapted, stats), rl, stats)
    return support, query, adapted


@pytest.mark.slow
def test_maml_rl_learns_to_adapt_on_navigation(key, fully_optimised_jit):
    """Finn et al.'s 2D navigation at a test's budget: one inner step takes held-out goals from about −40 to above
    −15 (the paper: −40.4 → −11.7), far beyond what the same step does for a random policy."""
    env, policy, _, _ = _nav_meta_rl()
    config = TrainerConfig(tasks_per_batch=20, trajectories_per_task=20, horizon=100, window=10, buffer_size=100)
    evaluation = EvalConfig(adapt_rounds=1, eval_trajectories=40)  # MAML-RL tests with twice the trajectories
    trainer = make_meta_rl_trainer(env, policy, config, evaluation)
    initial = trainer.init(key, HParams.create(inner_lr=0.1, outer_lr=5e-3))
    train = fully_optimised_jit(trainer.train, static_argnums=2)
    state = initial
    for k in jax.random.split(jax.random.key(1), 6):
        state, _ = train(state, k, 10)
    evaluate = jax.jit(trainer.evaluate)
    held_out = env.sample_tasks(jax.random.key(123), 40)
    trained, _ = evaluate(state, jax.random.key(7), held_out)
    untrained, _ = evaluate(initial, jax.random.key(7), held_out)
    pre, post = float(trained[:, 0].mean()), float(trained[:, 1].mean())
    random_gain = float((untrained[:, 1] - untrained[:, 0]).mean())
    assert post > -15.0, (pre, post)
    assert post > pre + 20.0, (pre, post)
    assert post - pre > random_gain + 10.0, (pre, post, random_gain)


def test_meta_update_with_zero_inner_lr_is_a_ppo_step_on_the_query(key):
    # The flagship's pretrained baseline runs MAML's program with inner lr 0: that must be plain PPO on all tasks.
    env, policy, rl, meta_rl = _nav_meta_rl()
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    optimizer = optax.sgd(0.1)  # not Adam: its g / |g| amplifies float32 round-off on near-zero gradients
    state = meta_rl.init(params, optimizer).replace(inner_lr=jnp.zeros((), jnp.float32))
    stats = meta_rl.initial_obs_stats(key, env.sample_tasks(key, 3), params)
    new_state, _, _, query = jax.jit(meta_rl.meta_update)(state, stats, jax.random.key(5), env.sample_tasks(key, 3))

    batches = jax.vmap(lambda t: prepare_batch(t, rl, stats))(query)
    grads = jax.grad(lambda p: jnp.mean(jax.vmap(lambda b: meta_rl.outer_loss(p, b)[0])(batches)))(params)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    expected = optax.apply_updates(params, updates)
    chex.assert_trees_all_close(new_state.params, expected, atol=1e-6)
    assert float(optax.tree.norm(jax.tree.map(jnp.subtract, expected, params))) > 1e-3  # the step did something


def test_train_per_task_oracle_improves_on_each_goal(key):
    env, policy, _, meta_rl = _nav_meta_rl(outer_epochs=3)
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    tasks = env.sample_tasks(jax.random.key(11), 4)
    train = jax.jit(train_per_task, static_argnums=(0, 3, 6))
    stats = meta_rl.initial_obs_stats(key, tasks, params)
    returns = np.asarray(train(meta_rl, params, stats, optax.adam(1e-2), jax.random.key(12), tasks, 40))
    assert returns.shape == (4, 40)
    assert np.all(returns[:, -5:].mean(axis=1) > returns[:, 0] + 10.0), returns[:, [0, -1]]


def test_rollout_of_experience_windows_respects_boundaries(key):
    env = envs.make("navigation-2d", horizon=5)
    policy = _tiny_policy()
    far_goal = envs.NavigationTask(jnp.array([0.5, 0.5]))  # out of reach in 5 steps: episodes end by truncation
    traj = rollout(key, env, far_goal, policy, jax.jit(policy.init)(key, jnp.zeros((1, 2))), 2, 12)
    (obs, actions), valid = experience_windows(traj.obs[None], traj.action[None], traj.done[None], 4)
    assert obs.shape == (2 * 3, 4, 2)
    # episodes end at steps 4 and 9: windows [0,4) ok, [4,8) crosses the end at 4, [8,12) crosses 9
    np.testing.assert_array_equal(np.asarray(valid).reshape(2, 3), [[True, False, False]] * 2)
    np.testing.assert_allclose(actions[0], traj.action[:4, 0])


@pytest.mark.parametrize("name", [pytest.param(name, marks=SLOW) for name in ("s5", "lstm", "transformer")] + ["gru"])
def test_every_model_runs_the_meta_rl_pipeline(name, key):
    """The seeds' comparison (SSM vs LSTM vs GRU vs Transformer vs MLP) needs every core to meta-train and adapt;
    ssm runs it in the halfcheetah smoke test and mlp in the navigation learning test."""
    env = envs.make("navigation-2d", horizon=6)
    cfg = ModelConfig(2, 8, state_dim=4, hidden_dim=8, num_layers=1, num_heads=2, attention_span=8)
    policy = attach_heads(make_model(name, cfg), pi=GaussianHead(2))
    rl = RLConfig()
    meta_rl = make_maml_rl(env, policy, MAMLConfig(inner_lr=0.1, inner_grad_clip=1.0), rl, 2, 6)
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    state = meta_rl.init(params, optax.adam(1e-3))
    stats = meta_rl.initial_obs_stats(key, env.sample_tasks(key, 2), params)
    state, stats, metrics, _ = jax.jit(meta_rl.meta_update)(state, stats, key, env.sample_tasks(key, 2))
    assert all(bool(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)) and float(metrics["meta_grad_norm"]) > 0
    adapter = AdapterConfig(learning_rate=0.1, num_steps=1, optimizer="sgd")
    returns, _ = jax.jit(make_rl_adaptation(meta_rl, adapter, rl, 1, mode="standard"))(
        key, envs.NavigationTask(jnp.array([0.2, 0.1])), state.params, None, 0.0, stats, 0.1
    )
    assert returns.shape == (2,) and bool(jnp.all(jnp.isfinite(returns)))


def test_prepare_batch_does_not_bootstrap_at_the_fixed_horizon():
    """Two episodes of 3 steps, each truncated at the task's horizon: the advantage at each episode's last step is
    r − V there (the reference pads with 0), not r + γ V(final obs) − V."""
    rewards = np.array([1.0, -2.0, 3.0, 0.5, 1.5, -1.0], np.float32)
    done = np.array([False, False, True, False, False, True])
    obs = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(6, 1, 2)
    column = lambda x: jnp.asarray(x).reshape(6, 1, *np.shape(x)[1:])
    next_obs = np.roll(obs, -1, axis=0)  # the next step's observation, except at an episode's end:
    next_obs[done] = obs[done] + 0.5  # there it is the final observation before the reset
    traj = Trajectory(
        obs=jnp.asarray(obs),
        action=jnp.zeros((6, 1, 2)),
        reward=column(rewards),
        done=column(done),
        terminated=column(np.zeros(6, bool)),
        truncated=column(done),
        log_prob=jnp.zeros((6, 1)),
        next_obs=jnp.asarray(next_obs),
        resets=column(np.array([True, False, False, True, False, False])),
        initial_carry=(),
        metrics={},
    )
    gamma, lam = 0.9, 0.5
    config = RLConfig(gamma=gamma, gae_lambda=lam, normalize_advantages=False)
    batch = prepare_batch(traj, config)
    returns = np.zeros(6)
    for t in reversed(range(6)):
        returns[t] = rewards[t] + (0.0 if done[t] else gamma * returns[t + 1])
    values, next_values = (np.asarray(v)[:, 0] for v in linear_baseline(traj, jnp.asarray(returns)[:, None]))
    assert np.all(np.abs(next_values[done]) > 1e-3)  # bootstrapping would have changed the answer
    advantages = np.zeros(6)
    for t in reversed(range(6)):
        follow = 0.0 if done[t] else gamma * values[t + 1]
        delta = rewards[t] + follow - values[t]
        advantages[t] = delta + (0.0 if done[t] else gamma * lam * advantages[t + 1])
    np.testing.assert_allclose(np.asarray(batch.advantage)[:, 0], advantages, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(advantages[done], rewards[done] - values[done], rtol=1e-6)


def test_replaying_a_normalised_trajectory_reproduces_its_log_probs(key):
    env = envs.make("navigation-2d", horizon=7)
    policy = attach_heads(make_model("gru", ModelConfig(2, 8, hidden_dim=8, num_layers=1)), pi=GaussianHead(2))
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    task = envs.NavigationTask(jnp.array([0.3, -0.2]))
    stats = RunningMeanStd(jnp.array([0.2, -0.1]), jnp.array([0.01, 0.04]), jnp.asarray(100.0))
    traj = rollout(key, env, task, policy, params, 3, 16, stats)
    log_prob = jax.jit(
        lambda s: action_log_prob(policy_outputs(policy, params, prepare_batch(traj, RLConfig(), s))["pi"], traj.action)
    )
    np.testing.assert_allclose(log_prob(stats), traj.log_prob, rtol=1e-5, atol=1e-5)
    assert not np.allclose(log_prob(None), traj.log_prob, atol=1e-2)  # the stats matter


def test_evaluation_uses_the_frozen_statistics_and_meta_training_updates_them(key):
    env, policy, rl, meta_rl = _nav_meta_rl()
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    tasks = env.sample_tasks(key, 2)
    stats = meta_rl.initial_obs_stats(key, tasks, params)
    assert float(stats.count) == 2 * 10 * 100 and np.all(np.asarray(stats.var) > 0)
    sampled = jax.vmap(meta_rl.sample_trajectories, (0, 0, None, None))(jax.random.split(key, 2), tasks, params, None)
    np.testing.assert_allclose(stats.mean, jnp.mean(sampled.obs.reshape(-1, 2), axis=0), rtol=1e-4, atol=1e-6)
    adapter = AdapterConfig(learning_rate=0.1, num_steps=1, optimizer="sgd", grad_clip_norm=None)
    curve = jax.jit(make_rl_adaptation(meta_rl, adapter, rl, 2, mode="standard"))
    task = jax.tree.map(lambda x: x[0], tasks)
    first, _ = curve(key, task, params, None, 0.0, stats, 0.1)
    again, _ = curve(key, task, params, None, 0.0, stats, 0.1)
    np.testing.assert_array_equal(first, again)  # nothing carried over between evaluations
    shifted = stats.replace(mean=stats.mean + 0.3)
    assert not np.allclose(curve(key, task, params, None, 0.0, shifted, 0.1)[0], first)  # the stats are used
    state = meta_rl.init(params, optax.adam(1e-3))
    _, updated, _, _ = jax.jit(meta_rl.meta_update)(state, stats, key, tasks)
    assert float(updated.count) == 3 * float(stats.count) and not np.allclose(updated.mean, stats.mean)


def test_later_rounds_lr_scale_changes_only_the_steps_after_the_first(key):
    env, policy, rl, meta_rl = _nav_meta_rl()
    params = jax.jit(policy.init)(key, jnp.zeros((1, 2)))
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(key, 1))
    adapter = AdapterConfig(learning_rate=0.1, num_steps=1, optimizer="sgd", grad_clip_norm=None)
    curves = {
        scale: jax.jit(make_rl_adaptation(meta_rl, adapter, rl, 2, mode="standard", later_rounds_lr_scale=scale))
        for scale in (1.0, 0.1)
    }
    full, scaled = (np.asarray(curve(key, task, params, None, 0.0, None, 1.0)[0]) for curve in curves.values())
    np.testing.assert_array_equal(full[:2], scaled[:2])  # before adapting and after the first step: same lr
    assert abs(full[2] - scaled[2]) > 1e-3  # the second step was taken with a tenth of the rate
    with pytest.raises(ValueError, match="later_rounds_lr_scale > 0"):
        make_rl_adaptation(meta_rl, adapter, rl, 2, mode="standard", later_rounds_lr_scale=0.0)
