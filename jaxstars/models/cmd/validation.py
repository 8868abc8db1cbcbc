"""The Cranmer et al. experiments on simulated catalogues with known truth, as functions (tests and examples share them).

* :func:`simulation_experiment` — §4.1 and Table 1: train on the simulator's ``cranmer`` mode (noisy parallaxes,
  reddening from a known Gaussian-over-sky dust map), then (a) how close the learned CMD is to the truth CMD
  (Hellinger distances, :func:`~jaxstars.models.cmd.metrics.cmd_recovery`), (b) the SNR table of Gaia parallaxes
  vs model distances, (c) distance accuracy against the truth per parallax-SNR bin for the model, inverse parallax
  and the parallax-only EDSD-prior baseline.
* :func:`cluster_experiment` — Table 2 analogue: train on a Galaxy-mode catalogue (isochrone populations,
  exponential dust disk, Gaia-like errors), then fit two-Gaussian mixtures to the distances of the members of an
  M67-like cluster at 840 pc with SNR < 15 and < 50, for the three methods (the model's likelihood convolved with
  each star's photometric errors, and, for comparison, the paper's evaluation at the observed photometry).
  Controls replace the training catalogue (the same field stars noise-free; stars of the cluster's own
  population) to separate what the training does from what the prior's population does;
  :func:`table2_checks` evaluates the criterion (centre closest to the truth, spread smallest).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import jax
import numpy as np

from jaxstars.astro.priors import EDSDPrior
from jaxstars.astro.simulate import simulate

from . import metrics
from .features import gaia_cmd_features
from .model import prepare_stars
from .posterior import distance_posteriors, photometric_covariance
from .training import batched_best_estimates, default_flow, loss_weights, train_cmd, training_arrays

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


TRAINING_CATALOGUES = ("field", "field_noise_free", "cluster_members", "cluster_isochrone")
"""Training catalogues of :func:`cluster_experiment`: the paper's setting and two controls."""


def noise_free(table):
    """A copy of a simulated catalogue with its true (reddened) photometry and parallaxes measured to 10⁻⁴.

    Training on it removes every noise effect (parallax scatter, photometric errors): the flow then learns the
    catalogue's true colour–magnitude distribution, up to the fixed extinction coefficients.
    """
    out = table.copy()
    zero_point = float(table.meta.get("PLXZP", 0.0))
    true_plx = np.asarray(table["true_parallax"], dtype=np.float64)
    out["parallax"] = true_plx + zero_point
    out["parallax_error"] = 1e-4 * true_plx
    for band in ("G", "BP", "RP"):
        out[f"mag_{band}"] = table[f"true_mag_{band}"]
    return out


def _cluster_training_catalogue(kind: str, n: int, seed: int):
    if kind == "field":
        return simulate(n, mode="galaxy", key=seed + 11)
    if kind == "field_noise_free":
        return noise_free(simulate(n, mode="galaxy", key=seed + 11))
    if kind in ("cluster_members", "cluster_isochrone"):  # other stars of the same cluster (another key)
        members = simulate(n, mode="cluster", key=seed + 1011, n_members=n)
        return members if kind == "cluster_members" else noise_free(members)
    raise ValueError(f"training must be one of {TRAINING_CATALOGUES}, got {kind!r}")


def cluster_experiment(
    size: ExperimentSize = ExperimentSize(n_train=40_000, epochs=20, n_blocks=6, hidden=96),
    seed: int = 0,
    n_cluster: int = 3000,
    n_members: int = 500,
    edsd_length_pc: float = 1350.0,
    photometric_errors: bool = True,
    train_options: dict | None = None,
    training: str = "field",
    comparisons: bool = True,
):
    """Table 2 analogue on an M67-like cluster (840 pc); returns ``(report dict, trained, members, posteriors)``.

    The model is trained on an all-sky Galaxy-mode catalogue with its dust map (``exponential_disk``, E(B−V)) and
    fixed Zhang & Yuan coefficients at 5500 K. The EDSD baseline (parallax only) uses Bailer-Jones (2015)'s
    L = 1.35 kpc; ``model`` is the CMD model with that same prior (so the comparison isolates what the photometry
    adds) and, with ``photometric_errors`` (default), its flow density convolved with each member's G/BP/RP errors
    (:func:`~jaxstars.models.cmd.posterior.photometric_covariance`); ``model_exact_photometry`` is the same prior
    with the paper's evaluation at the observed photometry, ``model_flat_prior`` the paper's flat prior (with the
    photometric errors as ``model``). Faint members (G ≈ 19–20) have BP/RP errors of 0.05–0.1 mag, wider than the
    main sequence in colour: read at the noisy colour the sharp CMD puts them at the wrong absolute magnitude,
    which widens the model's cluster component. With the flat prior, faint low-S/N M dwarfs get a second
    posterior mode as distant upper-RGB giants (a magnitude-limited training sample is rich in giants and the flat
    prior gives 100 kpc of sight line equal weight), which the mixture fit puts in its second component.
    All estimates are posterior means (the paper's catalogue value); ``*_median`` rows give posterior medians.

    ``train_options`` are passed to :func:`train_cmd` (e.g. ``sigma_floor``, ``weight_power``). ``training``
    picks the training catalogue: ``"field"`` (the paper's setting: noisy all-sky Galaxy-mode stars),
    ``"field_noise_free"`` (the same stars with true photometry and parallaxes: the best a flow can learn of the
    field's CMD), ``"cluster_members"`` (noisy stars of the cluster's own population, other than the test members:
    the paper's training on a population that matches the members) or ``"cluster_isochrone"`` (the same,
    noise-free). ``comparisons=False`` skips the
    ``model_flat_prior`` rows (one posterior run less).
    """
    features = gaia_cmd_features(extinction=ZHANG_YUAN_5500K, reddening="E(B-V)")
    train_table = _cluster_training_catalogue(training, size.n_train, seed)
    zero_point = float(train_table.meta["PLXZP"])
    trained = _train(
        train_table,
        size,
        seed,
        features=features,
        dust_map="exponential_disk",
        zero_point=zero_point,
        **(train_options or {}),
    )
    field = simulate(n_cluster, mode="cluster", key=seed + 12, n_members=n_members)
    members = field[np.asarray(field["true_member"], dtype=bool)]
    stars = prepare_stars(features, members, dust_map="exponential_disk")
    cov = photometric_covariance(features, members) if photometric_errors else None
    edsd_prior = EDSDPrior(edsd_length_pc)

    def posteriors(prior, photometric_cov):
        return distance_posteriors(
            trained.model, trained.params, stars, key=seed, prior=prior, photometric_cov=photometric_cov
        )

    post = posteriors(edsd_prior, cov)
    post_exact = posteriors(edsd_prior, None)
    post_flat = posteriors(None, cov) if comparisons else None
    plx = np.asarray(members["parallax"], dtype=np.float64)
    err = np.asarray(members["parallax_error"], dtype=np.float64)
    edsd = metrics.edsd_distances(plx, err, length_scale=edsd_length_pc, zero_point=zero_point)
    estimates = {
        "inverse_parallax": metrics.inverse_parallax_distances(plx, zero_point),
        "edsd_prior": edsd["mean"],
        "model": post["distance_mean"],
        "model_median": post["distance_q50"],
        "model_exact_photometry": post_exact["distance_mean"],
    }
    if comparisons:
        estimates["model_flat_prior"] = post_flat["distance_mean"]
        estimates["model_flat_prior_median"] = post_flat["distance_q50"]
    table = metrics.cluster_distance_table(None, 840.0, estimates, (plx - zero_point) / err)
    report = {
        "size": size.__dict__,
        "training_weights": training_weight_summary(trained, train_table, dust_map="exponential_disk", key=seed),
        "n_members": len(members),
        "photometric_errors": bool(photometric_errors),
        "training": training,
        "train_options": dict(train_options or {}),
        "table2": table,
    }
    return report, trained, members, post


def training_weight_summary(trained, table, *, dust_map="exponential_disk", key=0) -> dict:
    """How concentrated the loss weights of a trained model are, at its final best estimates.

    Kish effective sample size ``(Σw)²/Σw²`` of :func:`~jaxstars.models.cmd.training.loss_weights` over the
    training stars, the median ``σ_P``, and — when the table has the simulation's true absolute magnitudes — the
    same for red main-sequence stars (true BP−RP in [1.6, 2.5), M_G > 6: the bulk of the cluster's noisy members).
    """
    model, info = trained.model, trained.model.info
    features = model.features
    phot_var = None
    if info.get("photometric_variance"):
        phot_var = np.trace(photometric_covariance(features, table), axis1=1, axis2=2)
    stars = prepare_stars(features, table, dust_map=dust_map)
    arrays = {k: v[trained.used] for k, v in training_arrays(stars, phot_var).items()}
    est = batched_best_estimates(
        model,
        trained.params,
        arrays,
        np.asarray(stars.dust.modulus_grid),
        jax.random.PRNGKey(key),
        n_iterations=int(info.get("n_iterations", 5)),
    )
    w = np.asarray(loss_weights(est.sigma_p2, info.get("sigma_floor", 0.01), info.get("weight_power", 1.0)))

    def kish(v):
        return float(v.sum() ** 2 / np.sum(v * v)) if v.size else 0.0

    out = {
        "n_train": int(w.size),
        "kish_ess": kish(w),
        "median_sigma_p": float(np.median(np.sqrt(est.sigma_p2))),
    }
    if all(f"true_absmag_{b}" in table.colnames for b in features.bands):
        true_mags = np.stack([np.asarray(table[f"true_absmag_{b}"], dtype=np.float64) for b in features.bands], 1)
        f = (true_mags @ features.matrix_array.T)[trained.used]
        red = (f[:, 1] >= 1.6) & (f[:, 1] < 2.5) & (f[:, 0] > 6.0)
        out["red_main_sequence"] = {
            "n": int(red.sum()),
            "kish_ess": kish(w[red]),
            "weight_share": float(w[red].sum() / w.sum()),
        }
    return out


def table2_checks(report: dict, method: str = "model", baselines=("inverse_parallax", "edsd_prior")) -> dict:
    """The issue's Table 2 criterion per SNR cut: is ``method``'s cluster centre the closest to the truth and its
    spread the smallest, against each baseline (dominant mixture components, as in the table).

    Returns ``{cut: {"centre_closest": bool, "spread_smallest": bool, "abs_error": {...}, "spread": {...},
    "standard_error": {...}}}`` with the standard error of each centre taken as ``spread / sqrt(n_core)``
    (``n_core`` = the component's weight times the stars fitted).
    """
    rows = {(r["method"], r["snr_cut"]): r for r in report["table2"]["rows"]}
    out = {}
    for cut in report["table2"]["snr_cuts"]:
        names = (method, *baselines)
        err = {m: rows[(m, cut)]["abs_error"] for m in names}
        spread = {m: rows[(m, cut)]["spread"] for m in names}
        se = {}
        for m in names:
            r = rows[(m, cut)]
            se[m] = r["spread"] / np.sqrt(max(r["fit"]["weights"][0] * (r["n"] - r["n_failed"]), 1.0))
        out[cut] = {
            "centre_closest": all(err[method] < err[b] for b in baselines),
            "spread_smallest": all(spread[method] < spread[b] for b in baselines),
            "abs_error": err,
            "spread": spread,
            "standard_error": se,
        }
    return out


SFD_TO_EGR_PS1 = 3.172 - 2.271
"""E(g−r)_PS1 per unit SFD E(B−V): Schlafly & Finkbeiner (2011) Table 6 (R_V = 3.1) A_g/E(B−V)_SFD − A_r/E(B−V)_SFD
for Pan-STARRS1 (3.172 − 2.271 = 0.901). Converts the Green et al. sample's ``r`` (SFD-like units) to the
E(g−r) scale of Cranmer et al.'s coefficients (their Bayestar-based reddening is an E(g−r)-like scale)."""


def real_data_experiment(
    size: ExperimentSize = ExperimentSize(n_train=6_000, n_test=2_000, epochs=15),
    seed: int = 0,
    degrade_to_snr: float = 2.0,
    high_snr: float = 20.0,
    path=None,
):
    """Cranmer et al. on real stars: the Green et al. (2021) sample (Gaia DR2 G/BP/RP + parallaxes, its ``r``
    reddening converted with :data:`SFD_TO_EGR_PS1` as a distance-independent dust estimate, DR2 zero-point −0.029).

    Trains on a fixed random split (``n_train`` stars), then on the held-out stars reports the SNR table (Gaia
    ϖ/σ_ϖ vs model d/σ_d) and the CMD tightening (robust scatter of M_G in BP−RP bins for main-sequence stars —
    spectroscopic log g > 4 — with ϖ > 0, from inverse parallax vs from model distances). As a check against truth on real photometry,
    held-out stars with ϖ/σ_ϖ > ``high_snr`` get their parallax error inflated to reach SNR ``degrade_to_snr``
    (and their parallax re-drawn around the measured one); the model's distances from the degraded parallaxes are
    compared with 1000/ϖ of the precise ones, against inverse parallax and the EDSD baseline on the same
    degraded data.
    """
    from jaxstars.astro.astrometry import ZP_DR2_LINDEGREN2018
    from jaxstars.astro.catalog_io import read_green2020

    table = read_green2020(path)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    train_rows, test_rows = order[: size.n_train], order[size.n_train : size.n_train + size.n_test]
    zp = ZP_DR2_LINDEGREN2018
    r = np.asarray(table["r"], dtype=np.float64) * SFD_TO_EGR_PS1
    r_err = np.asarray(table["r_err"], dtype=np.float64) * SFD_TO_EGR_PS1
    trained = _train(
        table[train_rows], size, seed, reddening=r[train_rows], reddening_error=r_err[train_rows], zero_point=zp
    )
    test = table[test_rows]
    stars = prepare_stars(trained.model.features, test, reddening=r[test_rows], reddening_error=r_err[test_rows])
    post = distance_posteriors(trained.model, trained.params, stars, key=seed)
    plx = np.asarray(test["parallax"], dtype=np.float64)
    err = np.asarray(test["parallax_error"], dtype=np.float64)

    # CMD tightening: robust M_G scatter about the running median in colour bins
    g = np.asarray(test["mag_G"], dtype=np.float64)
    colour = np.asarray(test["mag_BP"], dtype=np.float64) - np.asarray(test["mag_RP"], dtype=np.float64)
    colour0 = colour - trained.model.feature_extinction[1] * r[test_rows]
    a_g = trained.model.feature_extinction[0] * r[test_rows]
    # main-sequence width: dwarfs by their spectroscopic log g (independent of the photometry and parallax)
    positive = (plx - zp > 0) & (np.asarray(test["logg"], dtype=np.float64) > 4.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mg_plx = g - a_g - 5.0 * np.log10(1000.0 / (plx - zp) / 10.0)
        mg_model = g - a_g - 5.0 * np.log10(post["distance_q50"] / 10.0)
    tightening = {
        "inverse_parallax": _cmd_scatter(colour0[positive], mg_plx[positive]),
        "model": _cmd_scatter(colour0[positive], mg_model[positive]),
    }

    # degraded high-S/N parallaxes: known answer on real photometry
    precise = (plx - zp) / err > high_snr
    sub = test[precise]
    new_err = (plx[precise] - zp) / degrade_to_snr
    sub["parallax_error"] = new_err
    sub["parallax"] = plx[precise] + new_err * rng.standard_normal(precise.sum())
    sub_stars = prepare_stars(
        trained.model.features, sub, reddening=r[test_rows][precise], reddening_error=r_err[test_rows][precise]
    )
    sub_post = distance_posteriors(trained.model, trained.params, sub_stars, key=seed + 1)
    reference = 1000.0 / (plx[precise] - zp)
    edsd = metrics.edsd_distances(np.asarray(sub["parallax"]), new_err, length_scale=1350.0, zero_point=zp)
    degraded = metrics.accuracy_by_snr(
        reference,
        {
            "model_median": sub_post["distance_q50"],
            "inverse_parallax": metrics.inverse_parallax_distances(np.asarray(sub["parallax"]), zp),
            "edsd_prior_median": edsd["median"],
        },
        np.full(precise.sum(), degrade_to_snr),
        bins=(0.0, np.inf),
    )
    report = {
        "size": size.__dict__,
        "n_test": len(test),
        "snr_table": metrics.snr_table(plx, err, post["distance_mean"], post["distance_std"]),
        "cmd_scatter": tightening,
        "degraded_parallax_check": {"n": int(precise.sum()), "snr": degrade_to_snr, "accuracy": degraded},
    }
    return report, trained, test, post


def _cmd_scatter(colour, mag, bins=None) -> dict:
    """Median over colour bins of the robust (1.4826 MAD) scatter of absolute magnitude: a CMD's sharpness."""
    bins = np.arange(0.4, 3.01, 0.2) if bins is None else bins
    ok = np.isfinite(colour) & np.isfinite(mag)
    colour, mag = colour[ok], mag[ok]
    widths = []
    for lo, hi in itertools.pairwise(bins):
        m = mag[(colour >= lo) & (colour < hi)]
        if m.size >= 20:
            widths.append(1.4826 * np.median(np.abs(m - np.median(m))))
    return {"median_scatter_mag": float(np.median(widths)) if widths else None, "n_bins": len(widths)}
