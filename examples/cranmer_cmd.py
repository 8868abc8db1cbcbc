"""Example: the Cranmer et al. colour–magnitude model on simulated and real stars (figures of docs/models/cmd.md).

Run::

    python -m examples.cranmer_cmd            # full run (~50k simulated stars, then the Green et al. sample)
    python -m examples.cranmer_cmd --quick    # small and fast (10k stars, few epochs): checks the pipeline
    python -m examples.cranmer_cmd --out docs/figures/cmd

Steps (every random choice comes from ``--seed``; the same seed gives the same figures and numbers):

1. Cranmer et al. §4.1: simulate the paper's toy Gaia catalogue (:func:`jaxstars.astro.simulate.simulate`,
   ``mode="cranmer"``), train the flow with iterative dust (:func:`jaxstars.models.cmd.train_cmd`) and draw the
   Fig. 2 analogue: (a) the true CMD, (b) the learned CMD — the flow's 3-D density integrated numerically over
   BP−G on a grid, as the paper does —, (c) the noisy, reddened CMD from inverse parallaxes, (d) the parallaxes.
2. Fig. 3 analogue: the flow's density marginalised over BP−G, in probability and log-probability.
3. Distance posteriors (:func:`jaxstars.models.cmd.distance_posteriors`) for an independent simulated test set:
   the CMD with inverse-parallax distances next to the CMD with posterior-mean distances (the "tightening"),
   and the accuracy against the true distances.
4. Real stars (skipped with a message when the Green et al. 2021 sample is not in
   :func:`jaxstars.data.data_dir`): train on ``green2020/green2020_sample.h5`` with the file's reddening ``r``
   converted to E(g−r), show the Fig. 4 analogue and Cranmer et al. Table 1's mean SNR improvement; a held-out
   degraded-parallax test measures the photometric distances on real stars.
5. Print a summary and write ``summary.json`` next to the figures.

The paper's simulation model is 8 MAF blocks × 256 hidden units trained on 30M stars on a GPU. On a CPU we use
5 blocks × 64 hidden units, 50,000 stars, 20 epochs and minibatches of 1024 (the paper: 2048; halving it doubles
the optimiser steps per epoch at the same cost); ``--blocks``/``--hidden``/``--epochs`` change it. The simulated CMD
is a line with Gaussian scatter, which this flow represents well, and the whole example runs in about 10–15
minutes on two cores. ``--quick`` (4 × 32, 10,000 stars, 8 epochs of 256) takes 2–4 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxstars.astro.astrometry import ZP_DR2_LINDEGREN2018
from jaxstars.astro.dust import interpolate_profile
from jaxstars.astro.simulate import simulate
from jaxstars.data import data_dir
from jaxstars.models.cmd import (
    FLAGS,
    batched_best_estimates,
    default_flow,
    distance_posteriors,
    prepare_stars,
    train_cmd,
    training_arrays,
)
from jaxstars.plotting import plot_cmd_before_after, plot_cmd_density, plot_cmd_recovery

try:  # written alongside this example; the inline fallbacks below compute the same headline numbers
    from jaxstars.models.cmd import metrics as cmd_metrics
except ImportError:  # pragma: no cover - depends on the checkout
    cmd_metrics = None

EGR_PER_SFD_EBV = 3.518 - 2.617
"""E(g−r) per unit of the Green et al. (2021) reddening ``r`` (≈ 0.901).

``r`` is in "SFD-like" units: Green et al. (2021) §3.3 set it from SFD (Schlegel et al. 1998) or Bayestar19 and note
that "by construction, these two dust maps report reddening in equivalent units". Bayestar19's PS1 extinctions per
unit reddening (Green et al. 2019, Table 1) are A_g = 3.518 and A_r = 2.617, so E(g−r)_PS1 = 0.901 r; the
Schlafly & Finkbeiner (2011, Table 6, R_V = 3.1) PS1 coefficients per SFD E(B−V), 3.172 − 2.271, give the same
0.901; Zhang & Yuan's (2023) empirical single-valued coefficients (:data:`jaxstars.astro.extinction.ZHANG_YUAN_SIMPLE`)
give 3.248 − 2.363 = 0.885. Cranmer et al.'s coefficients (A_G = 2.71, E(BP−RP) = 0.85, E(BP−G) = 0.39) are per
E(g−r), so the model receives ``0.901 r``.
"""


@dataclass(frozen=True)
class Settings:
    """Sizes of one run (``FULL`` or ``QUICK``)."""

    n_train: int = 50_000
    n_test: int = 5_000
    blocks: int = 5
    hidden: int = 64
    epochs: int = 20
    batch_size: int = 1024
    real_epochs: int = 60
    real_batch_size: int = 512
    real_holdout: float = 0.2
    degraded_snr: float = 3.0
    grid: int = 150
    grid_bp_g: int = 100
    seed: int = 0


FULL = Settings()
QUICK = Settings(
    n_train=10_000,
    n_test=1_000,
    blocks=4,
    hidden=32,
    epochs=8,
    batch_size=256,
    real_epochs=8,
    real_batch_size=256,
    grid=90,
    grid_bp_g=60,
)


# ------------------------------------------------------------------------------------------------------ helpers


def _log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f} s] {msg}", flush=True)


def _json_safe(x):
    """Replace NaN/inf by None and numpy scalars/arrays by Python values (``json.dumps(allow_nan=False)`` safe)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return _json_safe(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def _column(table, name) -> np.ndarray:
    col = table[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(col, dtype=np.float64)


def inverse_parallax(parallax, zero_point=0.0) -> np.ndarray:
    """``1000 / (ϖ − zp)`` [pc], NaN where ``ϖ − zp <= 0``."""
    p = np.asarray(parallax, dtype=np.float64) - zero_point
    out = np.full(p.shape, np.nan)
    np.divide(1000.0, p, out=out, where=p > 0)
    return out


def robust_sigma(x) -> float:
    """1.4826 × median absolute deviation of the finite values (NaN when there are none)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def map_reddening(stars, distance) -> np.ndarray:
    """Each star's mean dust-profile reddening at ``distance`` [pc] (NaN distance → NaN)."""
    d = np.asarray(distance, dtype=np.float64)
    mu = 5.0 * np.log10(np.where(np.isfinite(d) & (d > 0), d, 10.0)) - 5.0
    grid = jnp.asarray(stars.dust.modulus_grid, dtype=jnp.float32)
    E = jax.vmap(interpolate_profile, in_axes=(None, 0, 0))(grid, jnp.asarray(stars.dust.mean), jnp.asarray(mu))
    return np.where(np.isfinite(d) & (d > 0), np.asarray(E, dtype=np.float64), np.nan)


def dereddened_cmd(model, stars, distance, reddening) -> np.ndarray:
    """``(n, 2)`` points (BP−RP, M_G) of the observed photometry moved to ``distance`` and dereddened by
    ``reddening`` with the model's coefficients (NaN where either is not finite)."""
    y = np.asarray(stars.features, dtype=np.float64)
    k = np.asarray(model.feature_extinction, dtype=np.float64)
    d = np.asarray(distance, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = 5.0 * np.log10(d) - 5.0
    m_g = y[:, 0] - mu - reddening * k[0]
    colour = y[:, 1] - reddening * k[1]
    return np.column_stack([colour, m_g])


def _design(bp_rp, m_g) -> np.ndarray:
    """Quadratic polynomial terms in (BP−RP, M_G) for the BP−G ridge."""
    x, y = np.asarray(bp_rp, dtype=np.float64), np.asarray(m_g, dtype=np.float64)
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)


@dataclass(frozen=True)
class BpGAxis:
    """Where to integrate over BP−G: ``BP−G = ridge(BP−RP, M_G) + u`` on a fixed grid of offsets ``u``.

    Real stars' BP−G is almost a function of BP−RP (conditional widths of ~0.01 mag), so a uniform BP−G grid
    aliases the sharp ridge into stripes; following a fitted ridge and integrating the offset on a grid that is fine
    near 0 and wide in the tails (``u = a sinh(t)``, t uniform) resolves it. The shear has unit Jacobian.
    """

    coefficients: np.ndarray
    offsets: np.ndarray

    def ridge(self, bp_rp, m_g) -> np.ndarray:
        return _design(bp_rp, m_g) @ self.coefficients


def bp_g_axis(features, n: int, pad: float = 0.5) -> BpGAxis:
    """Fit the BP−G ridge (quadratic in BP−RP and M_G, least squares) to ``features`` ``(n, 3)`` in the model's
    order (M_G, BP−RP, BP−G) and span the residuals' 0.1–99.9 % range plus ``pad`` mag with ``n`` offsets."""
    f = np.asarray(features, dtype=np.float64)
    f = f[np.all(np.isfinite(f), axis=1)]
    a = _design(f[:, 1], f[:, 0])
    coef, *_ = np.linalg.lstsq(a, f[:, 2], rcond=None)
    resid = f[:, 2] - a @ coef
    width = max(robust_sigma(resid), 1e-3)
    lo, hi = np.percentile(resid, 0.1) - pad, np.percentile(resid, 99.9) + pad
    t_max = float(np.arcsinh(max(abs(lo), abs(hi)) / (0.25 * width)))
    offsets = 0.25 * width * np.sinh(np.linspace(-t_max, t_max, n))
    return BpGAxis(coef, offsets)


def marginal_cmd_density(
    model, params, bp_rp, m_g, axis: BpGAxis, chunk: int = 1 << 16
) -> tuple[np.ndarray, float]:
    """The flow's density over (BP−RP, M_G), integrated numerically over BP−G (trapezoid rule along ``axis``).

    Returns ``(density (len(m_g), len(bp_rp)) in mag⁻², mass)`` where ``mass`` is the density integrated over the
    (BP−RP, M_G) window: close to 1 when the window and the BP−G offsets cover the model's support.
    """
    xx, yy = np.meshgrid(bp_rp, m_g, indexing="xy")  # (ny, nx)
    u = axis.offsets
    zz = axis.ridge(xx, yy)[..., None] + u  # (ny, nx, nu)
    shape = zz.shape
    f = np.stack(
        [np.broadcast_to(yy[..., None], shape).ravel(), np.broadcast_to(xx[..., None], shape).ravel(), zz.ravel()],
        axis=-1,
    ).astype(np.float32)  # feature order (M_G, BP-RP, BP-G)
    fn = jax.jit(lambda v: model.log_density(params, v))
    pieces = []
    for start in range(0, f.shape[0], chunk):
        part = f[start : start + chunk]
        size = part.shape[0]
        if size < chunk:  # one static shape: one compilation
            part = np.concatenate([part, np.repeat(part[-1:], chunk - size, axis=0)])
        pieces.append(np.asarray(fn(part), dtype=np.float64)[:size])
    dens3 = np.exp(np.concatenate(pieces)).reshape(shape)
    dens = np.sum(0.5 * (dens3[..., 1:] + dens3[..., :-1]) * np.diff(u), axis=-1)
    dx, dy = np.diff(bp_rp), np.diff(m_g)
    cells = 0.25 * (dens[1:, 1:] + dens[1:, :-1] + dens[:-1, 1:] + dens[:-1, :-1]) * dy[:, None] * dx[None, :]
    return dens, float(np.sum(cells))


def loss_weight_diagnostics(tr, stars, key: int = 0) -> dict:
    """Kish effective sample size of the training loss weights ``1/σ_P²`` (σ_P floored) at the trained model.

    ``ESS = (Σw)² / Σw²``: how many equally weighted stars the weighted loss is worth. Parallax-dominated σ_P makes
    the nearest stars dominate (σ_g ∝ 1/SNR), so the ESS can be a small fraction of the training set.
    """
    arrays = {k: v[tr.used] for k, v in training_arrays(stars).items()}
    grid = np.asarray(stars.dust.modulus_grid, dtype=np.float32)
    est = batched_best_estimates(tr.model, tr.params, arrays, grid, jax.random.PRNGKey(key), n_iterations=5)
    floor = float(tr.model.info.get("sigma_floor", 0.01))
    sigma_p2 = np.asarray(est.sigma_p2, dtype=np.float64)
    w = 1.0 / np.maximum(sigma_p2, floor**2)
    return {
        "n": int(w.size),
        "ess": float(w.sum() ** 2 / np.sum(w**2)),
        "fraction_at_sigma_floor": float(np.mean(sigma_p2 <= floor**2)),
        "median_sigma_p": float(np.sqrt(np.median(sigma_p2))),
        "sigma_floor": floor,
    }


def snr_summary(parallax, parallax_error, distance_mean, distance_std) -> dict:
    """Cranmer et al. Table 1 via :func:`jaxstars.models.cmd.metrics.snr_table`, or the headline numbers inline."""
    if cmd_metrics is not None and hasattr(cmd_metrics, "snr_table"):
        return cmd_metrics.snr_table(parallax, parallax_error, distance_mean, distance_std)
    plx, err = np.asarray(parallax, float), np.asarray(parallax_error, float)
    dm, ds = np.asarray(distance_mean, float), np.asarray(distance_std, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_gaia, s_model = plx / err, dm / ds
    pos = np.isfinite(s_gaia) & np.isfinite(s_model) & (plx > 0)
    mg, mm = float(np.mean(s_gaia[pos])), float(np.mean(s_model[pos]))
    return {
        "n": int(plx.size),
        "n_positive": int(pos.sum()),
        "mean_snr_gaia_positive": mg,
        "mean_snr_model_positive": mm,
        "mean_snr_improvement": mm / mg - 1.0,
        "median_snr_ratio": float(np.median(s_model[pos] / s_gaia[pos])),
        "negative_fraction": float(np.mean(plx[np.isfinite(plx)] < 0)),
    }


def coverage(res: dict, truth) -> dict:
    """Fraction of stars whose true distance lies inside the posterior's 68 % and 95 % central intervals."""
    t = np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(res["distance_q16"]) & np.isfinite(t)
    in68 = (t >= res["distance_q16"]) & (t <= res["distance_q84"])
    in95 = (t >= res["distance_q2_5"]) & (t <= res["distance_q97_5"])
    return {"n": int(ok.sum()), "coverage_68": float(np.mean(in68[ok])), "coverage_95": float(np.mean(in95[ok]))}


def median_abs_frac(est, truth, mask=None) -> float:
    e, t = np.asarray(est, float), np.asarray(truth, float)
    m = np.isfinite(e) & np.isfinite(t) & (True if mask is None else mask)
    return float(np.median(np.abs(e[m] - t[m]) / t[m])) if m.any() else float("nan")


def cmd_spread_at_fixed_colour(points, mask, width: float = 0.1, min_count: int = 20) -> float:
    """Median over colour bins (``width`` mag) of the robust σ of M_G: the width of the sequence at fixed colour."""
    p = np.asarray(points, dtype=np.float64)[mask]
    p = p[np.all(np.isfinite(p), axis=1)]
    if p.shape[0] < min_count:
        return float("nan")
    edges = np.arange(np.floor(p[:, 0].min() / width) * width, p[:, 0].max() + width, width)
    idx = np.digitize(p[:, 0], edges)
    sig = [robust_sigma(p[idx == i, 1]) for i in np.unique(idx) if np.sum(idx == i) >= min_count]
    return float(np.median(sig)) if sig else float("nan")


# --------------------------------------------------------------------------------------------------- simulation


def run_simulation(s: Settings, out: Path, t0: float, progress: bool, model_dir: Path | None = None) -> dict:
    """§4.1: simulate, train, Fig. 2 and Fig. 3 analogues, test-set posteriors and the tightening figure."""
    summary: dict = {}
    cat = simulate(s.n_train, mode="cranmer", key=s.seed + 1)
    test = simulate(s.n_test, mode="cranmer", key=s.seed + 2)
    _log(f"simulated {len(cat):,} training and {len(test):,} test stars (Cranmer §4.1 mode)", t0)

    flow = default_flow(3, n_blocks=s.blocks, hidden=s.hidden)
    start = time.time()
    tr = train_cmd(cat, flow=flow, epochs=s.epochs, batch_size=s.batch_size, key=s.seed, progress=progress)
    train_time = time.time() - start
    model, params = tr.model, tr.params
    fit = tr.fit
    if model_dir is not None:
        model.save(model_dir / "sim", params)
    _log(
        f"trained {s.blocks}x{s.hidden} MAF: {fit.epochs_run} epochs, best epoch {int(fit.best_epoch)}, "
        f"val loss {float(np.nanmin(fit.val_loss)):.3f} ({train_time:.0f} s)",
        t0,
    )
    summary["training"] = {
        "n_train_rows_used": int(tr.used.sum()),
        "flow": f"{s.blocks} blocks x {s.hidden} hidden (MADE -> BatchNorm -> Reverse)",
        "epochs_run": int(fit.epochs_run),
        "best_epoch": int(fit.best_epoch),
        "train_loss": [float(v) for v in np.ravel(fit.train_loss)],
        "val_loss": [float(v) for v in np.ravel(fit.val_loss)],
        "seconds": train_time,
        "standardisation_shift": list(model.shift),
        "standardisation_scale": list(model.scale),
        "loss_weights": loss_weight_diagnostics(tr, prepare_stars(model.features, cat), key=s.seed),
    }
    _log(
        f"loss weights 1/σ_P²: Kish ESS {summary['training']['loss_weights']['ess']:.0f} of {int(tr.used.sum())}",
        t0,
    )

    # ---- Fig. 2 analogue
    true_g = _column(cat, "true_absmag_G")
    true_c = _column(cat, "true_absmag_BP") - _column(cat, "true_absmag_RP")
    true_bpg = _column(cat, "true_absmag_BP") - true_g
    truth_pts = np.column_stack([true_c, true_g])
    d_inv = inverse_parallax(_column(cat, "parallax"))
    with np.errstate(invalid="ignore", divide="ignore"):
        noisy_g = _column(cat, "mag_G") - (5.0 * np.log10(d_inv) - 5.0)
    noisy_c = _column(cat, "mag_BP") - _column(cat, "mag_RP")
    noisy_pts = np.column_stack([noisy_c, noisy_g])
    xlim = (float(np.percentile(true_c, 0.1) - 0.4), float(np.percentile(true_c, 99.9) + 0.6))
    ylim = (float(np.percentile(true_g, 0.1) - 3.0), float(np.percentile(true_g, 99.9) + 2.0))
    bp_rp = np.linspace(*xlim, s.grid)
    m_g = np.linspace(*ylim, s.grid)
    axis = bp_g_axis(np.column_stack([true_g, true_c, true_bpg]), s.grid_bp_g)
    learned, mass = marginal_cmd_density(model, params, bp_rp, m_g, axis)
    _log(f"flow marginal over BP-G on a {s.grid}x{s.grid}x{s.grid_bp_g} grid: mass in window {mass:.4f}", t0)
    plx, true_plx = _column(cat, "parallax"), _column(cat, "true_parallax")
    plot_cmd_density(
        [
            {"title": "(a) truth CMD (dereddened, noise-free)", "points": truth_pts},
            {"title": "(b) learned CMD: flow integrated over BP−G", "grid": (bp_rp, m_g, learned)},
            {"title": "(c) noisy reddened CMD, distance 1/ϖ (ϖ > 0)", "points": noisy_pts},
            {
                "title": "(d) parallaxes",
                "hist": plx,
                "hist_range": (float(np.percentile(plx, 0.5)), float(np.percentile(plx, 99.5))),
                "hist_xlabel": "parallax [mas]",
                "hist_label": "observed ϖ (σ_ϖ = d / 10 kpc)",
                "hist_reference": true_plx,
                "hist_reference_label": "true parallax",
            },
        ],
        out / "fig2_simulation.png",
        xlim=xlim,
        ylim=ylim,
        ncols=2,
    )
    frac_outside = float(
        np.mean(
            ~(
                (noisy_pts[:, 0] >= xlim[0])
                & (noisy_pts[:, 0] <= xlim[1])
                & (noisy_pts[:, 1] >= ylim[0])
                & (noisy_pts[:, 1] <= ylim[1])
            )
        )
    )
    summary["fig2"] = {
        "window_bp_rp": list(xlim),
        "window_m_g": list(ylim),
        "bp_g_offsets_from_ridge": [float(axis.offsets[0]), float(axis.offsets[-1])],
        "grid": [s.grid, s.grid, s.grid_bp_g],
        "learned_mass_in_window": mass,
        "noisy_fraction_outside_window_or_nonpositive_parallax": frac_outside,
    }
    if cmd_metrics is not None and hasattr(cmd_metrics, "cmd_recovery"):
        truth_f = np.column_stack([true_g, true_c, true_bpg])
        noisy_f = np.column_stack([noisy_g, noisy_c, _column(cat, "mag_BP") - _column(cat, "mag_G")])
        summary["fig2"]["hellinger"] = cmd_metrics.cmd_recovery(model, params, truth_f, noisy_f, key=s.seed)
        h = summary["fig2"]["hellinger"]
        _log(
            f"Hellinger distance to the truth CMD: learned {h['hellinger_recovered']:.3f}, noisy 1/ϖ "
            f"{h['hellinger_noisy']:.3f}, two halves of the truth {h['hellinger_floor']:.3f}",
            t0,
        )

    # ---- Fig. 3 analogue (simulation model)
    plot_cmd_density(
        [
            {
                "title": "(a) P(BP−RP, M_G) — flow marginalised over BP−G",
                "grid": (bp_rp, m_g, learned),
                "log": False,
            },
            {"title": "(b) log P (colour: log scale, 10⁻⁴ of peak)", "grid": (bp_rp, m_g, learned), "log": True},
        ],
        out / "fig3_flow_density_sim.png",
        xlim=xlim,
        ylim=ylim,
        dynamic_range=1e-4,
    )

    # ---- posteriors on the independent test set
    stars = prepare_stars(model.features, test)
    start = time.time()
    res = distance_posteriors(model, params, stars, key=s.seed, progress=progress)
    post_time = time.time() - start
    d_true = _column(test, "true_distance")
    t_plx, t_err = _column(test, "parallax"), _column(test, "parallax_error")
    snr = t_plx / t_err
    d_inv_t = inverse_parallax(t_plx)
    _log(f"distance posteriors for {len(test):,} test stars in {post_time:.1f} s", t0)
    estimates = {"model (posterior mean)": res["distance_mean"], "1/ϖ": d_inv_t}
    errors = {"model (posterior mean)": res["distance_std"]}
    if cmd_metrics is not None and hasattr(cmd_metrics, "edsd_distances"):
        edsd = cmd_metrics.edsd_distances(t_plx, t_err, length_scale=1000.0)
        estimates["EDSD L=1 kpc (parallax only)"] = edsd["mean"]
        errors["EDSD L=1 kpc (parallax only)"] = edsd["std"]
    plot_cmd_recovery(d_true, estimates, snr, out / "cmd_recovery_sim.png", errors=errors)
    acc = {}
    for label, mask in (
        ("all", None),
        ("snr<3", snr < 3),
        ("3<=snr<10", (snr >= 3) & (snr < 10)),
        ("snr>=10", snr >= 10),
    ):
        acc[label] = {"n": int(len(snr) if mask is None else mask.sum())}
        acc[label].update({name: median_abs_frac(est, d_true, mask) for name, est in estimates.items()})
    flags = np.asarray(res["flags"])
    summary["test_posteriors"] = {
        "n": len(test),
        "seconds": post_time,
        "median_abs_frac_error": acc,
        "coverage": coverage(res, d_true),
        "flagged_fraction": float(np.mean(flags != 0)),
    }
    if cmd_metrics is not None and hasattr(cmd_metrics, "accuracy_by_snr"):
        summary["test_posteriors"]["accuracy_by_snr"] = cmd_metrics.accuracy_by_snr(d_true, estimates, snr)

    # ---- CMD before / after (tightening)
    E_inv = map_reddening(stars, d_inv_t)
    before = dereddened_cmd(model, stars, d_inv_t, E_inv)
    after = dereddened_cmd(model, stars, res["distance_mean"], res["reddening_mean"])
    truth_t = np.column_stack(
        [_column(test, "true_absmag_BP") - _column(test, "true_absmag_RP"), _column(test, "true_absmag_G")]
    )
    plot_cmd_before_after(
        before,
        after,
        out / "cmd_before_after_sim.png",
        truth=truth_t,
        rows=[("all test stars", np.ones(len(test), bool)), ("ϖ/σ_ϖ < 5", snr < 5)],
        xlim=xlim,
        ylim=ylim,
        bins=80,
    )
    dm_before = before[:, 1] - truth_t[:, 1]
    dm_after = after[:, 1] - truth_t[:, 1]
    pos = t_plx > 0
    summary["tightening"] = {
        "robust_sigma_dM_G_inverse_parallax_plx_pos": robust_sigma(dm_before[pos]),
        "robust_sigma_dM_G_model_plx_pos": robust_sigma(dm_after[pos]),
        "robust_sigma_dM_G_model_all": robust_sigma(dm_after),
        "robust_sigma_dM_G_inverse_parallax_snr_lt5_plx_pos": robust_sigma(dm_before[pos & (snr < 5)]),
        "robust_sigma_dM_G_model_snr_lt5": robust_sigma(dm_after[snr < 5]),
        "fraction_plx_nonpositive": float(np.mean(~pos)),
        "robust_sigma_dBP_RP_model_all": robust_sigma(after[:, 0] - truth_t[:, 0]),
    }
    return summary


# ------------------------------------------------------------------------------------------------------ real data


def run_green2020(s: Settings, out: Path, t0: float, progress: bool, model_dir: Path | None = None) -> dict | None:
    """Train on the Green et al. (2021) sample and show the Fig. 4 analogue and Table 1's SNR improvement."""
    from jaxstars.astro.catalog_io import read_green2020

    base = data_dir()
    path = None if base is None else base / "green2020" / "green2020_sample.h5"
    if path is None or not path.exists():
        print(
            "real data: skipped — green2020/green2020_sample.h5 not found in the real-data folder "
            f"({base if base is not None else 'none'}; set JAXSTARS_DATA_DIR)",
            flush=True,
        )
        return None
    table = read_green2020(path)
    n = len(table)
    E = EGR_PER_SFD_EBV * _column(table, "r")
    E_err = EGR_PER_SFD_EBV * _column(table, "r_err")
    rng = np.random.default_rng(s.seed)
    holdout = np.zeros(n, dtype=bool)
    holdout[rng.choice(n, round(s.real_holdout * n), replace=False)] = True
    train_rows = np.flatnonzero(~holdout)
    _log(f"Green et al. sample: {n:,} stars; training on {train_rows.size:,}, {int(holdout.sum()):,} held out", t0)

    flow = default_flow(3, n_blocks=s.blocks, hidden=s.hidden)
    start = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="train_cmd: ")
        tr = train_cmd(
            table[train_rows],
            reddening=E[train_rows],
            reddening_error=E_err[train_rows],
            zero_point=ZP_DR2_LINDEGREN2018,
            flow=flow,
            epochs=s.real_epochs,
            batch_size=s.real_batch_size,
            key=s.seed,
            progress=progress,
        )
    train_time = time.time() - start
    model, params = tr.model, tr.params
    if model_dir is not None:
        model.save(model_dir / "green2020", params)
    _log(
        f"trained on {int(tr.used.sum()):,} stars: {tr.fit.epochs_run} epochs, best {int(tr.fit.best_epoch)}, "
        f"val loss {float(np.nanmin(tr.fit.val_loss)):.3f} ({train_time:.0f} s)",
        t0,
    )
    summary: dict = {
        "egr_per_r": EGR_PER_SFD_EBV,
        "zero_point_mas": ZP_DR2_LINDEGREN2018,
        "training": {
            "n_rows": int(train_rows.size),
            "n_used": int(tr.used.sum()),
            "epochs_run": int(tr.fit.epochs_run),
            "best_epoch": int(tr.fit.best_epoch),
            "batch_size": s.real_batch_size,
            "train_loss": [float(v) for v in np.ravel(tr.fit.train_loss)],
            "val_loss": [float(v) for v in np.ravel(tr.fit.val_loss)],
            "seconds": train_time,
        },
    }
    train_stars = prepare_stars(
        model.features, table[train_rows], reddening=E[train_rows], reddening_error=E_err[train_rows]
    )
    summary["training"]["loss_weights"] = loss_weight_diagnostics(tr, train_stars, key=s.seed)
    _log(
        f"loss weights 1/σ_P²: Kish ESS {summary['training']['loss_weights']['ess']:.0f} of {int(tr.used.sum())}",
        t0,
    )

    # ---- posteriors for every star (training and held-out)
    stars = prepare_stars(model.features, table, reddening=E, reddening_error=E_err, n_dust_draws=5)
    start = time.time()
    res = distance_posteriors(model, params, stars, key=s.seed, progress=progress)
    _log(f"distance posteriors for {n:,} real stars in {time.time() - start:.1f} s", t0)
    plx, err = _column(table, "parallax"), _column(table, "parallax_error")
    snr = plx / err
    table1 = snr_summary(plx, err, res["distance_mean"], res["distance_std"])
    summary["snr_table"] = table1
    with np.errstate(invalid="ignore", divide="ignore"):
        snr_model = res["distance_mean"] / res["distance_std"]
    by_bin = []
    for lo, hi in ((0.0, 1.0), (1.0, 5.0), (5.0, 20.0), (20.0, np.inf)):
        sel = (snr > lo) & (snr <= hi) & np.isfinite(snr_model)
        by_bin.append(
            {
                "gaia_snr_range": [lo, hi],
                "n": int(sel.sum()),
                "mean_snr_gaia": float(np.mean(snr[sel])) if sel.any() else None,
                "mean_snr_model": float(np.mean(snr_model[sel])) if sel.any() else None,
                "median_snr_ratio": float(np.median(snr_model[sel] / snr[sel])) if sel.any() else None,
            }
        )
    summary["snr_by_gaia_snr"] = by_bin
    flags = np.asarray(res["flags"])
    summary["flags"] = {
        "no_result": int(np.sum(~np.isfinite(res["distance_mean"]))),
        "outside_coverage": int(np.sum((flags & FLAGS["outside_coverage"]) != 0)),
        "grid_edge": int(np.sum((flags & FLAGS["grid_edge"]) != 0)),
    }
    _log(
        f"mean SNR (ϖ>0, {table1['n_positive']:,} stars): Gaia ϖ/σ {table1['mean_snr_gaia_positive']:.2f} -> "
        f"model d/σ_d {table1['mean_snr_model_positive']:.2f} ({100 * table1['mean_snr_improvement']:+.1f}%)",
        t0,
    )

    # ---- Fig. 4 analogue
    d_inv = inverse_parallax(plx, ZP_DR2_LINDEGREN2018)
    before = dereddened_cmd(model, stars, d_inv, E)
    after = dereddened_cmd(model, stars, res["distance_mean"], res["reddening_mean"])
    finite_after = after[np.all(np.isfinite(after), axis=1)]
    xlim = (
        float(np.percentile(finite_after[:, 0], 0.2) - 0.2),
        float(np.percentile(finite_after[:, 0], 99.8) + 0.2),
    )
    ylim = (
        float(np.percentile(finite_after[:, 1], 0.2) - 1.0),
        float(np.percentile(finite_after[:, 1], 99.8) + 1.0),
    )
    plot_cmd_before_after(
        before,
        after,
        out / "fig4_green2020.png",
        rows=[("all stars", np.ones(n, bool)), ("ϖ/σ_ϖ > 10", snr > 10), ("ϖ/σ_ϖ < 5", snr < 5)],
        titles=("Gaia DR2: distance 1/(ϖ − zp)", "model: posterior-mean distance"),
        xlim=xlim,
        ylim=ylim,
        bins=70,
    )
    dwarfs = _column(table, "logg") > 4.2
    pos = plx > 0
    summary["tightening"] = {
        "note": "median over 0.1-mag BP-RP bins of the robust sigma of M_G, spectroscopic dwarfs (logg > 4.2)",
        "dwarfs_plx_pos_inverse_parallax": cmd_spread_at_fixed_colour(before, dwarfs & pos),
        "dwarfs_plx_pos_model": cmd_spread_at_fixed_colour(after, dwarfs & pos),
        "dwarfs_snr_lt5_plx_pos_inverse_parallax": cmd_spread_at_fixed_colour(before, dwarfs & pos & (snr < 5)),
        "dwarfs_snr_lt5_plx_pos_model": cmd_spread_at_fixed_colour(after, dwarfs & pos & (snr < 5)),
        "n_dwarfs_snr_lt5": int(np.sum(dwarfs & pos & (snr < 5))),
    }

    # ---- Fig. 3 analogue for the real-data model
    bp_rp = np.linspace(*xlim, s.grid)
    m_g = np.linspace(*ylim, s.grid)
    good = np.all(np.isfinite(after), axis=1)
    y = np.asarray(stars.features, dtype=np.float64)[good]
    k = np.asarray(model.feature_extinction, dtype=np.float64)
    E_post = np.asarray(res["reddening_mean"])[good]
    feats = np.column_stack([after[good, 1], after[good, 0], y[:, 2] - E_post * k[2]])
    axis = bp_g_axis(feats, s.grid_bp_g)
    dens, mass = marginal_cmd_density(model, params, bp_rp, m_g, axis)
    summary["fig3_mass_in_window"] = mass
    plot_cmd_density(
        [
            {"title": "(a) P(BP−RP, M_G): Green et al. sample model", "grid": (bp_rp, m_g, dens), "log": False},
            {"title": "(b) log P (colour: log scale, 10⁻⁴ of peak)", "grid": (bp_rp, m_g, dens), "log": True},
        ],
        out / "fig3_flow_density_green2020.png",
        xlim=xlim,
        ylim=ylim,
        dynamic_range=1e-4,
    )

    # ---- degraded-parallax test on held-out precise stars: how good are the photometric distances alone?
    precise = holdout & (snr > 20) & np.all(np.isfinite(after), axis=1)
    rows = np.flatnonzero(precise)
    sub = table[rows]
    p0, e0 = plx[rows], err[rows]
    d_ref = inverse_parallax(p0, ZP_DR2_LINDEGREN2018)
    new_err = (p0 - ZP_DR2_LINDEGREN2018) / s.degraded_snr
    extra = np.sqrt(np.maximum(new_err**2 - e0**2, 0.0))
    sub["parallax"] = p0 + extra * rng.standard_normal(rows.size)
    sub["parallax_error"] = new_err
    stars_d = prepare_stars(model.features, sub, reddening=E[rows], reddening_error=E_err[rows], n_dust_draws=5)
    res_d = distance_posteriors(model, params, stars_d, key=s.seed + 1)
    d_inv_d = inverse_parallax(_column(sub, "parallax"), ZP_DR2_LINDEGREN2018)
    degraded = {
        "n": int(rows.size),
        "target_snr": s.degraded_snr,
        "reference": "1/(ϖ − zp) of the original parallax (ϖ/σ_ϖ > 20, i.e. < 5 % error)",
        "median_abs_frac_error_model": median_abs_frac(res_d["distance_mean"], d_ref),
        "median_abs_frac_error_model_posterior_median": median_abs_frac(res_d["distance_q50"], d_ref),
        "median_abs_frac_error_inverse_degraded_parallax": median_abs_frac(d_inv_d, d_ref),
        "fraction_degraded_parallax_nonpositive": float(np.mean(~np.isfinite(d_inv_d))),
        "coverage": coverage(res_d, d_ref),
        "mean_snr_model": float(np.nanmean(res_d["distance_mean"] / res_d["distance_std"])),
    }
    logg = _column(sub, "logg")
    for name, sel in (("dwarfs_logg_gt_4.2", logg > 4.2), ("giants_logg_lt_3.5", logg < 3.5)):
        degraded[name] = {
            "n": int(sel.sum()),
            "median_abs_frac_error_model": median_abs_frac(res_d["distance_mean"], d_ref, sel),
            "median_abs_frac_error_model_posterior_median": median_abs_frac(res_d["distance_q50"], d_ref, sel),
            "median_frac_bias_model": float(np.nanmedian((res_d["distance_mean"][sel] - d_ref[sel]) / d_ref[sel])),
            "median_abs_frac_error_inverse_degraded_parallax": median_abs_frac(d_inv_d, d_ref, sel),
            "coverage": coverage({k: v[sel] for k, v in res_d.items()}, d_ref[sel]),
        }
    if cmd_metrics is not None and hasattr(cmd_metrics, "edsd_distances"):
        edsd = cmd_metrics.edsd_distances(_column(sub, "parallax"), new_err, 1000.0, ZP_DR2_LINDEGREN2018)
        degraded["median_abs_frac_error_edsd_L1kpc"] = median_abs_frac(edsd["mean"], d_ref)
    summary["degraded_parallax_test"] = degraded
    _log(
        f"held-out stars with parallaxes degraded to SNR {s.degraded_snr:g} ({rows.size} stars): median |Δd|/d "
        f"model {degraded['median_abs_frac_error_model']:.3f} vs 1/ϖ "
        f"{degraded['median_abs_frac_error_inverse_degraded_parallax']:.3f}",
        t0,
    )
    return summary


# ------------------------------------------------------------------------------------------------------ main


def _print_summary(summary: dict) -> None:
    print("\n=== summary ===")
    sim = summary["simulation"]
    if sim is None:
        print("simulation: skipped")
    else:
        _print_simulation(sim)
    _print_real(summary.get("green2020"))


def _print_simulation(sim: dict) -> None:
    tr = sim["training"]
    lw = tr["loss_weights"]
    print(f"simulation: training loss weights Kish ESS {lw['ess']:.0f} of {lw['n']}")
    print(
        f"simulation: {tr['n_train_rows_used']:,} training stars, {tr['flow']}, {tr['epochs_run']} epochs "
        f"({tr['seconds']:.0f} s)"
    )
    if "hellinger" in sim["fig2"]:
        h = sim["fig2"]["hellinger"]
        print(
            f"  Fig. 2 Hellinger to truth: learned {h['hellinger_recovered']:.3f}, noisy {h['hellinger_noisy']:.3f}, "
            f"floor {h['hellinger_floor']:.3f}"
        )
    print(f"  learned-CMD mass inside the plotted window: {sim['fig2']['learned_mass_in_window']:.4f}")
    acc = sim["test_posteriors"]["median_abs_frac_error"]
    for label, row in acc.items():
        parts = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "n" and v is not None)
        print(f"  median |d-d_true|/d_true [{label}, n={row['n']}]: {parts}")
    cov = sim["test_posteriors"]["coverage"]
    print(f"  coverage: 68% interval {cov['coverage_68']:.3f}, 95% interval {cov['coverage_95']:.3f}")
    t = sim["tightening"]
    print(
        f"  robust σ(M_G − M_G,true), ϖ>0: 1/ϖ {t['robust_sigma_dM_G_inverse_parallax_plx_pos']:.3f} mag, "
        f"model {t['robust_sigma_dM_G_model_plx_pos']:.3f} mag"
    )


def _print_real(real: dict | None) -> None:
    if real is None:
        print("real data: skipped")
        return
    t1 = real["snr_table"]
    lw = real["training"]["loss_weights"]
    print(f"Green et al. sample: training loss weights Kish ESS {lw['ess']:.0f} of {lw['n']}")
    print(
        f"Green et al. sample: mean SNR improvement (ϖ>0) {100 * t1['mean_snr_improvement']:+.1f}% "
        f"(Gaia {t1['mean_snr_gaia_positive']:.2f} -> model {t1['mean_snr_model_positive']:.2f}); "
        f"median per-star ratio {t1['median_snr_ratio']:.2f}"
    )
    for row in real["snr_by_gaia_snr"]:
        if row["n"]:
            print(
                f"  Gaia SNR in ({row['gaia_snr_range'][0]:g}, {row['gaia_snr_range'][1] or float('inf'):g}] "
                f"(n={row['n']}): mean "
                f"ϖ/σ {row['mean_snr_gaia']:.2f} -> d/σ_d {row['mean_snr_model']:.2f}; median ratio "
                f"{row['median_snr_ratio']:.2f}"
            )
    dg = real["degraded_parallax_test"]
    print(
        f"  degraded-parallax test (n={dg['n']}, SNR {dg['target_snr']:g}): median |Δd|/d model "
        f"{dg['median_abs_frac_error_model']:.3f}, 1/ϖ {dg['median_abs_frac_error_inverse_degraded_parallax']:.3f}"
        f", 68% coverage {dg['coverage']['coverage_68']:.3f}"
    )
    for name in ("dwarfs_logg_gt_4.2", "giants_logg_lt_3.5"):
        part = dg[name]
        print(
            f"    {name} (n={part['n']}): model {part['median_abs_frac_error_model']:.3f} "
            f"(posterior median {part['median_abs_frac_error_model_posterior_median']:.3f}), "
            f"1/ϖ {part['median_abs_frac_error_inverse_degraded_parallax']:.3f}, "
            f"68% coverage {part['coverage']['coverage_68']:.3f}"
        )
    tt = real["tightening"]
    print(
        f"  dwarf sequence width at fixed colour (ϖ>0): 1/ϖ {tt['dwarfs_plx_pos_inverse_parallax']:.3f} mag, "
        f"model {tt['dwarfs_plx_pos_model']:.3f} mag"
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small, fast run (checks the pipeline)")
    parser.add_argument("--out", default="docs/figures/cmd", help="folder for the figures and summary.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--blocks", type=int, default=None, help="MAF blocks (default: 5; quick: 4)")
    parser.add_argument(
        "--hidden", type=int, default=None, help="hidden units per MADE layer (default: 64; quick: 32)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="simulation training epochs (default: 20; quick: 4)"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the Green et al. real-data part")
    parser.add_argument("--no-sim", action="store_true", help="skip the simulation part")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument(
        "--model-dir", default=None, help="also save the trained models in DIR/sim and DIR/green2020"
    )
    args = parser.parse_args(argv)

    s = QUICK if args.quick else FULL
    overrides = {k: v for k, v in (("blocks", args.blocks), ("hidden", args.hidden), ("epochs", args.epochs)) if v}
    s = replace(s, seed=args.seed, **overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    summary = {"settings": asdict(s), "quick": bool(args.quick)}
    model_dir = None if args.model_dir is None else Path(args.model_dir)
    summary["simulation"] = None if args.no_sim else run_simulation(s, out, t0, args.progress, model_dir)
    summary["green2020"] = None if args.no_real else run_green2020(s, out, t0, args.progress, model_dir)
    summary["seconds_total"] = time.time() - t0
    summary = _json_safe(summary)
    with open(out / "summary.json", "w") as fh:
        json.dump(summary, fh, indent=1, allow_nan=False)
    _print_summary(summary)
    print(f"\nfigures and summary.json in {out}/ ({summary['seconds_total']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
