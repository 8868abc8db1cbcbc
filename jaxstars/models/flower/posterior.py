"""Per-star FLOWER posteriors ``p(E, x, d | data)`` (O'Callaghan et al., paper 002, §2.9, Eq. 16).

For one star with observed magnitudes ``m̂`` (errors σ, observed bands only), parallax ``ϖ ± σ_ϖ`` and position
``(l, b)``, Eq. 16 reads::

    p(E, x, d | data) ∝ N(m̂ | Λ⁻¹x + 1 μ(d) + A(E, x), Σ)           photometry, Eq. 5 (observed bands only)
                       × N(ϖ | 1000/d + zp, σ_ϖ)                      parallax, Eq. 6 (jaxstars' zp sign)
                       × U(E | E_min, E_max)                          reddening prior, Eq. 14 (E_min = −0.05, 0.5)
                       × p_θ(x | R(l, b, d), Z(l, b, d))              the flow, Eqs. 1–2 and 8
                       × I(M | μ) × P(S = 1 | m_unext, l, b)          Malmquist cut (Eq. 9) and selection (Eq. 12)
                       × p(d | l, b)                                  generalized gamma prior, Eq. 13

with ``A(E, x) = R(E, C) E`` (§2.8; ``C = (BP−RP)₀`` read off ``x``).  The Malmquist cut is optional
(``FlowerPosteriorConfig.mag_limits``; for observed stars it only binds for very bright ones) and the selection
function is pluggable (``log_selection``; default uniform, i.e. 1, as in the paper's inference set).

Two ways to compute it:

(a) **Reference (the paper's procedure, §2.11).**  :func:`flower_star_model` is Eq. 16 as a NumPyro model for ONE
    star (sites ``ebv``, ``distance``, ``x``; the flow enters as a factor, missing bands are masked out of the
    likelihood exactly); :func:`nuts_flower_posteriors` runs it with NUTS through the shared engine
    (:func:`jaxstars.inference.sample_stars`, vmapped over stars), 4,000 warm-up and 10,000 kept draws, target
    acceptance 0.9 by default.  The mass matrix is dense by default: ``M_G`` is pinned by ``m̂_G`` to milli-mag
    given ``(E, log d)``, a nearly linear correlation a diagonal mass matrix can only follow with tiny steps.  Same
    posterior, same kernel, only the preconditioner differs (``NUTSConfig(dense_mass=False)`` is the diagonal one).

(b) **Fast path.**  :func:`flower_posteriors` integrates ``x`` out and tabulates ``p(E, d | data)`` on a 2-D grid
    over ``(E, ln d)``:

    * *x marginal by importance sampling.*  Given ``(E, d)``, the photometry fixes every observed component of
      ``x`` to a few hundredths of a magnitude: ``x̂ = Λ(m̂ − μ(d) − A(E, x̂))`` (a short fixed-point iteration
      for the colour dependence of the law).  The proposal is ``x = x̂ + L ε``, ``ε ~ N(0, I)``, with
      ``L Lᵀ = Λ Σ Λᵀ`` on the observed components — the tight photometric directions become unit-scaled — and,
      for the colour of a missing band, ``N(x_shift_k, (s · x_scale_k)²)`` from the flow's standardisation
      (``s = missing_scale``).  Weights ``w = N(m̂ | …) p_θ(x | R, Z) I(M | μ) P(S | …) / q(x)``;
      ``log p(m̂ | E, d) = log mean w`` and its Kish effective sample size come from
      :func:`jaxstars.inference.importance_log_marginal`.  The same ``ε`` (common random numbers,
      ``fold_in(key, row_id)``) are used at every grid node, so the tabulated surface is smooth.
    * *grid.*  A coarse grid (``n_e_coarse × n_d_coarse``, ``n_draws_coarse`` draws) over the full reddening prior
      and a distance range from the photometry (the leading band's absolute-magnitude range of the flow) and, when
      informative, the parallax (±6σ) locates the posterior; a fine grid (``n_e × n_d``, ``n_draws``) spans its
      ``1e-4 … 1 − 1e-4`` marginal quantiles widened by one coarse cell.  :func:`jaxstars.inference.grid_posterior_2d`
      gives moments, marginal quantiles and the evidence; distance moments are taken in ``d`` (the grid is in
      ``ln d`` with the Jacobian ``d`` included), distance quantiles are ``exp`` of the ``ln d`` quantiles.
    * *diagnostics.*  ``importance_ess``: the smallest ESS over the fine-grid nodes holding posterior mass (density
      ≥ ``mass_fraction`` × peak), flag ``low_ess`` below ``min_ess``; ``grid_edge`` when more than ``edge_mass``
      of the posterior sits on a fine-grid edge that is not a prior boundary (E_min, E_max); ``outside_coverage``
      when ``model.in_coverage`` is False at the 2.5 %, 50 % or 97.5 % distance (§2.6); ``grid_unresolved`` when a
      marginal std is below 1.5 fine-grid cells (posterior narrower than the zoom could resolve).

    Vectorised: ``vmap`` over chunks of ``batch_size`` stars (fixed shapes: one compilation per ``(model, config)``
    whatever the number of stars), chunks run one after another.

:func:`dust_pushed` is the check of §2.9.2: a star brighter than ``m_bright + R_lead E_max`` in the leading band
could have entered the catalogue only because dust dimmed it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from jaxstars.astro.astrometry import parallax_log_likelihood
from jaxstars.astro.bands import get_band
from jaxstars.astro.geometry import galactocentric_rz
from jaxstars.astro.priors import GeneralizedGammaPrior, log_prior_generalized_gamma
from jaxstars.inference import (
    NUTSConfig,
    grid_posterior_1d,
    grid_posterior_2d,
    importance_log_marginal,
    sample_grid_posterior_2d,
    sample_stars,
)
from jaxstars.inference.grid import DEFAULT_QUANTILES
from jaxstars.inference.importance import ImportanceResult

from .stars import FLAGS, NO_RESULT, FlowerStars

__all__ = [
    "PAPER_NUTS",
    "FlowerPosteriorConfig",
    "dust_pushed",
    "flower_posteriors",
    "flower_star_model",
    "initial_point",
    "nuts_flower_posteriors",
    "photometric_log_marginal",
    "star_arrays",
]

_LN10 = math.log(10.0)

#: The paper's sampler settings (§2.11: 4,000 warm-up, 10,000 samples; target acceptance 0.9), dense mass matrix.
PAPER_NUTS = NUTSConfig(num_warmup=4000, num_samples=10000, target_accept_prob=0.9, dense_mass=True, batch_size=16)


@dataclasses.dataclass(frozen=True)
class FlowerPosteriorConfig:
    """Settings of the FLOWER posterior (both paths) and of the fast path's grid and importance sampler.

    Attributes
    ----------
    e_min, e_max : float
        Reddening prior ``U(E_min, E_max)`` (Eq. 14; paper: −0.05, 0.5).
    d_min, d_max : float
        Hard bounds of the distance grid (pc); the prior itself is Eq. 13.
    absmag_range : (float, float) or None
        Range of the leading band's absolute magnitude used to bound the distance grid; default
        ``x_shift_0 ± absmag_sigma · x_scale_0`` of the model.
    absmag_sigma : float
        See ``absmag_range``.
    n_e_coarse, n_d_coarse, n_draws_coarse : int
        Coarse grid (over the full E prior) and importance draws per node.
    n_e, n_d, n_draws : int
        Fine grid and importance draws per node.
    missing_scale : float
        Proposal width for the colour of a missing band, in units of the model's ``x_scale``.
    fixed_point_iterations : int
        Iterations of ``x̂ = Λ(m̂ − μ − A(E, x̂))``.
    mag_limits : (float, float) or None
        ``(m_bright, m_faint)`` of the leading band for the Malmquist cut ``I(M | μ)`` (Eq. 9); None: no cut.
    log_selection : callable or None
        ``log P(S = 1 | m_unext, l, b)`` (Eq. 12): ``f(m_unext (..., dim), l, b) -> (...)``, pure JAX; None: 0.
    quantiles : tuple of float
        Reported quantile levels (columns ``*_q2_5`` … ``*_q97_5``).
    n_samples : int
        Posterior draws of ``(E, d)`` returned per star (``ebv_samples``, ``distance_samples``); 0: none.
    batch_size : int
        Stars vmapped together in the fast path.
    edge_mass, min_ess, mass_fraction : float
        Flag thresholds (see the module docstring).
    """

    e_min: float = -0.05
    e_max: float = 0.5
    d_min: float = 10.0
    d_max: float = 1.0e5
    absmag_range: tuple | None = None
    absmag_sigma: float = 6.0
    n_e_coarse: int = 16
    n_d_coarse: int = 48
    n_draws_coarse: int = 4
    n_e: int = 24
    n_d: int = 24
    n_draws: int = 48
    missing_scale: float = 2.0
    fixed_point_iterations: int = 3
    mag_limits: tuple | None = None
    log_selection: Callable | None = None
    quantiles: tuple = DEFAULT_QUANTILES
    n_samples: int = 0
    batch_size: int = 16
    edge_mass: float = 1e-3
    min_ess: float = 5.0
    mass_fraction: float = 1e-3

    def __post_init__(self):
        if not self.e_min < self.e_max:
            raise ValueError("need e_min < e_max")
        if not 0 < self.d_min < self.d_max:
            raise ValueError("need 0 < d_min < d_max")
        for name in ("n_e_coarse", "n_d_coarse", "n_e", "n_d"):
            if getattr(self, name) < 4:
                raise ValueError(f"{name} must be >= 4")
        for name in ("n_draws_coarse", "n_draws", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.n_draws_coarse > self.n_draws:
            raise ValueError("n_draws_coarse must be <= n_draws (the coarse draws are the first fine ones)")
        if self.mag_limits is not None and not self.mag_limits[0] < self.mag_limits[1]:
            raise ValueError("mag_limits must be (bright, faint) with bright < faint")


# --------------------------------------------------------------------------------------------------------------
# per-star arrays
# --------------------------------------------------------------------------------------------------------------


def star_arrays(stars: FlowerStars) -> dict:
    """The per-star dict both paths read (leading star axis), with harmless fillers where data are missing.

    Missing magnitudes become 0 with error 1 (used only through ``observed``), a missing parallax 0 ± 1 with
    ``has_parallax`` False, a missing position (0, 0) and a bad prior (1300, 1.5, 0.8): no NaN reaches jitted code.
    """
    obs = np.asarray(stars.observed, bool)
    has_plx = np.isfinite(np.asarray(stars.parallax)) & np.isfinite(np.asarray(stars.parallax_error))
    f32 = np.float32

    def fill(a, ok, value):
        return np.where(ok, np.nan_to_num(np.asarray(a, np.float64), nan=value), value).astype(f32)

    pos = np.isfinite(np.asarray(stars.l)) & np.isfinite(np.asarray(stars.b))
    prior_ok = (np.asarray(stars.flags) & FLAGS["bad_prior"]) == 0
    return {
        "mag": fill(stars.mag, obs, 0.0),
        "mag_err": fill(stars.mag_err, obs, 1.0),
        "observed": obs,
        "parallax": fill(stars.parallax, has_plx, 0.0),
        "parallax_error": fill(stars.parallax_error, has_plx, 1.0),
        "has_parallax": has_plx,
        "parallax_zero_point": fill(stars.parallax_zero_point, np.ones_like(has_plx), 0.0),
        "l": fill(stars.l, pos, 0.0),
        "b": fill(stars.b, pos, 0.0),
        "prior_length": fill(stars.prior_length, prior_ok, 1300.0),
        "prior_alpha": fill(stars.prior_alpha, prior_ok, 1.5),
        "prior_beta": fill(stars.prior_beta, prior_ok, 0.8),
    }


# --------------------------------------------------------------------------------------------------------------
# pieces of Eq. 16 (pure JAX, one star)
# --------------------------------------------------------------------------------------------------------------


def _modulus(d):
    return 5.0 * jnp.log10(d) - 5.0


def _photometric_log_likelihood(features, star, ebv, mu, x):
    """``log N(m̂ | Λ⁻¹x + μ + A(E, x), σ)`` summed over the observed bands (Eq. 5); ``x`` is ``(..., dim)``."""
    pred = features.absolute(x) + mu[..., None] + features.extinction(ebv, x)
    z = (star["mag"] - pred) / star["mag_err"]
    terms = -0.5 * z**2 - jnp.log(star["mag_err"]) - 0.5 * math.log(2 * math.pi)
    return jnp.sum(jnp.where(star["observed"], terms, 0.0), axis=-1)


def _log_truncation_and_selection(features, star, mu, x, config: FlowerPosteriorConfig):
    """``log I(M | μ)`` (Eq. 9) + ``log P(S = 1 | m_unext, l, b)`` (Eq. 12) for ``x (..., dim)``."""
    out = jnp.zeros(x.shape[:-1], x.dtype)
    if config.mag_limits is not None:
        bright, faint = config.mag_limits
        m_lead = x[..., 0] + mu
        inside = (m_lead > bright) & (m_lead < faint)
        out = out + jnp.where(inside, -math.log(faint - bright), -jnp.inf)
    if config.log_selection is not None:
        m_unext = features.absolute(x) + mu[..., None]
        out = out + config.log_selection(m_unext, star["l"], star["b"])
    return out


def _parallax_term(star, d):
    ll = parallax_log_likelihood(star["parallax"], star["parallax_error"], d, star["parallax_zero_point"])
    return jnp.where(star["has_parallax"], ll, 0.0)


def _x_hat(model, star, ebv, mu, iterations: int):
    """Photometric intrinsic features ``x̂ = Λ(m̂ − μ − A(E, x̂))``; missing colours at the flow's ``x_shift``."""
    features = model.features
    shift = jnp.asarray(model.x_shift, star["mag"].dtype)
    r = star["mag"] - mu[..., None]
    obs = star["observed"]
    x = jnp.where(obs, features.intrinsic(r), shift)
    for _ in range(iterations):
        x = jnp.where(obs, features.intrinsic(r - features.extinction(ebv, x)), shift)
    return x


def _proposal_cholesky(model, star, missing_scale: float):
    """Cholesky factor of the proposal covariance: ``Λ diag(σ²) Λᵀ`` on observed components, wide on missing."""
    features = model.features
    lam = jnp.asarray(features.matrix, star["mag"].dtype)
    obs = star["observed"]
    var = jnp.where(obs, star["mag_err"] ** 2, 0.0)
    cov = (lam * var[None, :]) @ lam.T
    both = obs[:, None] & obs[None, :]
    wide = (missing_scale * jnp.asarray(model.x_scale, cov.dtype)) ** 2
    cov = jnp.where(both, cov, 0.0) + jnp.diag(jnp.where(obs, 0.0, wide))
    return jnp.linalg.cholesky(cov)


def photometric_log_marginal(model, params, star: dict, ebv, distance, eps, config=None) -> ImportanceResult:
    """Importance-sampled ``log ∫ N(m̂ | …) p_θ(x | R, Z) I(M | μ) P(S | …) dx`` at one ``(E, d)`` (fast path).

    Parameters
    ----------
    model : FlowerModel
        ``features``, ``x_shift``, ``x_scale`` and ``log_density(params, x, R, Z)``.
    params : pytree
        Flow parameters.
    star : dict
        One star from :func:`star_arrays` (no star axis).
    ebv, distance : scalar
        Reddening ``E(B−V)`` and distance (pc).
    eps : array (K, dim)
        Standard-normal draws (the proposal is ``x̂ + L ε``).
    config : FlowerPosteriorConfig, optional

    Returns
    -------
    ImportanceResult
        ``log_marginal`` and the Kish ``ess`` of the K weights.
    """
    config = FlowerPosteriorConfig() if config is None else config
    chol = _proposal_cholesky(model, star, config.missing_scale)
    return _log_marginal(model, params, star, chol, ebv, distance, eps, config)


def _log_marginal(model, params, star, chol, ebv, distance, eps, config):
    ebv = jnp.asarray(ebv, eps.dtype)
    mu = _modulus(jnp.asarray(distance, eps.dtype))
    x_hat = _x_hat(model, star, ebv, mu, config.fixed_point_iterations)
    x = x_hat + eps @ chol.T  # (K, dim)
    R, Z = galactocentric_rz(star["l"], star["b"], distance)
    log_lik = _photometric_log_likelihood(model.features, star, ebv, mu, x)
    log_flow = model.log_density(params, x, R, Z)
    log_extra = _log_truncation_and_selection(model.features, star, mu, x, config)
    log_det = jnp.sum(jnp.log(jnp.diag(chol)))
    log_q = -0.5 * jnp.sum(eps**2, axis=-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi) - log_det
    return importance_log_marginal(log_lik + log_flow + log_extra - log_q)


# --------------------------------------------------------------------------------------------------------------
# (a) the NumPyro model and the NUTS reference
# --------------------------------------------------------------------------------------------------------------


def _flower_star_model(star, params, *, model, config: FlowerPosteriorConfig):
    features = model.features
    dim = features.dim
    ebv = numpyro.sample("ebv", dist.Uniform(config.e_min, config.e_max))
    distance = numpyro.sample(
        "distance", GeneralizedGammaPrior(star["prior_length"], star["prior_alpha"], star["prior_beta"])
    )
    # x has a flat base measure: a wide normal whose density is cancelled exactly by the factor below (NumPyro
    # cannot trace an ImproperUniform site); the flow density then enters as a factor (Eq. 16).
    base = dist.Normal(jnp.asarray(model.x_shift), 10.0 * jnp.asarray(model.x_scale)).to_event(1)
    x = numpyro.sample("x", base)
    numpyro.factor("flat_x", -base.log_prob(x))
    R, Z = galactocentric_rz(star["l"], star["b"], distance)
    numpyro.factor("flow", model.log_density(params, x, R, Z))
    mu = _modulus(distance)
    extra = _log_truncation_and_selection(features, star, mu, x, config)
    numpyro.factor("selection", extra)
    pred = features.absolute(x) + mu + features.extinction(ebv, x)
    numpyro.sample("mag", dist.Normal(pred, star["mag_err"]).mask(star["observed"]).to_event(1), obs=star["mag"])
    numpyro.factor("parallax", _parallax_term(star, distance))
    del dim


@functools.lru_cache(maxsize=32)
def flower_star_model(model, config: FlowerPosteriorConfig = FlowerPosteriorConfig()):
    """Eq. 16 for ONE star as a NumPyro model ``f(star, params)`` (sites ``ebv``, ``distance``, ``x``).

    Usable as ``jaxstars.inference.sample_stars(flower_star_model(model, config), star_arrays(stars), key,
    shared=(params,))``.  Cached: the same ``(model, config)`` returns the same callable, so the engine compiles
    once.  Missing bands are masked out of the photometric likelihood (exactly dropped); a star without parallax
    has no parallax term.
    """
    return functools.partial(_flower_star_model, model=model, config=config)


def _initial_point(star, *, model, config: FlowerPosteriorConfig):
    """Starting point for NUTS (pure JAX): E = 0.05; d from a good parallax (S/N > 5) else from ``m̂_G − x_shift_0``."""
    dtype = star["mag"].dtype
    ebv = jnp.asarray(0.05, dtype)
    plx = star["parallax"] - star["parallax_zero_point"]
    good = star["has_parallax"] & (plx > 5.0 * star["parallax_error"])
    d_plx = 1000.0 / jnp.where(good, plx, 1.0)
    mu_phot = star["mag"][0] - model.x_shift[0]
    d_phot = 10.0 ** (mu_phot / 5.0 + 1.0)
    d = jnp.clip(jnp.where(good, d_plx, d_phot), config.d_min, config.d_max)
    x = _x_hat(model, star, ebv, _modulus(d), config.fixed_point_iterations)
    return {"ebv": ebv, "distance": d, "x": x}


@functools.lru_cache(maxsize=32)
def initial_point(model, config: FlowerPosteriorConfig = FlowerPosteriorConfig()):
    """``init_fn(star) -> {"ebv", "distance", "x"}`` for :func:`jaxstars.inference.sample_stars` (cached)."""
    return functools.partial(_initial_point, model=model, config=config)


def _percent(level: float) -> str:
    return f"{100 * level:g}".replace(".", "_")


def nuts_flower_posteriors(
    model,
    params,
    stars: FlowerStars,
    key,
    nuts: NUTSConfig = PAPER_NUTS,
    config: FlowerPosteriorConfig = FlowerPosteriorConfig(),
    keep_samples: int = 0,
) -> dict:
    """Reference path: Eq. 16 sampled with NUTS for every star (the paper's procedure, §2.11), vmapped.

    Parameters
    ----------
    model, params
        FLOWER model and flow parameters.
    stars : FlowerStars
        From :func:`~jaxstars.models.flower.stars.prepare_flower_stars`; rows in ``NO_RESULT`` are not sampled.
    key : jax key or int
        Star ``i`` uses ``fold_in(key, row_id[i])``.
    nuts : NUTSConfig
        Sampler settings; default :data:`PAPER_NUTS` (4,000 + 10,000, target acceptance 0.9, dense mass).
    config : FlowerPosteriorConfig
        Prior bounds, Malmquist limits, selection function (the grid settings are unused here).
    keep_samples : int
        Also return that many evenly thinned draws per star (``ebv_samples``, ``distance_samples``).

    Returns
    -------
    dict
        ``ebv_mean``, ``ebv_std``, ``ebv_q…``, ``distance_mean``, ``distance_std``, ``distance_q…``, the engine's
        diagnostics (``n_divergent``, ``accept_prob``, ``step_size``, ``num_steps``, ``rhat``, ``ess_bulk``),
        ``nuts_flags`` (:data:`jaxstars.inference.NUTS_FLAGS`) and ``flags`` (:data:`FLAGS`, ``nuts_problem`` set
        when ``nuts_flags`` is non-zero for a sampled star).
    """
    valid = stars.usable
    data = star_arrays(stars)
    result = sample_stars(
        flower_star_model(model, config),
        data,
        key,
        shared=(params,),
        config=nuts,
        row_ids=np.asarray(stars.row_id),
        valid=valid,
        init_fn=initial_point(model, config),
    )
    out = {}
    for site, name in (("ebv", "ebv"), ("distance", "distance")):
        draws = np.asarray(result.samples[site], np.float64).reshape(stars.n, -1)
        out[f"{name}_mean"] = draws.mean(axis=1)
        out[f"{name}_std"] = draws.std(axis=1, ddof=1)
        for level, values in zip(config.quantiles, np.quantile(draws, config.quantiles, axis=1)):
            out[f"{name}_q{_percent(level)}"] = values
        if keep_samples:
            idx = np.linspace(0, draws.shape[1] - 1, keep_samples).round().astype(int)
            out[f"{name}_samples"] = draws[:, idx]
    out.update(result.diagnostics)
    nuts_flags = np.asarray(result.flags, np.int64)
    flags = np.asarray(stars.flags, np.int64).copy()
    flags[valid & (nuts_flags != 0)] |= FLAGS["nuts_problem"]
    out["nuts_flags"] = np.where(valid, nuts_flags, 0)
    out["flags"] = flags
    return out


# --------------------------------------------------------------------------------------------------------------
# (b) the fast path
# --------------------------------------------------------------------------------------------------------------


def _trapezoid(grid):
    h = jnp.diff(grid)
    return jnp.concatenate([h[:1] / 2, (h[1:] + h[:-1]) / 2, h[-1:] / 2])


def _distance_box(model, star, config: FlowerPosteriorConfig):
    """``(ln d_lo, ln d_hi)`` of the coarse grid: photometric range ∩ parallax range (when informative)."""
    dtype = star["mag"].dtype
    if config.absmag_range is not None:
        m_lo, m_hi = config.absmag_range
    else:
        m_lo = model.x_shift[0] - config.absmag_sigma * model.x_scale[0]
        m_hi = model.x_shift[0] + config.absmag_sigma * model.x_scale[0]
    x0 = _x_hat(model, star, jnp.asarray(0.0, dtype), jnp.asarray(0.0, dtype), 1)
    a_hi = jnp.maximum(model.features.extinction(jnp.asarray(config.e_max, dtype), x0)[0], 0.0)
    a_lo = jnp.minimum(model.features.extinction(jnp.asarray(config.e_min, dtype), x0)[0], 0.0)
    mu_lo = star["mag"][0] - a_hi - m_hi - 0.5
    mu_hi = star["mag"][0] - a_lo - m_lo + 0.5
    ln_lo_phot = (mu_lo / 5.0 + 1.0) * _LN10
    ln_hi_phot = (mu_hi / 5.0 + 1.0) * _LN10
    plx = star["parallax"] - star["parallax_zero_point"]
    sig = star["parallax_error"]
    informative = star["has_parallax"] & (plx > 3.0 * sig)
    ln_lo_plx = jnp.where(informative, jnp.log(1000.0 / (plx + 6.0 * sig)), -jnp.inf)
    upper_plx = plx - 6.0 * sig
    ln_hi_plx = jnp.where(
        informative & (upper_plx > 0), jnp.log(1000.0 / jnp.where(upper_plx > 0, upper_plx, 1.0)), jnp.inf
    )
    # the parallax box when informative (intersected with the photometric one unless that leaves nothing: the
    # photometric range is only a heuristic of the flow's absolute-magnitude range), else the photometric box
    lo_both = jnp.maximum(ln_lo_phot, ln_lo_plx)
    hi_both = jnp.minimum(ln_hi_phot, ln_hi_plx)
    overlap = hi_both > lo_both + 0.05
    lo = jnp.where(informative, jnp.where(overlap, lo_both, ln_lo_plx), ln_lo_phot)
    hi = jnp.where(
        informative, jnp.where(overlap, hi_both, jnp.minimum(ln_hi_plx, math.log(config.d_max))), ln_hi_phot
    )
    lo = jnp.clip(lo, math.log(config.d_min), math.log(config.d_max) - 0.1)
    hi = jnp.clip(hi, lo + 0.1, math.log(config.d_max))
    return lo, hi


def _log_post_grid(model, params, star, chol, e_grid, u_grid, eps, config):
    """Unnormalised ``log p(E, ln d | data)`` on the product grid and the importance ESS per node."""
    prior_e = -math.log(config.e_max - config.e_min)

    def node(ebv, u):
        d = jnp.exp(u)
        res = _log_marginal(model, params, star, chol, ebv, d, eps, config)
        lp = (
            res.log_marginal
            + log_prior_generalized_gamma(d, star["prior_length"], star["prior_alpha"], star["prior_beta"])
            + u  # Jacobian of the ln d grid
            + _parallax_term(star, d)
            + prior_e
        )
        return lp, res.ess

    inside = (e_grid >= config.e_min) & (e_grid <= config.e_max)
    lp, ess = jax.vmap(lambda e: jax.vmap(lambda u: node(e, u))(u_grid))(e_grid)
    lp = jnp.where(inside[:, None] & jnp.isfinite(lp), lp, -jnp.inf)
    return lp, ess


def _zoom(grid, log_marg, lo_bound, hi_bound):
    """Fine-grid bounds: the marginal's 1e-4 … 1 − 1e-4 quantiles widened by one coarse cell, clipped."""
    q = grid_posterior_1d(grid, log_marg, (1e-4, 1.0 - 1e-4)).quantiles
    cell = grid[1] - grid[0]
    lo = jnp.clip(q[0] - cell, lo_bound, hi_bound)
    hi = jnp.clip(q[1] + cell, lo_bound, hi_bound)
    hi = jnp.maximum(hi, jnp.minimum(lo + cell, hi_bound))
    lo = jnp.minimum(lo, hi - cell)
    return lo, hi


def _fast_one_star(model, config: FlowerPosteriorConfig, params, star, key):
    dtype = star["mag"].dtype
    dim = model.features.dim
    k_eps, k_samples = jax.random.split(key)
    eps = jax.random.normal(k_eps, (config.n_draws, dim), dtype)
    chol = _proposal_cholesky(model, star, config.missing_scale)

    # coarse: full reddening prior, photometric ∩ parallax distance range
    u_lo, u_hi = _distance_box(model, star, config)
    e_c = jnp.linspace(config.e_min, config.e_max, config.n_e_coarse, dtype=dtype)
    u_c = jnp.linspace(u_lo, u_hi, config.n_d_coarse).astype(dtype)
    lp_c, _ = _log_post_grid(model, params, star, chol, e_c, u_c, eps[: config.n_draws_coarse], config)
    peak = jnp.max(lp_c)
    dens = jnp.exp(lp_c - peak)
    marg_e = jnp.log(jnp.sum(dens * _trapezoid(u_c)[None, :], axis=1))
    marg_u = jnp.log(jnp.sum(dens * _trapezoid(e_c)[:, None], axis=0))
    e_lo, e_hi = _zoom(e_c, marg_e, config.e_min, config.e_max)
    f_lo, f_hi = _zoom(u_c, marg_u, math.log(config.d_min), math.log(config.d_max))

    # fine
    e_f = jnp.linspace(e_lo, e_hi, config.n_e).astype(dtype)
    u_f = jnp.linspace(f_lo, f_hi, config.n_d).astype(dtype)
    lp, ess = _log_post_grid(model, params, star, chol, e_f, u_f, eps, config)
    g = grid_posterior_2d(e_f, u_f, lp, config.quantiles)

    # distance moments in d (grid in ln d, Jacobian already in lp)
    w = jnp.exp(jnp.where(jnp.isfinite(lp), lp - jnp.max(lp), -jnp.inf)) * (
        _trapezoid(e_f)[:, None] * _trapezoid(u_f)[None, :]
    )
    p = w / jnp.sum(w)
    d_f = jnp.exp(u_f)
    p_u = jnp.sum(p, axis=0)
    d_mean = jnp.sum(p_u * d_f)
    d_std = jnp.sqrt(jnp.sum(p_u * (d_f - d_mean) ** 2))
    d_q = jnp.exp(g.quantiles[1])

    # diagnostics
    has_mass = lp >= jnp.max(lp) + math.log(config.mass_fraction)
    min_ess = jnp.min(jnp.where(has_mass, ess, jnp.inf))
    tol = 1e-6 * (config.e_max - config.e_min)
    e_lo_free = e_f[0] > config.e_min + tol
    e_hi_free = e_f[-1] < config.e_max - tol
    edge = (
        jnp.where(e_lo_free, jnp.sum(p[0]), 0.0)
        + jnp.where(e_hi_free, jnp.sum(p[-1]), 0.0)
        + jnp.sum(p[:, 0])
        + jnp.sum(p[:, -1])
    )
    if hasattr(model, "in_coverage"):
        d_check = jnp.stack([d_q[0], d_q[len(config.quantiles) // 2], d_q[-1]])
        R, Z = galactocentric_rz(star["l"], star["b"], d_check)
        covered = jnp.all(model.in_coverage(R, Z))
    else:
        covered = jnp.asarray(True)

    out = {
        "ebv_mean": g.mean[0],
        "ebv_std": jnp.sqrt(g.cov[0, 0]),
        "ebv_quantiles": g.quantiles[0],
        "distance_mean": d_mean,
        "distance_std": d_std,
        "distance_quantiles": d_q,
        "ebv_logd_corr": g.cov[0, 1] / jnp.sqrt(g.cov[0, 0] * g.cov[1, 1]),
        "log_evidence": g.log_evidence,
        "importance_ess": min_ess,
        "edge_mass": edge,
        "covered": covered,
        "unresolved": (jnp.sqrt(g.cov[0, 0]) < 1.5 * (e_f[1] - e_f[0]))
        | (jnp.sqrt(g.cov[1, 1]) < 1.5 * (u_f[1] - u_f[0])),
    }
    if config.n_samples:
        s = sample_grid_posterior_2d(k_samples, e_f, u_f, lp, config.n_samples)
        out["ebv_samples"] = s[:, 0]
        out["distance_samples"] = jnp.exp(s[:, 1])
    return out


@functools.lru_cache(maxsize=16)
def _compiled_fast(model, config: FlowerPosteriorConfig):
    """One jitted chunk function per (model, config): ``batch_size`` stars, ``vmap``-ed (fixed shapes, so the
    number of stars never triggers a recompilation)."""

    def run(params, data, keys):
        return jax.vmap(lambda star, k: _fast_one_star(model, config, params, star, k))(data, keys)

    return jax.jit(run)


def dust_pushed(features, stars: FlowerStars, e_max, m_bright: float | None = None) -> np.ndarray:
    """§2.9.2: stars that could be in the inference set only because dust dimmed them below the bright limit.

    A star whose leading-band magnitude satisfies ``m̂ < m_bright + R_lead E_max`` may have had an unextinguished
    magnitude brighter than the training sample's saturation limit (``S = 0``), which the posterior does not model.

    Parameters
    ----------
    features : FlowerFeatures
    stars : FlowerStars
    e_max : float or array (n,)
        Integrated reddening along each line of sight from an independent dust map.
    m_bright : float, optional
        Bright limit of the leading band (default: the band registry's, G ≈ 5).

    Returns
    -------
    ndarray of bool
        True where the check fires (rows without a leading-band magnitude: False).
    """
    if m_bright is None:
        m_bright = get_band(features.bands[0]).bright_limit
        if m_bright is None:
            raise ValueError(f"no bright limit known for {features.bands[0]!r}: pass m_bright")
    mag = np.asarray(stars.mag, np.float64)
    e_max = np.broadcast_to(np.asarray(e_max, np.float64), (mag.shape[0],))
    x_obs = np.asarray(features.intrinsic(np.nan_to_num(mag, nan=0.0)))  # observed colours stand in for (BP−RP)₀
    r_lead = np.asarray(features.coefficients(jnp.asarray(e_max), jnp.asarray(x_obs)))[:, 0]
    with np.errstate(invalid="ignore"):
        return np.isfinite(mag[:, 0]) & (mag[:, 0] < m_bright + r_lead * e_max)


def flower_posteriors(
    model,
    params,
    stars: FlowerStars,
    key,
    config: FlowerPosteriorConfig = FlowerPosteriorConfig(),
    *,
    e_max=None,
) -> dict:
    """Fast path: ``p(E, d | data)`` with ``x`` marginalised by importance sampling, on a zoomed 2-D grid.

    Parameters
    ----------
    model, params
        FLOWER model (``features``, ``x_shift``, ``x_scale``, ``log_density``, optionally ``in_coverage``) and flow
        parameters.
    stars : FlowerStars
        From :func:`~jaxstars.models.flower.stars.prepare_flower_stars`.
    key : jax key or int
        Star ``i`` uses ``fold_in(key, row_id[i])`` (results do not depend on batching).
    config : FlowerPosteriorConfig
    e_max : float or array (n,), optional
        External integrated reddening for the §2.9.2 check (flag ``dust_pushed``).

    Returns
    -------
    dict of ndarray (one row per star)
        ``ebv_mean``, ``ebv_std``, ``ebv_q2_5`` … ``ebv_q97_5``, ``distance_mean``, ``distance_std``,
        ``distance_q2_5`` … ``distance_q97_5``, ``ebv_logd_corr``, ``log_evidence`` (log ∫ p(data, E, d) dE dd),
        ``importance_ess``, ``edge_mass``, ``flags`` (:data:`FLAGS`), and with ``config.n_samples`` also
        ``ebv_samples`` / ``distance_samples`` ``(n, n_samples)``.  Rows in ``NO_RESULT`` are NaN.
    """
    n = stars.n
    flags = np.asarray(stars.flags, np.int64).copy()
    valid = (flags & NO_RESULT) == 0
    if e_max is not None:
        flags[dust_pushed(model.features, stars, e_max)] |= FLAGS["dust_pushed"]
    names = [f"q{_percent(q)}" for q in config.quantiles]
    keys_out = ["ebv_mean", "ebv_std", "distance_mean", "distance_std", "ebv_logd_corr", "log_evidence",
                "importance_ess", "edge_mass"]  # fmt: skip
    out: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in keys_out}
    for name in names:
        out[f"ebv_{name}"] = np.full(n, np.nan)
        out[f"distance_{name}"] = np.full(n, np.nan)
    if config.n_samples:
        out["ebv_samples"] = np.full((n, config.n_samples), np.nan)
        out["distance_samples"] = np.full((n, config.n_samples), np.nan)
    if valid.any():
        data = {k: jnp.asarray(v[valid]) for k, v in star_arrays(stars).items()}
        if isinstance(key, (int, np.integer)):
            key = jax.random.PRNGKey(int(key))
        ids = np.asarray(stars.row_id)[valid] % (2**31 - 1)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(ids, jnp.uint32))
        run = _compiled_fast(model, config)
        size, m = config.batch_size, int(valid.sum())
        chunks = []
        for start in range(0, m, size):  # fixed-size chunks (the last one padded with its first star)
            idx = np.minimum(np.arange(start, start + size), m - 1)
            part = run(params, jax.tree_util.tree_map(lambda a, idx=idx: a[idx], data), keys[idx])
            chunks.append({k: np.asarray(v, np.float64)[: min(size, m - start)] for k, v in part.items()})
        res = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        for k in keys_out:
            out[k][valid] = res[k]
        for j, name in enumerate(names):
            out[f"ebv_{name}"][valid] = res["ebv_quantiles"][:, j]
            out[f"distance_{name}"][valid] = res["distance_quantiles"][:, j]
        if config.n_samples:
            out["ebv_samples"][valid] = res["ebv_samples"]
            out["distance_samples"][valid] = res["distance_samples"]
        idx = np.flatnonzero(valid)
        bad_fit = ~np.isfinite(res["ebv_mean"]) | ~np.isfinite(res["log_evidence"])
        flags[idx[res["edge_mass"] > config.edge_mass]] |= FLAGS["grid_edge"]
        flags[idx[(res["importance_ess"] < config.min_ess) | bad_fit]] |= FLAGS["low_ess"]
        flags[idx[res["covered"] < 0.5]] |= FLAGS["outside_coverage"]
        flags[idx[res["unresolved"] > 0.5]] |= FLAGS["grid_unresolved"]
    out["flags"] = flags
    return out
