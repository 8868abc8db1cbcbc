"""Photometric posteriors with the stellar model (Eq. 19): the ridge parametrisation, chain pruning and truth
recovery on simulated stars (truths drawn from exactly the inference prior, noise = the likelihood's)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

from jaxstars.astro.priors import EDSDPrior
from jaxstars.data import data_dir
from jaxstars.inference import NUTSConfig, NUTSResult
from jaxstars.models.stellar import (
    StellarModel,
    StellarNetwork,
    StellarPrior,
    fit_theta_mixture,
    posterior_data,
    prepare_stars,
    prune_chains,
    read_release_catalog,
    released_model,
    simulate_photometry,
    stellar_posteriors,
    stellar_star_model,
    summarise_posteriors,
)
from jaxstars.models.stellar.posterior import DEFAULT_NUTS

RELEASE = (data_dir() / "green2020") if data_dir() is not None else None
needs_release = pytest.mark.skipif(
    RELEASE is None or not (RELEASE / "green2020_nn_model.h5").exists(),
    reason="real data green2020/ not found (set JAXSTARS_DATA_DIR)",
)


def _simulate(n, seed, *, plx_err=0.05):
    """Truth θ from the mixture prior, μ ~ U(6, 13), E ~ U(0, 1.5): the same prior as the inference."""
    model = released_model()
    table = read_release_catalog(RELEASE / "green2020_sample.h5")
    prior = StellarPrior(theta_mixture=fit_theta_mixture(table["theta"], 6), mu_low=6.0, mu_high=13.0, E_max=1.5)
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    theta_n = np.asarray(prior.theta_distribution(model.network).sample(k1, (n,)))
    theta = np.asarray(model.network.denormalise(theta_n))
    mu = np.asarray(jax.random.uniform(k2, (n,), minval=prior.mu_low, maxval=prior.mu_high))
    E = np.asarray(jax.random.uniform(k3, (n,), minval=0.0, maxval=prior.E_max))
    sim = simulate_photometry(model, theta, mu, E, k4, mag_err=0.03, parallax_err=plx_err, missing_fraction=0.1)
    return model, prior, sim, prepare_stars(sim, floors="none")


def _toy_model():
    """A small known network (5 bands, one hidden layer) with realistic colour offsets and reddening vector."""
    net = StellarNetwork(("G", "BP", "RP", "J", "Ks"), hidden=(8,), activation="sigmoid")
    params = net.init(jax.random.PRNGKey(3))
    params["out"]["b"] = params["out"]["b"] + np.array([4.0, 0.4, -0.6, -1.4, -1.9])
    params["out"]["w"] = params["out"]["w"] * 3.0
    params["R"]["b"] = np.log(np.array([2.5, 3.2, 1.8, 0.7, 0.3]))
    params["R"]["w"] = params["R"]["w"] * 0.05
    return StellarModel(net, params)


def _simulate_toy(n, seed, *, plx_err=0.02):
    """Truth from the box prior of θ, μ ~ U(6, 10), E ~ U(0, 1): the same prior as the inference."""
    model = _toy_model()
    prior = StellarPrior(theta_low=(4500.0, 3.0, -1.0), theta_high=(6500.0, 4.8, 0.3), mu_low=6.0, mu_high=10.0,
                         E_max=1.0)  # fmt: skip
    rng = np.random.default_rng(seed)
    theta = rng.uniform(prior.theta_low, prior.theta_high, (n, 3))
    mu = rng.uniform(prior.mu_low, prior.mu_high, n)
    E = rng.uniform(0.0, prior.E_max, n)
    sim = simulate_photometry(model, theta, mu, E, seed, mag_err=0.03, parallax_err=plx_err)
    return model, prior, sim, prepare_stars(sim, floors="none")


def _coverage(summary, sim):
    truth = {"teff": sim["theta"][:, 0], "logg": sim["theta"][:, 1], "feh": sim["theta"][:, 2], "mu": sim["mu"],
             "E": sim["E"]}  # fmt: skip
    out = {}
    for name, x in truth.items():
        in68 = (x > summary[f"{name}_q16"]) & (x < summary[f"{name}_q84"])
        in95 = (x > summary[f"{name}_q2_5"]) & (x < summary[f"{name}_q97_5"])
        out[name] = (float(np.mean(in68)), float(np.mean(in95)))
    return out


@pytest.mark.parametrize("distance_prior", [False, True])
def test_ridge_parametrisation_is_the_same_posterior(distance_prior):
    """log p(θ, z, E) of the ridge model equals log p(θ, μ, E) of the direct one (up to the constant Jacobian
    σ_μ, left out) at random points, with μ̂(θ, E) recomputed here in numpy from the forward model (Eq. 2)."""
    model, prior, sim, stars = _simulate_toy(3, 5)
    if distance_prior:
        prior = dataclasses.replace(prior, distance=EDSDPrior(1500.0))
    direct = dataclasses.replace(prior, ridge=False)
    data, _ = posterior_data(stars)

    @jax.jit
    def both(star, values, z, mu):
        ridge_lp = log_density(stellar_star_model, (star, model.params), {"network": model.network,
                               "prior": prior}, {**values, "mu_offset": z})[0]  # fmt: skip
        site = {"distance": 10 ** (mu / 5 + 1)} if distance_prior else {"mu": mu}
        direct_lp = log_density(stellar_star_model, (star, model.params), {"network": model.network,
                                "prior": direct}, {**values, **site})[0]  # fmt: skip
        return ridge_lp, direct_lp

    rng = np.random.default_rng(0)
    truth_n = np.asarray(model.network.normalise(sim["theta"]), float)
    for i in range(3):
        star = {k: v[i] for k, v in data.items()}
        obs = np.asarray(star["band_obs"])
        w = np.where(obs, 1.0 / np.asarray(star["mag_err"], float) ** 2, 0.0)
        diffs = []
        for _ in range(5):  # points around the truth (μ inside the prior box)
            tn = truth_n[i] + rng.normal(0, 0.05, 3)
            E = float(np.clip(sim["E"][i] + rng.normal(0, 0.05), 0.01, 0.99))
            absolute = np.asarray(model.network.magnitudes(model.params, jnp.asarray(tn), 0.0, E), float)
            mu_hat = np.sum(w * np.where(obs, np.asarray(star["mag"], float) - absolute, 0.0)) / w.sum()
            z = rng.normal(0, 1.5)
            mu = mu_hat + z / np.sqrt(w.sum())
            if not prior.mu_low < mu < prior.mu_high:
                continue
            values = {"theta_n": jnp.asarray(tn), "E": jnp.asarray(E)}
            lp_ridge, lp_direct = both(star, values, jnp.asarray(z), jnp.asarray(mu))
            if distance_prior:  # the direct model's density is per unit distance: convert to per unit μ
                lp_direct = lp_direct + np.log(10 ** (mu / 5 + 1) * np.log(10) / 5)
            diffs.append(float(lp_ridge - lp_direct))
        assert len(diffs) >= 2
        # equal up to the constant Jacobian log σ_μ, which the ridge model leaves out (it does not depend on
        # any latent variable): the two densities agree exactly
        np.testing.assert_allclose(diffs, 0.0, atol=2e-3)


def test_prune_chains_replaces_minor_mode_chains():
    rng = np.random.default_rng(1)
    n, c, s = 3, 4, 50
    x = rng.normal(size=(n, c, s))
    x[0, 2] += 10.0  # star 0, chain 2 in another place
    lp = rng.normal(-3.0, 1.0, (n, c, s))
    lp[0, 2] -= 8.0  # ...with a much lower density: dropped
    lp[1, 1] -= 2.0  # within the threshold: kept
    result = NUTSResult({"x": x}, {"rhat": np.ones(n)}, np.zeros(n, np.int64), ("x",))
    pruned = prune_chains(result, lp, threshold=4.0)
    np.testing.assert_array_equal(pruned.diagnostics["chains_kept"], [3, 4, 4])
    assert np.all(np.abs(pruned.samples["x"][0]) < 6)  # the far chain is gone
    np.testing.assert_array_equal(pruned.samples["x"][1:], x[1:])
    np.testing.assert_array_equal(result.samples["x"], x)  # the input is not modified
    assert pruned.samples["x"].shape == x.shape


@pytest.mark.slow
def test_posterior_recovers_truth_small():
    """Known truth, small run (toy network, 3 stars × 2 chains): the truth lies within 4σ of every posterior
    mean (a wrong likelihood, prior or sampler puts it far outside), μ is recovered."""
    model, prior, sim, stars = _simulate_toy(3, 0)
    config = NUTSConfig(num_warmup=100, num_samples=60, num_chains=2, batch_size=3)
    res = stellar_posteriors(model, stars, 1, prior=prior, config=config)
    summary = summarise_posteriors(res, model)
    truth = {"teff": sim["theta"][:, 0], "logg": sim["theta"][:, 1], "feh": sim["theta"][:, 2], "mu": sim["mu"],
             "E": sim["E"]}  # fmt: skip
    for name, x in truth.items():
        pull = (x - summary[f"{name}_mean"]) / summary[f"{name}_std"]
        assert np.all(np.abs(pull) < 4), (name, pull)
    assert np.max(np.abs(summary["mu_q50"] - sim["mu"])) < 0.2  # parallax S/N ≥ 5 at μ ≤ 10
    assert "in_coverage" not in summary and np.all(res.flags & 64 == 0)  # no density map: no flag column
    assert res.samples["theta"].shape == (3, 2, 60, 3) and np.all(res.diagnostics["chains_kept"] >= 1)


@needs_release
@pytest.mark.slow
def test_posterior_recovers_truth_released_small():
    """The released network, 8 stars, default sampler: 95 % intervals and μ."""
    model, prior, sim, stars = _simulate(8, 0, plx_err=0.02)
    res = stellar_posteriors(model, stars, 1, prior=prior, config=dataclasses.replace(DEFAULT_NUTS, batch_size=8))
    summary = summarise_posteriors(res, model)
    cov = _coverage(summary, sim)
    inside95 = round(sum(c95 for _, c95 in cov.values()) * 8)
    assert inside95 >= 34, cov  # 40 intervals
    assert np.median(np.abs(summary["mu_q50"] - sim["mu"])) < 0.3


@needs_release
@pytest.mark.slow
def test_posterior_coverage_200_stars():
    """Nominal coverage over 200 stars. Binomial σ: 0.033 at 68 %, 0.015 at 95 %; the bounds are ±3σ, family-wise
    for the 10 simultaneous checks (≈ 3 % false-alarm rate for a calibrated sampler; ±2.4σ would be ≈ 15 %)."""
    model, prior, sim, stars = _simulate(200, 1)
    res = stellar_posteriors(model, stars, 2, prior=prior, config=DEFAULT_NUTS)
    cov = _coverage(summarise_posteriors(res), sim)
    text = ", ".join(f"{k}: {c68:.3f}/{c95:.3f}" for k, (c68, c95) in cov.items())
    print("coverage 68/95:", text)
    for name, (c68, c95) in cov.items():
        assert 0.58 <= c68 <= 0.78 and 0.905 <= c95 <= 0.995, f"{name} out of bounds; 68/95 coverage: {text}"
