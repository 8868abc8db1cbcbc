"""Grid posteriors over one parameter: normalised densities, moments, interpolated quantiles and samples.

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
