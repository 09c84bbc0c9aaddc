"""Stability guards for test-time adaptation that optax does not provide as such.

Gradient clipping, the optimizers and the non-finite skip come from optax (`clip_by_global_norm`, `scale_by_adam`,
`apply_if_finite`); the EMA anchor uses `optax.incremental_update`. Written here: the traced (possibly
per-parameter) learning-rate scale, the per-parameter step bound and the trust-region projection.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ssm_jax.types import Array, PyTree, per_parameter


def scale_by_traced_learning_rate() -> optax.GradientTransformationExtraArgs:
    """`u ↦ −learning_rate · u`, with `learning_rate` passed to `update` as an extra argument: a traced scalar or,
    for Meta-SGD, a params-shaped tree of per-parameter rates (optax's `scale_by_learning_rate` takes one float)."""

    def update_fn(updates, state, params=None, *, learning_rate, **extra_args):
        del params, extra_args
        rates = per_parameter(learning_rate, updates)
        return jax.tree.map(lambda u, lr: -lr * u, updates, rates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


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
