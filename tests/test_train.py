import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssm_jax import envs
from ssm_jax.buffer import experience_windows, make_experience_buffer
from ssm_jax.envs.normalize import normalize
from ssm_jax.models import GaussianHead, ModelConfig, attach_heads, make_model
from ssm_jax.train import HParams, TrainerConfig, make_meta_rl_trainer

CONFIG = TrainerConfig(tasks_per_batch=2, trajectories_per_task=3, horizon=10, window=5, buffer_size=50, adapt_rounds=1)


@pytest.fixture(scope="module")
def setup():
    env = envs.make("navigation-2d", horizon=10)
    core = make_model("mlp", ModelConfig(input_dim=2, output_dim=16, hidden_dim=16, num_layers=2))
    policy = attach_heads(core, pi=GaussianHead(2))
    trainer = make_meta_rl_trainer(env, policy, CONFIG)
    return env, policy, trainer, jax.jit(trainer.train, static_argnums=2)


def _assert_close(a, b):  # jit and vmap fuse the same maths in different orders: float-level differences
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5), a, b)


def _leaves_equal(a, b):
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_trainer_equals_the_hand_written_meta_rl_loop(setup, key):
    env, policy, trainer, train = setup
    hparams = HParams.create(inner_lr=0.1, outer_lr=1e-2, experience_weight=0.1)
    state, metrics = train(trainer.init(key, hparams), jax.random.key(1), 2)

    params_key, stats_key = jax.random.split(key)
    params = policy.init(params_key, jnp.zeros((1, 2)))
    stats = trainer.meta_rl.initial_obs_stats(stats_key, env.sample_tasks(stats_key, 2), params)
    meta = trainer.meta_rl.init(params, optax.adam(1e-2)).replace(inner_lr=jnp.float32(0.1))
    buf = make_experience_buffer(50)
    buffer = buf.init((jnp.zeros((5, 2)), jnp.zeros((5, 2))))
    for k in jax.random.split(jax.random.key(1), 2):
        task_key, update_key = jax.random.split(k)
        tasks = env.sample_tasks(task_key, 2)
        meta, new_stats, hand_metrics, query = jax.jit(trainer.meta_rl.meta_update)(meta, stats, update_key, tasks)
        buffer = buf.add(buffer, *experience_windows(normalize(stats, query.obs), query.action, query.done, 5))
        stats = new_stats
    _assert_close(state.meta.params, meta.params)
    _assert_close(state.obs_stats, stats)
    _assert_close(state.buffer.items, buffer.items)
    _assert_close(metrics["post_adaptation_return"][-1], hand_metrics["post_adaptation_return"])
    assert int(state.iteration) == 2 and int(state.buffer.size) == int(buffer.size) > 0


def test_same_seed_same_numbers_and_a_vmapped_sweep_equals_separate_runs(setup, key):
    _, _, trainer, train = setup
    outer_lrs = (1e-3, 3e-2)
    runs = [train(trainer.init(key, HParams.create(outer_lr=lr)), jax.random.key(2), 2) for lr in outer_lrs]
    again = train(trainer.init(key, HParams.create(outer_lr=outer_lrs[0])), jax.random.key(2), 2)
    assert _leaves_equal(runs[0], again)  # deterministic
    assert not _leaves_equal(runs[0][0].meta.params, runs[1][0].meta.params)
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs), *(trainer.init(key, HParams.create(outer_lr=lr)) for lr in outer_lrs)
    )
    swept, _ = jax.jit(jax.vmap(lambda s: trainer.train(s, jax.random.key(2), 2)))(stacked)
    for i, (state, _) in enumerate(runs):  # the outer lr is traced: one compiled program serves the sweep
        _assert_close(jax.tree.map(lambda x, i=i: x[i], swept.meta.params), state.meta.params)


@pytest.mark.slow
def test_pretrained_baseline_keeps_inner_lr_zero_and_evaluation_has_the_documented_shape(setup, key):
    env, _, trainer, train = setup
    hparams = HParams.create()
    maml, _ = train(trainer.init(key, hparams), jax.random.key(3), 2)
    pretrained, _ = train(trainer.init(key, hparams, adapt=False), jax.random.key(3), 2)
    assert float(pretrained.meta.inner_lr) == 0.0 and float(maml.meta.inner_lr) == pytest.approx(0.1)
    assert _leaves_equal(trainer.init(key, hparams).meta.params, trainer.init(key, hparams, adapt=False).meta.params)
    assert not _leaves_equal(maml.meta.params, pretrained.meta.params)
    tasks = env.sample_tasks(jax.random.key(4), 3)
    returns, _ = jax.jit(trainer.evaluate)(pretrained, jax.random.key(5), tasks)
    assert returns.shape == (3, CONFIG.adapt_rounds + 1) and bool(jnp.all(jnp.isfinite(returns)))
    assert not np.allclose(returns[:, 0], returns[:, 1])  # evaluation adapts with the hyperparameter's rate, not 0
    oracle = jax.jit(trainer.oracle, static_argnums=3)(trainer.init(key, hparams), jax.random.key(6), tasks, 2)
    assert oracle.shape == (3, 2)
    donating = jax.jit(trainer.train, static_argnums=2, donate_argnums=0)
    for adapt in (True, False):  # an eager init's state shares no buffer with `hparams` or with itself
        donating(trainer.init(key, hparams, adapt=adapt), jax.random.key(7), 1)
    assert float(hparams.inner_lr) == pytest.approx(0.1)


def test_bad_configs_raise_one_line_errors():
    with pytest.raises(ValueError, match="TrainerConfig.window=20 must not exceed horizon=10"):
        TrainerConfig(horizon=10, window=20)
    with pytest.raises(ValueError, match="TrainerConfig.adapt_rounds must be >= 1"):
        TrainerConfig(adapt_rounds=0)
    with pytest.raises(ValueError, match="HParams need inner_lr > 0"):
        HParams.create(inner_lr=0.0)
