"""Generic checks every bijector / flow must pass.  Each test module calls these on its own layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.flows import Flow


def check_round_trip(bijector, params, x, context=None, atol=1e-4):
    """inverse(forward(z)) == z and forward(inverse(x)) == x."""
    z, _ = bijector.inverse_and_log_det(params, x, context)
    x_back, _ = bijector.forward_and_log_det(params, z, context)
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=atol, rtol=atol)
    x2, _ = bijector.forward_and_log_det(params, x, context)
    z2, _ = bijector.inverse_and_log_det(params, x2, context)
    np.testing.assert_allclose(np.asarray(z2), np.asarray(x), atol=atol, rtol=atol)


def check_log_det(bijector, params, x, context=None, rtol=1e-4, atol=1e-4):
    """Both log-dets equal log|det jax.jacfwd| of the map, point by point (one jit-compiled vmap)."""
    ctx = jnp.zeros((x.shape[0], 0)) if context is None else context

    def point(fn):
        def one(xi, ci):
            c = None if context is None else ci[None]
            return fn(params, xi[None], c)[0][0]

        return one

    @jax.jit
    def compute(x, ctx):
        c = None if context is None else ctx
        _, ld_inv = bijector.inverse_and_log_det(params, x, c)
        _, ld_fwd = bijector.forward_and_log_det(params, x, c)
        ref_inv = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(point(bijector.inverse_and_log_det)))(x, ctx))[1]
        ref_fwd = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(point(bijector.forward_and_log_det)))(x, ctx))[1]
        return ld_inv, ref_inv, ld_fwd, ref_fwd

    ld_inv, ref_inv, ld_fwd, ref_fwd = compute(x, ctx)
    np.testing.assert_allclose(np.asarray(ld_inv), np.asarray(ref_inv), rtol=rtol, atol=atol)
    np.testing.assert_allclose(np.asarray(ld_fwd), np.asarray(ref_fwd), rtol=rtol, atol=atol)


def check_normalised_2d(flow: Flow, params, context=None, half_width=8.0, n=401, tol=1e-2):
    """A 2-D flow density integrates to 1 on a wide grid (trapezoid rule)."""
    grid = np.linspace(-half_width, half_width, n)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    ctx = None if context is None else jnp.broadcast_to(context, (pts.shape[0], context.shape[-1]))
    dens = np.exp(np.asarray(flow.log_prob(params, pts, ctx), np.float64)).reshape(n, n)
    total = np.trapezoid(np.trapezoid(dens, grid, axis=1), grid)
    assert abs(total - 1.0) < tol, f"density integrates to {total}"
    return total


def check_samples_match_density(flow: Flow, params, key, context=None, n=4000, tol=0.05):
    """sample_and_log_prob's log densities equal log_prob of the samples, and sample moments match quadrature.

    Quadrature of the first coordinate's mean against the sample mean is done in 2-D flows only (caller's
    choice); here we check consistency of the returned log densities and finiteness.
    """
    ctx = None if context is None else jnp.broadcast_to(context, (n, context.shape[-1]))
    x, lp = flow.sample_and_log_prob(params, key, () if ctx is not None else (n,), ctx)
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(np.asarray(flow.log_prob(params, x, ctx)), np.asarray(lp), atol=tol, rtol=tol)
    return x


def check_sample_mean_matches_quadrature(flow: Flow, params, key, context=None, half_width=8.0, n_grid=301, n=20000):
    """Mean of each coordinate from samples agrees with the mean computed by 2-D quadrature of exp(log_prob)."""
    grid = np.linspace(-half_width, half_width, n_grid)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    ctx_q = None if context is None else jnp.broadcast_to(context, (pts.shape[0], context.shape[-1]))
    dens = np.exp(np.asarray(flow.log_prob(params, pts, ctx_q), np.float64)).reshape(n_grid, n_grid)
    norm = np.trapezoid(np.trapezoid(dens, grid, axis=1), grid)
    mean_x = np.trapezoid(np.trapezoid(dens * xx, grid, axis=1), grid) / norm
    mean_y = np.trapezoid(np.trapezoid(dens * yy, grid, axis=1), grid) / norm
    ctx = None if context is None else jnp.broadcast_to(context, (n, context.shape[-1]))
    samples = np.asarray(flow.sample(params, key, () if ctx is not None else (n,), ctx))
    se = samples.std(0) / np.sqrt(n)
    assert abs(samples[:, 0].mean() - mean_x) < 5 * se[0] + 1e-3, (samples[:, 0].mean(), mean_x)
    assert abs(samples[:, 1].mean() - mean_y) < 5 * se[1] + 1e-3, (samples[:, 1].mean(), mean_y)
