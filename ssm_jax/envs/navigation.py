"""2D navigation (Finn et al. 2017): a point robot starts at the origin and moves to a goal in U[−0.5, 0.5]².

As in MAML-RL's `PointEnvRandGoal` behind rllab's `normalize` wrapper: observation: position `[2]`; action `[2]`
clipped to [−1, 1] and scaled to a displacement of at most `max_action` (0.1) per axis; reward: −‖position − goal‖
after the move; the episode terminates when both coordinates are within `goal_tolerance` (0.01) of the goal, and
is truncated at the horizon (100). Pure JAX, for fast learning tests.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.envs.base import TaskEnv, check_horizon
from ssm_jax.types import Array, PRNGKey


@struct.dataclass
class NavigationTask:
    goal: Array  # [2]


@dataclasses.dataclass(frozen=True)
class Navigation2D(TaskEnv):
    horizon: int = 100
    goal_range: float = 0.5
    max_action: float = 0.1
    goal_tolerance: float = 0.01

    def __post_init__(self):
        check_horizon(self.horizon)

    @property
    def observation_size(self) -> int:
        return 2

    @property
    def action_size(self) -> int:
        return 2

    def sample_tasks(self, key: PRNGKey, n: int) -> NavigationTask:
        return NavigationTask(jax.random.uniform(key, (n, 2), minval=-self.goal_range, maxval=self.goal_range))

    def _reset(self, key: PRNGKey, task: NavigationTask):
        del key, task
        position = jnp.zeros(2, jnp.float32)
        return position, position

    def _step(self, key: PRNGKey, position: Array, action: Array, task: NavigationTask):
        del key
        position = position + self.max_action * jnp.clip(action, -1.0, 1.0)
        offset = position - task.goal
        reached = jnp.all(jnp.abs(offset) < self.goal_tolerance)
        return position, position, -jnp.linalg.norm(offset), reached

    @property
    def task_metric_name(self) -> str:
        return "distance to goal"

    def _metrics(self, position: Array, task: NavigationTask) -> dict[str, Array]:
        return {"task_metric": jnp.linalg.norm(position - task.goal)}
