"""Test-time adapters as pure update functions: `standard` and experience-augmented `hybrid`.

    adapter = make_adapter("hybrid", loss_fn, AdapterConfig(experience_weight=0.1))
    astate = adapter.init(params)
    astate, params, metrics = adapter.update(astate, params, batch, buffer_state, key, task_buffer=task_state)

`loss_fn(params, batch) -> (loss, aux)` takes a batch whose leaves have a leading item axis (the MAML core uses
the same convention, so one loss serves both). One `update` runs `num_steps` optimizer steps in a `lax.scan`:

- `standard`: the current-task loss only (the buffers may be None).
- `hybrid`: `loss_current + experience_weight * experience_loss_fn(params, replayed) + task_weight *
  task_loss_fn(params, task_replayed)`, with `experience_batch_size` items sampled at every step from each buffer
  given: `buffer_state`, the (read-only) meta-training buffer of other tasks' experience, and `task_buffer`, the
  current task's own earlier experience (filled by the caller as the agent acts on the task, emptied between
  tasks). A buffer that is None drops its term; while a buffer is empty its term's weight is 0. Both weights 0 give
  exactly `standard`.

Guards, in order: the strategy's loss transform (`none`, `tent`, or registered), then one optax chain —
`clip_by_global_norm`, the direction (`scale_by_adam` or plain SGD), `× −learning_rate` (traced, scalar or
per-parameter), the per-parameter step bound `‖Δp‖ ≤ max_step_scale·‖p‖` — wrapped in `optax.apply_if_finite`,
then the trust-region projection onto `‖p − anchor‖ ≤ trust_region_eps` and the EMA anchor update. A non-finite
gradient skips the step (params, optimizer state and anchor unchanged) and is counted. `learning_rate` and
`experience_weight` live in `AdaptState` as arrays, so sweeps can vmap over them. Everything is pure:
`jax.vmap(adapter.update)` over a task axis adapts many tasks at once.

`aux` may carry `"logits"` (categorical outputs `[..., K]`) or `"predictions"` (real outputs `[..., O]`); they
feed SSM-MetaRL's meta-features (predictive entropy and confidence from logits; prediction variance and feature
shift from either), tracked as exponential moving statistics in `AdaptState.features`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ssm_jax import buffer as buffer_lib
from ssm_jax.adapt.features import MetaFeatures, batch_features, track_features
from ssm_jax.adapt.guards import bound_relative_step, project_to_ball, scale_by_traced_learning_rate
from ssm_jax.adapt.strategies import get_strategy
from ssm_jax.config.io import register_config
from ssm_jax.types import Array, Params, PRNGKey, PyTree, tree_where

ADAPTATION_MODES = ("standard", "hybrid")
REPLAY_SOURCES = ("meta", "task")
"""The hybrid term's sources: the meta-training buffer (other tasks' experience) and the current task's buffer."""
REPLAY_CHOICES = ("meta", "task", "both")
"""What a hybrid evaluation replays (`EvalConfig.replay`): one source, or both, each at the experience weight."""


def replayed_sources(replay: str) -> tuple[str, ...]:
    """The `REPLAY_SOURCES` that the choice `replay` (one of `REPLAY_CHOICES`) replays."""
    if replay not in REPLAY_CHOICES:
        raise ValueError(f"unknown replay {replay!r}; expected one of {', '.join(REPLAY_CHOICES)}")
    return REPLAY_SOURCES if replay == "both" else (replay,)


OPTIMIZERS = ("adam", "sgd")
LossFn = Callable[[Params, PyTree], tuple[Array, Any]]


@register_config
@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    """Static adapter settings; `None` switches a guard off. Changing a field recompiles."""

    learning_rate: float = 0.01
    num_steps: int = 5
    optimizer: str = "adam"
    grad_clip_norm: float | None = 1.0
    experience_weight: float = 0.1
    task_weight: float = 0.0
    experience_batch_size: int = 32
    max_step_scale: float | None = None
    ema_decay: float | None = None
    trust_region_eps: float | None = None
    strategy: str = "none"
    entropy_weight: float = 0.0
    skip_nonfinite: bool = True
    monitor_decay: float = 0.9

    def __post_init__(self):
        if self.num_steps < 1 or self.experience_batch_size < 1:
            raise ValueError(
                f"AdapterConfig.num_steps and experience_batch_size must be >= 1, "
                f"got {self.num_steps}, {self.experience_batch_size}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"AdapterConfig.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.learning_rate <= 0 or self.experience_weight < 0 or self.task_weight < 0:
            raise ValueError(
                f"AdapterConfig needs learning_rate > 0, experience_weight >= 0 and task_weight >= 0, "
                f"got {self.learning_rate}, {self.experience_weight}, {self.task_weight}"
            )
        for name in ("grad_clip_norm", "max_step_scale", "trust_region_eps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"AdapterConfig.{name} must be positive or None, got {value}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"AdapterConfig.ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        get_strategy(self.strategy)


@struct.dataclass
class AdaptState:
    opt_state: optax.OptState
    anchor: Params
    learning_rate: Array
    experience_weight: Array
    task_weight: Array
    step: Array
    skipped: Array
    features: MetaFeatures

    def replaying(self, weight: Array, sources: tuple[str, ...]) -> AdaptState:
        """This state with `weight` on each of `sources` (`REPLAY_SOURCES`) and 0 on the others."""
        weight = jnp.asarray(weight, jnp.float32)
        on = lambda source: weight if source in sources else jnp.zeros_like(weight)
        return self.replace(experience_weight=on("meta"), task_weight=on("task"))


class Adapter(NamedTuple):
    init: Callable[[Params], AdaptState]
    update: Callable[..., tuple[AdaptState, Params, dict]]


def make_adapter(
    mode: str,
    loss_fn: LossFn,
    config: AdapterConfig | None = None,
    experience_loss_fn: LossFn | None = None,
    task_loss_fn: LossFn | None = None,
) -> Adapter:
    """Builds the pure `Adapter(init, update)` for `mode` in `("standard", "hybrid")`; see the module docstring.

    `experience_loss_fn` and `task_loss_fn` (default `loss_fn`) score the items replayed from the meta-training
    buffer and from the task buffer, for buffers whose items are not batches of the current task's kind (meta-RL
    replays observation windows with the actions taken, and the task's own trajectories with their behaviour
    log-probabilities).
    """
    experience_loss_fn = loss_fn if experience_loss_fn is None else experience_loss_fn
    task_loss_fn = loss_fn if task_loss_fn is None else task_loss_fn
    if mode not in ADAPTATION_MODES:
        raise ValueError(f"unknown adaptation mode {mode!r}; expected one of {', '.join(ADAPTATION_MODES)}")
    config = AdapterConfig() if config is None else config
    strategy = get_strategy(config.strategy)
    hybrid = mode == "hybrid"
    transform = optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm) if config.grad_clip_norm else optax.identity(),
        optax.scale_by_adam() if config.optimizer == "adam" else optax.identity(),
        scale_by_traced_learning_rate(),
        bound_relative_step(config.max_step_scale) if config.max_step_scale else optax.identity(),
    )
    if config.skip_nonfinite:  # a non-finite gradient leaves params and optimizer state as they were, and is counted
        transform = optax.apply_if_finite(transform, max_consecutive_errors=jnp.iinfo(jnp.int32).max)

    replay_loss_fns = {"meta": experience_loss_fn, "task": task_loss_fn}

    def objective(params, batch, replayed, weights):
        """`replayed` and `weights`: `{"meta": ..., "task": ...}`, with the sources this update replays."""
        loss, aux = loss_fn(params, batch)
        total = strategy(loss, aux, config)
        replay_losses = {name: jnp.zeros_like(loss) for name in REPLAY_SOURCES}
        for name, items in replayed.items():
            replay_losses[name] = replay_loss_fns[name](params, items)[0]
            total = total + weights[name] * replay_losses[name]
        return total, (loss, replay_losses, aux)

    def init(params: Params) -> AdaptState:
        return AdaptState(
            opt_state=transform.init(params),
            anchor=params,
            learning_rate=jnp.asarray(config.learning_rate, jnp.float32),
            experience_weight=jnp.asarray(config.experience_weight, jnp.float32),
            task_weight=jnp.asarray(config.task_weight, jnp.float32),
            step=jnp.zeros((), jnp.int32),
            skipped=jnp.zeros((), jnp.int32),
            features=MetaFeatures.zeros(),
        )

    def update(
        astate: AdaptState,
        params: Params,
        batch: PyTree,
        buffer_state: buffer_lib.BufferState | None,
        key: PRNGKey,
        task_buffer: buffer_lib.BufferState | None = None,
    ) -> tuple[AdaptState, Params, dict]:
        """Runs `num_steps` guarded steps on `batch` (leaves `[B, ...]`). Returns `(astate, params, metrics)`.

        `buffer_state`: the meta-training buffer; `task_buffer`: the current task's own experience (items of
        `task_loss_fn`'s kind). Hybrid replays each that is not None, and needs at least one."""
        if hybrid and buffer_state is None and task_buffer is None:
            raise ValueError(
                "hybrid adaptation needs a buffer_state (the ExperienceBuffer filled in meta-training) or a "
                "task_buffer (the current task's own experience)"
            )
        sources = {"meta": buffer_state, "task": task_buffer} if hybrid else {}
        sources = {name: state for name, state in sources.items() if state is not None}
        start_params = params

        def one_step(carry, step_key):
            astate, params = carry
            traced_weights = {"meta": astate.experience_weight, "task": astate.task_weight}
            replayed, weights = {}, {}
            # one source samples with the step's key (the meta-training buffer's draws predate the task buffer)
            source_keys = jax.random.split(step_key, len(sources)) if len(sources) > 1 else [step_key] * len(sources)
            for (name, state), source_key in zip(sources.items(), source_keys, strict=True):
                replayed[name], mask = buffer_lib.sample(state, source_key, config.experience_batch_size)
                weights[name] = jnp.where(jnp.any(mask), traced_weights[name], 0.0)
            (_, (loss, replay_losses, aux)), grads = jax.value_and_grad(objective, has_aux=True)(
                params, batch, replayed, weights
            )
            updates, opt_state = transform.update(grads, astate.opt_state, params, learning_rate=astate.learning_rate)
            new_params = optax.apply_updates(params, updates)
            ok = opt_state.last_finite if config.skip_nonfinite else jnp.asarray(True)
            anchor = astate.anchor
            if config.trust_region_eps is not None:
                projected = project_to_ball(new_params, anchor, config.trust_region_eps)
                new_params = tree_where(ok, projected, new_params)
            if config.ema_decay is not None:
                anchor = tree_where(ok, optax.incremental_update(new_params, anchor, 1.0 - config.ema_decay), anchor)
            skipped = astate.skipped + (~ok).astype(jnp.int32)
            astate = astate.replace(opt_state=opt_state, anchor=anchor, step=astate.step + 1, skipped=skipped)
            metrics = {
                "loss": loss,
                "experience_loss": replay_losses["meta"],
                "task_replay_loss": replay_losses["task"],
                "grad_norm": optax.tree.norm(grads),
                "skipped": ~ok,
            }
            return (astate, new_params), (metrics, batch_features(aux))

        keys = jax.random.split(key, config.num_steps)
        (astate, params), (steps, step_features) = jax.lax.scan(one_step, (astate, params), keys)
        pre_update = jax.tree.map(lambda x: x[0], step_features)
        features, shift = track_features(astate.features, pre_update, config.monitor_decay)
        astate = astate.replace(features=features)
        metrics = {
            "loss_before": steps["loss"][0],
            "loss_after": loss_fn(params, batch)[0],
            "experience_loss": jnp.mean(steps["experience_loss"]),
            "task_replay_loss": jnp.mean(steps["task_replay_loss"]),
            "grad_norm": jnp.mean(steps["grad_norm"]),
            "step_norm": optax.tree.norm(jax.tree.map(jnp.subtract, params, start_params)),
            "skipped_steps": jnp.sum(steps["skipped"], dtype=jnp.int32),
            "predictive_entropy": features.entropy,
            "confidence": features.confidence,
            "prediction_variance": features.variance,
            "feature_shift": shift,
        }
        return astate, params, metrics

    return Adapter(init, update)
