"""Band registry, the B/Λ colour transform with covariance propagation and missing bands, distance moduli."""

import importlib.util

import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.coordinates import Distance

from jaxstars.astro.bands import (
    BANDS,
    CRANMER_BANDS,
    FLOWER_BANDS,
    FLOWER_BANDS_2MASS,
    GREEN_BANDS,
    absolute_magnitude,
    apparent_magnitude,
    colour_covariance,
    colour_mask,
    colour_matrix,
    distance_from_modulus,
    distance_modulus,
    distance_modulus_from_parallax,
    get_band,
    magnitude_covariance,
    to_colours,
    to_magnitudes,
)

# ----------------------------------------------------------------------------------------------- registry


def test_registry_contents_and_lookup():
    assert len(GREEN_BANDS) == 13
    assert GREEN_BANDS[0] == "G_DR2" and GREEN_BANDS[3:8] == ("g", "r", "i", "z", "y")
    assert GREEN_BANDS[-5:] == ("J", "H", "Ks", "W1", "W2")
    assert FLOWER_BANDS == ("G", "BP", "RP", "g", "r", "i", "z", "y") and len(FLOWER_BANDS_2MASS) == 11
    assert CRANMER_BANDS == ("G_DR2", "BP_DR2", "RP_DR2")
    for name in GREEN_BANDS + FLOWER_BANDS_2MASS:
        band = get_band(name)
        assert band.name == name and band.wavelength_nm > 0 and band.width_nm > 0
        assert band.system in ("Vega", "AB")
    assert get_band("G_EDR3") is get_band("G") is get_band("G_DR3")
    assert get_band("K") is get_band("Ks")
    assert get_band("G").survey != get_band("G_DR2").survey  # DR2 and DR3 are distinct entries
    assert get_band("g").system == "AB" and get_band("G").system == "Vega" and get_band("W1").system == "Vega"
    # wavelengths increase along Green's order (Gaia aside)
    lam = [get_band(b).wavelength_nm for b in GREEN_BANDS[3:]]
    assert np.all(np.diff(lam) > 0)


def test_limits_quoted_from_the_papers():
    g = get_band("G")
    assert (g.bright_limit, g.faint_limit) == (5.0, 21.0) and "FLOWER" in g.limits_source
    ps1 = [(get_band(b).bright_limit, get_band(b).faint_limit) for b in "grizy"]
    assert ps1 == [(13.5, 23.3), (13.5, 23.2), (13.5, 23.1), (13.0, 22.3), (12.0, 21.4)]
    assert get_band("Ks").faint_limit == 14.3 and get_band("J").faint_limit == 15.8
    assert get_band("G_DR2").bright_limit is None  # no paper quotes it: left empty rather than invented
    assert get_band("W1").vega_to_ab == 2.699 and get_band("W2").vega_to_ab == 3.339  # Green §3.2


def test_unknown_band_error_lists_known_names():
    with pytest.raises(KeyError) as err:
        get_band("Gmag")
    for name in ("G_DR2", "BP", "W2", "Ks"):
        assert name in str(err.value)
    with pytest.raises(KeyError):
        get_band("ks")  # case-sensitive, documented


@pytest.mark.skipif(importlib.util.find_spec("pyphot") is None, reason="pyphot (filter library) not installed")
def test_registry_wavelengths_are_the_moments_of_the_tabulated_curves():
    from jaxstars.astro.extinction import tabulated_passband

    for name in BANDS:
        pb = tabulated_passband(name)
        lam, t = pb.wavelength_nm, pb.throughput
        mean = np.trapezoid(t * lam, lam) / np.trapezoid(t, lam)
        rms = np.sqrt(np.trapezoid(t * (lam - mean) ** 2, lam) / np.trapezoid(t, lam))
        assert mean == pytest.approx(get_band(name).wavelength_nm, abs=0.06)
        assert rms == pytest.approx(get_band(name).width_nm, abs=0.06)
    # Green et al. App. B quotes 640 nm and 144 nm for the Maíz Apellániz & Weiler G curve
    assert get_band("G_DR2").wavelength_nm == pytest.approx(640, abs=0.5)
    assert get_band("G_DR2").width_nm == pytest.approx(144, abs=0.5)


# ------------------------------------------------------------------------------------- B (Green) / Λ (FLOWER)


def test_colour_matrix_is_green_eq5_and_flower_eq4():
    expected = np.array([[1, 0, 0, 0], [-1, 1, 0, 0], [-1, 0, 1, 0], [-1, 0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(colour_matrix(["G", "BP", "RP", "g"]), expected)
    np.testing.assert_array_equal(colour_matrix(["G", "BP", "RP", "g"], reference="G"), expected)
    # FLOWER's example: (M_G, M_Ks) -> (M_G, M_Ks - M_G)
    x = to_colours(jnp.array([4.0, 2.5]), colour_matrix(["G", "Ks"]))
    np.testing.assert_allclose(x, [4.0, -1.5])
    # a reference in the middle: first entry m_BP, then G - BP and RP - BP in the given order
    b = colour_matrix(["G", "BP", "RP"], reference="BP")
    np.testing.assert_array_equal(b, [[0, 1, 0], [1, -1, 0], [0, -1, 1]])
    np.testing.assert_allclose(to_colours(jnp.array([10.0, 10.4, 9.3]), b), [10.4, -0.4, -1.1], atol=1e-6)
    inv = np.linalg.inv(colour_matrix(GREEN_BANDS))
    np.testing.assert_array_equal(inv, np.round(inv))  # exact integer inverse: m_i = c_i + c_0
    np.testing.assert_array_equal(inv[:, 0], 1.0)


def test_colour_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="reference"):
        colour_matrix(["G", "BP"], reference="RP")
    with pytest.raises(ValueError, match="duplicate"):
        colour_matrix(["G", "G_DR3"])
    with pytest.raises(KeyError):
        colour_matrix(["G", "V"])


def test_vector_transform_and_inverse_round_trip():
    rng = np.random.default_rng(0)
    b = colour_matrix(GREEN_BANDS, reference="r")
    m = rng.normal(15.0, 2.0, size=(7, 13))
    c = np.asarray(to_colours(m, b))
    np.testing.assert_allclose(c, m @ b.T, atol=1e-5)
    r = GREEN_BANDS.index("r")
    np.testing.assert_allclose(c[:, 0], m[:, r], atol=1e-5)
    np.testing.assert_allclose(c[:, 1], m[:, 0] - m[:, r], atol=1e-5)
    np.testing.assert_allclose(to_magnitudes(c, b), m, atol=1e-5)


def test_covariance_propagation_matches_explicit_matrix_algebra():
    rng = np.random.default_rng(1)
    b = colour_matrix(FLOWER_BANDS)
    a = rng.normal(size=(3, 8, 8))
    cov_m = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(8)  # a batch of SPD covariances
    cov_c = np.asarray(colour_covariance(cov_m, b))
    np.testing.assert_allclose(cov_c, [b @ c @ b.T for c in cov_m], rtol=1e-5, atol=1e-5)
    # hand-computed 2-band case: Var(G) = s1², Var(X-G) = s1² + s2² - 2 s12, Cov(G, X-G) = s12 - s1²
    two = np.array([[0.04, 0.01], [0.01, 0.09]])
    np.testing.assert_allclose(
        colour_covariance(two, colour_matrix(["G", "Ks"])), [[0.04, -0.03], [-0.03, 0.11]], atol=1e-7
    )
    np.testing.assert_allclose(magnitude_covariance(cov_c, b), cov_m, rtol=1e-4, atol=1e-4)


def test_missing_bands_mask_only_the_colours_that_use_them():
    b = colour_matrix(["G", "BP", "RP", "J"])
    m = jnp.array([12.0, 12.4, jnp.nan, 11.0])
    c = np.asarray(to_colours(m, b))
    np.testing.assert_allclose(c[[0, 1, 3]], [12.0, 0.4, -1.0], atol=1e-6)
    assert np.isnan(c[2])
    np.testing.assert_array_equal(colour_mask(jnp.isfinite(m), b), [True, True, False, True])
    # reference missing: nothing is defined
    assert np.all(np.isnan(to_colours(jnp.array([jnp.nan, 12.4, 11.8, 11.0]), b)))
    # inverse transform: a missing colour only loses its own band
    mm = np.asarray(to_magnitudes(c, b))
    np.testing.assert_allclose(mm[[0, 1, 3]], [12.0, 12.4, 11.0], atol=1e-6)
    assert np.isnan(mm[2])


def test_missing_bands_in_covariance():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T + np.eye(4)
    b = colour_matrix(["G", "BP", "RP", "J"])
    bad = cov.copy()
    bad[2, :] = bad[:, 2] = 0.0
    bad[2, 2] = np.inf  # Green §3.2 marks unobserved bands with infinite uncertainty
    out = np.asarray(colour_covariance(bad, b))
    keep = [0, 1, 3]
    assert np.all(np.isnan(out[2, :])) and np.all(np.isnan(out[:, 2]))
    sub = cov[np.ix_(keep, keep)]
    b_sub = colour_matrix(["G", "BP", "J"])
    np.testing.assert_allclose(out[np.ix_(keep, keep)], b_sub @ sub @ b_sub.T, rtol=1e-5)
    # NaN variance behaves the same; an explicit mask overrides the default
    bad[2, 2] = np.nan
    np.testing.assert_array_equal(np.isnan(colour_covariance(bad, b)), np.isnan(out))
    valid = np.array([True, True, True, False])
    out2 = np.asarray(colour_covariance(cov, b, valid=valid))
    assert np.all(np.isnan(out2[3])) and np.all(np.isfinite(out2[:3, :3]))


def test_transforms_are_jittable_and_differentiable_with_missing_bands():
    b = jnp.asarray(colour_matrix(FLOWER_BANDS))
    m = jnp.array([15.0, 15.4, 14.5, 15.9, 15.1, jnp.nan, 14.8, 14.7])

    def loss(x):
        c = to_colours(x, b)
        return jnp.nansum(c**2)

    g = jax.jit(jax.grad(loss))(m)
    assert np.all(np.isfinite(np.asarray(g)[[0, 1, 2, 3, 4, 6, 7]]))
    c_batched = jax.vmap(lambda x: to_colours(x, b))(jnp.stack([m, m + 1.0]))
    assert c_batched.shape == (2, 8)
    # inverse with a traced matrix works too
    np.testing.assert_allclose(jax.jit(to_magnitudes)(to_colours(m, b), b)[:5], m[:5], atol=1e-5)


# ------------------------------------------------------------------------------------------ distance modulus


def test_distance_modulus_hand_values_and_astropy():
    expected = [0.0, 5.0, 10.0, 5 * np.log10(800.0)]
    np.testing.assert_allclose(distance_modulus(jnp.array([10.0, 100.0, 1000.0, 8000.0])), expected, atol=1e-5)
    d = np.array([3.0, 47.0, 840.0, 12_000.0])
    np.testing.assert_allclose(distance_modulus(d), Distance(d, unit=u.pc).distmod.value, atol=1e-5)
    # μ = 10 − 5 log10(ϖ/mas): ϖ = 1 mas is 1 kpc, μ = 10; ϖ = 0.1 mas, μ = 15
    mu = distance_modulus_from_parallax(jnp.array([1.0, 0.1, 100.0]))
    np.testing.assert_allclose(mu, [10.0, 15.0, 0.0], atol=1e-5)
    plx = np.array([0.2, 1.19, 5.0])
    np.testing.assert_allclose(
        distance_modulus_from_parallax(plx), Distance(parallax=plx * u.mas).distmod.value, atol=1e-5
    )
    np.testing.assert_allclose(distance_modulus_from_parallax(plx), distance_modulus(1000.0 / plx), atol=1e-5)


def test_distance_modulus_round_trips_and_quantities():
    d = jnp.array([1.0, 50.0, 840.0, 25_000.0])
    np.testing.assert_allclose(distance_from_modulus(distance_modulus(d)), d, rtol=1e-5)
    assert float(distance_modulus(2.0 * u.kpc)) == pytest.approx(5 * np.log10(200.0), abs=1e-5)
    assert float(distance_modulus_from_parallax(500 * u.uas)) == pytest.approx(10 - 5 * np.log10(0.5), abs=1e-5)
    m = jnp.array([[15.0, 14.2], [18.0, 17.5]])
    mu = jnp.array([10.0, 12.0])
    M = absolute_magnitude(m, mu[:, None])
    np.testing.assert_allclose(M, [[5.0, 4.2], [6.0, 5.5]], atol=1e-6)
    np.testing.assert_allclose(apparent_magnitude(M, mu[:, None]), m, atol=1e-6)
    assert float(jax.grad(lambda x: distance_modulus(x))(100.0)) == pytest.approx(5 / (100.0 * np.log(10)))


def test_invalid_distances_and_parallaxes_give_nan_not_numbers():
    out = np.asarray(distance_modulus_from_parallax(jnp.array([-0.3, 0.0, jnp.nan, jnp.inf, 2.0])))
    assert np.all(np.isnan(out[:4])) and np.isfinite(out[4])
    assert np.all(np.isnan(distance_modulus(jnp.array([-5.0, 0.0]))))
    g = jax.grad(lambda p: jnp.nansum(distance_modulus_from_parallax(p)))(jnp.array([-1.0, 2.0]))
    assert np.all(np.isfinite(g))
