"""In-context meta-RL (RL², `ssm_jax.trainers.in_context`): trials keep the carry across episodes and reset it between
trials, the policy reads the previous action and reward, a replayed trial reproduces its log-probs for every model,
a GRU policy adapts from episode 1 to 2 on held-out navigation goals while a memoryless MLP of the same training
learns yet does not."""

import dataclasses
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import in_context, navigation
from ssm_jax import envs
from ssm_jax.config import CONFIGS, replace
from ssm_jax.meta.policy_losses import PolicyBatch, policy_outputs
from ssm_jax.models import MODEL_NAMES, NetworkConfig
from ssm_jax.report import mean_ci
from ssm_jax.rollout import action_log_prob, context_size, episode_returns, trial_inputs
from ssm_jax.trainers import HParams
from ssm_jax.trainers.in_context import InContextConfig, make_in_context_trainer

SMALL = NetworkConfig(state_dim=8, hidden_dim=16)


def _trials(model: str, horizon: int = 6, episodes: int = 3, trials: int = 3, env=None):
    """A trainer on navigation (episodes end at `horizon`), its initial params and one task's trials."""
    env = env or envs.make("navigation-2d", horizon=horizon)
    config = InContextConfig(tasks_per_batch=2, trials_per_task=trials, episodes_per_trial=episodes, horizon=horizon,
                             minibatches=1)  # fmt: skip
    trainer = make_in_context_trainer(env, model, SMALL, config)
    key = jax.random.key(0)
    params = trainer.parts.policy.init(key, jnp.zeros((1, context_size(env))))
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(key, 1))
    traj = jax.jit(lambda k, p: trainer.parts.sample_trials(k, task, p, None, trials))(jax.random.key(1), params)
    return trainer, params, traj


def _replay(trainer, params, traj, resets=None):
    """The policy's head outputs replayed over the recorded trial `[T, N]`."""
    inputs = trial_inputs(trainer.parts.env, traj)
    resets = traj.resets if resets is None else resets
    batch = PolicyBatch(inputs, traj.action, traj.reward, traj.log_prob, resets, traj.initial_carry)
    return policy_outputs(trainer.parts.policy, params, batch)


def test_the_carry_survives_episode_boundaries_and_resets_only_between_trials():
    trainer, params, traj = _trials("gru")
    T = trainer.config.trial_length
    np.testing.assert_array_equal(np.asarray(traj.done).sum(axis=0), 3)  # three episodes per trial, each 6 steps
    expected_resets = np.zeros((T, 3), bool)
    expected_resets[0] = True  # the trial's start only, never at an episode boundary
    np.testing.assert_array_equal(traj.resets, expected_resets)
    fresh_carry = trainer.parts.policy.initial_carry((3,))
    for leaf, fresh in zip(jax.tree.leaves(traj.initial_carry), jax.tree.leaves(fresh_carry), strict=True):
        np.testing.assert_array_equal(leaf, fresh)  # each trial starts from the reset carry
    # the carry across the boundary matters: resetting it there changes what the policy does in episode 2
    kept = action_log_prob(_replay(trainer, params, traj)["pi"], traj.action)
    episode_starts = jnp.concatenate([jnp.ones((1, 3), bool), traj.done[:-1]])
    wiped = action_log_prob(_replay(trainer, params, traj, episode_starts)["pi"], traj.action)
    np.testing.assert_allclose(wiped[:6], kept[:6], rtol=1e-5, atol=1e-6)  # episode 1: the same carry
    assert float(jnp.max(jnp.abs(wiped[6:] - kept[6:]))) > 1e-4


def test_the_previous_action_reward_and_episode_start_reach_the_policy_input():
    trainer, params, traj = _trials("gru")
    inputs = np.asarray(trial_inputs(trainer.parts.env, traj))
    obs_size, action_size = trainer.parts.env.observation_size, trainer.parts.env.action_size
    assert inputs.shape == (18, 3, context_size(trainer.parts.env)) == (18, 3, obs_size + action_size + 2)
    np.testing.assert_array_equal(inputs[:, :, :obs_size], traj.obs)
    first = np.concatenate([np.ones((1, 3), bool), traj.done[:-1]])
    np.testing.assert_array_equal(inputs[:, :, -1], first)
    within = ~first[1:, :, None]  # the previous step's action and reward, but at an episode's first step (zeros)
    np.testing.assert_array_equal(inputs[1:, :, obs_size : obs_size + action_size], traj.action[:-1] * within)
    np.testing.assert_array_equal(inputs[1:, :, -2], traj.reward[:-1] * within[..., 0])
    np.testing.assert_array_equal(inputs[first][:, obs_size:-1], 0.0)
    # and the policy reads them: another previous reward at step 3 changes the action distribution from step 3 on
    changed = traj._replace(reward=traj.reward.at[2].add(5.0))
    before, after = _replay(trainer, params, traj)["pi"].mean, _replay(trainer, params, changed)["pi"].mean
    np.testing.assert_array_equal(before[:3], after[:3])
    assert float(jnp.max(jnp.abs(before[3] - after[3]))) > 1e-6


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_a_replayed_trial_reproduces_its_sampled_log_probs(model):
    trainer, params, traj = _trials(model, horizon=8, episodes=3)  # 24 steps: past the transformer's minimum span
    replayed = action_log_prob(_replay(trainer, params, traj)["pi"], traj.action)
    np.testing.assert_allclose(replayed, traj.log_prob, rtol=1e-4, atol=1e-4)


def test_discrete_actions_enter_the_input_one_hot():
    env = envs.make("cartpole-params", horizon=5)
    trainer, params, traj = _trials("gru", horizon=5, episodes=2, env=env)
    inputs = np.asarray(trial_inputs(env, traj))
    within = ~np.asarray(traj.done[:-1])[..., None]
    np.testing.assert_array_equal(inputs[1:, :, 4:6], np.eye(2)[np.asarray(traj.action[:-1])] * within)
    replayed = action_log_prob(_replay(trainer, params, traj)["pi"], traj.action)
    np.testing.assert_allclose(replayed, traj.log_prob, rtol=1e-4, atol=1e-4)


def test_episode_returns_split_each_trial_at_its_episode_ends():
    _, _, traj = _trials("mlp", horizon=4, episodes=2, trials=2)
    reward = np.asarray(traj.reward)
    np.testing.assert_allclose(episode_returns(traj, 2), np.stack([reward[:4].sum(0), reward[4:].sum(0)], 1),
                               rtol=1e-6)  # fmt: skip


def test_bad_in_context_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="minibatches=3 must divide"):
        InContextConfig(tasks_per_batch=2, trials_per_task=2, minibatches=3)
    with pytest.raises(ValueError, match="horizon 20 differs"):
        make_in_context_trainer(envs.make("navigation-2d", horizon=20), "gru", SMALL, InContextConfig(horizon=10))
    with pytest.raises(ValueError, match="models must be distinct"):
        replace(CONFIGS["in-context-smoke"], models=("gru", "lstmm"))
    with pytest.raises(ValueError, match="episodes_per_trial must be >= 2"):
        replace(CONFIGS["in-context-smoke"], episodes_per_trial=1)
    trainer, _, _ = _trials("gru")
    with pytest.raises(ValueError, match="no pretrained variant"):
        trainer.init(jax.random.key(0), HParams.create(), adapt=False)


def _trained_on_navigation(model: str, jit) -> tuple[np.ndarray, np.ndarray]:
    """`model`'s RL² policy before and after 1000 iterations (5M env steps, about 30 s) on navigation with 20-step
    episodes, evaluated on the same 64 held-out goals x 4 trials: `(untrained, trained)` returns, each `[64, 2]`."""
    env = envs.make("navigation-2d", horizon=20)
    config = InContextConfig(
        tasks_per_batch=16, trials_per_task=8, horizon=20, reward_scale=0.1, normalize_observations=False, eval_trials=4
    )
    trainer = make_in_context_trainer(env, model, NetworkConfig(state_dim=16, hidden_dim=64), config)
    untrained = jit(trainer.init)(jax.random.key(0), HParams.create(outer_lr=5e-4))
    trained, _ = jit(trainer.train, static_argnums=2)(untrained, jax.random.key(1), 1000)
    goals = env.sample_tasks(jax.random.key(5), 64)
    evaluate = lambda state: np.asarray(jit(trainer.evaluate)(state, jax.random.key(6), goals)[0])
    return evaluate(untrained), evaluate(trained)


def test_a_gru_rl2_policy_adapts_in_context_where_a_memoryless_mlp_of_the_same_run_cannot(fully_optimised_jit):
    """The control cannot pass on a broken trainer: the same training makes the GRU better in episode 2 than in
    episode 1 on held-out goals, and makes the MLP better than its untrained self, yet not better in episode 2."""
    _, gru = _trained_on_navigation("gru", fully_optimised_jit)
    mean, half = mean_ci(gru[:, 1] - gru[:, 0])
    assert mean - half > 0, f"gru: episode 2 − episode 1: {mean:.2f} ± {half:.2f}"  # measured: +1.64 ± 0.19
    untrained, mlp = _trained_on_navigation("mlp", fully_optimised_jit)
    learned, learned_half = mean_ci(mlp[:, 0] - untrained[:, 0])
    assert learned - learned_half > 0, f"mlp: trained − untrained episode 1: {learned:.2f} ± {learned_half:.2f}"
    mean, half = mean_ci(mlp[:, 1] - mlp[:, 0])
    assert mean - half <= 0, f"mlp: episode 2 − episode 1: {mean:.2f} ± {half:.2f}"  # measured: −0.20 ± 0.17


def test_in_context_smoke_writes_its_report_and_resumes_to_the_uninterrupted_numbers(tmp_path):
    maml = navigation.main(replace(navigation.PRESETS["smoke"], pretrained=True, out_dir=str(tmp_path / "maml")))
    args = replace(in_context.PRESETS["smoke"], out_dir=str(tmp_path / "a"), compare_with=(maml["run_dir"],))
    whole = in_context.main(args)
    run_dir = Path(whole["run_dir"])
    page = (run_dir / "results.md").read_text()
    assert (
        page.count("| gru |") == 2 and "| MAML + standard (mlp) |" in page
    )  # RL²'s table and the paired one and "| pretrained (mlp) |" in page
    assert (run_dir / "episodes.png").exists()
    assert whole["models"]["gru"]["per_task_returns"].shape == (4, 2)  # 2 seeds x 2 held-out tasks, 2 episodes
    compared = whole["compared"][0]
    assert compared["seeds"] == [0]  # the MAML run's one seed: paired on its 2 tasks
    assert compared["per_task_returns"]["MAML + standard"].shape == (2, 4)
    # a run killed after gru's first checkpoint: resume restores gru, trains mlp, and ends with the same numbers
    killed = tmp_path / "b" / run_dir.name
    killed.parent.mkdir()
    shutil.copytree(run_dir, killed)
    shutil.rmtree(killed / "mlp")
    shutil.rmtree(killed / "gru" / "checkpoints" / "step_4")
    resumed = in_context.main(dataclasses.replace(args, resume=str(killed)))
    for model in args.models:
        np.testing.assert_array_equal(resumed["models"][model]["per_task_returns"],
                                      whole["models"][model]["per_task_returns"])  # fmt: skip


def test_a_compared_run_of_another_horizon_is_one_line_and_exit_2(tmp_path, capsys):
    maml = navigation.main(replace(navigation.PRESETS["smoke"], horizon=10, window=5, out_dir=str(tmp_path / "m")))
    args = replace(in_context.PRESETS["smoke"], out_dir=str(tmp_path / "a"), compare_with=(maml["run_dir"],))
    with pytest.raises(SystemExit) as exit_info:
        in_context.main(args)
    assert exit_info.value.code == 2
    assert "(env, horizon, held-out tasks) are ('navigation-2d', 10, 2), this run's ('navigation-2d', 20, 2)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "a").exists()  # refused before any run directory


@pytest.mark.parametrize("model", ["s5", "transformer"])
def test_the_parallel_replay_gives_the_stepwise_loss_and_gradient(model):
    trainer, params, traj = _trials(model, horizon=8, episodes=3)
    batch = trainer.parts.prepare(params, traj, None)

    def stepwise_loss(params):
        step = lambda carry, inputs: trainer.parts.policy.step(params, carry, *inputs)
        run = lambda carry, xs, resets: jax.lax.scan(step, carry, (xs, resets))[1]
        out = jax.vmap(run, in_axes=(0, 1, 1), out_axes=1)(
            batch.policy.initial_carry, batch.policy.obs, batch.policy.resets
        )
        return trainer.parts.loss_of_outputs(out, batch)[0]

    parallel, parallel_grad = jax.value_and_grad(lambda p: trainer.parts.loss(p, batch)[0])(params)
    stepwise, stepwise_grad = jax.value_and_grad(stepwise_loss)(params)
    np.testing.assert_allclose(parallel, stepwise, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(parallel_grad), jax.tree.leaves(stepwise_grad), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
