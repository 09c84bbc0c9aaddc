"""Few-shot regression (the sinusoid of Finn et al. 2017) with the trainer protocol of `ssm_jax.trainers`.

    trainer = make_regression_trainer(SinusoidDistribution(), RegressionTrainerConfig(shots=10))
    state = trainer.init(key, HParams.create(inner_lr=0.01, outer_lr=1e-3))  # adapt=False: the pretrained baseline
    state, metrics = trainer.train(state, key, 1000)      # 1000 meta-iterations in one lax.scan (jit it)
    mse, extras = trainer.evaluate(state, key, tasks)     # [E, adapt_rounds + 1]: query MSE after 0..K SGD steps
    mse, extras = trainer.oracle(state, key, tasks, 500)  # a net per task, 500 Adam steps on its support: [E]

The network is the paper's MLP (2 hidden layers, ReLU). Each meta-iteration draws `tasks_per_batch` tasks with `shots`
support and `shots` query points each and takes MAML's outer step (first order under `first_order`; Meta-SGD's
learned per-parameter inner rates under `learn_inner_lr`). The pretrained baseline trains the same net by the same
outer optimizer on all of those points, with no inner step. `evaluate` draws `shots` support and `eval_points`
query points per task from its key and adapts by SGD at the state's inner rate (Meta-SGD's learned one). The
rates are traced `HParams`, so `sweep.make_programs` vmaps seeds and values as for the other trainers. There is no
experience buffer: `evaluate` takes mode `standard` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ssm_jax.config.io import register_config
from ssm_jax.envs.sinusoid import SinusoidDistribution
from ssm_jax.meta.maml import MAMLConfig, MetaState, make_maml, with_outer_lr
from ssm_jax.models import ModelConfig, make_model
from ssm_jax.trainers.protocol import HParams, Trainer
from ssm_jax.types import Array, PRNGKey


@register_config
@dataclasses.dataclass(frozen=True)
class RegressionTrainerConfig:
    """Static settings (changing one recompiles)."""

    shots: int = 10
    """Support (and, in meta-training, query) points per task."""
    tasks_per_batch: int = 25
    inner_steps: int = 1
    first_order: bool = False
    learn_inner_lr: bool = False
    """Meta-SGD: learn a per-parameter inner rate (starting at `HParams.inner_lr`)."""
    hidden_dim: int = 40
    eval_points: int = 100
    """Query points per held-out task."""
    adapt_rounds: int = 10
    """Adaptation rounds evaluated (0..adapt_rounds), one SGD step on the support each."""

    def __post_init__(self):
        for name in ("shots", "tasks_per_batch", "inner_steps", "hidden_dim", "eval_points", "adapt_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"RegressionTrainerConfig.{name} must be >= 1, got {getattr(self, name)}")


@struct.dataclass
class RegressionState:
    meta: MetaState
    hparams: HParams
    iteration: Array
    meta_learning: bool = struct.field(pytree_node=False, default=True)
    """True: MAML (or FOMAML, Meta-SGD); False: the pretrained baseline. Static: two programs."""


class RegressionParts(NamedTuple):
    """The regression `Trainer`'s own parts: the task distribution, `apply(params, x [points, 1])` and
    `adapt(params, support, inner_lr)` (the `adapt_rounds` SGD steps evaluation takes), for plots of the adapted fit."""

    distribution: SinusoidDistribution
    apply: Callable[..., Array]
    adapt: Callable[..., dict]


def make_regression_trainer(
    distribution: SinusoidDistribution, config: RegressionTrainerConfig = RegressionTrainerConfig()
) -> Trainer:
    """Builds the regression `Trainer` on `distribution`'s tasks; see the module docstring."""
    model = make_model("mlp", ModelConfig(input_dim=1, output_dim=1, hidden_dim=config.hidden_dim, num_layers=2))
    apply = lambda params, x: model.apply(params, (), x)[1]  # x [points, 1] -> predictions [points, 1]

    def mse(params, batch):
        x, y = batch
        return jnp.mean((apply(params, x) - y) ** 2), {}

    maml_config = MAMLConfig(
        num_inner_steps=config.inner_steps,
        first_order=config.first_order,
        learn_inner_lr=config.learn_inner_lr,
        loss_diagnostics=True,
    )  # the inner rate comes from HParams
    maml = make_maml(mse, maml_config)
    # `adapt(params, support, inner_lr)`: the `adapt_rounds` SGD steps evaluation takes, for plots of the adapted fit
    adapt = make_maml(mse, dataclasses.replace(maml_config, num_inner_steps=config.adapt_rounds)).adapt
    optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)  # the rate comes from HParams

    def points(key: PRNGKey, tasks, num_points: int):
        """`num_points` points of each task: leaves `[E, num_points, 1]`."""
        num_tasks = jax.tree.leaves(tasks)[0].shape[0]
        sample = jax.vmap(distribution.sample_points, in_axes=(0, 0, None))
        return sample(jax.random.split(key, num_tasks), tasks, num_points)

    def init(key: PRNGKey, hparams: HParams, adapt: bool = True) -> RegressionState:
        meta = maml.init(model.init(key, jnp.zeros((1, 1))), optimizer)
        inner_lr = jax.tree.map(lambda x: jnp.full_like(x, hparams.inner_lr), meta.inner_lr)
        meta = with_outer_lr(meta.replace(inner_lr=inner_lr), hparams.outer_lr)
        return RegressionState(meta, hparams, jnp.zeros((), jnp.int32), adapt)

    def pretrain_update(meta: MetaState, tasks) -> tuple[MetaState, dict]:
        all_points = jax.tree.map(lambda s, q: jnp.concatenate([s, q], axis=1).reshape(-1, 1), *tasks)
        loss, grads = jax.value_and_grad(lambda p: mse(p, all_points)[0])(meta.params)
        updates, opt_state = meta.optimizer.update(grads, meta.opt_state, meta.params)
        meta = meta.replace(params=optax.apply_updates(meta.params, updates), opt_state=opt_state, step=meta.step + 1)
        return meta, {"meta_loss": loss, "post_query_loss": loss}

    def train(state: RegressionState, key: PRNGKey, num_iterations: int) -> tuple[RegressionState, dict]:
        """`num_iterations` (static) meta-iterations in one `lax.scan`; metrics `{name: [num_iterations]}`."""
        update = maml.update if state.meta_learning else pretrain_update

        def iteration(meta: MetaState, k: PRNGKey):
            task_key, support_key, query_key = jax.random.split(k, 3)
            tasks = distribution.sample_tasks(task_key, config.tasks_per_batch)
            batch = (points(support_key, tasks, config.shots), points(query_key, tasks, config.shots))
            meta, metrics = update(with_outer_lr(meta, state.hparams.outer_lr), batch)
            return meta, {"meta_loss": metrics["meta_loss"], "post_query_loss": metrics["post_query_loss"]}

        meta, metrics = jax.lax.scan(iteration, state.meta, jax.random.split(key, num_iterations))
        return state.replace(meta=meta, iteration=state.iteration + num_iterations), metrics

    def held_out(key: PRNGKey, tasks):
        support_key, query_key = jax.random.split(key)
        return points(support_key, tasks, config.shots), points(query_key, tasks, config.eval_points)

    def evaluate(state: RegressionState, key: PRNGKey, tasks, mode: str = "standard") -> tuple[Array, dict]:
        """Query MSE after 0..adapt_rounds SGD steps on each task's support (leading axis E): `([E, adapt_rounds + 1],
        {})`."""
        if mode != "standard":
            raise ValueError(f"regression has no experience buffer: mode must be 'standard', got {mode!r}")
        support, query = held_out(key, tasks)
        curve = jax.vmap(maml.adaptation_curve, in_axes=(None, 0, None, None))
        return curve(state.meta.params, (support, query), config.adapt_rounds, state.meta.inner_lr), {}

    def oracle(state: RegressionState, key: PRNGKey, tasks, iterations: int) -> tuple[Array, dict]:
        """A fresh net per task, `iterations` (static) Adam steps at the outer rate on its support, scored on the
        query `evaluate` draws with the same key: `(mse [E], {})`."""
        support, query = held_out(key, tasks)
        adam = optax.adam(state.hparams.outer_lr)
        init_keys = jax.random.split(jax.random.fold_in(key, 1), jax.tree.leaves(tasks)[0].shape[0])

        def one_task(init_key, support, query):
            params = model.init(init_key, jnp.zeros((1, 1)))

            def step(carry, _):
                params, opt_state = carry
                grads = jax.grad(lambda p: mse(p, support)[0])(params)
                updates, opt_state = adam.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            (params, _), _ = jax.lax.scan(step, (params, adam.init(params)), None, length=iterations)
            return mse(params, query)[0]

        return jax.vmap(one_task)(init_keys, support, query), {}

    return Trainer(config, init, train, evaluate, oracle, None, RegressionParts(distribution, apply, adapt))
