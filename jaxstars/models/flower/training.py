"""Training FLOWER's flow by the importance-sampled marginal likelihood (paper 002, §2.10 and Appendix A).

For each zero-extinction training star ``s`` with data ``ξ_s = (m̂, ϖ̂)`` (Eq. 17) the loss needs the marginal
likelihood ``L_s(θ) = p(ξ_s | l, b, θ, S = 1)`` of Eqs. 19/23 (= A1)::

    L_s = 1 / P(S=1 | θ, l, b) · ∫ p(m̂ | x, E_s, μ) p(ϖ̂ | d) p_θ(x | Φ(d, l, b)) I(M | μ) p(d | l, b)
                                    · P(S=1 | m_unext, l, b) dx dd

with the photometric likelihood of Eq. 5, the parallax likelihood with zero-point of Eq. 6, the flow (Eq. 8),
the Malmquist truncation of Eq. 9 (:func:`log_malmquist`), the generalized-gamma distance prior of Eq. 13 and a
pluggable selection function (Eq. 12) whose normalisation is Eq. 24 (= A2).  Appendix A estimates it by
importance sampling with ``K = 32`` draws per star from

* ``q(d) = N(d | d̄, s_d²)``, a distance estimate (Bailer-Jones-like columns, or derived from the parallax), and
* ``q(x | m̂, Σ, d) = N(x | x̂(d), Λ Σ Λᵀ)`` with ``x̂(d) = Λ(m̂ − A_known − 1 μ(d))``: draw ``m′ ~ N(m̂, Σ)``
  and set ``x = Λ(m′ − A_known − μ)`` (``A_known`` is the extinction of a known training reddening, 0 by default;
  the paper's training stars have ``E = 0``),

so ``L̂_s = (1/K) Σ_k w_k`` with the weights of Eq. A3 (``estimator="exact"``, the default: unbiased for ``L_s``
when the selection normalisation is not estimated) or the paper's approximation A5 (``estimator="paper"``: the
likelihood/proposal ratio of A4 set to 1).  The normalisation (Eq. 24) is estimated with the same draws (A6)
when a selection function is given (``selection_norm="auto"``); with the default uniform selection it is 1 and
omitted, as in the paper (§2.10.5).

The contrastive term (Eqs. 20–21) is the same estimate for reddened copies ``ξ_s + (A(E_s), 0)`` with
``E_s ~ U(0.05, 0.5)``, three copies per star, the flow's log density clipped at −70; the loss (Eq. 22) is
``λ log C − log L`` averaged per star, with ``λ`` ramped from 0 to 0.3 during training.  Optimiser defaults follow
§4.2: AdamW, learning rate 1e-3, weight decay 1e-4, batches of 2¹³ stars, patience 50 epochs.  Training reuses
:func:`jaxstars.flows.fit` (whole epochs compiled); the per-star estimate is ``vmap``-ed over the batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from jaxstars.astro.astrometry import parallax_log_likelihood
from jaxstars.astro.bands import get_band
from jaxstars.astro.geometry import galactocentric_rz
from jaxstars.astro.priors import geometric_distance, log_prior_generalized_gamma
from jaxstars.flows import FitResult, Flow, fit
from jaxstars.inference import importance_log_marginal

from .features import GAIA_PS1, FlowerFeatures
from .model import FlowerModel

__all__ = [
    "DEFAULT_PRIOR",
    "FlowerMarginal",
    "TrainedFlower",
    "contrastive_copies",
    "flower_log_marginal",
    "flower_loss",
    "flower_loss_terms",
    "flower_training_arrays",
    "log_malmquist",
    "malmquist_limits",
    "train_flower",
]

DEFAULT_PRIOR = (1300.0, 1.5, 0.8)
"""Generalized gamma prior ``(L [pc], alpha, beta)`` (Eq. 13) used when a batch has no per-star values."""

_STAR_KEYS = ("mag", "mag_err", "parallax", "parallax_error", "l", "b", "dist_mean", "dist_std")


# -- pieces of Eq. 23 ------------------------------------------------------------------------------------------------
def malmquist_limits(features: FlowerFeatures, limits="auto") -> tuple[float, float] | None:
    """``(m_bright, m_faint)`` of the leading band: from the band registry for ``"auto"``, as given, or None."""
    if limits is None:
        return None
    if isinstance(limits, str):
        if limits != "auto":
            raise ValueError(f"limits must be 'auto', None or (bright, faint), got {limits!r}")
        band = get_band(features.leading_band)
        if band.bright_limit is None or band.faint_limit is None:
            raise ValueError(
                f"band {features.leading_band!r} has no registered limits: pass limits=(bright, faint)"
            )
        return float(band.bright_limit), float(band.faint_limit)
    bright, faint = (float(v) for v in limits)
    if not bright < faint:
        raise ValueError(f"need bright < faint, got {limits}")
    return bright, faint


def log_malmquist(M, mu, limits: tuple[float, float] | None):
    """``log I(M | μ)`` of Eq. 9: ``log U(M | m_bright − μ, m_faint − μ)``.

    ``−log(m_faint − m_bright)`` when ``m_bright − μ < M < m_faint − μ``, else ``−inf``; 0 when ``limits`` is None.
    """
    M = jnp.asarray(M)
    if limits is None:
        return jnp.zeros(jnp.broadcast_shapes(M.shape, jnp.shape(mu)))
    bright, faint = limits
    inside = (M > bright - mu) & (M < faint - mu)
    return jnp.where(inside, -math.log(faint - bright), -jnp.inf)


def _known_extinction(features: FlowerFeatures, ebv, mag):
    """Extinction of a known reddening ``ebv`` for observed ``mag`` ``(..., dim)``: the law's colour comes from the
    dereddened observed colours (one fixed-point step).  Zero when ``ebv`` is 0."""
    x_obs = features.intrinsic(mag)
    a0 = features.extinction(ebv, x_obs)
    return features.extinction(ebv, x_obs - features.intrinsic(a0))


class FlowerMarginal(NamedTuple):
    """Per-star importance-sampled estimates (Appendix A).

    ``log_marginal``: ``log L̂_s`` (Eq. A3 / A5, divided by the normalisation estimate when it is used);
    ``ess``: Kish effective sample size of the weights (1..K); ``log_selection_norm``: ``log P̂(S=1 | θ, l, b)``
    (Eq. A6; 0 when not estimated).  Stars without a single valid draw get ``−inf`` and ``ess = 0``.
    """

    log_marginal: jax.Array
    ess: jax.Array
    log_selection_norm: jax.Array


def _star_log_weights(
    model: FlowerModel,
    params,
    star: Mapping[str, jax.Array],
    key: jax.Array,
    *,
    n_samples: int,
    limits,
    log_selection,
    estimator: str,
    clip: float | None,
    q_distance_scale: float,
):
    """Log importance weights of one star: ``(log w_k, log w_k^norm)``, each ``(K,)`` (Eqs. A3/A5 and A6)."""
    f = model.features
    k_d, k_x = jax.random.split(key)
    mag, sig = star["mag"], star["mag_err"]
    ebv = star.get("ebv", jnp.zeros(()))
    zp = star.get("zero_point", jnp.zeros(()))

    # q(d | ϖ̂, σ_ϖ, l, b) = N(d̄, s_d²)
    q_sd = q_distance_scale * star["dist_std"]
    d = star["dist_mean"] + q_sd * jax.random.normal(k_d, (n_samples,))
    log_qd = norm.logpdf(d, star["dist_mean"], q_sd)
    positive = d > 0
    d_safe = jnp.where(positive, d, 1.0)
    mu = 5.0 * jnp.log10(d_safe) - 5.0

    # q(x | m̂, Σ, d) = N(Λ(m̂ − A_known − μ), Λ Σ Λᵀ): m′ ~ N(m̂, Σ), x = Λ(m′ − A_known − μ)
    eps = jax.random.normal(k_x, (n_samples, f.dim))
    m_draw = mag + sig * eps
    log_qx = jnp.sum(norm.logpdf(eps) - jnp.log(sig), axis=-1)
    a_known = _known_extinction(f, ebv, mag)
    x = f.intrinsic(m_draw - a_known - mu[:, None])

    # Eq. 5 (photometric likelihood at the draw, extinction from the draw's own intrinsic colour) and Eq. 6.
    m_model = f.absolute(x) + f.extinction(jnp.broadcast_to(ebv, (n_samples,)), x) + mu[:, None]
    log_lm = jnp.sum(norm.logpdf(mag, m_model, sig), axis=-1)
    log_plx = parallax_log_likelihood(star["parallax"], star["parallax_error"], d, zp)

    # Eq. 13 prior, Eqs. 1–2 (R, Z), Eq. 8 flow, Eq. 9 truncation, Eq. 12 selection.
    prior_l = star.get("prior_L", DEFAULT_PRIOR[0])
    prior_a = star.get("prior_alpha", DEFAULT_PRIOR[1])
    prior_b = star.get("prior_beta", DEFAULT_PRIOR[2])
    log_pd = log_prior_generalized_gamma(d, prior_l, prior_a, prior_b)
    R, Z = galactocentric_rz(star["l"], star["b"], d_safe)
    log_p = model.log_density(params, x, R, Z)
    if clip is not None:
        log_p = jnp.maximum(log_p, clip)
    log_i = log_malmquist(x[:, 0], mu, limits)
    if log_selection is None:
        log_s = jnp.zeros(n_samples)
    else:
        log_s = jnp.broadcast_to(log_selection(f.absolute(x) + mu[:, None], star["l"], star["b"]), (n_samples,))

    log_model = log_p + log_i + log_pd + log_s
    log_model = jnp.where(positive, log_model, -jnp.inf)
    log_norm_w = log_model - log_qd - log_qx  # Eq. A6
    if estimator == "exact":
        log_w = log_model + log_lm + log_plx - log_qd - log_qx  # Eq. A3
    else:
        log_w = log_model  # Eq. A5 (A4: likelihood / proposal ≈ 1)
    return log_w, log_norm_w


def _safe_log_mean(log_w):
    """Importance estimate with a NaN-free gradient when no draw is valid (then ``−inf``, ess 0)."""
    any_valid = jnp.any(jnp.isfinite(log_w), axis=-1)
    res = importance_log_marginal(jnp.where(any_valid[..., None], log_w, 0.0))
    return jnp.where(any_valid, res.log_marginal, -jnp.inf), jnp.where(any_valid, res.ess, 0.0)


def flower_log_marginal(
    model: FlowerModel,
    params,
    star_batch: Mapping[str, Any],
    key: jax.Array,
    *,
    n_samples: int = 32,
    limits="auto",
    log_selection: Callable | None = None,
    selection_norm: str = "auto",
    estimator: str = "exact",
    clip: float | None = None,
    q_distance_scale: float = 1.0,
) -> FlowerMarginal:
    """Importance-sampled single-star marginal likelihoods ``log L̂_s`` (Eqs. 19, 23–25; Appendix A1–A6).

    Parameters
    ----------
    model, params : the FLOWER density ``p_θ(x | R, Z)`` and its parameters.
    star_batch : dict of arrays with a leading star axis ``n``:
        ``mag`` ``(n, dim)`` observed apparent magnitudes in ``model.features.bands`` order; ``mag_err``
        ``(n, dim)`` their Gaussian errors (diagonal Σ); ``parallax``, ``parallax_error`` (mas); ``l``, ``b``
        (deg); ``dist_mean``, ``dist_std`` (pc): the distance proposal ``q(d)``; optional ``zero_point`` (mas,
        catalogue-bias sign: Eq. 6 reads ``ϖ̂ ~ N(1000/d + zp, σ_ϖ²)``, i.e. the paper's ``ω_zp = −zp``),
        ``ebv`` (known training reddening, default 0), ``prior_L``, ``prior_alpha``, ``prior_beta`` (Eq. 13,
        default :data:`DEFAULT_PRIOR`).
    key : PRNG key (one sub-key per star).
    n_samples : ``K`` draws per star (paper: 32).
    limits : ``(m_bright, m_faint)`` of the leading band for Eq. 9, ``"auto"`` (band registry; G: 5–21) or None.
    log_selection : ``log P(S=1 | m_unext, l, b)`` (Eq. 12) as ``f(m_unext (K, dim), l, b) -> (K,)``; None is the
        uniform selection (``log P = 0``).
    selection_norm : ``"auto"`` (``"importance"`` when ``log_selection`` is given, else ``"none"``),
        ``"importance"`` (divide by the A6 estimate of Eq. 24 with the same draws; note that it then also
        normalises the Malmquist truncation) or ``"none"``.
    estimator : ``"exact"`` (Eq. A3 weights, unbiased for the numerator) or ``"paper"`` (Eq. A5).
    clip : lower clip of ``log p_θ`` (−70 for the contrastive copies, Eq. 21), or None.
    q_distance_scale : widen ``q(d)`` by this factor.

    Returns
    -------
    FlowerMarginal
        ``(log_marginal, ess, log_selection_norm)``, each ``(n,)``.
    """
    if estimator not in ("exact", "paper"):
        raise ValueError(f"estimator must be 'exact' or 'paper', got {estimator!r}")
    if selection_norm == "auto":
        selection_norm = "none" if log_selection is None else "importance"
    if selection_norm not in ("none", "importance"):
        raise ValueError(f"selection_norm must be 'auto', 'none' or 'importance', got {selection_norm!r}")
    missing = [k for k in _STAR_KEYS if k not in star_batch]
    if missing:
        raise KeyError(f"star_batch lacks {missing}")
    lim = malmquist_limits(model.features, limits)
    batch = {k: jnp.asarray(v) for k, v in star_batch.items()}
    return _log_marginal_impl(
        model,
        params,
        batch,
        key,
        n_samples=int(n_samples),
        lim=lim,
        log_selection=log_selection,
        selection_norm=selection_norm,
        estimator=estimator,
        clip=None if clip is None else float(clip),
        q_distance_scale=float(q_distance_scale),
    )


@partial(
    jax.jit,
    static_argnames=(
        "model",
        "n_samples",
        "lim",
        "log_selection",
        "selection_norm",
        "estimator",
        "clip",
        "q_distance_scale",
    ),
)
def _log_marginal_impl(
    model, params, batch, key, *, n_samples, lim, log_selection, selection_norm, estimator, clip, q_distance_scale
) -> FlowerMarginal:
    n = batch["mag"].shape[0]
    keys = jax.random.split(key, n)

    def one(star, k):
        return _star_log_weights(
            model,
            params,
            star,
            k,
            n_samples=n_samples,
            limits=lim,
            log_selection=log_selection,
            estimator=estimator,
            clip=clip,
            q_distance_scale=q_distance_scale,
        )

    log_w, log_norm_w = jax.vmap(one)(batch, keys)
    log_marginal, ess = _safe_log_mean(log_w)
    if selection_norm == "importance":
        log_norm, _ = _safe_log_mean(log_norm_w)
        log_marginal = log_marginal - log_norm
    else:
        log_norm = jnp.zeros(n)
    return FlowerMarginal(log_marginal, ess, log_norm)


def contrastive_copies(
    features: FlowerFeatures,
    star_batch: Mapping[str, Any],
    key: jax.Array,
    *,
    n_negatives: int = 3,
    ebv_range=(0.05, 0.5),
) -> dict:
    """Reddened copies ``ξ_s + (A(E_s), 0)`` of Eq. 21: ``n_negatives`` per star, ``E_s ~ U(ebv_range)``.

    The extinction uses the law at the star's (known-dereddened) observed colour.  Returns a batch of
    ``n · n_negatives`` stars (copy ``j`` of star ``s`` at row ``s · n_negatives + j``) with an extra ``ebv_added``.
    """
    batch = {k: jnp.asarray(v) for k, v in star_batch.items()}
    n = batch["mag"].shape[0]
    lo, hi = ebv_range
    e_add = jax.random.uniform(key, (n, n_negatives), minval=lo, maxval=hi)
    ebv = batch.get("ebv", jnp.zeros(n))
    x_colour = features.intrinsic(batch["mag"] - _known_extinction(features, ebv, batch["mag"]))
    a_add = features.extinction(e_add, x_colour[:, None, :])  # (n, J, dim)
    out = {k: jnp.repeat(v, n_negatives, axis=0) for k, v in batch.items()}
    out["mag"] = (batch["mag"][:, None, :] + a_add).reshape(n * n_negatives, features.dim)
    out["ebv_added"] = e_add.reshape(-1)
    return out


def flower_loss_terms(
    model: FlowerModel,
    params,
    batch: Mapping[str, Any],
    key: jax.Array,
    *,
    contrastive_weight=0.0,
    n_negatives: int = 3,
    ebv_range=(0.05, 0.5),
    clip: float = -70.0,
    n_samples: int = 32,
    n_samples_negative: int | None = None,
    **marginal_kw,
) -> dict:
    """The terms of the FLOWER loss (Eq. 22) for a minibatch, per star.

    Returns ``{"loss", "nll", "contrastive", "n_invalid"}``: ``nll = −mean_s log L̂_s`` over stars with a valid
    estimate, ``contrastive = mean log Ĉ_{s,j}`` over the reddened copies (Eq. 21, ``log p_θ`` clipped at ``clip``;
    copies without a valid draw, e.g. pushed past the faint limit, are left out) and
    ``loss = nll + λ · contrastive``.  With ``contrastive_weight`` a Python 0 the copies are not evaluated.
    ``marginal_kw`` go to :func:`flower_log_marginal` (limits, log_selection, selection_norm, estimator, ...).
    """
    skip = isinstance(contrastive_weight, int | float) and contrastive_weight == 0
    if "limits" in marginal_kw and isinstance(marginal_kw["limits"], list):
        marginal_kw["limits"] = tuple(marginal_kw["limits"])
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    return _loss_terms_impl(
        model,
        params,
        batch,
        key,
        jnp.asarray(contrastive_weight, float),
        skip=bool(skip or n_negatives <= 0),
        n_negatives=int(n_negatives),
        ebv_range=tuple(float(v) for v in ebv_range),
        clip=None if clip is None else float(clip),
        n_samples=int(n_samples),
        n_samples_negative=int(n_samples if n_samples_negative is None else n_samples_negative),
        marginal_kw=tuple(sorted(marginal_kw.items())),
    )


@partial(
    jax.jit,
    static_argnames=(
        "model",
        "skip",
        "n_negatives",
        "ebv_range",
        "clip",
        "n_samples",
        "n_samples_negative",
        "marginal_kw",
    ),
)
def _loss_terms_impl(
    model,
    params,
    batch,
    key,
    contrastive_weight,
    *,
    skip,
    n_negatives,
    ebv_range,
    clip,
    n_samples,
    n_samples_negative,
    marginal_kw,
):
    marginal_kw = dict(marginal_kw)
    k_pos, k_copy, k_neg = jax.random.split(key, 3)
    pos = flower_log_marginal(model, params, batch, k_pos, n_samples=n_samples, **marginal_kw)
    valid = jnp.isfinite(pos.log_marginal)
    n_valid = jnp.maximum(jnp.sum(valid), 1)
    nll = -jnp.sum(jnp.where(valid, pos.log_marginal, 0.0)) / n_valid
    terms = {"nll": nll, "n_invalid": jnp.sum(~valid), "contrastive": jnp.zeros(())}
    if not skip:
        copies = contrastive_copies(model.features, batch, k_copy, n_negatives=n_negatives, ebv_range=ebv_range)
        copies.pop("ebv_added")
        neg = flower_log_marginal(
            model,
            params,
            copies,
            k_neg,
            n_samples=n_samples_negative,
            clip=clip,
            **marginal_kw,
        )
        ok = jnp.isfinite(neg.log_marginal)
        terms["contrastive"] = jnp.sum(jnp.where(ok, neg.log_marginal, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
    terms["loss"] = terms["nll"] + contrastive_weight * terms["contrastive"]
    return terms


def flower_loss(model: FlowerModel, params, batch: Mapping[str, Any], key: jax.Array, **kw) -> jax.Array:
    """FLOWER loss of Eq. 22 per star: ``λ log Ĉ − log L̂`` averaged over the batch (see :func:`flower_loss_terms`)."""
    return flower_loss_terms(model, params, batch, key, **kw)["loss"]


# -- training data ----------------------------------------------------------------------------------------------------
def _column(catalog, name):
    col = catalog[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan)
    return np.asarray(col, float)


def flower_training_arrays(
    catalog,
    features: FlowerFeatures,
    *,
    distance: str | None = None,
    distance_error: str | None = None,
    ebv: str | None = None,
    zero_point=None,
    limits="auto",
    min_parallax_snr: float | None = None,
    mag_err_floor: float = 1e-4,
) -> tuple[dict, np.ndarray]:
    """Per-star training arrays for :func:`flower_log_marginal` from a catalogue, and the row mask used.

    Parameters
    ----------
    catalog : astropy Table or mapping of columns with the canonical names (``mag_<band>``, ``mag_err_<band>``
        with PS1 bands as ``ps1_g`` …, ``l``, ``b``, ``parallax``, ``parallax_error``).
    features : the band set.
    distance, distance_error : columns for ``q(d)`` (e.g. Bailer-Jones ``r_med_geo`` and half its 68% interval);
        default (None): the mean and standard deviation of the Bailer-Jones-style geometric posterior
        (:func:`jaxstars.astro.priors.geometric_distance`, generalized gamma prior :data:`DEFAULT_PRIOR`);
        ``"inverse_parallax"``: ``d̄ = 1000/ϖ_c``, ``s_d = 1000 σ_ϖ / ϖ_c²`` (a poor proposal at low parallax S/N:
        its draws reach d ≤ 0 and far-off distances, and the loss of such stars is dominated by a few draws).
    ebv : column of known training reddening (default: 0, the zero-extinction sample).
    zero_point : float, array or column name (catalogue-bias sign, mas); default the catalogue's ``PLXZP`` meta
        value if any, else 0.
    limits : leading-band limits (see :func:`malmquist_limits`); rows outside them are dropped.
    min_parallax_snr : drop rows with ``ϖ_c / σ_ϖ`` below this (the paper drops negative parallaxes only).
    mag_err_floor : lower bound on photometric errors (mag).

    Returns
    -------
    arrays : dict of float arrays (rows that pass), keys as :func:`flower_log_marginal` expects.
    mask : bool array over the catalogue rows.
    """
    mags = np.stack([_column(catalog, f"mag_{b}") for b in features.catalog_bands], axis=1)
    errs = np.stack([_column(catalog, f"mag_err_{b}") for b in features.catalog_bands], axis=1)
    plx = _column(catalog, "parallax")
    plx_err = _column(catalog, "parallax_error")
    n = len(plx)
    if zero_point is None:
        meta = getattr(catalog, "meta", {}) or {}
        zero_point = float(meta.get("PLXZP", 0.0))
    zp = _column(catalog, zero_point) if isinstance(zero_point, str) else np.broadcast_to(zero_point, (n,))
    zp = np.asarray(zp, float)
    plx_c = plx - zp
    if distance is None:  # Bailer-Jones-style geometric distance under the Eq. 13 prior of the training weight
        d_mean, d_std, _ = geometric_distance(plx, plx_err, zp, DEFAULT_PRIOR)
    elif distance == "inverse_parallax":
        with np.errstate(divide="ignore", invalid="ignore"):
            d_mean = 1000.0 / plx_c
            d_std = 1000.0 * plx_err / plx_c**2
    else:
        d_mean = _column(catalog, distance)
        if distance_error is None:
            raise ValueError("distance= needs distance_error= (the width of q(d))")
        d_std = _column(catalog, distance_error)
    e = np.zeros(n) if ebv is None else _column(catalog, ebv)
    ok = np.all(np.isfinite(mags), axis=1) & np.all(np.isfinite(errs) & (errs > 0), axis=1)
    ok &= np.isfinite(plx) & np.isfinite(plx_err) & (plx_err > 0) & np.isfinite(zp) & np.isfinite(e)
    ok &= np.isfinite(d_mean) & np.isfinite(d_std) & (d_mean > 0) & (d_std > 0)
    if distance is None or distance == "inverse_parallax":
        ok &= plx_c > 0  # §3: the training sample excludes negative parallaxes
    if min_parallax_snr is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ok &= plx_c / plx_err >= min_parallax_snr
    lim = malmquist_limits(features, limits)
    if lim is not None:
        ok &= (mags[:, 0] > lim[0]) & (mags[:, 0] < lim[1])
    l_deg, b_deg = _column(catalog, "l"), _column(catalog, "b")
    ok &= np.isfinite(l_deg) & np.isfinite(b_deg)
    arrays = {
        "mag": mags[ok],
        "mag_err": np.maximum(errs[ok], mag_err_floor),
        "parallax": plx[ok],
        "parallax_error": plx_err[ok],
        "zero_point": zp[ok],
        "l": l_deg[ok],
        "b": b_deg[ok],
        "dist_mean": d_mean[ok],
        "dist_std": d_std[ok],
        "ebv": e[ok],
    }
    return arrays, ok


# -- training ---------------------------------------------------------------------------------------------------------
@dataclass
class TrainedFlower:
    """Result of :func:`train_flower`: the model, its best parameters and the :class:`~jaxstars.flows.FitResult`."""

    model: FlowerModel
    params: Any
    fit: FitResult


def _initial_model(features, flow, arrays) -> FlowerModel:
    """Standardisation and coverage from the data at the proposal's centre: ``x̂ = Λ(m̂ − A − μ(d̄))``."""
    mag = jnp.asarray(arrays["mag"])
    a_known = _known_extinction(features, jnp.asarray(arrays["ebv"]), mag)
    mu = 5.0 * np.log10(np.asarray(arrays["dist_mean"])) - 5.0
    x = np.asarray(features.intrinsic(mag - a_known)) - np.c_[mu, np.zeros((len(mu), features.dim - 1))]
    R, Z = galactocentric_rz(arrays["l"], arrays["b"], arrays["dist_mean"])
    return FlowerModel.from_data(features, flow, x, np.asarray(R), np.asarray(Z))


def train_flower(
    catalog_or_arrays,
    *,
    bands=GAIA_PS1,
    features: FlowerFeatures | None = None,
    epochs: int = 1000,
    batch_size: int = 2**13,
    key=0,
    flow: Flow | None = None,
    model: FlowerModel | None = None,
    params=None,
    n_samples: int = 32,
    n_negatives: int = 3,
    n_samples_negative: int | None = None,
    contrastive_weight: float = 0.3,
    contrastive_ramp_epochs: int | None = None,
    ebv_range=(0.05, 0.5),
    clip: float = -70.0,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int | None = 50,
    val_fraction: float = 0.1,
    clip_norm: float | None = None,
    limits="auto",
    log_selection: Callable | None = None,
    selection_norm: str = "auto",
    estimator: str = "exact",
    q_distance_scale: float = 1.0,
    progress: bool = True,
    **array_kw,
) -> TrainedFlower:
    """Train ``p_θ(x | R, Z)`` on zero-extinction stars by the FLOWER loss (Eq. 22, Appendix A).

    Parameters
    ----------
    catalog_or_arrays : a catalogue (see :func:`flower_training_arrays`, which receives ``array_kw``) or a dict
        of per-star arrays as :func:`flower_log_marginal` expects (``ebv`` and ``zero_point`` optional).
    bands / features : the band set (leading band first); ``features`` overrides ``bands``.
    epochs, batch_size, learning_rate, weight_decay, patience, val_fraction, clip_norm : optimisation (§4.2
        defaults: 1000 epochs max, 2¹³, 1e-3, 1e-4, 50).
    key : int or PRNG key.
    flow : the flow spec (default :func:`~jaxstars.models.flower.default_flower_flow`); ``model``/``params``
        continue training an existing model (its standardisation is kept).
    n_samples : ``K`` (32); ``n_negatives`` (3) reddened copies per star with ``E ~ U(ebv_range)`` and
        ``log p_θ`` clipped at ``clip``; ``n_samples_negative`` draws per copy (default ``K``).
    contrastive_weight : final ``λ`` (0.3); it grows linearly from 0 over ``contrastive_ramp_epochs``
        (default: half of ``epochs``).  Validation (early stopping) uses the final ``λ``.
    limits, log_selection, selection_norm, estimator, q_distance_scale : see :func:`flower_log_marginal`.

    Returns
    -------
    TrainedFlower
        ``model`` (with training settings in ``model.info``), ``params`` (best validation loss) and ``fit``.
    """
    features = FlowerFeatures(bands=tuple(bands)) if features is None else features
    if model is not None:
        features = model.features
    if isinstance(catalog_or_arrays, Mapping) and "mag" in catalog_or_arrays:
        arrays = {k: np.asarray(v, float) for k, v in catalog_or_arrays.items()}
        n = arrays["mag"].shape[0]
        arrays.setdefault("ebv", np.zeros(n))
        arrays.setdefault("zero_point", np.zeros(n))
        if array_kw:
            raise TypeError(f"unexpected arguments for array input: {sorted(array_kw)}")
    else:
        arrays, _ = flower_training_arrays(catalog_or_arrays, features, limits=limits, **array_kw)
    n = arrays["mag"].shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 training stars, got {n}")
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    if model is None:
        model = _initial_model(features, flow, arrays)

    marginal_kw = {
        "limits": limits,
        "log_selection": log_selection,
        "selection_norm": selection_norm,
        "estimator": estimator,
        "q_distance_scale": q_distance_scale,
    }
    loss_kw = dict(
        n_negatives=n_negatives,
        ebv_range=tuple(ebv_range),
        clip=clip,
        n_samples=n_samples,
        n_samples_negative=n_samples_negative,
        **marginal_kw,
    )
    n_train = n - round(n * val_fraction)
    steps_per_epoch = max(1, n_train // max(1, min(batch_size, n_train)))
    ramp_epochs = max(1, epochs // 2) if contrastive_ramp_epochs is None else max(0, contrastive_ramp_epochs)
    ramp_steps = float(ramp_epochs * steps_per_epoch)
    lam_max = float(contrastive_weight)

    def lam_at(step):
        if lam_max == 0.0:
            return 0.0
        if ramp_steps == 0:
            return lam_max
        return lam_max * jnp.minimum(1.0, step / ramp_steps)

    # The ramp's step counter rides along in the parameters: named "running_*" it has no weight decay (see
    # jaxstars.flows.train._decay_mask), and its gradient is zero, so Adam leaves it unchanged.
    def train_loss(_flow, p, batch, k):
        value = flower_loss(model, p["flow"], batch, k, contrastive_weight=lam_at(p["running_step"]), **loss_kw)
        return value, {"flow": p["flow"], "running_step": p["running_step"] + 1.0}

    def val_loss(_flow, p, batch, k):
        return flower_loss(model, p["flow"], batch, k, contrastive_weight=lam_max, **loss_kw)

    k_init, k_fit = jax.random.split(key)
    theta = model.init(k_init) if params is None else params
    result = fit(
        model.flow,
        arrays,
        key=k_fit,
        params={"flow": theta, "running_step": jnp.zeros(())},
        loss=train_loss,
        val_loss=val_loss,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        clip_norm=clip_norm,
        val_fraction=val_fraction,
        patience=patience,
        progress=progress,
    )
    best = result.params["flow"]
    info = dict(model.info)
    info["training"] = {
        "n_stars": int(n),
        "epochs_run": int(result.epochs_run),
        "best_epoch": int(result.best_epoch),
        "batch_size": int(batch_size),
        "n_samples": int(n_samples),
        "n_negatives": int(n_negatives),
        "contrastive_weight": lam_max,
        "contrastive_ramp_epochs": int(ramp_epochs),
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "estimator": estimator,
        "final_train_loss": float(np.asarray(result.train_loss)[-1]),
        "best_val_loss": float(np.min(result.val_loss)) if np.size(result.val_loss) else None,
    }
    model = dataclasses.replace(model, info=info)
    return TrainedFlower(model=model, params=best, fit=result)
