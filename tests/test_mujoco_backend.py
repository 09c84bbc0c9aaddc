"""The `mujoco` backend: MuJoCo's C library inside the jitted program is the `mjx` env up to float precision, pure
(same key, same numbers; vmapped beside another run or sharded over devices, the same numbers), compiled once,
never differentiated, and a MAML run on it resumes bit for bit."""

import copy
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_runs import assert_same_run

from ssm_jax import cli, envs, run_files
from ssm_jax.envs import brax_tasks, mujoco_backend

STEPS = 20
ENVS = 4


def _rollout(env, task, actions, keys):
    """`(reset obs [N, obs], per-step (obs, reward, done, x_velocity) [T, N, ...])` of `env` under `actions [T, N,
    A]`."""
    obs, states = jax.vmap(env.reset, in_axes=(0, None))(keys, task)

    def body(states, action):
        obs, states, reward, done, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, states, action, task)
        return states, (obs, reward, done, info["metrics"]["x_velocity"])

    return obs, jax.lax.scan(body, states, actions)[1]


def _both(family):
    """The family's rollout on mujoco and on mjx from the same reset keys and actions."""
    env = {backend: envs.make(family, backend=backend) for backend in ("mujoco", "mjx")}
    task = jax.tree.map(lambda x: x[0], env["mujoco"].sample_tasks(jax.random.key(0), 1))
    keys = jax.random.split(jax.random.key(1), ENVS)
    actions = jax.random.uniform(jax.random.key(2), (STEPS, ENVS, env["mujoco"].action_size), minval=-1, maxval=1)
    return [jax.jit(_rollout, static_argnums=0)(env[b], task, actions, keys) for b in ("mujoco", "mjx")]


@pytest.mark.parametrize("family", ["halfcheetah-vel", "halfcheetah-dir", "walker2d-vel", "halfcheetah-gravity"])
def test_one_step_and_a_20_step_rollout_on_mujoco_equal_mjx(family):
    """The same reset keys and actions: observations, rewards, done and x velocity agree with mjx to float32
    precision after one step, and stay within 1% of their scale over 20 steps (contacts amplify float32's rounding in
    mjx). brax's own code computes both backends' observations and rewards; only the physics differs."""
    (reset_c, (obs_c, reward_c, done_c, vel_c)), (reset_j, (obs_j, reward_j, done_j, vel_j)) = _both(family)
    np.testing.assert_allclose(reset_c, reset_j, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obs_c[0], obs_j[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reward_c[0], reward_j[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vel_c[0], vel_j[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(done_c, done_j)
    scale = float(jnp.max(jnp.abs(obs_j)))
    assert float(jnp.max(jnp.abs(obs_c - obs_j))) < 0.01 * scale
    assert float(jnp.max(jnp.abs(reward_c - reward_j))) < 0.01 * float(jnp.max(jnp.abs(reward_j)))


@pytest.mark.parametrize("mass", [1.0, 1.4])
def test_the_ant_on_mujoco_equals_mjx_when_both_solvers_converge(mass):
    """brax's mjx ant runs one Newton iteration (`opt.iterations = 1`), whose unconverged answer MuJoCo's C solver does
    not reproduce once the legs touch the floor. With the solver converged on both sides, the same model agrees
    over 20 steps: the two pipelines are one physics, also with every body's mass scaled as ant-mass scales it (on
    the host side of the callback for mujoco)."""
    mjx_env = copy.copy(brax_tasks._brax_env("ant", "mjx"))
    converged = mjx_env.sys.tree_replace({"opt.iterations": 50, "opt.ls_iterations": 50, "opt.tolerance": 1e-10})
    mjx_env.sys = brax_tasks._scale_mass(converged, jnp.asarray(mass), "mjx")
    c_env = mujoco_backend.with_dynamics(mujoco_backend.on_mujoco(mjx_env), "mass", jnp.asarray(mass))
    actions = jax.random.uniform(jax.random.key(2), (STEPS, 8), minval=-1, maxval=1)

    def obs(env):
        def body(state, action):
            state = env.step(state, action)
            return state, state.obs

        return jax.lax.scan(body, env.reset(jax.random.key(3)), actions)[1]

    on_c, on_mjx = jax.jit(lambda: obs(c_env))(), jax.jit(lambda: obs(mjx_env))()
    assert float(jnp.max(jnp.abs(on_c - on_mjx))) < 0.01 * float(jnp.max(jnp.abs(on_mjx)))


def test_mujoco_rollouts_are_pure_vmap_over_runs_and_compile_once():
    """The same key gives the same returns; two runs vmapped in one program equal each run alone, bit for bit; and a
    program stepping the env traces once however often it runs."""
    env = envs.make("halfcheetah-vel", backend="mujoco", horizon=10)
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(jax.random.key(0), 1))

    def returns_of(key):
        reset_key, action_key = jax.random.split(key)
        actions = jax.random.uniform(action_key, (25, 3, env.action_size), minval=-1, maxval=1)
        keys = jax.random.split(reset_key, 3)
        return jnp.sum(_rollout(env, task, actions, keys)[1][1], axis=0)

    chex.clear_trace_counter()
    returns = jax.jit(chex.assert_max_traces(returns_of, n=1))
    first, second = jax.random.key(5), jax.random.key(6)
    alone = [np.asarray(returns(first)), np.asarray(returns(second))]
    np.testing.assert_array_equal(np.asarray(returns(first)), alone[0])
    assert not np.array_equal(alone[0], alone[1])
    together = jax.jit(jax.vmap(returns_of))(jnp.stack([first, second]))
    np.testing.assert_array_equal(np.asarray(together), np.stack(alone))


def test_a_state_round_trip_through_the_carry_keeps_mujocos_float64_physics():
    """The carry holds MuJoCo's float64 state as its bits: stepping the carried state equals stepping in C alone."""
    import mujoco

    env = brax_tasks._brax_env("halfcheetah", "mujoco")
    host = env.pipeline_init.__self__
    state = env.reset(jax.random.key(0)).pipeline_state
    action = jnp.full((env.action_size,), 0.3)
    stepped = jax.jit(env.pipeline_step)(state, action)
    data = mujoco.MjData(host.model)
    physics = np.asarray(state.physics).view(np.float64)
    mujoco.mj_setState(host.model, data, physics, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    data.ctrl[:] = np.float32(0.3)  # the action as the policy's float32 gave it
    for _ in range(host.n_frames):
        mujoco.mj_step(host.model, data)
    in_c = np.empty(host.nstate)
    mujoco.mj_getState(host.model, data, in_c, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    np.testing.assert_array_equal(np.asarray(stepped.physics).view(np.float64), in_c)  # time, qpos, qvel, ...


def test_a_gradient_through_the_mujoco_physics_is_one_clear_error():
    env = envs.make("halfcheetah-vel", backend="mujoco", horizon=5)
    task = jax.tree.map(lambda x: x[0], env.sample_tasks(jax.random.key(0), 1))
    _, state = env.reset(jax.random.key(1), task)
    reward = lambda action: env.step(jax.random.key(2), state, action, task)[2]
    with pytest.raises(mujoco_backend.MujocoGradientError, match="no gradient flows through the mujoco backend"):
        jax.grad(reward)(jnp.zeros(env.action_size))


def test_per_task_gravity_and_mass_on_mujoco_change_the_next_state_without_retracing():
    """The host side scales each env's model by its own task: two scales in one batch step apart, equal scales
    step alike, and new scale values run the same compiled program."""
    traces = []
    for family in ("halfcheetah-gravity", "ant-mass"):
        env = envs.make(family, backend="mujoco", horizon=10)
        action = jnp.full((3, env.action_size), 0.8)

        @jax.jit
        def next_velocity(scales, env=env, action=action):
            traces.append(1)
            tasks = envs.DynamicsTask(scales)
            _, states = jax.vmap(env.reset, in_axes=(None, 0))(jax.random.key(0), tasks)
            return jax.vmap(env.step, in_axes=(None, 0, 0, 0))(jax.random.key(1), states, action, tasks)[1]

        first = next_velocity(jnp.asarray([0.5, 1.0, 1.5])).inner.pipeline_state.qd
        again = next_velocity(jnp.asarray([1.5, 1.0, 0.5])).inner.pipeline_state.qd
        assert float(jnp.max(jnp.abs(first[0] - first[2]))) > 1e-3, family
        np.testing.assert_array_equal(first[0], again[2])
        np.testing.assert_array_equal(first[1], again[1])
    assert len(traces) == 2  # one trace per family


MUJOCO_RUN = [
    "--config", "halfcheetah-vel-smoke", "--backend", "mujoco", "--iterations", "8", "--chunk-size", "1",
    "--checkpoint-every", "1", "--no-plots",
]  # fmt: skip


@pytest.mark.slow
def test_a_maml_run_on_mujoco_killed_and_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path):
    assert cli.main(["train", "--out-dir", str(tmp_path / "a"), *MUJOCO_RUN]) == 0
    (uninterrupted,) = (tmp_path / "a").iterdir()
    command = [sys.executable, "-m", "ssm_jax", "train", "--out-dir", str(tmp_path / "b"), *MUJOCO_RUN]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if sum(len(p.read_text().splitlines()) for p in (tmp_path / "b").glob("*/metrics.jsonl")) >= 3:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    (killed,) = (tmp_path / "b").iterdir()
    assert 0 < run_files.checkpoint_steps(killed)[-1] < 8
    assert cli.main(["train", "--resume", str(killed)]) == 0
    assert_same_run(killed, uninterrupted)


SHARDED_ROLLOUTS = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from ssm_jax import envs

env = envs.make("halfcheetah-vel", backend="mujoco", horizon=10)
tasks, keys = env.sample_tasks(jax.random.key(0), 8), jax.random.split(jax.random.key(1), 8)

def returns(keys, tasks):
    def one(key, task):
        _, state = env.reset(key, task)
        step = lambda state, k: env.step(k, state, jnp.full((env.action_size,), 0.3), task)[1:3]
        return jax.lax.scan(step, state, jax.random.split(key, 10))[1].sum()
    return jax.vmap(one)(keys, tasks)

sharding = NamedSharding(jax.make_mesh((4,), ("tasks",), axis_types=(AxisType.Auto,)), PartitionSpec("tasks"))
sharded = jax.jit(returns)(jax.device_put(keys, sharding), jax.device_put(tasks, sharding))
assert len(sharded.sharding.device_set) == 4
np.testing.assert_array_equal(np.asarray(sharded), np.asarray(jax.jit(returns)(keys, tasks)))
print("equal")
"""


def test_mujoco_rollouts_sharded_over_4_devices_equal_the_unsharded_ones():
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"}
    command = [sys.executable, "-c", SHARDED_ROLLOUTS]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("equal"), result.stderr[-2000:]
