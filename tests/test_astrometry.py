"""Parallax likelihood, zero-point conventions, Lindegren+2021 zero-point, Cranmer's truncated-normal samples."""

import importlib.util
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxstars.astro.astrometry import (
    GLOBAL_ZERO_POINTS,
    ZP_DR2_LINDEGREN2018,
    ZP_HOGG2019,
    ZP_HOGG2019_CODE,
    ZPT_COLOUR_OUT_OF_RANGE,
    ZPT_G_OUT_OF_RANGE,
    ZPT_NO_5P_6P_SOLUTION,
    ZPT_NONFINITE_INPUT,
    ZPT_OK,
    correct_parallax,
    lindegren2021_zero_point,
    parallax_log_likelihood,
    sample_truncated_parallax,
)
from jaxstars.data import data_dir

# ---------------------------------------------------------------------------------------------------------------
# Gaussian likelihood and sign convention


def test_likelihood_matches_scipy_including_negative_parallaxes():
    plx = np.array([1.2, 0.05, -0.3, -2.0, 0.0])
    err = np.array([0.1, 0.2, 0.15, 0.5, 1.0])
    d = np.array([800.0, 5000.0, 20000.0, 3000.0, 1.0e4])
    zp = -0.029
    expected = stats.norm(1000.0 / d + zp, err).logpdf(plx)
    got = parallax_log_likelihood(plx, err, d, zp)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_zero_point_sign_convention():
    # Catalogue parallax = true parallax + zp; Gaia's zp is negative (parallaxes too small).
    assert ZP_DR2_LINDEGREN2018 == -0.029 and ZP_HOGG2019 == -0.048 and ZP_HOGG2019_CODE == -0.0483
    assert GLOBAL_ZERO_POINTS["lindegren2018_dr2"] == ZP_DR2_LINDEGREN2018
    # Cranmer: "a global parallax offset of 0.029 mas" -> a star at 1 kpc is catalogued at 0.971 mas.
    assert float(correct_parallax(0.971, ZP_DR2_LINDEGREN2018)) == pytest.approx(1.0)
    # The likelihood of that catalogue value peaks at exactly 1 kpc (not 1030 pc or 1062 pc: wrong signs).
    with jax.enable_x64(True):
        grid = jnp.linspace(900.0, 1100.0, 20001)
        best = grid[jnp.argmax(parallax_log_likelihood(0.971, 0.05, grid, ZP_DR2_LINDEGREN2018))]
    assert float(best) == pytest.approx(1000.0, abs=0.02)
    # Hogg: adding the positive offset 0.048 mas to the catalogue parallax.
    assert float(correct_parallax(0.5, ZP_HOGG2019)) == pytest.approx(0.548)


def test_likelihood_gradient_and_invalid_distance():
    plx, err, zp = -0.2, 0.3, -0.017
    d = jnp.array([250.0, 4000.0])
    # d/dd log N = (plx - 1000/d - zp)/err^2 * d(1000/d)/dd = -(plx - 1000/d - zp)/err^2 * 1000/d^2
    expected = -(plx - 1000.0 / d - zp) / err**2 * 1000.0 / d**2
    got = jax.vmap(jax.grad(lambda x: parallax_log_likelihood(plx, err, x, zp)))(d)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for bad in (0.0, -100.0):
        assert parallax_log_likelihood(plx, err, bad) == -jnp.inf
        assert np.isfinite(jax.grad(lambda x: parallax_log_likelihood(plx, err, x))(jnp.asarray(bad)))
    assert jax.jit(parallax_log_likelihood)(plx, err, 1000.0, zp).shape == ()


def test_likelihood_correct_under_x64():
    with jax.enable_x64(True):
        got = parallax_log_likelihood(0.123456789, 0.01, 8100.0, -0.0483)
        assert got.dtype == jnp.float64
        assert float(got) == pytest.approx(stats.norm(1000 / 8100.0 - 0.0483, 0.01).logpdf(0.123456789), rel=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Cranmer et al. Eq. 1: positive-truncated normal samples

# (parallax, error): high S/N, low S/N, negative, far in the negative tail (> 10 sigma: exponential branch).
TRUNC_CASES = [(1.0, 0.1), (0.1, 0.3), (-0.3, 0.1), (-0.95, 0.1), (-2.0, 0.1), (-50.0, 1.0)]


@pytest.fixture(scope="module")
def truncated_samples():
    plx = np.array([c[0] for c in TRUNC_CASES])
    err = np.array([c[1] for c in TRUNC_CASES])
    return plx, err, np.asarray(sample_truncated_parallax(jax.random.PRNGKey(0), plx, err, num_samples=20000))


def test_truncated_samples_match_scipy_truncnorm(truncated_samples):
    plx, err, x = truncated_samples
    assert x.shape == (20000, len(TRUNC_CASES))
    assert np.all(x > 0) and np.all(np.isfinite(x))
    for i, (mu, s) in enumerate(zip(plx, err)):
        ref = stats.truncnorm(-mu / s, np.inf, loc=mu, scale=s)
        se = ref.std() / np.sqrt(x.shape[0])
        assert abs(x[:, i].mean() - ref.mean()) < 5 * se, (mu, s)
        assert x[:, i].std() == pytest.approx(ref.std(), rel=0.05), (mu, s)
        assert stats.kstest(x[:, i], ref.cdf).pvalue > 1e-3, (mu, s)


def test_truncated_samples_key_and_zero_point():
    key = jax.random.PRNGKey(3)
    a = sample_truncated_parallax(key, 0.971, 0.2, num_samples=32, zero_point=ZP_DR2_LINDEGREN2018)
    b = sample_truncated_parallax(key, 1.0, 0.2, num_samples=32)
    assert a.shape == (32,)
    np.testing.assert_allclose(a, b, rtol=1e-5)  # the Gaussian is centred on parallax - zp
    np.testing.assert_array_equal(a, sample_truncated_parallax(key, 0.971, 0.2, 32, ZP_DR2_LINDEGREN2018))
    assert not np.allclose(
        a, sample_truncated_parallax(jax.random.PRNGKey(4), 0.971, 0.2, 32, ZP_DR2_LINDEGREN2018)
    )


def test_truncated_samples_jit_and_shapes():
    f = jax.jit(sample_truncated_parallax, static_argnames="num_samples")
    out = f(jax.random.PRNGKey(1), jnp.zeros((3, 4)), jnp.ones(4), num_samples=5)
    assert out.shape == (5, 3, 4) and bool(jnp.all(out > 0))


# ---------------------------------------------------------------------------------------------------------------
# Lindegren et al. (2021) zero-point via gaiadr3-zeropoint

needs_zero_point = pytest.mark.skipif(
    importlib.util.find_spec("zero_point") is None, reason="gaiadr3-zeropoint is not installed"
)

# Hand evaluations of Lindegren et al. (2021) Eq. A.1 with the coefficients of their Tables 9 (Z5) and 10 (Z6),
# as shipped in the package (coefficients/z5_200720.txt, z6_200720.txt), in μas.  Basis functions:
# c0 = 1, c1 = clip(ν−1.48, ±0.24), c2 = min(0.24, max(0, 1.48−ν))³, c3 = min(0, ν−1.24), c4 = max(0, ν−1.72);
# b0 = 1, b1 = sinβ, b2 = sin²β − 1/3; q_jk linearly interpolated in G between the table's G nodes.
# Z5 row G = 17.5: q00 -29.18, q01 -0.09, q02 2.41, q10 0, q11 24.5, q20 -1165, q30 189.7, q40 325.0
# Z5 row G = 16.1: q00 -31.05, q02 8.59;  Z6 row G = 17.5: q00 -24.68, q02 3.52
HAND_VALUES = [
    # (G, nu_eff, pseudocolour, ecl_lat, solved, expected zp in mas)
    (17.5, 1.48, np.nan, 0.0, 31, (-29.18 - 2.41 / 3) / 1000),  # only c0 b0 and c0 b2 survive
    (17.5, 1.72, np.nan, 90.0, 31, (-29.18 - 0.09 + 2.41 * 2 / 3 + 24.5 * 0.24) / 1000),  # c1 = 0.24, b1 = 1
    (
        17.5,
        1.30,
        np.nan,
        30.0,
        31,  # c1 = -0.18, c2 = 0.18^3, b1 = 1/2, b2 = -1/12
        (-29.18 - 0.09 * 0.5 - 2.41 / 12 + 24.5 * (-0.18) * 0.5 - 1165 * 0.18**3) / 1000,
    ),
    (16.8, 1.48, np.nan, 0.0, 31, (0.5 * (-31.05 - 29.18) - 0.5 * (8.59 + 2.41) / 3) / 1000),  # halfway in G
    (17.5, np.nan, 1.48, 0.0, 95, (-24.68 - 3.52 / 3) / 1000),  # 6-p solution uses the pseudocolour
]


@needs_zero_point
@pytest.mark.parametrize("g, nu, pc, beta, solved, expected", HAND_VALUES)
def test_lindegren2021_hand_computed_values(g, nu, pc, beta, solved, expected):
    zp, flag = lindegren2021_zero_point([g], [nu], [pc], [beta], [solved])
    assert flag[0] == ZPT_OK
    assert zp[0] == pytest.approx(expected, abs=1.5e-6)  # the package rounds to 1e-6 mas


@needs_zero_point
def test_lindegren2021_flags_and_nan():
    g = [5.0, 22.0, 15.0, 15.0, 15.0, np.nan, 15.0]
    nu = [1.5, 1.5, 1.0, np.nan, np.nan, 1.5, 1.5]
    pc = [np.nan, np.nan, np.nan, 1.1, np.nan, np.nan, np.nan]
    beta = [10.0] * 7
    solved = [31, 31, 31, 95, 95, 31, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the package's range warnings must not escape: they are flags
        zp, flag = lindegren2021_zero_point(g, nu, pc, beta, solved)
    np.testing.assert_array_equal(
        flag,
        [
            ZPT_G_OUT_OF_RANGE,
            ZPT_G_OUT_OF_RANGE,
            ZPT_COLOUR_OUT_OF_RANGE,
            ZPT_COLOUR_OUT_OF_RANGE,
            ZPT_NONFINITE_INPUT,
            ZPT_NONFINITE_INPUT,
            ZPT_NO_5P_6P_SOLUTION,
        ],
    )
    assert np.all(np.isfinite(zp[:4])) and np.all(np.isnan(zp[4:]))
    # out of the G range the package returns the value at the table edge (no extrapolation)
    edge, _ = lindegren2021_zero_point([6.0, 21.0], [1.5, 1.5], [np.nan] * 2, [10.0] * 2, [31, 31])
    np.testing.assert_allclose(zp[:2], edge, atol=1e-6)


@needs_zero_point
def test_lindegren2021_on_real_dr3_extract():
    base = data_dir()
    if base is None or not (base / "gaia_pyia" / "gdr3_sm.fits").exists():
        pytest.skip("real Gaia extracts not available (JAXSTARS_DATA_DIR/gaia_pyia/gdr3_sm.fits)")
    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy unit parsing warnings on the FITS header
        t = Table.read(base / "gaia_pyia" / "gdr3_sm.fits")
    cols = ["phot_g_mean_mag", "nu_eff_used_in_astrometry", "pseudocolour", "ecl_lat", "astrometric_params_solved"]
    zp, flag = lindegren2021_zero_point(*(t[c] for c in cols))  # masked columns accepted
    assert zp.shape == (len(t),) and np.all(np.isfinite(zp))  # every row is 5-p or 6-p with its colour
    solved = np.asarray(t["astrometric_params_solved"])
    colour = np.where(
        solved == 31, t["nu_eff_used_in_astrometry"].filled(np.nan), t["pseudocolour"].filled(np.nan)
    )
    lo, hi = np.where(solved == 31, 1.1, 1.24), np.where(solved == 31, 1.9, 1.72)
    np.testing.assert_array_equal(flag == ZPT_COLOUR_OUT_OF_RANGE, (colour <= lo) | (colour >= hi))
    # Lindegren et al. (2021): typical zero-points are a few tens of μas, negative on average.
    assert -0.04 < np.median(zp[flag == ZPT_OK]) < -0.005
    assert np.all(np.abs(zp[flag == ZPT_OK]) < 0.2)
