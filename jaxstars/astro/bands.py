"""Photometric bands, the magnitude ↔ "one magnitude + colours" transform, and distance moduli.

Band registry
    Each passband is a small frozen :class:`Band` (survey, magnitude system, transmission-weighted mean
    wavelength and RMS width, bright/faint limits where the papers give them). Names are case-sensitive
    (``"G"`` is Gaia, ``"g"`` is Pan-STARRS1): ``G``/``BP``/``RP`` are the Gaia (E)DR3 passbands (EDR3 and DR3
    share their photometry; ``G_DR3``/``G_EDR3`` are accepted aliases), ``G_DR2``/``BP_DR2``/``RP_DR2`` the Gaia
    DR2 ones, ``g r i z y`` Pan-STARRS1, ``J H Ks`` 2MASS and ``W1 W2`` WISE (the same passbands serve the
    AllWISE and unWISE catalogues).

Colour transform (Green et al. Eq. 5; FLOWER Eq. 4)
    Green's ``B`` and FLOWER's ``Λ`` are the same square matrix: the first row selects the reference band and
    row ``i`` gives ``band_i − reference`` (FLOWER's example: ``(M_G, M_Ks) → (M_G, M_Ks − M_G)``; Green:
    ``c_i = m_i − m_0``). :func:`colour_matrix` builds it for any band list and reference band;
    :func:`to_colours`, :func:`to_magnitudes`, :func:`colour_covariance` and :func:`magnitude_covariance` apply it
    (and its inverse) to vectors and covariances, ``C_c = B C_m Bᵀ`` (Green Eq. 6).

Missing bands
    Missing photometry is NaN. A colour involving a missing band is missing (NaN; ``False`` in
    :func:`colour_mask`); the other entries are unaffected. If the *reference* band is missing every entry is
    missing, which is why Green (§3.2) and FLOWER (§3.1) take Gaia G, present for every star, as reference.
    Covariance entries in the row or column of a missing colour are NaN.

Distance modulus
    ``μ = 5 log10(d / 10 pc)``; with ``d = 1000 pc / (ϖ / mas)`` this is ``μ = 10 − 5 log10(ϖ / mas)`` (the naive
    conversion of Green et al. Eq. A17). Non-positive distances or parallaxes give NaN (never a silent number).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BANDS",
    "CRANMER_BANDS",
    "FLOWER_BANDS",
    "FLOWER_BANDS_2MASS",
    "GREEN_BANDS",
    "Band",
    "absolute_magnitude",
    "apparent_magnitude",
    "colour_covariance",
    "colour_mask",
    "colour_matrix",
    "distance_from_modulus",
    "distance_modulus",
    "distance_modulus_from_parallax",
    "get_band",
    "magnitude_covariance",
    "to_colours",
    "to_magnitudes",
]

MagnitudeSystem = Literal["Vega", "AB"]


@dataclass(frozen=True)
class Band:
    """One photometric passband.

    Attributes
    ----------
    name : str
        Registry key (case-sensitive).
    survey : str
        Survey / data release the magnitudes come from.
    system : {"Vega", "AB"}
        Magnitude system of the survey's catalogue magnitudes.
    wavelength_nm : float
        Transmission-weighted mean wavelength ``∫λT dλ / ∫T dλ`` [nm].
    width_nm : float
        Transmission-weighted RMS width of the passband [nm] (with ``wavelength_nm`` this is the Gaussian
        approximation of Green et al. Appendix B: 640 nm and 144 nm for Gaia DR2 G).
    bright_limit, faint_limit : float or None
        Saturation and limiting apparent magnitudes where the papers quote them, else ``None``.
    limits_source : str or None
        Where the limits come from.
    vega_to_ab : float or None
        Offset to add to the catalogue (Vega) magnitude to obtain AB, where a paper gives it.
    notes : str
        Provenance of the wavelength/width and any approximation.
    """

    name: str
    survey: str
    system: MagnitudeSystem
    wavelength_nm: float
    width_nm: float
    bright_limit: float | None = None
    faint_limit: float | None = None
    limits_source: str | None = None
    vega_to_ab: float | None = None
    notes: str = ""


# Wavelength moments below were computed from the tabulated transmission curves shipped in the `pyphot` package
# library: Gaia DR2 revised passbands of Maíz Apellániz & Weiler (2018) (BP: faint regime), PS1 of Tonry et al.
# (2012), 2MASS of Cohen et al. (2003), WISE of Wright et al. (2010) -- the curves Green et al. (Fig. 4) use.
_MAW = "moments of the Maíz Apellániz & Weiler (2018) revised DR2 curve"
_MAW_DR3 = (
    _MAW + "; the (E)DR3 curve of Riello et al. (2021) is not available offline and differs by a few nm, so the "
    "DR2 moments are used as an approximation"
)
_FLOWER_GAIA = "FLOWER (O'Callaghan et al.) §3.1: saturation m_G ≈ 5, limiting m_G ≈ 21"
_FLOWER_PS1 = (
    "FLOWER §3.2: saturation g,r,i ≈ 13.5, z ≈ 13.0, y ≈ 12; 5σ stacked 3π limits 23.3/23.2/23.1/22.3/21.4"
)
_GREEN_2MASS = "Green et al. §3.2: 10σ point-source depth J ≈ 15.8, H ≈ 15.1, Ks ≈ 14.3 (FLOWER §3.3: Ks ≈ 14.3)"
_GREEN_WISE = "Vega→AB offsets from Green et al. §3.2 (after Schlafly et al. 2019)"

_BAND_LIST = (
    Band("G_DR2", "Gaia DR2", "Vega", 639.7, 144.3, notes=_MAW),
    Band("BP_DR2", "Gaia DR2", "Vega", 511.8, 88.2, notes=_MAW + " (faint regime)"),
    Band("RP_DR2", "Gaia DR2", "Vega", 783.0, 93.9, notes=_MAW),
    Band("G", "Gaia (E)DR3", "Vega", 639.7, 144.3, 5.0, 21.0, _FLOWER_GAIA, notes=_MAW_DR3),
    Band("BP", "Gaia (E)DR3", "Vega", 511.8, 88.2, notes=_MAW_DR3),
    Band("RP", "Gaia (E)DR3", "Vega", 783.0, 93.9, notes=_MAW_DR3),
    Band("g", "Pan-STARRS1", "AB", 486.6, 40.5, 13.5, 23.3, _FLOWER_PS1, notes="Tonry et al. (2012) curve"),
    Band("r", "Pan-STARRS1", "AB", 621.5, 40.7, 13.5, 23.2, _FLOWER_PS1, notes="Tonry et al. (2012) curve"),
    Band("i", "Pan-STARRS1", "AB", 754.5, 38.1, 13.5, 23.1, _FLOWER_PS1, notes="Tonry et al. (2012) curve"),
    Band("z", "Pan-STARRS1", "AB", 867.9, 30.4, 13.0, 22.3, _FLOWER_PS1, notes="Tonry et al. (2012) curve"),
    Band("y", "Pan-STARRS1", "AB", 963.3, 33.0, 12.0, 21.4, _FLOWER_PS1, notes="Tonry et al. (2012) curve"),
    Band("J", "2MASS", "Vega", 1240.8, 65.6, None, 15.8, _GREEN_2MASS, notes="Cohen et al. (2003) curve"),
    Band("H", "2MASS", "Vega", 1651.4, 78.4, None, 15.1, _GREEN_2MASS, notes="Cohen et al. (2003) curve"),
    Band("Ks", "2MASS", "Vega", 2165.6, 87.2, None, 14.3, _GREEN_2MASS, notes="Cohen et al. (2003) curve"),
    Band(
        "W1", "WISE/unWISE", "Vega", 3379.2, 266.8, vega_to_ab=2.699, notes="Wright et al. (2010); " + _GREEN_WISE
    ),
    Band(
        "W2", "WISE/unWISE", "Vega", 4629.3, 324.3, vega_to_ab=3.339, notes="Wright et al. (2010); " + _GREEN_WISE
    ),
)

BANDS: Mapping[str, Band] = MappingProxyType({b.name: b for b in _BAND_LIST})
"""The band registry, keyed by canonical name (read-only)."""

_ALIASES = MappingProxyType(
    {
        **{f"{b}_{r}": b for b in ("G", "BP", "RP") for r in ("DR3", "EDR3")},
        "K": "Ks",
        "K_s": "Ks",
    }
)

GREEN_BANDS: tuple[str, ...] = (
    "G_DR2", "BP_DR2", "RP_DR2", "g", "r", "i", "z", "y", "J", "H", "Ks", "W1", "W2",
)  # fmt: skip
"""Green et al. §3.2: the 13 bands in their canonical order (Gaia DR2, PS1, 2MASS, unWISE); G is the reference."""

FLOWER_BANDS: tuple[str, ...] = ("G", "BP", "RP", "g", "r", "i", "z", "y")
"""FLOWER (O'Callaghan et al.) §3: Gaia DR3 + PS1, modelled as M_G and 7 colours relative to G."""

FLOWER_BANDS_2MASS: tuple[str, ...] = FLOWER_BANDS + ("J", "H", "Ks")
"""FLOWER's Gaia DR3 + PS1 + 2MASS configuration (M_G and 10 colours)."""

CRANMER_BANDS: tuple[str, ...] = ("G_DR2", "BP_DR2", "RP_DR2")
"""Cranmer et al.: the three Gaia DR2 bands behind their (G, BP−RP, BP−G) vector."""


def _canonical(name: str) -> str:
    if name in BANDS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise KeyError(
        f"unknown band {name!r}; known bands: {', '.join(BANDS)} (aliases: {', '.join(_ALIASES)}; names are "
        "case-sensitive: 'G' is Gaia, 'g' is Pan-STARRS1)"
    )


def get_band(name: str) -> Band:
    """Look a band up by name (or alias).

    Raises
    ------
    KeyError
        For an unknown name; the message lists every known band.
    """
    return BANDS[_canonical(name)]


# --------------------------------------------------------------------------------------------------------------
# Magnitudes <-> one magnitude + colours
# --------------------------------------------------------------------------------------------------------------


def colour_matrix(bands: Sequence[str], reference: str | None = None) -> np.ndarray:
    """The square matrix taking magnitudes to (reference magnitude, colours): Green Eq. 5's ``B``, FLOWER Eq. 4's ``Λ``.

    Row 0 selects the reference band; the following rows are ``m_j − m_ref`` for every other band ``j`` in the
    order given. With the reference first (the papers' convention) this is exactly Eq. 5 / Eq. 4::

        [[ 1, 0, 0, …],
         [-1, 1, 0, …],
         [-1, 0, 1, …], …]

    Parameters
    ----------
    bands : sequence of str
        Band names (registry names or aliases), the order of the magnitude vector. No duplicates.
    reference : str, optional
        The band whose magnitude is kept; defaults to ``bands[0]``.

    Returns
    -------
    numpy.ndarray
        ``(n, n)`` float matrix (a constant: build it once, outside ``jit``). Its inverse is exact and has
        integer entries; :func:`to_magnitudes` applies it.
    """
    names = [_canonical(b) for b in bands]
    if len(names) == 0:
        raise ValueError("colour_matrix needs at least one band")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate bands in {list(bands)}")
    ref = names[0] if reference is None else _canonical(reference)
    if ref not in names:
        raise ValueError(f"reference band {reference!r} is not one of {list(bands)}")
    k = names.index(ref)
    others = [j for j in range(len(names)) if j != k]
    matrix = np.zeros((len(names), len(names)))
    matrix[0, k] = 1.0
    for row, j in enumerate(others, start=1):
        matrix[row, j] = 1.0
        matrix[row, k] = -1.0
    return matrix


def _inverse(matrix):
    """Exact inverse of a colour matrix: numpy for a concrete matrix, JAX for a traced one."""
    try:
        m = np.asarray(matrix, dtype=float)
    except jax.errors.TracerArrayConversionError:
        return jnp.linalg.inv(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a colour matrix must be square, got shape {m.shape}")
    try:
        return np.linalg.inv(m)
    except np.linalg.LinAlgError as err:
        raise ValueError("the colour matrix is singular") from err


def colour_mask(valid, matrix) -> jnp.ndarray:
    """Which transformed entries are defined, given which inputs are.

    Entry ``i`` of ``matrix @ x`` is defined when every input it uses (non-zero ``matrix[i, j]``) is valid.

    Parameters
    ----------
    valid : array_like of bool, shape (..., n)
        Valid (observed) inputs.
    matrix : array_like, shape (n, n)
        :func:`colour_matrix` (or its inverse).

    Returns
    -------
    jax.Array of bool, shape (..., n)
    """
    uses = (jnp.asarray(matrix) != 0).astype(jnp.float32)
    missing = (~jnp.asarray(valid, dtype=bool)).astype(jnp.float32)
    return (missing @ uses.T) == 0


def _masked_map(x, matrix):
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    matrix = jnp.asarray(matrix, dtype=x.dtype)
    valid = jnp.isfinite(x)
    y = jnp.where(valid, x, 0.0) @ matrix.T
    return jnp.where(colour_mask(valid, matrix), y, jnp.nan)


def to_colours(m, matrix) -> jnp.ndarray:
    """``c = B m`` (Green Eq. 5, FLOWER Eq. 3) with missing bands masked.

    Parameters
    ----------
    m : array_like, shape (..., n)
        Magnitudes in the order used to build ``matrix``; NaN/inf = missing.
    matrix : array_like, shape (n, n)
        From :func:`colour_matrix`.

    Returns
    -------
    jax.Array, shape (..., n)
        Reference magnitude then colours; an entry involving a missing band is NaN (all entries if the reference
        is missing). Pure JAX: jit/vmap/grad-able (gradients are finite for the defined entries).
    """
    return _masked_map(m, matrix)


def to_magnitudes(c, matrix) -> jnp.ndarray:
    """Inverse transform ``m = B⁻¹ c`` (``Λ⁻¹ x`` in FLOWER Eq. 5), missing entries masked as in :func:`to_colours`.

    Parameters
    ----------
    c : array_like, shape (..., n)
        Reference magnitude and colours.
    matrix : array_like, shape (n, n)
        The *forward* matrix from :func:`colour_matrix` (its exact inverse is taken here).
    """
    return _masked_map(c, _inverse(matrix))


def _masked_covariance(cov, matrix, valid):
    cov = jnp.asarray(cov, dtype=jnp.result_type(float))
    matrix = jnp.asarray(matrix, dtype=cov.dtype)
    if valid is None:
        valid = jnp.isfinite(jnp.diagonal(cov, axis1=-2, axis2=-1))
    valid = jnp.asarray(valid, dtype=bool)
    pair = valid[..., :, None] & valid[..., None, :]
    clean = jnp.where(pair, cov, 0.0)
    out = jnp.einsum("ij,...jk,lk->...il", matrix, clean, matrix)
    ok = colour_mask(valid, matrix)
    return jnp.where(ok[..., :, None] & ok[..., None, :], out, jnp.nan)


def colour_covariance(cov_m, matrix, valid=None) -> jnp.ndarray:
    """Propagate a magnitude covariance to colour space, ``C_c = B C_m Bᵀ`` (Green Eq. 6).

    Parameters
    ----------
    cov_m : array_like, shape (..., n, n)
        Magnitude covariance.
    matrix : array_like, shape (n, n)
        From :func:`colour_matrix`.
    valid : array_like of bool, shape (..., n), optional
        Observed bands. Defaults to the bands with a finite variance, so NaN *or infinite* variance (Green §3.2
        marks unobserved bands with infinite uncertainty) means missing.

    Returns
    -------
    jax.Array, shape (..., n, n)
        Rows and columns of colours that involve a missing band are NaN; the rest equals ``B C_m Bᵀ`` computed on
        the observed bands.
    """
    return _masked_covariance(cov_m, matrix, valid)


def magnitude_covariance(cov_c, matrix, valid=None) -> jnp.ndarray:
    """Inverse of :func:`colour_covariance`: ``C_m = B⁻¹ C_c B⁻ᵀ`` with the same missing-entry rules.

    ``matrix`` is the forward matrix from :func:`colour_matrix`.
    """
    return _masked_covariance(cov_c, _inverse(matrix), valid)


# --------------------------------------------------------------------------------------------------------------
# Distance modulus
# --------------------------------------------------------------------------------------------------------------


def _value(x, unit: str):
    """Strip an astropy Quantity (edges accept Quantities; jitted code sees plain arrays)."""
    if hasattr(x, "unit") and hasattr(x, "to_value"):
        return x.to_value(unit)
    return x


def distance_modulus(distance_pc) -> jnp.ndarray:
    """``μ = 5 log10(d / 10 pc)``.

    Parameters
    ----------
    distance_pc : array_like or astropy Quantity
        Distance [pc]. ``d ≤ 0`` or non-finite gives NaN.
    """
    d = jnp.asarray(_value(distance_pc, "pc"))
    ok = jnp.isfinite(d) & (d > 0)
    return jnp.where(ok, 5.0 * jnp.log10(jnp.where(ok, d, 10.0) / 10.0), jnp.nan)


def distance_modulus_from_parallax(parallax_mas) -> jnp.ndarray:
    """Naive distance modulus from parallax, ``μ = 10 − 5 log10(ϖ / mas)`` (Green et al. Eq. A17, leading term).

    Parameters
    ----------
    parallax_mas : array_like or astropy Quantity
        Parallax [mas]. ``ϖ ≤ 0`` or non-finite gives NaN: the naive inversion is undefined there (use a
        distance posterior instead).
    """
    p = jnp.asarray(_value(parallax_mas, "mas"))
    ok = jnp.isfinite(p) & (p > 0)
    return jnp.where(ok, 10.0 - 5.0 * jnp.log10(jnp.where(ok, p, 1.0)), jnp.nan)


def distance_from_modulus(mu) -> jnp.ndarray:
    """Distance [pc] from distance modulus, ``d = 10^(μ/5 + 1)``."""
    return 10.0 ** (jnp.asarray(mu) / 5.0 + 1.0)


def absolute_magnitude(apparent, mu) -> jnp.ndarray:
    """``M = m − μ`` (plain broadcasting: for ``m`` of shape (stars, bands) pass ``mu[:, None]``)."""
    return jnp.asarray(apparent) - jnp.asarray(mu)


def apparent_magnitude(absolute, mu) -> jnp.ndarray:
    """``m = M + μ`` (plain broadcasting, as :func:`absolute_magnitude`)."""
    return jnp.asarray(absolute) + jnp.asarray(mu)
