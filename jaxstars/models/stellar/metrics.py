"""Goodness of fit of a stellar model on a star sample (Green et al. §4 and §6).

:func:`evaluate_stellar` re-estimates every star's reddening (Eqs. 8–9), computes χ² (Eq. 14) with the full
covariance, χ²/d.o.f. (d.o.f. = observed entries of ``c`` − 1), the fraction above the χ²/d.o.f. = 5 cut and
⟨χ²/d.o.f.⟩ of the rest (the paper's 0.87), and per colour the residual (observed − predicted) RMS in mag and the
score percentiles of Eq. 18 (``σ`` from ``B C_m Bᵀ``).  :func:`scores` returns the per-star scores for Fig. 12,
:func:`delta_r_over_r` Eq. 17 (Fig. 10) and :func:`model_difference` the RMS difference between two models.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .covariance import (
    batch_chi2,
    batch_reddening_update,
    batch_whitening,
    colour_covariance,
    magnitude_covariance,
    star_arrays,
)
from .model import StellarModel
from .stars import StellarStars

__all__ = ["colour_names", "delta_r_over_r", "evaluate_stellar", "model_difference", "scores"]


def colour_names(bands) -> list[str]:
    """Names of the entries of ``c = B m``: ``M_G``-like reference entry, then ``X−G`` colours."""
    ref = bands[0]
    return [f"M_{ref}"] + [f"{b}-{ref}" for b in bands[1:]]


@functools.partial(jax.jit, static_argnums=(0,))
def _colour_sigma(network, params, arrays, E, E_var):
    def one(theta_n, cov_n, mag_var, mu_var, e, e_var):
        cov = colour_covariance(
            network, magnitude_covariance(network, params, theta_n, cov_n, e, e_var, mag_var, mu_var)
        )
        return jnp.sqrt(jnp.diagonal(cov))

    return jax.vmap(one)(arrays.theta_n, arrays.cov_n, arrays.mag_var, arrays.mu_var, E, E_var)


def scores(model: StellarModel, stars: StellarStars, E=None, E_var=None) -> dict:
    """Per-star residuals and scores of Eq. 18 for every entry of ``c`` (NaN where unobserved).

    Parameters
    ----------
    E, E_var : arrays, optional
        Reddenings to use (default: re-estimated by Eqs. 8–9).

    Returns
    -------
    dict
        ``residual`` and ``score`` ``(n, b)`` (observed − predicted, and divided by ``σ`` from ``B C_m Bᵀ``),
        ``chi2``, ``dof``, ``E``, ``E_var`` ``(n,)``.
    """
    network, params = model.network, model.params
    arrays = star_arrays(network, stars)
    if E is None:
        E, E_var = batch_reddening_update(network, params, arrays)
    E = jnp.asarray(E, arrays.y.dtype)
    E_var = jnp.asarray(E_var, arrays.y.dtype)
    W = batch_whitening(network, params, arrays, E, E_var)
    c2 = np.asarray(batch_chi2(network, params, W, arrays, E), float)
    pred = np.asarray(network.colour_output(params, arrays.theta_n, E), float)
    obs = np.asarray(arrays.obs) & stars.valid[:, None]
    resid = np.where(obs, np.asarray(arrays.y, float) - pred, np.nan)
    sigma = np.asarray(_colour_sigma(network, params, arrays, E, E_var), float)
    dof = np.maximum(obs.sum(axis=1) - 1, 1)
    return {
        "residual": resid,
        "score": resid / sigma,
        "chi2": np.where(stars.valid, c2, np.nan),
        "dof": np.where(stars.valid, dof, 0),
        "E": np.asarray(E, float),
        "E_var": np.asarray(E_var, float),
    }


def evaluate_stellar(model: StellarModel, stars: StellarStars, index=None, *, cut: float = 5.0) -> dict:
    """Summary metrics on the rows ``index`` (default all) — JSON-ready.

    Returns
    -------
    dict
        ``n_stars``, ``n_valid``, ``mean_chi2_dof`` (stars with χ²/d.o.f. ≤ ``cut``), ``mean_chi2_dof_all``,
        ``median_chi2_dof``, ``fraction_excluded`` (χ²/d.o.f. > ``cut`` among valid), ``loss`` (⟨χ²/n_bands⟩ of
        the kept stars, the data term of Eq. 15), and per colour ``residual_rms`` (mag), ``score_p16``,
        ``score_p50``, ``score_p84`` and ``n_observed`` over the kept stars.
    """
    sub = stars if index is None else stars.subset(index)
    s = scores(model, sub)
    valid = sub.valid
    ratio = s["chi2"] / np.where(s["dof"] > 0, s["dof"], 1)
    kept = valid & (ratio <= cut)
    names = colour_names(sub.bands)
    per = {}
    for j, name in enumerate(names):
        r = s["residual"][kept, j]
        z = s["score"][kept, j]
        ok = np.isfinite(r)
        if not ok.any():
            per[name] = {"n_observed": 0}
            continue
        p16, p50, p84 = np.percentile(z[ok], [16, 50, 84])
        per[name] = {
            "n_observed": int(ok.sum()),
            "residual_rms": float(np.sqrt(np.mean(r[ok] ** 2))),
            "residual_median": float(np.median(r[ok])),
            "score_p16": float(p16),
            "score_p50": float(p50),
            "score_p84": float(p84),
        }
    return {
        "n_stars": len(sub),
        "n_valid": int(valid.sum()),
        "mean_chi2_dof": float(np.mean(ratio[kept])) if kept.any() else None,
        "mean_chi2_dof_all": float(np.mean(ratio[valid])) if valid.any() else None,
        "median_chi2_dof": float(np.median(ratio[valid])) if valid.any() else None,
        "fraction_excluded": float(np.mean(~kept[valid])) if valid.any() else None,
        "loss": float(np.mean(s["chi2"][kept] / len(sub.bands))) if kept.any() else None,
        "cut": cut,
        "per_colour": per,
    }


def delta_r_over_r(model: StellarModel, theta, theta_ref=None) -> np.ndarray:
    """Eq. 17: ``(R(θ) − R_0) / R_0`` with ``R_0 = R(θ_ref)`` (default: the network's θ median) ``(n, b)``."""
    theta_ref = np.asarray(model.network.theta_median if theta_ref is None else theta_ref, float)
    r = np.asarray(model.extinction_vector(np.asarray(theta, float)), float)
    r0 = np.asarray(model.extinction_vector(theta_ref[None]), float)[0]
    return (r - r0) / r0


def model_difference(model_a: StellarModel, model_b: StellarModel, theta) -> dict:
    """RMS over ``theta`` of the difference of ``B M(θ)`` (reference absolute magnitude and colours) and of ``R``.

    Bands are matched by name (the common bands, in ``model_a``'s order; both must share the reference band).
    """
    common = [b for b in model_a.bands if b in model_b.bands]
    if not common or common[0] != model_a.bands[0] or model_b.bands[0] != model_a.bands[0]:
        raise ValueError("the two models need the same reference band")
    ia = [model_a.bands.index(b) for b in common]
    ib = [model_b.bands.index(b) for b in common]
    theta = np.asarray(theta, float)
    ca = np.asarray(model_a.network.colours(model_a.params, model_a.network.normalise(theta)), float)[:, ia]
    cb = np.asarray(model_b.network.colours(model_b.params, model_b.network.normalise(theta)), float)[:, ib]
    ra = np.asarray(model_a.extinction_vector(theta), float)[:, ia]
    rb = np.asarray(model_b.extinction_vector(theta), float)[:, ib]
    names = colour_names(common)
    return {
        "colour_rms": {n: float(np.sqrt(np.mean((ca[:, j] - cb[:, j]) ** 2))) for j, n in enumerate(names)},
        "colour_median_difference": {n: float(np.median(ca[:, j] - cb[:, j])) for j, n in enumerate(names)},
        "R_rms": {b: float(np.sqrt(np.mean((ra[:, j] - rb[:, j]) ** 2))) for j, b in enumerate(common)},
    }
