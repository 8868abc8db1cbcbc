"""Tests of the coupling layers (RealNVP affine, rational-quadratic spline) and their builders."""

from __future__ import annotations

import functools
import json

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

from jaxstars.flows import Flow
from jaxstars.flows.base import from_config
from jaxstars.flows.coupling import AffineCoupling, SplineCoupling, realnvp, spline_flow

HIDDEN = (16, 16)
CTX_DIM = 2
# Bounded hidden units keep the perturbed conditioners' outputs moderate for inputs far from the origin; with
# relu, random weights can produce splines so steep that float32 inversion is ill-conditioned (not a bug).
ACT = "tanh"
# A tighter log-scale bound than the default 3 keeps stacked perturbed RealNVP layers (whose log-scales saturate)
# from stretching the density beyond the ±8 quadrature box of the normalisation checks.
SCALE_BOUND = 0.5
N_BATCH, N_DENSE = 64, 4000  # batch sizes reused across tests (each new shape costs a compilation)
KINDS = ["affine", "spline", "realnvp", "spline_flow"]


def make(kind, dim, context_dim=0):
    if kind == "affine":
        return AffineCoupling(dim, context_dim, hidden=HIDDEN, activation=ACT, scale_bound=SCALE_BOUND)
    if kind == "spline":
        return SplineCoupling(dim, context_dim, hidden=HIDDEN, activation=ACT, n_bins=6, bound=4.0)
    if kind == "realnvp":
        return realnvp(dim, 3, HIDDEN, context_dim, activation=ACT, scale_bound=SCALE_BOUND)
    return spline_flow(
        dim, n_layers=3, hidden=HIDDEN, n_bins=6, bound=4.0, context_dim=context_dim, activation=ACT
    )


class Jitted:
    """Stand-in for a bijector with jit-compiled methods.

    The generic checks call methods eagerly, which is slow (eager ``lax.scan`` recompiles on every call);
    :func:`jitted` caches one per spec so tests share compilations.
    """

    def __init__(self, bij):
        self.dim, self.context_dim = bij.dim, bij.context_dim
        self.inverse_and_log_det = jax.jit(bij.inverse_and_log_det)
        self.forward_and_log_det = jax.jit(bij.forward_and_log_det)
        self.inverse_and_log_diag = jax.jit(bij.inverse_and_log_diag)

    def inverse(self, params, x, context=None):
        return self.inverse_and_log_det(params, x, context)[0]

    def forward(self, params, z, context=None):
        return self.forward_and_log_det(params, z, context)[0]


@functools.cache
def jitted(bij):
    return Jitted(bij)


def perturb(params, seed, scale=0.3):
    """Add Gaussian noise to every parameter so the map is far from its near-identity initialisation.

    The noise comes from NumPy: eager JAX random draws for every parameter shape would each need a compilation.
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda v: v + jnp.asarray(scale * rng.standard_normal(v.shape), v.dtype), params)


# Stacks of perturbed splines can be so steep (dx/dz up to ~1e5) that float32 round trips lose 1e-3 or more; a
# smaller perturbation keeps spline_flow well conditioned while still moving points by O(1).
SCALE = {"spline_flow": 0.2}


def setup(kind, dim, context_dim, seed=0):
    bij = make(kind, dim, context_dim)
    return bij, perturb(bij.init(jax.random.PRNGKey(seed)), seed + 1, SCALE.get(kind, 0.3))


def data(n, dim, context_dim, seed=1, scale=1.5):
    """Test inputs (NumPy draws, converted to float32 JAX arrays) and a matching context, or None."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(scale * rng.standard_normal((n, dim)), jnp.float32)
    ctx = jnp.asarray(rng.standard_normal((n, context_dim)), jnp.float32) if context_dim else None
    return x, ctx


def pad_rows(rows, n):
    """``rows`` then standard-normal rows up to ``n`` (batch sizes shared between tests share compilations)."""
    return jnp.concatenate([rows, data(n - rows.shape[0], rows.shape[1], 0, seed=7, scale=1.0)[0]])


# -- generic bijector checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_dim", [0, CTX_DIM])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_and_log_det(kind, context_dim):
    """dim = 3: the split (1 | 2) is uneven, so the builders' Reverse matters.  dim = 2 is covered below."""
    bij, params = setup(kind, 3, context_dim)
    fast = jitted(bij)
    x, ctx = data(N_BATCH, 3, context_dim)
    # Not vacuous: the perturbed map moves points substantially.
    assert float(jnp.mean(jnp.abs(fast.inverse(params, x, ctx) - x))) > 0.1
    check_round_trip(fast, params, x, ctx)
    check_log_det(fast, params, x[:2], None if ctx is None else ctx[:2])


@pytest.mark.parametrize("context_dim", [0, CTX_DIM])
@pytest.mark.parametrize("kind", KINDS)
def test_density_2d(kind, context_dim):
    bij, params = setup(kind, 2, context_dim)
    fast = jitted(bij)
    flow = Flow(fast)
    ctx = jnp.array([0.7, -1.2]) if context_dim else None
    n = N_DENSE
    x, _ = data(n, 2, 0)
    ctx_n = None if ctx is None else jnp.broadcast_to(ctx, (n, CTX_DIM))
    assert float(jnp.mean(jnp.abs(fast.inverse(params, x, ctx_n) - x))) > 0.1
    check_round_trip(fast, params, x, ctx_n)
    check_normalised_2d(flow, params, ctx)
    check_samples_match_density(flow, params, jax.random.PRNGKey(5), ctx, n=n)
    check_sample_mean_matches_quadrature(flow, params, jax.random.PRNGKey(6), ctx)


@pytest.mark.parametrize("kind", KINDS)
def test_context_is_used_and_validated(kind):
    bij, params = setup(kind, 3, CTX_DIM)
    fast = jitted(bij)
    x, ctx = data(N_BATCH, 3, CTX_DIM)
    z1 = fast.inverse(params, x, ctx)
    z2 = fast.inverse(params, x, ctx + 1.0)
    assert float(jnp.max(jnp.abs(z1 - z2))) > 1e-2
    with pytest.raises(ValueError, match="context"):
        bij.inverse(params, x, None)
    with pytest.raises(ValueError, match="context"):
        bij.forward(params, x, ctx[:, :1])
    with pytest.raises(ValueError, match="context"):
        make(kind, 3).forward(params, x, ctx)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_coupling_is_lower_triangular(kind):
    """dz/dx is lower triangular with the identity on the first ``split`` rows; log_diag matches its diagonal."""
    bij, params = setup(kind, 4, 0)
    x, _ = data(3, 4, 0)
    _, log_diag = bij.inverse_and_log_diag(params, x)
    jacs = jax.jit(jax.vmap(jax.jacfwd(lambda xi: bij.inverse(params, xi[None])[0])))(x)
    for jac, ld in zip(np.asarray(jacs), np.asarray(log_diag)):
        np.testing.assert_allclose(np.triu(jac, 1), 0.0, atol=1e-7)
        np.testing.assert_allclose(jac[:2, :2], np.eye(2), atol=1e-7)
        assert np.abs(jac[2:, :2]).max() > 1e-3  # the conditioner really depends on x_a
        np.testing.assert_allclose(ld, np.log(np.diag(jac)), atol=1e-4, rtol=1e-4)


# -- spline-specific ----------------------------------------------------------------------------------------------


def test_spline_tails_identity_finite_invertible():
    bij, params = setup("spline", 2, 0)
    bound, fast = bij.bound, jitted(bij)
    rows = jnp.array(
        [[0.3, 50.0], [-1.0, -50.0], [2.0, 1e3], [1e3, -1e3], [-50.0, 1e3], [-1e3, 3.9], [50.0, 0.5], [0.1, 1.0]]
    )
    x = pad_rows(rows, N_DENSE)
    z, log_det = fast.inverse_and_log_det(params, x)
    assert np.all(np.isfinite(np.asarray(z))) and np.all(np.isfinite(np.asarray(log_det)))
    tails = np.abs(np.asarray(x[:, 1])) > bound
    assert tails[:5].all() and tails.sum() >= 5 and not tails[5:8].any()
    # Exactly the identity (and zero log-det) outside [-B, B] on the transformed coordinate ...
    np.testing.assert_array_equal(np.asarray(z)[tails], np.asarray(x)[tails])
    np.testing.assert_array_equal(np.asarray(log_det)[tails], 0.0)
    # ... but not inside, where the spline acts.
    assert float(jnp.mean(jnp.abs(z - x)[~tails, 1])) > 0.1
    x_back, log_det_fwd = fast.forward_and_log_det(params, z)
    np.testing.assert_array_equal(np.asarray(x_back)[tails], np.asarray(x)[tails])
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=1e-4)
    np.testing.assert_allclose(np.asarray(log_det_fwd), -np.asarray(log_det), atol=1e-4)
    # Gradients with respect to the parameters stay finite at outliers (no NaN leaking through `where`).
    loss = jax.jit(jax.grad(lambda p: jnp.sum(bij.inverse_and_log_det(p, rows)[1] + bij.forward(p, rows).sum())))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(loss(params)))


def test_spline_flow_extreme_inputs():
    bij, params = setup("spline_flow", 3, CTX_DIM)
    fast = jitted(bij)
    rows = jnp.array([[50.0, -50.0, 1e3], [-1e3, 0.2, 50.0], [1e3, 1e3, -1e3], [-50.0, 50.0, -0.3]])
    x, ctx = pad_rows(rows, N_BATCH), data(N_BATCH, 3, CTX_DIM)[1]
    z, log_det = fast.inverse_and_log_det(params, x, ctx)
    assert np.all(np.isfinite(np.asarray(z))) and np.all(np.isfinite(np.asarray(log_det)))
    np.testing.assert_allclose(np.asarray(fast.forward(params, z, ctx)), np.asarray(x), rtol=1e-5, atol=1e-4)


def test_spline_monotone_and_continuous_at_knots():
    bij, params = setup("spline", 2, CTX_DIM, seed=3)
    bound, n_knots, fast = bij.bound, bij.n_bins + 1, jitted(bij)
    x_a, ctx = 0.4, jnp.array([[0.3, -0.5]])
    xk, yk, dk = (np.asarray(a)[0, 0] for a in bij.knots(params, jnp.array([[x_a, 0.0]]), ctx))
    assert xk[0] == -bound and xk[-1] == bound and yk[0] == -bound and yk[-1] == bound
    assert dk[0] == 1.0 and dk[-1] == 1.0
    assert np.all(np.diff(xk) > 0) and np.all(np.diff(yk) > 0) and np.all(dk > 0)
    assert np.std(np.diff(xk)) > 0.1 and np.std(dk) > 0.1  # a genuinely non-uniform spline

    n_grid = N_DENSE - 3 * n_knots
    grid = np.linspace(-7.0, 7.0, n_grid)
    delta = 1e-5
    for apply, knots_in, knots_out, deriv in [
        (fast.inverse_and_log_det, xk, yk, dk),  # data -> latent: x_k -> y_k with slope d_k
        (fast.forward_and_log_det, yk, xk, 1.0 / dk),  # latent -> data: y_k -> x_k with slope 1 / d_k
    ]:
        # One call: a grid across the tails, then points just below, at and just above every knot (incl. ±B).
        v = np.concatenate([grid, knots_in - delta, knots_in, knots_in + delta]).astype(np.float32)
        pts = jnp.stack([jnp.full(v.shape, x_a), jnp.asarray(v)], -1)
        out, log_det = apply(params, pts, jnp.broadcast_to(ctx, (v.size, CTX_DIM)))
        out, slope = np.asarray(out[:, 1]), np.exp(np.asarray(log_det))
        assert np.all(np.diff(out[:n_grid]) > 0)  # strictly increasing
        for j in range(3):
            sl = slice(n_grid + j * n_knots, n_grid + (j + 1) * n_knots)
            # Value continuity: each side lands next to the knot image.
            np.testing.assert_allclose(out[sl], knots_out, atol=1.5 * delta * deriv.max() + 2e-6)
            # Derivative continuity: the slope on both sides of a knot equals the knot derivative.
            np.testing.assert_allclose(slope[sl], deriv, rtol=2e-2)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_zero_conditioner_output_is_identity(kind):
    bij = make(kind, 3, CTX_DIM)
    params = perturb(bij.init(jax.random.PRNGKey(0)), 1)  # noise everywhere, then zero the output layer
    last = params["conditioner"][-1]
    params["conditioner"][-1] = {"w": jnp.zeros_like(last["w"]), "b": jnp.zeros_like(last["b"])}
    x, ctx = data(N_BATCH, 3, CTX_DIM, scale=2.0)
    z, log_det = jitted(bij).inverse_and_log_det(params, x, ctx)
    np.testing.assert_allclose(np.asarray(z), np.asarray(x), atol=2e-6)
    np.testing.assert_allclose(np.asarray(log_det), 0.0, atol=2e-6)


def test_affine_log_scale_is_bounded():
    bij = make("affine", 3, CTX_DIM)
    params = bij.init(jax.random.PRNGKey(0))
    params["conditioner"][-1]["b"] = jnp.full_like(params["conditioner"][-1]["b"], 1e4)
    x, ctx = data(N_BATCH, 3, CTX_DIM)
    z, log_det = jitted(bij).inverse_and_log_det(params, x, ctx)
    assert np.all(np.isfinite(np.asarray(z)))
    # Two transformed coordinates, each with log-scale saturated at the bound.
    np.testing.assert_allclose(np.asarray(log_det), -2 * bij.scale_bound, atol=1e-5)


# -- specs --------------------------------------------------------------------------------------------------------

SPECS = [
    AffineCoupling(5, 2, split=3, hidden=(8,), activation="tanh", scale_bound=2.0),
    SplineCoupling(4, hidden=(8, 4), n_bins=5, bound=3.0, min_derivative=1e-2),
    realnvp(3, n_layers=2, hidden=(8,), context_dim=1),
    spline_flow(4, n_layers=2, hidden=(8,), n_bins=4, bound=6.0),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: type(s).__name__)
def test_config_round_trip(spec):
    config = json.loads(json.dumps(spec.config()))
    rebuilt = from_config(config)
    assert rebuilt == spec and hash(rebuilt) == hash(spec)
    assert rebuilt.config() == spec.config()


def test_split_defaults_and_validation():
    assert AffineCoupling(5).split == 2 and SplineCoupling(2).split == 1
    assert AffineCoupling(5) == AffineCoupling(5, split=2)
    for bad in [
        lambda: AffineCoupling(1),
        lambda: SplineCoupling(1),
        lambda: realnvp(1),
        lambda: spline_flow(1),
        lambda: AffineCoupling(3, split=0),
        lambda: SplineCoupling(3, split=3),
        lambda: AffineCoupling(3, activation="nope"),
        lambda: SplineCoupling(3, n_bins=0),
        lambda: SplineCoupling(3, n_bins=10, min_bin_width=0.2),
    ]:
        with pytest.raises(ValueError):
            bad()
