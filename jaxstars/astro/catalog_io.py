"""Catalog readers and writers: FITS, Parquet, CSV, HDF5 and VOTable in, the canonical schema out.

:func:`read_catalog` reads a file with ``astropy.table.Table.read`` and :func:`to_canonical` maps any table to
the canonical schema of :mod:`jaxstars.astro.schema`. Input column names are matched without regard to case
against the canonical names and the names below (first match wins, in the order listed):

============ ==================================================================================================
quantity     accepted input names
============ ==================================================================================================
positions    ``ra``, ``ra_icrs``, ``ramean``; ``dec``, ``de_icrs``, ``dec_icrs``, ``decmean``; ``l``, ``glon``;
             ``b``, ``glat``
astrometry   Gaia archive names (``source_id``, ``parallax``, ``parallax_error``, ``pmra``, ``pmra_error``,
             ``pmdec``, ``pmdec_error``, ``ruwe``, ``astrometric_chi2_al``, ``astrometric_n_good_obs_al``,
             ``visibility_periods_used``, ``phot_bp_rp_excess_factor``), ``parallax_err``, ``plx``/``e_plx``;
             ``radial_velocity`` or (Gaia EDR3) ``dr2_radial_velocity`` and their ``_error``
Gaia G/BP/RP ``phot_{g,bp,rp}_mean_mag``; uncertainty from ``phot_*_mean_mag_error`` if given, else from
             ``phot_*_mean_flux_over_error``, else from ``phot_*_mean_flux_error / phot_*_mean_flux``
PS1          ``{g,r,i,z,y}MeanPSFMag`` / ``…MeanPSFMagErr`` (MAST), ``{g,…}_mean_psf_mag`` / ``…_error`` (Gaia
             archive); or fluxes in Jy (AB) ``{g,…}PSFFlux`` / ``…PSFFluxErr``, ``{g,…}FPSFFlux`` / ``…Err``
2MASS        ``j_m``/``j_msigcom``, ``h_m``/``h_msigcom``, ``ks_m`` or ``k_m``/``…_msigcom``, ``Jmag``/``e_Jmag``
             (VizieR), ``J``/``J_ERR`` (APOGEE; ``K`` is Ks); ``ph_qual``
WISE         AllWISE ``w1mpro``/``w1sigmpro``, ``w2mpro``/``w2sigmpro``; unWISE fluxes in Vega nanomaggies
             ``flux_w1``/``dflux_w1`` or ``w1_flux``/``w1_dflux`` (and W2)
============ ==================================================================================================

Conventions applied while mapping (all documented, none silent):

* Magnitudes from fluxes: m = ZP − 2.5 log₁₀ F and σ_m = (2.5 / ln 10) σ_F / F (first-order propagation; the
  relative error is σ_F / F — dividing by the magnitude instead, as the FLOWER code appears to do, is wrong; see
  ``papers/IMPLEMENTATION_NOTES.md``). ZP = 22.5 for unWISE Vega nanomaggies (Schlafly, Meisner & Green 2019)
  and 2.5 log₁₀ 3631 for PS1 fluxes in Jy (AB). F ≤ 0 gives NaN and the ``flux_nonpositive_<band>`` flag.
* Gaia: σ_m = (2.5 / ln 10) / ``phot_*_mean_flux_over_error`` (Gaia DR2/EDR3 documentation; Riello et al.
  2021, A&A 649, A3, §7), optionally with the passband zero-point uncertainty added in quadrature
  (``gaia_zp_floor=True``; values in :data:`GAIA_ZP_SIGMA`).
* Magnitudes and magnitude errors with |value| ≥ 90 (survey sentinels such as PS1's −999) are missing (NaN),
  and so is the uncertainty of a missing magnitude.
* Masked or NULL entries become NaN; units present on the input are converted to the canonical unit (a unit
  that does not convert is an error); columns without a unit are taken to be in the canonical unit.
* ``l``/``b`` are computed from ``ra``/``dec`` with astropy when absent (and the reverse).
* Parallaxes are copied untouched: negative parallaxes are valid measurements and are kept.
* Nothing is dropped: bad uncertainties are flagged per row (see :data:`jaxstars.astro.schema.FLAGS`).

Parquet needs ``pyarrow`` and HDF5 needs ``h5py`` (both used through astropy; ``h5py`` also reads the Green et al.
release files in :func:`read_green2020`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from jaxstars.astro.bands import get_band
from jaxstars.astro.schema import (
    ALWAYS_PRESENT,
    BANDS,
    FLAGS,
    SCHEMA,
    SCHEMA_VERSION,
    check_schema,
    compute_flags,
    mag_column,
    mag_err_column,
    require_columns,
)
from jaxstars.data import data_file

MAG_PER_LN_FLUX = 2.5 / np.log(10.0)
"""dm / d(ln F) = 2.5 / ln 10 ≈ 1.0857: turns a relative flux error into a magnitude error."""

GAIA_ZP_SIGMA: dict[str, dict[str, float]] = {
    # Evans et al. (2018, A&A 616, A4), DR2 VEGAMAG zero points 25.6884 / 25.3514 / 24.7619.
    "dr2": {"G": 0.0017850023, "BP": 0.0013918258, "RP": 0.0019145719},
    # Riello et al. (2021, A&A 649, A3) Table 3, EDR3 (= DR3 photometry) zero points 25.6874 / 25.3385 / 24.7479.
    "edr3": {"G": 0.0027553202, "BP": 0.0027901700, "RP": 0.0037793818},
    "dr3": {"G": 0.0027553202, "BP": 0.0027901700, "RP": 0.0037793818},
}
"""Uncertainty [mag] of the Gaia VEGAMAG zero point per release and band (the optional error floor)."""

UNWISE_VEGA_ZP = 22.5
"""unWISE fluxes are Vega nanomaggies: m_Vega = 22.5 − 2.5 log₁₀ F (Schlafly, Meisner & Green 2019)."""

PS1_JY_ZP = 2.5 * np.log10(3631.0)
"""PS1 fluxes are in Jy on the AB system: m_AB = −2.5 log₁₀(F / 3631 Jy) = 8.90 − 2.5 log₁₀ F."""

UNWISE_AB_MINUS_VEGA: dict[str, float] = {band: get_band(band).vega_to_ab for band in ("W1", "W2")}
"""m_AB − m_Vega for unWISE W1/W2 (Schlafly et al. 2019), the offsets Green et al. (2021) §2.1 applied."""

_MAG_SENTINEL = 90.0
_GAIA_BANDS = ("G", "BP", "RP")


# ------------------------------------------------------------------------------------------ conversions


def flux_to_mag(flux: np.ndarray, flux_error: np.ndarray, zero_point: float) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude and its first-order uncertainty from a flux and its uncertainty.

    m = ZP − 2.5 log₁₀ F and σ_m = (2.5 / ln 10) σ_F / F. Non-positive fluxes give NaN for both.

    Parameters
    ----------
    flux, flux_error
        Flux and its 1σ uncertainty, in the units the zero point refers to.
    zero_point
        Magnitude of unit flux.

    Returns
    -------
    tuple of numpy.ndarray
        ``(mag, mag_err)`` as float64.
    """
    flux = np.asarray(flux, dtype=np.float64)
    flux_error = np.asarray(flux_error, dtype=np.float64)
    positive = flux > 0
    safe = np.where(positive, flux, 1.0)
    mag = np.where(positive, zero_point - 2.5 * np.log10(safe), np.nan)
    err = np.where(positive, MAG_PER_LN_FLUX * flux_error / safe, np.nan)
    return mag, err


def gaia_mag_error(flux_over_error: np.ndarray, band: str | None = None, release: str | None = None) -> np.ndarray:
    """Gaia G/BP/RP magnitude uncertainty from the archive's ``phot_*_mean_flux_over_error``.

    σ_m = (2.5 / ln 10) / (F / σ_F), and with ``release`` given, √(σ_m² + σ_ZP²) where σ_ZP is the passband
    zero-point uncertainty (:data:`GAIA_ZP_SIGMA`; Riello et al. 2021 §7 and Table 3 for EDR3/DR3, Evans et
    al. 2018 for DR2). Non-finite or non-positive inputs give NaN.

    Parameters
    ----------
    flux_over_error
        Signal-to-noise ratio of the mean flux.
    band
        ``'G'``, ``'BP'`` or ``'RP'``; required with ``release``.
    release
        ``'dr2'``, ``'edr3'`` or ``'dr3'`` to add that release's zero-point uncertainty; None for none.
    """
    snr = np.asarray(flux_over_error, dtype=np.float64)
    good = np.isfinite(snr) & (snr > 0)
    sigma = np.where(good, MAG_PER_LN_FLUX / np.where(good, snr, 1.0), np.nan)
    if release is not None:
        sigma = np.hypot(sigma, _gaia_zp_sigma(band, release))
    return sigma


def _gaia_zp_sigma(band: str | None, release: str) -> float:
    key = release.lower()
    if key not in GAIA_ZP_SIGMA:
        raise ValueError(f"unknown Gaia release {release!r}; expected one of {', '.join(GAIA_ZP_SIGMA)}")
    if band not in GAIA_ZP_SIGMA[key]:
        raise ValueError(f"no Gaia zero-point uncertainty for band {band!r}; expected G, BP or RP")
    return GAIA_ZP_SIGMA[key][band]


# ------------------------------------------------------------------------------------------ name tables


@dataclass(frozen=True)
class _BandInputs:
    """Where a band's photometry may come from, in order of preference."""

    mags: tuple[str, ...]
    mag_errs: tuple[str, ...]
    flux_over_error: str | None = None
    # (flux, flux_error, zero point); zero point None = usable for the uncertainty only (Gaia).
    fluxes: tuple[tuple[str, str, float | None], ...] = ()


def _gaia(band: str, key: str) -> _BandInputs:
    return _BandInputs(
        mags=(f"mag_{band}", f"phot_{key}_mean_mag"),
        mag_errs=(f"mag_err_{band}", f"phot_{key}_mean_mag_error"),
        flux_over_error=f"phot_{key}_mean_flux_over_error",
        fluxes=((f"phot_{key}_mean_flux", f"phot_{key}_mean_flux_error", None),),
    )


def _ps1(f: str) -> _BandInputs:
    return _BandInputs(
        mags=(f"mag_ps1_{f}", f"{f}meanpsfmag", f"{f}_mean_psf_mag"),
        mag_errs=(f"mag_err_ps1_{f}", f"{f}meanpsfmagerr", f"{f}_mean_psf_mag_error"),
        fluxes=((f"{f}psfflux", f"{f}psffluxerr", PS1_JY_ZP), (f"{f}fpsfflux", f"{f}fpsffluxerr", PS1_JY_ZP)),
    )


def _wise(w: str) -> _BandInputs:
    return _BandInputs(
        mags=(f"mag_W{w}", f"w{w}mpro", f"w{w}mag"),
        mag_errs=(f"mag_err_W{w}", f"w{w}sigmpro", f"e_w{w}mag"),
        fluxes=((f"flux_w{w}", f"dflux_w{w}", UNWISE_VEGA_ZP), (f"w{w}_flux", f"w{w}_dflux", UNWISE_VEGA_ZP)),
    )


_BAND_INPUTS: dict[str, _BandInputs] = {
    "G": _gaia("G", "g"),
    "BP": _gaia("BP", "bp"),
    "RP": _gaia("RP", "rp"),
    **{f"ps1_{f}": _ps1(f) for f in "grizy"},
    "J": _BandInputs(("mag_J", "j_m", "jmag", "j"), ("mag_err_J", "j_msigcom", "e_jmag", "j_err")),
    "H": _BandInputs(("mag_H", "h_m", "hmag", "h"), ("mag_err_H", "h_msigcom", "e_hmag", "h_err")),
    "Ks": _BandInputs(
        ("mag_Ks", "ks_m", "k_m", "ksmag", "kmag", "ks", "k"),
        ("mag_err_Ks", "ks_msigcom", "k_msigcom", "e_ksmag", "e_kmag", "ks_err", "k_err"),
    ),
    "W1": _wise("1"),
    "W2": _wise("2"),
}

_SCALAR_INPUTS: dict[str, tuple[str, ...]] = {
    "source_id": ("source_id",),
    "ra": ("ra", "ra_icrs", "ramean"),
    "dec": ("dec", "de_icrs", "dec_icrs", "decmean"),
    "l": ("l", "glon"),
    "b": ("b", "glat"),
    "parallax": ("parallax", "plx"),
    "parallax_error": ("parallax_error", "parallax_err", "e_plx"),
    "pmra": ("pmra",),
    "pmra_error": ("pmra_error",),
    "pmdec": ("pmdec",),
    "pmdec_error": ("pmdec_error",),
    "radial_velocity": ("radial_velocity", "dr2_radial_velocity"),
    "radial_velocity_error": ("radial_velocity_error", "dr2_radial_velocity_error"),
    "ruwe": ("ruwe",),
    "astrometric_chi2_al": ("astrometric_chi2_al",),
    "astrometric_n_good_obs_al": ("astrometric_n_good_obs_al",),
    "visibility_periods_used": ("visibility_periods_used",),
    "phot_bp_rp_excess_factor": ("phot_bp_rp_excess_factor",),
    "ph_qual": ("ph_qual",),
}

# A value column whose uncertainty column is created (NaN, hence flagged) when the input lacks it.
_ERROR_OF = {
    "parallax": "parallax_error",
    "pmra": "pmra_error",
    "pmdec": "pmdec_error",
    "radial_velocity": "radial_velocity_error",
}


class _Columns:
    """Case-insensitive view of a table's column names."""

    def __init__(self, table: Table):
        self.table = table
        self._by_lower: dict[str, list[str]] = {}
        for name in table.colnames:
            self._by_lower.setdefault(name.lower(), []).append(name)

    def find(self, aliases: Iterable[str]) -> str | None:
        for alias in aliases:
            names = self._by_lower.get(alias.lower())
            if names:
                if len(names) > 1:
                    raise ValueError(f"ambiguous input columns {names}: they differ only by case")
                return names[0]
        return None

    def has_all(self, names: Iterable[str]) -> bool:
        return all(name.lower() in self._by_lower for name in names)


def _float_values(table: Table, name: str, unit: u.UnitBase | None) -> np.ndarray:
    """A column as float64 with masked entries NaN, converted to ``unit`` if it carries a unit."""
    col = table[name]
    data = np.ma.getdata(col)
    if data.dtype.kind not in "fiub":
        raise ValueError(f"input column {name!r} is not numeric (dtype {data.dtype})")
    values = np.array(data, dtype=np.float64)
    values[np.ma.getmaskarray(col)] = np.nan
    col_unit = getattr(col, "unit", None)
    if unit is None or col_unit is None or col_unit == u.dimensionless_unscaled:
        return values
    try:
        return values * col_unit.to(unit)
    except ValueError as err:  # UnitConversionError, or a unit astropy could not parse (UnrecognizedUnit)
        raise ValueError(f"input column {name!r} has unit {col_unit}, which does not convert to {unit}") from err


def _string_values(table: Table, name: str) -> np.ndarray:
    col = table[name]
    data = np.ma.getdata(col)
    if data.dtype.kind == "S":
        data = np.char.decode(data, "utf-8")
    values = np.array(data, dtype=str)
    values[np.ma.getmaskarray(col)] = ""
    return values


def _int_values(table: Table, name: str) -> np.ndarray:
    col = table[name]
    if np.any(np.ma.getmaskarray(col)):
        raise ValueError(f"input column {name!r} has {int(np.sum(np.ma.getmaskarray(col)))} missing entries")
    data = np.ma.getdata(col)
    if data.dtype.kind not in "iu":
        raise ValueError(f"input column {name!r} is not an integer column (dtype {data.dtype})")
    return np.array(data, dtype=np.int64)


def _band_photometry(
    table: Table, cols: _Columns, band: str, zp_release: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mag, mag_err, flux_nonpositive) of one band, all NaN/False when the input has none of its columns."""
    spec = _BAND_INPUTS[band]
    n = len(table)
    nonpositive = np.zeros(n, dtype=bool)
    fluxes = [(cols.find([f]), cols.find([fe]), zp) for f, fe, zp in spec.fluxes]
    fluxes = [(f, fe, zp) for f, fe, zp in fluxes if f is not None and fe is not None]
    mag_name = cols.find(spec.mags)
    if mag_name is not None:
        mag = _float_values(table, mag_name, u.mag)
        mag[np.abs(mag) >= _MAG_SENTINEL] = np.nan
        err_name = cols.find(spec.mag_errs)
        snr_name = cols.find([spec.flux_over_error]) if spec.flux_over_error else None
        if err_name is not None:
            err = _float_values(table, err_name, u.mag)
        elif snr_name is not None:
            err = gaia_mag_error(_float_values(table, snr_name, None), band, zp_release)
        elif fluxes:
            flux, flux_err, _ = fluxes[0]
            _, err = flux_to_mag(_float_values(table, flux, None), _float_values(table, flux_err, None), 0.0)
            if zp_release is not None:
                err = np.hypot(err, _gaia_zp_sigma(band, zp_release))
        else:
            err = np.full(n, np.nan)
        err[(np.abs(err) >= _MAG_SENTINEL) | ~np.isfinite(mag)] = np.nan
        return mag, err, nonpositive
    for flux_name, flux_err_name, zero_point in fluxes:
        if zero_point is None:
            continue
        flux = _float_values(table, flux_name, None)
        mag, err = flux_to_mag(flux, _float_values(table, flux_err_name, None), zero_point)
        return mag, err, np.isfinite(flux) & (flux <= 0)
    return np.full(n, np.nan), np.full(n, np.nan), nonpositive


# ------------------------------------------------------------------------------------------ mapping


def to_canonical(
    table: Table,
    *,
    required: Sequence[str] = (),
    extra_columns: Sequence[str] = (),
    gaia_release: str | None = None,
    gaia_zp_floor: bool = False,
) -> Table:
    """Map any astropy table (Gaia archive, cross-match, or canonical) to the canonical schema.

    Parameters
    ----------
    table
        Input table (``Table``, ``QTable`` or anything ``Table()`` accepts).
    required
        Canonical columns the caller needs; :class:`~jaxstars.astro.schema.MissingColumnsError` lists the
        absent ones after mapping.
    extra_columns
        Input columns to carry over unchanged (matched without regard to case), e.g. labels.
    gaia_release
        ``'dr2'``, ``'edr3'`` or ``'dr3'``: recorded in ``meta['GAIAREL']`` (the Gaia passbands differ between
        DR2 and (E)DR3) and used by ``gaia_zp_floor``.
    gaia_zp_floor
        Add the Gaia zero-point uncertainty of ``gaia_release`` in quadrature to G/BP/RP uncertainties derived
        from fluxes (explicit magnitude-error columns are taken as given).

    Returns
    -------
    astropy.table.Table
        A new table in the canonical schema, one row per input row, in input order.
    """
    if type(table) is not Table:  # QTable (Quantity columns), numpy structured arrays, dicts, ...
        table = Table(table)
    if gaia_zp_floor and gaia_release is None:
        raise ValueError("gaia_zp_floor=True needs gaia_release ('dr2', 'edr3' or 'dr3')")
    if gaia_release is not None:
        _gaia_zp_sigma("G", gaia_release)  # validates the release name
    cols = _Columns(table)
    n = len(table)
    out = Table(meta={"SCHEMA": SCHEMA_VERSION})
    if gaia_release is not None:
        out.meta["GAIAREL"] = gaia_release.lower()

    for name, aliases in _SCALAR_INPUTS.items():
        found = cols.find([name, *aliases])
        if found is None:
            continue
        spec = SCHEMA[name]
        if spec.dtype == "str":
            out[name] = _string_values(table, found)
        elif spec.dtype == "int64":
            out[name] = _int_values(table, found)
        else:
            out[name] = _float_values(table, found, spec.unit)
    for value, error in _ERROR_OF.items():
        if value in out.colnames and error not in out.colnames:
            out[error] = np.full(n, np.nan)
    _complete_positions(out)

    flux_flags = np.zeros(n, dtype=np.int64)
    zp_release = gaia_release.lower() if gaia_zp_floor else None
    for band in BANDS:
        mag, err, nonpositive = _band_photometry(table, cols, band, zp_release if band in _GAIA_BANDS else None)
        out[mag_column(band)] = mag
        out[mag_err_column(band)] = err
        flux_flags[nonpositive] |= FLAGS[f"flux_nonpositive_{band}"]

    flags = compute_flags(out) | flux_flags
    stored = cols.find(["flags"])
    if stored is not None and cols.has_all(ALWAYS_PRESENT):  # re-reading a canonical table: bits are sticky
        flags |= _int_values(table, stored)
    out["flags"] = flags

    out = out[[name for name in SCHEMA if name in out.colnames]]
    for name in out.colnames:
        out[name].unit = SCHEMA[name].unit
        out[name].description = SCHEMA[name].description
    for name in extra_columns:
        found = cols.find([name])
        if found is None:
            raise ValueError(f"extra column {name!r} not found in the input")
        if found in out.colnames or name in SCHEMA:
            raise ValueError(f"extra column {name!r} clashes with a canonical column")
        out[found] = table[found]
    require_columns(out, required)
    return out


def _complete_positions(out: Table) -> None:
    """Add l/b from ra/dec (or ra/dec from l/b) with astropy when only one pair is present."""
    has_eq = "ra" in out.colnames and "dec" in out.colnames
    has_gal = "l" in out.colnames and "b" in out.colnames
    if has_eq and not has_gal:
        coords = SkyCoord(ra=out["ra"] * u.deg, dec=out["dec"] * u.deg, frame="icrs").galactic
        out["l"], out["b"] = coords.l.deg, coords.b.deg
    elif has_gal and not has_eq:
        coords = SkyCoord(l=out["l"] * u.deg, b=out["b"] * u.deg, frame="galactic").icrs
        out["ra"], out["dec"] = coords.ra.deg, coords.dec.deg


# ------------------------------------------------------------------------------------------ files

_SUFFIX_FORMATS = {
    ".fits": "fits",
    ".fit": "fits",
    ".fits.gz": "fits",
    ".fit.gz": "fits",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".ecsv": "ecsv",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".vot": "votable",
    ".xml": "votable",
    ".votable": "votable",
}
_ASTROPY_FORMATS = {
    "fits": "fits",
    "parquet": "parquet",
    "csv": "ascii.csv",
    "ecsv": "ascii.ecsv",
    "hdf5": "hdf5",
    "votable": "votable",
}
FORMATS = tuple(_ASTROPY_FORMATS)
"""File formats :func:`read_catalog` and :func:`write_catalog` handle."""

_HDF5_PATH = "catalog"


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in _ASTROPY_FORMATS:
            raise ValueError(f"unknown catalog format {format!r}; expected one of {', '.join(FORMATS)}")
        return format
    name = path.name.lower()
    for suffix in sorted(_SUFFIX_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIX_FORMATS[suffix]
    raise ValueError(
        f"cannot tell the format of {path} from its suffix; pass format= (one of {', '.join(FORMATS)})"
    )


def read_catalog(
    path: str | Path,
    format: str | None = None,
    *,
    required: Sequence[str] = (),
    extra_columns: Sequence[str] = (),
    gaia_release: str | None = None,
    gaia_zp_floor: bool = False,
    **read_kwargs,
) -> Table:
    """Read a FITS, Parquet, CSV/ECSV, HDF5 or VOTable catalog into the canonical schema.

    Parameters
    ----------
    path
        File to read.
    format
        One of :data:`FORMATS`; guessed from the suffix when None.
    required, extra_columns, gaia_release, gaia_zp_floor
        As in :func:`to_canonical`.
    **read_kwargs
        Passed to ``astropy.table.Table.read`` (e.g. ``hdu=`` for FITS, ``path=`` for HDF5).

    Returns
    -------
    astropy.table.Table
        The canonical table (see :mod:`jaxstars.astro.schema`).
    """
    table = read_table(path, format, **read_kwargs)
    return to_canonical(
        table,
        required=required,
        extra_columns=extra_columns,
        gaia_release=gaia_release,
        gaia_zp_floor=gaia_zp_floor,
    )


def write_catalog(table: Table, path: str | Path, format: str | None = None, *, overwrite: bool = False) -> None:
    """Write a canonical table to FITS, Parquet, CSV/ECSV, HDF5 (dataset ``catalog``) or VOTable.

    The table is checked against the schema first (:func:`~jaxstars.astro.schema.check_schema`); reading the
    file back with :func:`read_catalog` returns the same columns, values, units and flags (CSV stores no
    units: the reader restores the canonical ones).
    """
    check_schema(table)
    out = table.copy(copy_data=False)
    out.meta["SCHEMA"] = SCHEMA_VERSION
    write_table(out, path, format, overwrite=overwrite)


def read_table(path: str | Path, format: str | None = None, **read_kwargs) -> Table:
    """Read any table file as it is (no schema mapping): FITS, Parquet, CSV/ECSV, HDF5 or VOTable.

    The one place that turns file names into formats; :func:`read_catalog` and the ``jaxstars dust`` command use it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table file {path} not found")
    fmt = _format_of(path, format)
    if fmt == "parquet":
        _need("pyarrow", "Parquet catalogs")
    if fmt == "hdf5":
        _need("h5py", "HDF5 catalogs")
        read_kwargs.setdefault("path", _default_hdf5_path(path))
    with warnings.catch_warnings():
        # Archive files carry units astropy cannot parse (e.g. "'electron'.s**-1" on Gaia fluxes); columns with
        # canonical units are checked strictly in to_canonical, the rest are not used as quantities.
        warnings.simplefilter("ignore", u.UnitsWarning)
        return Table.read(path, format=_ASTROPY_FORMATS[fmt], **read_kwargs)


def write_table(table: Table, path: str | Path, format: str | None = None, *, overwrite: bool = False) -> None:
    """Write any table to the format its suffix (or ``format``) names; HDF5 goes to the dataset ``catalog``."""
    path = Path(path)
    fmt = _format_of(path, format)
    kwargs = {}
    if fmt == "parquet":
        _need("pyarrow", "Parquet catalogs")
    if fmt == "hdf5":
        _need("h5py", "HDF5 catalogs")
        kwargs = {"path": _HDF5_PATH, "serialize_meta": True}
    table.write(path, format=_ASTROPY_FORMATS[fmt], overwrite=overwrite, **kwargs)


def _default_hdf5_path(path: Path) -> str | None:
    import h5py

    with h5py.File(path, "r") as f:
        return _HDF5_PATH if _HDF5_PATH in f else None


def _need(module: str, what: str) -> None:
    try:
        __import__(module)
    except ImportError as err:
        raise ImportError(f"{what} need the {module!r} package: pip install {module}") from err


# ------------------------------------------------------------------------------------------ Green et al.

GREEN2020_LABELS = ("teff", "logg", "feh")
"""Stellar-label columns of :func:`read_green2020` (θ of Green et al. 2021)."""

_GREEN_FIELDS = (
    "atm_param",
    "atm_param_cov",
    "r",
    "r_err",
    "mag",
    "mag_err",
    "parallax",
    "parallax_err",
    "atm_source",
    "r_source",
)
_LABEL_UNITS = {"teff": u.K, "logg": None, "feh": None}


def read_green2020(path: str | Path | None = None) -> Table:
    """Load a Green et al. (2021) release file (``green2020_sample.h5`` format) into the canonical schema.

    The file's HDF5 dataset ``data`` holds ``mag``/``mag_err`` (13 bands in :data:`~jaxstars.astro.schema.BANDS`
    order, NaN = not observed), Gaia DR2 ``parallax``/``parallax_err`` [mas], ``atm_param`` (Teff [K], log g,
    [Fe/H]) with ``atm_param_cov``, the reddening ``r``/``r_err`` (SFD-like E(B−V) units, i.e. mag) with
    ``r_source`` and ``atm_source``; datasets ``r_fit``/``r_var`` hold the release's fitted reddening.

    The release gives unWISE W1/W2 in AB (Green et al. 2021 §2.1); they are converted to the canonical Vega
    system by subtracting :data:`UNWISE_AB_MINUS_VEGA` (add it back to feed the released network).

    Parameters
    ----------
    path
        The HDF5 file; default ``green2020/green2020_sample.h5`` in the real-data folder
        (:func:`jaxstars.data.data_file`).

    Returns
    -------
    astropy.table.Table
        Canonical columns (photometry, ``parallax``, ``parallax_error``, ``flags``; no positions or ids: the
        release has none) plus ``teff``, ``logg``, ``feh``, the label covariance as ``cov_<a>_<b>`` for
        a ≤ b in (teff, logg, feh) (see :func:`label_covariance`), ``r``, ``r_err``, ``r_source``,
        ``atm_source`` and, when present, ``r_fit``, ``r_var``. The covariance is symmetrised, (C + Cᵀ) / 2:
        the release's float32 matrices differ from their transposes by up to ~1e-6 in absolute value. The normalised ``atm_param_p`` of the file is
        not copied: it is ``(θ − atm_param_med) / atm_param_std`` with the dataset's attributes.
    """
    _need("h5py", "Green et al. release files")
    import h5py

    path = Path(path) if path is not None else data_file("green2020", "green2020_sample.h5")
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path} has no HDF5 dataset 'data' (not a Green et al. 2021 release file)")
        data = f["data"][...]
        extras = {key: f[key][...] for key in ("r_fit", "r_var") if key in f}
    missing = [field for field in _GREEN_FIELDS if field not in (data.dtype.names or ())]
    if missing:
        raise ValueError(f"{path}: dataset 'data' lacks field(s) {', '.join(missing)}")
    n = len(data)
    if data["mag"].shape != (n, len(BANDS)) or data["mag_err"].shape != (n, len(BANDS)):
        raise ValueError(f"{path}: 'mag'/'mag_err' must have shape (n, {len(BANDS)}), got {data['mag'].shape}")

    raw = Table()
    for k, band in enumerate(BANDS):
        offset = UNWISE_AB_MINUS_VEGA.get(band, 0.0)
        raw[mag_column(band)] = data["mag"][:, k].astype(np.float64) - offset
        raw[mag_err_column(band)] = data["mag_err"][:, k].astype(np.float64)
    raw["parallax"] = data["parallax"].astype(np.float64)
    raw["parallax_error"] = data["parallax_err"].astype(np.float64)
    out = to_canonical(raw, gaia_release="dr2")
    out.meta["SOURCE"] = "green2020"

    for k, name in enumerate(GREEN2020_LABELS):
        out[name] = data["atm_param"][:, k].astype(np.float64)
        out[name].unit = _LABEL_UNITS[name]
    cov = data["atm_param_cov"].astype(np.float64)
    cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))  # the file's float32 matrices are symmetric only to ~1e-6
    for i, a in enumerate(GREEN2020_LABELS):
        for j, b in enumerate(GREEN2020_LABELS[i:], start=i):
            col = f"cov_{a}_{b}"
            out[col] = cov[:, i, j]
            units = [x for x in (_LABEL_UNITS[a], _LABEL_UNITS[b]) if x is not None]
            out[col].unit = units[0] * units[1] if len(units) == 2 else (units[0] if units else None)
    out["r"] = data["r"].astype(np.float64)
    out["r_err"] = data["r_err"].astype(np.float64)
    out["r_source"] = np.char.decode(data["r_source"], "utf-8")
    out["atm_source"] = np.char.decode(data["atm_source"], "utf-8")
    for key, values in extras.items():
        if values.shape != (n,):
            raise ValueError(f"{path}: dataset {key!r} has shape {values.shape}, expected ({n},)")
        out[key] = values.astype(np.float64)
    for name in ("r", "r_err", "r_fit"):
        if name in out.colnames:
            out[name].unit = u.mag
    if "r_var" in out.colnames:
        out["r_var"].unit = u.mag**2
    return out


def label_covariance(table: Table, labels: Sequence[str] = GREEN2020_LABELS) -> np.ndarray:
    """The ``(n, k, k)`` label covariance from the ``cov_<a>_<b>`` columns of :func:`read_green2020`."""
    names = tuple(labels)
    cols = [f"cov_{a}_{b}" for i, a in enumerate(names) for b in names[i:]]
    require_columns(table, cols, purpose="label covariance")
    cov = np.empty((len(table), len(names), len(names)))
    for i, a in enumerate(names):
        for j, b in enumerate(names[i:], start=i):
            cov[:, i, j] = cov[:, j, i] = np.asarray(table[f"cov_{a}_{b}"], dtype=np.float64)
    return cov
