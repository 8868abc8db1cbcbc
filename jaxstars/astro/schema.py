"""The canonical catalog schema: one column layout for every table jaxstars reads, writes or simulates.

Every reader in :mod:`jaxstars.astro.catalog_io` returns an astropy ``Table`` in this layout, with astropy units
on the columns (the edges of the package); models take plain arrays out of it with :func:`photometry_arrays`.

Columns
-------
Columns marked *always* exist in every canonical table; the others exist only when the input provides them
(or, for ``l``/``b`` and ``ra``/``dec``, when they can be computed from the other pair), so that
:func:`require_columns` can tell a use which inputs it lacks. Missing values are NaN, never sentinels.

========================== ========= ======= ======== ===========================================================
column                     unit      dtype   present  meaning
========================== ========= ======= ======== ===========================================================
source_id                  —         int64   if given survey source identifier (Gaia ``source_id``)
ra, dec                    deg       float64 if given ICRS position
l, b                       deg       float64 if given Galactic longitude/latitude (from ra/dec via astropy if absent)
parallax                   mas       float64 if given parallax, as published: negative values are kept untouched
parallax_error             mas       float64 if given 1σ parallax uncertainty
pmra, pmdec                mas / yr  float64 if given proper motion (pmra includes cos δ)
pmra_error, pmdec_error    mas / yr  float64 if given their 1σ uncertainties
radial_velocity            km / s    float64 if given line-of-sight velocity (Gaia DR3 or DR2 value)
radial_velocity_error      km / s    float64 if given its 1σ uncertainty
ruwe                       —         float64 if given renormalised unit weight error (Gaia EDR3/DR3)
astrometric_chi2_al        —         float64 if given Gaia AL χ² of the astrometric fit
astrometric_n_good_obs_al  —         float64 if given Gaia number of good AL observations
visibility_periods_used    —         float64 if given Gaia visibility periods
phot_bp_rp_excess_factor   —         float64 if given Gaia BP/RP flux excess factor C
ph_qual                    —         str     if given 2MASS photometric quality flag (e.g. ``'AAA'``)
mag_<band>                 mag       float64 always   apparent magnitude in ``<band>`` (NaN = not observed)
mag_err_<band>             mag       float64 always   its 1σ uncertainty
flags                      —         int64   always   bit field of input problems, see :data:`FLAGS`
========================== ========= ======= ======== ===========================================================

Bands and magnitude systems (:data:`BANDS`, :data:`MAG_SYSTEM`): Gaia ``G``, ``BP``, ``RP`` (Vega; DR2 and
(E)DR3 passbands differ, the release is recorded in ``table.meta['GAIAREL']`` when known), Pan-STARRS1
``ps1_g``, ``ps1_r``, ``ps1_i``, ``ps1_z``, ``ps1_y`` (AB), 2MASS ``J``, ``H``, ``Ks`` (Vega) and WISE/unWISE
``W1``, ``W2`` (Vega). Band names are unique without regard to case, so ``mag_G`` (Gaia) and ``mag_ps1_g``
(PS1) cannot be confused by case-insensitive readers or tools that upper-case FITS column names.

A band is *observed* for a star when its magnitude and its uncertainty are finite and the uncertainty is > 0
(:func:`photometry_arrays` returns this as the mask). A finite magnitude with a non-finite or non-positive
uncertainty is kept in the table, masked out, and flagged (``mag_err_invalid_<band>``): never dropped silently.

Flags
-----
``flags`` is an int64 bit field; :func:`flag_reasons` turns it into readable reasons and :data:`FLAGS` maps each
reason to its bit. Bits are set by the readers and never cause a row to be dropped:

==================================== ====== ===================================================================
reason                               bit    set when
==================================== ====== ===================================================================
``parallax_missing``                 0      the table has a parallax column but this row's parallax is not finite
``parallax_error_invalid``           1      finite parallax with a non-finite or non-positive parallax_error
``pm_error_invalid``                 2      finite pmra (pmdec) with a non-finite or non-positive error
``rv_error_invalid``                 3      finite radial_velocity with a non-finite or non-positive error
``position_missing``                 4      the table has positions but this row's ra/dec (or l/b) is not finite
``mag_err_invalid_<band>``           16+k   finite magnitude in band k with a non-finite or non-positive error
``flux_nonpositive_<band>``          32+k   the band came as a flux that is ≤ 0 (no magnitude can be formed)
==================================== ====== ===================================================================

(k is the index of the band in :data:`BANDS`.) Quality cuts (RUWE, Arenou et al., 2MASS 'AAA', ...) are not
input problems and live with the astrometry/quality code, which returns its own masks and reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import astropy.units as u
import numpy as np
from astropy.table import Table

SCHEMA_VERSION = "jaxstars.catalog.v1"
"""Value of ``table.meta['SCHEMA']`` on every canonical table."""

BANDS: tuple[str, ...] = ("G", "BP", "RP", "ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y", "J", "H", "Ks", "W1", "W2")
"""The 13 canonical photometric bands, in the order of Green et al. (2021) §2.1 and their release files."""

MAG_SYSTEM: dict[str, str] = {
    **{b: "Vega" for b in ("G", "BP", "RP")},
    **{b: "AB" for b in ("ps1_g", "ps1_r", "ps1_i", "ps1_z", "ps1_y")},
    **{b: "Vega" for b in ("J", "H", "Ks", "W1", "W2")},
}
"""Magnitude system of each canonical band (the system each survey publishes in)."""


def mag_column(band: str) -> str:
    """Name of the magnitude column of ``band`` (``mag_<band>``)."""
    _check_band(band)
    return f"mag_{band}"


def mag_err_column(band: str) -> str:
    """Name of the magnitude-uncertainty column of ``band`` (``mag_err_<band>``)."""
    _check_band(band)
    return f"mag_err_{band}"


def _check_band(band: str) -> None:
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; canonical bands are {', '.join(BANDS)}")


@dataclass(frozen=True)
class ColumnSpec:
    """One canonical column: name, astropy unit (``None`` = dimensionless), numpy dtype kind, description."""

    name: str
    unit: u.UnitBase | None
    dtype: str
    description: str


_ANGLE, _PLX, _PM, _VEL, _MAG = u.deg, u.mas, u.mas / u.yr, u.km / u.s, u.mag

_SCALAR_SPECS = (
    ColumnSpec("source_id", None, "int64", "survey source identifier"),
    ColumnSpec("ra", _ANGLE, "float64", "ICRS right ascension"),
    ColumnSpec("dec", _ANGLE, "float64", "ICRS declination"),
    ColumnSpec("l", _ANGLE, "float64", "Galactic longitude"),
    ColumnSpec("b", _ANGLE, "float64", "Galactic latitude"),
    ColumnSpec("parallax", _PLX, "float64", "parallax (negative values kept)"),
    ColumnSpec("parallax_error", _PLX, "float64", "parallax 1-sigma uncertainty"),
    ColumnSpec("pmra", _PM, "float64", "proper motion in RA (times cos dec)"),
    ColumnSpec("pmra_error", _PM, "float64", "pmra 1-sigma uncertainty"),
    ColumnSpec("pmdec", _PM, "float64", "proper motion in Dec"),
    ColumnSpec("pmdec_error", _PM, "float64", "pmdec 1-sigma uncertainty"),
    ColumnSpec("radial_velocity", _VEL, "float64", "radial velocity"),
    ColumnSpec("radial_velocity_error", _VEL, "float64", "radial velocity 1-sigma uncertainty"),
    ColumnSpec("ruwe", None, "float64", "renormalised unit weight error"),
    ColumnSpec("astrometric_chi2_al", None, "float64", "AL chi^2 of the astrometric solution"),
    ColumnSpec("astrometric_n_good_obs_al", None, "float64", "number of good AL observations"),
    ColumnSpec("visibility_periods_used", None, "float64", "number of visibility periods used"),
    ColumnSpec("phot_bp_rp_excess_factor", None, "float64", "BP/RP flux excess factor"),
    ColumnSpec("ph_qual", None, "str", "2MASS photometric quality flag"),
)
_PHOT_SPECS = tuple(
    spec
    for band in BANDS
    for spec in (
        ColumnSpec(f"mag_{band}", _MAG, "float64", f"{band} magnitude ({MAG_SYSTEM[band]})"),
        ColumnSpec(f"mag_err_{band}", _MAG, "float64", f"{band} magnitude 1-sigma uncertainty"),
    )
)
_FLAGS_SPEC = ColumnSpec("flags", None, "int64", "bit field of input problems (see jaxstars.astro.schema.FLAGS)")

SCHEMA: dict[str, ColumnSpec] = {s.name: s for s in (*_SCALAR_SPECS, *_PHOT_SPECS, _FLAGS_SPEC)}
"""Every canonical column by name, in canonical order."""

ALWAYS_PRESENT: tuple[str, ...] = (*(s.name for s in _PHOT_SPECS), "flags")
"""Columns every canonical table has (photometry in all bands, NaN where not observed, and ``flags``)."""

# ----------------------------------------------------------------------------------------------------- flags

FLAGS: dict[str, int] = {
    "parallax_missing": 1 << 0,
    "parallax_error_invalid": 1 << 1,
    "pm_error_invalid": 1 << 2,
    "rv_error_invalid": 1 << 3,
    "position_missing": 1 << 4,
    **{f"mag_err_invalid_{band}": 1 << (16 + k) for k, band in enumerate(BANDS)},
    **{f"flux_nonpositive_{band}": 1 << (32 + k) for k, band in enumerate(BANDS)},
}
"""Reason → bit value of the ``flags`` column (see the module docstring for when each is set)."""


def flag_reasons(flags: np.ndarray | Iterable[int]) -> np.ndarray:
    """Readable reasons for each row's flag bits.

    Parameters
    ----------
    flags
        The ``flags`` column (or any int array of flag values).

    Returns
    -------
    numpy.ndarray
        Object array of strings, one per row: the reasons joined with ``'|'``, or ``''`` for a clean row.
    """
    values = np.asarray(flags, dtype=np.int64)
    out = np.full(values.shape, "", dtype=object)
    for reason, bit in FLAGS.items():
        hit = (values & bit) != 0
        out[hit] = [f"{s}|{reason}" if s else reason for s in out[hit]]
    return out


def has_flag(flags: np.ndarray, reason: str) -> np.ndarray:
    """Boolean array: rows whose ``flags`` carry ``reason`` (a key of :data:`FLAGS`)."""
    if reason not in FLAGS:
        raise ValueError(f"unknown flag {reason!r}; known flags are {', '.join(FLAGS)}")
    return (np.asarray(flags, dtype=np.int64) & FLAGS[reason]) != 0


def _valid_sigma(sigma: np.ndarray) -> np.ndarray:
    return np.isfinite(sigma) & (sigma > 0)


def compute_flags(table: Table) -> np.ndarray:
    """Data-derived flag bits of a canonical table (every reason except ``flux_nonpositive_*``).

    ``flux_nonpositive_*`` can only be set by a reader (the flux is gone once converted); readers OR it in.

    Parameters
    ----------
    table
        A table with canonical column names.

    Returns
    -------
    numpy.ndarray
        int64 array of flag values, one per row.
    """
    n = len(table)
    flags = np.zeros(n, dtype=np.int64)

    def values(name: str) -> np.ndarray | None:
        return np.asarray(table[name], dtype=np.float64) if name in table.colnames else None

    def value_error_bit(value: str, error: str, reason: str) -> None:
        val = values(value)
        if val is None:
            return
        err = values(error)
        bad = np.isfinite(val) & (np.ones(n, bool) if err is None else ~_valid_sigma(err))
        flags[bad] |= FLAGS[reason]

    plx = values("parallax")
    if plx is not None:
        flags[~np.isfinite(plx)] |= FLAGS["parallax_missing"]
    value_error_bit("parallax", "parallax_error", "parallax_error_invalid")
    value_error_bit("pmra", "pmra_error", "pm_error_invalid")
    value_error_bit("pmdec", "pmdec_error", "pm_error_invalid")
    value_error_bit("radial_velocity", "radial_velocity_error", "rv_error_invalid")
    for lon, lat in (("ra", "dec"), ("l", "b")):
        if lon in table.colnames and lat in table.colnames:
            flags[~(np.isfinite(values(lon)) & np.isfinite(values(lat)))] |= FLAGS["position_missing"]
            break
    for band in BANDS:
        if mag_column(band) in table.colnames:
            value_error_bit(mag_column(band), mag_err_column(band), f"mag_err_invalid_{band}")
    return flags


# ------------------------------------------------------------------------------------------ column checks


class MissingColumnsError(ValueError):
    """A table lacks columns a use requires; ``missing`` lists them."""

    def __init__(self, missing: Sequence[str], purpose: str | None = None):
        self.missing = tuple(missing)
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"missing required column(s){what}: {', '.join(self.missing)}")


def require_columns(table: Table, names: Iterable[str], *, purpose: str | None = None) -> None:
    """Raise :class:`MissingColumnsError` listing every name in ``names`` that ``table`` lacks.

    The required set depends on the use (e.g. ``('parallax', 'parallax_error')`` for a parallax likelihood,
    ``('l', 'b')`` for a dust-map lookup), so each caller states its own.

    Parameters
    ----------
    table
        A canonical table.
    names
        Column names the use needs.
    purpose
        Optional description of the use, quoted in the error message.
    """
    missing = [name for name in names if name not in table.colnames]
    if missing:
        raise MissingColumnsError(missing, purpose)


def check_schema(table: Table) -> None:
    """Raise ``ValueError`` listing every way ``table`` departs from the canonical schema.

    Checks that the always-present columns exist, that every canonical column present has the canonical
    unit and dtype kind, and that no canonical column is masked (missing values are NaN). Extra columns
    (e.g. labels) are allowed.
    """
    problems = [f"missing column {name}" for name in ALWAYS_PRESENT if name not in table.colnames]
    for name in table.colnames:
        spec = SCHEMA.get(name)
        if spec is None:
            continue
        col = table[name]
        if getattr(col, "mask", None) is not None and np.any(col.mask):
            problems.append(f"{name} has masked entries (canonical tables use NaN)")
        kind = col.dtype.kind
        expected_kind = {"int64": "i", "float64": "f", "str": "U"}[spec.dtype]
        if kind != expected_kind:
            problems.append(f"{name} has dtype {col.dtype}, expected {spec.dtype}")
        if spec.unit is None:
            if col.unit is not None and col.unit != u.dimensionless_unscaled:
                problems.append(f"{name} has unit {col.unit}, expected none")
        elif col.unit is None or col.unit != spec.unit:
            problems.append(f"{name} has unit {col.unit}, expected {spec.unit}")
    if problems:
        raise ValueError("not a canonical catalog table: " + "; ".join(problems))


# ------------------------------------------------------------------------------------ arrays for models


class PhotometryArrays(NamedTuple):
    """Photometry of a canonical table as plain arrays for jitted code (see :func:`photometry_arrays`)."""

    mag: np.ndarray
    mag_err: np.ndarray
    mask: np.ndarray
    bands: tuple[str, ...]


def photometry_arrays(
    table: Table, bands: Sequence[str] | None = None, *, fill: bool = True, dtype=np.float64
) -> PhotometryArrays:
    """Magnitudes, uncertainties and the observed mask of a canonical table as ``(n_rows, n_bands)`` arrays.

    Parameters
    ----------
    table
        A canonical table.
    bands
        Bands to extract, in order (default: all of :data:`BANDS`).
    fill
        If True (default), replace unobserved entries by harmless placeholders (magnitude 0, uncertainty 1)
        so that no NaN enters jitted code, where a NaN in a branch that is later masked still poisons
        gradients; the entries must then be used only through ``mask``. If False, keep the table's values
        (NaN where not observed).
    dtype
        Floating dtype of ``mag`` and ``mag_err`` (e.g. ``numpy.float32`` for default JAX precision).

    Returns
    -------
    PhotometryArrays
        ``mag``, ``mag_err`` (float arrays), ``mask`` (bool, True = observed: finite magnitude and finite
        positive uncertainty) and the ``bands`` order.
    """
    bands = tuple(BANDS if bands is None else bands)
    for band in bands:
        _check_band(band)
    require_columns(
        table, [c for band in bands for c in (mag_column(band), mag_err_column(band))], purpose="photometry"
    )
    mag = np.stack([np.asarray(table[mag_column(b)], dtype=np.float64) for b in bands], axis=-1)
    err = np.stack([np.asarray(table[mag_err_column(b)], dtype=np.float64) for b in bands], axis=-1)
    mask = np.isfinite(mag) & _valid_sigma(err)
    if fill:
        mag = np.where(mask, mag, 0.0)
        err = np.where(mask, err, 1.0)
    return PhotometryArrays(mag.astype(dtype), err.astype(dtype), mask, bands)
