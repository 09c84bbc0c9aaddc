"""MAML as `jax.grad` through a `lax.scan` inner loop, vmapped over tasks (second order, FOMAML, Meta-SGD).

    maml = make_maml(loss_fn, MAMLConfig(inner_lr=0.01, num_inner_steps=1))
    fast = maml.adapt(params, support)                      # K SGD steps, a lax.scan
    fast, grad_norms = maml.adapt_with_grad_norms(params, support)   # and each step's pre-clip gradient norm [K]
    fast, grad_norm = maml.inner_step(params, batch)       # one step (a rollout loop interleaves it with sampling)
    curve = maml.adaptation_curve(params, (support, query), 10)   # query loss after 0..10 steps
    loss, metrics = maml.meta_loss(params, (support, query))
    state = maml.init(params, optax.adam(1e-3))
    state, metrics = maml.step(state, tasks)                # tasks = (supports, queries), leading task axis
    state, metrics = maml.update(state, tasks)              # the same, un-jitted, to scan inside your own jit

`loss_fn(params, batch) -> (loss, aux)` takes a batch whose leaves have a leading item axis; support and query
are such batches and a batch of tasks stacks one more leading axis. The same loss serves the adapters.
`inner_lr` is a traced scalar or a per-parameter pytree (Meta-SGD); `None` means the config's value (or the
learned one in `MetaState.inner_lr`), so sweeps can vmap over it. With `support_per_step` the support has a
leading axis of `num_inner_steps` and step k descends on `support[k]` (meta-RL samples fresh trajectories with
the params of each step, as MAML-RL does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ssm_jax.config.io import register_config
from ssm_jax.types import Array, Params, PyTree, per_parameter

LossFn = Callable[[Params, PyTree], tuple[Array, Any]]


@register_config
@dataclasses.dataclass(frozen=True)
class MAMLConfig:
    """Static MAML settings. `learn_inner_lr` turns on Meta-SGD (a learned per-parameter inner lr);
    `inner_grad_clip` clips each inner gradient to that global norm (differentiably), for recurrent policies whose
    state can blow up after a large step; `support_per_step`: the support has a leading `[num_inner_steps]` axis,
    one batch per inner step; `loss_diagnostics`: `meta_loss`'s metrics add the support loss before and after
    the inner steps and the query loss before them (three more forward passes per task)."""

    inner_lr: float = 0.01
    num_inner_steps: int = 1
    first_order: bool = False
    learn_inner_lr: bool = False
    inner_grad_clip: float | None = None
    support_per_step: bool = False
    loss_diagnostics: bool = False

    def __post_init__(self):
        if self.inner_grad_clip is not None and not self.inner_grad_clip > 0:
            raise ValueError(f"MAMLConfig.inner_grad_clip must be > 0 or None, got {self.inner_grad_clip!r}")
        if not isinstance(self.num_inner_steps, int) or self.num_inner_steps < 1:
            raise ValueError(f"MAMLConfig.num_inner_steps must be an int >= 1, got {self.num_inner_steps!r}")
        if not self.inner_lr > 0:
            raise ValueError(f"MAMLConfig.inner_lr must be > 0, got {self.inner_lr!r}")


@struct.dataclass
class MetaState:
    """Outer-loop state. `inner_lr` is a scalar, or a params-shaped pytree under Meta-SGD."""

    params: Params
    inner_lr: PyTree
    opt_state: optax.OptState
    step: Array
    optimizer: optax.GradientTransformation = struct.field(pytree_node=False)


def with_outer_lr(meta: MetaState, outer_lr: Array) -> MetaState:
    """`meta` whose optimizer (built with `optax.inject_hyperparams`) applies the learning rate `outer_lr`."""
    opt_state = meta.opt_state
    return meta.replace(opt_state=opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": outer_lr}))


class MAML(NamedTuple):
    loss_fn: LossFn
    config: MAMLConfig
    adapt: Callable
    adapt_with_grad_norms: Callable
    inner_step: Callable
    adaptation_curve: Callable
    meta_loss: Callable
    outer_loss: Callable
    init: Callable
    update: Callable
    step: Callable


def check_tasks(tasks: PyTree) -> int:
    """Raises a one-line ValueError unless every leaf of `tasks` has the same leading (task) size; returns it."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(tasks)}
    if not sizes or None in sizes or len(sizes) != 1:
        raise ValueError(
            f"every leaf of tasks needs the same leading task axis, got leading sizes {sorted(sizes, key=str)}"
        )
    return sizes.pop()


def check_support_steps(support: PyTree, num_inner_steps: int) -> None:
    """Raises a one-line ValueError unless every leaf of a per-step support has leading size `num_inner_steps`."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(support)}
    if sizes != {num_inner_steps}:
        raise ValueError(
            f"support_per_step needs a leading axis of num_inner_steps={num_inner_steps} on every support leaf, "
            f"got leading sizes {sorted(sizes, key=str)}"
        )


def make_maml(loss_fn: LossFn, config: MAMLConfig | None = None, outer_loss_fn: LossFn | None = None) -> MAML:
    """Builds the pure MAML functions for `loss_fn`; see the module docstring.

    `outer_loss_fn` (default `loss_fn`) scores the adapted params on the query, e.g. a PPO surrogate in meta-RL
    while the inner loop takes policy-gradient steps.
    """
    config = MAMLConfig() if config is None else config
    outer_loss_fn = loss_fn if outer_loss_fn is None else outer_loss_fn

    def _lr_tree(params: Params, inner_lr: PyTree | None) -> PyTree:
        return per_parameter(config.inner_lr if inner_lr is None else inner_lr, params)

    def _inner_step(fast: Params, support: PyTree, lrs: PyTree) -> tuple[Params, Array]:
        grads = jax.grad(lambda p: loss_fn(p, support)[0])(fast)
        grad_norm = jax.lax.stop_gradient(optax.tree.norm(grads))
        if config.inner_grad_clip is not None:
            grads, _ = optax.clip_by_global_norm(config.inner_grad_clip).update(grads, optax.EmptyState())
        if config.first_order:
            grads = jax.lax.stop_gradient(grads)
        return jax.tree.map(lambda p, g, lr: p - lr * g, fast, grads, lrs), grad_norm

    def adapt_with_grad_norms(params: Params, support: PyTree, inner_lr: PyTree | None = None) -> tuple[Params, Array]:
        """`num_inner_steps` SGD steps on `loss_fn(., support)`. Returns the fast params and each step's gradient
        norm before clipping, `[num_inner_steps]` (no gradient flows through the norms)."""
        lrs = _lr_tree(params, inner_lr)
        if config.support_per_step:
            check_support_steps(support, config.num_inner_steps)
            return jax.lax.scan(lambda fast, batch: _inner_step(fast, batch, lrs), params, support)
        if config.num_inner_steps == 1:  # differentiated twice, a one-step scan cost a fifth of the meta-update
            fast, grad_norm = _inner_step(params, support, lrs)  # (benchmarks.maml_overhead): call the step
            return fast, grad_norm[None]
        step = lambda fast, _: _inner_step(fast, support, lrs)
        return jax.lax.scan(step, params, None, length=config.num_inner_steps)

    def inner_step(params: Params, batch: PyTree, inner_lr: PyTree | None = None) -> tuple[Params, Array]:
        """One (clipped) SGD step on `loss_fn(., batch)`, differentiable. Returns `(params, pre-clip grad norm)`."""
        return _inner_step(params, batch, _lr_tree(params, inner_lr))

    def adapt(params: Params, support: PyTree, inner_lr: PyTree | None = None) -> Params:
        """`num_inner_steps` SGD steps on `loss_fn(., support)`; returns the fast params."""
        return adapt_with_grad_norms(params, support, inner_lr)[0]

    def adaptation_curve(
        params: Params, task: tuple[PyTree, PyTree], num_steps: int, inner_lr: PyTree | None = None
    ) -> Array:
        """Query loss after 0, 1, ..., `num_steps` inner SGD steps on the support: `[num_steps + 1]`."""
        support, query = task
        lrs = _lr_tree(params, inner_lr)

        if config.support_per_step:
            raise ValueError("adaptation_curve takes one support batch; it is undefined with support_per_step")

        def step(fast, _):
            return _inner_step(fast, support, lrs)[0], loss_fn(fast, query)[0]

        final, losses = jax.lax.scan(step, params, None, length=num_steps)
        return jnp.append(losses, loss_fn(final, query)[0])

    def meta_loss(params: Params, task: tuple[PyTree, PyTree], inner_lr: PyTree | None = None):
        """Query loss after adapting on the support. Returns `(loss, metrics)` for one task."""
        support, query = task
        fast, grad_norms = adapt_with_grad_norms(params, support, inner_lr)
        loss = outer_loss_fn(fast, query)[0]
        frozen = jax.lax.stop_gradient
        metrics = {
            "post_query_loss": frozen(loss),
            "inner_grad_norm": grad_norms[0],  # before any clip; under vmap over tasks, metrics average
            "inner_clip_fraction": jnp.mean(
                grad_norms > (jnp.inf if config.inner_grad_clip is None else config.inner_grad_clip)
            ),
        }
        if config.loss_diagnostics:
            last_support = jax.tree.map(lambda x: x[-1], support) if config.support_per_step else support
            metrics.update(
                pre_support_loss=frozen(loss_fn(params, last_support)[0]),
                post_support_loss=frozen(loss_fn(fast, last_support)[0]),
                pre_query_loss=frozen(outer_loss_fn(params, query)[0]),
            )
        return loss, metrics

    def outer_loss(params: Params, inner_lr: PyTree | None, tasks: tuple[PyTree, PyTree]):
        """Mean `meta_loss` over the leading task axis of `tasks`. Returns `(loss, mean metrics)`."""
        losses, metrics = jax.vmap(meta_loss, in_axes=(None, 0, None))(params, tasks, inner_lr)
        return jnp.mean(losses), jax.tree.map(jnp.mean, metrics)

    def init(params: Params, optimizer: optax.GradientTransformation | None = None) -> MetaState:
        optimizer = optax.adam(1e-3) if optimizer is None else optimizer
        inner_lr = jnp.asarray(config.inner_lr, jnp.float32)
        if config.learn_inner_lr:
            inner_lr = jax.tree.map(lambda p: jnp.full_like(p, config.inner_lr), params)
        trainable = (params, inner_lr) if config.learn_inner_lr else params
        return MetaState(params, inner_lr, optimizer.init(trainable), jnp.zeros((), jnp.int32), optimizer)

    def _step(state: MetaState, tasks: tuple[PyTree, PyTree]) -> tuple[MetaState, dict]:
        if config.learn_inner_lr:
            trainable = (state.params, state.inner_lr)
            objective = lambda t: outer_loss(t[0], t[1], tasks)
        else:
            trainable = state.params
            objective = lambda t: outer_loss(t, state.inner_lr, tasks)
        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        updates, opt_state = state.optimizer.update(grads, state.opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        params, inner_lr = trainable if config.learn_inner_lr else (trainable, state.inner_lr)
        metrics = {**metrics, "meta_loss": loss, "meta_grad_norm": optax.tree.norm(grads)}
        return state.replace(params=params, inner_lr=inner_lr, opt_state=opt_state, step=state.step + 1), metrics

    jitted_step = jax.jit(_step)

    def step(state: MetaState, tasks: tuple[PyTree, PyTree]) -> tuple[MetaState, dict]:
        """One jitted outer update on a batch of tasks (leading task axis). Returns `(state, metrics)`."""
        check_tasks(tasks)
        return jitted_step(state, tasks)

    return MAML(
        loss_fn,
        config,
        adapt,
        adapt_with_grad_norms,
        inner_step,
        adaptation_curve,
        meta_loss,
        outer_loss,
        init,
        _step,
        step,
    )
