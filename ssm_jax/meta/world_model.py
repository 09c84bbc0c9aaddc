"""Meta-learned world models: a sequence model predicts `(next_obs − obs, reward)` from `(obs, action)` sequences.

    wm = make_world_model(env, "ssm", NetworkConfig(), WorldModelConfig(window=16))
    train = wm.collect(key, env.sample_tasks(k, 32), 16)       # [E, T, N] transitions of a behaviour policy
    stats = wm.fit_stats(train)                                 # per-dimension, from meta-training data only
    support, query = wm.support_query(train, stats)             # disjoint trajectories, as window batches
    maml = make_maml(wm.loss, MAMLConfig(inner_lr=0.1))         # the MAML core; the adapters take wm.loss too
    mse = wm.loss(params, query_of_one_task)[0]                 # one-step prediction MSE (normalised units)
    err = wm.open_loop_error(params, query_of_one_task, stats)  # 10-step open-loop rollout error

Data comes from jitted rollouts (`ssm_jax.rollout`) of a behaviour policy, vmapped over tasks: random actions
(N(0, 1), which the env clips; uniform for discrete actions) or a given `(policy, params, obs_stats)`. A batch item
is a window of `window` consecutive steps of one trajectory: `inputs [W, D + A]` (the observation and the action,
one-hot when discrete), `targets [W, D + 1]` (the observation change and the reward), both standardised with
`WorldModelStats` fitted on meta-training data only, and `mask [W]`, False after the first episode end in the
window (the auto-reset's next episode is not what the model was asked to predict). The model starts each window
from its initial carry. The support and the query of a task are windows of disjoint trajectories (the first
`support_trajectories` of each task and the rest), never two halves of one episode.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from ssm_jax.buffer import cut_windows
from ssm_jax.config.io import register_config
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize, update_stats
from ssm_jax.models import ModelConfig, NetworkConfig, SequenceModel, make_model
from ssm_jax.models.heads import GaussianParams
from ssm_jax.rollout import rollout
from ssm_jax.types import Array, Params, PRNGKey


@register_config
@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Static data and model settings (changing one recompiles)."""

    horizon: int = 100
    """Steps per collected trajectory."""
    window: int = 20
    """W, steps per batch item (the model restarts from its initial carry at each window)."""
    support_trajectories: int = 4
    """Trajectories per task whose windows form the support; the remaining ones form the query."""
    open_loop_steps: int = 10
    """Steps of the open-loop rollout error (the model feeds on its own predicted observations)."""

    def __post_init__(self):
        if min(self.horizon, self.window, self.support_trajectories, self.open_loop_steps) < 1:
            raise ValueError(f"WorldModelConfig sizes must be >= 1: {self}")
        if self.window > self.horizon or self.open_loop_steps > self.window:
            raise ValueError(
                f"WorldModelConfig needs open_loop_steps ({self.open_loop_steps}) <= window ({self.window}) <= "
                f"horizon ({self.horizon})"
            )


class Transitions(NamedTuple):
    """Time-major transitions, leaves `[..., T, N, ...]` (as rollouts): `obs [D]`, `action [A]` (one-hot when discrete),
    `next_obs [D]` (before any reset), `reward []`, `done []`."""

    obs: Array
    action: Array
    next_obs: Array
    reward: Array
    done: Array


@struct.dataclass
class WorldModelStats:
    """Per-dimension statistics of the model's inputs `(obs, action)` and targets `(Δobs, reward)`."""

    inputs: RunningMeanStd
    targets: RunningMeanStd


class _RandomBehaviour(NamedTuple):
    """A `rollout`-compatible policy without params: N(0, 1) actions (the env clips them), or uniform logits."""

    action_size: int
    discrete: bool

    def initial_carry(self, batch_shape: tuple[int, ...] = ()) -> Array:
        return jnp.zeros(batch_shape)

    def step(self, params: Params, carry: Array, obs: Array, reset: Array) -> tuple[Array, dict]:
        del params, obs, reset
        zeros = jnp.zeros(self.action_size)
        return carry, {"pi": zeros if self.discrete else GaussianParams(zeros, zeros)}


class WorldModel(NamedTuple):
    """A world model's pure functions for one (env, model, config); see the module docstring."""

    env: TaskEnv
    model: SequenceModel
    config: WorldModelConfig
    init: Callable[[PRNGKey], Params]
    collect: Callable[..., Transitions]
    fit_stats: Callable[[Transitions], WorldModelStats]
    windows: Callable[[Transitions, WorldModelStats], dict]
    support_query: Callable[[Transitions, WorldModelStats], tuple[dict, dict]]
    loss: Callable[[Params, dict], tuple[Array, dict]]
    open_loop_error: Callable[[Params, dict, WorldModelStats], Array]


def _features(transitions: Transitions) -> tuple[Array, Array]:
    inputs = jnp.concatenate([transitions.obs, transitions.action], axis=-1)
    targets = jnp.concatenate([transitions.next_obs - transitions.obs, transitions.reward[..., None]], axis=-1)
    return inputs, targets


def make_world_model(
    env: TaskEnv, model_name: str, network: NetworkConfig, config: WorldModelConfig = WorldModelConfig()
) -> WorldModel:
    """Builds the world model `model_name` (any of `MODEL_NAMES`) for `env`'s transitions."""
    obs_size, action_size = env.observation_size, env.action_size
    model = make_model(
        model_name,
        ModelConfig(
            obs_size + action_size,
            obs_size + 1,
            state_dim=network.state_dim,
            hidden_dim=network.hidden_dim,
            num_layers=network.num_layers,
            attention_span=config.window,
        ),
    )
    behaviour = _RandomBehaviour(action_size, env.discrete)

    def init(key: PRNGKey) -> Params:
        return model.init(key, jnp.zeros((config.window, obs_size + action_size)))

    def collect(key: PRNGKey, tasks: Any, num_trajectories: int, policy=None, params=None, obs_stats=None):
        """`num_trajectories` trajectories of `config.horizon` steps per task (`tasks` with a leading axis E) by
        `policy` (None: random actions). Returns `Transitions` with leaves `[E, T, num_trajectories, ...]`."""
        policy = behaviour if policy is None else policy

        def one_task(task_key, task):
            traj = rollout(task_key, env, task, policy, params, num_trajectories, config.horizon, obs_stats)
            action = jax.nn.one_hot(traj.action, action_size) if env.discrete else traj.action
            return Transitions(traj.obs, action, traj.next_obs, traj.reward, traj.done)

        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        return jax.vmap(one_task)(jax.random.split(key, num_tasks), tasks)

    def fit_stats(transitions: Transitions) -> WorldModelStats:
        """Statistics of every transition in `transitions` (pass meta-training data only)."""
        inputs, targets = _features(transitions)
        fit = lambda x: update_stats(RunningMeanStd.create(x.shape[-1]), x)
        return WorldModelStats(fit(inputs), fit(targets))

    def windows(transitions: Transitions, stats: WorldModelStats) -> dict:
        """Non-overlapping standardised windows of every trajectory: `{"inputs", "targets", "mask"}` with leaves
        `[..., N * (T // W), W, ...]` for transitions `[..., T, N, ...]` (trajectory by trajectory)."""
        lead = transitions.done.ndim - 2  # axes before T
        transitions = jax.tree.map(lambda x: jnp.swapaxes(x, lead, lead + 1), transitions)  # [..., N, T, ...]
        inputs, targets = _features(transitions)
        items = {
            "inputs": normalize(stats.inputs, inputs),
            "targets": normalize(stats.targets, targets),
            "done": transitions.done,
        }
        per_trajectory = lambda item: cut_windows(item, item["done"], config.window, stride=config.window)[0]
        for _ in range(transitions.done.ndim - 1):
            per_trajectory = jax.vmap(per_trajectory)
        cut_items = per_trajectory(items)  # [..., N, M, W, ...]
        done = cut_items.pop("done")
        ended_before = jnp.cumsum(done, axis=-1) - done  # episode ends strictly before each step of the window
        cut_items["mask"] = ended_before == 0
        return jax.tree.map(lambda x: x.reshape(*x.shape[:lead], -1, *x.shape[lead + 2 :]), cut_items)

    def support_query(transitions: Transitions, stats: WorldModelStats) -> tuple[dict, dict]:
        """Windows of the first `support_trajectories` trajectories of each task and of the rest (disjoint)."""
        split = config.support_trajectories
        if transitions.done.shape[-1] <= split:
            raise ValueError(
                f"support_query needs more than support_trajectories={split} trajectories per task, "
                f"got {transitions.done.shape[-1]}"
            )
        support = jax.tree.map(lambda x: _trajectories(x, transitions.done.ndim, slice(None, split)), transitions)
        query = jax.tree.map(lambda x: _trajectories(x, transitions.done.ndim, slice(split, None)), transitions)
        return windows(support, stats), windows(query, stats)

    def predict(params: Params, inputs: Array) -> Array:
        """`[B, W, D + A]` standardised inputs -> `[B, W, D + 1]` standardised predictions."""
        carry = model.initial_carry()
        return jax.vmap(lambda xs: model.apply(params, carry, xs)[1])(inputs)

    def loss(params: Params, batch: dict) -> tuple[Array, dict]:
        """Masked one-step MSE over the items `[B, W]` of `batch` (standardised units, mean over dimensions)."""
        predictions = predict(params, batch["inputs"])
        error = jnp.mean((predictions - batch["targets"]) ** 2, axis=-1)
        mask = batch["mask"].astype(error.dtype)
        return jnp.sum(error * mask) / jnp.maximum(jnp.sum(mask), 1.0), {"predictions": predictions}

    def open_loop_error(params: Params, batch: dict, stats: WorldModelStats) -> Array:
        """Mean squared error of the standardised observation over the first `open_loop_steps` steps of each
        item, the model fed its own predicted observations after the first (masked after an episode end)."""
        in_std = jnp.sqrt(stats.inputs.var[:obs_size] + 1e-8)
        delta_mean, delta_std = stats.targets.mean[:obs_size], jnp.sqrt(stats.targets.var[:obs_size] + 1e-8)
        steps = config.open_loop_steps

        def one_item(inputs, targets, mask):
            true_obs = inputs[:steps, :obs_size]
            true_next = true_obs + (targets[:steps, :obs_size] * delta_std + delta_mean) / in_std

            def body(carry, t):
                model_carry, obs = carry
                model_carry, prediction = model.step(params, model_carry, jnp.concatenate([obs, inputs[t, obs_size:]]))
                next_obs = obs + (prediction[:obs_size] * delta_std + delta_mean) / in_std
                return (model_carry, next_obs), next_obs

            _, predicted = jax.lax.scan(body, (model.initial_carry(), true_obs[0]), jnp.arange(steps))
            error = jnp.mean((predicted - true_next) ** 2, axis=-1)
            return jnp.sum(error * mask[:steps]), jnp.sum(mask[:steps])

        total, count = jax.vmap(one_item)(batch["inputs"], batch["targets"], batch["mask"])
        return jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)

    return WorldModel(env, model, config, init, collect, fit_stats, windows, support_query, loss, open_loop_error)


def _trajectories(x: Array, done_ndim: int, part: slice) -> Array:
    """`x[..., part, ...]` along the trajectory axis N (the axis after time, `done_ndim - 1`)."""
    index = (slice(None),) * (done_ndim - 1) + (part,)
    return x[index]
