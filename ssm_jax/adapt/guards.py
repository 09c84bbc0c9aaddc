"""Stability guards for test-time adaptation that optax does not provide as such.

Gradient clipping and the optimizers come from optax (`clip_by_global_norm`, `adam`, `sgd`); the EMA anchor
uses `optax.incremental_update`. Written here: the per-parameter step bound, the trust-region projection
and the non-finite check.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ssm_jax.types import Array, PyTree


def bound_relative_step(max_step_scale: float) -> optax.GradientTransformation:
    """Scales each leaf's update so that `‖Δp‖ ≤ max_step_scale · ‖p‖` (needs `params` in `update`)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("bound_relative_step needs params")

        def bound(u, p):
            limit = max_step_scale * jnp.linalg.norm(p)
            norm = jnp.linalg.norm(u)
            return u * jnp.minimum(1.0, limit / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))

        return jax.tree.map(bound, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def project_to_ball(params: PyTree, center: PyTree, radius: float | Array) -> PyTree:
    """Projects `params` onto the L2 ball (global norm over all leaves) of `radius` around `center`."""
    delta = jax.tree.map(jnp.subtract, params, center)
    norm = optax.tree.norm(delta)
    scale = jnp.minimum(1.0, radius / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
    return jax.tree.map(lambda c, d: c + scale * d, center, delta)


def all_finite(*trees: PyTree) -> Array:
    """True iff every leaf of every tree is finite."""
    leaves = [leaf for tree in trees for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
