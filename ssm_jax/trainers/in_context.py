"""In-context meta-RL (RL²: Duan et al. 2016, Wang et al. 2016) on the trainer protocol: `init / train / evaluate`.

    trainer = make_in_context_trainer(env, "gru", NetworkConfig(), InContextConfig(episodes_per_trial=2))
    state = trainer.init(key, HParams.create(outer_lr=1e-3))
    state, metrics = trainer.train(state, key, 10)           # 10 PPO iterations in one lax.scan (jit it)
    returns, extras = trainer.evaluate(state, key, tasks)    # [E, M]: episode 1..M on each held-out task

A trial is M consecutive episodes of one task (`rollout(..., in_context=True)`): the policy's carry is reset before
the trial and survives every episode boundary, and the policy reads (observation, previous action, previous
reward, episode-start flag). Whatever it learns about the task lives in its carry, so it adapts with no gradient
step: evaluation reports the return of episodes 1..M of fresh trials on held-out tasks.

Each iteration draws `tasks_per_batch` tasks, samples `trials_per_task` trials of each, replays them through the
policy's `apply` (the model's parallel `sequence` path where it has one: S5's associative scan, the transformer's
masked attention) for the values, and takes `ppo_epochs` epochs of `minibatches` Adam steps on the PPO-clipped
surrogate plus a value loss, with advantages from GAE over the whole trial: RL²'s objective is the return of all M
episodes, so neither the value nor the advantage stops at an episode boundary, only at the trial's end (with no
bootstrap: the trial ends there). Observation statistics update from the sampled trials and freeze for
evaluation; of the traced `HParams` only `outer_lr` (the Adam rate) is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from ssm_jax.config.io import register_config
from ssm_jax.envs.base import TaskEnv
from ssm_jax.envs.normalize import RunningMeanStd, update_stats
from ssm_jax.meta.estimators import trial_advantages
from ssm_jax.meta.maml import with_outer_lr
from ssm_jax.meta.policy_losses import PolicyBatch, policy_outputs, ppo_loss
from ssm_jax.models import NetworkConfig, make_actor_critic
from ssm_jax.models.heads import HeadedModel
from ssm_jax.rollout import Trajectory, context_size, episode_means, episode_returns, rollout, trial_inputs
from ssm_jax.trainers.protocol import (
    MATMUL_PRECISIONS,
    HParams,
    Trainer,
    at_precision,
    check_choices,
    check_positive,
)
from ssm_jax.types import Array, Params, PRNGKey

DEFAULT_NETWORK = NetworkConfig()


@register_config
@dataclasses.dataclass(frozen=True)
class InContextConfig:
    """Static settings of the in-context trainer (changing one recompiles). Trials are per task."""

    tasks_per_batch: int = 20
    """Tasks per iteration (E)."""
    trials_per_task: int = 10
    """Trials per task and iteration (N), each with its own fresh carry."""
    episodes_per_trial: int = 2
    """M: consecutive episodes of one task the carry persists across."""
    horizon: int = 100
    """Steps per episode (a trial is M x horizon steps)."""
    eval_trials: int | None = None
    """Trials per held-out task in evaluation (None: trials_per_task)."""
    ppo_epochs: int = 4
    """Passes over each iteration's trials."""
    minibatches: int = 4
    """Adam steps per epoch, each on a disjoint share of the trials (must divide E x N)."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    """Clip each PPO gradient to this global norm."""
    reward_scale: float = 1.0
    """Factor on the rewards the value and the advantages learn from (the policy still reads the raw reward)."""
    normalize_observations: bool = True
    """Standardise the observation part of the policy's input with running statistics."""
    matmul_precision: Literal[MATMUL_PRECISIONS] = "highest"
    """As `TrainerConfig.matmul_precision`."""

    def __post_init__(self):
        check_positive(self, "tasks_per_batch", "trials_per_task", "episodes_per_trial", "horizon", "ppo_epochs",
                       "minibatches", *(("eval_trials",) if self.eval_trials is not None else ()))  # fmt: skip
        check_choices(self, matmul_precision=MATMUL_PRECISIONS)
        if (self.tasks_per_batch * self.trials_per_task) % self.minibatches:
            raise ValueError(
                f"InContextConfig.minibatches={self.minibatches} must divide tasks_per_batch x trials_per_task = "
                f"{self.tasks_per_batch * self.trials_per_task}"
            )
        in_range = 0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1 and min(self.value_coef, self.entropy_coef) >= 0
        if not (in_range and min(self.clip_eps, self.max_grad_norm, self.reward_scale) > 0):
            raise ValueError(
                "InContextConfig needs 0 < gamma <= 1, 0 <= gae_lambda <= 1, value_coef and entropy_coef >= 0, and "
                f"clip_eps, max_grad_norm and reward_scale > 0; got {self}"
            )

    @property
    def trial_length(self) -> int:
        """Steps per trial: `episodes_per_trial x horizon`."""
        return self.episodes_per_trial * self.horizon

    @property
    def env_steps_per_iteration(self) -> int:
        """Env steps one iteration samples: E x N trials of M x horizon steps."""
        return self.tasks_per_batch * self.trials_per_task * self.trial_length


@struct.dataclass
class InContextState:
    """Everything a checkpoint needs; `optimizer` (static) is the Adam chain whose rate comes from `hparams`."""

    params: Params
    opt_state: Any
    obs_stats: RunningMeanStd
    iteration: Array
    hparams: HParams
    optimizer: optax.GradientTransformation = struct.field(pytree_node=False)


class InContextParts(NamedTuple):
    """The RL² `Trainer`'s own parts, for tests and benchmarks: `sample_trials(key, task, params, obs_stats,
    num_trials)` is one task's trials (`Trajectory [M x horizon, num_trials, ...]`), `prepare(params, trials,
    obs_stats)` their PPO batch, `loss(params, batch)` the PPO loss and `loss_of_outputs(head outputs, batch)` the
    same loss of outputs replayed another way."""

    env: TaskEnv
    policy: HeadedModel
    sample_trials: Callable[..., Trajectory]
    prepare: Callable[..., TrialBatch]
    loss: Callable[..., tuple[Array, dict]]
    loss_of_outputs: Callable[..., tuple[Array, dict]]


class TrialBatch(NamedTuple):
    """Trials prepared for the PPO loss, time-major `[T, B, ...]`: `policy` (replayed inputs, actions, advantages,
    log-probs, resets, initial carries `[B, ...]`), the value targets `returns`, and `valid`, the steps of the first
    M episodes (an episode that ends early leaves a tail that belongs to none)."""

    policy: PolicyBatch
    returns: Array
    valid: Array


def make_in_context_trainer(
    env: TaskEnv,
    model: str,
    network: NetworkConfig = DEFAULT_NETWORK,
    config: InContextConfig = InContextConfig(),
) -> Trainer:
    """Builds the RL² trainer of the sequence model `model` on `env` (whose horizon must be `config.horizon`);
    evaluation runs `config.eval_trials` trials per held-out task (None: `config.trials_per_task`).

    Raises:
        ValueError: the env's horizon differs from the config's (one line).
    """
    if env.horizon != config.horizon:
        raise ValueError(f"the env's horizon {env.horizon} differs from InContextConfig.horizon={config.horizon}")
    M, T = config.episodes_per_trial, config.trial_length
    eval_trials = config.eval_trials or config.trials_per_task
    policy = make_actor_critic(
        model, context_size(env), env.action_size, env.discrete, network, attention_span=max(T, 16)
    )
    adam = lambda learning_rate: optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(learning_rate))
    optimizer = optax.inject_hyperparams(adam)(learning_rate=0.0)  # the rate comes from `HParams`

    def sample_trials(key: PRNGKey, task: Any, params: Params, obs_stats: RunningMeanStd | None, num_trials: int):
        return rollout(key, env, task, policy, params, num_trials, T, obs_stats, in_context=True)

    def merge_stats(obs_stats: RunningMeanStd, obs: Array) -> RunningMeanStd:
        return update_stats(obs_stats, obs) if config.normalize_observations else obs_stats

    def prepare(params: Params, traj: Trajectory, obs_stats: RunningMeanStd) -> TrialBatch:
        """The PPO batch of trials `[T, B]`: inputs rebuilt from the trajectory, values from one replay of the
        sampling params, GAE over each whole trial (no bootstrap at its end), advantages standardised over the
        valid steps."""
        traj = jax.lax.stop_gradient(traj)
        episode = jnp.cumsum(traj.done, axis=0) - traj.done
        valid = (episode < M).astype(jnp.float32)
        inputs = trial_inputs(env, traj, obs_stats)
        batch = PolicyBatch(inputs, traj.action, jnp.zeros_like(valid), traj.log_prob, traj.resets, traj.initial_carry)
        values = jax.lax.stop_gradient(policy_outputs(policy, params, batch)["value"])
        rewards = traj.reward * config.reward_scale * valid
        advantage, returns = trial_advantages(rewards, values, valid, config.gamma, config.gae_lambda)
        batch = batch._replace(advantage=advantage)
        return TrialBatch(batch, returns, valid)

    def loss_of_outputs(out: dict, batch: TrialBatch) -> tuple[Array, dict]:
        """`policy_losses.ppo_loss` of the head outputs `out` (leaves `[T, B, ...]`) on the valid steps of `batch`."""
        return ppo_loss(out, batch.policy, batch.returns, batch.valid, config.clip_eps, config.value_coef,
                        config.entropy_coef)  # fmt: skip

    def loss(params: Params, batch: TrialBatch) -> tuple[Array, dict]:
        """The PPO loss of `params` on `batch`, its trials replayed through the policy's `apply`."""
        return loss_of_outputs(policy_outputs(policy, params, batch.policy), batch)

    def init(key: PRNGKey, hparams: HParams, adapt: bool = True) -> InContextState:
        """The state before training; the statistics start from one batch of trials of the initial policy.

        Raises:
            ValueError: `adapt=False` (RL² has no pretrained variant; the MAML trainer's is the baseline).
        """
        if not adapt:
            raise ValueError("the in-context trainer has no pretrained variant: compare with the MAML trainer's")
        params_key, task_key, trials_key = jax.random.split(key, 3)
        params = policy.init(params_key, jnp.zeros((1, context_size(env))))
        tasks = env.sample_tasks(task_key, config.tasks_per_batch)
        keys = jax.random.split(trials_key, config.tasks_per_batch)
        trials = jax.vmap(sample_trials, in_axes=(0, 0, None, None, None))(keys, tasks, params, None, 1)
        obs_stats = merge_stats(RunningMeanStd.create(env.observation_size), trials.obs)
        opt_state = optimizer.init(params)
        state = InContextState(params, opt_state, obs_stats, jnp.zeros((), jnp.int32), hparams, optimizer)
        return jax.tree.map(jnp.array, state)  # every leaf its own buffer: training donates the state

    def train(state: InContextState, key: PRNGKey, num_iterations: int) -> tuple[InContextState, dict]:
        """`num_iterations` (static) PPO iterations in one `lax.scan`; metrics stacked `[num_iterations]`: the mean
        return of each episode of the sampled trials (`episode_<k>_return`), the trial's, the losses, the PPO KL and
        clip fraction of the last minibatch, and `env_steps`."""

        def iteration(state: InContextState, k: PRNGKey):
            task_key, sample_key, shuffle_key = jax.random.split(k, 3)
            tasks = env.sample_tasks(task_key, config.tasks_per_batch)
            keys = jax.random.split(sample_key, config.tasks_per_batch)
            sample = lambda k, task: sample_trials(k, task, state.params, state.obs_stats, config.trials_per_task)
            trajs = jax.vmap(sample)(keys, tasks)  # [E, T, N, ...]
            merged = jax.tree.map(
                lambda x: jnp.swapaxes(x, 0, 1).reshape(T, -1, *x.shape[3:]), trajs._replace(initial_carry=None)
            )  # [T, E x N, ...]
            carry = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), trajs.initial_carry)
            batch = prepare(state.params, merged._replace(initial_carry=carry), state.obs_stats)
            returns = jax.vmap(lambda t: episode_returns(t, M).mean(axis=0))(trajs)  # [E, M]

            def epoch(carry, epoch_key):
                params, opt_state = carry
                order = jax.random.permutation(epoch_key, config.tasks_per_batch * config.trials_per_task)
                split = lambda x, axis: jnp.stack(jnp.split(jnp.take(x, order, axis=axis), config.minibatches, axis))
                shares = TrialBatch(
                    jax.tree.map(lambda x: split(x, 1), batch.policy._replace(initial_carry=None))._replace(
                        initial_carry=jax.tree.map(lambda x: split(x, 0), batch.policy.initial_carry)
                    ),
                    split(batch.returns, 1),
                    split(batch.valid, 1),
                )

                def minibatch(carry, share):
                    params, opt_state = carry
                    (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, share)
                    updates, opt_state = state.optimizer.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), metrics

                return jax.lax.scan(minibatch, (params, opt_state), shares)

            opt_state = with_outer_lr(state, state.hparams.outer_lr).opt_state
            epoch_keys = jax.random.split(shuffle_key, config.ppo_epochs)
            (params, opt_state), metrics = jax.lax.scan(epoch, (state.params, opt_state), epoch_keys)
            metrics = jax.tree.map(lambda m: m[-1, -1], metrics)
            metrics.update({f"episode_{k + 1}_return": jnp.mean(returns[:, k]) for k in range(M)})
            metrics.update(
                trial_return=jnp.mean(jnp.sum(returns, axis=1)),
                env_steps=jnp.asarray(config.env_steps_per_iteration, jnp.float32),
            )
            state = state.replace(
                params=params,
                opt_state=opt_state,
                obs_stats=merge_stats(state.obs_stats, trajs.obs),
                iteration=state.iteration + 1,
            )
            return state, metrics

        return jax.lax.scan(iteration, state, jax.random.split(key, num_iterations))

    def evaluate(state: InContextState, key: PRNGKey, tasks: Any, mode: str = "standard") -> tuple[Array, dict]:
        """Fresh trials of the frozen policy on `tasks` (leading axis E, each with its own key), no gradient step:
        `(returns [E, M], extras)`, the mean return of episode 1..M over `eval_trials` trials per task; extras hold
        the env's per-step metrics (e.g. `task_metric`) averaged over each episode's steps, `[E, M]`. `mode` exists
        for the trainer protocol: in-context adaptation has only `standard` (no adapter)."""
        if mode != "standard":
            raise ValueError(f"in-context adaptation takes no gradient step, so it has no {mode!r} mode")

        def one(k, task):
            traj = sample_trials(k, task, state.params, state.obs_stats, eval_trials)
            metrics = {name: episode_means(v, traj.done, M) for name, v in traj.metrics.items()}
            return episode_returns(traj, M).mean(axis=0), metrics

        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        return jax.vmap(one)(keys, tasks)

    functions = (init, train, evaluate)
    programs = (at_precision(fn, config.matmul_precision) for fn in functions)
    init, train, evaluate = programs
    parts = InContextParts(env, policy, sample_trials, prepare, loss, loss_of_outputs)
    return Trainer(config, init, train, evaluate, None, None, parts)
