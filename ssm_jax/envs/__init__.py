"""Task distributions: a static env plus a TaskParams pytree with a leading task axis (gymnax style).

env = make("halfcheetah-vel", backend="mujoco")
tasks = env.sample_tasks(key, n)
obs, state = env.reset(key, task)
obs, state, reward, done, info = env.step(key, state, action, task)
"""

from __future__ import annotations

import dataclasses

from ssm_jax.envs.base import EnvState, TaskEnv
from ssm_jax.envs.brax_tasks import (
    BACKENDS,
    FAMILIES,
    GOAL_SETS,
    BraxTaskEnv,
    DirectionTask,
    DynamicsTask,
    VelocityTask,
)
from ssm_jax.envs.gymnax_tasks import GymnaxTaskEnv
from ssm_jax.envs.navigation import Navigation2D, NavigationTask
from ssm_jax.envs.normalize import RunningMeanStd, normalize, update_stats
from ssm_jax.envs.sinusoid import SinusoidDistribution, SinusoidParams

_REGISTRY = {
    **{family: (BraxTaskEnv, {"family": family}) for family in FAMILIES},
    "cartpole-params": (GymnaxTaskEnv, {"family": "cartpole-params"}),
    "pendulum-params": (GymnaxTaskEnv, {"family": "pendulum-params"}),
    "navigation-2d": (Navigation2D, {}),
}
ENV_NAMES = tuple(_REGISTRY)
META_RL_ENVS = (
    "halfcheetah-vel", "halfcheetah-dir", "ant-vel", "walker2d-vel", "ant-dir", "navigation-2d", "pendulum-params"
)  # fmt: skip


def make(name: str, **options) -> TaskEnv:
    """Builds the task family `name` (one of `ENV_NAMES`) with static `options` (e.g. backend, horizon)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task family {name!r}; expected one of {', '.join(ENV_NAMES)}")
    cls, fixed = _REGISTRY[name]
    allowed = sorted(f.name for f in dataclasses.fields(cls) if f.name not in fixed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"invalid option(s) {unknown} for {name!r}; valid options: {', '.join(allowed)}")
    return cls(**fixed, **options)


def make_meta_rl(name: str, horizon: int, backend: str = "mujoco", goals: str = "uniform") -> TaskEnv:
    """The meta-RL family `name` (one of `META_RL_ENVS`: continuous actions) with the options that apply to it:
    `backend` for the brax families, `goals` (U[0, 2] or SSM-MetaRL's 0.5, 1, ..., 2.5) for halfcheetah-vel."""
    if name not in META_RL_ENVS:
        raise ValueError(f"unknown meta-RL family {name!r}; expected one of {', '.join(META_RL_ENVS)}")
    if name in ("navigation-2d", "pendulum-params"):
        return make(name, horizon=horizon)
    return make(name, backend=backend, horizon=horizon, **({"goals": goals} if name == "halfcheetah-vel" else {}))


__all__ = [
    "BACKENDS",
    "ENV_NAMES",
    "GOAL_SETS",
    "META_RL_ENVS",
    "BraxTaskEnv",
    "DirectionTask",
    "DynamicsTask",
    "EnvState",
    "GymnaxTaskEnv",
    "Navigation2D",
    "NavigationTask",
    "RunningMeanStd",
    "SinusoidDistribution",
    "SinusoidParams",
    "TaskEnv",
    "VelocityTask",
    "make",
    "make_meta_rl",
    "normalize",
    "update_stats",
]
