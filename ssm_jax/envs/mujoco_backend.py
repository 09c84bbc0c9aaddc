"""The `mujoco` physics backend: MuJoCo's C library steps brax's locomotion models inside the jitted program.

brax's `mjx` backend is MuJoCo's model and algorithms written in JAX: the right physics on an accelerator, slow on
a CPU. This backend steps the *same* `mujoco.MjModel` (brax's XML with the solver options brax's mjx env sets)
with MuJoCo's own C library, through one `jax.pure_callback` per env step:

- the env state is MuJoCo's full physics state (`mjSTATE_FULLPHYSICS`: time, qpos, qvel, ...; float64 on the host)
  carried as its raw bits, a `uint32 [2 * nstate]` array, so a round trip through the carry never changes the
  physics and the state stays a plain JAX array: rollouts vmap over tasks and runs, shard and checkpoint as any
  other carry;
- the callback receives the whole batch (every vmapped axis at once) and steps it with `mujoco.rollout` over a
  thread pool of as many threads as the cores this process may use; each env step starts MuJoCo's solver from a
  zero warm start, so the same state and action always give the same next state, whichever thread runs it;
- observations, rewards, `done` and metrics are brax's own code: the brax env (built for the `mjx` backend) is
  reused with only its `pipeline_init` and `pipeline_step` replaced, so the two backends are one env up to float
  precision (`tests/test_mujoco_backend.py` checks it). brax's locomotion envs read `q`, `qd` and the root body's
  position `x.pos[0]`, which this pipeline state holds;
- per-task model parameters (the gravity and mass families) are set on the host side: the callback receives each
  env's scale and steps it with a copy of the model whose gravity, or body masses and inertias, it scales (as the
  mjx backend scales `opt.gravity`, `body_mass` and `body_inertia`; the constants MuJoCo derives from masses at
  compile time stay the base model's on both), cached per scale;
- no gradient flows through the physics: differentiating through a step raises `MujocoGradientError`.
"""

from __future__ import annotations

import copy
import functools
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ssm_jax.types import Array

DYNAMICS = ("gravity", "mass")
"""The per-task model parameters the host side scales."""
MODELS_KEPT = 512
"""Task-scaled models kept per physics, least recently used first out: each is a copy of the model (about 0.5 MB
for brax's ant and halfcheetah), and a batch that steps more distinct scales than this at once copies models at
every step."""

# mjx-side solver options (`brax.System.opt`) copied onto the C model, so that both backends solve the same problem
_SOLVER_OPTIONS = (
    "timestep", "iterations", "ls_iterations", "solver", "disableflags", "enableflags", "integrator", "cone",
    "impratio", "tolerance", "ls_tolerance", "gravity", "wind", "magnetic", "density", "viscosity",
)  # fmt: skip


class MujocoGradientError(ValueError):
    """A gradient was asked of the `mujoco` backend's physics, which is MuJoCo's C library."""


@struct.dataclass
class RootFrame:
    """`pos [1, 3]`: the world position of the model's root body, the one row of brax's `x.pos` its envs read."""

    pos: Array


@struct.dataclass
class MujocoPipelineState:
    """`physics`: MuJoCo's full physics state as float64 bits, `uint32 [2 * nstate]`; `q [nq]` and `qd [nv]`: its
    positions and velocities in the default float dtype; `x`: the root body's frame."""

    physics: Array
    q: Array
    qd: Array
    x: RootFrame


def available_threads() -> int:
    """The cores this process may run on (its CPU affinity), the size of the C stepping's thread pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class MujocoPhysics:
    """Host side of one brax model: the C model, a thread pool and its per-thread `MjData`, and the JAX functions
    `pipeline_init(q, qd)` and `pipeline_step(state, action)` that call it. Built once per model (`on_mujoco`)."""

    def __init__(self, mjx_env):
        import mujoco
        import mujoco.rollout

        self._mujoco = mujoco
        model = copy.deepcopy(mjx_env.sys.mj_model)
        for name in _SOLVER_OPTIONS:
            value = getattr(mjx_env.sys.opt, name)
            setattr(model.opt, name, np.asarray(value) if np.ndim(value) else type(getattr(model.opt, name))(value))
        self.model = model
        self.n_frames = int(mjx_env._n_frames)
        self.nstate = mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.threads = available_threads()
        self._rollout = mujoco.rollout.Rollout(nthread=self.threads)
        self._datas = [mujoco.MjData(model) for _ in range(max(self.threads, 1))]
        self._lock = threading.Lock()
        self._root_offset, self._root_axes, self._root_free = self._root_kinematics(model)

    @staticmethod
    def _root_kinematics(model) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], int | None]:
        """The root body's world position as a function of qpos: its offset plus each slide joint's axis times its
        coordinate, or a free joint's first three coordinates. Hinges must sit at the body's origin."""
        import mujoco

        axes, free = [], None
        for joint in range(model.njnt):
            if model.jnt_bodyid[joint] != 1:
                continue
            kind, address = model.jnt_type[joint], int(model.jnt_qposadr[joint])
            if kind == mujoco.mjtJoint.mjJNT_FREE:
                free = address
            elif kind == mujoco.mjtJoint.mjJNT_SLIDE:
                axes.append((address, np.array(model.jnt_axis[joint])))
            elif np.any(model.jnt_pos[joint] != 0):
                raise NotImplementedError("the mujoco backend needs the root body's hinges at its origin")
        return np.array(model.body_pos[1]), axes, free

    def root_position(self, q: Array) -> Array:
        """`[nq] -> [1, 3]`: the root body's world position (brax's `x.pos[0]`)."""
        if self._root_free is not None:
            return q[self._root_free : self._root_free + 3][None]
        position = jnp.asarray(self._root_offset, q.dtype)
        for address, axis in self._root_axes:
            position = position + q[address] * jnp.asarray(axis, q.dtype)
        return position[None]

    def _host_init(self, q: np.ndarray, qd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`[..., nq], [..., nv] -> (bits [..., 2 * nstate], q [..., nq])`, with quaternions normalised, as brax's mjx
        `pipeline_init` leaves them (its reset noise denormalises the ant's)."""
        batch, nq = q.shape[:-1], self.model.nq
        state = np.zeros((int(np.prod(batch)), self.nstate), np.float64)
        state[:, 1 : 1 + nq] = q.reshape(-1, nq)
        state[:, 1 + nq : 1 + nq + self.model.nv] = qd.reshape(-1, self.model.nv)
        for row in state:
            self._mujoco.mj_normalizeQuat(self.model, row[1 : 1 + nq])
        return state.view(np.uint32).reshape(*batch, 2 * self.nstate), state[:, 1 : 1 + nq].reshape(*batch, nq)

    @functools.lru_cache(maxsize=MODELS_KEPT)  # noqa: B019  (one MujocoPhysics per model, kept for the process)
    def _scaled_model(self, kind: str, scale: float):
        """A copy of the model with gravity, or every body's mass and inertia, times `scale`."""
        model = copy.copy(self.model)
        if kind == "gravity":
            model.opt.gravity[:] = self.model.opt.gravity * scale
        else:
            model.body_mass[:] = self.model.body_mass * scale
            model.body_inertia[:] = self.model.body_inertia * scale
        return model

    def _host_step(self, physics: np.ndarray, action: np.ndarray, scale: np.ndarray, kind: str | None):
        """`bits [..., 2 * nstate], action [..., nu], scale [...] -> (bits, q, qd, q before the last substep)`;
        `scale` sets each env's `kind` of dynamics (gravity or mass), or nothing where `kind` is None."""
        batch = physics.shape[:-1]
        nbatch, nq, nv = int(np.prod(batch)), self.model.nq, self.model.nv
        states = np.ascontiguousarray(physics).reshape(nbatch, 2 * self.nstate).view(np.float64)
        controls = np.repeat(np.asarray(action, np.float64).reshape(nbatch, 1, -1), self.n_frames, axis=1)
        if kind is None:
            models = [self.model] * nbatch
        else:
            models = [self._scaled_model(kind, float(value)) for value in np.asarray(scale).reshape(nbatch)]
        trajectory = np.empty((nbatch, self.n_frames, self.nstate))
        with self._lock:
            self._rollout.rollout(
                models,
                self._datas,
                states,
                controls,
                nstep=self.n_frames,
                initial_warmstart=np.zeros((nbatch, nv)),
                state=trajectory,
                sensordata=np.empty((nbatch, self.n_frames, 0)),
                chunk_size=max(1, -(-nbatch // (4 * self.threads))),
                control_spec=self._mujoco.mjtState.mjSTATE_CTRL.value,
                skip_checks=True,
            )
        final = np.ascontiguousarray(trajectory[:, -1])
        before_last = trajectory[:, -2] if self.n_frames > 1 else states
        return (
            final.view(np.uint32).reshape(*batch, 2 * self.nstate),
            final[:, 1 : 1 + nq].reshape(*batch, nq),
            final[:, 1 + nq : 1 + nq + nv].reshape(*batch, nv),
            before_last[:, 1 : 1 + nq].reshape(*batch, nq),
        )

    def pipeline_init(self, q: Array, qd: Array, act=None, ctrl=None) -> MujocoPipelineState:
        """brax's `PipelineEnv.pipeline_init`: the state at positions `q [nq]` and velocities `qd [nv]`."""
        del act, ctrl
        shapes = (jax.ShapeDtypeStruct((2 * self.nstate,), jnp.uint32), jax.ShapeDtypeStruct(q.shape, q.dtype))
        physics, q = jax.pure_callback(self._host_init, shapes, q, qd, vmap_method="broadcast_all")
        return MujocoPipelineState(physics=physics, q=q, qd=qd, x=RootFrame(self.root_position(q)))

    def pipeline_step(self, state: MujocoPipelineState, action: Array, dynamics=None) -> MujocoPipelineState:
        """brax's `PipelineEnv.pipeline_step`: `n_frames` MuJoCo steps with controls `action [nu]`, on the model
        with `dynamics = (kind, scale [])` applied (`with_dynamics`) if given. `x` is the root's position before the
        last substep: MuJoCo computes kinematics before it integrates, and brax's mjx pipeline reads them there."""
        kind, scale = dynamics if dynamics is not None else (None, jnp.ones(()))
        action = action.astype(state.q.dtype)
        physics, q, qd, q_kinematics = _step(self, kind, state.physics, action, jnp.asarray(scale, action.dtype))
        return MujocoPipelineState(physics=physics, q=q, qd=qd, x=RootFrame(self.root_position(q_kinematics)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _step(host: MujocoPhysics, kind: str | None, state_bits: Array, action: Array, scale: Array):
    dtype = action.dtype
    batch = state_bits.shape[:-1]
    q = jax.ShapeDtypeStruct((*batch, host.model.nq), dtype)
    qd = jax.ShapeDtypeStruct((*batch, host.model.nv), dtype)
    shapes = (jax.ShapeDtypeStruct(state_bits.shape, jnp.uint32), q, qd, q)

    def step_on_host(bits, controls, scales):
        new_bits, *coordinates = host._host_step(bits, controls, scales, kind)
        return new_bits, *(x.astype(dtype) for x in coordinates)

    return jax.pure_callback(step_on_host, shapes, state_bits, action, scale, vmap_method="broadcast_all")


@_step.defjvp
def _step_jvp(host, kind, primals, tangents):
    del host, kind, primals, tangents
    raise MujocoGradientError(
        "no gradient flows through the mujoco backend (MuJoCo's C library); use backend='mjx' to differentiate "
        "through the physics"
    )


def on_mujoco(mjx_env):
    """brax's env on the `mujoco` backend: a shallow copy of its `mjx` env (the model, observations, rewards and
    metrics) whose pipeline is MuJoCo's C library. The `mjx` env itself is never changed."""
    host = MujocoPhysics(mjx_env)
    env = copy.copy(mjx_env)
    env.pipeline_init = host.pipeline_init
    env.pipeline_step = host.pipeline_step
    return env


def with_dynamics(env, kind: str, scale: Array):
    """A shallow copy of the `mujoco` brax `env` (from `on_mujoco`) that steps the model with its gravity, or its
    body masses and inertias, times the traced `scale []` (`kind` one of `DYNAMICS`)."""
    if kind not in DYNAMICS:
        raise ValueError(f"unknown dynamics {kind!r}; expected one of {', '.join(DYNAMICS)}")
    scaled = copy.copy(env)
    scaled.pipeline_step = functools.partial(env.pipeline_step, dynamics=(kind, scale))
    return scaled
