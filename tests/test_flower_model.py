"""FLOWER features (Λ, extinction) and model (density normalisation, sampling Jacobian, I/O, coverage)."""

import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstars.astro.bands import colour_matrix
from jaxstars.astro.extinction import ZHANG_YUAN_SIMPLE, constant_law, zhang_yuan_law, zhang_yuan_teff_from_bp_rp0
from jaxstars.flows import FlowFileError, load_flow, save_flow
from jaxstars.models.flower import (
    FORMAT,
    GAIA_PS1,
    GAIA_PS1_2MASS,
    FlowerFeatures,
    FlowerModel,
    coverage_from_rz,
    default_flower_flow,
)

M_SUN_LIKE = np.array([4.6, 4.95, 4.1, 5.05, 4.6, 4.5, 4.5, 4.5, 3.6, 3.3, 3.25])


@pytest.mark.parametrize("bands", [GAIA_PS1, GAIA_PS1_2MASS])
def test_lambda_round_trip_and_matrix(bands):
    f = FlowerFeatures(bands=bands)
    assert f.dim == len(bands) and f.names[0] == "M_G" and f.names[1] == "BP-G"
    M = np.random.default_rng(0).normal(4.0, 2.0, size=(5, f.dim))
    x = np.asarray(f.intrinsic(M))
    # Eq. 4 against the independent band-module Λ
    np.testing.assert_allclose(x, M @ colour_matrix(bands).T, atol=1e-5)
    np.testing.assert_allclose(f.matrix, colour_matrix(bands))
    np.testing.assert_allclose(np.asarray(f.absolute(x)), M, atol=1e-5)
    # FLOWER's example: (M_G, M_Ks) → (M_G, M_Ks − M_G)
    assert x[0, 0] == pytest.approx(M[0, 0]) and x[0, -1] == pytest.approx(M[0, -1] - M[0, 0], abs=1e-5)
    with pytest.raises(ValueError):
        f.intrinsic(M[:, :3])


def test_feature_validation():
    with pytest.raises(ValueError):
        FlowerFeatures(bands=("G", "g", "r"))  # no BP/RP for the law's colour
    f = FlowerFeatures(
        bands=("G", "g", "r"),
        law_argument=None,
        law=constant_law("c", ("G", "g", "r"), (2.0, 3.0, 2.5), "E(B-V)", "-"),
    )
    np.testing.assert_allclose(np.asarray(f.extinction(0.1, jnp.zeros(3))), [0.2, 0.3, 0.25], rtol=1e-6)


@pytest.mark.parametrize("bands", [GAIA_PS1, GAIA_PS1_2MASS])
def test_extinction_is_law_times_reddening_at_intrinsic_colour(bands):
    f = FlowerFeatures(bands=bands)
    M = jnp.asarray(M_SUN_LIKE[: f.dim])
    x = f.intrinsic(M)
    bp_rp0 = M_SUN_LIKE[1] - M_SUN_LIKE[2]
    law = zhang_yuan_law(bands, argument="bp_rp0")
    for ebv in (0.0, 0.1, 0.37):
        expected = ebv * np.asarray(law.coefficients(ebv, bp_rp0))
        np.testing.assert_allclose(np.asarray(f.extinction(ebv, x)), expected, rtol=1e-5, atol=1e-7)
    # Independent: G coefficient from the published polynomial at Teff((BP−RP)₀) and E = 0.2.
    teff = float(zhang_yuan_teff_from_bp_rp0(bp_rp0))
    a, b, c, d, e, ff = -1.05e-11, 2.24e-07, -0.00145, -0.681, -0.381, 5.376
    r_g = a * teff**3 + b * teff**2 + c * teff + d * 0.04 + e * 0.2 + ff
    assert float(f.extinction(0.2, x)[0]) == pytest.approx(0.2 * r_g, rel=1e-4)
    assert 2.0 < r_g < ZHANG_YUAN_SIMPLE["G"] + 0.5
    # the colour argument comes from x: a bluer star gets a different (larger) G coefficient
    bluer = x.at[1].add(-0.3).at[2].add(0.1)
    assert float(f.extinction(0.2, bluer)[0]) != pytest.approx(float(f.extinction(0.2, x)[0]), rel=1e-3)
    # the Teff argument route gives the same law
    f_teff = FlowerFeatures(bands=bands, law_argument="teff")
    np.testing.assert_allclose(np.asarray(f_teff.extinction(0.2, x)), np.asarray(f.extinction(0.2, x)), rtol=1e-5)
    # batched
    xs = jnp.stack([x, bluer])
    assert f.extinction(jnp.array([0.1, 0.2]), xs).shape == (2, f.dim)


def _model(dim=2, key=0, x_scale=(0.5, 2.0), activation="tanh"):
    bands = ("G", "BP", "RP", "g", "r", "i", "z", "y")[:dim] if dim >= 3 else ("G", "BP")
    feats = FlowerFeatures(
        bands=bands, law_argument=None if dim < 3 else "bp_rp0", law=_law(bands) if dim < 3 else "zhang_yuan"
    )
    flow = default_flower_flow(dim, block_dim=2, depth=2, activation=activation)
    model = FlowerModel(
        features=feats,
        flow=flow,
        x_shift=tuple(np.linspace(3.0, 0.5, dim)),
        x_scale=tuple(np.resize(x_scale, dim)),
        ctx_shift=(8000.0, 500.0),
        ctx_scale=(300.0, 400.0),
        coverage=coverage_from_rz(
            np.random.default_rng(1).uniform(7800, 8200, 4000), np.random.default_rng(2).uniform(25, 1000, 4000)
        ),
    )
    return model, model.init(jax.random.PRNGKey(key))


def _law(bands):
    return constant_law("test", bands, np.linspace(2.5, 1.0, len(bands)), "E(B-V)", "test")


def test_log_density_integrates_to_one_in_magnitude_units():
    model, params = _model(dim=2, x_scale=(0.5, 2.0))
    # perturb the fresh (near-Gaussian) init so that the density is non-trivial
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    params = jax.tree_util.tree_unflatten(
        tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
    )
    g0 = np.linspace(3.0 - 0.5 * 11, 3.0 + 0.5 * 11, 221)
    g1 = np.linspace(0.5 - 2.0 * 11, 0.5 + 2.0 * 11, 221)
    X0, X1 = np.meshgrid(g0, g1, indexing="ij")
    x = jnp.asarray(np.stack([X0, X1], -1))
    log_density = jax.jit(model.log_density)
    for R, Z in ((8000.0, 300.0), (7850.0, 900.0)):
        dens = np.exp(np.asarray(log_density(params, x, R, Z)))
        total = np.trapezoid(np.trapezoid(dens, g1, axis=1), g0)
        assert total == pytest.approx(1.0, abs=0.02)
    # without the Jacobian of the standardisation the integral would be 1 / (0.5 · 2) ... use unequal scales
    model2, _ = _model(dim=2, x_scale=(0.5, 0.5))
    dens2 = np.exp(np.asarray(jax.jit(model2.log_density)(params, x, 8000.0, 300.0)))
    assert np.trapezoid(np.trapezoid(dens2, g1, axis=1), g0) == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow  # long compile; default suite keeps the brute-force checks
def test_sample_log_density_consistent_with_flow_jacobian():
    model, params = _model(dim=4, x_scale=(0.7, 0.2, 0.3, 1.5), activation="leaky_tanh")
    R, Z = 8010.0, 400.0
    x = jax.jit(model.sample, static_argnums=4)(params, jax.random.PRNGKey(3), R, Z, 128)
    assert x.shape == (128, 4)
    ctx = model.context(R, Z)
    u, log_q = jax.jit(model.flow.sample_and_log_prob, static_argnums=2)(
        params, jax.random.PRNGKey(3), (128,), ctx
    )
    np.testing.assert_allclose(np.asarray(x), np.asarray(model.unstandardise(u)), rtol=1e-5, atol=1e-5)
    expected = np.asarray(log_q) - np.sum(np.log([0.7, 0.2, 0.3, 1.5]))
    got = np.asarray(jax.jit(model.log_density)(params, x, R, Z))
    ok = np.isfinite(expected)
    assert ok.mean() > 0.95
    np.testing.assert_allclose(got[ok], expected[ok], atol=2e-3)


def test_save_load_round_trip(tmp_path):
    model, params = _model(dim=3, x_scale=0.4)
    path = model.save(tmp_path / "m", params)
    assert os.path.basename(path) == "flower.npz"
    loaded, p2 = FlowerModel.load(tmp_path / "m")
    assert (
        loaded.features == model.features
        and loaded.x_shift == model.x_shift
        and loaded.ctx_scale == model.ctx_scale
    )
    x = jnp.asarray(np.random.default_rng(0).normal(1.0, 1.0, (7, 3)))
    np.testing.assert_array_equal(
        np.asarray(loaded.log_density(p2, x, 8000.0, 300.0)),
        np.asarray(model.log_density(params, x, 8000.0, 300.0)),
    )
    R = jnp.array([7900.0, 9000.0, 8100.0])
    np.testing.assert_array_equal(
        np.asarray(loaded.in_coverage(R, 400.0)), np.asarray(model.in_coverage(R, 400.0))
    )
    # loading the .npz itself works too; the metadata says what it is
    loaded2, _ = FlowerModel.load(path)
    assert loaded2.coverage == model.coverage
    meta = load_flow(path)[2]
    assert meta["flower"]["format"] == FORMAT == "jaxstars.flower.v1"


def test_corrupt_and_foreign_files_raise(tmp_path):
    model, params = _model(dim=3)
    path = model.save(tmp_path / "m", params)
    # truncated file
    with open(path, "rb") as fh:
        data = fh.read()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "flower.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FlowFileError):
        FlowerModel.load(bad)
    # bit flip in the middle (zip CRC)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    (bad / "flower.npz").write_bytes(bytes(flipped))
    with pytest.raises(FlowFileError):
        FlowerModel.load(bad)
    # a valid flow file that is not a FLOWER model
    other = tmp_path / "other.npz"
    save_flow(other, model.flow, params, metadata={"cmd": {}})
    with pytest.raises(FlowFileError, match="not a jaxstars FLOWER model"):
        FlowerModel.load(other)
    # another FLOWER format version
    config = model.to_config()
    config["format"] = "jaxstars.flower.v99"
    save_flow(other, model.flow, params, metadata={"flower": config})
    with pytest.raises(FlowFileError, match="v99"):
        FlowerModel.load(other)
    # broken config
    config = model.to_config()
    del config["x_scale"]
    save_flow(other, model.flow, params, metadata={"flower": config})
    with pytest.raises(FlowFileError, match="invalid FLOWER model config"):
        FlowerModel.load(other)
    with pytest.raises(FileNotFoundError):
        FlowerModel.load(tmp_path / "missing")
    assert zipfile.is_zipfile(path) and json.loads(json.dumps(model.to_config()))


def test_coverage_flag():
    rng = np.random.default_rng(0)
    # an L-shaped training set: the box covers the empty corner, the occupancy grid does not
    R = np.r_[rng.uniform(7000, 9000, 5000), rng.uniform(7000, 7400, 5000)]
    Z = np.r_[rng.uniform(0, 400, 5000), rng.uniform(400, 3000, 5000)]
    cov = coverage_from_rz(R, Z)
    model, _ = _model(dim=2)
    model = FlowerModel(
        model.features, model.flow, model.x_shift, model.x_scale, model.ctx_shift, model.ctx_scale, cov
    )
    inside = model.in_coverage(
        jnp.array([8000.0, 7200.0, 8500.0, 9500.0, 8000.0]), jnp.array([200.0, 2000.0, 2500.0, 200.0, -50.0])
    )
    np.testing.assert_array_equal(np.asarray(inside), [True, True, False, False, False])
    assert jax.jit(model.in_coverage)(8000.0, 200.0)
    # without stored coverage everything is inside
    bare = FlowerModel(model.features, model.flow, model.x_shift, model.x_scale)
    assert bool(bare.in_coverage(1e5, 1e5))


def test_model_validation():
    feats = FlowerFeatures()
    with pytest.raises(ValueError):
        FlowerModel(feats, default_flower_flow(7), (0.0,) * 8, (1.0,) * 8)
    with pytest.raises(ValueError):
        FlowerModel(feats, default_flower_flow(8), (0.0,) * 8, (1.0,) * 7 + (0.0,))
    f = default_flower_flow(8)
    assert f.context_dim == 2 and f.dim == 8
