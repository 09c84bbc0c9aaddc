"""Interactive agents: the library's only mutable classes, thin wrappers over the trainer's pure functions.

    trainer = make_meta_rl_trainer(env, policy, config)             # or ssm_jax.config.build(CONFIGS["basic"])[1]
    agent = MetaMAMLAgent(trainer, state, jax.random.key(0))        # state: a TrainState (trained, or restored)
    action = agent.act(observation)                                 # [observation_size] -> [action_size]
    agent.observe(next_observation, action, reward, terminated, truncated, info)
    agent.adapt()                                                   # one policy-gradient step on what it observed
    agent.update()                                                  # MAML's meta-step: pre- and post-adaptation data

`ssm_jax.coordinator.AgentCoordinator` runs several agents side by side.

An agent acts in one env at a time. `act` runs `policy.step` (the recurrent carry, reset at each episode's first
step) on the observation standardised by the run's frozen statistics and samples an action; it is jitted once, so
it does not retrace from call to call. `observe` takes what a gymnasium-style step returns, the observation *after*
the action first. The observed steps form a `Trajectory` whose columns are `trainer.config.horizon` steps long
(episodes of that length, the trainer's, replay exactly), which the trainer's own losses then read.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ssm_jax.adapt.adapter import ADAPTATION_MODES
from ssm_jax.buffer import freeze
from ssm_jax.envs.normalize import normalize, update_stats
from ssm_jax.meta.policy_losses import mean_episode_return, prepare_batch
from ssm_jax.rollout import Trajectory, action_log_prob, sample_action
from ssm_jax.trainers import Trainer, TrainState, adaptation_lr
from ssm_jax.types import PRNGKey


class Agent(Protocol):
    """SSM-MetaRL's agent contract."""

    def act(self, observation: Any) -> Any: ...

    def observe(
        self, observation: Any, action: Any, reward: Any, terminated: Any, truncated: Any, info: Any
    ) -> None: ...

    def adapt(self, **kwargs: Any) -> dict: ...

    def update(self, **kwargs: Any) -> dict: ...

    def reset(self) -> None: ...


class _PolicyAgent:
    """Acting, observing and turning what was observed into the trainer's `Trajectory`."""

    def __init__(self, trainer: Trainer, state: TrainState, key: PRNGKey):
        self.trainer = trainer
        self.state = state
        self.params = state.meta.params
        """The params `act` uses (the fast params after `adapt`)."""
        self._key = key
        policy = trainer.parts.policy

        def act(params, obs_stats, carry, observation, reset, key):
            carry, out = policy.step(params, carry, normalize(obs_stats, observation), reset)
            action = sample_action(key, out["pi"])
            return carry, action, action_log_prob(out["pi"], action)

        self._act = jax.jit(act)
        self._steps: list[dict] = []
        self.reset()

    def reset(self) -> None:
        """Starts a new episode: the next `act` resets the policy's carry."""
        self._carry = self.trainer.parts.policy.initial_carry(())
        self._episode_start = True
        self._pending = None

    def _next_key(self) -> PRNGKey:
        self._key, key = jax.random.split(self._key)
        return key

    def act(self, observation: Any) -> np.ndarray:
        """An action `[action_size]` sampled for `observation` `[observation_size]`."""
        observation = jnp.asarray(observation, jnp.float32)
        reset = jnp.asarray(self._episode_start)
        self._carry, action, log_prob = self._act(
            self.params, self.state.obs_stats, self._carry, observation, reset, self._next_key()
        )
        self._pending = {"obs": observation, "action": action, "log_prob": log_prob, "resets": reset}
        self._episode_start = False
        return np.asarray(action)

    def observe(self, observation, action, reward, terminated, truncated, info=None) -> None:
        """Records the step `act` started: `observation` is the one after `action` (`info["final_obs"]`, when
        present, is used instead: an auto-resetting env returns the next episode's first observation)."""
        if self._pending is None:
            raise ValueError("observe() needs an act() first: it records the step that act() started")
        next_obs = (info or {}).get("final_obs", observation)
        terminated, truncated = bool(terminated), bool(truncated)
        self._steps.append(
            {
                **self._pending,
                "reward": jnp.asarray(reward, jnp.float32),
                "done": jnp.asarray(terminated or truncated),
                "terminated": jnp.asarray(terminated),
                "truncated": jnp.asarray(truncated),
                "next_obs": jnp.asarray(next_obs, jnp.float32),
            }
        )
        self._pending = None
        if terminated or truncated:
            self.reset()

    def _take_trajectory(self) -> Trajectory:
        """The observed steps as a `Trajectory` `[horizon, N]` (columns of `horizon` consecutive steps; a column
        starts the policy's carry afresh), clearing them. The steps beyond the last full column are dropped."""
        horizon = self.trainer.config.horizon
        columns = len(self._steps) // horizon
        if columns == 0:
            raise ValueError(f"adapting needs at least horizon={horizon} observed steps, got {len(self._steps)}")
        steps, self._steps = self._steps[: columns * horizon], []
        stacked = {k: jnp.stack([s[k] for s in steps]) for k in steps[0]}
        fields = {k: jnp.swapaxes(v.reshape(columns, horizon, *v.shape[1:]), 0, 1) for k, v in stacked.items()}
        fields["resets"] = fields["resets"].at[0].set(True)
        carry = self.trainer.parts.policy.initial_carry((columns,))
        return Trajectory(**fields, initial_carry=carry, metrics={})


def _inner_step(trainer: Trainer, state: TrainState, params, traj: Trajectory):
    batch = prepare_batch(traj, trainer.parts.rl_config, state.obs_stats)
    fast, grad_norm = trainer.parts.meta_rl.maml.inner_step(params, batch, adaptation_lr(state))
    return fast, batch, grad_norm


def _meta_step(trainer: Trainer, state: TrainState, support, query_traj: Trajectory, observations):
    query = prepare_batch(query_traj, trainer.parts.rl_config, state.obs_stats)
    one_task = lambda batch, axes: jax.tree.map(lambda x: x.reshape((1,) * axes + x.shape), batch)
    meta, metrics = trainer.parts.meta_rl.maml.update(state.meta, (one_task(support, 2), one_task(query, 1)))
    obs_stats = update_stats(state.obs_stats, observations)
    return state.replace(meta=meta, obs_stats=obs_stats, iteration=state.iteration + 1), metrics


class MetaMAMLAgent(_PolicyAgent):
    """MAML as an agent: `params` are the fast params, `state.meta.params` the meta-params.

    Per task: act and observe (the support), `adapt()` (one inner step from the meta-params), act and observe
    again (the query), `update()` (MAML's meta-step through the inner step on that support and query; the fast
    params return to the new meta-params).
    """

    def __init__(self, trainer: Trainer, state: TrainState, key: PRNGKey):
        if trainer.config.inner_steps != 1:
            raise ValueError(
                f"MetaMAMLAgent takes one inner step; the trainer has inner_steps={trainer.config.inner_steps}"
            )
        super().__init__(trainer, state, key)
        self._inner_step = jax.jit(functools.partial(_inner_step, trainer))
        self._meta_step = jax.jit(functools.partial(_meta_step, trainer))
        self._support = None
        self._support_obs = None

    def adapt(self, **kwargs: Any) -> dict:
        """One inner policy-gradient step from the meta-params on the steps observed since the last update."""
        traj = self._take_trajectory()
        self.params, self._support, grad_norm = self._inner_step(self.state, self.state.meta.params, traj)
        self._support_obs = traj.obs
        return {"inner_grad_norm": float(grad_norm), "return": float(mean_episode_return(traj))}

    def update(self, **kwargs: Any) -> dict:
        """MAML's meta-step on the last support and the query observed since `adapt()`."""
        if self._support is None:
            raise ValueError("update() needs adapt() first: the meta-step differentiates through the inner step")
        query = self._take_trajectory()
        observations = jnp.concatenate([self._support_obs, query.obs], axis=1)
        self.state, metrics = self._meta_step(self.state, self._support, query, observations)
        self.params, self._support = self.state.meta.params, None
        return {**{k: float(v) for k, v in metrics.items()}, "return": float(mean_episode_return(query))}


class AdaptationAgent(_PolicyAgent):
    """Test-time adaptation as an agent: `adapt()` runs the standard or hybrid adapter (the trainer's `adapter`)
    on what it observed, from the current params; the run's experience buffer is read-only."""

    def __init__(self, trainer: Trainer, state: TrainState, key: PRNGKey, mode: str = "standard"):
        if mode not in ADAPTATION_MODES:
            raise ValueError(f"unknown adaptation mode {mode!r}; expected one of {', '.join(ADAPTATION_MODES)}")
        super().__init__(trainer, state, key)
        self.mode = mode
        self._adapter_step = jax.jit(functools.partial(_adapter_step, trainer))
        self.adapt_state = trainer.parts.adapter.init(self.params).replace(
            experience_weight=state.hparams.adapter_weight(mode), learning_rate=adaptation_lr(state)
        )

    def adapt(self, **kwargs: Any) -> dict:
        """One adapter update on the steps observed since the last `adapt()`."""
        traj = self._take_trajectory()
        self.adapt_state, self.params, metrics = self._adapter_step(
            self.adapt_state, self.params, traj, self.state, self._next_key()
        )
        return {**{k: float(np.mean(v)) for k, v in metrics.items()}, "return": float(mean_episode_return(traj))}

    def update(self, **kwargs: Any) -> dict:
        """Test-time agents have no outer loop: nothing to update."""
        return {}


def _adapter_step(trainer: Trainer, adapt_state, params, traj: Trajectory, state: TrainState, key: PRNGKey):
    batch = prepare_batch(traj, trainer.parts.rl_config, state.obs_stats)
    return trainer.parts.adapter.update(adapt_state, params, batch, freeze(state.buffer), key)
