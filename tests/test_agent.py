"""The Agent API: `act` compiles once, observed steps replay into the trainer's losses, the agents' steps equal the
trainer's, and the coordinator runs agents side by side."""

import dataclasses
import runpy
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm_jax.agent import AdaptationAgent, MetaMAMLAgent
from ssm_jax.config import CONFIGS, build, initial_state
from ssm_jax.coordinator import AgentCoordinator
from ssm_jax.meta.policy_losses import policy_outputs, prepare_batch
from ssm_jax.models import NetworkConfig
from ssm_jax.rollout import action_log_prob

HORIZON = 20


@pytest.fixture(scope="module")
def trained():
    config = dataclasses.replace(
        CONFIGS["basic"],
        model="ssm",
        network=NetworkConfig(hidden_dim=16, state_dim=8),
        trainer=dataclasses.replace(CONFIGS["basic"].trainer, horizon=HORIZON, tasks_per_batch=4),
    )
    env, trainer = build(config)
    state = initial_state(config, trainer)
    state, _ = jax.jit(trainer.train, static_argnums=2)(state, jax.random.key(1), 2)
    return env, trainer, state


def test_act_compiles_once_across_100_calls_and_episodes(trained):
    env, trainer, state = trained
    agent = MetaMAMLAgent(trainer, state, jax.random.key(0))
    agent._act = jax.jit(chex.assert_max_traces(agent._act.__wrapped__, n=1))  # fails on a second trace
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(jax.random.key(2), 1))
    obs, env_state = env.reset(jax.random.key(3), task)
    for t in range(100):
        action = agent.act(obs)
        obs, env_state, reward, _, info = env.step(jax.random.key(t), env_state, action, task)
        agent.observe(obs, action, reward, info["terminated"], bool(info["truncated"]) or t % 30 == 29, info)
    assert agent._act._cache_size() == 1
    assert action.shape == (env.action_size,)


@pytest.mark.slow
def test_coordinator_runs_two_agents_and_their_steps_replay_into_the_losses(trained):
    env, trainer, state = trained
    maml = MetaMAMLAgent(trainer, state, jax.random.key(0))
    standard = AdaptationAgent(trainer, state, jax.random.key(1), mode="standard")
    coordinator = AgentCoordinator()
    coordinator.register_agent(maml, "maml")
    coordinator.register_agent(standard, "standard")
    tasks = env.sample_tasks(jax.random.key(2), 2)
    returns = coordinator.run_episodes(env, tasks, num_episodes=2, max_steps=HORIZON, key=jax.random.key(3))
    assert set(returns) == {"maml", "standard"}
    assert all(len(r) == 2 and np.all(np.isfinite(r)) for r in returns.values())
    assert len(maml._steps) == len(standard._steps) == 2 * HORIZON  # every step observed

    # The observed steps, as the trainer's Trajectory, replay to the log-probs the agent sampled with.
    steps = list(maml._steps)
    traj = maml._take_trajectory()
    assert traj.obs.shape == (HORIZON, 2, env.observation_size) and bool(traj.resets[0].all())
    batch = prepare_batch(traj, trainer.parts.rl_config, state.obs_stats)
    replayed = action_log_prob(policy_outputs(trainer.parts.policy, state.meta.params, batch)["pi"], batch.action)
    np.testing.assert_allclose(replayed, traj.log_prob, rtol=1e-4, atol=1e-4)

    # On the same steps, the standard adapter's step is MAML's inner step (plain SGD at the inner rate).
    maml._steps, standard._steps = list(steps), list(steps)
    maml.adapt()
    standard.adapt()
    chex.assert_trees_all_close(standard.params, maml.params, rtol=1e-5, atol=1e-6)
    moved = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), maml.params, state.meta.params)
    assert max(jax.tree.leaves(moved)) > 1e-4

    # MAML's meta-step on its support and the query it observes next; the fast params return to the meta-params.
    coordinator.run_episodes(env, tasks, num_episodes=1, max_steps=HORIZON, key=jax.random.key(4))
    updates = coordinator.broadcast_update()
    assert updates["standard"] == {} and np.isfinite(updates["maml"]["meta_loss"])
    assert int(maml.state.iteration) == int(state.iteration) + 1
    chex.assert_trees_all_equal(maml.params, maml.state.meta.params)
    assert not np.allclose(jax.tree.leaves(maml.state.meta.params)[0], jax.tree.leaves(state.meta.params)[0])


def test_agent_misuse_is_a_clear_error(trained):
    env, trainer, state = trained
    agent = MetaMAMLAgent(trainer, state, jax.random.key(0))
    with pytest.raises(ValueError, match="needs an act"):
        agent.observe(np.zeros(2), np.zeros(2), 0.0, False, False, {})
    with pytest.raises(ValueError, match="needs adapt"):
        agent.update()
    with pytest.raises(ValueError, match=f"at least horizon={HORIZON} observed steps, got 0"):
        agent.adapt()
    with pytest.raises(ValueError, match="unknown adaptation mode 'mixed'"):
        AdaptationAgent(trainer, state, jax.random.key(0), mode="mixed")
    coordinator = AgentCoordinator()
    coordinator.register_agent(agent, "a")
    with pytest.raises(ValueError, match="already registered"):
        coordinator.register_agent(agent, "a")
    with pytest.raises(ValueError, match="one task per agent"):
        coordinator.run_episodes(env, env.sample_tasks(jax.random.key(0), 2), 1, 5, jax.random.key(1))


def test_multi_agent_demo_runs_two_agents_on_two_tasks(capsys):
    demo = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "multi_agent_demo.py"), run_name="demo")
    results = demo["main"](demo["Args"](iterations=5, episodes=2))
    for phase in ("before", "after"):
        assert {name: len(r) for name, r in results[phase].items()} == {"MAML": 2, "hybrid adapter": 2}
    last = capsys.readouterr().out.splitlines()[-1]
    assert (
        last.startswith("One adaptation step on each agent's own goal changed its mean return by ")
        and "meta-gradient norm" in last
    )
