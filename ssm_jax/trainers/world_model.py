"""The world-model program, with the meta-RL trainer's protocol: `init / train / evaluate / oracle`.

    trainer = make_world_model_trainer(env, "ssm", NetworkConfig(), WorldModelTrainerConfig())
    state = trainer.init(key, hparams)                        # the meta-training pool inside; adapt=False: pretrained
    state, metrics = trainer.train(state, key, 100)           # 100 meta-iterations in one lax.scan (jit it)
    mse, extras = trainer.evaluate(state, key, tasks, "hybrid")  # [E, adapt_rounds + 1]; extras["open_loop"] alike
    mse, extras = trainer.oracle(state, key, tasks, 200)      # a model per task, 200 Adam steps on its support: [E]

`init` samples `train_tasks` tasks, collects `trajectories_per_task` random-action trajectories of each, fits the
standardisation on them (meta-training data only) and fills the ExperienceBuffer with their windows (input window
→ target window): all of it lives in the state (`WorldModelData`), nothing else ever writes the buffer, and
evaluation reads it frozen. The same key gives MAML and the pretrained baseline the same pool and initial model.
Each meta-iteration draws `tasks_per_batch` pool tasks and takes MAML's outer step on their (support, query)
windows, disjoint trajectories. The pretrained baseline is the same program with inner lr 0 (its outer step then
fits the query windows of every task with one model). `evaluate` and `oracle` collect the held-out tasks'
trajectories from their key (the same key: the same data, so their results pair), standardised with the pool's
statistics; evaluation adapts with the library's adapters (`standard`, or `hybrid` with the state's
`experience_weight`): plain SGD steps at the inner lr, the step MAML was meta-trained with, each scored by the
query's one-step MSE and its open-loop error. `HParams` are traced, as in `ssm_jax.trainers.meta_rl`, so
`sweep.make_programs` vmaps this trainer as it does the meta-RL one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ssm_jax import buffer as buffer_lib
from ssm_jax.adapt.adapter import REPLAY_CHOICES, AdapterConfig, make_adapter, replayed_sources
from ssm_jax.buffer import BufferState, freeze, make_experience_buffer
from ssm_jax.config.io import register_config
from ssm_jax.envs.base import TaskEnv
from ssm_jax.meta.maml import MAMLConfig, MetaState, make_maml, with_outer_lr
from ssm_jax.meta.world_model import WorldModel, WorldModelConfig, WorldModelStats, make_world_model
from ssm_jax.models import NetworkConfig
from ssm_jax.trainers.protocol import HParams, Trainer
from ssm_jax.types import Array, PRNGKey


@register_config
@dataclasses.dataclass(frozen=True)
class WorldModelTrainerConfig:
    """Static sizes (changing one recompiles)."""

    ADDED_FIELDS: ClassVar[dict] = {"replay": "meta", "step_size_grid": {"__tuple__": []}}
    """What a config stored before these fields existed ran with (`config_io` fills them in when reading one)."""

    model: WorldModelConfig = dataclasses.field(default_factory=WorldModelConfig)
    train_tasks: int = 64
    """Meta-training tasks in the pool."""
    trajectories_per_task: int = 8
    """Per task; the first `model.support_trajectories` are its support, the rest its query."""
    tasks_per_batch: int = 16
    inner_steps: int = 1
    inner_grad_clip: float | None = None
    """Clip each inner (and test-time) gradient to this global norm; None: no clip. `metrics` log how often."""
    adapt_rounds: int = 3
    """Adaptation rounds evaluated (0..adapt_rounds), one SGD step on the support each."""
    eval_tasks: int = 16
    buffer_size: int = 4096
    experience_batch_size: int = 32
    oracle_iterations: int = 200
    """Adam steps of the oracle (a fresh model fitted to each held-out task's support; `Trainer.oracle`)."""
    oracle_lr: float = 3e-3
    step_size_grid: tuple[float, ...] = ()
    """Multiples of the inner rate each method tries on validation tasks before the held-out ones, scored there at
    its best (lowest mean query MSE over rounds 1..K; `sweep.at_best_step_size`). Empty: the inner rate."""
    replay: Literal[REPLAY_CHOICES] = "meta"
    """What hybrid adaptation replays, at the experience weight, with the same MSE: the meta-training pool's windows
    (`meta`), the held-out task's own support windows (`task`), or `both`."""

    def __post_init__(self):
        replayed_sources(self.replay)
        if not all(0 < scale < float("inf") for scale in self.step_size_grid):
            raise ValueError(f"step_size_grid must hold positive finite multiples, got {self.step_size_grid}")
        sizes = ("train_tasks", "tasks_per_batch", "inner_steps", "adapt_rounds", "eval_tasks", "oracle_iterations")
        for name in (*sizes, "buffer_size", "experience_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldModelTrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.tasks_per_batch > self.train_tasks:
            raise ValueError(f"tasks_per_batch={self.tasks_per_batch} exceeds train_tasks={self.train_tasks}")
        if self.trajectories_per_task <= self.model.support_trajectories:
            raise ValueError(
                f"trajectories_per_task={self.trajectories_per_task} must exceed the support's "
                f"{self.model.support_trajectories} (the query needs trajectories of its own)"
            )


@struct.dataclass
class WorldModelData:
    """Meta-training windows `(support, query)` with leaves `[train_tasks, M, W, ...]`, their statistics and the
    frozen buffer of their windows."""

    support: dict
    query: dict
    stats: WorldModelStats
    buffer: BufferState


@struct.dataclass
class WorldModelState:
    meta: MetaState
    hparams: HParams
    data: WorldModelData
    iteration: Array


class WorldModelParts(NamedTuple):
    """The world-model `Trainer`'s own parts: the model's functions, and `held_out(key, tasks, stats)`, the support
    and query windows `evaluate` and `oracle` collect for `tasks`."""

    world_model: WorldModel
    held_out: Callable[..., tuple[dict, dict]]


def make_world_model_trainer(
    env: TaskEnv, model_name: str, network: NetworkConfig, config: WorldModelTrainerConfig = WorldModelTrainerConfig()
) -> Trainer:
    """Builds the world-model `Trainer` for `env`'s tasks; see the module docstring."""
    wm = make_world_model(env, model_name, network, config.model)
    maml_config = MAMLConfig(
        inner_lr=1.0, num_inner_steps=config.inner_steps, inner_grad_clip=config.inner_grad_clip, loss_diagnostics=True
    )  # rate: HParams
    maml = make_maml(wm.loss, maml_config)
    buf = make_experience_buffer(config.buffer_size)
    # Adam on the meta-gradient clipped to norm 1: an inner step that overshoots early in training otherwise leaves a
    # huge gradient in Adam's second moment, which then stalls the outer loop for about 1 / (1 - b2) iterations; an
    # inner step that overflows (a non-finite meta-gradient) skips the outer update instead of poisoning the params
    clipped_adam = lambda learning_rate: optax.apply_if_finite(
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate)), jnp.iinfo(jnp.int32).max
    )
    optimizer = optax.inject_hyperparams(clipped_adam)(learning_rate=0.0)  # the rate comes from HParams

    # one SGD step at the traced inner lr, hybrid at a traced weight (weight 0 is the standard step, bit for bit)
    step = make_adapter(
        "hybrid",
        wm.loss,
        AdapterConfig(
            learning_rate=1.0,
            num_steps=1,
            optimizer="sgd",
            grad_clip_norm=config.inner_grad_clip,
            experience_batch_size=config.experience_batch_size,
        ),
    )

    def prepare(key: PRNGKey) -> WorldModelData:
        task_key, data_key, buffer_key = jax.random.split(key, 3)
        transitions = wm.collect(data_key, env.sample_tasks(task_key, config.train_tasks), config.trajectories_per_task)
        stats = wm.fit_stats(transitions)
        support, query = wm.support_query(transitions, stats)
        items = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), wm.windows(transitions, stats))
        count = jax.tree.leaves(items)[0].shape[0]
        kept = jax.random.permutation(buffer_key, count)[: config.buffer_size]  # a random subset when it overflows
        buffer = buf.add(buf.init(jax.tree.map(lambda x: x[0], items)), jax.tree.map(lambda x: x[kept], items))
        return WorldModelData(support, query, stats, freeze(buffer))

    def held_out(key: PRNGKey, tasks, stats: WorldModelStats) -> tuple[dict, dict]:
        """Support and query windows `[E, M, W, ...]` of `tasks`, standardised with the pool's `stats`."""
        return wm.support_query(wm.collect(key, tasks, config.trajectories_per_task), stats)

    def init(key: PRNGKey, hparams: HParams, adapt: bool = True) -> WorldModelState:
        data_key, params_key = jax.random.split(key)
        meta = maml.init(wm.init(params_key), optimizer)
        inner_lr = hparams.inner_lr if adapt else jnp.zeros_like(hparams.inner_lr)
        return WorldModelState(meta.replace(inner_lr=inner_lr), hparams, prepare(data_key), jnp.zeros((), jnp.int32))

    def train(state: WorldModelState, key: PRNGKey, num_iterations: int):
        """`num_iterations` meta-iterations; metrics `{name: [num_iterations]}` (MAML's losses)."""
        data = state.data

        def iteration(meta: MetaState, step_key: PRNGKey):
            index = jax.random.choice(step_key, config.train_tasks, (config.tasks_per_batch,), replace=False)
            tasks = jax.tree.map(lambda x: x[index], (data.support, data.query))
            return maml.update(with_outer_lr(meta, state.hparams.outer_lr), tasks)

        meta, metrics = jax.lax.scan(iteration, state.meta, jax.random.split(key, num_iterations))
        return state.replace(meta=meta, iteration=state.iteration + num_iterations), metrics

    def evaluate(state: WorldModelState, key: PRNGKey, tasks, mode: str = "standard") -> tuple[Array, dict]:
        """Query one-step MSE after 0..adapt_rounds steps on each of `tasks`' support (leading axis E): `(mse
        [E, adapt_rounds + 1], {"open_loop": [E, adapt_rounds + 1]})`. `mode` (static): `standard`, or `hybrid` with
        the state's `hparams.experience_weight` on the sources `config.replay` names: the frozen meta-training buffer
        and/or a task buffer holding the task's own support windows (empty for every other task)."""
        data_key, adapt_key = jax.random.split(key)
        weight, data = state.hparams.adapter_weight(mode), state.data
        sources = replayed_sources(config.replay)
        meta_buffer = data.buffer if "meta" in sources else None

        def one_task(support, query, task_key):
            astate = step.init(state.meta.params)
            astate = astate.replaying(weight, sources).replace(learning_rate=state.hparams.inner_lr)
            score = lambda p: (wm.loss(p, query)[0], wm.open_loop_error(p, query, data.stats))
            task_buffer = None
            if "task" in sources:
                count = jax.tree.leaves(support)[0].shape[0]
                empty = buffer_lib.init(count, jax.tree.map(lambda x: x[0], support))
                task_buffer = buffer_lib.add(empty, support)

            def body(carry, step_key):
                astate, params = carry
                astate, params, _ = step.update(astate, params, support, meta_buffer, step_key, task_buffer=task_buffer)
                return (astate, params), score(params)

            keys = jax.random.split(task_key, config.adapt_rounds)
            _, (mse, open_loop) = jax.lax.scan(body, (astate, state.meta.params), keys)
            mse0, open_loop0 = score(state.meta.params)
            return jnp.append(mse0, mse), jnp.append(open_loop0, open_loop)

        support, query = held_out(data_key, tasks, data.stats)
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        mse, open_loop = jax.vmap(one_task)(support, query, jax.random.split(adapt_key, num_tasks))
        return mse, {"open_loop": open_loop}

    def oracle(state: WorldModelState, key: PRNGKey, tasks, iterations: int) -> tuple[Array, dict]:
        """A fresh model per task of `tasks`, `iterations` (static) Adam steps on its support alone, on the data
        `evaluate` collects with the same key: `(mse [E], {"open_loop": [E]})` on the query."""
        data_key, fit_key = jax.random.split(key)
        fit_config = AdapterConfig(config.oracle_lr, iterations, grad_clip_norm=None)
        fit = make_adapter("standard", wm.loss, fit_config)

        def one_task(support, query, task_key):
            init_key, step_key = jax.random.split(task_key)
            params = wm.init(init_key)
            _, params, _ = fit.update(fit.init(params), params, support, None, step_key)
            return wm.loss(params, query)[0], wm.open_loop_error(params, query, state.data.stats)

        support, query = held_out(data_key, tasks, state.data.stats)
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        mse, open_loop = jax.vmap(one_task)(support, query, jax.random.split(fit_key, num_tasks))
        return mse, {"open_loop": open_loop}

    return Trainer(config, init, train, evaluate, oracle, None, WorldModelParts(wm, held_out))
