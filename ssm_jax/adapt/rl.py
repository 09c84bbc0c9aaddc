"""Test-time adaptation of a meta-RL policy on a new task: sample, adapt, repeat.

    curve = make_rl_adaptation(meta_rl, AdapterConfig(...), rl_config, num_rounds=3)
    returns, extras = curve(key, task, params, buffer_state, experience_weight, obs_stats, learning_rate)

Each of `num_rounds` rounds samples `num_envs` trajectories with the current params on the task, then takes one
adapter update (`standard`: policy-gradient steps on those trajectories; `hybrid`: plus `experience_weight x` the
behaviour-cloning loss on windows replayed from the read-only buffer). Returns the mean episode return before
adapting and after each round: `[num_rounds + 1]`. `experience_weight` is traced: 0 gives exactly the standard
adapter, so one compiled function evaluates both modes. `obs_stats` (the meta-training observation statistics) are
frozen: sampling and the adapter's loss both standardise with them, and nothing here updates them.
`learning_rate` is a scalar or, for Meta-SGD, the learned params-shaped tree of inner rates; rounds after the
first use it times `later_rounds_lr_scale` (MAML-RL's test script halves it: a policy meta-trained for one step
takes its first step at the meta-trained size, and normalised advantages keep every later step as large unless the
rate shrinks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ssm_jax.adapt.adapter import Adapter, AdapterConfig, make_adapter
from ssm_jax.envs.normalize import RunningMeanStd
from ssm_jax.meta.policy_losses import RLConfig, mean_episode_return, prepare_batch
from ssm_jax.meta.rl import MetaRL
from ssm_jax.types import Array, Params, PRNGKey, PyTree


def make_policy_adapter(meta_rl: MetaRL, adapter_config: AdapterConfig, mode: str = "hybrid") -> Adapter:
    """The test-time adapter of a meta-RL policy: `meta_rl`'s inner policy-gradient loss on the current task's
    batch, plus (hybrid) behaviour cloning on replayed (observation window -> action) items."""
    return make_adapter(mode, meta_rl.inner_loss, adapter_config, experience_loss_fn=meta_rl.bc_loss)


def make_rl_adaptation(
    meta_rl: MetaRL,
    adapter_config: AdapterConfig,
    rl_config: RLConfig,
    num_rounds: int,
    mode: str = "hybrid",
    later_rounds_lr_scale: float = 1.0,
):
    """Builds `curve(key, task, params, buffer_state, experience_weight, obs_stats, learning_rate)`, returning
    `(returns [K+1], metrics)` for `K = num_rounds`: `metrics[name] [K+1]` is the mean over each round's steps of
    the env's per-step `Trajectory.metrics[name]`.

    With `mode="standard"` the buffer state may be None and `experience_weight` is ignored.
    """
    if num_rounds < 1 or not later_rounds_lr_scale > 0:
        raise ValueError(
            f"num_rounds must be >= 1 and later_rounds_lr_scale > 0, got {num_rounds}, {later_rounds_lr_scale}"
        )
    adapter = make_policy_adapter(meta_rl, adapter_config, mode)

    def curve(
        key: PRNGKey,
        task: Any,
        params: Params,
        buffer_state: Any,
        experience_weight: Array,
        obs_stats: RunningMeanStd | None,
        learning_rate: PyTree,
    ):
        first_lr = jax.tree.map(lambda lr: jnp.asarray(lr, jnp.float32), learning_rate)
        astate = adapter.init(params).replace(
            experience_weight=jnp.asarray(experience_weight, jnp.float32), learning_rate=first_lr
        )

        def round_(carry, inputs):
            astate, params = carry
            round_key, lr_scale = inputs
            sample_key, update_key = jax.random.split(round_key)
            traj = meta_rl.sample_trajectories(sample_key, task, params, obs_stats)
            batch = prepare_batch(traj, rl_config, obs_stats)
            astate = astate.replace(learning_rate=jax.tree.map(lambda lr: lr * lr_scale, first_lr))
            astate, params, _ = adapter.update(astate, params, batch, buffer_state, update_key)
            return (astate, params), (mean_episode_return(traj), jax.tree.map(jnp.mean, traj.metrics))

        # K + 1 rounds, the last one's update unused: one rollout in the program instead of two (brax compiles
        # dominate small runs), for one extra adapter update.
        lr_scales = jnp.full((num_rounds + 1,), later_rounds_lr_scale, jnp.float32).at[0].set(1.0)
        rounds = (jax.random.split(key, num_rounds + 1), lr_scales)
        _, (returns, metrics) = jax.lax.scan(round_, (astate, params), rounds)
        return returns, metrics

    return curve
