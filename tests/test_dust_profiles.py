"""Tabulated dust profiles (:mod:`jaxstars.astro.dust.profiles`): tabulation, interpolation and quadrature draws.

Every check compares against an independent computation: the map's own ``query`` at each node, ``numpy.interp``,
or closed-form moments of the Gauss–Hermite rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstars.astro.dust import (
    DEFAULT_MODULUS_GRID,
    DustMap,
    DustProfiles,
    GaussianSkyMap,
    interpolate_profile,
    profiles_from_moments,
    tabulate_profiles,
)

# A few sight lines spread over the sky, including the poles and the Gaussian's centre (ra, dec) = (0, 0).
L_DEG = np.array([96.337, 0.0, 45.0, 180.0, 270.0, 300.0, 12.0])
B_DEG = np.array([-60.189, 90.0, -89.9, 10.0, -30.0, 60.0, 0.0])


def modulus_to_pc(mu):
    return 10.0 ** (np.asarray(mu, dtype=np.float64) / 5.0 + 1.0)


# --------------------------------------------------------------------------------------------------- tabulation
def test_tabulate_gaussian_sky_matches_direct_query():
    dmap = GaussianSkyMap(amplitude_per_kpc=0.7, sigma_deg=25.0)
    grid = np.linspace(0.0, 15.0, 31)
    prof = tabulate_profiles(dmap, L_DEG, B_DEG, modulus_grid=grid)
    assert isinstance(prof, DustProfiles)
    values = np.asarray(prof.values)
    assert values.shape == (L_DEG.size, grid.size, 1)
    np.testing.assert_allclose(np.asarray(prof.weights), [1.0])
    assert np.all(prof.valid)

    # node by node against the map itself
    d = modulus_to_pc(grid)
    direct = dmap.query(L_DEG[:, None], B_DEG[:, None], d[None, :]).mean
    np.testing.assert_allclose(values[..., 0], direct, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(prof.mean), direct, rtol=1e-5, atol=1e-7)

    # the Cranmer map is linear in distance along each sight line: E / d is one constant per star
    per_kpc = values[..., 0] / (d[None, :] / 1000.0)
    np.testing.assert_allclose(per_kpc, per_kpc[:, :1] * np.ones_like(per_kpc), rtol=1e-5)
    # ... equal to the amplitude at the Gaussian's centre (l, b of ra = dec = 0) and smaller elsewhere
    np.testing.assert_allclose(per_kpc[0, 0], 0.7, rtol=1e-3)
    assert np.all(per_kpc[1:, 0] < 0.7)
    # noise-free map: zero std
    np.testing.assert_array_equal(np.asarray(prof.std), 0.0)


def test_tabulate_scale_and_fractional_std():
    dmap = GaussianSkyMap(frac_std=0.2)
    base = tabulate_profiles(GaussianSkyMap(), L_DEG, B_DEG)
    prof = tabulate_profiles(dmap, L_DEG, B_DEG, scale=2.5)
    np.testing.assert_allclose(np.asarray(prof.values), 2.5 * np.asarray(base.values), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(prof.std), 0.2 * 2.5 * np.asarray(base.values)[..., 0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(prof.modulus_grid), DEFAULT_MODULUS_GRID)


def test_tabulate_gauss_hermite_draws_from_map_std():
    dmap = GaussianSkyMap(frac_std=0.1)
    prof = tabulate_profiles(dmap, L_DEG, B_DEG, n_draws=5)
    v, w = np.asarray(prof.values, np.float64), np.asarray(prof.weights, np.float64)
    mean = dmap.query(L_DEG[:, None], B_DEG[:, None], modulus_to_pc(DEFAULT_MODULUS_GRID)[None]).mean
    # frac_std = 0.1 never reaches zero reddening with 5 nodes (largest |node| = 2.86 sigma): no clipping
    np.testing.assert_allclose(v @ w, mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sqrt(((v - mean[..., None]) ** 2) @ w), 0.1 * mean, rtol=1e-4, atol=1e-7)


class _SampledMap(DustMap):
    """A map with posterior samples: sample s at distance d is ``(s + 1) × 0.1 × d / kpc``."""

    name = "test_sampled"
    three_d = True

    def _query(self, l_deg, b_deg, distance_pc, key):
        s = np.arange(4.0) + 1.0
        samples = 0.1 * distance_pc[:, None] / 1000.0 * s
        return samples.mean(axis=1), samples.std(axis=1), samples, {}


def test_tabulate_uses_map_samples_equally_weighted():
    grid = np.linspace(5.0, 12.0, 8)
    prof = tabulate_profiles(_SampledMap(), L_DEG[:2], B_DEG[:2], modulus_grid=grid, n_draws=3)
    d = modulus_to_pc(grid)
    expected = 0.1 * d[:, None] / 1000.0 * np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(np.asarray(prof.values), np.broadcast_to(expected, (2, 8, 3)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(prof.weights), np.full(3, 1.0 / 3.0))
    with pytest.raises(ValueError, match="samples"):
        tabulate_profiles(_SampledMap(), L_DEG[:2], B_DEG[:2], modulus_grid=grid, n_draws=5)


def test_invalid_positions_are_flagged_not_raised():
    l_deg = np.array([10.0, np.nan, 20.0, 30.0, np.inf])
    b_deg = np.array([5.0, 5.0, np.nan, 95.0, 0.0])  # |b| > 90 is not a position either
    prof = tabulate_profiles(GaussianSkyMap(frac_std=0.1), l_deg, b_deg, n_draws=3)
    np.testing.assert_array_equal(np.asarray(prof.valid), [True, False, False, False, False])
    # bad rows hold finite placeholders (zero reddening, zero std) so vectorised code never sees NaN
    values, std = np.asarray(prof.values), np.asarray(prof.std)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(std))
    np.testing.assert_array_equal(values[1:], 0.0)
    np.testing.assert_array_equal(std[1:], 0.0)
    assert np.all(values[0, 1:] > 0)
    with pytest.raises(ValueError, match="same length"):
        tabulate_profiles(GaussianSkyMap(), [1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "grid",
    [
        np.array([0.0, 0.2, 0.5, 0.7]),  # non-uniform
        np.array([1.0, 0.8, 0.6]),  # decreasing
        np.array([3.0]),  # a single node
        np.zeros((2, 3)),  # not 1-D
    ],
)
def test_bad_grid_rejected(grid):
    with pytest.raises(ValueError, match="grid"):
        tabulate_profiles(GaussianSkyMap(), L_DEG, B_DEG, modulus_grid=grid)
    with pytest.raises(ValueError, match="grid"):
        profiles_from_moments(np.ones(3), np.zeros(3), modulus_grid=grid)


# -------------------------------------------------------------------------------------------------- interpolation
def test_interpolate_profile_matches_numpy_interp():
    rng = np.random.default_rng(3)
    grid = np.linspace(2.0, 14.0, 25)
    profile = np.cumsum(rng.uniform(0.0, 0.3, grid.size)).astype(np.float32)  # increasing, not linear
    inside = rng.uniform(grid[0], grid[-1], 200)
    outside = np.array([-5.0, 0.0, 1.999, 14.001, 20.0, 1e3])
    mu = np.concatenate([inside, outside, grid]).astype(np.float32)
    got = np.asarray(jax.jit(interpolate_profile)(jnp.asarray(grid), jnp.asarray(profile), jnp.asarray(mu)))
    # np.interp clamps to the end values outside the grid: the documented behaviour
    np.testing.assert_allclose(got, np.interp(mu, grid, profile), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[200:202], profile[0], rtol=1e-6)
    np.testing.assert_allclose(got[204:206], profile[-1], rtol=1e-6)
    np.testing.assert_allclose(got[-grid.size :], profile, rtol=1e-6)  # exact at the nodes


def test_interpolate_profile_draws_and_shapes():
    rng = np.random.default_rng(4)
    grid = np.linspace(0.0, 10.0, 11)
    profile = rng.uniform(0.0, 1.0, (grid.size, 3)).astype(np.float32)
    mu = rng.uniform(-1.0, 11.0, (4, 5)).astype(np.float32)
    got = np.asarray(jax.jit(interpolate_profile)(grid, jnp.asarray(profile), jnp.asarray(mu)))
    assert got.shape == (4, 5, 3)
    for j in range(3):
        np.testing.assert_allclose(got[..., j], np.interp(mu, grid, profile[:, j]), rtol=1e-5, atol=1e-6)
    # jit- and vmap-compatible (the per-star use inside the posterior)
    batched = jax.jit(jax.vmap(interpolate_profile, in_axes=(None, 0, 0)))(
        jnp.asarray(grid), jnp.asarray(np.stack([profile, 2 * profile])), jnp.asarray(mu[:2, 0])
    )
    np.testing.assert_allclose(np.asarray(batched[1]), 2 * got[1, 0], rtol=1e-5)


# ------------------------------------------------------------------------------------------ profiles from moments
def test_profiles_from_moments_one_dimensional_input_is_flat():
    mean = np.array([0.1, 0.5, 0.0])
    std = np.array([0.01, 0.05, 0.0])
    prof = profiles_from_moments(mean, std)
    values = np.asarray(prof.values)
    assert values.shape == (3, DEFAULT_MODULUS_GRID.size, 1)
    np.testing.assert_allclose(values[..., 0], np.repeat(mean[:, None], DEFAULT_MODULUS_GRID.size, 1), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(prof.std), np.repeat(std[:, None], DEFAULT_MODULUS_GRID.size, 1), rtol=1e-6
    )
    assert np.all(prof.valid)
    # interpolating a flat profile anywhere (even off the grid) gives the per-star value back
    mu = jnp.asarray([-3.0, 7.3, 30.0])
    got = jax.vmap(interpolate_profile, in_axes=(None, 0, None))(prof.modulus_grid, jnp.asarray(values), mu)
    np.testing.assert_allclose(np.asarray(got)[..., 0], np.repeat(mean[:, None], 3, 1), rtol=1e-6)
    # a scalar std broadcasts
    np.testing.assert_allclose(np.asarray(profiles_from_moments(mean, 0.02).std), 0.02)


@pytest.mark.parametrize("n_draws", [2, 3, 7])
def test_gauss_hermite_draws_reproduce_mean_and_variance(n_draws):
    rng = np.random.default_rng(n_draws)
    grid = np.linspace(0.0, 10.0, 6)
    mean = rng.uniform(1.0, 2.0, (4, grid.size))
    std = rng.uniform(0.01, 0.15, (4, grid.size))  # mean > 7 std > largest node: nothing clipped
    prof = profiles_from_moments(mean, std, grid, n_draws=n_draws)
    v, w = np.asarray(prof.values, np.float64), np.asarray(prof.weights, np.float64)
    assert v.shape == (4, grid.size, n_draws)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert np.all(w > 0)
    np.testing.assert_allclose(v @ w, mean, rtol=1e-5)
    np.testing.assert_allclose(((v - mean[..., None]) ** 2) @ w, std**2, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(prof.mean), mean, rtol=1e-5)
    # symmetric nodes: odd central moments vanish
    np.testing.assert_allclose(((v - mean[..., None]) ** 3) @ w, 0.0, atol=1e-6)
    if n_draws >= 3:  # exact up to degree 2n-1 >= 5: the Gaussian kurtosis 3σ⁴
        np.testing.assert_allclose(((v - mean[..., None]) ** 4) @ w, 3 * std**4, rtol=1e-2)


def test_gauss_hermite_draws_clipped_at_zero():
    prof = profiles_from_moments(np.array([0.01]), np.array([0.1]), n_draws=5)
    v, w = np.asarray(prof.values, np.float64), np.asarray(prof.weights, np.float64)
    assert np.all(v >= 0.0)
    assert np.sum(v[0, 0] == 0.0) == 2  # the nodes at -1.36 and -2.86 sigma fall below zero
    # clipping can only raise the mean
    assert (v @ w)[0, 0] > 0.01


def test_profiles_from_moments_invalid_rows_and_shapes():
    mean = np.array([[0.1, 0.2, 0.3], [np.nan, 0.2, 0.3], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    std = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    grid = np.array([0.0, 1.0, 2.0])
    prof = profiles_from_moments(mean, std, grid, valid=[True, True, True, False])
    np.testing.assert_array_equal(np.asarray(prof.valid), [True, False, False, False])
    values = np.asarray(prof.values)
    assert np.all(np.isfinite(values))
    np.testing.assert_array_equal(values[1:], 0.0)
    np.testing.assert_allclose(values[0, :, 0], [0.1, 0.2, 0.3], rtol=1e-6)
    sub = prof.take(np.array([2, 0]))
    np.testing.assert_array_equal(np.asarray(sub.valid), [False, True])
    np.testing.assert_allclose(np.asarray(sub.values)[1], values[0])
    with pytest.raises(ValueError, match="nodes"):
        profiles_from_moments(np.ones((2, 4)), np.zeros((2, 4)), grid)
    with pytest.raises(ValueError, match="n_draws"):
        profiles_from_moments(np.ones(2), np.zeros(2), grid, n_draws=0)
