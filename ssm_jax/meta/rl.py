"""Meta-RL on returns: estimators, policy losses and the MAML-RL meta-step for sequence policies.

Estimators (one trajectory, time-major `[T]`): `discounted_returns`, `gae`, and the MAML-RL linear feature baseline
(`linear_baseline`: ridge regression of returns on `[o, o², t, t², t³, 1]`). `prepare_batch` bootstraps at no
episode end: every task here ends at its fixed horizon or terminates, and the reference pads with 0 there. Only
a rollout cut mid-episode bootstraps from the baseline at its last observation.

Observations reach the policy standardised by a `RunningMeanStd` (`obs_stats`): sampling and every loss replay
apply the same frozen statistics, and `meta_update` merges the raw observations it sampled into them afterwards.

Losses take a `PolicyBatch` whose leaves have a leading item axis of envs (`[N, T, ...]`), the batch convention
shared with MAML and the adapters: `pg_loss` (vanilla policy gradient, MAML-RL's inner step), `lvc_loss` (ProMP's
low-variance curvature objective, `exp(log π − log π_old)·A`), `ppo_loss` (clipped surrogate, optional KL
penalty; the outer step) and `behaviour_cloning_loss` (MSE of action means on replayed windows; the hybrid
adapter's experience term).

`make_maml_rl` builds the meta-step on the MAML core: per task (vmapped), for each of the K inner steps it samples
support trajectories with the current fast params and takes one inner PG/LVC step (differentiable), then samples
query trajectories with the adapted policy and takes `outer_epochs` optimizer steps on the PPO surrogate of the
adapted policy, differentiated through the inner steps (second order unless `first_order`). It logs the size of
the inner step: KL(pre ‖ post) on the support, the inner gradient norm and the fraction of clipped inner steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ssm_jax.buffer import cut_windows
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, normalize, update_stats
from ssm_jax.meta.maml import MAML, MAMLConfig, MetaState, make_maml
from ssm_jax.models.heads import (
    GaussianParams,
    HeadedModel,
    categorical_entropy,
    categorical_kl,
    gaussian_entropy,
    gaussian_kl,
)
from ssm_jax.rollout import Trajectory, action_log_prob, rollout
from ssm_jax.types import Array, Params, PRNGKey

INNER_OBJECTIVES = ("pg", "lvc")


def discounted_returns(rewards: Array, dones: Array, gamma: float, bootstrap: Array | float = 0.0) -> Array:
    """`G_t = r_t + γ (1 − done_t) G_{t+1}`, with `G_T = bootstrap`. All `[T]`."""

    def body(next_return, inputs):
        reward, done = inputs
        value = reward + gamma * (1.0 - done) * next_return
        return value, value

    _, returns = jax.lax.scan(
        body, jnp.asarray(bootstrap, jnp.float32), (rewards, dones.astype(jnp.float32)), reverse=True
    )
    return returns


def gae(
    rewards: Array,
    values: Array,
    next_values: Array,
    terminated: Array,
    dones: Array,
    gamma: float,
    lam: float,
) -> Array:
    """Generalised advantage estimates `[T]`.

    `next_values[t]` is the value of the observation after step t (before any reset). It bootstraps unless the
    episode terminated there; the recursion stops at every episode end (`dones`, termination or truncation).
    """
    deltas = rewards + gamma * (1.0 - terminated.astype(jnp.float32)) * next_values - values

    def body(next_advantage, inputs):
        delta, done = inputs
        advantage = delta + gamma * lam * (1.0 - done) * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(body, jnp.zeros((), jnp.float32), (deltas, dones.astype(jnp.float32)), reverse=True)
    return advantages


def episode_time(resets: Array) -> Array:
    """Step index within the episode, from the carry-reset flags `[T]` (True at each episode's first step)."""

    def body(t, reset):
        t = jnp.where(reset, 0, t + 1)
        return t, t

    return jax.lax.scan(body, jnp.asarray(-1, jnp.int32), resets)[1]


def _baseline_features(obs: Array, t: Array) -> Array:
    obs = jnp.clip(obs, -10.0, 10.0)
    t = t[..., None].astype(jnp.float32) / 100.0
    return jnp.concatenate([obs, obs**2, t, t**2, t**3, jnp.ones_like(t)], axis=-1)


def linear_baseline(traj: Trajectory, returns: Array, reg: float = 1e-5) -> tuple[Array, Array]:
    """MAML-RL's linear feature baseline fitted to `returns` `[T, N]`.

    Returns `(values, next_values)`, each `[T, N]`: the fit at each observation and at the pre-reset next
    observation (for bootstrapping on truncation).
    """
    t = jax.vmap(episode_time, in_axes=1, out_axes=1)(traj.resets)
    features = _baseline_features(traj.obs, t)
    flat = features.reshape(-1, features.shape[-1])
    gram = flat.T @ flat
    weights = jnp.linalg.solve(
        gram + reg * jnp.eye(gram.shape[0]) * (1.0 + jnp.trace(gram) / gram.shape[0]), flat.T @ returns.reshape(-1)
    )
    return features @ weights, _baseline_features(traj.next_obs, t + 1) @ weights


class PolicyBatch(NamedTuple):
    """Trajectories prepared for the policy losses; leaves env-major `[N, T, ...]` (carry leaves `[N, ...]`)."""

    obs: Array
    action: Array
    advantage: Array
    old_log_prob: Array
    resets: Array
    initial_carry: Any


@dataclasses.dataclass(frozen=True)
class RLConfig:
    """Estimator and loss settings shared by the inner, outer and pretraining updates."""

    gamma: float = 0.99
    gae_lambda: float = 1.0
    inner_objective: str = "pg"
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    normalize_advantages: bool = True

    def __post_init__(self):
        if self.inner_objective not in INNER_OBJECTIVES:
            raise ValueError(
                f"RLConfig.inner_objective must be one of {', '.join(INNER_OBJECTIVES)}, got {self.inner_objective!r}"
            )
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1 or self.clip_eps <= 0:
            raise ValueError(
                f"RLConfig needs 0 < gamma <= 1, 0 <= gae_lambda <= 1, clip_eps > 0; got {self.gamma}, "
                f"{self.gae_lambda}, {self.clip_eps}"
            )


def prepare_batch(traj: Trajectory, config: RLConfig, obs_stats: RunningMeanStd | None = None) -> PolicyBatch:
    """Standardises `traj`'s observations with `obs_stats` and computes advantages from the linear baseline fitted
    on `traj` itself (no gradient, no bootstrap at episode ends). Returns the env-major `[N, T, ...]` batch."""
    traj = jax.lax.stop_gradient(traj)
    traj = traj._replace(obs=normalize(obs_stats, traj.obs), next_obs=normalize(obs_stats, traj.next_obs))
    returns = jax.vmap(lambda r, d: discounted_returns(r, d, config.gamma), in_axes=1, out_axes=1)(
        traj.reward, traj.done
    )
    values, next_values = linear_baseline(traj, returns)
    advantages = jax.vmap(
        lambda r, v, nv, d: gae(r, v, nv, d, d, config.gamma, config.gae_lambda), in_axes=1, out_axes=1
    )(traj.reward, values, next_values, traj.done)
    if config.normalize_advantages:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    env_major = lambda x: jnp.swapaxes(x, 0, 1)
    return PolicyBatch(
        obs=env_major(traj.obs),
        action=env_major(traj.action),
        advantage=env_major(advantages),
        old_log_prob=env_major(traj.log_prob),
        resets=env_major(traj.resets),
        initial_carry=traj.initial_carry,
    )


def policy_outputs(policy: HeadedModel, params: Params, batch: PolicyBatch) -> dict:
    """Re-runs `policy` over every env's trajectory (reset-aware), returning head outputs with leaves `[N, T, ...]`."""
    run = lambda carry, obs, resets: policy.apply(params, carry, obs, resets)[1]
    return jax.vmap(run)(batch.initial_carry, batch.obs, batch.resets)


def _entropy(pi) -> Array:
    return gaussian_entropy(pi) if isinstance(pi, GaussianParams) else categorical_entropy(pi)


def policy_kl(policy: HeadedModel, params: Params, new_params: Params, batch: PolicyBatch) -> Array:
    """Mean over the batch's steps of KL(π_params ‖ π_new_params), in nats: the size of an update."""
    pre, post = policy_outputs(policy, params, batch)["pi"], policy_outputs(policy, new_params, batch)["pi"]
    kl = gaussian_kl(pre, post) if isinstance(pre, GaussianParams) else categorical_kl(pre, post)
    return jnp.mean(kl)


def make_policy_losses(policy: HeadedModel, config: RLConfig):
    """The policy losses for `policy`, each `loss(params, batch) -> (loss, aux)`; see the module docstring."""

    def log_probs(params, batch):
        pi = policy_outputs(policy, params, batch)["pi"]
        return action_log_prob(pi, batch.action), pi

    def pg_loss(params, batch: PolicyBatch):
        log_prob, pi = log_probs(params, batch)
        loss = -jnp.mean(log_prob * batch.advantage) - config.entropy_coef * jnp.mean(_entropy(pi))
        return loss, {"log_prob": log_prob}

    def lvc_loss(params, batch: PolicyBatch):
        log_prob, pi = log_probs(params, batch)
        ratio = jnp.exp(log_prob - batch.old_log_prob)
        loss = -jnp.mean(ratio * batch.advantage) - config.entropy_coef * jnp.mean(_entropy(pi))
        return loss, {"log_prob": log_prob}

    def ppo_loss(params, batch: PolicyBatch):
        log_prob, pi = log_probs(params, batch)
        log_ratio = log_prob - batch.old_log_prob
        ratio = jnp.exp(log_ratio)
        clipped = jnp.clip(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
        surrogate = jnp.minimum(ratio * batch.advantage, clipped * batch.advantage)
        approx_kl = jnp.mean(ratio - 1.0 - log_ratio)  # non-negative estimator of KL(old || new)
        loss = -jnp.mean(surrogate) + config.kl_coef * approx_kl - config.entropy_coef * jnp.mean(_entropy(pi))
        return loss, {"log_prob": log_prob, "approx_kl": approx_kl}

    def behaviour_cloning_loss(params, windows):
        """`windows = (obs [B, L, D], actions [B, L, A])`: MSE between the policy's action means and `actions`."""
        obs, actions = windows
        run = lambda o: policy.apply(params, policy.initial_carry(), o)[1]["pi"]
        pi = jax.vmap(run)(obs)
        mean = pi.mean if isinstance(pi, GaussianParams) else jax.nn.softmax(pi)
        return jnp.mean((mean - actions) ** 2), {}

    inner = pg_loss if config.inner_objective == "pg" else lvc_loss
    return inner, ppo_loss, behaviour_cloning_loss


def mean_episode_return(traj: Trajectory) -> Array:
    """Undiscounted return of each env's first episode, averaged over envs (MAML-RL samples one path per
    trajectory; steps after an early termination belong to a restarted episode and are not scored)."""
    before_first_end = (jnp.cumsum(traj.done, axis=0) - traj.done) == 0
    return jnp.mean(jnp.sum(jnp.where(before_first_end, traj.reward, 0.0), axis=0))


class MetaRL(NamedTuple):
    maml: MAML
    sample: Callable[[PRNGKey, Any, Params, RunningMeanStd], Trajectory]
    initial_obs_stats: Callable
    meta_update: Callable
    pretrain_update: Callable
    init: Callable
    init_pretrain: Callable
    inner_loss: Callable
    outer_loss: Callable
    bc_loss: Callable


def make_maml_rl(
    env: TaskEnv,
    policy: HeadedModel,
    maml_config: MAMLConfig,
    rl_config: RLConfig,
    num_envs: int,
    horizon: int,
    outer_epochs: int = 1,
) -> MetaRL:
    """MAML-RL on `env` with `policy`: `num_envs` trajectories of `horizon` steps per task and sampling round.

    - `initial_obs_stats(key, tasks, params) -> RunningMeanStd`: statistics of one round of rollouts of `params`
      on raw observations (tasks with a leading axis), to start training from.
    - `meta_update(state, obs_stats, key, tasks) -> (state, obs_stats, metrics, query_trajectories)`: one
      meta-iteration over a batch of tasks (leading axis `[E]`; query leaves `[E, T, N, ...]`). Sampling and losses
      use `obs_stats`; the returned statistics include this iteration's raw observations. Metrics include the pre-
      and post-adaptation mean episode return, `inner_kl` (KL(pre ‖ post) on the first support batch, nats),
      `inner_grad_norm` (first inner step, before clipping) and `inner_clip_fraction`.
    - `pretrain_update(state, obs_stats, key, tasks) -> (state, obs_stats, metrics)`: PPO on the given tasks with no
      inner loop (what `train_per_task`, the oracle, runs per task). A pretrained baseline on MAML's env budget is
      `meta_update` with inner lr 0 instead.
    """
    if outer_epochs < 1:
        raise ValueError(f"outer_epochs must be >= 1, got {outer_epochs}")
    inner_loss, ppo_loss, bc_loss = make_policy_losses(policy, rl_config)
    maml_config = dataclasses.replace(maml_config, support_per_step=True)
    maml = make_maml(inner_loss, maml_config, outer_loss_fn=ppo_loss)
    num_inner_steps = maml_config.num_inner_steps

    def sample(key, task, params, obs_stats):
        return rollout(key, env, task, policy, jax.lax.stop_gradient(params), num_envs, horizon, obs_stats)

    def initial_obs_stats(key: PRNGKey, tasks: Any, params: Params) -> RunningMeanStd:
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        trajs = jax.vmap(sample, in_axes=(0, 0, None, None))(keys, tasks, params, None)
        return update_stats(RunningMeanStd.create(env.observation_size), trajs.obs)

    def sample_task(key, task, params, inner_lr, obs_stats):
        """K support rounds, each sampled with the current fast params and followed by one inner step, then a query
        round with the adapted params: one scan, so the compiled program holds one rollout (env compiles dominate
        small runs). Returns the support batches `[K, ...]`, the query batch, the trajectories `[K + 1, ...]`,
        the adapted params and the inner gradient norms `[K]`."""

        def round_(fast, inputs):
            round_key, is_support = inputs
            traj = sample(round_key, task, fast, obs_stats)
            batch = prepare_batch(traj, rl_config, obs_stats)
            fast, grad_norm = jax.lax.cond(
                is_support,
                lambda: maml.inner_step(fast, batch, inner_lr),
                lambda: (fast, jnp.zeros((), jnp.float32)),
            )
            return fast, (batch, traj, grad_norm)

        is_support = jnp.arange(num_inner_steps + 1) < num_inner_steps
        keys = jax.random.split(key, num_inner_steps + 1)
        adapted, (batches, trajs, grad_norms) = jax.lax.scan(round_, params, (keys, is_support))
        support = jax.tree.map(lambda x: x[:num_inner_steps], batches)
        query = jax.tree.map(lambda x: x[num_inner_steps], batches)
        return support, query, trajs, adapted, grad_norms[:num_inner_steps]

    def meta_update(state: MetaState, obs_stats: RunningMeanStd, key: PRNGKey, tasks: Any):
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        support, query, trajs, adapted, grad_norms = jax.vmap(sample_task, in_axes=(0, 0, None, None, None))(
            keys, tasks, state.params, state.inner_lr, obs_stats
        )
        first_support = jax.tree.map(lambda x: x[:, 0], support)
        inner_kl = jax.vmap(policy_kl, in_axes=(None, None, 0, 0))(policy, state.params, adapted, first_support)
        clip = maml_config.inner_grad_clip
        state, metrics = jax.lax.scan(lambda s, _: maml.update(s, (support, query)), state, None, length=outer_epochs)
        metrics = jax.tree.map(lambda m: m[-1], metrics)
        episode_returns = jax.vmap(jax.vmap(mean_episode_return))(trajs)  # [E, K + 1]
        metrics.update(
            pre_adaptation_return=jnp.mean(episode_returns[:, 0]),
            post_adaptation_return=jnp.mean(episode_returns[:, -1]),
            inner_kl=jnp.mean(inner_kl),
            inner_grad_norm=jnp.mean(grad_norms[:, 0]),
            inner_clip_fraction=jnp.mean(grad_norms > clip) if clip is not None else jnp.zeros(()),
            inner_lr_mean=jnp.mean(jnp.stack([jnp.mean(x) for x in jax.tree.leaves(state.inner_lr)])),
        )
        query_traj = jax.tree.map(lambda x: x[:, -1], trajs)
        return state, update_stats(obs_stats, trajs.obs), metrics, query_traj

    def pretrain_update(state: MetaState, obs_stats: RunningMeanStd, key: PRNGKey, tasks: Any):
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        trajs = jax.vmap(sample, in_axes=(0, 0, None, None))(keys, tasks, state.params, obs_stats)
        batches = jax.vmap(lambda t: prepare_batch(t, rl_config, obs_stats))(trajs)

        def epoch(state, _):
            objective = lambda p: jnp.mean(jax.vmap(lambda b: ppo_loss(p, b)[0])(batches))
            loss, grads = jax.value_and_grad(objective)(state.params)
            updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
            state = state.replace(
                params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1
            )
            return state, loss

        state, losses = jax.lax.scan(epoch, state, None, length=outer_epochs)
        metrics = {"loss": losses[-1], "return": jnp.mean(jax.vmap(mean_episode_return)(trajs))}
        return state, update_stats(obs_stats, trajs.obs), metrics

    def init_pretrain(params: Params, optimizer: optax.GradientTransformation) -> MetaState:
        """State for `pretrain_update` (a plain optimizer over params, whatever the MAML config)."""
        inner_lr = jnp.asarray(maml_config.inner_lr, jnp.float32)
        return MetaState(params, inner_lr, optimizer.init(params), jnp.zeros((), jnp.int32), optimizer)

    return MetaRL(
        maml,
        sample,
        initial_obs_stats,
        meta_update,
        pretrain_update,
        maml.init,
        init_pretrain,
        inner_loss,
        ppo_loss,
        bc_loss,
    )


def train_per_task(
    meta_rl: MetaRL,
    params: Params,
    obs_stats: RunningMeanStd,
    optimizer: optax.GradientTransformation,
    key: PRNGKey,
    tasks: Any,
    iterations: int,
) -> Array:
    """The oracle baseline: a separate copy of `params` (and of `obs_stats`) trained with `pretrain_update` on each
    task (leading axis E).

    Returns the mean episode return of each task's trajectories at every iteration, `[E, iterations]`; column `i`
    is sampled with the params after `i` updates, so the last column measures the policy one update short of the
    end (that keeps a second rollout out of the compiled program).
    """

    def train(key, task):
        one_task = jax.tree.map(lambda x: x[None], task)

        def body(carry, k):
            state, stats = carry
            state, stats, metrics = meta_rl.pretrain_update(state, stats, k, one_task)
            return (state, stats), metrics["return"]

        carry = (meta_rl.init_pretrain(params, optimizer), obs_stats)
        _, returns = jax.lax.scan(body, carry, jax.random.split(key, iterations))
        return returns

    return jax.vmap(train)(jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0]), tasks)


def experience_windows(
    traj: Trajectory, length: int, obs_stats: RunningMeanStd | None = None
) -> tuple[tuple[Array, Array], Array]:
    """Non-overlapping `(policy-input window [L, D], actions [L, A])` items from every env of `traj`, for the buffer.

    Observations are standardised with `obs_stats`, the statistics the policy saw them through. Returns
    `(items, valid)` with leading axis `N * (T // L)`; windows crossing an episode end are invalid.
    """

    def per_env(obs, action, done):
        return cut_windows((obs, action), done, length, stride=length)

    obs = normalize(obs_stats, traj.obs)
    (obs, action), valid = jax.vmap(per_env, in_axes=1)(obs, traj.action, traj.done)
    flatten = lambda x: x.reshape(-1, *x.shape[2:])
    return (flatten(obs), flatten(action)), valid.reshape(-1)
