"""brax locomotion task families (MAML-RL / ProMP definitions) on any physics backend: `mujoco` (MuJoCo's C library
inside the jitted program, `ssm_jax.envs.mujoco_backend`; the default), `mjx`, or brax's `generalized`, `positional`
and `spring`.

| family | task parameter | reward |
| --- | --- | --- |
| halfcheetah-vel | goal velocity U[0, 2] (`goals="reference"`: 0.5, 1, …, 2.5) | −\\|v_x − v_goal\\| − 0.05·Σa² |
| ant-vel | goal velocity U[0, 3] | 1 − \\|v_x − v_goal\\| − 0.05·Σa² (healthy bonus; ends on a fall) |
| walker2d-vel | goal velocity U[0, 2] | 1 − \\|v_x − v_goal\\| − 0.05·Σa² (healthy bonus; ends on a fall) |
| ant-dir | goal direction θ ~ U[0, 2π) (`directions=2`: forward/backward) | 1 + v_xy·(cos θ, sin θ) − 0.05·Σa² |
| halfcheetah-dir | forward or backward, θ ∈ {0, π} (Finn et al. Fig. 5) | v_x·cos θ − 0.05·Σa² |
| halfcheetah-gravity | gravity scale U[0.5, 1.5] | brax's halfcheetah reward |
| ant-mass | body-mass scale U[0.5, 1.5] | brax's ant reward |

Actions are clipped to [−1, 1]. Horizon 200 by default. The healthy bonus keeps falling from being the way to
escape per-step penalties in the families that terminate. Dynamics tasks step a shallow copy of the shared brax
env that holds a task-scaled `brax.System` (the shared env is never mutated), so scales are traced values: no
recompilation between tasks. Gravity is set in `sys.gravity` and, where present, `sys.opt.gravity` (mjx). Mass on
the spring and positional backends: they compute the mass they use as `mass ** (1 − spring_mass_scale)` (1 for
brax's ant), so the task scales that effective mass and inertia and sets the spring scales to 0; other backends
scale `sys.link.inertia` directly, and mjx, which reads MuJoCo's own fields, `sys.body_mass` and
`sys.body_inertia`. On the mujoco backend the host side of the callback scales a copy of MuJoCo's model per task.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.envs.base import TaskEnv, check_horizon
from ssm_jax.envs.brax_notices import brax_environment
from ssm_jax.envs.mujoco_backend import on_mujoco, with_dynamics
from ssm_jax.types import Array, PRNGKey

BACKENDS = ("mujoco", "generalized", "positional", "spring", "mjx")
REFERENCE_GOALS = (0.5, 1.0, 1.5, 2.0, 2.5)
"""halfcheetah-vel's goal velocities in the reference design (SSM-MetaRL), `goals="reference"`."""
GOAL_SETS = ("uniform", "reference")


@struct.dataclass
class VelocityTask:
    velocity: Array


@struct.dataclass
class DirectionTask:
    angle: Array


@struct.dataclass
class DynamicsTask:
    scale: Array


# family -> (brax env name, kind, task range)
_FAMILIES = {
    "halfcheetah-vel": ("halfcheetah", "velocity", (0.0, 2.0)),
    "ant-vel": ("ant", "velocity", (0.0, 3.0)),
    "walker2d-vel": ("walker2d", "velocity", (0.0, 2.0)),
    "ant-dir": ("ant", "direction", (0.0, 2 * jnp.pi)),
    "halfcheetah-dir": ("halfcheetah", "direction", (0.0, 2 * jnp.pi)),
    "halfcheetah-gravity": ("halfcheetah", "gravity", (0.5, 1.5)),
    "ant-mass": ("ant", "mass", (0.5, 1.5)),
}
FAMILIES = tuple(_FAMILIES)
_TERMINATING = ("ant", "walker2d")


@functools.cache
def _brax_env(name: str, backend: str):
    if backend == "mujoco":
        return on_mujoco(_brax_env(name, "mjx"))
    kwargs = {"use_contact_forces": False} if name == "ant" else {}
    # the cached System must hold concrete arrays, even if first built in a trace
    with jax.ensure_compile_time_eval():
        return brax_environment(name, backend, **kwargs)


@functools.cache
def _observation_size(name: str, backend: str) -> int:
    # brax's own `observation_size` runs an eager reset (seconds of one-op compiles); the shape needs no compute.
    return jax.eval_shape(_brax_env(name, backend).reset, jax.random.key(0)).obs.shape[-1]


def _scale_gravity(sys, scale: Array):
    sys = sys.replace(gravity=sys.gravity * scale)
    if hasattr(sys, "opt") and hasattr(sys.opt, "gravity"):
        sys = sys.replace(opt=sys.opt.replace(gravity=sys.opt.gravity * scale))
    return sys


def _scale_mass(sys, scale: Array, backend: str):
    inertia = sys.link.inertia
    if backend in ("spring", "positional"):  # both read `mass ** (1 - spring_mass_scale)`
        mass = scale * inertia.mass ** (1.0 - sys.spring_mass_scale)
        diagonal = jnp.diagonal(inertia.i, axis1=-2, axis2=-1) ** (1.0 - sys.spring_inertia_scale)
        inertia = inertia.replace(mass=mass, i=scale * diagonal[..., None] * jnp.eye(3))
        sys = sys.replace(spring_mass_scale=0.0, spring_inertia_scale=0.0)
    else:
        inertia = inertia.replace(mass=scale * inertia.mass, i=scale * inertia.i)
    if backend == "mjx":  # mjx reads MuJoCo's own fields, not brax's link inertia
        sys = sys.replace(body_mass=scale * sys.body_mass, body_inertia=scale * sys.body_inertia)
    return sys.replace(link=sys.link.replace(inertia=inertia))


@dataclasses.dataclass(frozen=True)
class BraxTaskEnv(TaskEnv):
    family: str = "halfcheetah-vel"
    backend: str = "mujoco"
    horizon: int = 200
    goals: str = "uniform"
    directions: int = 0
    ctrl_cost: float = 0.05

    def __post_init__(self):
        check_horizon(self.horizon)
        if self.family not in _FAMILIES:
            raise ValueError(f"unknown brax family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown brax backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.goals == "seed":
            raise ValueError('goals="seed" is now goals="reference" (the reference design\'s five goal velocities)')
        if self.goals not in GOAL_SETS or (self.goals == "reference" and self.family != "halfcheetah-vel"):
            raise ValueError('goals must be "uniform", or "reference" (halfcheetah-vel only)')
        if self.directions not in (0, 2) or (self.directions and self.family != "ant-dir"):
            raise ValueError("directions must be 0 (any angle) or 2 (forward/backward; ant-dir only)")

    @property
    def _base(self) -> str:
        return _FAMILIES[self.family][0]

    @property
    def _kind(self) -> str:
        return _FAMILIES[self.family][1]

    @property
    def env(self):
        """The underlying brax env (shared, built once per name and backend)."""
        return _brax_env(self._base, self.backend)

    @property
    def observation_size(self) -> int:
        return _observation_size(self._base, self.backend)

    @property
    def reuse_initial_state(self) -> bool:
        return True

    @property
    def action_size(self) -> int:
        return self.env.action_size

    @property
    def healthy_bonus(self) -> float:
        """The per-step bonus the reward adds in families that can terminate (0 for halfcheetah)."""
        return 1.0 if self._base in _TERMINATING else 0.0

    def sample_tasks(self, key: PRNGKey, n: int):
        low, high = _FAMILIES[self.family][2]
        if self.goals == "reference":
            return VelocityTask(jax.random.choice(key, jnp.asarray(REFERENCE_GOALS), (n,)))
        if self.directions == 2 or self.family == "halfcheetah-dir":
            return DirectionTask(jnp.pi * jax.random.bernoulli(key, 0.5, (n,)).astype(jnp.float32))
        values = jax.random.uniform(key, (n,), minval=low, maxval=high)
        return {"velocity": VelocityTask, "direction": DirectionTask}.get(self._kind, DynamicsTask)(values)

    def _task_env(self, task):
        """The brax env with the task-scaled System: a shallow copy per traced call, so the shared env is never
        mutated (brax's pipeline reads `self.sys`)."""
        if self._kind not in ("gravity", "mass"):
            return self.env
        if self.backend == "mujoco":  # the host side of the callback scales MuJoCo's model
            return with_dynamics(self.env, self._kind, task.scale)
        env = copy.copy(self.env)
        if self._kind == "gravity":
            env.sys = _scale_gravity(self.env.sys, task.scale)
        else:
            env.sys = _scale_mass(self.env.sys, task.scale, self.backend)
        return env

    def _reset(self, key, task):
        state = self._task_env(task).reset(key)
        return state.obs, state

    def _step(self, key, state, action, task):
        del key
        action = jnp.clip(action, -1.0, 1.0)
        state = self._task_env(task).step(state, action)
        return state.obs, state, self._reward(state, action, task), state.done > 0.5

    @property
    def task_metric_name(self) -> str | None:
        return {"velocity": "|v - goal|", "direction": "speed along goal"}.get(self._kind)

    def _metrics(self, state, task) -> dict[str, Array]:
        """brax's `x_velocity` and the task metric: |v_x − v_goal| (velocity goals), the velocity along the goal
        direction (direction goals); dynamics families have no task metric."""
        metrics = state.metrics
        out = {"x_velocity": metrics["x_velocity"]}
        if self._kind == "velocity":
            out["task_metric"] = jnp.abs(metrics["x_velocity"] - task.velocity)
        elif self._kind == "direction":
            along = metrics["x_velocity"] * jnp.cos(task.angle)
            if "y_velocity" in metrics:  # planar bodies (halfcheetah) move along x only
                along = along + metrics["y_velocity"] * jnp.sin(task.angle)
            out["task_metric"] = along
        return out

    def _reward(self, state, action, task) -> Array:
        if self._kind not in ("velocity", "direction"):
            return state.reward
        control = self.ctrl_cost * jnp.sum(action**2)
        progress = self._metrics(state, task)["task_metric"]
        return self.healthy_bonus + (-progress if self._kind == "velocity" else progress) - control
