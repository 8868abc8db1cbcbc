"""Distance priors: log-densities for NUTS and the same priors as NumPyro distributions.

Three priors on the heliocentric distance ``d`` (pc):

* flat on ``0 < d`` (improper) or on ``0 < d <= d_max`` (normalised, ``1 / d_max``);
* exponentially decreasing space density (EDSD, Bailer-Jones 2015; Astraatmadja & Bailer-Jones 2016;
  the distance prior of Cranmer et al. §4.1 with ``L = 1 kpc``)::

      P(d) = d^2 exp(-d / L) / (2 L^3)

* generalized gamma distribution (GGD; Bailer-Jones et al. 2021, AJ 161, 147, the "geometric" prior, with
  parameters fitted per HEALPix level-5 pixel; FLOWER Eq. 13 uses it per line of sight, and its training
  weight uses ``L = 1300``, ``alpha = 1.5``, ``beta = 0.8`` for every star, IMPLEMENTATION_NOTES.md)::

      P(d) = alpha / (L^(beta+1) Gamma((beta+1)/alpha)) * d^beta * exp(-(d/L)^alpha)

  EDSD is the special case ``alpha = 1``, ``beta = 2``.

The ``log_prior_*`` functions are pure ``jax.numpy``: ``jit``/``vmap``/``grad`` work, parameters broadcast
against ``d`` (scalars, per-star arrays or per-pixel values gathered per star), and ``d <= 0`` gives ``-inf``
with a finite (zero) gradient.  The distribution classes wrap them for ``numpyro.sample``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import promote_shapes

from jaxstars.astro.astrometry import parallax_log_likelihood
from jaxstars.inference.grid import grid_posterior_1d

__all__ = [
    "EDSDPrior",
    "FlatDistancePrior",
    "GeneralizedGammaPrior",
    "geometric_distance",
    "log_prior_edsd",
    "log_prior_flat",
    "log_prior_generalized_gamma",
]


def _safe_positive(d):
    """``(d > 0, d with non-positive entries replaced by 1)``: lets ``log(d)`` stay finite under ``grad``."""
    positive = d > 0
    return positive, jnp.where(positive, d, jnp.ones_like(d))


def log_prior_flat(d, d_max=None):
    """Flat distance prior.

    Parameters
    ----------
    d : array_like
        Distance (pc).
    d_max : float or array_like, optional
        Upper bound (pc).  Without it the prior is improper and ``0`` on ``d > 0``; with it the prior is the
        normalised uniform density ``1 / d_max`` on ``0 < d <= d_max``.

    Returns
    -------
    Array
        Log-density; ``-inf`` for ``d <= 0`` (and ``d > d_max``).
    """
    d = jnp.asarray(d)
    if d_max is None:
        return jnp.where(d > 0, jnp.zeros_like(d), -jnp.inf)
    d_max = jnp.asarray(d_max)
    inside = (d > 0) & (d <= d_max)
    return jnp.where(inside, -jnp.log(d_max), -jnp.inf)


def log_prior_edsd(d, length_scale):
    """Exponentially decreasing space density prior, ``P(d) = d^2 exp(-d/L) / (2 L^3)``.

    Parameters
    ----------
    d : array_like
        Distance (pc).
    length_scale : float or array_like
        ``L`` (pc), broadcast against ``d``; the mode is at ``2 L``, the mean ``3 L``.

    Returns
    -------
    Array
        Normalised log-density; ``-inf`` for ``d <= 0``.
    """
    d = jnp.asarray(d)
    length_scale = jnp.asarray(length_scale)
    positive, d_safe = _safe_positive(d)
    logp = 2.0 * jnp.log(d_safe) - d_safe / length_scale - jnp.log(2.0) - 3.0 * jnp.log(length_scale)
    return jnp.where(positive, logp, -jnp.inf)


def log_prior_generalized_gamma(d, length_scale, alpha, beta):
    """Generalized gamma distance prior (Bailer-Jones et al. 2021; FLOWER Eq. 13).

    ``P(d) = alpha / (L^(beta+1) Gamma((beta+1)/alpha)) d^beta exp(-(d/L)^alpha)`` for ``d > 0``.

    Parameters
    ----------
    d : array_like
        Distance (pc).
    length_scale, alpha, beta : float or array_like
        ``L > 0`` (pc), ``alpha > 0``, ``beta > -1``; broadcast against ``d`` (per star or per HEALPix pixel).

    Returns
    -------
    Array
        Normalised log-density; ``-inf`` for ``d <= 0``.
    """
    d = jnp.asarray(d)
    length_scale, alpha, beta = (jnp.asarray(p) for p in (length_scale, alpha, beta))
    positive, d_safe = _safe_positive(d)
    log_norm = jnp.log(alpha) - (beta + 1.0) * jnp.log(length_scale) - gammaln((beta + 1.0) / alpha)
    logp = log_norm + beta * jnp.log(d_safe) - (d_safe / length_scale) ** alpha
    return jnp.where(positive, logp, -jnp.inf)


@jax.jit
def _geometric_summary(parallax, parallax_error, zero_point, length_scale, alpha, beta, ln_grid):
    def one(plx, err, zp, L, a, b):
        d = jnp.exp(ln_grid)
        log_post = (
            parallax_log_likelihood(plx, err, d, zp) + log_prior_generalized_gamma(d, L, a, b) + ln_grid
        )  # + ln d: the Jacobian of the ln d grid
        g = grid_posterior_1d(ln_grid, log_post, (0.5,))
        p = jnp.exp(log_post - jnp.max(log_post))
        p = p / jnp.sum(p)
        mean = jnp.sum(p * d)
        return mean, jnp.sqrt(jnp.sum(p * (d - mean) ** 2)), jnp.exp(g.quantiles[0])

    return jax.vmap(one)(parallax, parallax_error, zero_point, length_scale, alpha, beta)


def geometric_distance(
    parallax,
    parallax_error,
    zero_point=0.0,
    prior=(1300.0, 1.5, 0.8),
    *,
    d_range=(1.0, 1.0e5),
    n_grid: int = 1024,
    chunk: int = 65536,
):
    """Bailer-Jones-style "geometric" distance: the parallax likelihood times the generalized gamma prior.

    ``p(d | ϖ̂) ∝ N(ϖ̂ | 1000/d + zp, σ_ϖ²) P_GGD(d | L, α, β)`` tabulated on ``n_grid`` log-spaced distances in
    ``d_range``; its mean, standard deviation and median.  This is the kind of estimate FLOWER centres its
    training proposal ``q(d)`` on (paper 002, Appendix A, with the Bailer-Jones et al. 2021 catalogue); unlike
    ``1000/ϖ`` it is finite and sensible for any parallax, negative ones included.

    Parameters
    ----------
    parallax, parallax_error : array_like (n,)
        Catalogue parallax and error (mas); errors must be positive.
    zero_point : float or array_like (n,)
        ``zp`` in the catalogue-bias convention of :mod:`jaxstars.astro.astrometry`.
    prior : (L, alpha, beta)
        Generalized-gamma parameters, each a scalar or ``(n,)`` (default FLOWER's 1300 pc, 1.5, 0.8).
    d_range : (float, float)
        Grid bounds (pc).
    n_grid : int
        Grid size.
    chunk : int
        Stars per compiled call.

    Returns
    -------
    mean, std, median : ndarray (n,)
        In pc; NaN where the inputs are not finite or the error is not positive.
    """
    plx = np.atleast_1d(np.asarray(parallax, np.float64))
    n = plx.shape[0]
    cols = [np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in (parallax_error, zero_point, *prior)]
    err = cols[0]
    ok = np.isfinite(plx) & np.isfinite(err) & (err > 0) & np.all([np.isfinite(c) for c in cols[1:]], axis=0)
    fill = [np.where(ok, c, f) for c, f in zip([plx, *cols], (0.0, 1.0, 0.0, 1300.0, 1.5, 0.8))]
    ln_grid = jnp.linspace(np.log(d_range[0]), np.log(d_range[1]), n_grid)
    out = np.full((3, n), np.nan)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        idx = np.minimum(np.arange(start, start + chunk), n - 1) if n > chunk else np.arange(start, stop)
        res = _geometric_summary(*(jnp.asarray(c[idx], jnp.float32) for c in fill), ln_grid)
        out[:, start:stop] = np.asarray(res, np.float64)[:, : stop - start]
    out[:, ~ok] = np.nan
    return out[0], out[1], out[2]


class FlatDistancePrior(Distribution):
    """Flat distance prior as a NumPyro distribution (see :func:`log_prior_flat`).

    With ``d_max`` it is the uniform distribution on ``(0, d_max]`` (support ``interval(0, d_max)``) and can be
    sampled.  Without it the prior is improper (support ``positive``): it can be used as a NUTS site (the
    initial value then comes from the init strategy, e.g. ``init_to_value``/``init_to_uniform``) but ``sample``
    raises ``ValueError``.
    """

    arg_constraints: ClassVar[dict] = {"d_max": constraints.positive}
    reparametrized_params: ClassVar[list] = ["d_max"]
    pytree_data_fields = ("d_max",)

    def __init__(self, d_max=None, *, validate_args=None):
        self.d_max = None if d_max is None else jnp.asarray(d_max)
        if d_max is None:
            self.arg_constraints = {}  # nothing to validate for the improper prior
        batch_shape = () if d_max is None else jnp.shape(self.d_max)
        super().__init__(batch_shape=batch_shape, event_shape=(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        if self.d_max is None:
            return constraints.positive
        return constraints.interval(0.0, self.d_max)

    def sample(self, key, sample_shape=()):
        if self.d_max is None:
            raise ValueError(
                "the flat distance prior without d_max is improper and cannot be sampled; give d_max or use an "
                "init strategy (numpyro.infer.init_to_value) for NUTS"
            )
        shape = tuple(sample_shape) + self.batch_shape
        u = jax.random.uniform(key, shape, minval=jnp.finfo(jnp.result_type(float)).tiny, maxval=1.0)
        return u * self.d_max

    def log_prob(self, value):
        return log_prior_flat(value, self.d_max)

    @property
    def mean(self):
        if self.d_max is None:
            return jnp.inf
        return self.d_max / 2.0

    @property
    def variance(self):
        if self.d_max is None:
            return jnp.inf
        return self.d_max**2 / 12.0


class GeneralizedGammaPrior(Distribution):
    """Generalized gamma distance prior (Bailer-Jones et al. 2021; FLOWER Eq. 13) as a NumPyro distribution.

    Parameters
    ----------
    length_scale, alpha, beta : float or array_like
        ``L`` (pc), ``alpha``, ``beta``; broadcast to the batch shape (one value per star or per pixel).

    Notes
    -----
    Sampling uses ``(d / L)^alpha ~ Gamma((beta + 1) / alpha, 1)``, i.e. ``d = L g^(1/alpha)``; it is
    reparametrised (``jax.random.gamma`` has implicit gradients).  Moments:
    ``E[d^n] = L^n Gamma((beta + 1 + n)/alpha) / Gamma((beta + 1)/alpha)``.
    """

    arg_constraints: ClassVar[dict] = {
        "length_scale": constraints.positive,
        "alpha": constraints.positive,
        "beta": constraints.greater_than(-1.0),
    }
    support = constraints.positive
    reparametrized_params: ClassVar[list] = ["length_scale", "alpha", "beta"]
    pytree_data_fields = ("length_scale", "alpha", "beta")

    def __init__(self, length_scale, alpha, beta, *, validate_args=None):
        # Strongly typed float arrays: one compilation of the gamma sampler whatever the caller passes.
        dtype = jnp.result_type(float)
        length_scale, alpha, beta = (jnp.asarray(p, dtype=dtype) for p in (length_scale, alpha, beta))
        self.length_scale, self.alpha, self.beta = promote_shapes(length_scale, alpha, beta)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(length_scale), jnp.shape(alpha), jnp.shape(beta))
        super().__init__(batch_shape=batch_shape, event_shape=(), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + self.batch_shape
        shape_k = jnp.broadcast_to((self.beta + 1.0) / self.alpha, shape)
        # Drawn flat and reshaped: the (slow to compile) gamma sampler is cached by total size only.
        g = jax.random.gamma(key, shape_k.ravel()).reshape(shape)
        # A gamma draw can underflow to 0 in float32 for tiny shapes; keep d strictly inside the support.
        g = jnp.maximum(g, jnp.finfo(g.dtype).tiny)
        return self.length_scale * g ** (1.0 / self.alpha)

    def log_prob(self, value):
        return log_prior_generalized_gamma(value, self.length_scale, self.alpha, self.beta)

    def _moment(self, n):
        k = (self.beta + 1.0) / self.alpha
        return self.length_scale**n * jnp.exp(gammaln(k + n / self.alpha) - gammaln(k))

    @property
    def mean(self):
        return jnp.broadcast_to(self._moment(1), self.batch_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(self._moment(2) - self._moment(1) ** 2, self.batch_shape)

    @property
    def mode(self):
        """``L (beta / alpha)^(1/alpha)`` for ``beta > 0`` (0 otherwise)."""
        m = self.length_scale * jnp.clip(self.beta / self.alpha, 0.0, None) ** (1.0 / self.alpha)
        return jnp.broadcast_to(m, self.batch_shape)


class EDSDPrior(GeneralizedGammaPrior):
    """Exponentially decreasing space density prior ``d^2 exp(-d/L) / (2 L^3)`` as a NumPyro distribution.

    The generalized gamma prior with ``alpha = 1``, ``beta = 2``: samples are ``L * Gamma(3, 1)``; mode ``2 L``,
    mean ``3 L``, variance ``3 L^2``.
    """

    arg_constraints: ClassVar[dict] = {"length_scale": constraints.positive}
    reparametrized_params: ClassVar[list] = ["length_scale"]

    def __init__(self, length_scale, *, validate_args=None):
        super().__init__(length_scale, 1.0, 2.0, validate_args=validate_args)

    def log_prob(self, value):
        return log_prior_edsd(value, self.length_scale)


GAIA_SOURCE_ID_LEVEL12_DIVISOR = 2**35
"""Gaia ``source_id // 2**35`` is the HEALPix level-12 (nside 4096) NESTED pixel of the source (Gaia DR2/EDR3/DR3
data model, ``source_id`` description)."""


def healpix_pixel_from_source_id(source_id, level: int = 5) -> np.ndarray:
    """HEALPix NESTED pixel index at ``level`` (nside ``2**level``) of Gaia sources, from their ``source_id``.

    Level-12 pixel = ``source_id // 2**35``; a coarser NESTED level drops two bits per level.
    """
    if not 0 <= level <= 12:
        raise ValueError(f"HEALPix level must be in 0..12, got {level}")
    ids = np.asarray(source_id, dtype=np.int64)
    if np.any(ids < 0):
        raise ValueError("Gaia source_id values must be non-negative")
    return (ids // GAIA_SOURCE_ID_LEVEL12_DIVISOR) // (4 ** (12 - level))


def generalized_gamma_parameters_per_pixel(source_id, pixel_table: dict, level: int = 5) -> dict:
    """Per-star generalized-gamma prior parameters looked up from a per-HEALPix-pixel table.

    Bailer-Jones et al. (2021) give the "geometric" prior's ``(alpha, beta, L)`` per level-5 HEALPix pixel.
    ``pixel_table`` maps ``"alpha"``, ``"beta"``, ``"length_scale"`` to arrays of length ``12 * 4**level``
    indexed by NESTED pixel.  Returns the per-star arrays, ready for :func:`log_prior_generalized_gamma` or
    :class:`GeneralizedGammaPrior`.
    """
    pixels = healpix_pixel_from_source_id(source_id, level)
    n_pix = 12 * 4**level
    out = {}
    for name in ("alpha", "beta", "length_scale"):
        if name not in pixel_table:
            raise KeyError(f"pixel_table needs a {name!r} array of length {n_pix}")
        values = np.asarray(pixel_table[name], dtype=float)
        if values.shape != (n_pix,):
            raise ValueError(
                f"pixel_table[{name!r}] has shape {values.shape}, expected ({n_pix},) for level {level}"
            )
        out[name] = values[pixels]
    return out
