"""Per-star inputs of the FLOWER posterior (O'Callaghan et al., paper 002, §2.9): arrays read off a canonical catalog.

:func:`prepare_flower_stars` turns a canonical table (:mod:`jaxstars.astro.schema`: ``mag_<band>``,
``mag_err_<band>``, ``parallax``, ``parallax_error``, ``l``, ``b``) into a :class:`FlowerStars` pytree with one row
per input row.  Nothing is dropped and nothing raises on bad values: problems are recorded in a ``flags`` bit field
(:data:`FLAGS`, readable with :func:`flag_names`); rows in :data:`NO_RESULT` get NaN posteriors.

Conventions
-----------
* A band is *observed* when its magnitude and its uncertainty are finite and the uncertainty is positive; other
  bands are missing (``mag`` NaN, ``observed`` False) and are dropped exactly from the photometric likelihood
  (their colour is marginalised over the flow).  A finite magnitude with a bad uncertainty is also flagged
  (``bad_mag_error``).
* The leading band (``features.bands[0]``, Gaia G) anchors ``x_0 = M_G``: without it there is no result
  (``missing_leading_band``); fewer than two observed bands leave no colour, hence no reddening information
  (``too_few_bands``, no result).
* Magnitude uncertainties are used as published.  The paper (§2.2, Table 1) uses the catalogue errors with no
  floor (median G error 0.6 mmag); ``mag_err_floor`` adds one in quadrature if wanted (default 0).
* Parallaxes are used as published, negative values included (valid measurements, §2.2 Eq. 6); the zero-point
  follows :mod:`jaxstars.astro.astrometry` (``parallax_obs = 1000/d + zp``, ``zp`` negative for Gaia).  A missing
  parallax or a bad parallax error gives a photometry-only posterior (``no_parallax``), not a failure.
* ``l``/``b`` are needed for ``(R, Z)`` (Eqs. 1–2); without them there is no result (``no_position``).
* The distance prior is the generalized gamma of Eq. 13 with per-star ``(L, α, β)`` (columns ``ggd_length``,
  ``ggd_alpha``, ``ggd_beta`` if the table has them, else the constants given; default the values the training
  loss uses, L = 1300 pc, α = 1.5, β = 0.8, see :mod:`jaxstars.astro.priors`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

__all__ = ["FLAGS", "NO_RESULT", "FlowerStars", "flag_names", "prepare_flower_stars"]

#: Bits of the per-star ``flags`` column (input problems from :func:`prepare_flower_stars`, posterior problems from
#: :func:`jaxstars.models.flower.posterior.flower_posteriors`).
FLAGS: dict[str, int] = {
    "missing_leading_band": 1 << 0,  # leading band (G) not observed: no result
    "too_few_bands": 1 << 1,  # fewer than 2 observed bands (no colour): no result
    "no_position": 1 << 2,  # l or b not finite: no (R, Z), no result
    "no_parallax": 1 << 3,  # parallax missing / error non-finite or <= 0: photometry-only posterior
    "bad_mag_error": 1 << 4,  # a finite magnitude with non-finite or non-positive error (band dropped)
    "bad_prior": 1 << 5,  # non-finite or invalid distance-prior parameters: no result
    "outside_coverage": 1 << 6,  # posterior distances leave the training (R, Z) coverage (§2.6, §4.1.3)
    "grid_edge": 1 << 7,  # fast path: posterior mass on a grid edge that is not a prior boundary
    "low_ess": 1 << 8,  # fast path: the posterior is not finite (no usable result; NaN is not returned as a number)
    "dust_pushed": 1 << 9,  # §2.9.2: star could have entered the catalogue only because of dust (given E_max)
    "nuts_problem": 1 << 10,  # reference path: the NUTS engine flagged the star (see its nuts_flags column)
    "grid_unresolved": 1 << 11,  # fast path: a marginal std below half a grid cell
}

#: Flags meaning "no posterior computed" (results are NaN).
NO_RESULT = FLAGS["missing_leading_band"] | FLAGS["too_few_bands"] | FLAGS["no_position"] | FLAGS["bad_prior"]

#: Default generalized-gamma distance prior (L [pc], alpha, beta): the constants of FLOWER's training weight.
DEFAULT_DISTANCE_PRIOR = (1300.0, 1.5, 0.8)


def flag_names(flags: int) -> list[str]:
    """Names of the :data:`FLAGS` bits set in one flag value."""
    return [name for name, bit in FLAGS.items() if int(flags) & bit]


class FlowerStars(NamedTuple):
    """Per-star arrays for the FLOWER posterior (leading axis = star; a pytree: slice, vmap, batch).

    Attributes
    ----------
    mag : ndarray (n, dim)
        Observed apparent magnitudes in ``features.bands`` order; NaN where not observed.
    mag_err : ndarray (n, dim)
        1σ magnitude errors (with ``mag_err_floor`` added in quadrature); NaN where not observed.
    observed : ndarray of bool (n, dim)
        Band used in the likelihood.
    parallax, parallax_error : ndarray (n,)
        Catalogue parallax and error (mas); NaN when unusable (flag ``no_parallax``).
    parallax_zero_point : ndarray (n,)
        ``zp`` (mas, catalogue-bias convention of :mod:`jaxstars.astro.astrometry`).
    l, b : ndarray (n,)
        Galactic longitude / latitude (deg).
    prior_length, prior_alpha, prior_beta : ndarray (n,)
        Generalized-gamma distance prior parameters (Eq. 13).
    row_id : ndarray of int (n,)
        Global row index (per-star random keys are ``fold_in(key, row_id)``).
    flags : ndarray of int (n,)
        :data:`FLAGS` bit field.
    """

    mag: Any
    mag_err: Any
    observed: Any
    parallax: Any
    parallax_error: Any
    parallax_zero_point: Any
    l: Any
    b: Any
    prior_length: Any
    prior_alpha: Any
    prior_beta: Any
    row_id: Any
    flags: Any

    @property
    def n(self) -> int:
        """Number of stars."""
        return int(np.shape(self.flags)[0])

    @property
    def usable(self) -> np.ndarray:
        """Rows for which a posterior is computed (no :data:`NO_RESULT` bit)."""
        return (np.asarray(self.flags) & NO_RESULT) == 0

    def take(self, index) -> FlowerStars:
        """A subset of rows (numpy fancy index or slice)."""
        return FlowerStars(*(np.asarray(a)[index] for a in self))


def _catalog_bands(features) -> tuple[str, ...]:
    if hasattr(features, "catalog_bands"):
        return tuple(features.catalog_bands)
    ps1 = ("g", "r", "i", "z", "y")
    return tuple(f"ps1_{b}" if b in ps1 else b for b in features.bands)


def _column(table, name: str, n: int) -> np.ndarray:
    """Float column as a plain array (masked → NaN); all-NaN if absent."""
    names = table.colnames if hasattr(table, "colnames") else list(table.keys())
    if name not in names:
        return np.full(n, np.nan)
    col = table[name]
    if hasattr(col, "filled"):
        col = col.filled(np.nan) if np.ma.isMaskedArray(col) or getattr(col, "mask", None) is not None else col
    values = getattr(col, "value", col)  # astropy Quantity / Column → plain values
    return np.asarray(values, dtype=np.float64).reshape(n)


def _per_star(table, name: str, default, n: int) -> np.ndarray:
    """Per-star parameter: a table column if ``default`` is a column name or ``name`` exists, else a constant."""
    if isinstance(default, str):
        return _column(table, default, n)
    names = table.colnames if hasattr(table, "colnames") else list(table.keys())
    if name in names:
        return _column(table, name, n)
    return np.broadcast_to(np.asarray(default, dtype=np.float64), (n,)).copy()


def prepare_flower_stars(
    features,
    table,
    *,
    parallax_zero_point: float | str = 0.0,
    distance_prior: tuple = DEFAULT_DISTANCE_PRIOR,
    mag_err_floor: float = 0.0,
    row_ids=None,
) -> FlowerStars:
    """Read a canonical catalog into :class:`FlowerStars` (bad rows flagged, never dropped, never raising).

    Parameters
    ----------
    features : FlowerFeatures
        The model's features (band order, leading band first).
    table : astropy.table.Table or mapping of arrays
        Canonical columns ``mag_<band>``, ``mag_err_<band>`` (catalogue band names, e.g. ``mag_ps1_g``),
        ``parallax``, ``parallax_error``, ``l``, ``b``.  Missing columns count as missing values.
    parallax_zero_point : float or str
        Catalogue zero-point ``zp`` (mas, negative for Gaia; e.g.
        :data:`jaxstars.astro.astrometry.ZP_EDR3_QSO_LINDEGREN2021`) or the name of a per-star column (e.g. from
        :func:`jaxstars.astro.astrometry.lindegren2021_zero_point`); a non-finite per-star value counts as 0 and
        the row is flagged ``no_parallax``.
    distance_prior : (L, alpha, beta)
        Generalized-gamma prior (Eq. 13); each entry a constant or a column name.  Columns ``ggd_length``,
        ``ggd_alpha``, ``ggd_beta`` override the constants when present.
    mag_err_floor : float
        Added in quadrature to every magnitude error (default 0, as in the paper).
    row_ids : array-like of int, optional
        Global row ids (default ``0..n-1``); per-star random keys depend on them only.

    Returns
    -------
    FlowerStars
    """
    n = len(table)
    bands = _catalog_bands(features)
    dim = len(bands)
    mag = np.stack([_column(table, f"mag_{b}", n) for b in bands], axis=-1).reshape(n, dim)
    err = np.stack([_column(table, f"mag_err_{b}", n) for b in bands], axis=-1).reshape(n, dim)
    good_err = np.isfinite(err) & (err > 0)
    finite_mag = np.isfinite(mag)
    observed = finite_mag & good_err
    flags = np.zeros(n, np.int64)
    flags[np.any(finite_mag & ~good_err, axis=1)] |= FLAGS["bad_mag_error"]
    flags[~observed[:, 0]] |= FLAGS["missing_leading_band"]
    flags[observed.sum(axis=1) < 2] |= FLAGS["too_few_bands"]
    err = np.sqrt(err**2 + float(mag_err_floor) ** 2)
    mag = np.where(observed, mag, np.nan)
    err = np.where(observed, err, np.nan)

    plx = _column(table, "parallax", n)
    plx_err = _column(table, "parallax_error", n)
    if isinstance(parallax_zero_point, str):
        zp = _column(table, parallax_zero_point, n)
    else:
        zp = np.full(n, float(parallax_zero_point))
    good_plx = np.isfinite(plx) & np.isfinite(plx_err) & (plx_err > 0) & np.isfinite(zp)
    flags[~good_plx] |= FLAGS["no_parallax"]
    plx = np.where(good_plx, plx, np.nan)
    plx_err = np.where(good_plx, plx_err, np.nan)
    zp = np.where(np.isfinite(zp), zp, 0.0)

    lon = _column(table, "l", n)
    lat = _column(table, "b", n)
    flags[~(np.isfinite(lon) & np.isfinite(lat))] |= FLAGS["no_position"]

    length, alpha, beta = (
        _per_star(table, col, value, n)
        for col, value in zip(("ggd_length", "ggd_alpha", "ggd_beta"), distance_prior)
    )
    good_prior = (
        np.isfinite(length) & (length > 0) & np.isfinite(alpha) & (alpha > 0) & np.isfinite(beta) & (beta > -1)
    )
    flags[~good_prior] |= FLAGS["bad_prior"]

    row_ids = np.arange(n, dtype=np.int64) if row_ids is None else np.asarray(row_ids, dtype=np.int64).reshape(n)
    return FlowerStars(
        mag=mag,
        mag_err=err,
        observed=observed,
        parallax=plx,
        parallax_error=plx_err,
        parallax_zero_point=zp,
        l=lon,
        b=lat,
        prior_length=length,
        prior_alpha=alpha,
        prior_beta=beta,
        row_id=row_ids,
        flags=flags,
    )
