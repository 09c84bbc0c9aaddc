"""Every training program satisfies the one protocol (`ssm_jax.trainers.Trainer`): the same fields, states with
`iteration` and `hparams`, and the same host side for all of them: `sweep.make_programs` vmaps it over runs,
`runs.train_phase` trains it in checkpointed chunks, and a run resumed from a checkpoint ends where the
uninterrupted one does."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from ssm_jax import envs, run_files, runs, sweep
from ssm_jax.envs import SinusoidDistribution
from ssm_jax.meta.world_model import WorldModelConfig
from ssm_jax.models import NetworkConfig, make_gaussian_policy
from ssm_jax.trainers import (
    EvalConfig,
    HParams,
    InContextConfig,
    RegressionTrainerConfig,
    Trainer,
    TrainerConfig,
    WorldModelTrainerConfig,
    make_in_context_trainer,
    make_meta_rl_trainer,
    make_regression_trainer,
    make_world_model_trainer,
)

NETWORK = NetworkConfig(hidden_dim=8, state_dim=4)


def _meta_rl():
    env = envs.make_meta_rl("navigation-2d", horizon=10)
    policy = make_gaussian_policy("gru", env.observation_size, env.action_size, NETWORK)
    config = TrainerConfig(tasks_per_batch=2, trajectories_per_task=2, horizon=10, window=5, buffer_size=32)
    return make_meta_rl_trainer(env, policy, config, EvalConfig(eval_tasks=2, adapt_rounds=1)), env.sample_tasks


def _in_context():
    env = envs.make_meta_rl("navigation-2d", horizon=10)
    config = InContextConfig(tasks_per_batch=2, trials_per_task=2, horizon=10, minibatches=2, ppo_epochs=1)
    return make_in_context_trainer(env, "gru", NETWORK, dataclasses.replace(config, eval_trials=2)), env.sample_tasks


def _world_model():
    env = envs.make("pendulum-params", horizon=10)
    config = WorldModelTrainerConfig(
        model=WorldModelConfig(horizon=10, window=5, support_trajectories=1, open_loop_steps=5), train_tasks=3,
        trajectories_per_task=2, tasks_per_batch=2, eval_tasks=2, buffer_size=16, experience_batch_size=4,
    )  # fmt: skip
    return make_world_model_trainer(env, "gru", NETWORK, config), env.sample_tasks


def _regression():
    distribution = SinusoidDistribution()
    config = RegressionTrainerConfig(shots=3, tasks_per_batch=2, hidden_dim=8, eval_points=4, adapt_rounds=2)
    return make_regression_trainer(distribution, config), distribution.sample_tasks


TRAINERS = {"meta_rl": _meta_rl, "in_context": _in_context, "world_model": _world_model, "regression": _regression}
OPTIONAL = {"meta_rl": (), "in_context": ("oracle", "evaluate_online"), "world_model": ("evaluate_online",),
            "regression": ("evaluate_online",)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_every_trainer_has_the_one_shape_and_its_state_holds_iteration_and_hparams(name, key):
    trainer, _ = TRAINERS[name]()
    assert type(trainer) is Trainer
    absent = tuple(field for field in Trainer._fields if getattr(trainer, field) is None)
    assert absent == OPTIONAL[name]  # an optional part is None, never missing
    assert all(callable(getattr(trainer, field)) for field in ("init", "train", "evaluate"))
    hparams = HParams.create(inner_lr=0.05, outer_lr=1e-3, experience_weight=0.2)
    state = jax.jit(trainer.init)(key, hparams)
    assert int(state.iteration) == 0
    np.testing.assert_array_equal(state.hparams.experience_weight, np.float32(0.2))


@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_sweep_train_phase_and_resume_work_for_every_trainer(name, tmp_path):
    """Two seeds as one vmapped program trained by the host loop for 4 iterations, against the same run stopped
    after 2 (its checkpoint restored into a fresh state) and continued: the same states, bit for bit, and
    evaluation gives finite scores for every run and held-out task."""
    trainer, sample_tasks = TRAINERS[name]()
    programs = sweep.make_programs(trainer, chunk_size=1)
    grid = sweep.make_grid(seeds=(0, 1))
    hparams = grid.hparams(HParams.create(inner_lr=0.05, outer_lr=1e-3))
    keys = grid.keys
    fresh = lambda: programs.init(keys.init, hparams)
    records = lambda iteration, metrics: [{"iteration": iteration}]

    def run(run_dir, iterations, state, start=0):
        log = run_files.MetricsLog(run_dir / "metrics.jsonl")
        checkpoints = runs.Checkpoints(run_dir, trainer.config, every=1, resume="-")
        return runs.train_phase(
            programs.train, state, keys.train, iterations, 1, name, log, records, checkpoints, start=start,
            run_labels=grid.seeds,
        )  # fmt: skip

    for run_dir in ("whole", "cut"):
        (tmp_path / run_dir).mkdir()
    whole = run(tmp_path / "whole", 4, fresh())
    run(tmp_path / "cut", 2, fresh())
    log = run_files.MetricsLog(tmp_path / "cut" / "metrics.jsonl")
    restored, start = runs.resume(tmp_path / "cut", fresh(), log, lambda record, iteration: True)
    assert start == 2
    resumed = run(tmp_path / "cut", 4, restored, start=2)

    np.testing.assert_array_equal(whole.iteration, [4, 4])
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    tasks = jax.vmap(lambda k: sample_tasks(k, 2))(keys.eval)
    scores, _ = programs.evaluate(whole, keys.eval, tasks)
    assert scores.shape[:2] == (2, 2) and np.isfinite(np.asarray(scores)).all()
    assert dataclasses.is_dataclass(trainer.config)
