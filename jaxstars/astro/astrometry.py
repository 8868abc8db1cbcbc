"""Gaia parallaxes: zero-points, the Gaussian parallax likelihood, and Cranmer's truncated-normal samples.

Sign convention (used everywhere in jaxstars)
---------------------------------------------
The parallax zero-point ``zp`` (mas) is the *bias of the catalogue parallax*, as defined by Lindegren et al.
(2018, 2021) and returned by the ``gaiadr3-zeropoint`` package::

    parallax_catalogue = parallax_true + zp        so        parallax_true = parallax_catalogue - zp

Gaia parallaxes are too small, so ``zp`` is negative.  The papers quote the *correction added* to the catalogue
parallax, ``-zp``:

* Cranmer et al. §2: "a single global parallax offset of 0.029 mas from Lindegren et al. (2018)", i.e. the DR2
  quasar zero-point ``zp = -0.029 mas`` (:data:`ZP_DR2_LINDEGREN2018`);
* Hogg, Eilers & Rix §4: "to each Gaia parallax measurement we add a positive offset ϖ_0 ... we adopt
  ϖ_0 = 0.048 mas", i.e. ``zp = -0.048 mas`` (:data:`ZP_HOGG2019`); the authors' code uses 0.0483 mas
  (:data:`ZP_HOGG2019_CODE`, see ``IMPLEMENTATION_NOTES.md``);
* FLOWER (O'Callaghan et al.) §3.1 applies the Lindegren et al. (2021) recipe to DR3
  (:func:`lindegren2021_zero_point`).  Their Eq. 6 writes the likelihood mean as ``1000/d - ω_zp``: with the
  convention here that is ``ω_zp = -zp``, a positive number for the usual (negative) Lindegren zero-point.

The likelihood below is therefore ``N(parallax_obs | 1000 / d_pc + zp, σ_ϖ)``: pass ``zp`` (negative), never
the correction.  Negative observed parallaxes are valid data and enter the likelihood unchanged.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

__all__ = [
    "GLOBAL_ZERO_POINTS",
    "ZPT_COLOUR_OUT_OF_RANGE",
    "ZPT_G_OUT_OF_RANGE",
    "ZPT_NONFINITE_INPUT",
    "ZPT_NO_5P_6P_SOLUTION",
    "ZPT_OK",
    "ZP_DR2_LINDEGREN2018",
    "ZP_EDR3_QSO_LINDEGREN2021",
    "ZP_HOGG2019",
    "ZP_HOGG2019_CODE",
    "correct_parallax",
    "lindegren2021_zero_point",
    "parallax_log_likelihood",
    "sample_truncated_parallax",
]

#: Gaia DR2 global zero-point from quasars (Lindegren et al. 2018, A&A 616, A2), as used by Cranmer et al.
ZP_DR2_LINDEGREN2018 = -0.029
#: Zero-point adopted by Hogg, Eilers & Rix (2019) §4 (offset ϖ_0 = 0.048 mas added to DR2 parallaxes).
ZP_HOGG2019 = -0.048
#: The value in Hogg, Eilers & Rix's public code (offset +0.0483 mas; IMPLEMENTATION_NOTES.md).
ZP_HOGG2019_CODE = -0.0483
#: Median quasar parallax in Gaia EDR3 (Lindegren et al. 2021, A&A 649, A2): a global fallback for (E)DR3.
ZP_EDR3_QSO_LINDEGREN2021 = -0.017

#: Named global zero-points (mas, catalogue-bias convention ``parallax_true = parallax_obs - zp``).
GLOBAL_ZERO_POINTS = {
    "lindegren2018_dr2": ZP_DR2_LINDEGREN2018,
    "hogg2019": ZP_HOGG2019,
    "hogg2019_code": ZP_HOGG2019_CODE,
    "lindegren2021_edr3_qso": ZP_EDR3_QSO_LINDEGREN2021,
    "none": 0.0,
}

# Per-row flags of lindegren2021_zero_point (bit mask; 0 = inside the recipe's validity range).
#: Inside the validity range of the Lindegren et al. (2021) recipe.
ZPT_OK = 0
#: G outside 6 < G < 21: the table is not extrapolated, the value at the nearest edge is returned.
ZPT_G_OUT_OF_RANGE = 1
#: 5-p solution with nu_eff outside 1.1 < ν_eff < 1.9 (μm⁻¹) or 6-p solution with pseudocolour outside
#: 1.24 < pc < 1.72: the colour basis functions saturate, the value can be "seriously wrong" (package docs).
ZPT_COLOUR_OUT_OF_RANGE = 2
#: astrometric_params_solved is neither 31 (5-p) nor 95 (6-p), e.g. a 2-p solution without parallax: NaN.
ZPT_NO_5P_6P_SOLUTION = 4
#: A needed input (G, ecl_lat, nu_eff for 5-p or pseudocolour for 6-p) is NaN / masked: NaN.
ZPT_NONFINITE_INPUT = 8

_ZPT_G_RANGE = (6.0, 21.0)
_ZPT_NU_EFF_RANGE = (1.1, 1.9)
_ZPT_PSEUDOCOLOUR_RANGE = (1.24, 1.72)


def correct_parallax(parallax, zero_point):
    """Zero-point-corrected parallax ``parallax - zero_point`` (mas; catalogue-bias sign convention)."""
    return jnp.asarray(parallax) - jnp.asarray(zero_point)


def parallax_log_likelihood(parallax_obs, parallax_error, distance_pc, zero_point=0.0):
    """Gaussian Gaia parallax log-likelihood, ``log N(ϖ_obs | 1000 / d + zp, σ_ϖ)`` (FLOWER Eq. 6).

    Parameters
    ----------
    parallax_obs : array_like
        Catalogue parallax (mas); negative values are valid measurements.
    parallax_error : array_like
        Parallax uncertainty σ_ϖ (mas); must be finite and positive (validate at the catalogue edge: the result
        is NaN otherwise).
    distance_pc : array_like
        Distance (pc).
    zero_point : float or array_like
        Catalogue zero-point ``zp`` (mas; negative for Gaia, see the module docstring for the sign), a global
        constant such as :data:`ZP_DR2_LINDEGREN2018` or per-star values from :func:`lindegren2021_zero_point`.

    Returns
    -------
    Array
        Normalised log-likelihood, broadcast over the inputs; ``-inf`` for ``d <= 0`` (with zero gradient).
    """
    d = jnp.asarray(distance_pc)
    positive = d > 0
    d_safe = jnp.where(positive, d, jnp.ones_like(d))
    model = 1000.0 / d_safe + zero_point
    sigma = jnp.asarray(parallax_error)
    resid = (jnp.asarray(parallax_obs) - model) / sigma
    logl = -0.5 * resid**2 - jnp.log(sigma) - 0.5 * jnp.log(2.0 * jnp.pi)
    return jnp.where(positive, logl, -jnp.inf)


def sample_truncated_parallax(key, parallax_obs, parallax_error, num_samples=32, zero_point=0.0):
    """Parallax samples from the positive-truncated normal of Cranmer et al. Eq. 1.

    ``P(ϖ) ∝ exp(-(ϖ - ϖ_obs)^2 / (2σ^2))`` for ``ϖ > 0`` and ``0`` otherwise, with ``ϖ_obs`` the (zero-point
    corrected) catalogue parallax and ``σ`` its uncertainty.  Cranmer et al. draw 32 such samples per star during
    training; the truncation is the minimal prior "distances are positive" applied to the Gaussian parallax
    likelihood (Hogg 2018), so negative catalogue parallaxes still give valid (small, positive) samples.

    Parameters
    ----------
    key : jax.random.PRNGKey
        Explicit random key; identical keys give identical samples.
    parallax_obs, parallax_error : array_like
        Catalogue parallax and uncertainty (mas), broadcast together; ``parallax_error > 0``.
    num_samples : int
        Samples per star (Cranmer et al.: 32).
    zero_point : float or array_like
        Catalogue zero-point ``zp`` (mas); the Gaussian is centred on ``parallax_obs - zp``.  Cranmer et al.
        used :data:`ZP_DR2_LINDEGREN2018`.

    Returns
    -------
    Array
        Shape ``(num_samples,) + broadcast_shape``, strictly positive (mas).

    Notes
    -----
    Inverse-CDF sampling of the standard normal truncated to ``z > a``, ``a = -μ/σ``:
    ``z = -Φ^{-1}(u Φ(-a))`` with ``u ~ U(0, 1]``, which stays accurate in float32 deep in the tail
    (``Φ(-a)`` is small but representable) up to ``a = 10``.  Beyond that (parallax more than 10σ negative) the
    tail is sampled as ``z = a + E / a``, ``E ~ Exp(1)``, the leading term of the Mills-ratio expansion (relative
    error of the excess ``z - a`` is O(1/a²) < 1%).
    """
    mu = jnp.asarray(parallax_obs) - jnp.asarray(zero_point)
    sigma = jnp.asarray(parallax_error)
    mu, sigma = jnp.broadcast_arrays(mu, sigma)
    a = -mu / sigma
    shape = (num_samples,) + mu.shape
    dtype = jnp.result_type(mu.dtype, float)
    tiny = jnp.finfo(dtype).tiny
    key_u, key_e = jax.random.split(key)
    u = jax.random.uniform(key_u, shape, dtype=dtype, minval=tiny, maxval=1.0)
    tail_threshold = 10.0
    a_inv = jnp.where(a < tail_threshold, a, 0.0)  # keep the inverse-CDF branch finite where it is not used
    # Clamp the tail probability away from 0 so an unlucky u cannot give z = inf.
    z_inverse = -ndtri(jnp.maximum(u * ndtr(-a_inv), tiny))
    a_tail = jnp.where(a >= tail_threshold, a, tail_threshold)
    # In the tail, ϖ = μ + σz = σ(z - a) = σE/a: computed directly, without the cancellation of μ + σz.
    x_tail = sigma * jax.random.exponential(key_e, shape, dtype=dtype) / a_tail
    x = jnp.where(a < tail_threshold, mu + sigma * z_inverse, x_tail)
    return jnp.maximum(x, tiny)  # rounding must not leave the support ϖ > 0


def _zero_point_module():
    try:
        from zero_point import zpt
    except ImportError as err:  # pragma: no cover - exercised only without the dependency
        raise ImportError(
            "the Lindegren et al. (2021) zero-point needs the 'gaiadr3-zeropoint' package: "
            "pip install gaiadr3-zeropoint"
        ) from err
    if getattr(zpt, "g_5", None) is None:
        zpt.load_tables()
    return zpt


def _as_float(x) -> np.ndarray:
    """Float64 numpy array with masked entries (astropy MaskedColumn / numpy masked array) as NaN."""
    if isinstance(x, np.ma.MaskedArray) or hasattr(x, "mask"):
        return np.ma.filled(np.ma.asarray(x).astype(float), np.nan)
    return np.asarray(x, dtype=float)


def lindegren2021_zero_point(
    phot_g_mean_mag, nu_eff_used_in_astrometry, pseudocolour, ecl_lat, astrometric_params_solved
):
    """Gaia (E)DR3 parallax zero-point of Lindegren et al. (2021, A&A 649, A4), per source, with flags.

    Wraps ``zero_point.zpt.get_zpt`` (PyPI ``gaiadr3-zeropoint``) at the catalogue edge (numpy in, numpy out).
    The package's validity-range *warnings* are turned into a per-row bit flag: rows outside the range still
    get the package's (edge-clamped) value, flagged; rows that cannot be computed get NaN, flagged.

    Parameters
    ----------
    phot_g_mean_mag : array_like
        G (mag).
    nu_eff_used_in_astrometry : array_like
        Effective wavenumber (μm⁻¹) used for 5-parameter solutions (may be NaN/masked for 6-p sources).
    pseudocolour : array_like
        Astrometric pseudocolour (μm⁻¹) of 6-parameter solutions (may be NaN/masked for 5-p sources).
    ecl_lat : array_like
        Ecliptic latitude (deg).
    astrometric_params_solved : array_like
        31 (5-p), 95 (6-p) or 3 (2-p, no parallax).

    Returns
    -------
    zero_point : numpy.ndarray
        ``zp`` in mas (float64), to be *subtracted* from the catalogue parallax (``parallax - zp``); NaN where
        not computable.
    flag : numpy.ndarray
        ``int`` bit mask per row: :data:`ZPT_OK` (0), :data:`ZPT_G_OUT_OF_RANGE`,
        :data:`ZPT_COLOUR_OUT_OF_RANGE`, :data:`ZPT_NO_5P_6P_SOLUTION`, :data:`ZPT_NONFINITE_INPUT`.
    """
    g = _as_float(phot_g_mean_mag)
    nu = _as_float(nu_eff_used_in_astrometry)
    pc = _as_float(pseudocolour)
    beta = _as_float(ecl_lat)
    solved = _as_float(astrometric_params_solved)
    g, nu, pc, beta, solved = np.broadcast_arrays(g, nu, pc, beta, solved)
    shape = g.shape
    g, nu, pc, beta, solved = (np.ravel(x) for x in (g, nu, pc, beta, solved))

    five = solved == 31
    six = solved == 95
    flag = np.zeros(g.shape, dtype=np.int64)
    flag[~(five | six)] |= ZPT_NO_5P_6P_SOLUTION
    colour = np.where(five, nu, pc)
    finite = np.isfinite(g) & np.isfinite(beta) & np.isfinite(colour)
    flag[(five | six) & ~finite] |= ZPT_NONFINITE_INPUT
    with np.errstate(invalid="ignore"):
        flag[finite & ((g <= _ZPT_G_RANGE[0]) | (g >= _ZPT_G_RANGE[1]))] |= ZPT_G_OUT_OF_RANGE
        bad_nu = five & ((nu <= _ZPT_NU_EFF_RANGE[0]) | (nu >= _ZPT_NU_EFF_RANGE[1]))
        bad_pc = six & ((pc <= _ZPT_PSEUDOCOLOUR_RANGE[0]) | (pc >= _ZPT_PSEUDOCOLOUR_RANGE[1]))
    flag[finite & (bad_nu | bad_pc)] |= ZPT_COLOUR_OUT_OF_RANGE

    zp = np.full(g.shape, np.nan)
    ok = (five | six) & finite
    if ok.any():
        zpt = _zero_point_module()
        with warnings.catch_warnings():
            # The range warnings are reported per row through ``flag`` instead.
            warnings.simplefilter("ignore", UserWarning)
            zp[ok] = zpt.get_zpt(
                g[ok], np.where(five, nu, 0.0)[ok], np.where(six, pc, 0.0)[ok], beta[ok], solved[ok].astype(int)
            )
    return zp.reshape(shape), flag.reshape(shape)
