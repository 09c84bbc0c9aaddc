"""Test-time adaptation of a meta-RL policy on a new task: sample, adapt, repeat.

    curve = make_rl_adaptation(meta_rl, AdapterConfig(...), rl_config, num_rounds=3, replay="task")
    returns, extras = curve(key, task, params, buffer_state, weight, obs_stats, learning_rate)

Each of `num_rounds` rounds samples `num_envs` trajectories with the current params on the task, then takes one
adapter update (`AdapterConfig.num_steps` gradient steps) on them: `standard` is the policy-gradient loss on those
trajectories; `hybrid` adds `weight x` a term on replayed experience, from the sources `replay` names:

- `meta`: the read-only meta-training buffer, behaviour cloning of (observation window -> action) pairs that the
  meta-trained policy's adapted versions took on *other* tasks;
- `task`: a task buffer of this task's own trajectories, empty when the curve starts and filled with every round's
  batch as it is sampled (before that round's update; nothing crosses tasks, which `jax.vmap` keeps apart). Its term
  is `task_replay_loss`: `clipped_pg`, the PPO-clipped importance-weighted policy gradient on the stored
  trajectories with their behaviour log-probabilities and advantages, or `kl_anchor`, KL(meta-trained ‖ current)
  on the stored states.

Returns the mean episode return before adapting and after each round: `[num_rounds + 1]`. `weight` is traced: 0
gives exactly the standard adapter, so one compiled function evaluates both modes. `obs_stats` (the meta-training
observation statistics) are frozen: sampling and the adapter's loss both standardise with them, and nothing here
updates them. `learning_rate` is a scalar or, for Meta-SGD, the learned params-shaped tree of inner rates; rounds
after the first use it times `later_rounds_lr_scale` (MAML-RL's test script halves it: a policy meta-trained for
one step takes its first step at the meta-trained size, and normalised advantages keep every later step as large
unless the rate shrinks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssm_jax import buffer as buffer_lib
from ssm_jax.adapt.adapter import Adapter, AdapterConfig, make_adapter, replayed_sources
from ssm_jax.envs.normalize import RunningMeanStd
from ssm_jax.meta.policy_losses import PolicyBatch, RLConfig, mean_episode_return, prepare_batch
from ssm_jax.meta.rl import MetaRL
from ssm_jax.types import Array, Params, PRNGKey, PyTree

TASK_REPLAY_LOSSES = ("clipped_pg", "kl_anchor")
"""The RL task-buffer terms: PPO-clipped importance-weighted policy gradient, or KL to the meta-trained policy."""
_TIME_MAJOR = ("obs", "action", "advantage", "old_log_prob", "resets")


def batch_items(batch: PolicyBatch) -> PolicyBatch:
    """A time-major batch `[T, N, ...]` as N task-buffer items `[N, T, ...]` (one per trajectory), and, being its
    own inverse, sampled items `[B, T, ...]` back as a time-major batch `[T, B, ...]`."""
    return batch._replace(**{f: jnp.swapaxes(getattr(batch, f), 0, 1) for f in _TIME_MAJOR})


def check_task_loss(name: str) -> None:
    if name not in TASK_REPLAY_LOSSES:
        raise ValueError(f"unknown task replay loss {name!r}; expected one of {', '.join(TASK_REPLAY_LOSSES)}")


def task_replay_loss(meta_rl: MetaRL, name: str, anchor: Params | None = None):
    """`loss(params, batch) -> (loss, aux)` on replayed time-major `PolicyBatch`es of the current task: `clipped_pg`
    (`meta_rl.outer_loss`, PPO's clipped surrogate against the stored behaviour log-probs) or `kl_anchor`
    (KL(π_anchor ‖ π_params) on the stored states, with `anchor` the meta-trained params)."""
    check_task_loss(name)
    if name == "clipped_pg":
        return meta_rl.outer_loss
    if anchor is None:
        raise ValueError("the kl_anchor task replay loss needs the meta-trained params as its anchor")
    return lambda params, batch: (meta_rl.policy_kl(anchor, params, batch), {})


def make_policy_adapter(
    meta_rl: MetaRL,
    adapter_config: AdapterConfig,
    mode: str = "hybrid",
    task_loss: str = "clipped_pg",
    anchor: Params | None = None,
) -> Adapter:
    """The test-time adapter of a meta-RL policy: `meta_rl`'s inner policy-gradient loss on the current task's
    batch, plus (hybrid) behaviour cloning on (observation window -> action) items replayed from the meta-training
    buffer, and `task_replay_loss(meta_rl, task_loss, anchor)` on task-buffer items (`[B, T, ...]` trajectories)."""
    replay = task_replay_loss(meta_rl, task_loss, anchor)
    return make_adapter(
        mode,
        meta_rl.inner_loss,
        adapter_config,
        experience_loss_fn=meta_rl.bc_loss,
        task_loss_fn=lambda params, items: replay(params, batch_items(items)),
    )


def make_rl_adaptation(
    meta_rl: MetaRL,
    adapter_config: AdapterConfig,
    rl_config: RLConfig,
    num_rounds: int,
    mode: str = "hybrid",
    later_rounds_lr_scale: float = 1.0,
    replay: str = "meta",
    task_loss: str = "clipped_pg",
):
    """Builds `curve(key, task, params, buffer_state, weight, obs_stats, learning_rate)`, returning
    `(returns [K+1], metrics)` for `K = num_rounds`: `metrics[name] [K+1]` is the mean over each round's steps of
    the env's per-step `Trajectory.metrics[name]`. `replay` (`meta`, `task` or `both`) names the hybrid term's
    sources, each at `weight`; `task_loss` the task buffer's term (`TASK_REPLAY_LOSSES`).

    With `mode="standard"` the buffer state may be None and `weight` is ignored.
    """
    if num_rounds < 1 or not later_rounds_lr_scale > 0:
        raise ValueError(
            f"num_rounds must be >= 1 and later_rounds_lr_scale > 0, got {num_rounds}, {later_rounds_lr_scale}"
        )
    sources = replayed_sources(replay) if mode == "hybrid" else ()
    check_task_loss(task_loss)

    def curve(
        key: PRNGKey,
        task: Any,
        params: Params,
        buffer_state: Any,
        weight: Array,
        obs_stats: RunningMeanStd | None,
        learning_rate: PyTree,
    ):
        adapter = make_policy_adapter(meta_rl, adapter_config, mode, task_loss, anchor=params)
        first_lr = jax.tree.map(lambda lr: jnp.asarray(lr, jnp.float32), learning_rate)
        astate = adapter.init(params).replaying(weight, sources).replace(learning_rate=first_lr)
        meta_buffer = buffer_state if "meta" in sources else None

        def round_(carry, inputs):
            astate, params, task_buffer = carry
            round_key, lr_scale = inputs
            sample_key, update_key = jax.random.split(round_key)
            traj = meta_rl.sample_trajectories(sample_key, task, params, obs_stats)
            batch = prepare_batch(traj, rl_config, obs_stats)
            if task_buffer is not None:
                task_buffer = buffer_lib.add(task_buffer, batch_items(batch))
            astate = astate.replace(learning_rate=jax.tree.map(lambda lr: lr * lr_scale, first_lr))
            astate, params, _ = adapter.update(astate, params, batch, meta_buffer, update_key, task_buffer=task_buffer)
            return (astate, params, task_buffer), (mean_episode_return(traj), jax.tree.map(jnp.mean, traj.metrics))

        task_buffer = None
        if "task" in sources:  # every round's trajectories, this task's only: empty at the start
            sampled = lambda: prepare_batch(meta_rl.sample_trajectories(key, task, params, obs_stats), rl_config)
            items = batch_items(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(sampled)))
            num_envs = items.obs.shape[0]
            task_buffer = buffer_lib.init((num_rounds + 1) * num_envs, jax.tree.map(lambda x: x[0], items))
        # K + 1 rounds, the last one's update unused: one rollout in the program instead of two (brax compiles
        # dominate small runs), for one extra adapter update.
        lr_scales = jnp.full((num_rounds + 1,), later_rounds_lr_scale, jnp.float32).at[0].set(1.0)
        rounds = (jax.random.split(key, num_rounds + 1), lr_scales)
        _, (returns, metrics) = jax.lax.scan(round_, (astate, params, task_buffer), rounds)
        return returns, metrics

    return curve
