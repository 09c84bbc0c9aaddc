"""TRPO's trust-region step (Schulman et al. 2015), MAML-RL's outer optimizer, as one pure jittable function.

    params, metrics = trust_region_step(outputs_fn, loss_fn, kl_fn, params, TrustRegionConfig(max_kl=0.01))

The natural-gradient direction `F⁻¹(−∇L)` comes from `cg_iters` conjugate-gradient iterations on Fisher-vector
products, each the exact Hessian-vector product of the KL at `params` (MAML-RL approximates it with finite
differences). The step is scaled so that its quadratic KL estimate equals `max_kl`, then shrunk by
`backtrack_ratio` until the loss improves and the exact KL is within `max_kl`; if no candidate of `max_backtracks`
does, the params stay (rllab's `ConjugateGradientOptimizer`, with its defaults). The line search stops at the
first accepted candidate (a `lax.while_loop`), so a step that fits costs one extra evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from ssm_jax.config.io import register_config
from ssm_jax.types import Array, Params, PyTree


@register_config
@dataclasses.dataclass(frozen=True)
class TrustRegionConfig:
    """`max_kl`: the trust region's radius in nats; the rest as rllab's `ConjugateGradientOptimizer`."""

    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15

    def __post_init__(self):
        if not self.max_kl > 0 or self.cg_iters < 1 or self.max_backtracks < 1 or not 0 < self.backtrack_ratio < 1:
            raise ValueError(
                f"TrustRegionConfig needs max_kl > 0, cg_iters >= 1, max_backtracks >= 1 and 0 < backtrack_ratio < 1, "
                f"got {self.max_kl}, {self.cg_iters}, {self.max_backtracks}, {self.backtrack_ratio}"
            )


def trust_region_step(
    outputs_fn: Callable[[Params], PyTree],
    loss_fn: Callable[[PyTree], tuple[Array, dict]],
    kl_fn: Callable[[PyTree, PyTree], Array],
    params: Params,
    config: TrustRegionConfig,
) -> tuple[Params, dict]:
    """One TRPO step on `loss_fn(outputs_fn(params)) -> (loss, aux)` under `kl_fn(reference, outputs) <= max_kl`,
    where `reference = outputs_fn(params)` and `kl_fn` is zero (its minimum) at `outputs == reference`. `outputs_fn`
    maps the params to what the loss and the KL read (MAML: each task's adapted params; the identity for plain TRPO).

    The Fisher-vector products are `Jᵀ H J v` with `J` the Jacobian of `outputs_fn` (linearised once) and `H` the
    Hessian of `kl_fn` at the reference: the exact Hessian of the KL as a function of `params`, since the KL's
    gradient vanishes at its minimum. Returns the new params and metrics: `aux` at `params`, `meta_loss` (the loss
    before the step), `meta_grad_norm`, `outer_kl` (the exact KL of the accepted step, 0 if none was accepted),
    `outer_step_accepted` (0 or 1) and `outer_backtracks`."""
    reference, jacobian = jax.linearize(outputs_fn, params)
    jacobian_transpose = jax.linear_transpose(jacobian, params)
    (loss, aux), output_grads = jax.value_and_grad(loss_fn, has_aux=True)(reference)
    (grads,) = jacobian_transpose(output_grads)
    kl_grad = jax.grad(lambda outputs: kl_fn(reference, outputs))

    def fisher_vector_product(v: Params) -> Params:
        (hv,) = jacobian_transpose(jax.jvp(kl_grad, (reference,), (jacobian(v),))[1])
        return jax.tree.map(lambda h, x: h + config.cg_damping * x, hv, v)

    descent = jax.tree.map(jnp.negative, grads)
    direction = conjugate_gradient(fisher_vector_product, descent, config.cg_iters)
    curvature = optax.tree.vdot(direction, descent)  # = dᵀ F d for CG's iterates from zero (see below)
    full_step = optax.tree.scale(jnp.sqrt(2.0 * config.max_kl / (curvature + 1e-8)), direction)

    def candidate(backtracks: Array) -> Params:
        ratio = config.backtrack_ratio ** backtracks.astype(jnp.float32)
        return jax.tree.map(lambda p, s: p + ratio * s, params, full_step)

    def try_next(carry):  # rllab's line search: the first shrink that lowers the loss within the bound
        backtracks, _, _ = carry
        outputs = outputs_fn(candidate(backtracks))
        new_loss, kl = loss_fn(outputs)[0], kl_fn(reference, outputs)
        return backtracks + 1, jnp.isfinite(new_loss) & (new_loss < loss) & (kl <= config.max_kl), kl

    searching = lambda carry: (carry[0] < config.max_backtracks) & ~carry[1]
    tries, accepted, kl = jax.lax.while_loop(searching, try_next, (jnp.zeros((), jnp.int32), False, jnp.zeros(())))
    new_params = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), candidate(tries - 1), params)
    metrics = {
        **aux,
        "meta_loss": loss,
        "meta_grad_norm": optax.tree.norm(grads),
        "outer_kl": jnp.where(accepted, kl, 0.0),
        "outer_step_accepted": accepted.astype(jnp.float32),
        "outer_backtracks": (tries - 1).astype(jnp.float32),
    }
    return new_params, metrics


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree], b: PyTree, iters: int, residual_tol: float = 1e-10
) -> PyTree:
    """At most `iters` conjugate-gradient iterations on `matvec(x) = b` from `x = 0`, stopping early once the
    squared residual norm is below `residual_tol` (rllab's `cg`). Each iteration costs one `matvec`: unlike
    `jax.scipy.sparse.linalg.cg` it spends none on the residual of the zero start, which matters when `matvec` is
    a Fisher-vector product through a second-order inner step. Every iterate `x` satisfies `xᵀ A x = xᵀ b` (its
    residual is orthogonal to the Krylov space that holds it), so callers get the curvature along `x` for free."""

    def body(carry):
        i, x, r, p, rr = carry
        ap = matvec(p)
        alpha = rr / optax.tree.vdot(p, ap)
        x, r = optax.tree.add_scale(x, alpha, p), optax.tree.add_scale(r, -alpha, ap)
        rr_next = optax.tree.vdot(r, r)
        return i + 1, x, r, optax.tree.add_scale(r, rr_next / rr, p), rr_next

    searching = lambda carry: (carry[0] < iters) & (carry[4] >= residual_tol)
    start = (jnp.zeros((), jnp.int32), optax.tree.zeros_like(b), b, b, optax.tree.vdot(b, b))
    return jax.lax.while_loop(searching, body, start)[1]
