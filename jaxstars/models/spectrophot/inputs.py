"""Reading data files for the spectrophotometric model and turning tables into feature matrices.

:func:`load_table` reads any table :func:`jaxstars.astro.catalog_io.read_table` reads (FITS, Parquet, CSV/ECSV,
HDF5, VOTable), plus the Green et al. release HDF5 (``green2020_sample.h5``: recognised by its ``data`` dataset,
read with :func:`~jaxstars.astro.catalog_io.read_green2020`), and maps it to canonical columns
(:func:`~jaxstars.astro.catalog_io.to_canonical`: ``mag_<band>``/``mag_err_<band>``, ``parallax``/
``parallax_error``; Gaia archive, 2MASS, AllWISE, APOGEE ``J``/``H``/``K``, Hipparcos ``Plx``/``e_Plx`` names are
recognised). It adds:

* labels ``teff``, ``logg``, ``feh`` and ``teff_err``, ``logg_err``, ``feh_err`` from the first present of
  ``teff``/``TEFF``, ``logg``/``LOGG``, ``feh``/``fe_h``/``PARAM_M_H``/``m_h`` (errors ``<name>_err``, ``<NAME>_ERR``
  or the Green ``cov_<a>_<a>``); values ≤ −9000 (APOGEE's −9999) are missing (NaN);
* APOGEE's ``WISE_4_5``/``WISE_4_5_ERR`` as ``mag_W2`` when the table has no other W2;
* the spectrum: a 2-D column ``flux`` (or ``spectrum``) with ``flux_err`` (``spectrum_err``), normalised fluxes;
* the Gaia quality columns the training cuts use, copied when present.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

from .features import PAPER_BANDS, FeatureMatrix, build_features

__all__ = ["LABELS", "load_table", "resolve_bands", "table_features"]

LABELS = ("teff", "logg", "feh")
_LABEL_NAMES = {
    "teff": ("teff", "TEFF"),
    "logg": ("logg", "LOGG"),
    "feh": ("feh", "fe_h", "FE_H", "PARAM_M_H", "m_h", "M_H"),
}
_SENTINEL = -9000.0


def _find(raw: Table, names: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in raw.colnames}
    for name in names:
        if name in raw.colnames:
            return name
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _values(raw: Table, name: str) -> np.ndarray:
    col = raw[name]
    v = np.ma.filled(np.ma.asarray(col).astype(float), np.nan) if hasattr(col, "mask") else np.asarray(col, float)
    return np.where(v <= _SENTINEL, np.nan, v)


def _is_green(path: Path) -> bool:
    if path.suffix.lower() not in (".h5", ".hdf5", ".hdf"):
        return False
    import h5py

    with h5py.File(path, "r") as f:
        return "data" in f and f["data"].dtype.names is not None and "atm_param" in f["data"].dtype.names


def load_table(path: str | Path) -> Table:
    """Read a data file into canonical columns + labels + spectrum (module docstring)."""
    from jaxstars.astro.catalog_io import read_green2020, read_table, to_canonical

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file {path} not found")
    if _is_green(path):
        table = read_green2020(path)
        for name in LABELS:
            table[f"{name}_err"] = np.sqrt(np.maximum(np.asarray(table[f"cov_{name}_{name}"], float), 0.0))
        return table
    raw = read_table(path)
    keep = [c for c in raw.colnames if raw[c].ndim <= 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = to_canonical(raw[keep])
    for name in LABELS:
        col = _find(raw, _LABEL_NAMES[name])
        if col is None:
            continue
        table[name] = _values(raw, col)
        err = _find(raw, [f"{col}_err", f"{col}_ERR", f"{name}_err"])
        table[f"{name}_err"] = _values(raw, err) if err else np.zeros(len(raw))
    w45 = _find(raw, ["WISE_4_5"])
    if w45 and not np.isfinite(np.asarray(table["mag_W2"], float)).any():
        m = _values(raw, w45)
        e = _values(raw, w45 + "_ERR") if _find(raw, [w45 + "_ERR"]) else np.full(len(raw), np.nan)
        bad = (np.abs(m) > 90) | (np.abs(e) > 90)
        table["mag_W2"] = np.where(bad, np.nan, m)
        table["mag_err_W2"] = np.where(bad, np.nan, e)
    spec = _find(raw, ["flux", "spectrum"])
    if spec is not None and raw[spec].ndim == 2:
        table["flux"] = np.asarray(raw[spec], dtype=np.float32)
        err = _find(raw, [f"{spec}_err"])
        if err is None:
            raise ValueError(f"{path}: spectrum column {spec!r} has no {spec}_err column")
        table["flux_err"] = np.asarray(raw[err], dtype=np.float32)
    return table


def resolve_bands(table: Table, bands: str | Sequence[str] = "auto", min_coverage: float = 0.8) -> tuple[str, ...]:
    """``"auto"``: the Eq. 11 bands observed for at least ``min_coverage`` of the rows; else the given list."""
    if isinstance(bands, str) and bands != "auto":
        bands = [b.strip() for b in bands.split(",") if b.strip()]
    if isinstance(bands, str):
        out = []
        for b in PAPER_BANDS:
            if (
                f"mag_{b}" in table.colnames
                and np.mean(np.isfinite(np.asarray(table[f"mag_{b}"], float))) >= min_coverage
            ):
                out.append(b)
        return tuple(out)
    missing = [b for b in bands if f"mag_{b}" not in table.colnames]
    if missing:
        raise ValueError(f"the data have no magnitude column for band(s) {', '.join(missing)}")
    return tuple(bands)


def table_features(
    table: Table,
    bands: Sequence[str],
    labels: Sequence[str] = (),
    *,
    spectra: bool = False,
    dtype=np.float64,
) -> FeatureMatrix:
    """Eq. 11 features from a :func:`load_table` table: photometry in ``bands``, ``labels``, optional spectrum."""
    phot = np.column_stack([np.asarray(table[f"mag_{b}"], float) for b in bands]) if bands else None
    perr = np.column_stack([np.asarray(table[f"mag_err_{b}"], float) for b in bands]) if bands else None
    lab = lab_err = None
    if labels:
        missing = [name for name in labels if name not in table.colnames]
        if missing:
            raise ValueError(f"the data have no label column(s) {', '.join(missing)}")
        lab = np.column_stack([np.asarray(table[name], float) for name in labels])
        lab_err = np.column_stack([np.asarray(table[f"{name}_err"], float) for name in labels])
    flux = flux_err = None
    if spectra:
        if "flux" not in table.colnames:
            raise ValueError("the data have no 2-D 'flux' (or 'spectrum') column")
        flux, flux_err = np.asarray(table["flux"]), np.asarray(table["flux_err"])
    return build_features(phot, perr, bands=bands, labels=lab, labels_err=lab_err, label_names=labels, flux=flux,
                          flux_err=flux_err, dtype=dtype)  # fmt: skip
