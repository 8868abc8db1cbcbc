"""Stellar model (Green et al.): released-network port, covariance / χ² / reddening update, I/O, density map."""

from __future__ import annotations

import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstars.data import data_dir
from jaxstars.models.stellar import (
    DensityMap,
    StellarModel,
    StellarModelError,
    StellarNetwork,
    prepare_stars,
    read_release_catalog,
    released_model,
)
from jaxstars.models.stellar.covariance import (
    batch_chi2,
    batch_reddening_update,
    batch_whitening,
    colour_covariance,
    magnitude_covariance,
    star_arrays,
)

RELEASE = (data_dir() / "green2020") if data_dir() is not None else None
needs_release = pytest.mark.skipif(
    RELEASE is None or not (RELEASE / "green2020_nn_model.h5").exists(),
    reason="real data green2020/ not found (set JAXSTARS_DATA_DIR)",
)


def _numpy_keras_forward(path, norm_path, theta, E):
    """Independent plain-numpy forward pass of the Keras graph: BM(h2(h1(θ))) + BA(E · exp(R θ)) (Fig. 3)."""
    with open(norm_path) as fh:
        norm = json.load(fh)
    x = (theta - np.asarray(norm["theta_med"])) / np.asarray(norm["theta_std"])
    with h5py.File(path, "r") as f:
        w = f["model_weights"]

        def layer(name, key):
            return np.asarray(w[name][name][key], np.float64)

        h = x
        for name in ("stellar_model_hidden_1", "stellar_model_hidden_2"):
            h = 1.0 / (1.0 + np.exp(-(h @ layer(name, "kernel:0") + layer(name, "bias:0"))))
        bm = h @ layer("BM", "kernel:0") + layer("BM", "bias:0")
        r = np.exp(x @ layer("R", "kernel:0") + layer("R", "bias:0"))
        ba = (E[:, None] * r) @ layer("BA", "kernel:0")
    return bm + ba, r


@needs_release
def test_released_network_matches_numpy_keras_forward():
    model = released_model()
    grid = np.stack(
        np.meshgrid(np.linspace(3800, 8200, 7), np.linspace(0.5, 5.0, 6), np.linspace(-2.0, 0.5, 5)), -1
    ).reshape(-1, 3)
    E = np.tile(np.array([0.0, 0.1, 0.5, 1.0, 2.5]), len(grid) // 5 + 1)[: len(grid)]
    ref, ref_r = _numpy_keras_forward(
        RELEASE / "green2020_nn_model.h5", RELEASE / "green2020_theta_normalization.json", grid, E
    )
    ours = np.asarray(model.colour_output(grid, E), float)
    assert np.max(np.abs(ours - ref)) <= 1e-4
    assert np.max(np.abs(np.asarray(model.extinction_vector(grid)) - ref_r)) <= 1e-4
    # Eq. 2 in magnitude space is the same thing through B⁻¹
    mags = np.asarray(model.magnitudes(grid, 0.0, E), float)
    assert np.max(np.abs(mags @ model.network.B.T - ref)) <= 1e-4


@needs_release
def test_released_reddening_update_reproduces_release_r_fit():
    """Eqs. 8–9 with the released network give the release's own fitted reddenings (r_fit, r_var)."""
    model = released_model()
    table = read_release_catalog(RELEASE / "green2020_sample.h5")
    stars = prepare_stars(table).subset(np.arange(1500))
    arrays = star_arrays(model.network, stars)
    E, V = batch_reddening_update(model.network, model.params, arrays)
    ok = stars.valid
    np.testing.assert_allclose(np.asarray(E)[ok], stars.labels["r_fit"][ok], atol=1e-4)
    np.testing.assert_allclose(np.asarray(V)[ok], stars.labels["r_var"][ok], rtol=1e-3, atol=1e-7)


def _toy():
    net = StellarNetwork(("G", "BP", "RP", "J"), hidden=(8,), activation="tanh")
    params = net.init(jax.random.PRNGKey(1))
    params["R"]["w"] = params["R"]["w"] * 0.3
    return net, params


def test_covariance_matches_finite_difference_propagation():
    """Eq. 4's gradient term by jacfwd equals a central-difference Jacobian; C_c = B C_m Bᵀ."""
    net, params = _toy()
    theta_n = jnp.array([0.3, -0.2, 0.1])
    cov_n = jnp.array([[0.02, 0.005, 0.0], [0.005, 0.03, 0.0], [0.0, 0.0, 0.01]])
    E, E_var, mag_var, mu_var = 0.4, 0.01, jnp.full(4, 0.03**2), 0.02
    cov = np.asarray(magnitude_covariance(net, params, theta_n, cov_n, E, E_var, mag_var, mu_var), float)

    def f(t):
        return np.asarray(net.magnitudes(params, jnp.asarray(t), 0.0, E), float)

    h = 1e-3
    J = np.stack([(f(theta_n + h * e) - f(theta_n - h * e)) / (2 * h) for e in np.eye(3)], axis=1)
    R = np.asarray(net.extinction_vector(params, theta_n), float)
    expected = J @ np.asarray(cov_n) @ J.T + E_var * np.outer(R, R) + mu_var + np.diag(np.asarray(mag_var))
    np.testing.assert_allclose(cov, expected, rtol=2e-3, atol=1e-7)
    B = net.B
    np.testing.assert_allclose(
        np.asarray(colour_covariance(net, jnp.asarray(cov))), B @ cov @ B.T, rtol=1e-5, atol=1e-8
    )


def _toy_stars(net, params, n=40, seed=0):
    rng = np.random.default_rng(seed)
    theta = np.asarray(net.denormalise(rng.normal(size=(n, 3)) * 0.5))
    E = rng.uniform(0, 0.5, n)
    plx = rng.uniform(0.5, 5.0, n)
    mu = 10 - 5 * np.log10(plx)
    mag = np.asarray(net.magnitudes(params, net.normalise(theta), mu, E)) + rng.normal(0, 0.03, (n, 4))
    err = np.full((n, 4), 0.03)
    mag[::5, 2] = np.nan  # missing band
    err[1::7, 3] = 0.5  # too noisy -> unobserved
    err[2::11, 1] = -1.0  # bad error -> unobserved + flag
    plx_err = np.where(np.arange(n) % 3 == 0, plx, 0.02 * plx)  # every third star: S/N 1 -> colours only
    plx_obs = plx.copy()
    plx_obs[::9] = -0.3  # negative parallax: valid data, no μ
    cov = np.repeat(np.diag(np.asarray(net.theta_std) ** 2 * 0.01)[None], n, axis=0)
    table = {
        "mag": mag, "mag_err": err, "bands": net.bands, "parallax": plx_obs, "parallax_err": plx_err, "theta": theta,
        "theta_cov": cov, "E": E, "E_err": np.full(n, 0.05),
    }  # fmt: skip
    return prepare_stars(table, floors="none"), mu


def _numpy_chi2(net, params, stars, E, E_var):
    """Plain numpy/scipy χ² of Eqs. 4–14 with explicit Jacobians and matrix inverses (no masking trick)."""
    out = []
    B = net.B
    for i in range(len(stars)):
        tn = np.asarray(net.normalise(stars.theta[i]), float)
        cn = np.asarray(net.normalise_cov(stars.theta_cov[i]), float)

        def mean(t, i=i):
            return np.asarray(net.magnitudes(params, jnp.asarray(t), 0.0, E[i]), float)

        h = 1e-3
        J = np.stack([(mean(tn + h * e) - mean(tn - h * e)) / (2 * h) for e in np.eye(3)], axis=1)
        R = np.asarray(net.extinction_vector(params, jnp.asarray(tn)), float)
        var = np.where(stars.band_obs[i], stars.mag_var[i], np.inf)
        cm = J @ cn @ J.T + E_var[i] * np.outer(R, R) + stars.mu_var[i] + np.diag(np.where(np.isinf(var), 0, var))
        cc = B @ cm @ B.T
        obs = stars.colour_obs[i]
        pred = B @ mean(tn)
        y = B @ (stars.mag[i] - stars.mu[i])
        d = (pred - y)[obs]
        out.append(float(d @ np.linalg.solve(cc[np.ix_(obs, obs)], d)))
    return np.array(out)


def test_chi2_masks_match_numpy_reference():
    """Whitened χ² (Eqs. 10–14) with masks = numpy χ² on the observed block; bad inputs flagged, not dropped."""
    net, params = _toy()
    stars, _ = _toy_stars(net, params)
    assert stars.flags[2] & 16  # bad error flagged
    assert not stars.plx_ok[0] and not stars.plx_ok[9]  # S/N 1 and negative parallax: colours only
    assert stars.valid.mean() > 0.9 and not stars.valid[stars.colour_obs.sum(1) < 2].any()
    arrays = star_arrays(net, stars)
    E = jnp.asarray(stars.E0, jnp.float32)
    V = jnp.asarray(stars.E0_var, jnp.float32)
    W = batch_whitening(net, params, arrays, E, V)
    ours = np.asarray(batch_chi2(net, params, W, arrays, E), float)
    ref = _numpy_chi2(net, params, stars, np.asarray(E), np.asarray(V))
    np.testing.assert_allclose(ours, ref, rtol=5e-3, atol=1e-3)
    # dropping c_0 when the parallax is unusable: changing μ of such a star changes nothing
    j = 0
    shifted = stars.subset(np.array([j]))
    shifted = type(shifted)(**{**shifted.__dict__, "mag": shifted.mag + 3.0 * ~shifted.plx_ok[:, None]})
    a1 = star_arrays(net, shifted)
    W1 = batch_whitening(net, params, a1, E[:1], V[:1])
    np.testing.assert_allclose(np.asarray(batch_chi2(net, params, W1, a1, E[:1])), ours[:1], rtol=1e-4)


def test_reddening_update_is_gaussian_posterior():
    """Eqs. 8–9 equal a brute-force 1-D posterior mean / variance over E on a fine grid (before clipping)."""
    net, params = _toy()
    stars, _ = _toy_stars(net, params, n=6, seed=3)
    arrays = star_arrays(net, stars)
    E, V = batch_reddening_update(net, params, arrays)
    grid = np.linspace(-2, 3, 20001)
    for i in range(len(stars)):
        a = jax.tree_util.tree_map(lambda x, i=i: x[i : i + 1], arrays)
        zero = jnp.zeros(1)
        W = np.asarray(batch_whitening(net, params, a, zero, zero))[0]
        tn = a.theta_n[0]
        base = np.asarray(net.colours(params, tn), float)
        r = np.asarray(net.extinction_vector(params, tn), float) @ net.B.T
        y = np.asarray(a.y[0], float)
        resid = (y[None] - base[None] - grid[:, None] * r[None]) @ W.T
        logp = -0.5 * np.sum(resid**2, axis=1) - 0.5 * (grid - stars.E0[i]) ** 2 / stars.E0_var[i]
        p = np.exp(logp - logp.max())
        p /= p.sum()
        mean = np.sum(p * grid)
        var = np.sum(p * (grid - mean) ** 2)
        expected_mean = max(mean, 0.0)
        assert abs(float(E[i]) - expected_mean) < 2e-3
        assert float(V[i]) >= 0.02**2 - 1e-9
        if mean > 0.05:
            assert abs(float(V[i]) - max(var, 0.02**2 + (0.1 * expected_mean) ** 2)) / var < 2e-2


def test_save_load_roundtrip_and_corrupt(tmp_path):
    net, params = _toy()
    dens = DensityMap.from_training(
        np.asarray(net.denormalise(np.random.default_rng(0).normal(size=(200, 3)))),
        np.ones((200, 4), bool),
        ["parallax", "BP", "RP", "J"],
        n_grid=12,
    )
    model = StellarModel(net, params, dens, {"note": "toy"})
    path = model.save(tmp_path / "m")
    loaded = StellarModel.load(tmp_path / "m")
    theta = np.array([[5000.0, 4.0, 0.0], [6000.0, 3.0, -1.0]])
    np.testing.assert_array_equal(
        np.asarray(loaded.magnitudes(theta, 1.0, 0.3)), np.asarray(model.magnitudes(theta, 1.0, 0.3))
    )
    np.testing.assert_array_equal(loaded.density.density, dens.density)
    assert loaded.info["note"] == "toy"
    raw = bytearray(path.read_bytes())
    (tmp_path / "trunc.npz").write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(StellarModelError):
        StellarModel.load(tmp_path / "trunc.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(StellarModelError):
        StellarModel.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        StellarModel.load(tmp_path / "missing")


def test_density_map_kde_peak_and_coverage():
    rng = np.random.default_rng(0)
    theta = np.column_stack([rng.normal(5500, 300, 500), rng.normal(4.3, 0.2, 500), rng.normal(-0.2, 0.2, 500)])
    observed = np.ones((500, 2), bool)
    observed[250:, 1] = False
    dens = DensityMap.from_training(theta, observed, ["parallax", "BP"], n_grid=30)
    assert dens.density.max() == pytest.approx(1.0)
    centre = np.array([[5500.0, 4.3, -0.2]])
    far = np.array([[8000.0, 1.0, -2.0]])
    assert np.asarray(dens(centre))[0, 0] > 0.5
    assert np.asarray(dens(far))[0, 0] == 0.0
    assert dens.in_coverage(centre)[0] and not dens.in_coverage(far)[0]
    assert not np.asarray(dens(np.array([[np.nan, 4.0, 0.0]]))).any()


@needs_release
def test_release_density_and_catalog_readers():
    model = released_model()
    assert model.density is not None and model.density.labels[0] == "parallax"
    table = read_release_catalog(RELEASE / "green2020_sample.h5")
    assert table["mag"].shape == (8000, 13)
    flag = model.in_coverage(table["theta"][:500])
    assert 0.5 < flag.mean() <= 1.0


def test_bad_release_files(tmp_path):
    from jaxstars.models.stellar.release import ReleaseFileError, read_keras_network, read_release_catalog

    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ReleaseFileError):
        read_keras_network(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ReleaseFileError):
        read_keras_network(tmp_path / "empty.h5")
    with pytest.raises(ReleaseFileError):
        read_release_catalog(tmp_path / "empty.h5")
