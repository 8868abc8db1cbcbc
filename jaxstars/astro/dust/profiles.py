"""Dust along each sight line, tabulated once on a distance-modulus grid so jitted models can interpolate it.

Any :class:`~jaxstars.astro.dust.DustMap` (numpy, file-backed, or analytic) is queried on the host once per star
and catalogue chunk; inside ``jit`` the reddening at any distance is a linear interpolation in distance modulus.
Static shapes (``n_stars × n_grid × n_draws``) keep the model code identical on CPU and GPU.

The dust uncertainty is carried as ``n_draws`` equally or quadrature-weighted reddening profiles per star:

* the map's own posterior samples where it has them (Bayestar19), each a full profile;
* otherwise Gauss–Hermite nodes ``mean + √2 σ t_j`` with weights ``w_j / √π``, clipped at zero reddening
  (``n_draws = 1`` collapses to the mean).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .base import DustMap

DEFAULT_MODULUS_GRID = np.arange(0.0, 20.0 + 1e-9, 0.2)
"""Distance moduli 0 … 20 (10 pc … 100 kpc) in steps of 0.2 mag: the default nodes of a tabulated profile.
Linear interpolation in μ of a reddening that grows linearly with distance errs by < 0.2% between nodes."""


class DustProfiles(NamedTuple):
    """Reddening profiles of a set of stars on a common distance-modulus grid.

    Attributes
    ----------
    modulus_grid : (n_grid,) distance moduli of the nodes (increasing).
    values : (n_stars, n_grid, n_draws) reddening draws (map samples or quadrature nodes) at each node.
    weights : (n_draws,) weights of the draws (sum to 1).
    std : (n_stars, n_grid) the map's 1-σ reddening uncertainty at each node.
    valid : (n_stars,) False where the map has no reddening for the star (outside its footprint, bad position).
    """

    modulus_grid: Any
    values: Any
    weights: Any
    std: Any
    valid: Any

    @property
    def mean(self):
        """(n_stars, n_grid) weighted mean reddening."""
        return jnp.sum(jnp.asarray(self.values) * jnp.asarray(self.weights), axis=-1)

    def take(self, index) -> DustProfiles:
        """The profiles of a subset of stars (numpy or jnp index)."""
        return DustProfiles(
            self.modulus_grid, self.values[index], self.weights, self.std[index], self.valid[index]
        )


def _check_grid(modulus_grid: Any) -> np.ndarray:
    grid = np.asarray(modulus_grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise ValueError("the distance-modulus grid needs at least two nodes")
    step = np.diff(grid)
    if not (np.all(step > 0) and np.allclose(step, step[0], rtol=1e-4, atol=1e-6)):
        raise ValueError("the distance-modulus grid must be increasing and uniformly spaced")
    return grid


def _gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite.hermgauss(n)
    return np.sqrt(2.0) * nodes, weights / np.sqrt(np.pi)


def profiles_from_moments(
    mean: Any, std: Any, modulus_grid: Any = DEFAULT_MODULUS_GRID, n_draws: int = 1, valid: Any = None
) -> DustProfiles:
    """Profiles from a mean and 1-σ reddening per star and node (Gauss–Hermite draws, clipped at 0).

    ``mean``/``std`` are ``(n_stars, n_grid)``; a ``(n_stars,)`` input means "the same at every distance" (a 2-D
    map, or a per-star reddening estimate such as Green et al.'s ``r`` column).
    """
    grid = _check_grid(modulus_grid)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), mean.shape)
    if mean.ndim == 1:
        mean = np.repeat(mean[:, None], grid.size, axis=1)
        std = np.repeat(std[:, None], grid.size, axis=1)
    if mean.shape[1] != grid.size:
        raise ValueError(f"profiles have {mean.shape[1]} nodes but the grid has {grid.size}")
    if n_draws < 1:
        raise ValueError("n_draws must be >= 1")
    ok = np.all(np.isfinite(mean), axis=1) & np.all(np.isfinite(std) & (std >= 0), axis=1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    mean = np.where(ok[:, None], mean, 0.0)
    std = np.where(ok[:, None], std, 0.0)
    if n_draws == 1:
        nodes, weights = np.zeros(1), np.ones(1)
    else:
        nodes, weights = _gauss_hermite(n_draws)
    values = np.maximum(mean[..., None] + std[..., None] * nodes, 0.0)
    return DustProfiles(grid, values.astype(np.float32), weights.astype(np.float32), std.astype(np.float32), ok)


def tabulate_profiles(
    dust_map: DustMap,
    l_deg: Any,
    b_deg: Any,
    *,
    modulus_grid: Any = DEFAULT_MODULUS_GRID,
    n_draws: int = 1,
    key: Any = None,
    scale: float = 1.0,
) -> DustProfiles:
    """Query ``dust_map`` along every star's sight line at the nodes of ``modulus_grid``.

    Parameters
    ----------
    dust_map : the map (any :class:`DustMap`; 2-D maps give flat profiles).
    l_deg, b_deg : (n_stars,) Galactic coordinates [deg].
    modulus_grid : distance moduli of the nodes.
    n_draws : reddening draws per star: the first ``n_draws`` map samples where the map has samples (a map with
        fewer samples than asked raises), otherwise Gauss–Hermite nodes of its mean and σ. 1 = the mean only.
    key : random key for maps that draw samples.
    scale : multiply the map's reddening by this (unit conversion, e.g. Bayestar units → E(g−r)).
    """
    grid = _check_grid(modulus_grid)
    l_deg = np.asarray(l_deg, dtype=np.float64).ravel()
    b_deg = np.asarray(b_deg, dtype=np.float64).ravel()
    if l_deg.shape != b_deg.shape:
        raise ValueError("l_deg and b_deg need the same length")
    distance = 10.0 ** (grid / 5.0 + 1.0)
    query = dust_map.query(l_deg[:, None], b_deg[:, None], distance[None, :], key=key)
    valid = np.all(query.valid, axis=1)
    if n_draws > 1 and query.samples is not None:
        if query.samples.shape[-1] < n_draws:
            raise ValueError(f"map {dust_map.name!r} has {query.samples.shape[-1]} samples, asked for {n_draws}")
        values = np.where(valid[:, None, None], query.samples[..., :n_draws], 0.0) * scale
        std = np.where(valid[:, None], query.std, 0.0) * scale
        weights = np.full(n_draws, 1.0 / n_draws)
        return DustProfiles(
            grid, values.astype(np.float32), weights.astype(np.float32), std.astype(np.float32), valid
        )
    return profiles_from_moments(query.mean * scale, query.std * scale, grid, n_draws, valid)


def interpolate_profile(modulus_grid: jax.Array, profile: jax.Array, modulus: jax.Array) -> jax.Array:
    """Reddening at distance modulus ``modulus`` from one star's ``profile`` (``(n_grid,)`` or ``(n_grid, k)``).

    Linear in μ between nodes, constant beyond the grid ends. ``modulus`` may be any shape; the result has shape
    ``modulus.shape + profile.shape[1:]``.
    """
    grid = jnp.asarray(modulus_grid, dtype=profile.dtype)
    mu = jnp.clip(modulus, grid[0], grid[-1])
    step = (grid[-1] - grid[0]) / (grid.shape[0] - 1)
    position = (mu - grid[0]) / step
    lower = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, grid.shape[0] - 2)
    frac = position - lower
    if profile.ndim > 1:
        frac = frac[..., None]
    return (1.0 - frac) * profile[lower] + frac * profile[lower + 1]
