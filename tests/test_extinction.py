"""Extinction laws: Cranmer's constants, the blackbody-through-passband provider, dustapprox, Zhang & Yuan (2023).

Independent references: the `extinction` package (curve values), a plain-numpy quadrature over the raw passband
curves, dustapprox's own evaluator, the Zhang & Yuan authors' `extinction_coefficient` package, and numbers printed
in the papers (Cranmer §3.2, Green App. B).
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstars.astro.extinction import (
    CRANMER_COEFFICIENTS,
    ZHANG_YUAN_SIMPLE,
    Passband,
    blackbody_law,
    constant_law,
    cranmer_law,
    dustapprox_law,
    extinction_curve,
    gaussian_passband,
    tabulated_passband,
    zhang_yuan_law,
    zhang_yuan_teff_from_bp_rp0,
)

extinction_pkg = pytest.importorskip("extinction", reason="the `extinction` package is needed for curve values")
needs_pyphot = pytest.mark.skipif(
    importlib.util.find_spec("pyphot") is None, reason="pyphot (offline filter-curve library) not installed"
)
needs_dustapprox = pytest.mark.skipif(
    importlib.util.find_spec("dustapprox") is None, reason="dustapprox (precomputed models) not installed"
)

# ------------------------------------------------------------------------------------------------ Cranmer


def test_cranmer_constants():
    law = cranmer_law()
    assert law.entries == ("G_DR2", "BP_DR2-RP_DR2", "BP_DR2-G_DR2") and law.reddening == "E(g-r)"
    np.testing.assert_allclose(law.coefficients(0.3), [2.71, 0.85, 0.39], rtol=1e-6)
    np.testing.assert_allclose(law.extinction(jnp.array([0.0, 0.2])), [[0, 0, 0], [0.542, 0.17, 0.078]], atol=1e-6)
    assert law.in_range(jnp.array([0.1, jnp.nan, -0.1])).tolist() == [[True] * 3, [False] * 3, [False] * 3]
    assert list(CRANMER_COEFFICIENTS.values()) == [2.71, 0.85, 0.39]
    with pytest.raises(ValueError):
        constant_law("bad", ("G",), (1.0, 2.0), "A_V", "none")


# ------------------------------------------------------------------------------------------------ curves


def test_extinction_curve_is_the_extinction_package_and_checks_ranges():
    lam = np.array([400.0, 550.0, 1250.0, 2200.0])
    np.testing.assert_array_equal(
        extinction_curve("odonnell94", lam), extinction_pkg.odonnell94(lam * 10, 1.0, 3.1)
    )
    np.testing.assert_array_equal(
        extinction_curve("fitzpatrick99", lam, r_v=2.5), extinction_pkg.fitzpatrick99(lam * 10, 1.0, 2.5)
    )
    with pytest.raises(ValueError, match="outside the range"):
        extinction_curve("odonnell94", [3400.0])  # W1 is beyond CCM/O'Donnell's 3.3 µm
    with pytest.raises(ValueError, match="unknown extinction curve"):
        extinction_curve("cardelli", [500.0])


@pytest.mark.parametrize("curve", ["odonnell94", "fitzpatrick99"])
def test_narrow_passband_recovers_the_curve_value(curve):
    # a 0.5 nm wide passband samples A_λ/A_V at one wavelength, whatever the source temperature
    bands = []
    for lam0 in (450.0, 550.0, 800.0, 1600.0):
        lam = np.linspace(lam0 - 2.0, lam0 + 2.0, 81)
        bands.append(
            Passband(f"narrow{lam0:.0f}", lam, np.exp(-0.5 * ((lam - lam0) / 0.5) ** 2), "photon", "test")
        )
    law = blackbody_law(bands, curve=curve)
    expected = getattr(extinction_pkg, curve)(np.array([4500.0, 5500.0, 8000.0, 16000.0]), 1.0, 3.1)
    for teff in (4000.0, 9000.0):
        np.testing.assert_allclose(law.coefficients(0.0, teff), expected, rtol=2e-4)
        np.testing.assert_allclose(law.coefficients(2.0, teff), expected, rtol=2e-4)  # narrow band: linear
    ebv_law = blackbody_law(bands, curve=curve, r_v=2.8, reddening="E(B-V)")
    expected_28 = getattr(extinction_pkg, curve)(np.array([4500.0, 5500.0, 8000.0, 16000.0]), 1.0, 2.8)
    np.testing.assert_allclose(ebv_law.coefficients(0.0, 6000.0), 2.8 * expected_28, rtol=2e-4)


def _numpy_band_extinction(pb, teff, a_v, curve="odonnell94"):
    """Independent plain-numpy Green Eq. B19 on a fine grid of the raw curve."""
    lam = np.linspace(pb.wavelength_nm.min(), pb.wavelength_nm.max(), 20_000)
    thr = np.interp(lam, pb.wavelength_nm, pb.throughput)
    hc_k = 6.62607015e-34 * 2.99792458e8 / 1.380649e-23 * 1e9  # nm K
    w = thr * lam * lam**-5.0 / np.expm1(hc_k / (lam * teff))
    a = getattr(extinction_pkg, curve)(lam * 10.0, 1.0, 3.1)
    if a_v == 0:
        return np.trapezoid(w * a, lam) / np.trapezoid(w, lam)
    return -2.5 * np.log10(np.trapezoid(w * 10 ** (-0.4 * a_v * a), lam) / np.trapezoid(w, lam)) / a_v


@needs_pyphot
def test_blackbody_law_matches_an_independent_numpy_quadrature():
    bands = ["G_DR2", "BP_DR2", "RP_DR2", "g", "z", "Ks"]
    law = blackbody_law(bands)
    for teff, a_v in ((4500.0, 0.0), (7000.0, 0.0), (7000.0, 3.0)):
        ref = [_numpy_band_extinction(tabulated_passband(b), teff, a_v) for b in bands]
        np.testing.assert_allclose(law.coefficients(a_v, teff), ref, rtol=1e-3)


@needs_pyphot
def test_cranmer_coefficients_reproduced_where_possible():
    """Cranmer §3.2: 7000 K blackbody, O'Donnell (1994), R_V = 3.1, Gaia DR2 and PS1 g, r.

    Achieved: A_G/E(g−r) = 2.97 against the published 2.71 (9.4 % high; Fitzpatrick 1999 gives 2.65, 2.3 % low).
    The published colour excesses E(BP−RP) = 0.85 and E(BP−G) = 0.39 E(g−r) are NOT reproduced: every standard
    curve gives ≈ 1.5 and ≈ 0.69, which the empirical Zhang & Yuan (2023) coefficients confirm (1.42, 0.72).
    """
    g_bp_rp_g_r = ["G_DR2", "BP_DR2", "RP_DR2", "g", "r"]
    G, BP, RP, g, r = np.asarray(blackbody_law(g_bp_rp_g_r, "odonnell94").coefficients(0.0, 7000.0))
    egr = g - r
    assert G / egr == pytest.approx(2.71, rel=0.10)
    G99, _, _, g99, r99 = np.asarray(blackbody_law(g_bp_rp_g_r, "fitzpatrick99").coefficients(0.0, 7000.0))
    assert G99 / (g99 - r99) == pytest.approx(2.71, rel=0.03)
    # colour excesses: agree with the empirical law within 7 %, disagree with Cranmer's printed numbers
    zy = ZHANG_YUAN_SIMPLE
    zy_egr = zy["g"] - zy["r"]
    assert (BP - RP) / egr == pytest.approx(zy["BP-RP"] / zy_egr, rel=0.07)
    assert (BP - G) / egr == pytest.approx((zy["BP"] - zy["G"]) / zy_egr, rel=0.07)
    assert G / egr == pytest.approx(zy["G"] / zy_egr, rel=0.12)
    assert (BP - RP) / egr > 1.4 * 0.85 and (BP - G) / egr > 1.4 * 0.39  # the documented discrepancy
    # Gaussian passbands (no filter library): A_G/E(g−r) within 8 % of the tabulated result
    Gg, _, _, gg, rg = np.asarray(blackbody_law(g_bp_rp_g_r, passbands="gaussian").coefficients(0.0, 7000.0))
    assert Gg / (gg - rg) == pytest.approx(G / egr, rel=0.08)


@needs_pyphot
def test_non_linear_extinction_of_gaia_g_green_appendix_b():
    """Green App. B: 6000 K blackbody, MAW G, F99: ΔA_G = −0.037 mag at A_G = 1 mag (perturbative −0.040).

    We obtain −0.048 (the `extinction` package's F99 optical spline differs from the SVO F99 + Indebetouw curve
    Green used; O'Donnell 94 gives −0.039): asserted within −0.06 … −0.03.
    """
    law = blackbody_law(["G_DR2"], curve="fitzpatrick99")
    k0 = float(law.coefficients(0.0, 6000.0)[0])
    a_v = jnp.linspace(1.0, 1.5, 501)
    a_g = np.asarray(jax.vmap(lambda a: law.extinction(a, 6000.0)[0])(a_v))
    a_v1 = float(np.interp(1.0, a_g, np.asarray(a_v)))
    delta = 1.0 - k0 * a_v1
    assert -0.06 < delta < -0.03
    # coefficient falls with dust, as Eq. B30 predicts (ΔA ∝ −A²)
    c = np.asarray(law.coefficients(jnp.array([0.0, 1.0, 3.0]), 6000.0))[:, 0]
    assert c[0] > c[1] > c[2]


def test_gaussian_passband_needs_no_library():
    pb = gaussian_passband("r")
    assert pb.source.startswith("APPROXIMATION") and pb.wavelength_nm.min() > 100
    law = blackbody_law(["g", "r", "W2"], curve="fitzpatrick99", passbands="gaussian")
    c = np.asarray(law.coefficients(0.0, 5000.0))
    assert np.all(c > 0) and c[0] > c[1] > c[2]
    with pytest.raises(ValueError, match="outside the range"):
        blackbody_law(["W2"], curve="odonnell94", passbands="gaussian")


# -------------------------------------------------------------------------------------------- dustapprox


@needs_dustapprox
def test_dustapprox_law_matches_dustapprox_evaluator():
    models = pytest.importorskip("dustapprox.models", reason="dustapprox's evaluator needs pandas/sklearn/pyphot")
    import pandas as pd

    lib = models.PrecomputedModel()
    infos = [i for i in lib.find(extinction="F99") if i.model["feature_names"] == ["A0", "R0", "teffnorm"]]
    bands = {"G": "GAIA_GAIA3.G", "BP": "GAIA_GAIA3.Gbp", "RP": "GAIA_GAIA3.Grp"}
    bands.update({"J": "2MASS_2MASS.J", "Ks": "2MASS_2MASS.Ks", "W2": "WISE_WISE.W2"})
    law = dustapprox_law(list(bands), curve="F99", r_v=3.3)
    a0 = np.array([0.01, 0.5, 2.0, 8.0, 15.0])
    teff = np.array([3600.0, 5000.0, 6500.0, 9000.0, 20000.0])
    ours = np.asarray(law.coefficients(a0, teff))
    for k, key in enumerate(bands.values()):
        info = next(i for i in infos if key in i.passbands)
        ref = lib.load_model(info, passband=key).predict(pd.DataFrame({"A0": a0, "R0": 3.3, "teff": teff}))
        np.testing.assert_allclose(ours[:, k], np.asarray(ref), rtol=2e-5, atol=2e-6)


@needs_dustapprox
def test_dustapprox_law_ranges_and_errors():
    law = dustapprox_law(["G", "Ks"])
    a0 = jnp.array([0.0, 1.0, 25.0, 1.0, -0.1])
    teff = jnp.array([5000.0, 3000.0, 5000.0, 60000.0, 5000.0])
    flags = np.asarray(law.in_range(a0, teff))
    assert flags[:, 0].tolist() == [True, False, False, False, False]
    assert not np.any(np.asarray(dustapprox_law(["G"], r_v=6.0).in_range(1.0, 5000.0)))
    with pytest.raises(KeyError, match="blackbody_law"):
        dustapprox_law(["g"])  # no PS1 model in dustapprox
    with pytest.raises(KeyError):
        dustapprox_law(["G_DR2"])


@needs_dustapprox
@needs_pyphot
def test_dr3_passband_approximation_against_dustapprox():
    """Blackbody + F99 through the DR2 MAW curves (our stand-in for (E)DR3) vs dustapprox (Kurucz, real EDR3).

    Ratios to A_G cancel the different A_V/A0 normalisations of the two F99 implementations; they agree within
    4 % at 5000–7000 K (including the Kurucz-vs-blackbody difference).
    """
    bands = ["G", "BP", "RP"]
    ours = blackbody_law(bands, curve="fitzpatrick99")
    theirs = dustapprox_law(bands, curve="F99")
    for teff in (5000.0, 7000.0):
        o = np.asarray(ours.coefficients(0.01, teff))
        t = np.asarray(theirs.coefficients(0.01, teff))
        np.testing.assert_allclose(o[1:] / o[0], t[1:] / t[0], rtol=0.04)
        np.testing.assert_allclose(o, t, rtol=0.12)


# ----------------------------------------------------------------------------------------- Zhang & Yuan


def test_zhang_yuan_printed_values():
    # single-valued coefficients (authors' table) and a value printed by their package: R_G(5000 K, 0.1) = 2.36859
    assert (
        ZHANG_YUAN_SIMPLE["G"] == 2.364
        and ZHANG_YUAN_SIMPLE["BP-RP"] == 1.261
        and ZHANG_YUAN_SIMPLE["Ks"] == 0.306
    )
    law = zhang_yuan_law(["G", "Ks"])
    np.testing.assert_allclose(law.coefficients(0.1, 5000.0), [2.36859, 0.306], atol=2e-5)
    # hand evaluation of the BP polynomial at T = 6000 K, E = 0.3
    t, e = 6000.0, 0.3
    bp = -1.27e-11 * t**3 + 2.76e-07 * t**2 - 0.00188 * t - 0.673 * e**2 - 0.531 * e + 7.185
    np.testing.assert_allclose(zhang_yuan_law(["BP"]).coefficients(e, t), [bp], rtol=1e-5)


def test_zhang_yuan_clipping_and_flags():
    law = zhang_yuan_law(["G", "g", "BP-RP"])
    np.testing.assert_allclose(law.coefficients(0.2, 3000.0), law.coefficients(0.2, 4000.0), rtol=1e-6)
    np.testing.assert_allclose(law.coefficients(0.9, 6000.0), law.coefficients(0.5, 6000.0), rtol=1e-6)
    c = np.asarray(law.coefficients(0.2, jnp.array([9500.0, 8000.0])))
    assert c[0, 1] == pytest.approx(c[1, 1], rel=1e-6) and c[0, 0] != pytest.approx(c[1, 0], rel=1e-4)
    flags = np.asarray(
        law.in_range(jnp.array([0.2, 0.2, 0.6, -0.01]), jnp.array([9500.0, 5000.0, 5000.0, 5000.0]))
    )
    assert flags.tolist() == [[True, False, False], [True] * 3, [False] * 3, [False] * 3]
    with pytest.raises(KeyError, match="DR3"):
        zhang_yuan_law(["G_DR2"])


def test_zhang_yuan_colour_argument():
    # Teff from intrinsic (BP−RP)₀: the authors' quartic, 4000 K beyond (BP−RP)₀ = 1.61
    x = 0.8
    hand = (((1187.26193963 * x - 4925.6478914) * x + 8268.06749031) * x - 9038.59055765) * x + 9693.00903561
    assert float(zhang_yuan_teff_from_bp_rp0(x)) == pytest.approx(hand, rel=1e-6)
    assert float(zhang_yuan_teff_from_bp_rp0(1.7)) == 4000.0
    by_colour = zhang_yuan_law(["G", "RP"], argument="bp_rp0")
    by_teff = zhang_yuan_law(["G", "RP"])
    np.testing.assert_allclose(by_colour.coefficients(0.1, x), by_teff.coefficients(0.1, hand), rtol=1e-5)
    assert not np.any(np.asarray(by_colour.in_range(0.1, 1.7)))


def test_zhang_yuan_against_the_authors_package():
    pkg = pytest.importorskip("extinction_coefficient", reason="authors' package (needs pandas) not installed")
    bands = ["G", "BP", "RP", "g", "r", "i", "z", "y", "J", "H", "Ks", "W1", "W2", "BP-RP"]
    law = zhang_yuan_law(bands)
    teff = np.array([3500.0, 4200.0, 5000.0, 6100.0, 7500.0, 8700.0, 11000.0])
    ebv = np.array([0.0, 0.05, 0.12, 0.3, 0.45, 0.5, 0.8])
    ours = np.asarray(law.coefficients(ebv, teff))
    for k, band in enumerate(bands):
        ref = pkg.extinction_coefficient([band] * len(teff), EBV=ebv.tolist(), Teff=teff.tolist())
        np.testing.assert_allclose(ours[:, k], ref, rtol=1e-5, atol=1e-5, err_msg=band)


# -------------------------------------------------------------------------------------- every law in JAX


def _laws():
    laws = [
        ("cranmer", cranmer_law(), 7000.0),
        ("zhang_yuan", zhang_yuan_law(["G", "BP", "RP", "J"]), 5200.0),
        ("zhang_yuan_colour", zhang_yuan_law(["G", "BP-RP"], argument="bp_rp0"), 0.9),
        ("blackbody_gaussian", blackbody_law(["G", "r", "Ks"], passbands="gaussian"), 5200.0),
    ]
    if importlib.util.find_spec("pyphot") is not None:
        laws.append(("blackbody", blackbody_law(["G_DR2", "BP_DR2", "RP_DR2"], curve="fitzpatrick99"), 5200.0))
    if importlib.util.find_spec("dustapprox") is not None:
        laws.append(("dustapprox", dustapprox_law(["G", "BP", "RP", "W1"]), 5200.0))
    return [pytest.param(law, x, id=name) for name, law, x in laws]


@pytest.mark.parametrize("law,x", _laws())
def test_every_law_is_jittable_differentiable_and_vmappable(law, x):
    n = len(law.entries)

    def total_extinction(E, xx):
        return jnp.sum(law.extinction(E, xx))

    grad = jax.jit(jax.grad(total_extinction, argnums=(0, 1)))
    for E in (0.0, 0.25):
        gE, gx = grad(E, x)
        assert np.isfinite(gE) and np.isfinite(gx) and gE > 0
    E = jnp.array([0.0, 0.1, 0.3])
    xs = jnp.full(3, x)
    out = jax.vmap(law.coefficients)(E, xs)
    assert out.shape == (3, n) and np.all(np.isfinite(out))
    np.testing.assert_allclose(law.coefficients(E, xs), out, rtol=1e-6)
    flags = law.in_range(E, xs)
    assert flags.shape == (3, n) and flags.dtype == jnp.bool_ and bool(jnp.all(flags))
    # the flag is computed under jit without raising on bad input
    bad = jax.jit(law.in_range)(jnp.array([jnp.nan, -1.0]), jnp.array([x, x]))
    assert not bool(jnp.any(bad))


def test_laws_follow_x64():
    with jax.enable_x64(True):
        c = zhang_yuan_law(["G"]).coefficients(jnp.float64(0.1), jnp.float64(5000.0))
        assert c.dtype == jnp.float64
        np.testing.assert_allclose(c, [2.36859], atol=1e-9)
