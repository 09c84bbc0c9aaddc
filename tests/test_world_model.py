"""Meta-learned world models: the data contract (masks, disjoint support and query, meta-training statistics, a
read-only buffer) and a learning test on held-out pendulums."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm_jax import buffer, envs, runs, sweep
from ssm_jax.meta.world_model import Transitions, WorldModelConfig, make_world_model
from ssm_jax.models import NetworkConfig
from ssm_jax.trainers import HParams
from ssm_jax.trainers.world_model import WorldModelTrainerConfig, make_world_model_trainer

NETWORK = NetworkConfig(state_dim=8, hidden_dim=16)
TINY = WorldModelTrainerConfig(
    model=WorldModelConfig(horizon=12, window=6, support_trajectories=2, open_loop_steps=4),
    train_tasks=4,
    trajectories_per_task=3,
    tasks_per_batch=2,
    eval_tasks=3,
    buffer_size=16,
    experience_batch_size=4,
    oracle_iterations=2,
)


@pytest.fixture(scope="module")
def jitted():
    """The tiny trainer's functions, each compiled once for the module (an eager call compiles op by op)."""
    env = envs.make("pendulum-params", horizon=TINY.model.horizon)
    trainer = make_world_model_trainer(env, "ssm", NETWORK, TINY)
    return types.SimpleNamespace(
        env=env,
        trainer=trainer,
        init=jax.jit(trainer.init, static_argnames="adapt"),
        held_out=jax.jit(trainer.parts.held_out),
        evaluate=jax.jit(trainer.evaluate, static_argnames="mode"),
        train=jax.jit(trainer.train, static_argnums=2),
        collect=jax.jit(trainer.parts.world_model.collect, static_argnums=2),
        support_query=jax.jit(trainer.parts.world_model.support_query),
    )


@pytest.fixture(scope="module")
def tiny(jitted):
    """A state made from key 0 (its meta-training pool in `state.data`) and held-out tasks."""
    state = jitted.init(jax.random.key(0), HParams.create(0.1, 1e-3, 0.5))
    return state, jitted.env.sample_tasks(jax.random.key(2), TINY.eval_tasks)


def test_loss_masks_every_step_after_an_episode_end():
    env = envs.make("pendulum-params", horizon=8)
    wm = make_world_model(env, "mlp", NETWORK, WorldModelConfig(horizon=8, window=8, open_loop_steps=4))
    key = jax.random.key(0)
    obs = jax.random.normal(key, (8, 1, 3))  # [T, N, D]
    done = jnp.zeros((8, 1), bool).at[3, 0].set(True)  # the episode ends at step 3; steps 4..7 are the next one
    transitions = Transitions(obs, jnp.ones((8, 1, 1)), obs + 0.1, jnp.arange(8.0)[:, None], done)
    batch = jax.jit(lambda t: wm.windows(t, wm.fit_stats(t)))(transitions)
    np.testing.assert_array_equal(batch["mask"][0], [True] * 4 + [False] * 4)
    params = jax.jit(wm.init)(key)
    loss_of = jax.jit(lambda batch: wm.loss(params, batch)[0])
    after_the_end = {**batch, "targets": batch["targets"].at[0, 4:].set(1e3)}
    before_the_end = {**batch, "targets": batch["targets"].at[0, 3].set(1e3)}
    loss = float(loss_of(batch))
    assert float(loss_of(after_the_end)) == loss
    assert float(loss_of(before_the_end)) > 1e4 * loss


def test_support_and_query_are_disjoint_trajectories():
    env = envs.make("pendulum-params", horizon=12)
    wm = make_world_model(env, "mlp", NETWORK, TINY.model)
    transitions = jax.jit(wm.collect, static_argnums=2)(jax.random.key(1), env.sample_tasks(jax.random.key(2), 2), 3)
    stats = jax.jit(wm.fit_stats)(transitions)
    support, query = jax.jit(wm.support_query)(transitions, stats)
    windows = jax.jit(wm.windows)
    first_two = windows(jax.tree.map(lambda x: x[:, :, :2], transitions), stats)
    last_one = windows(jax.tree.map(lambda x: x[:, :, 2:], transitions), stats)
    jax.tree.map(np.testing.assert_array_equal, support, first_two)
    jax.tree.map(np.testing.assert_array_equal, query, last_one)
    for task in range(2):  # no query window repeats a support window's random actions
        support_actions = np.asarray(support["inputs"][task, :, :, -1])
        query_actions = np.asarray(query["inputs"][task, :, :, -1])
        assert not np.any(np.isclose(support_actions[:, None, :], query_actions[None, :, :]).all(-1))
    with pytest.raises(ValueError, match="more than support_trajectories"):
        wm.support_query(jax.tree.map(lambda x: x[:, :, :2], transitions), stats)


def test_statistics_come_from_the_meta_training_data_only(tiny, jitted):
    state, tasks = tiny
    data, env = state.data, jitted.env
    task_key, data_key, _ = jax.random.split(jax.random.split(jax.random.key(0))[0], 3)  # init's pool keys
    meta_training = jitted.collect(data_key, env.sample_tasks(task_key, TINY.train_tasks), TINY.trajectories_per_task)
    inputs = np.concatenate([meta_training.obs, meta_training.action], -1).reshape(-1, 4)
    np.testing.assert_allclose(data.stats.inputs.mean, inputs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.stats.inputs.var, inputs.var(0), rtol=1e-4)
    assert int(data.stats.inputs.count) == inputs.shape[0]
    # held-out data is standardised with those statistics, never fitted: other held-out tasks change nothing
    support, _ = jitted.held_out(jax.random.key(7), tasks, data.stats)
    held_transitions = jitted.collect(jax.random.key(7), tasks, TINY.trajectories_per_task)
    expected = jitted.support_query(held_transitions, data.stats)[0]  # another program: rounding may differ
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), support, expected)


def test_evaluation_reads_a_frozen_buffer_and_never_changes_its_size(tiny, jitted):
    state, tasks = tiny
    data = state.data
    assert data.buffer.frozen and int(buffer.size(data.buffer)) == TINY.buffer_size
    before = jax.tree.map(np.asarray, data.buffer)
    mse, extras = jitted.evaluate(state, jax.random.key(3), tasks, "hybrid")
    assert mse.shape == extras["open_loop"].shape == (TINY.eval_tasks, TINY.adapt_rounds + 1)
    jax.tree.map(np.testing.assert_array_equal, data.buffer, before)
    with pytest.raises(ValueError, match="frozen"):
        buffer.add(data.buffer, jax.tree.map(lambda x: x[:1], data.buffer.items))


def test_hybrid_reads_the_states_experience_weight_and_at_zero_is_the_standard_step(tiny, jitted):
    state, tasks = tiny
    mse = {}
    for weight in (0.0, 0.5):
        weighted = state.replace(hparams=HParams.create(0.1, 1e-3, weight))
        for mode in ("standard", "hybrid"):
            mse[weight, mode] = np.asarray(jitted.evaluate(weighted, jax.random.key(3), tasks, mode)[0])
    np.testing.assert_array_equal(mse[0.0, "hybrid"], mse[0.0, "standard"])
    np.testing.assert_array_equal(mse[0.5, "standard"], mse[0.0, "standard"])  # standard ignores the weight
    np.testing.assert_array_equal(mse[0.5, "hybrid"][:, 0], mse[0.5, "standard"][:, 0])
    assert not np.allclose(mse[0.5, "hybrid"][:, 1:], mse[0.5, "standard"][:, 1:])


def test_the_pretrained_baseline_trains_with_no_inner_step(jitted):
    hparams = HParams.create(0.1, 1e-3, 0.1)
    pretrained = jitted.init(jax.random.key(1), hparams, adapt=False)
    _, metrics = jitted.train(pretrained, jax.random.key(2), 2)
    # the same loss at the same params, fused at two places of one program: equal up to rounding
    np.testing.assert_allclose(metrics["pre_query_loss"], metrics["post_query_loss"], rtol=1e-6)
    maml = jitted.init(jax.random.key(1), hparams)
    jax.tree.map(np.testing.assert_array_equal, maml.data, pretrained.data)  # one key, one meta-training pool
    _, metrics = jitted.train(maml, jax.random.key(2), 2)
    assert np.all(metrics["post_support_loss"] < metrics["pre_support_loss"])


@pytest.mark.slow
def test_the_world_model_trainer_runs_through_sweep_programs_and_runs_as_each_run_alone(jitted):
    hparams = HParams.create(0.1, 1e-3, 0.5)
    grid = sweep.make_grid(range(2))
    programs = sweep.make_programs(jitted.trainer, chunk_size=1)
    states = runs.train_in_chunks(programs.train, programs.init(grid.keys.init, grid.hparams(hparams)),
                                  grid.keys.train, 2, 1, "world model")  # fmt: skip
    tasks, keys = sweep.held_out_tasks(jitted.env, grid.keys.eval, TINY.eval_tasks)
    mse, extras = programs.evaluate(states, keys, tasks, "hybrid")
    assert mse.shape == extras["open_loop"].shape == (2, TINY.eval_tasks, TINY.adapt_rounds + 1)
    run = sweep.run_keys(1)  # run 1 made alone with its seed's keys
    alone = jitted.init(run.init, hparams)
    for chunk_key in sweep.chunk_keys(run.train, 2):
        alone, _ = jitted.train(alone, chunk_key, 1)
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: close(a[1], b), states.meta.params, alone.meta.params)
    close(mse[1], jitted.evaluate(alone, keys[1], jax.tree.map(lambda x: x[1], tasks), "hybrid")[0])


@pytest.mark.slow
def test_meta_trained_ssm_world_model_adapts_to_held_out_pendulums(fully_optimised_jit):
    """Held-out pendulum-params tasks: the meta-trained SSM's query MSE after one adaptation step is below its
    pre-adaptation MSE and below a model trained from scratch on the support alone (about a minute on CPU)."""
    config = dataclasses.replace(
        WorldModelTrainerConfig(), model=WorldModelConfig(horizon=100, window=20, support_trajectories=4)
    )
    env = envs.make("pendulum-params", horizon=100)
    trainer = make_world_model_trainer(env, "ssm", NetworkConfig(state_dim=16, hidden_dim=32), config)
    state = jax.jit(trainer.init)(jax.random.key(1), HParams.create(0.3, 3e-3, 0.1))
    state, _ = fully_optimised_jit(trainer.train, static_argnums=2)(state, jax.random.key(2), 300)
    tasks = env.sample_tasks(jax.random.key(3), config.eval_tasks)
    mse, extras = jax.jit(trainer.evaluate)(state, jax.random.key(4), tasks)
    oracle_mse, _ = jax.jit(trainer.oracle, static_argnums=3)(state, jax.random.key(4), tasks, config.oracle_iterations)
    pre, post, open_loop = np.asarray(mse[:, 0]), np.asarray(mse[:, 1]), extras["open_loop"]
    assert post.mean() < 0.6 * pre.mean() and np.mean(post < pre) >= 0.75
    assert post.mean() < 0.6 * float(np.mean(oracle_mse))
    assert float(open_loop[:, 1].mean()) < float(open_loop[:, 0].mean())
