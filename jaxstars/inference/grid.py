"""Grid posteriors over one or two parameters: normalised densities, moments, interpolated quantiles and samples.

Used where a per-star posterior is one-dimensional (e.g. distance given photometry and parallax, Cranmer et al.
§3.3): evaluate the unnormalised log posterior on a fixed grid — static shapes, so it jits and vmaps over stars.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

DEFAULT_QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)


class GridPosterior(NamedTuple):
    """Summary of a 1-D grid posterior (per star when vmapped).

    ``mean``, ``std``, ``quantiles`` (at ``DEFAULT_QUANTILES`` unless asked otherwise), ``log_evidence`` (log of the
    trapezoid integral of the unnormalised posterior) and ``mass_at_edges`` (posterior mass in the first and last
    grid cells: large values mean the grid does not cover the posterior and the row should be flagged).
    """

    mean: jax.Array
    std: jax.Array
    quantiles: jax.Array
    log_evidence: jax.Array
    mass_at_edges: jax.Array


def _cdf(grid, log_post):
    """Trapezoid CDF of exp(log_post) on ``grid``, normalised; plus the log normaliser."""
    peak = jnp.max(log_post)
    dens = jnp.exp(log_post - peak)
    cells = 0.5 * (dens[1:] + dens[:-1]) * jnp.diff(grid)
    total = jnp.sum(cells)
    cdf = jnp.concatenate([jnp.zeros(1, dens.dtype), jnp.cumsum(cells)]) / total
    return cdf, cells / total, peak + jnp.log(total)


def grid_posterior_1d(grid: jax.Array, log_post: jax.Array, quantiles=DEFAULT_QUANTILES) -> GridPosterior:
    """Summarise ``exp(log_post)`` tabulated on an increasing ``grid`` (trapezoid rule, linear CDF inversion).

    Non-finite ``log_post`` values count as zero density; if every value is non-finite the summary is NaN.
    """
    grid = jnp.asarray(grid)
    log_post = jnp.where(jnp.isfinite(log_post), log_post, -jnp.inf)
    cdf, cell_mass, log_z = _cdf(grid, log_post)
    mids = 0.5 * (grid[1:] + grid[:-1])
    mean = jnp.sum(cell_mass * mids)
    # second moment of a piecewise-linear density, cell by cell, approximated at the cell mid-points plus the
    # within-cell spread of a uniform cell (h²/12)
    h = jnp.diff(grid)
    var = jnp.sum(cell_mass * ((mids - mean) ** 2 + h**2 / 12.0))
    q = jnp.interp(jnp.asarray(quantiles), cdf, grid)
    edges = cell_mass[0] + cell_mass[-1]
    return GridPosterior(mean, jnp.sqrt(var), q, log_z, edges)


def sample_grid_posterior(key: jax.Array, grid: jax.Array, log_post: jax.Array, n: int) -> jax.Array:
    """Draw ``n`` samples from a grid posterior by inverting its piecewise-linear CDF."""
    cdf, _, _ = _cdf(jnp.asarray(grid), jnp.where(jnp.isfinite(log_post), log_post, -jnp.inf))
    u = jax.random.uniform(key, (n,))
    return jnp.interp(u, cdf, grid)


class GridPosterior2D(NamedTuple):
    """Summary of a 2-D grid posterior over ``(x, y)`` (per star when vmapped).

    ``mean`` (2,), ``cov`` (2, 2), ``quantiles`` (2, n_q): quantiles of each marginal, interpolated in its CDF;
    ``log_evidence`` (log of the trapezoid integral), ``mass_at_edges`` (posterior mass in the grid's boundary
    cells: large values mean the grid cuts the posterior off).
    """

    mean: jax.Array
    cov: jax.Array
    quantiles: jax.Array
    log_evidence: jax.Array
    mass_at_edges: jax.Array


def _trapezoid_weights(grid):
    """Weights ``w`` with ``Σ w f(grid) ≈ ∫ f`` (trapezoid rule on a possibly non-uniform grid)."""
    h = jnp.diff(grid)
    return jnp.concatenate([h[:1] / 2, (h[1:] + h[:-1]) / 2, h[-1:] / 2])


def grid_posterior_2d(
    grid_x: jax.Array, grid_y: jax.Array, log_post: jax.Array, quantiles=DEFAULT_QUANTILES
) -> GridPosterior2D:
    """Summarise ``exp(log_post)`` tabulated on the product of two increasing grids (``log_post[i, j]`` at
    ``(grid_x[i], grid_y[j])``): moments by the 2-D trapezoid rule, quantiles of each marginal by
    :func:`grid_posterior_1d` on the marginal (integrated over the other axis).

    Non-finite values count as zero density; if every value is non-finite the summary is NaN. Jit/vmap over stars.
    """
    grid_x, grid_y = jnp.asarray(grid_x), jnp.asarray(grid_y)
    log_post = jnp.where(jnp.isfinite(log_post), log_post, -jnp.inf)
    wx, wy = _trapezoid_weights(grid_x), _trapezoid_weights(grid_y)
    peak = jnp.max(log_post)
    dens = jnp.exp(log_post - peak)
    mass = dens * wx[:, None] * wy[None, :]
    total = jnp.sum(mass)
    p = mass / total
    px, py = jnp.sum(p, axis=1), jnp.sum(p, axis=0)
    mx, my = jnp.sum(px * grid_x), jnp.sum(py * grid_y)
    dx, dy = grid_x - mx, grid_y - my
    cov = jnp.array(
        [
            [jnp.sum(px * dx**2), jnp.sum(p * dx[:, None] * dy[None, :])],
            [jnp.sum(p * dx[:, None] * dy[None, :]), jnp.sum(py * dy**2)],
        ]
    )
    # marginal densities (integrated over the other axis) → 1-D CDF inversion for the quantiles
    marg_x = jnp.log(jnp.sum(dens * wy[None, :], axis=1))
    marg_y = jnp.log(jnp.sum(dens * wx[:, None], axis=0))
    qx = grid_posterior_1d(grid_x, marg_x, quantiles).quantiles
    qy = grid_posterior_1d(grid_y, marg_y, quantiles).quantiles
    edges = jnp.sum(p[0]) + jnp.sum(p[-1]) + jnp.sum(p[1:-1, 0]) + jnp.sum(p[1:-1, -1])
    return GridPosterior2D(jnp.array([mx, my]), cov, jnp.stack([qx, qy]), peak + jnp.log(total), edges)


def sample_grid_posterior_2d(
    key: jax.Array, grid_x: jax.Array, grid_y: jax.Array, log_post: jax.Array, n: int
) -> jax.Array:
    """Draw ``n`` points ``(x, y)`` from a 2-D grid posterior: a grid node by its trapezoid mass, then a uniform
    jitter within its cell (half a spacing either side, clipped to the grid). Returns shape ``(n, 2)``."""
    grid_x, grid_y = jnp.asarray(grid_x), jnp.asarray(grid_y)
    log_post = jnp.where(jnp.isfinite(log_post), log_post, -jnp.inf)
    wx, wy = _trapezoid_weights(grid_x), _trapezoid_weights(grid_y)
    logits = (log_post + jnp.log(wx)[:, None] + jnp.log(wy)[None, :]).reshape(-1)
    k_node, k_x, k_y = jax.random.split(key, 3)
    cdf = jnp.cumsum(jnp.exp(logits - jnp.max(logits)))  # inverse-CDF draw of grid nodes: O(n + cells) memory
    u = jax.random.uniform(k_node, (n,)) * cdf[-1]
    flat = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, cdf.size - 1)
    i, j = flat // grid_y.size, flat % grid_y.size
    x = grid_x[i] + wx[i] * jax.random.uniform(k_x, (n,), minval=-0.5, maxval=0.5)
    y = grid_y[j] + wy[j] * jax.random.uniform(k_y, (n,), minval=-0.5, maxval=0.5)
    return jnp.stack([jnp.clip(x, grid_x[0], grid_x[-1]), jnp.clip(y, grid_y[0], grid_y[-1])], axis=-1)
