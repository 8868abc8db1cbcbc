"""Stellar-model training (Green et al. §4) on photometry simulated from a known network."""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest

from jaxstars.models.stellar import (
    StellarNetwork,
    StellarTrainConfig,
    chi2_threshold,
    evaluate_stellar,
    model_difference,
    prepare_stars,
    split_indices,
    train_stellar,
)
from jaxstars.models.stellar.model import StellarModel


def test_threshold_schedule_and_split():
    cfg = StellarTrainConfig()
    values = [chi2_threshold(k, cfg) for k in range(1, 21)]
    assert values[0] == pytest.approx(100.0) and values[14] == pytest.approx(5.0) and values[-1] == 5.0
    assert all(a >= b for a, b in itertools.pairwise(values))
    ratios = np.diff(np.log(values[:15]))
    np.testing.assert_allclose(ratios, ratios[0])  # logarithmic decrease
    split = split_indices(1000)
    assert [len(split[k]) for k in ("train", "validation", "test")] == [700, 200, 100]
    assert len(np.unique(np.concatenate(list(split.values())))) == 1000
    with pytest.raises(ValueError):
        StellarTrainConfig(split=(0.5, 0.2, 0.2))


def _truth():
    net = StellarNetwork(("G", "BP", "RP", "J", "Ks"), hidden=(16,), activation="sigmoid")
    params = net.init(jax.random.PRNGKey(7))
    params["out"]["b"] = params["out"]["b"] + np.array([4.0, 0.4, -0.6, -1.4, -1.9])
    params["R"]["b"] = np.log(np.array([2.5, 3.2, 1.8, 0.7, 0.3]))
    params["R"]["w"] = params["R"]["w"] * 0.05
    return StellarModel(net, params)


def _simulated_table(truth, n, seed=0):
    rng = np.random.default_rng(seed)
    theta = np.column_stack([rng.uniform(4200, 6800, n), rng.uniform(1.5, 4.8, n), rng.uniform(-1.0, 0.4, n)])
    E = rng.uniform(0, 0.6, n)
    plx = rng.uniform(0.3, 4.0, n)
    mu = 10 - 5 * np.log10(plx)
    err = np.full((n, 5), 0.02)
    mag = np.asarray(truth.magnitudes(theta, mu, E)) + rng.normal(0, 0.02, (n, 5))
    E_err = np.full(n, 0.03)
    table = {
        "mag": mag, "mag_err": err, "bands": truth.bands, "parallax": plx + rng.normal(0, 0.02, n) * plx,
        "parallax_err": 0.02 * plx, "theta": theta, "theta_cov": np.repeat(np.diag([10.0, 0.05, 0.03])[None] ** 2, n, 0),
        "E": E + rng.normal(0, 0.03, n), "E_err": E_err,
    }  # fmt: skip
    return table, theta, E


@pytest.mark.slow
def test_training_reduces_loss_small():
    """A short run (2 iterations × 4 epochs on 400 stars): the loss falls several-fold, training and validation
    agree, and the colours are within a magnitude of the truth's (the full recovery check is the slow test)."""
    truth = _truth()
    table, theta, _ = _simulated_table(truth, 400, seed=1)
    stars = prepare_stars(table, floors="none")
    cfg = StellarTrainConfig(n_iterations=2, epochs=4, batch_size=32, learning_rate=3e-3, hidden=(16,))
    result = train_stellar(stars, cfg, density=False)
    hist = result.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] / 3
    assert abs(hist[-1]["val_loss"] - hist[-1]["train_loss"]) < 0.5 * hist[-1]["train_loss"]
    diff = model_difference(result.model, truth, theta[result.split["test"]])
    assert max(diff["colour_rms"].values()) < 1.0


@pytest.mark.slow
def test_training_recovers_simulated_network():
    truth = _truth()
    n = 1500
    table, theta, E = _simulated_table(truth, n)
    stars = prepare_stars(table, floors="none")
    cfg = StellarTrainConfig(n_iterations=5, epochs=30, batch_size=32, learning_rate=3e-3, hidden=(16,))
    result = train_stellar(stars, cfg, density=False)
    hist = result.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert abs(hist[-1]["val_loss"] - hist[-1]["train_loss"]) < 0.3 * hist[-1]["train_loss"]
    test = result.split["test"]
    metrics = evaluate_stellar(result.model, stars, test)
    assert 0.5 < metrics["mean_chi2_dof"] < 1.6
    assert metrics["fraction_excluded"] < 0.05
    diff = model_difference(result.model, truth, theta[test])
    assert max(diff["colour_rms"].values()) < 0.07
    # reddenings re-estimated (Eqs. 8-9) track the truth better than the prior did
    assert np.sqrt(np.mean((result.E[test] - E[test]) ** 2)) < 0.03
    assert math.isfinite(hist[-1]["seconds"])
