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
    star (sites ``ebv``, ``distance`` and ``x``; the flow enters as a factor, missing bands are masked out of the
    likelihood exactly); :func:`nuts_flower_posteriors` runs it with NUTS through the shared engine
    (:func:`jaxstars.inference.sample_stars`, vmapped over stars), 4,000 warm-up and 10,000 kept draws, target
    acceptance 0.9 by default.  ``x`` is sampled as its offset from the photometric ``x̂(E, d)``, scaled by the
    photometric errors (``FlowerPosteriorConfig.nuts_coordinates``): the photometry pins ``x`` to ``(E, d)`` at
    the milli-mag level along a curved ridge, which in the paper's coordinates (``x`` itself,
    ``nuts_coordinates="paper"``) makes NUTS diverge on most stars; the offset is nearly independent of
    ``(E, d)``.  Same posterior (a shear with constant Jacobian), same kernel.  The mass matrix is dense by default
    (``NUTSConfig(dense_mass=False)`` is the diagonal one).

(b) **Fast path.**  :func:`flower_posteriors` tabulates ``p(E, ln d | data)`` on a grid, with ``x`` integrated out
    by a Laplace approximation at every node, vmapped over stars:

    * *joint mode.*  Eq. 16 in NumPyro's unconstrained coordinates ``z = (η, ln d, x)``
      (:func:`log_joint_unconstrained`, equal to minus the NUTS potential energy) is maximised by damped Newton
      steps (eigenvalue-clipped Hessian, trust region, step halving) from nine starts (three reddenings × three
      distances: the parallax's or the photometric ones); the mode with the best Laplace evidence wins.  Its
      Hessian gives the ``ln d`` scale and the linear prediction of ``x`` given ``(E, ln d)``.
    * *node marginals.*  At a node ``(E, ln d)``, ``log ∫ p(E, d, x, data) dx`` is the Laplace marginal over ``x``:
      damped Newton steps in ``x`` (the photometry fixes every observed direction; the flow, sharper than the
      photometry across the stellar locus, fixes the rest) and ``−½ log det`` of the Hessian.  Nodes are visited
      by *continuation* in E: along each ``ln d`` column from an origin outwards, each node starting from the
      linear extrapolation of the ``x*`` of the two nodes before it (the locus moves smoothly with E, and a start
      from the photometric ``x̂`` or from the joint mode's linear prediction misses it where E is far from the
      mode); one Newton step per node (``node_hessians``), three at the origin.
    * *scan, then grid.*  A coarse scan (``n_e_scan × n_d_scan``: E over the whole prior, ``ln d`` over the mode ±
      ``distance_sigmas`` Laplace σ, at least ±``min_log_distance_halfwidth``) locates the posterior; the grid
      (``n_e × n_d``) covers the scan nodes within ``scan_threshold`` nats of the best, one scan cell wider on
      each side (a ``ln d`` side at the scan's edge is pushed further out).  The grid over ``(E, ln d)`` keeps what
      a single Gaussian over ``(E, ln d, x)`` loses: skewed, truncated and curved reddening–distance posteriors.
    * *summaries.*  :func:`jaxstars.inference.grid_posterior_2d`: moments, marginal quantiles (distance quantiles
      are ``exp`` of the ``ln d`` ones; distance moments in ``d``), the evidence.  Flags: ``grid_edge`` when more
      than ``edge_mass`` of the posterior sits on a grid edge that is not a bound of the E prior, ``grid_unresolved`` when a marginal std is
      below half a grid cell (node spacing above 2σ), ``low_ess`` when the result is not finite, ``outside_coverage`` when
      ``model.in_coverage`` is False at the 2.5 %, 50 % or 97.5 % distance (§2.6).

    The Laplace marginal over ``x`` is the approximation; importance sampling of ``x`` around it would remove it
    but, with flows sharper than the photometry, needs far more draws per node than the grid has nodes.  How
    well this agrees is measured, not assumed (``examples/flower_validation.py``, ``docs/models/flower.md``):
    against NUTS, and node by node against importance sampling over ``x`` at every grid node
    (:func:`~jaxstars.models.flower.validation.importance_grid_reference`, from the grids that
    ``flower_posteriors(..., return_grids=True)`` returns).

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
    grid_posterior_2d,
    sample_grid_posterior_2d,
    sample_stars,
)
from jaxstars.inference.grid import DEFAULT_QUANTILES

from .stars import FLAGS, NO_RESULT, FlowerStars

__all__ = [
    "PAPER_NUTS",
    "FlowerPosteriorConfig",
    "dust_pushed",
    "flower_posteriors",
    "flower_star_model",
    "grid_summary",
    "initial_point",
    "log_joint",
    "log_joint_unconstrained",
    "mixture_importance_marginal",
    "nuts_flower_posteriors",
    "star_arrays",
]

_LN10 = math.log(10.0)

#: The paper's sampler settings (§2.11: 4,000 warm-up, 10,000 samples; target acceptance 0.9), dense mass matrix.
PAPER_NUTS = NUTSConfig(num_warmup=4000, num_samples=10000, target_accept_prob=0.9, dense_mass=True, batch_size=16)


@dataclasses.dataclass(frozen=True)
class FlowerPosteriorConfig:
    """Settings of the FLOWER posterior (both paths) and of the fast path's Laplace + importance sampler.

    Attributes
    ----------
    e_min, e_max : float
        Reddening prior ``U(E_min, E_max)`` (Eq. 14; paper: −0.05, 0.5).
    d_min, d_max : float
        Bounds (pc) of the Newton starting distances; the prior itself is Eq. 13.
    start_ebv : tuple of float
        Reddening values of the Newton starts (each with three distances).
    newton_steps : int
        Damped Newton steps from every start.
    n_e_scan, n_d_scan : int
        The scan lattice: ``E`` over the whole prior, ``ln d`` over the joint mode ± ``max(distance_sigmas · σ_ln d,
        min_log_distance_halfwidth)`` (σ from the joint mode's Laplace approximation).  It only locates the
        posterior.
    scan_threshold : float
        Scan nodes within this many nats of the best one are significant; the grid spans them, each side extended
        to where that level is crossed (assuming a quadratic fall towards the next scan node); a ``ln d`` side that
        reaches the scan's edge is pushed out by another half-width.
    n_e, n_d : int
        Nodes of the ``(E, ln d)`` grid over that box, where the posterior is tabulated.
    distance_sigmas, min_log_distance_halfwidth : float
        See ``n_e_scan, n_d_scan``.
    origin_hessians, scan_hessians, node_hessians : int
        Damped Newton steps in ``x`` (each one exact value/gradient/Hessian evaluation, then log p at the full, half
        and quarter step, the best kept if it raises log p) at each continuation origin of the scan (one node per
        ``ln d`` column, started from the joint mode's linear prediction), at the other scan nodes (started by
        continuation) and at the grid nodes (started from the scan's ``x*``, interpolated).
    photometric_start : bool
        Also start every node from the photometric ``x̂`` (one more Laplace per node) and keep the better value.
    extrapolate : float
        Continuation start ``x*ₖ₋₁ + extrapolate · (x*ₖ₋₁ − x*ₖ₋₂)`` (1: linear extrapolation; 0: the previous
        node's ``x*``, measured much worse on a trained flow).
    node_draws : int
        0: the Laplace marginal over ``x`` at every node. ``K > 0``: importance-sample it instead with ``K`` draws
        (:func:`mixture_importance_marginal`) from a defensive mixture of the node's Laplace Gaussian (weight ¾) and
        the same Gaussian twice as wide (¼);
        the draws' standard-normal seeds are shared by all nodes and stars (common random numbers: a smooth
        surface, a deterministic result).
    edge_mass : float
        Flag ``grid_edge`` when more posterior mass than this sits in the grid's edge nodes (the distance edges,
        and the E edges that are not bounds of the prior).
    retry_scan_factor : int
        A star over ``edge_mass`` is computed once more with ``retry_scan_factor`` times as many ``E`` scan nodes
        (the scan's continuation can lose the stellar locus between coarse nodes, and the grid box then misses
        mass); the retry's result is kept, flagged ``grid_edge`` only if it too is over ``edge_mass``.  Output
        ``retried`` marks those stars.  0 or 1: no retry.
    missing_scale : float
        Floor of the proposal precision per ``x`` component, ``1 / (missing_scale · x_scale)²``: the width used
        where neither photometry nor flow constrain a direction.
    fixed_point_iterations : int
        Iterations of ``x̂ = Λ(m̂ − μ − A(E, x̂))`` for the starting points.
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
    nuts_coordinates : {"photometric", "paper"}
        Coordinates of ``x`` in the NumPyro model (the NUTS path): ``"photometric"`` (default) samples the offset
        ``δ`` of ``x = x̂(E, d) + s ⊙ δ`` from the photometric ``x̂`` at the current ``(E, d)``, ``s`` the
        photometric error of each feature; ``"paper"`` samples ``x`` itself, as the paper does.  Same posterior
        (a shear with constant Jacobian); in the paper's coordinates the photometry ties ``x`` to ``(E, d)`` along
        a thin curved ridge, and NUTS diverges on most stars.
    """

    e_min: float = -0.05
    e_max: float = 0.5
    d_min: float = 10.0
    d_max: float = 1.0e5
    start_ebv: tuple = (0.02, 0.2, 0.4)
    newton_steps: int = 12
    n_e_scan: int = 28
    n_d_scan: int = 5
    scan_threshold: float = 12.0
    n_e: int = 16
    n_d: int = 12
    origin_hessians: int = 3
    node_hessians: int = 1
    photometric_start: bool = False
    scan_hessians: int = 1
    extrapolate: float = 1.0
    node_draws: int = 0
    edge_mass: float = 1e-3
    retry_scan_factor: int = 2
    distance_sigmas: float = 8.0
    min_log_distance_halfwidth: float = 0.7
    missing_scale: float = 2.0
    fixed_point_iterations: int = 3
    mag_limits: tuple | None = None
    log_selection: Callable | None = None
    quantiles: tuple = DEFAULT_QUANTILES
    n_samples: int = 0
    batch_size: int = 16
    nuts_coordinates: str = "photometric"

    def __post_init__(self):
        if self.nuts_coordinates not in ("photometric", "paper"):
            raise ValueError(f"nuts_coordinates must be 'photometric' or 'paper', got {self.nuts_coordinates!r}")
        if not self.e_min < self.e_max:
            raise ValueError("need e_min < e_max")
        if not 0 < self.d_min < self.d_max:
            raise ValueError("need 0 < d_min < d_max")
        for name in ("batch_size", "newton_steps", "origin_hessians", "scan_hessians", "node_hessians"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.retry_scan_factor < 0:
            raise ValueError("retry_scan_factor must be >= 0")
        for name in ("n_e", "n_d", "n_e_scan", "n_d_scan"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2")
        if not all(self.e_min < e < self.e_max for e in self.start_ebv):
            raise ValueError("start_ebv values must lie inside (e_min, e_max)")
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


# --------------------------------------------------------------------------------------------------------------
# (a) the NumPyro model and the NUTS reference
# --------------------------------------------------------------------------------------------------------------


def _photometric_x_scale(model, star):
    """Photometric error of each feature ``x = Λ m``: ``σ_0`` for the leading magnitude, ``√(σ_b² + σ_0²)`` for
    a colour; the flow's ``x_scale`` where the band is missing."""
    err = star["mag_err"]
    scale = jnp.concatenate([err[:1], jnp.sqrt(err[1:] ** 2 + err[:1] ** 2)])
    return jnp.where(star["observed"], scale, jnp.asarray(model.x_scale, err.dtype))


def _flower_star_model(star, params, *, model, config: FlowerPosteriorConfig):
    features = model.features
    ebv = numpyro.sample("ebv", dist.Uniform(config.e_min, config.e_max))
    distance = numpyro.sample(
        "distance", GeneralizedGammaPrior(star["prior_length"], star["prior_alpha"], star["prior_beta"])
    )
    mu = _modulus(distance)
    # x (or its offset δ) has a flat base measure: a wide normal whose density is cancelled exactly by the factor
    # below (NumPyro cannot trace an ImproperUniform site); the flow density then enters as a factor (Eq. 16).
    if config.nuts_coordinates == "paper":
        base = dist.Normal(jnp.asarray(model.x_shift), 10.0 * jnp.asarray(model.x_scale)).to_event(1)
        x = numpyro.sample("x", base)
        numpyro.factor("flat_x", -base.log_prob(x))
    else:  # x = x̂(E, d) + s ⊙ δ: unit Jacobian in x for fixed (E, d), the constant log det s dropped
        base = dist.Normal(jnp.zeros(features.dim, mu.dtype), 10.0).to_event(1)
        offset = numpyro.sample("x_offset", base)
        numpyro.factor("flat_x", -base.log_prob(offset))
        x_hat = _x_hat(model, star, ebv, mu, config.fixed_point_iterations)
        x = numpyro.deterministic("x", x_hat + _photometric_x_scale(model, star) * offset)
    R, Z = galactocentric_rz(star["l"], star["b"], distance)
    numpyro.factor("flow", model.log_density(params, x, R, Z))
    extra = _log_truncation_and_selection(features, star, mu, x, config)
    numpyro.factor("selection", extra)
    pred = features.absolute(x) + mu + features.extinction(ebv, x)
    numpyro.sample("mag", dist.Normal(pred, star["mag_err"]).mask(star["observed"]).to_event(1), obs=star["mag"])
    numpyro.factor("parallax", _parallax_term(star, distance))


@functools.lru_cache(maxsize=32)
def flower_star_model(model, config: FlowerPosteriorConfig = FlowerPosteriorConfig()):
    """Eq. 16 for ONE star as a NumPyro model ``f(star, params)``: sites ``ebv``, ``distance`` and ``x_offset``
    (deterministic ``x``), or ``x`` with ``config.nuts_coordinates="paper"``.

    Usable as ``jaxstars.inference.sample_stars(flower_star_model(model, config), star_arrays(stars), key,
    shared=(params,))``.  Cached: the same ``(model, config)`` returns the same callable, so the engine compiles
    once.  Missing bands are masked out of the photometric likelihood (exactly dropped); a star without parallax
    has no parallax term.
    """
    return functools.partial(_flower_star_model, model=model, config=config)


def _initial_point(star, *, model, config: FlowerPosteriorConfig):
    """Starting point for NUTS (pure JAX): E = 0.05; d from a good parallax (S/N > 5) else from ``m̂_G − x_shift_0``;
    ``x`` the photometric ``x̂`` there (offset 0)."""
    dtype = star["mag"].dtype
    ebv = jnp.asarray(0.05, dtype)
    plx = star["parallax"] - star["parallax_zero_point"]
    good = star["has_parallax"] & (plx > 5.0 * star["parallax_error"])
    d_plx = 1000.0 / jnp.where(good, plx, 1.0)
    mu_phot = star["mag"][0] - model.x_shift[0]
    d_phot = 10.0 ** (mu_phot / 5.0 + 1.0)
    d = jnp.clip(jnp.where(good, d_plx, d_phot), config.d_min, config.d_max)
    if config.nuts_coordinates == "paper":
        return {
            "ebv": ebv,
            "distance": d,
            "x": _x_hat(model, star, ebv, _modulus(d), config.fixed_point_iterations),
        }
    return {"ebv": ebv, "distance": d, "x_offset": jnp.zeros(model.features.dim, dtype)}


@functools.lru_cache(maxsize=32)
def initial_point(model, config: FlowerPosteriorConfig = FlowerPosteriorConfig()):
    """``init_fn(star) -> {"ebv", "distance", "x_offset" or "x"}`` for :func:`jaxstars.inference.sample_stars` (cached)."""
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


def _unpack(z, config):
    """Unconstrained ``z = (η, u, x)`` → ``(E, d, x)`` and ``log |∂(E, d)/∂(η, u)|`` (NumPyro's transforms of the
    Uniform and positive sites: ``E = E_min + (E_max − E_min) sigmoid(η)``, ``d = exp(u)``)."""
    eta, u, x = z[0], z[1], z[2:]
    width = config.e_max - config.e_min
    ebv = config.e_min + width * jax.nn.sigmoid(eta)
    log_jac = math.log(width) + jax.nn.log_sigmoid(eta) + jax.nn.log_sigmoid(-eta) + u
    return ebv, jnp.exp(u), x, log_jac


def log_joint(model, params, star: dict, ebv, distance, x, config: FlowerPosteriorConfig) -> jax.Array:
    """Eq. 16, unnormalised: ``log p(E, d, x, data)`` for one star (``x`` is ``(dim,)`` or ``(K, dim)``)."""
    mu = _modulus(distance)
    R, Z = galactocentric_rz(star["l"], star["b"], distance)
    inside = (ebv >= config.e_min) & (ebv <= config.e_max)
    lp = (
        jnp.where(inside, -math.log(config.e_max - config.e_min), -jnp.inf)
        + log_prior_generalized_gamma(distance, star["prior_length"], star["prior_alpha"], star["prior_beta"])
        + model.log_density(params, x, R, Z)
        + _photometric_log_likelihood(model.features, star, ebv, mu, x)
        + _parallax_term(star, distance)
        + _log_truncation_and_selection(model.features, star, mu, x, config)
    )
    return lp


def log_joint_unconstrained(model, params, star: dict, z, config: FlowerPosteriorConfig) -> jax.Array:
    """Eq. 16 at the unconstrained point ``z = (η, ln d, x)`` with the Jacobian: the negative of NumPyro's
    potential energy of :func:`flower_star_model` (tested), written out so it can be differentiated twice cheaply."""
    ebv, d, x, log_jac = _unpack(z, config)
    mu = _modulus(d)
    R, Z = galactocentric_rz(star["l"], star["b"], d)
    lp = (
        -math.log(config.e_max - config.e_min)
        + log_prior_generalized_gamma(d, star["prior_length"], star["prior_alpha"], star["prior_beta"])
        + model.log_density(params, x, R, Z)
        + _photometric_log_likelihood(model.features, star, ebv, mu, x)
        + _parallax_term(star, d)
        + _log_truncation_and_selection(model.features, star, mu, x, config)
    )
    return lp + log_jac


def _starts(model, star, config):
    """Newton starting points ``(S, 2 + dim)``: E ∈ ``start_ebv`` × three distances (a good parallax's, else the
    photometric distances for ``M_lead`` at the flow's mean ± 1.2 std), ``x`` the photometric ``x̂`` there."""
    dtype = star["mag"].dtype
    width = config.e_max - config.e_min
    plx = star["parallax"] - star["parallax_zero_point"]
    good = star["has_parallax"] & (plx > 5.0 * star["parallax_error"])
    d_plx = 1000.0 / jnp.where(good, plx, 1.0)
    shift0, scale0 = model.x_shift[0], model.x_scale[0]
    out = []
    for e0 in config.start_ebv:
        ebv = jnp.asarray(e0, dtype)
        a_lead = model.features.extinction(ebv, _x_hat(model, star, ebv, jnp.asarray(10.0, dtype), 1))[0]
        for k, factor in enumerate((-1.2, 0.0, 1.2)):
            mu_phot = star["mag"][0] - a_lead - (shift0 + factor * scale0)
            d_phot = 10.0 ** (mu_phot / 5.0 + 1.0)
            d = jnp.clip(jnp.where(good, d_plx * (1.0 + 0.1 * (k - 1)), d_phot), config.d_min, config.d_max)
            x = _x_hat(model, star, ebv, _modulus(d), config.fixed_point_iterations)
            frac = jnp.clip((e0 - config.e_min) / width, 0.02, 0.98)
            out.append(jnp.concatenate([jnp.stack([jnp.log(frac / (1 - frac)), jnp.log(d)]).astype(dtype), x]))
    return jnp.stack(out)


def _precision(hess, floor):
    """``−∇²`` symmetrised, negative eigenvalues clipped to 0, plus a diagonal floor (proper in every direction)."""
    h = -0.5 * (hess + hess.T)
    w, v = jnp.linalg.eigh(h)
    return (v * jnp.maximum(w, 0.0)) @ v.T + jnp.diag(floor)


def _newton(f, z0, floor, steps):
    """Damped Newton ascent of ``f`` from ``z0`` (trust region of 3 units in the local metric, step halving)."""
    grad_f, hess_f = jax.grad(f), jax.hessian(f)

    def body(z, _):
        g = grad_f(z)
        prec = _precision(hess_f(z), floor)
        step = jnp.linalg.solve(prec, g)
        size = jnp.sqrt(jnp.maximum(jnp.dot(g, step), 0.0))
        step = step * jnp.minimum(1.0, 3.0 / jnp.maximum(size, 1e-12))
        cands = z[None, :] + jnp.array([1.0, 0.3, 0.05])[:, None] * step[None, :]
        vals = jax.vmap(f)(cands)
        vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
        best = jnp.argmax(vals)
        better = vals[best] > f(z)
        return jnp.where(better & jnp.all(jnp.isfinite(step)), cands[best], z), None

    z, _ = jax.lax.scan(body, z0, None, length=steps)
    return z


def _weighted_quantiles(values, weights, levels):
    order = jnp.argsort(values)
    v, w = values[order], weights[order]
    cdf = jnp.cumsum(w) - 0.5 * w
    return jnp.interp(jnp.asarray(levels), cdf, v)


def _fast_one_star(model, config: FlowerPosteriorConfig, params, star, key):
    """Fast path for one star (see the module docstring): joint mode → (E, ln d) grid of Laplace marginals over x
    (returned too: ``grid_ebv``, ``grid_log_distance``, ``grid_log_post``, ``grid_x``)."""
    dtype = star["mag"].dtype
    floor = jnp.concatenate(
        [jnp.array([0.01, 0.01], dtype), 1.0 / (config.missing_scale * jnp.asarray(model.x_scale, dtype)) ** 2]
    )
    floor_x = floor[2:]

    def f(z):
        return log_joint_unconstrained(model, params, star, z, config)

    # 1. the joint mode over (η, ln d, x): best Laplace evidence over several damped-Newton starts (vmapped)
    modes = jax.vmap(lambda z0: _newton(f, z0, floor, config.newton_steps))(_starts(model, star, config))
    log_p = jax.vmap(f)(modes)
    precs = jax.vmap(lambda z: _precision(jax.hessian(f)(z), floor))(modes)
    log_ev = log_p - 0.5 * jnp.linalg.slogdet(precs)[1]
    best = jnp.argmax(jnp.where(jnp.isfinite(log_ev), log_ev, -jnp.inf))
    z_star, prec = modes[best], precs[best]
    width = config.e_max - config.e_min
    x_gain = jnp.linalg.solve(prec[2:, 2:], prec[2:, :2])  # x given (η, u) from the joint Gaussian

    def x_joint(ebv, u):
        frac = jnp.clip((ebv - config.e_min) / width, 1e-6, 1 - 1e-6)
        return z_star[2:] - x_gain @ (jnp.stack([jnp.log(frac / (1 - frac)), u]) - z_star[:2])

    # 2. log ∫ p(E, d, x, data) dx at a node (E, ln d) by the Laplace approximation over x:
    #    log p(x*) − ½ log det P + (dim/2) log 2π, P = −∇² at x*; + ln d, the Jacobian of the ln d grid.
    dim = z_star.shape[0] - 2
    norm = 0.5 * dim * math.log(2 * math.pi)
    eps, component = _defensive_draws(config.node_draws, dim, dtype)

    def node_log_joint(e, u):
        d = jnp.exp(u)
        return lambda x: log_joint(model, params, star, e, d, x, config)

    def laplace_node(e, u, start, n_hessians):
        """The node's Laplace marginal from ``start``: ``n_hessians`` damped Newton steps in x (each one exact
        value/gradient/Hessian evaluation, then log p at the full, half and quarter step; the best is kept if it
        raises log p), and ``−½ log det P`` from the last Hessian.  Returns (log marginal, x*, the last step's
        gain in log p)."""
        g = node_log_joint(e, u)

        def grad_with_aux(x):
            value, grad = jax.value_and_grad(g)(x)
            return grad, (value, grad)

        def value_grad_hessian(x):  # one forward-over-reverse pass: value, gradient and Hessian together
            hess, (value, grad) = jax.jacfwd(grad_with_aux, has_aux=True)(x)
            return value, grad, hess

        def newton_step(carry, _):
            x, _, _, _ = carry
            value, grad, hess = value_grad_hessian(x)
            prec = _precision(hess, floor_x)
            step = jnp.linalg.solve(prec, grad)
            cands = x[None, :] + jnp.array([1.0, 0.5, 0.25], dtype)[:, None] * step[None, :]
            vals = jax.vmap(g)(cands)
            vals = jnp.where(jnp.isfinite(vals), vals, -jnp.inf)
            best = jnp.argmax(vals)
            better = jnp.all(jnp.isfinite(step)) & (vals[best] > value)
            gain = jnp.where(better, vals[best] - value, 0.0)
            return (jnp.where(better, cands[best], x), jnp.where(better, vals[best], value), prec, gain), None

        # a scan, not a Python loop: the Hessian's graph is traced and compiled once whatever ``n_hessians`` is
        init = (start, jnp.zeros((), dtype), jnp.zeros((dim, dim), dtype), jnp.zeros((), dtype))
        (x, value, prec, gain), _ = jax.lax.scan(newton_step, init, None, length=n_hessians)
        if config.node_draws:  # ¾ the node's Laplace Gaussian + ¼ the same twice as wide
            chol = jnp.linalg.cholesky(prec)
            log_marginal, _ = mixture_importance_marginal(
                g, jnp.stack([x, x]), jnp.stack([chol, 0.5 * chol]), jnp.array([0.75, 0.25], dtype), eps, component
            )
        else:
            log_marginal = value - 0.5 * jnp.linalg.slogdet(prec)[1] + norm
        return log_marginal + u, x, gain

    def best_of_starts(e, u, start, n_hessians):
        """Continuation start, plus (``photometric_start``) the photometric x̂: the better Laplace value wins."""
        if not config.photometric_start:
            return laplace_node(e, u, start, n_hessians)
        x_hat = _x_hat(model, star, e, _modulus(jnp.exp(u)), config.fixed_point_iterations)
        lap, x, gain = jax.vmap(lambda s: laplace_node(e, u, s, n_hessians))(jnp.stack([start, x_hat]))
        best = jnp.argmax(jnp.where(jnp.isfinite(lap), lap, -jnp.inf))
        return lap[best], x[best], gain[best]

    def column(e_nodes, k0, u, x_origin):
        """Laplace marginals at every E node at one ln d by continuation: from node ``k0`` (start ``x_origin``,
        ``origin_hessians`` Hessians) outwards, k0+1, …, last, then k0−1, …, 0; each node starts from the linear
        extrapolation of the x* of the two nodes before it in its direction (the stellar locus moves smoothly with
        E; a start from x̂ or from the joint mode misses it where E is far from the mode)."""
        n = e_nodes.shape[0]
        lap0, x0, gain0 = best_of_starts(e_nodes[k0], u, x_origin, config.origin_hessians)
        t = jnp.arange(1, n)
        order = jnp.where(k0 + t < n, k0 + t, k0 - (t - (n - k0) + 1))
        turn = n - k0  # the step at which the walk turns back to k0 − 1

        def body(carry, t):
            last, before, x_next_to_origin = carry
            at_turn = t == turn
            prev = jnp.where(at_turn, x0, last)
            prev2 = jnp.where(at_turn, jnp.where(turn >= 2, x_next_to_origin, x0), before)
            start = prev + config.extrapolate * (prev - prev2)
            lap, x, gain = best_of_starts(e_nodes[order[t - 1]], u, start, config.scan_hessians)
            return (x, prev, jnp.where(t == 1, x, x_next_to_origin)), (lap, x, gain)

        _, (laps, xs, gains) = jax.lax.scan(body, (x0, x0, x0), t)
        laps = jnp.zeros(n, laps.dtype).at[k0].set(lap0).at[order].set(laps)
        xs = jnp.zeros((n, dim), xs.dtype).at[k0].set(x0).at[order].set(xs)
        gains = jnp.zeros(n, gains.dtype).at[k0].set(gain0).at[order].set(gains)
        return laps, xs, gains

    def significant_range(nodes, profile):
        """Where ``profile`` (log posterior, max over the other axis) is within ``scan_threshold`` nats of its
        best: from the outermost such nodes to the level's crossing towards the next node; and whether the range
        reaches the first / last node."""
        n = nodes.shape[0]
        profile = jnp.where(jnp.isfinite(profile), profile, -jnp.inf)
        level = jnp.max(profile) - config.scan_threshold
        keep = profile >= level
        keep = jnp.where(jnp.any(keep), keep, True)
        idx = jnp.arange(n)
        lo_i, hi_i = jnp.min(jnp.where(keep, idx, n - 1)), jnp.max(jnp.where(keep, idx, 0))
        h = nodes[1] - nodes[0]

        def crossing(i, j):
            # from node i (kept) towards node j (not kept): the fraction of h where the level is reached if the
            # profile falls quadratically from node i (exact for a Gaussian peaked at node i, wider otherwise)
            drop = profile[i] - profile[j]
            frac = jnp.where(jnp.isfinite(drop) & (drop > 0), jnp.sqrt((profile[i] - level) / drop), 1.0)
            return jnp.clip(frac, 0.0, 1.0)

        lo = nodes[lo_i] - h * crossing(lo_i, jnp.maximum(lo_i - 1, 0)) * (lo_i > 0)
        hi = nodes[hi_i] + h * crossing(hi_i, jnp.minimum(hi_i + 1, n - 1)) * (hi_i < n - 1)
        return lo, hi, lo_i == 0, hi_i == n - 1

    # 3. scan: E over the whole prior, ln d over the mode ± max(distance_sigmas Laplace σ, min half-width)
    width = config.e_max - config.e_min
    e_star = config.e_min + width * jax.nn.sigmoid(z_star[0])
    cov_a = jnp.linalg.inv(prec)[:2, :2]
    half = jnp.maximum(config.distance_sigmas * jnp.sqrt(cov_a[1, 1]), config.min_log_distance_halfwidth)
    u_min, u_max = math.log(config.d_min), math.log(config.d_max)
    u_lo = jnp.clip(z_star[1] - half, u_min, u_max - 0.1)
    u_hi = jnp.clip(z_star[1] + half, u_lo + 0.1, u_max)
    e_scan = jnp.linspace(config.e_min, config.e_max, config.n_e_scan).astype(dtype)
    u_scan = jnp.linspace(u_lo, u_hi, config.n_d_scan).astype(dtype)
    k_scan = jnp.argmin(jnp.abs(e_scan - e_star))
    scan_lap, scan_x, _ = jax.vmap(
        lambda u: column(e_scan, k_scan, u, x_joint(e_scan[k_scan], u)), out_axes=(1, 1, 1)
    )(u_scan)
    scan_lap = jnp.where(jnp.isfinite(scan_lap), scan_lap, -jnp.inf)

    # 4. the grid: the scan's significant box (E clipped to the prior; a ln d side that reaches the scan's edge
    #    is pushed out by another half-width), n_e × n_d nodes, by continuation from the scan's best E
    e_lo, e_hi, _, _ = significant_range(e_scan, jnp.max(scan_lap, axis=1))
    e_lo = jnp.clip(e_lo, config.e_min, config.e_max - 1e-3)
    e_hi = jnp.clip(e_hi, e_lo + 1e-3, config.e_max)
    g_lo, g_hi, touch_lo, touch_hi = significant_range(u_scan, jnp.max(scan_lap, axis=0))
    g_lo = jnp.clip(jnp.where(touch_lo, g_lo - half, g_lo), u_min, u_max - 1e-3)
    g_hi = jnp.clip(jnp.where(touch_hi, g_hi + half, g_hi), g_lo + 1e-3, u_max)
    e_grid = jnp.linspace(e_lo, e_hi, config.n_e).astype(dtype)
    u_grid = jnp.linspace(g_lo, g_hi, config.n_d).astype(dtype)

    def scan_start(e, u):
        """x* of the scan, bilinear in (E, ln d) between its nodes (linear extrapolation in ln d beyond them:
        x*'s magnitude component moves linearly with the distance modulus)."""
        fe = jnp.clip((e - e_scan[0]) / (e_scan[1] - e_scan[0]), 0.0, config.n_e_scan - 1.0)
        fu = (u - u_scan[0]) / (u_scan[1] - u_scan[0])
        i = jnp.clip(jnp.floor(fe).astype(jnp.int32), 0, config.n_e_scan - 2)
        j = jnp.clip(jnp.floor(fu).astype(jnp.int32), 0, config.n_d_scan - 2)
        we, wu = fe - i, fu - j
        return ((1 - we) * (1 - wu) * scan_x[i, j] + we * (1 - wu) * scan_x[i + 1, j]
                + (1 - we) * wu * scan_x[i, j + 1] + we * wu * scan_x[i + 1, j + 1])  # fmt: skip

    def grid_node(e, u):
        return best_of_starts(e, u, scan_start(e, u), config.node_hessians)

    log_post, grid_x, gains = jax.vmap(lambda e: jax.vmap(lambda u: grid_node(e, u))(u_grid))(e_grid)
    log_post = jnp.where(jnp.isfinite(log_post), log_post, -jnp.inf)

    # 5. summaries: grid_posterior_2d in (E, ln d); distance moments in d
    out, p_e, p_u = grid_summary(e_grid, u_grid, log_post, config.quantiles)
    # mass on the grid's edges, except the E edges that are the prior's bounds
    edge = (
        p_u[0]
        + p_u[-1]
        + jnp.where(e_lo > config.e_min, p_e[0], 0.0)
        + jnp.where(e_hi < config.e_max, p_e[-1], 0.0)
    )
    top = log_post >= jnp.max(log_post) - 10.0
    if hasattr(model, "in_coverage"):
        d_q = out["distance_quantiles"]
        d_check = jnp.stack([d_q[0], d_q[len(config.quantiles) // 2], d_q[-1]])
        R, Z = galactocentric_rz(star["l"], star["b"], d_check)
        covered = jnp.all(model.in_coverage(R, Z))
    else:
        covered = jnp.asarray(True)
    out |= {
        "edge_mass": edge,
        "node_gain": jnp.max(jnp.where(top, gains, 0.0)),  # the last Newton step's largest gain where it matters
        "covered": covered,
        # the trapezoid rule integrates a Gaussian to ~exp(−2π²σ²/h²): 1e-4 relative at h = 1.5σ, 1e-2 at h = 2σ
        "unresolved": (out["ebv_std"] < 0.5 * (e_grid[1] - e_grid[0]))
        | (out.pop("log_distance_std") < 0.5 * (u_grid[1] - u_grid[0])),
    }
    out |= {"grid_ebv": e_grid, "grid_log_distance": u_grid, "grid_log_post": log_post, "grid_x": grid_x}
    if config.n_samples:
        smp = sample_grid_posterior_2d(key, e_grid, u_grid, log_post, config.n_samples)
        out["ebv_samples"] = smp[:, 0]
        out["distance_samples"] = jnp.exp(smp[:, 1])
    return out


def _defensive_draws(k: int, dim: int, dtype):
    """``k`` fixed standard-normal seeds and their mixture component (every fourth draw from the wide one, 1)."""
    if not k:
        return None, None
    eps = jax.random.normal(jax.random.PRNGKey(20260), (k, dim), dtype)
    return eps, (jnp.arange(k) % 4 == 3).astype(jnp.int32)


def mixture_importance_marginal(g, means, chols, weights, eps, component):
    """``log ∫ exp g(x) dx`` by importance sampling from a Gaussian mixture ``Σ_c w_c N(m_c, (C_c C_cᵀ)⁻¹)``.

    Parameters
    ----------
    g : callable
        ``x (dim,) -> log density`` (unnormalised).
    means, chols : arrays (C, dim), (C, dim, dim)
        Component means and lower Cholesky factors ``C_c`` of their *precisions*.
    weights : array (C,)
        Mixture weights (summing to 1); draw ``k`` comes from component ``component[k]``, so the share of draws per
        component should follow ``weights`` (stratified sampling: the estimate is unbiased either way).
    eps : array (K, dim)
        Standard-normal seeds: draw ``k`` is ``m_c + C_c⁻ᵀ eps_k``.

    Returns
    -------
    (log marginal, effective sample size of the weights)
    """
    dim = means.shape[1]
    solve = jax.vmap(lambda c, e: jax.scipy.linalg.solve_triangular(c.T, e, lower=False))
    xs = means[component] + solve(chols[component], eps)

    def log_q(x):  # log Σ_c w_c N(x | m_c, P_c⁻¹), with z_c = C_cᵀ (x − m_c)
        z = jnp.einsum("cij,ci->cj", chols, x[None, :] - means)
        log_n = -0.5 * jnp.sum(z**2, -1) + jnp.sum(jnp.log(jnp.diagonal(chols, axis1=1, axis2=2)), -1)
        return jax.scipy.special.logsumexp(log_n + jnp.log(weights)) - 0.5 * dim * math.log(2 * math.pi)

    log_w = jax.vmap(g)(xs) - jax.vmap(log_q)(xs)
    log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
    total = jax.scipy.special.logsumexp(log_w)
    ess = jnp.exp(2.0 * total - jax.scipy.special.logsumexp(2.0 * log_w))
    return total - math.log(eps.shape[0]), ess


def grid_summary(e_grid, u_grid, log_post, quantiles=DEFAULT_QUANTILES):
    """Posterior summaries of ``log p(E, ln d)`` tabulated on ``e_grid × u_grid`` (pure JAX, one star).

    Moments, quantiles and evidence from :func:`jaxstars.inference.grid_posterior_2d` in ``(E, ln d)``; distance
    moments in ``d`` (quantiles are ``exp`` of the ``ln d`` ones).  Returns ``(summary dict, p_E, p_ln d)`` with
    the normalised marginal weights of the nodes (trapezoid rule)."""
    g = grid_posterior_2d(e_grid, u_grid, log_post, quantiles)
    wts = jnp.exp(log_post - jnp.max(log_post)) * (_trapezoid(e_grid)[:, None] * _trapezoid(u_grid)[None, :])
    p_u = jnp.sum(wts, axis=0) / jnp.sum(wts)
    p_e = jnp.sum(wts, axis=1) / jnp.sum(wts)
    d_grid = jnp.exp(u_grid)
    d_mean = jnp.sum(p_u * d_grid)
    summary = {
        "ebv_mean": g.mean[0],
        "ebv_std": jnp.sqrt(g.cov[0, 0]),
        "ebv_quantiles": g.quantiles[0],
        "distance_mean": d_mean,
        "distance_std": jnp.sqrt(jnp.sum(p_u * (d_grid - d_mean) ** 2)),
        "distance_quantiles": jnp.exp(g.quantiles[1]),
        "log_distance_std": jnp.sqrt(g.cov[1, 1]),
        "ebv_logd_corr": g.cov[0, 1] / jnp.sqrt(g.cov[0, 0] * g.cov[1, 1]),
        "log_evidence": g.log_evidence,
    }
    return summary, p_e, p_u


def _trapezoid(grid):
    h = jnp.diff(grid)
    return jnp.concatenate([h[:1] / 2, (h[1:] + h[:-1]) / 2, h[-1:] / 2])


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


def _run_fast_chunks(model, config: FlowerPosteriorConfig, params, data, keys) -> dict:
    """The compiled fast path over ``data`` (valid stars only) in fixed-size chunks of ``config.batch_size`` (the
    last one padded with its first star): per-star float64 arrays."""
    # settings read only outside the compiled function do not make a new compilation
    run = _compiled_fast(
        model, dataclasses.replace(config, edge_mass=0.0, retry_scan_factor=0, nuts_coordinates="photometric")
    )
    size, m = config.batch_size, int(keys.shape[0])
    chunks = []
    for start in range(0, m, size):
        idx = np.minimum(np.arange(start, start + size), m - 1)
        part = run(params, jax.tree_util.tree_map(lambda a, idx=idx: a[idx], data), keys[idx])
        chunks.append({k: np.asarray(v, np.float64)[: min(size, m - start)] for k, v in part.items()})
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def flower_posteriors(
    model,
    params,
    stars: FlowerStars,
    key,
    config: FlowerPosteriorConfig = FlowerPosteriorConfig(),
    *,
    e_max=None,
    return_grids: bool = False,
) -> dict:
    """Fast path: ``p(E, d | data)`` with ``x`` marginalised by Laplace approximations on an ``(E, ln d)`` grid.

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
    return_grids : bool
        Also return each star's grid: ``grid_ebv (n, n_e)``, ``grid_log_distance (n, n_d)``, ``grid_log_post (n,
        n_e, n_d)`` (log p(E, ln d | data) + const. at the nodes) and ``grid_x (n, n_e, n_d, dim)`` (the Laplace
        modes in ``x``), e.g. for :func:`~jaxstars.models.flower.validation.importance_grid_reference`.

    Returns
    -------
    dict of ndarray (one row per star)
        ``ebv_mean``, ``ebv_std``, ``ebv_q2_5`` … ``ebv_q97_5``, ``distance_mean``, ``distance_std``,
        ``distance_q2_5`` … ``distance_q97_5``, ``ebv_logd_corr``, ``log_evidence`` (log ∫ p(data, E, d, x)),
        ``edge_mass``, ``node_gain`` (the largest log-p gain of the last Newton step in x at grid nodes within 10
        nats of the best: well above 1, the Laplace marginals there are not converged), ``retried`` (1 where the
        star was recomputed with a finer scan, see ``FlowerPosteriorConfig.retry_scan_factor``), ``flags``
        (:data:`FLAGS`), and with ``config.n_samples`` also ``ebv_samples`` / ``distance_samples``
        ``(n, n_samples)``.  Rows in ``NO_RESULT`` are NaN.
    """
    n = stars.n
    flags = np.asarray(stars.flags, np.int64).copy()
    valid = (flags & NO_RESULT) == 0
    if e_max is not None:
        flags[dust_pushed(model.features, stars, e_max)] |= FLAGS["dust_pushed"]
    names = [f"q{_percent(q)}" for q in config.quantiles]
    keys_out = ["ebv_mean", "ebv_std", "distance_mean", "distance_std", "ebv_logd_corr", "log_evidence",
                "edge_mass", "node_gain", "retried"]  # fmt: skip
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
        res = _run_fast_chunks(model, config, params, data, keys)
        res["retried"] = np.zeros(len(res["edge_mass"]), np.float64)
        retry = np.flatnonzero(res["edge_mass"] > config.edge_mass)
        if config.retry_scan_factor > 1 and retry.size:
            finer = dataclasses.replace(
                config, n_e_scan=config.retry_scan_factor * config.n_e_scan, retry_scan_factor=0
            )
            again = _run_fast_chunks(
                model, finer, params, jax.tree_util.tree_map(lambda a: a[retry], data), keys[retry]
            )
            for k in again:
                res[k] = np.array(res[k])
                res[k][retry] = again[k]
            res["retried"][retry] = 1.0
        for k in keys_out:
            out[k][valid] = res[k]
        for j, name in enumerate(names):
            out[f"ebv_{name}"][valid] = res["ebv_quantiles"][:, j]
            out[f"distance_{name}"][valid] = res["distance_quantiles"][:, j]
        if config.n_samples:
            out["ebv_samples"][valid] = res["ebv_samples"]
            out["distance_samples"][valid] = res["distance_samples"]
        for k in ("grid_ebv", "grid_log_distance", "grid_log_post", "grid_x") if return_grids else ():
            out[k] = np.full((n, *res[k].shape[1:]), np.nan)
            out[k][valid] = res[k]
        idx = np.flatnonzero(valid)
        bad_fit = ~np.isfinite(res["ebv_mean"]) | ~np.isfinite(res["log_evidence"])
        flags[idx[bad_fit]] |= FLAGS["low_ess"]
        flags[idx[res["edge_mass"] > config.edge_mass]] |= FLAGS["grid_edge"]
        flags[idx[res["unresolved"] > 0.5]] |= FLAGS["grid_unresolved"]
        flags[idx[res["covered"] < 0.5]] |= FLAGS["outside_coverage"]
    out["flags"] = flags
    return out
