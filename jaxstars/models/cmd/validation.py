"""The Cranmer et al. experiments on simulated catalogues with known truth, as functions (tests and examples share them).

* :func:`simulation_experiment` — §4.1 and Table 1: train on the simulator's ``cranmer`` mode (noisy parallaxes,
  reddening from a known Gaussian-over-sky dust map), then (a) how close the learned CMD is to the truth CMD
  (Hellinger distances, :func:`~jaxstars.models.cmd.metrics.cmd_recovery`), (b) the SNR table of Gaia parallaxes
  vs model distances, (c) distance accuracy against the truth per parallax-SNR bin for the model, inverse parallax
  and the parallax-only EDSD-prior baseline.
* :func:`cluster_experiment` — Table 2 analogue: train on a Galaxy-mode catalogue (isochrone populations,
  exponential dust disk, Gaia-like errors), then fit two-Gaussian mixtures to the distances of the members of an
  M67-like cluster at 840 pc with SNR < 15 and < 50, for the three methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from jaxstars.astro.simulate import simulate

from . import metrics
from .features import gaia_cmd_features
from .model import prepare_stars
from .posterior import PosteriorConfig, distance_posteriors
from .training import default_flow, train_cmd

ZHANG_YUAN_5500K = {"G": 2.385, "BP": 3.021, "RP": 1.741}
"""Zhang & Yuan (2023) A/E(B−V) for Gaia DR3 G, BP, RP at Teff = 5500 K (``zhang_yuan_law(...).coefficients(0.1,
5500)``): the fixed coefficients the CMD model uses on Galaxy-mode simulations, whose law is Teff-dependent."""


@dataclass(frozen=True)
class ExperimentSize:
    """Catalogue sizes and flow/training settings of an experiment (defaults: a few minutes on 2 CPU cores)."""

    n_train: int = 30_000
    n_test: int = 4_000
    n_blocks: int = 5
    hidden: int = 64
    epochs: int = 15
    batch_size: int = 1024


def _train(table, size: ExperimentSize, key, **kwargs):
    flow = default_flow(3, n_blocks=size.n_blocks, hidden=size.hidden)
    return train_cmd(
        table, flow=flow, epochs=size.epochs, batch_size=size.batch_size, key=key, progress=False, **kwargs
    )


def simulation_experiment(
    size: ExperimentSize = ExperimentSize(), seed: int = 0, edsd_length_pc: float = 1000.0, cmd_bins: int = 40
):
    """§4.1 + Table 1 on the ``cranmer`` simulation; returns ``(report dict, trained, test table, posteriors)``."""
    train_table = simulate(size.n_train, mode="cranmer", key=seed + 1)
    test = simulate(size.n_test, mode="cranmer", key=seed + 2)
    trained = _train(train_table, size, seed)
    stars = prepare_stars(trained.model.features, test)
    post = distance_posteriors(trained.model, trained.params, stars, key=seed)
    plx = np.asarray(test["parallax"], dtype=np.float64)
    err = np.asarray(test["parallax_error"], dtype=np.float64)
    truth = np.asarray(test["true_distance"], dtype=np.float64)
    edsd = metrics.edsd_distances(plx, err, length_scale=edsd_length_pc)
    estimates = {
        "model": post["distance_mean"],
        "model_median": post["distance_q50"],
        "inverse_parallax": metrics.inverse_parallax_distances(plx),
        "edsd_prior": edsd["mean"],
        "edsd_prior_median": edsd["median"],
    }
    inside = (truth > post["distance_q16"]) & (truth < post["distance_q84"])
    inside95 = (truth > post["distance_q2_5"]) & (truth < post["distance_q97_5"])
    recovery = metrics.cmd_recovery(
        trained.model,
        trained.params,
        metrics.cmd_features_from_catalog(train_table, "truth"),
        metrics.cmd_features_from_catalog(train_table, "noisy"),
        jax.random.PRNGKey(seed),
        bins=cmd_bins,
    )
    report = {
        "size": size.__dict__,
        "cmd_recovery": recovery,
        "snr_table": metrics.snr_table(plx, err, post["distance_mean"], post["distance_std"]),
        "accuracy_by_snr": metrics.accuracy_by_snr(truth, estimates, plx / err),
        "coverage_68": float(np.mean(inside)),
        "coverage_95": float(np.mean(inside95)),
        "train_epochs": int(trained.fit.epochs_run),
    }
    return report, trained, test, post


def cluster_experiment(
    size: ExperimentSize = ExperimentSize(n_train=40_000, epochs=20, n_blocks=6, hidden=96),
    seed: int = 0,
    n_cluster: int = 3000,
    n_members: int = 500,
    edsd_length_pc: float = 1350.0,
):
    """Table 2 analogue on an M67-like cluster (840 pc); returns ``(report dict, trained, members, posteriors)``.

    The model is trained on an all-sky Galaxy-mode catalogue with its dust map (``exponential_disk``, E(B−V)) and
    fixed Zhang & Yuan coefficients at 5500 K; posteriors use the paper's flat distance prior. The EDSD baseline
    uses Bailer-Jones (2015)'s L = 1.35 kpc.
    """
    features = gaia_cmd_features(extinction=ZHANG_YUAN_5500K, reddening="E(B-V)")
    train_table = simulate(size.n_train, mode="galaxy", key=seed + 11)
    zero_point = float(train_table.meta["PLXZP"])
    trained = _train(
        train_table, size, seed, features=features, dust_map="exponential_disk", zero_point=zero_point
    )
    field = simulate(n_cluster, mode="cluster", key=seed + 12, n_members=n_members)
    members = field[np.asarray(field["true_member"], dtype=bool)]
    stars = prepare_stars(features, members, dust_map="exponential_disk")
    post = distance_posteriors(trained.model, trained.params, stars, key=seed, config=PosteriorConfig())
    plx = np.asarray(members["parallax"], dtype=np.float64)
    err = np.asarray(members["parallax_error"], dtype=np.float64)
    edsd = metrics.edsd_distances(plx, err, length_scale=edsd_length_pc, zero_point=zero_point)
    estimates = {
        "inverse_parallax": metrics.inverse_parallax_distances(plx, zero_point),
        "edsd_prior": edsd["mean"],
        "model": post["distance_mean"],
        "model_median": post["distance_q50"],
    }
    table = metrics.cluster_distance_table(None, 840.0, estimates, (plx - zero_point) / err)
    return {"size": size.__dict__, "n_members": len(members), "table2": table}, trained, members, post
