"""Distance priors: normalisation by quadrature, scipy reference densities, samples, modes, gradients, NUTS."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer import MCMC, NUTS
from scipy import integrate, stats

from jaxstars.astro.astrometry import parallax_log_likelihood
from jaxstars.astro.priors import (
    EDSDPrior,
    FlatDistancePrior,
    GeneralizedGammaPrior,
    log_prior_edsd,
    log_prior_flat,
    log_prior_generalized_gamma,
)

# (L, alpha, beta): FLOWER's training values (IMPLEMENTATION_NOTES), an EDSD-like case, and a sharp one.
GGD_PARAMS = [(1300.0, 1.5, 0.8), (1000.0, 1.0, 2.0), (400.0, 0.7, 3.2), (2500.0, 2.5, 5.0)]


def _integral(logpdf, upper=np.inf):
    value, _ = integrate.quad(lambda d: float(np.exp(logpdf(d))), 0.0, upper, limit=200)
    return value


@pytest.mark.parametrize("length", [150.0, 1000.0, 1350.0])
def test_edsd_normalised_and_matches_scipy_gamma(length):
    with jax.enable_x64(True):
        assert _integral(lambda d: log_prior_edsd(d, length)) == pytest.approx(1.0, rel=1e-7)
        d = np.array([1.0, 10.0, 500.0, 2000.0, 20000.0])
        np.testing.assert_allclose(
            log_prior_edsd(d, length), stats.gamma(3.0, scale=length).logpdf(d), rtol=1e-10, atol=1e-10
        )


@pytest.mark.parametrize("length, alpha, beta", GGD_PARAMS)
def test_generalized_gamma_normalised_and_matches_scipy(length, alpha, beta):
    with jax.enable_x64(True):
        assert _integral(lambda d: log_prior_generalized_gamma(d, length, alpha, beta)) == pytest.approx(
            1.0, rel=1e-7
        )
        # scipy's gengamma(a, c, scale): pdf ∝ x^(c a - 1) exp(-x^c), x = d / scale, so a = (beta + 1) / alpha.
        ref = stats.gengamma(a=(beta + 1.0) / alpha, c=alpha, scale=length)
        d = np.array([0.5, 30.0, 700.0, 3000.0, 12000.0])
        np.testing.assert_allclose(
            log_prior_generalized_gamma(d, length, alpha, beta), ref.logpdf(d), rtol=1e-10, atol=1e-9
        )


def test_edsd_is_generalized_gamma_with_alpha1_beta2():
    d = jnp.linspace(1.0, 8000.0, 50)
    np.testing.assert_allclose(
        log_prior_edsd(d, 900.0), log_prior_generalized_gamma(d, 900.0, 1.0, 2.0), rtol=1e-5
    )


def test_flat_prior_values_and_normalisation():
    d = jnp.array([-1.0, 0.0, 1.0, 5e4, 2e5])
    np.testing.assert_array_equal(log_prior_flat(d), [-np.inf, -np.inf, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(log_prior_flat(d, 1e5), [-np.inf, -np.inf, -np.log(1e5), -np.log(1e5), -np.inf])
    with jax.enable_x64(True):
        assert _integral(lambda x: log_prior_flat(x, 1e4), 2e4) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize(
    "logp",
    [
        lambda d: log_prior_edsd(d, 1000.0),
        lambda d: log_prior_generalized_gamma(d, 1300.0, 1.5, 0.8),
        lambda d: log_prior_flat(d),
        lambda d: log_prior_flat(d, 1e4),
    ],
)
def test_non_positive_distance_is_minus_inf_with_finite_gradient(logp):
    for d in (0.0, -3.0):
        assert logp(jnp.asarray(d)) == -jnp.inf
        assert np.isfinite(jax.grad(logp)(jnp.asarray(d)))


def test_edsd_mode_is_2L():
    length = 1350.0
    dlogp = jax.grad(lambda d: log_prior_edsd(d, length))
    assert abs(dlogp(2.0 * length)) < 1e-7
    assert dlogp(1.9 * length) > 0 > dlogp(2.1 * length)
    grid = jnp.linspace(1.0, 10 * length, 200001)
    assert float(grid[jnp.argmax(log_prior_edsd(grid, length))]) == pytest.approx(2 * length, rel=1e-3)
    assert float(EDSDPrior(length).mode) == pytest.approx(2 * length)


@pytest.mark.parametrize("length, alpha, beta", GGD_PARAMS)
def test_generalized_gamma_gradients_analytic(length, alpha, beta):
    d = jnp.array([50.0, 800.0, 4000.0])
    # d/dd log P = beta / d - alpha d^(alpha-1) / L^alpha
    expected = beta / d - alpha * d ** (alpha - 1.0) / length**alpha
    got = jax.vmap(jax.grad(lambda x: log_prior_generalized_gamma(x, length, alpha, beta)))(d)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    mode = GeneralizedGammaPrior(length, alpha, beta).mode
    assert abs(jax.grad(lambda x: log_prior_generalized_gamma(x, length, alpha, beta))(mode)) < 1e-6
    # gradients with respect to the hyper-parameters exist and are finite (hierarchical use)
    grads = jax.grad(lambda p: log_prior_generalized_gamma(d, *p).sum())((length, alpha, beta))
    assert all(np.isfinite(g) for g in grads)


def test_per_star_parameters_broadcast_and_jit():
    rng = np.random.default_rng(0)
    d = rng.uniform(10, 5000, 8)
    length = rng.uniform(500, 3000, 8)
    alpha = rng.uniform(0.5, 2.5, 8)
    beta = rng.uniform(0.0, 4.0, 8)
    vec = jax.jit(log_prior_generalized_gamma)(d, length, alpha, beta)
    loop = [log_prior_generalized_gamma(*p) for p in zip(d, length, alpha, beta)]
    np.testing.assert_allclose(vec, loop, rtol=1e-5)
    dist = GeneralizedGammaPrior(length, alpha, beta)
    assert dist.batch_shape == (8,)
    samples = np.asarray(dist.sample(jax.random.PRNGKey(0), (2500,)))
    assert samples.shape == (2500, 8)
    # each column follows its own star's prior
    np.testing.assert_allclose(samples.mean(0), dist.mean, rtol=0.1)
    np.testing.assert_allclose(dist.log_prob(d), vec, rtol=1e-6)


@pytest.mark.parametrize("length, alpha, beta", GGD_PARAMS)
def test_generalized_gamma_samples_moments_and_ks(length, alpha, beta):
    dist = GeneralizedGammaPrior(length, alpha, beta)
    x = np.asarray(dist.sample(jax.random.PRNGKey(1), (20000,)), dtype=float)
    assert np.all(x > 0)
    ref = stats.gengamma(a=(beta + 1.0) / alpha, c=alpha, scale=length)
    assert float(dist.mean) == pytest.approx(ref.mean(), rel=1e-4)
    assert float(dist.variance) == pytest.approx(ref.var(), rel=1e-3)
    se = ref.std() / np.sqrt(x.size)
    assert abs(x.mean() - ref.mean()) < 5 * se
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3


def test_edsd_samples_moments():
    length = 1000.0  # Cranmer et al. §4.1
    dist = EDSDPrior(length)
    x = np.asarray(dist.sample(jax.random.PRNGKey(2), (20000,)), dtype=float)
    assert float(dist.mean) == pytest.approx(3 * length) and float(dist.variance) == pytest.approx(3 * length**2)
    assert abs(x.mean() - 3 * length) < 5 * np.sqrt(3) * length / np.sqrt(x.size)
    assert stats.kstest(x, stats.gamma(3.0, scale=length).cdf).pvalue > 1e-3
    np.testing.assert_allclose(
        dist.log_prob(jnp.array([10.0, 2e3])), log_prior_edsd(jnp.array([10.0, 2e3]), length)
    )


def test_sampling_is_deterministic_per_key():
    dist = GeneralizedGammaPrior(1300.0, 1.5, 0.8)
    a = dist.sample(jax.random.PRNGKey(5), (20000,))  # same shape as above: no new compilation
    np.testing.assert_array_equal(a, dist.sample(jax.random.PRNGKey(5), (20000,)))
    assert not np.allclose(a, dist.sample(jax.random.PRNGKey(6), (20000,)))


def test_flat_distribution():
    flat = FlatDistancePrior(2e4)
    x = np.asarray(flat.sample(jax.random.PRNGKey(3), (20000,)))
    assert x.min() > 0 and x.max() <= 2e4
    assert stats.kstest(x, stats.uniform(0, 2e4).cdf).pvalue > 1e-3
    assert float(flat.log_prob(100.0)) == pytest.approx(-np.log(2e4))
    improper = FlatDistancePrior()
    assert float(improper.log_prob(100.0)) == 0.0 and improper.log_prob(-1.0) == -jnp.inf
    with pytest.raises(ValueError, match="improper"):
        improper.sample(jax.random.PRNGKey(0))


def test_nuts_posterior_with_generalized_gamma_prior_and_parallax_likelihood():
    """The prior as a numpyro.sample site times the Gaia parallax likelihood (a low S/N star): NUTS vs quadrature."""
    length, alpha, beta = 1300.0, 1.5, 0.8  # FLOWER's values
    plx, err, zp = 0.3, 0.2, -0.029

    def model():
        d = numpyro.sample("d", GeneralizedGammaPrior(length, alpha, beta))
        numpyro.factor("parallax", parallax_log_likelihood(plx, err, d, zp))

    mcmc = MCMC(NUTS(model), num_warmup=300, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(4))
    chain = np.asarray(mcmc.get_samples()["d"], dtype=float)
    ess = float(numpyro.diagnostics.effective_sample_size(chain[None]))
    with jax.enable_x64(True):
        grid = np.linspace(1e-3, 6e4, 600001)
        logp = np.asarray(
            log_prior_generalized_gamma(grid, length, alpha, beta) + parallax_log_likelihood(plx, err, grid, zp)
        )
    w = np.exp(logp - logp.max())
    mean = np.trapezoid(w * grid, grid) / np.trapezoid(w, grid)
    sd = np.sqrt(np.trapezoid(w * grid**2, grid) / np.trapezoid(w, grid) - mean**2)
    assert abs(chain.mean() - mean) < 5 * sd / np.sqrt(ess)
    assert chain.std() == pytest.approx(sd, rel=0.15)


def test_improper_flat_prior_works_in_nuts():
    def model():
        d = numpyro.sample("d", FlatDistancePrior())
        numpyro.factor("parallax", parallax_log_likelihood(2.0, 0.1, d))

    mcmc = MCMC(NUTS(model), num_warmup=200, num_samples=500, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(5))
    assert np.median(np.asarray(mcmc.get_samples()["d"])) == pytest.approx(500.0, rel=0.05)


def test_healpix_pixel_from_gaia_source_id_matches_catalog_positions():
    """Level-5 pixels from source_id agree with the pixel of the source's (ra, dec) (astropy-healpix, NESTED, ICRS)."""
    from astropy_healpix import HEALPix

    from jaxstars.astro.priors import generalized_gamma_parameters_per_pixel, healpix_pixel_from_source_id
    from jaxstars.data import data_dir

    base = data_dir()
    if base is None or not (base / "gaia_pyia" / "gdr3_sm.fits").exists():
        pytest.skip("real Gaia extract not available (set JAXSTARS_DATA_DIR)")
    import astropy.units as u
    from astropy.table import Table

    t = Table.read(base / "gaia_pyia" / "gdr3_sm.fits")
    pix = healpix_pixel_from_source_id(np.asarray(t["source_id"]), level=5)
    hp = HEALPix(nside=32, order="nested")
    expected = hp.lonlat_to_healpix(np.asarray(t["ra"]) * u.deg, np.asarray(t["dec"]) * u.deg)
    assert np.mean(pix == expected) > 0.99
    table = {"alpha": np.arange(12 * 4**5) * 0.0 + 1.5, "beta": np.full(12 * 4**5, 0.8),
             "length_scale": np.arange(12 * 4**5, dtype=float)}
    params = generalized_gamma_parameters_per_pixel(np.asarray(t["source_id"]), table, level=5)
    np.testing.assert_array_equal(params["length_scale"], pix.astype(float))
    with pytest.raises(ValueError, match="shape"):
        generalized_gamma_parameters_per_pixel(np.asarray(t["source_id"]), {**table, "beta": np.ones(3)})


def test_geometric_distance_matches_quadrature():
    """Mean, std and median of likelihood × GGD prior vs an independent trapezoid integral on a linear grid."""
    from jaxstars.astro.priors import geometric_distance

    plx = np.array([5.0, 1.0, 0.3, -0.2])
    err = np.array([0.05, 0.2, 0.25, 0.3])
    zp = -0.02
    mean, std, median = geometric_distance(plx, err, zp, (1300.0, 1.5, 0.8), n_grid=4096)
    d = np.linspace(1.0, 40000.0, 400_001)
    for i in range(plx.size):
        like = np.exp(-0.5 * ((plx[i] - zp - 1000.0 / d) / err[i]) ** 2)
        post = like * d**0.8 * np.exp(-((d / 1300.0) ** 1.5))
        post /= np.trapezoid(post, d)
        m = np.trapezoid(post * d, d)
        s = np.sqrt(np.trapezoid(post * (d - m) ** 2, d))
        cdf = np.cumsum(post) * (d[1] - d[0])
        assert mean[i] == pytest.approx(m, rel=2e-3)
        assert std[i] == pytest.approx(s, rel=1e-2)
        assert median[i] == pytest.approx(np.interp(0.5, cdf, d), rel=3e-3)
    # bad inputs give NaN, never an exception
    out = geometric_distance([1.0, np.nan, 1.0], [0.1, 0.1, 0.0])
    assert np.isfinite(out[0][0]) and np.isnan(out[0][1]) and np.isnan(out[0][2])
