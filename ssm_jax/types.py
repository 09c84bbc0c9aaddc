"""Shared type aliases and small helpers used across the package.

The glossary of axis names every docstring uses (each letter one meaning):
    R: runs (a sweep's seeds x hyperparameter values, vmapped)
    E: tasks (a meta-batch, or held-out tasks)
    N: envs run in parallel on one task (trajectories per round)
    T: time steps (a horizon)
    K: adaptation rounds (`adapt_rounds`)
    M: episodes of an RL² trial (`episodes_per_trial`)
    W: window (consecutive steps of one trajectory as one item: buffer items, world-model items, the online
       adapter's recent steps)
    S: the transformer's attention span (`ModelConfig.attention_span`)
    B: items of a minibatch (sampled from the buffer)
    D: input features, A: action size, O: output features, P: state size, H: hidden width.
Rollouts are time-major, `[T, N, ...]`; with tasks in front, `[E, T, N, ...]`, and runs in front of that.

The words, one per thing (config fields and flags use them; files written under an older word still load,
`ssm_jax.config.io.RENAMED_FIELDS`):
    adaptation round (`adapt_rounds`, K): one test-time update of a held-out task's params. In RL it samples N
        trajectories with the current params, then takes `steps_per_round` gradient steps on them; in world
        models and regression the support is given, and a round is one gradient step on it.
    inner step (`inner_steps`): a gradient step inside meta-training's inner loop (MAML's adaptation while
        meta-training), as opposed to the adaptation rounds of evaluation.
    meta-batch: the tasks of one meta-iteration, `tasks_per_batch` (E) of them.
    held-out tasks (`eval_tasks` per seed): tasks training never drew, on which evaluation adapts and scores.
    trajectory: one rollout path of one task `[T, ...]`; N of them per task (`trajectories_per_task`,
        `eval_trajectories` in evaluation).
    trial (RL²): M consecutive episodes of one task with the policy's carry kept across them, `[M x horizon, ...]`:
        RL²'s trajectory, counted by `trials_per_task` in training and `eval_trials` in evaluation.
    oracle: a fresh model trained on each held-out task alone (`Trainer.oracle`; `oracle_iterations`): the
        reference above any meta-learned start.
    pretrained: the same program trained without adaptation (`init(..., adapt=False)`; inner lr 0); random init:
        the untrained params.
    seed: a random seed only (`seed`, `num_seeds`: runs). The reference design's five halfcheetah-vel goal
        velocities are `goals="reference"`.
    SSM-MetaRL: the reference design (SSM-MetaRL-Unified) this library implements.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
Params = Any
Carry = Any
Array = jax.Array
PRNGKey = jax.Array


def params_dtype(params: PyTree) -> jnp.dtype:
    """The floating dtype the params compute in (the widest float among their leaves)."""
    floats = [leaf.dtype for leaf in jax.tree.leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.dtype(jnp.float32)


def cast_floating(tree: PyTree, dtype: jnp.dtype) -> PyTree:
    """Casts the real and complex floating leaves of `tree` to `dtype` (complex keeps complex); ints untouched."""
    complex_dtype = jnp.result_type(dtype, jnp.complex64)

    def cast(leaf):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            return leaf.astype(complex_dtype)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)


def tree_where(condition: Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise `jnp.where` with a scalar (or leading-axis broadcastable) condition."""

    def select(a, b):
        cond = jnp.reshape(condition, jnp.shape(condition) + (1,) * (jnp.ndim(a) - jnp.ndim(condition)))
        return jnp.where(cond, a, b)

    return jax.tree.map(select, on_true, on_false)


def per_parameter(value: PyTree, params: PyTree) -> PyTree:
    """A params-shaped tree from a scalar `value`, or `value` itself when it is already params-shaped (Meta-SGD's
    per-parameter learning rates)."""
    if jax.tree.structure(value) == jax.tree.structure(params):
        return value
    return jax.tree.map(lambda _: jnp.asarray(value), params)
