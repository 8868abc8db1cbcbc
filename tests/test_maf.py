"""MADE masks, BatchNorm, Reverse and the Cranmer MAF stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flow_checks import (
    check_log_det,
    check_normalised_2d,
    check_round_trip,
    check_sample_mean_matches_quadrature,
    check_samples_match_density,
)

from jaxstars.flows import MADE, BatchNorm, Flow, Permute, maf
from jaxstars.flows.base import from_config


def perturb(params, key, scale=0.3):
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    )


def trained_like_bn(params):
    """Give BatchNorm running statistics non-trivial positive values (var must stay positive)."""

    def fix(path, leaf):
        name = str(getattr(path[-1], "key", ""))
        return jnp.abs(leaf) + 0.5 if name == "running_var" else leaf

    return jax.tree_util.tree_map_with_path(fix, params)


LAYERS = {
    "made": lambda c: MADE(3, c, hidden=(16, 16)),
    "made_tanh": lambda c: MADE(3, c, hidden=(8,), activation="tanh"),
    "batchnorm": lambda c: BatchNorm(3, c),
    "reverse": lambda c: Permute.reverse(3, c),
    "maf_stack": lambda c: maf(3, 3, 16, c),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("context_dim", [0, 2])
def test_round_trip_and_log_det(name, context_dim):
    bij = LAYERS[name](context_dim)
    # A stack of strongly perturbed blocks amplifies float32 round-off through exp(alpha): perturb it less.
    scale = 0.1 if name == "maf_stack" else 0.3
    params = trained_like_bn(perturb(bij.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), scale))
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    ctx = jax.random.normal(jax.random.PRNGKey(3), (5, context_dim)) if context_dim else None
    check_round_trip(bij, params, x, ctx)
    check_log_det(bij, params, x, ctx)


def test_made_is_autoregressive():
    """d mu_i / d x_j and d alpha_i / d x_j vanish for j >= i (the mask property), but not for all j < i."""
    made = MADE(4, 1, hidden=(32, 32))
    params = perturb(made.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (4,))
    c = jnp.ones((1,))
    for out in range(2):
        jac = jax.jacfwd(lambda v: made.shift_and_log_scale(params, v[None], c[None])[out][0])(x)
        upper = np.triu(np.asarray(jac))
        assert np.all(upper == 0.0)
        assert np.all(np.abs(np.asarray(jac)[np.tril_indices(4, -1)]) > 0)


def test_made_jacobian_triangular_with_diag_matching_log_diag():
    made = MADE(3, 0, hidden=(16, 16))
    params = perturb(made.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (3,))
    jac = jax.jacfwd(lambda v: made.inverse(params, v[None])[0])(x)
    np.testing.assert_allclose(np.triu(np.asarray(jac), 1), 0.0)
    _, log_diag = made.inverse_and_log_diag(params, x[None])
    np.testing.assert_allclose(np.log(np.abs(np.diag(np.asarray(jac)))), np.asarray(log_diag[0]), rtol=1e-5)


def test_batchnorm_train_mode_uses_batch_statistics_and_updates_running_stats():
    bn = BatchNorm(2, momentum=0.5)
    params = bn.init(jax.random.PRNGKey(0))
    x = jnp.array([[1.0, 10.0], [3.0, 14.0], [5.0, 18.0]])
    z, log_det, new = bn.inverse_and_log_det_train(params, x)
    np.testing.assert_allclose(np.asarray(z.mean(0)), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(z.var(0)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(new["running_mean"]), 0.5 * np.array([3.0, 14.0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new["running_var"]), 0.5 + 0.5 * np.asarray(x.var(0)), rtol=1e-6)
    expected = -0.5 * np.log(np.asarray(x.var(0)) + bn.eps).sum()
    np.testing.assert_allclose(np.asarray(log_det), expected, rtol=1e-5)
    # evaluation mode ignores the batch: uses running statistics
    z_eval, _ = bn.inverse_and_log_det(new, x[:1])
    np.testing.assert_allclose(
        np.asarray(z_eval[0]), (np.asarray(x[0]) - new["running_mean"]) / np.sqrt(new["running_var"] + bn.eps), rtol=1e-5
    )


@pytest.mark.parametrize("context", [None, jnp.array([0.7])])
def test_maf_density_normalised_and_sampling_consistent(context):
    flow = Flow(maf(2, 3, 16, 0 if context is None else 1))
    params = trained_like_bn(perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.2))
    check_normalised_2d(flow, params, context)
    check_samples_match_density(flow, params, jax.random.PRNGKey(2), context)
    check_sample_mean_matches_quadrature(flow, params, jax.random.PRNGKey(3), context)


def test_paper_sized_models_constructible():
    """Cranmer's real model (35 blocks × 500) and simulation model (8 × 256): build, count parameters, evaluate."""
    for n_blocks, hidden in [(35, 500), (8, 256)]:
        flow = Flow(maf(3, n_blocks, hidden))
        params = jax.eval_shape(flow.init, jax.random.PRNGKey(0))  # shapes only: no allocation
        sizes = jax.tree_util.tree_map(lambda a: int(np.prod(a.shape)), params)
        n_made = 3 * hidden + hidden + hidden * hidden + hidden + hidden * 6 + 6  # weights + biases
        n_bn = 4 * 3
        assert sum(jax.tree_util.tree_leaves(sizes)) == n_blocks * (n_made + n_bn)
        assert jax.eval_shape(flow.log_prob, params, jnp.zeros((2, 3))).shape == (2,)
    small = Flow(maf(3, 8, 256))
    lp = small.log_prob(small.init(jax.random.PRNGKey(0)), jnp.zeros((2, 3)))
    assert np.all(np.isfinite(np.asarray(lp)))


def test_spec_hashable_and_config_round_trip():
    spec = maf(3, 4, 32, 2, batch_norm=True)
    assert hash(spec) == hash(maf(3, 4, 32, 2, batch_norm=True))
    assert from_config(spec.config()) == spec


def test_marginal_over_last_dimension_matches_numerical_integration():
    """Cranmer §5: exact marginal of leading dims for a flow triangular in the data ordering."""
    flow = Flow(maf(3, 3, 16, reverse=False))
    params = trained_like_bn(perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.2))
    x12 = jnp.array([[0.3, -0.5], [1.2, 0.4], [-0.8, 1.5]])
    grid = np.linspace(-12, 12, 4001)
    pts = jnp.concatenate([jnp.repeat(x12[:, None, :], grid.size, 1), jnp.broadcast_to(grid[None, :, None], (3, grid.size, 1))], -1)
    joint = np.exp(np.asarray(flow.log_prob(params, pts), np.float64))
    numeric = np.log(np.trapezoid(joint, grid, axis=1))
    exact = np.asarray(flow.marginal_log_prob(params, x12))
    np.testing.assert_allclose(exact, numeric, atol=2e-3)
    # and over the last two dimensions: leading 1-D marginal against 2-D quadrature
    g = np.linspace(-10, 10, 801)
    yy, zz = np.meshgrid(g, g, indexing="ij")
    pts2 = jnp.asarray(np.stack([np.full(yy.size, 0.3), yy.ravel(), zz.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(flow.log_prob(params, pts2), np.float64)).reshape(g.size, g.size)
    numeric1 = np.log(np.trapezoid(np.trapezoid(dens, g, axis=1), g))
    np.testing.assert_allclose(float(flow.marginal_log_prob(params, jnp.array([[0.3]]))[0]), numeric1, atol=5e-3)


def test_marginal_refuses_non_triangular_flow():
    flow = Flow(maf(3, 2, 8, reverse=True))
    with pytest.raises(TypeError, match="triangular"):
        flow.marginal_log_prob(flow.init(jax.random.PRNGKey(0)), jnp.zeros((1, 2)))


def test_bad_inputs_raise_clear_errors():
    flow = Flow(maf(3, 2, 8, context_dim=2))
    params = flow.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="last dimension 3"):
        flow.log_prob(params, jnp.zeros((4, 2)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="conditional"):
        flow.log_prob(params, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(params, jnp.zeros((4, 3)), jnp.zeros((4, 5)))


def test_batch_shapes_broadcast():
    flow = Flow(maf(3, 2, 8, context_dim=1))
    params = flow.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 5, 3))
    c = jnp.linspace(0, 1, 5)[:, None]
    lp = flow.log_prob(params, x, c)
    assert lp.shape == (4, 5)
    np.testing.assert_allclose(np.asarray(lp[2, 3]), np.asarray(flow.log_prob(params, x[2, 3], c[3])), rtol=1e-5)
    # vmap and jit over a per-point function agree with the batched call
    single = jax.jit(jax.vmap(lambda xi, ci: flow.log_prob(params, xi, ci)))
    np.testing.assert_allclose(np.asarray(single(x[0], c)), np.asarray(lp[0]), rtol=1e-5)
