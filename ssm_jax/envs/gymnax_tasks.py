"""gymnax classic-control task families whose physics vary between tasks.

- `cartpole-params`: pole length U[0.25, 0.75], pole mass U[0.05, 0.5], cart mass U[0.5, 2.0]; 2 discrete actions.
- `pendulum-params`: mass U[0.5, 2.0], length U[0.5, 2.0]; 1-D torque.

The TaskParams are gymnax's own `EnvParams` (derived fields such as CartPole's `total_mass` kept consistent),
with the time limit lifted: truncation at `horizon` is handled by `TaskEnv.step`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ssm_jax.envs.base import TaskEnv, check_horizon
from ssm_jax.types import PRNGKey

_NO_TIME_LIMIT = 2**30


# gymnax is imported where it is used: it loads gymnasium and matplotlib, which `import ssm_jax.envs` must not.


def _cartpole_params(key: PRNGKey):
    from gymnax.environments.classic_control import cartpole

    k_len, k_pole, k_cart = jax.random.split(key, 3)
    length = jax.random.uniform(k_len, minval=0.25, maxval=0.75)
    masspole = jax.random.uniform(k_pole, minval=0.05, maxval=0.5)
    masscart = jax.random.uniform(k_cart, minval=0.5, maxval=2.0)
    return cartpole.EnvParams(
        masscart=masscart,
        masspole=masspole,
        total_mass=masscart + masspole,
        length=length,
        polemass_length=masspole * length,
        max_steps_in_episode=jnp.asarray(_NO_TIME_LIMIT),
    )


def _pendulum_params(key: PRNGKey):
    from gymnax.environments.classic_control import pendulum

    k_m, k_l = jax.random.split(key)
    return pendulum.EnvParams(
        m=jax.random.uniform(k_m, minval=0.5, maxval=2.0),
        l=jax.random.uniform(k_l, minval=0.5, maxval=2.0),
        max_steps_in_episode=jnp.asarray(_NO_TIME_LIMIT),
    )


_FAMILIES = {
    "cartpole-params": ("CartPole-v1", _cartpole_params),
    "pendulum-params": ("Pendulum-v1", _pendulum_params),
}


@dataclasses.dataclass(frozen=True)
class GymnaxTaskEnv(TaskEnv):
    family: str = "cartpole-params"
    horizon: int = 200

    def __post_init__(self):
        check_horizon(self.horizon)
        if self.family not in _FAMILIES:
            raise ValueError(f"unknown gymnax family {self.family!r}; expected one of {', '.join(_FAMILIES)}")

    @property
    def _env(self):
        import gymnax

        return gymnax.make(_FAMILIES[self.family][0])[0]

    @property
    def observation_size(self) -> int:
        return 4 if self.family == "cartpole-params" else 3

    @property
    def action_size(self) -> int:
        return 2 if self.family == "cartpole-params" else 1

    @property
    def discrete(self) -> bool:
        return self.family == "cartpole-params"

    def sample_tasks(self, key: PRNGKey, n: int):
        return jax.vmap(_FAMILIES[self.family][1])(jax.random.split(key, n))

    def _reset(self, key, task):
        return self._env.reset_env(key, task)

    def _step(self, key, inner, action, task):
        if not self.discrete:
            action = jnp.reshape(action, ())  # gymnax's Pendulum takes a scalar torque
        obs, inner, reward, terminated, _ = self._env.step_env(key, inner, action, task)
        return obs, inner, reward, terminated
