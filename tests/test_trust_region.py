"""The TRPO step: the natural-gradient direction, the KL bound and the line search, against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm_jax.meta.trust_region import TrustRegionConfig, conjugate_gradient, trust_region_step

FISHER = jnp.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
START = {"w": jnp.array([0.3, -0.2, 0.1])}


def quadratic_kl(reference, params):
    d = params["w"] - reference["w"]
    return 0.5 * d @ FISHER @ d


identity = lambda params: params


MIXING = jnp.array([[1.0, 0.5, 0.0], [0.0, 2.0, -1.0], [0.3, 0.0, 1.0]])


@pytest.mark.parametrize("mixing", [jnp.eye(3), MIXING], ids=["plain", "through-outputs"])
def test_step_follows_the_natural_gradient_to_the_kl_bound(mixing):
    """Loss and KL read `outputs = M w` (MAML: the adapted params): the Fisher on `w` is `Mᵀ F M`, the gradient
    `Mᵀ g`, and the step is `√(2 δ / (dᵀ Mᵀ F M d)) d` along the natural direction `d = −(Mᵀ F M)⁻¹ Mᵀ g`."""
    gradient = jnp.array([1.0, -2.0, 0.5])
    outputs_fn = lambda p: {"w": mixing @ p["w"]}
    loss = lambda out: (gradient @ out["w"], {"aux": jnp.ones(())})
    config = TrustRegionConfig(max_kl=0.01, cg_damping=0.0)
    params, metrics = jax.jit(lambda: trust_region_step(outputs_fn, loss, quadratic_kl, START, config))()
    m = np.asarray(mixing)
    fisher = m.T @ np.asarray(FISHER) @ m
    natural = -np.linalg.solve(fisher, m.T @ np.asarray(gradient))
    full = natural * np.sqrt(2 * 0.01 / (natural @ fisher @ natural))  # its quadratic KL is max_kl
    ratio = 0.8 ** float(metrics["outer_backtracks"])  # KL = max_kl up to rounding may cost one backtrack
    np.testing.assert_allclose(params["w"], START["w"] + ratio * full, rtol=1e-4, atol=1e-6)
    assert float(metrics["outer_backtracks"]) <= 1 and float(metrics["outer_step_accepted"]) == 1.0
    np.testing.assert_allclose(metrics["outer_kl"], quadratic_kl(outputs_fn(START), outputs_fn(params)), rtol=1e-5)
    assert 0.8**2 * 0.01 * 0.999 < float(metrics["outer_kl"]) <= 0.01
    assert float(metrics["meta_loss"]) == pytest.approx(float(gradient @ (mixing @ START["w"])))
    assert float(metrics["aux"]) == 1.0  # the loss's aux at the starting params comes back


def test_one_cg_iteration_steps_along_the_gradient_to_the_kl_bound():
    """Truncated CG: after one iteration the direction is the steepest descent, `−g`, and the step is scaled so
    that its quadratic KL `½ sᵀ F s` is max_kl (the curvature CG reports, `xᵀ b`, equals `xᵀ F x`)."""
    gradient = jnp.array([1.0, -2.0, 0.5])
    loss = lambda p: (gradient @ p["w"], {})
    config = TrustRegionConfig(max_kl=0.01, cg_iters=1, cg_damping=0.0)
    params, metrics = jax.jit(lambda: trust_region_step(identity, loss, quadratic_kl, START, config))()
    g = np.asarray(gradient)
    full = -g * np.sqrt(2 * 0.01 / (g @ np.asarray(FISHER) @ g))
    ratio = 0.8 ** float(metrics["outer_backtracks"])
    np.testing.assert_allclose(params["w"], START["w"] + ratio * full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("iters", [1, 2, 3, 10])
def test_conjugate_gradient_matches_the_krylov_minimiser(iters):
    """CG from zero after k iterations minimises `½ xᵀ A x − bᵀ x` over the Krylov space {b, Ab, …, A^(k−1) b}
    (exact after 3 in 3 dimensions), and `xᵀ A x = xᵀ b` at every iterate."""
    b = {"w": jnp.array([1.0, -2.0, 0.5])}
    matvec = lambda v: {"w": FISHER @ v["w"]}
    x = jax.jit(lambda: conjugate_gradient(matvec, b, iters))()["w"]
    a, bb = np.asarray(FISHER, np.float64), np.asarray(b["w"], np.float64)
    basis = np.stack([np.linalg.matrix_power(a, i) @ bb for i in range(min(iters, 3))], axis=1)
    expected = basis @ np.linalg.solve(basis.T @ a @ basis, basis.T @ bb)
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-6)
    assert float(x @ FISHER @ x) == pytest.approx(float(x @ b["w"]), rel=1e-5)


def test_params_stay_when_no_candidate_improves_the_loss():
    loss = lambda p: (jnp.sum((p["w"] - START["w"]) ** 2), {})  # already at its minimum: the gradient is zero
    params, metrics = jax.jit(lambda: trust_region_step(identity, loss, quadratic_kl, START, TrustRegionConfig()))()
    np.testing.assert_array_equal(params["w"], START["w"])
    assert float(metrics["outer_step_accepted"]) == 0.0 and float(metrics["outer_kl"]) == 0.0


def test_a_kl_that_grows_faster_than_its_quadratic_model_backtracks():
    steep_kl = lambda r, p: quadratic_kl(r, p) * (1.0 + 1e3 * quadratic_kl(r, p))  # same Hessian, larger far away
    loss = lambda p: (jnp.array([1.0, -2.0, 0.5]) @ p["w"], {})
    config = TrustRegionConfig(max_kl=0.01)
    params, metrics = jax.jit(lambda: trust_region_step(identity, loss, steep_kl, START, config))()
    assert float(metrics["outer_backtracks"]) >= 2 and float(metrics["outer_step_accepted"]) == 1.0
    assert float(steep_kl(START, params)) <= 0.01


def test_bad_config_is_one_line_error():
    with pytest.raises(ValueError, match="max_kl > 0"):
        TrustRegionConfig(max_kl=0.0)
