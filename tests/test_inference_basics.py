"""Grid posteriors and importance-sampled marginals against analytic answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxstars.inference import grid_posterior_1d, grid_posterior_2d, importance_log_marginal
from jaxstars.inference.grid import sample_grid_posterior, sample_grid_posterior_2d


def test_grid_posterior_of_a_gaussian_matches_analytic_summaries():
    grid = jnp.linspace(-10.0, 14.0, 4001)
    mu, sigma = 2.0, 1.5
    log_post = -0.5 * ((grid - mu) / sigma) ** 2 + 3.0  # unnormalised
    post = grid_posterior_1d(grid, log_post)
    np.testing.assert_allclose(float(post.mean), mu, atol=1e-4)
    np.testing.assert_allclose(float(post.std), sigma, rtol=1e-3)
    expected_q = stats.norm.ppf([0.025, 0.16, 0.5, 0.84, 0.975], mu, sigma)
    np.testing.assert_allclose(np.asarray(post.quantiles), expected_q, atol=2e-3)
    np.testing.assert_allclose(float(post.log_evidence), 3.0 + np.log(sigma * np.sqrt(2 * np.pi)), atol=1e-4)
    assert float(post.mass_at_edges) < 1e-6


def test_grid_posterior_vmaps_over_stars_and_flags_truncated_grids():
    grid = jnp.linspace(0.0, 10.0, 501)
    mus = jnp.array([3.0, 5.0, 9.9])
    log_posts = -0.5 * ((grid[None] - mus[:, None]) / 0.5) ** 2
    posts = jax.jit(jax.vmap(lambda lp: grid_posterior_1d(grid, lp)))(log_posts)
    np.testing.assert_allclose(np.asarray(posts.quantiles[:2, 2]), [3.0, 5.0], atol=1e-3)
    assert float(posts.mass_at_edges[2]) > float(posts.mass_at_edges[0]) * 1e3  # the third is cut by the grid


def test_samples_from_grid_posterior_follow_it():
    grid = jnp.linspace(0.0, 20.0, 2001)
    log_post = stats.gamma.logpdf(np.asarray(grid), a=3.0, scale=2.0)
    x = np.asarray(sample_grid_posterior(jax.random.PRNGKey(0), grid, jnp.asarray(log_post), 20000))
    assert stats.kstest(x, stats.gamma(a=3.0, scale=2.0).cdf).pvalue > 1e-3


def test_importance_marginal_recovers_known_normaliser_and_ess():
    """∫ N(θ; 1, 0.5²) · 7 dθ = 7, estimated with proposal N(0, 1); ESS equals Kish's formula computed directly."""
    key = jax.random.PRNGKey(0)
    theta = jax.random.normal(key, (200000,))
    log_w = jnp.log(7.0) + stats.norm.logpdf(np.asarray(theta), 1.0, 0.5) - stats.norm.logpdf(np.asarray(theta))
    res = importance_log_marginal(jnp.asarray(log_w))
    np.testing.assert_allclose(float(res.log_marginal), np.log(7.0), atol=0.01)
    w = np.exp(np.asarray(log_w, np.float64))
    np.testing.assert_allclose(float(res.ess), w.sum() ** 2 / (w**2).sum(), rtol=1e-3)
    # all weights zero: -inf marginal and zero ESS, not NaN
    empty = importance_log_marginal(jnp.full((4, 8), -jnp.inf))
    assert np.all(np.isneginf(np.asarray(empty.log_marginal))) and np.all(np.asarray(empty.ess) == 0)


def _gaussian_2d(gx, gy, mean, sx, sy, rho, offset=0.0):
    dx = (gx[:, None] - mean[0]) / sx
    dy = (gy[None, :] - mean[1]) / sy
    return offset - 0.5 * (dx**2 - 2 * rho * dx * dy + dy**2) / (1 - rho**2)


def test_grid_posterior_2d_of_a_correlated_gaussian_matches_analytic_summaries():
    gx, gy = jnp.linspace(-6.0, 10.0, 801), jnp.geomspace(0.5, 30.0, 900)  # a non-uniform grid too
    mean, sx, sy, rho = (2.0, 12.0), 1.2, 2.5, -0.6
    post = grid_posterior_2d(gx, gy, _gaussian_2d(gx, gy, mean, sx, sy, rho, offset=1.5))
    np.testing.assert_allclose(post.mean, mean, atol=2e-3)
    np.testing.assert_allclose(post.cov, [[sx**2, rho * sx * sy], [rho * sx * sy, sy**2]], rtol=2e-3, atol=2e-3)
    levels = np.array([0.025, 0.16, 0.5, 0.84, 0.975])
    np.testing.assert_allclose(post.quantiles[0], stats.norm.ppf(levels, mean[0], sx), atol=5e-3)
    np.testing.assert_allclose(post.quantiles[1], stats.norm.ppf(levels, mean[1], sy), atol=5e-3)
    # ∫∫ exp(1.5 − Q/2) = e^1.5 · 2π σx σy √(1−ρ²)
    assert float(post.log_evidence) == pytest.approx(
        1.5 + np.log(2 * np.pi * sx * sy * np.sqrt(1 - rho**2)), abs=1e-3
    )
    assert float(post.mass_at_edges) < 1e-6


def test_grid_posterior_2d_vmaps_flags_truncation_and_samples():
    gx, gy = jnp.linspace(0.0, 10.0, 201), jnp.linspace(0.0, 5.0, 151)
    centres = jnp.array([[5.0, 2.5], [2.0, 3.0], [9.9, 2.5]])  # the third sits on the grid's edge
    log_posts = jax.vmap(lambda c: _gaussian_2d(gx, gy, c, 0.5, 0.3, 0.3))(centres)
    posts = jax.jit(jax.vmap(lambda lp: grid_posterior_2d(gx, gy, lp)))(log_posts)
    np.testing.assert_allclose(posts.mean[:2], centres[:2], atol=1e-3)
    assert float(posts.mass_at_edges[2]) > 1e3 * max(float(posts.mass_at_edges[0]), 1e-12)
    x = np.asarray(sample_grid_posterior_2d(jax.random.PRNGKey(1), gx, gy, log_posts[0], 40000))
    np.testing.assert_allclose(x.mean(axis=0), centres[0], atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), np.asarray(posts.cov[0]), rtol=0.05, atol=2e-3)
