"""`AgentCoordinator`: several agents (`ssm_jax.agent`) side by side, each in its own env of one task.

    coordinator = AgentCoordinator()
    coordinator.register_agent(MetaMAMLAgent(trainer, state, key), "maml")
    coordinator.register_agent(AdaptationAgent(trainer, state, key, mode="hybrid"), "hybrid")
    returns = coordinator.run_episodes(env, tasks, num_episodes=2, max_steps=100, key=key)

An interactive loop (one host sync per step); batched evaluation on many tasks is `Trainer.evaluate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from ssm_jax.agent import Agent
from ssm_jax.envs.base import TaskEnv
from ssm_jax.types import PRNGKey


class AgentCoordinator:
    """Runs several agents side by side, each in its own env of one task."""

    def __init__(self):
        self.agents: dict[str, Agent] = {}

    def register_agent(self, agent: Agent, name: str) -> None:
        if name in self.agents:
            raise ValueError(f"an agent named {name!r} is already registered")
        self.agents[name] = agent

    def run_step_all(self, observations: Mapping[str, Any]) -> dict[str, Any]:
        """Each agent's action for its observation: `{name: action}`."""
        missing = set(self.agents) - set(observations)
        if missing:
            raise ValueError(f"no observation for agent(s) {sorted(missing)}")
        return {name: agent.act(observations[name]) for name, agent in self.agents.items()}

    def broadcast_update(self, **kwargs: Any) -> dict[str, dict]:
        """Calls every agent's `update(**kwargs)`: `{name: its metrics}`."""
        return {name: agent.update(**kwargs) for name, agent in self.agents.items()}

    def run_episodes(
        self, env: TaskEnv, tasks: Any, num_episodes: int, max_steps: int, key: PRNGKey
    ) -> dict[str, list[float]]:
        """`num_episodes` episodes of at most `max_steps` steps per agent, agent `i` (in registration order) on task
        `i` of `tasks` (leading axis = the number of agents); every step is observed. Returns each agent's
        episode returns."""
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        if num_tasks != len(self.agents) or num_episodes < 1 or max_steps < 1:
            raise ValueError(
                f"run_episodes needs one task per agent ({len(self.agents)}, got {num_tasks}), "
                f"num_episodes >= 1 and max_steps >= 1"
            )
        reset, step = jax.jit(env.reset), jax.jit(env.step)
        names = list(self.agents)
        task = {name: jax.tree.map(lambda x, i=i: x[i], tasks) for i, name in enumerate(names)}
        returns = {name: [] for name in names}
        for _ in range(num_episodes):
            key, reset_key = jax.random.split(key)
            obs, env_states = {}, {}
            for name, k in zip(names, jax.random.split(reset_key, len(names)), strict=True):
                self.agents[name].reset()
                obs[name], env_states[name] = reset(k, task[name])
            totals, running = dict.fromkeys(names, 0.0), set(names)
            for t in range(max_steps):
                actions = {name: self.agents[name].act(obs[name]) for name in running}
                key, step_key = jax.random.split(key)
                for name, k in zip(sorted(running), jax.random.split(step_key, len(running)), strict=True):
                    obs[name], env_states[name], reward, done, info = step(
                        k, env_states[name], actions[name], task[name]
                    )
                    truncated = bool(info["truncated"]) or (t == max_steps - 1 and not bool(done))
                    self.agents[name].observe(obs[name], actions[name], reward, info["terminated"], truncated, info)
                    totals[name] += float(reward)
                    if bool(done) or truncated:
                        running.discard(name)
            for name in names:
                returns[name].append(totals[name])
        return returns
