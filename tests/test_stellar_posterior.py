"""Photometric posteriors with the stellar model (Eq. 19): truth recovery on simulated stars."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxstars.data import data_dir
from jaxstars.inference import NUTSConfig
from jaxstars.models.stellar import (
    StellarPrior,
    fit_theta_mixture,
    prepare_stars,
    read_release_catalog,
    released_model,
    simulate_photometry,
    stellar_posteriors,
    summarise_posteriors,
)

RELEASE = (data_dir() / "green2020") if data_dir() is not None else None
pytestmark = pytest.mark.skipif(
    RELEASE is None or not (RELEASE / "green2020_nn_model.h5").exists(),
    reason="real data green2020/ not found (set JAXSTARS_DATA_DIR)",
)


def _simulate(n, seed):
    model = released_model()
    table = read_release_catalog(RELEASE / "green2020_sample.h5")
    prior = StellarPrior(theta_mixture=fit_theta_mixture(table["theta"], 6), mu_low=6.0, mu_high=13.0, E_max=1.5)
    key = jax.random.PRNGKey(seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    theta_n = np.asarray(prior.theta_distribution(model.network).sample(k1, (n,)))
    theta = np.asarray(model.network.denormalise(theta_n))
    mu = np.asarray(jax.random.uniform(k2, (n,), minval=6.0, maxval=13.0))
    E = np.asarray(jax.random.uniform(k3, (n,), minval=0.0, maxval=1.5))
    sim = simulate_photometry(model, theta, mu, E, k4, mag_err=0.03, parallax_err=0.05, missing_fraction=0.1)
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


def test_posterior_recovers_truth_small():
    model, prior, sim, stars = _simulate(8, 0)
    res = stellar_posteriors(
        model, stars, 1, prior=prior, config=NUTSConfig(num_warmup=150, num_samples=150, batch_size=8)
    )
    summary = summarise_posteriors(res, model)
    cov = _coverage(summary, sim)
    for name, (c68, c95) in cov.items():
        assert c95 >= 6 / 8, (name, cov)
    # parallax-informed distance moduli are tight and centred
    assert np.median(np.abs(summary["mu_q50"] - sim["mu"])) < 0.3
    assert "in_coverage" in summary and np.all(res.flags & 64 == 0)


@pytest.mark.slow
def test_posterior_coverage_200_stars():
    model, prior, sim, stars = _simulate(200, 1)
    res = stellar_posteriors(model, stars, 2, prior=prior, config=NUTSConfig(num_warmup=600, num_samples=500))
    cov = _coverage(summarise_posteriors(res), sim)
    for name, (c68, c95) in cov.items():
        assert 0.58 < c68 < 0.78 and 0.89 < c95 <= 1.0, (name, cov)
