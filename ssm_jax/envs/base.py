"""The task-environment interface: a static env plus a `TaskParams` pytree (gymnax's `EnvParams` style).

    env = ssm_jax.envs.make("halfcheetah-vel", backend="mujoco")
    tasks = env.sample_tasks(key, n)                            # TaskParams, leaves [n, ...]
    obs, state = env.reset(key, task)                           # one task, one env; vmap for more
    obs, state, reward, done, info = env.step(key, state, action, task)

`done = terminated | truncated`; truncation happens when an episode reaches `env.horizon` steps. `step`
auto-resets: the returned `obs`/`state` start the next episode when `done`, and `info` holds `terminated`,
`truncated`, `final_obs` (the observation before the reset, for bootstrapping on truncation) and `metrics`, the
family's per-step diagnostics read from the simulator (`x_velocity`; `task_metric`, named by
`env.task_metric_name`: |v_x − v_goal|, speed along the goal direction, distance to the goal), which rollouts
record in `Trajectory.metrics` so nothing has to be recovered by inverting a reward. Task
parameters are traced values: changing them never changes a shape or recompiles.

Envs whose reset is expensive (brax: a reset is a forward-kinematics pass, about as costly to compile as a step)
set `reuse_initial_state`: `reset` keeps its `(obs, inner)` in the state and auto-reset restarts from it, as
brax's `AutoResetWrapper` does, instead of computing a fresh reset inside every step. Each `reset` key still gives
each env its own initial state; only episodes after the first within one env repeat it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.types import Array, PRNGKey, tree_where


@struct.dataclass
class EnvState:
    """`inner`: the family's own state; `obs`: current observation; `t`: steps taken in this episode;
    `initial`: `(obs, inner)` auto-reset restarts from when the env sets `reuse_initial_state`, else None."""

    inner: Any
    obs: Array
    t: Array
    initial: Any = None


@dataclasses.dataclass(frozen=True)
class TaskEnv:
    """Base class. Subclasses define sizes, `sample_tasks`, `_reset` and `_step`.

    Attributes:
        horizon: episode length; an episode that reaches it is truncated.
        observation_size: obs feature count. action_size: action dimension, or the number of discrete actions.
        discrete: whether actions are integers in `[0, action_size)`.
    """

    horizon: int

    @property
    def observation_size(self) -> int:
        raise NotImplementedError

    @property
    def action_size(self) -> int:
        raise NotImplementedError

    @property
    def discrete(self) -> bool:
        return False

    @property
    def reuse_initial_state(self) -> bool:
        """Whether auto-reset restarts from the state `reset` returned instead of resetting afresh."""
        return False

    @property
    def task_metric_name(self) -> str | None:
        """What `info["metrics"]["task_metric"]` measures, or None where the family has no task metric."""
        return None

    def sample_tasks(self, key: PRNGKey, n: int) -> Any:
        """`n` tasks as one TaskParams pytree with a leading axis `n`."""
        raise NotImplementedError

    def _reset(self, key: PRNGKey, task: Any) -> tuple[Array, Any]:
        raise NotImplementedError

    def _step(self, key: PRNGKey, inner: Any, action: Array, task: Any) -> tuple[Array, Any, Array, Array]:
        """One transition without resets: `(obs, inner, reward, terminated)`."""
        raise NotImplementedError

    def _metrics(self, inner: Any, task: Any) -> dict[str, Array]:
        """Per-step diagnostics of the state `_step` returned (scalars); none by default."""
        del inner, task
        return {}

    def reset(self, key: PRNGKey, task: Any) -> tuple[Array, EnvState]:
        """Starts an episode of `task`. Returns `(obs [obs_size], state)`."""
        obs, inner = self._reset(key, task)
        initial = (obs, inner) if self.reuse_initial_state else None
        return obs, EnvState(inner=inner, obs=obs, t=jnp.zeros((), jnp.int32), initial=initial)

    def step(self, key: PRNGKey, state: EnvState, action: Array, task: Any):
        """Returns `(obs, state, reward, done, info)`; see the module docstring."""
        step_key, reset_key = jax.random.split(key)
        obs, inner, reward, terminated = self._step(step_key, state.inner, action, task)
        t = state.t + 1
        terminated = jnp.asarray(terminated, bool)
        truncated = (t >= self.horizon) & ~terminated
        done = terminated | truncated
        if self.reuse_initial_state:
            first_obs, first_inner = state.initial
            fresh = state.replace(inner=first_inner, obs=first_obs, t=jnp.zeros_like(t))
        else:
            _, fresh = self.reset(reset_key, task)
        next_state = tree_where(done, fresh, state.replace(inner=inner, obs=obs, t=t))
        metrics = self._metrics(inner, task)
        info = {"terminated": terminated, "truncated": truncated, "final_obs": obs, "metrics": metrics}
        return next_state.obs, next_state, jnp.asarray(reward, jnp.float32), done, info


def check_horizon(horizon: int) -> None:
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be a positive int, got {horizon!r}")
