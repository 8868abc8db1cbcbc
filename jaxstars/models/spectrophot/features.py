"""Feature vectors x_n of Hogg, Eilers & Rix (Eq. 11) and their diagonal variances (for Eq. 5).

``x_n = [1, G, BP, RP, J, H, Ks, W1, W2, ln f_1, …, ln f_L]``: a constant, magnitudes, and the logarithms of
pseudo-continuum-normalised spectral fluxes. Without spectra (the real samples shipped offline), spectroscopic
labels (Teff / 1000 K, log g, [Fe/H]) stand in for the pixels: they are "spectral" features, so they carry the
L1 penalty (``penalised = True``) like pixels would. Fluxes are clipped to [0.01, 1.2] before the logarithm (the
authors' code, IMPLEMENTATION_NOTES.md); the variance of ``ln f`` is ``(σ_f / f)²`` (first-order propagation).

Stars lacking any feature (NaN, or a non-positive / non-finite uncertainty) are never dropped: ``valid`` marks
them ``False`` and the models neither train on them nor predict for them (their outputs are NaN and flagged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FLUX_CLIP",
    "LABEL_SCALES",
    "PAPER_BANDS",
    "FeatureMatrix",
    "build_features",
]

PAPER_BANDS: tuple[str, ...] = ("G", "BP", "RP", "J", "H", "Ks", "W1", "W2")
"""The photometry of Eq. 11 (Gaia, 2MASS, WISE), canonical band names."""

FLUX_CLIP = (0.01, 1.2)
"""Normalised fluxes are clipped to this range before the logarithm (authors' code)."""

LABEL_SCALES: dict[str, float] = {"teff": 1000.0}
"""Labels divided by these factors to give O(1) features (Teff in kK); others are used as they are."""


@dataclass(frozen=True)
class FeatureMatrix:
    """Design matrix of Eq. 11 with its per-entry variances.

    Attributes
    ----------
    X : numpy.ndarray, shape (N, D)
        Feature vectors; column 0 is the constant 1. Rows with missing inputs hold 0 (see ``valid``).
    variance : numpy.ndarray, shape (N, D)
        Diagonal of the feature covariance C_n (Eq. 5); 0 for the constant.
    names : tuple of str
        Feature names (``"1"``, ``"mag_G"`` …, ``"label_teff"`` …, ``"lnf_0"`` …).
    penalised : numpy.ndarray of bool, shape (D,)
        The projection P of Eq. 3: ``True`` for spectral features (pixels or their label stand-ins).
    valid : numpy.ndarray of bool, shape (N,)
        Every feature and its uncertainty is usable.
    missing : numpy.ndarray of object, shape (N,)
        Comma-separated names of the unusable inputs per row ("" where valid).
    """

    X: np.ndarray
    variance: np.ndarray
    names: tuple[str, ...]
    penalised: np.ndarray
    valid: np.ndarray
    missing: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.names)


def _as_2d(values, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{what} must have shape (N, k) with N = {n}, got {np.shape(values)}")
    return arr


def build_features(
    photometry: np.ndarray | None = None,
    photometry_err: np.ndarray | None = None,
    *,
    bands: Sequence[str] = PAPER_BANDS,
    labels: np.ndarray | None = None,
    labels_err: np.ndarray | None = None,
    label_names: Sequence[str] = (),
    flux: np.ndarray | None = None,
    flux_err: np.ndarray | None = None,
    dtype=np.float64,
) -> FeatureMatrix:
    """Assemble ``x_n`` (Eq. 11) and the diagonal of ``C_n`` (Eq. 5).

    Parameters
    ----------
    photometry, photometry_err : array, shape (N, B)
        Magnitudes and their 1σ uncertainties in ``bands`` (NaN = missing).
    labels, labels_err : array, shape (N, K), optional
        Spectroscopic labels standing in for spectral pixels (divided by :data:`LABEL_SCALES`), penalised.
    label_names : sequence of str
        Names of the label columns (``teff``, ``logg``, ``feh`` …).
    flux, flux_err : array, shape (N, L), optional
        Pseudo-continuum-normalised spectral fluxes, clipped to :data:`FLUX_CLIP` before ``ln``; penalised.
    dtype
        dtype of ``X`` and ``variance`` (float32 halves the memory of the D ≈ 7,400 problem).

    Returns
    -------
    FeatureMatrix
    """
    blocks, var_blocks, names, pen, bad_parts = [], [], ["1"], [False], []
    n = None
    for arr in (photometry, labels, flux):
        if arr is not None:
            n = np.shape(arr)[0]
            break
    if n is None:
        raise ValueError("build_features needs photometry, labels or spectra")

    def add(values, errors, prefix, colnames, penalise, transform=None):
        v = _as_2d(values, n, prefix)
        if errors is None:
            raise ValueError(f"{prefix}: uncertainties are required (for Eq. 5); pass zeros for exact inputs")
        e = _as_2d(errors, n, prefix + "_err")
        if e.shape != v.shape:
            raise ValueError(f"{prefix} and its uncertainties differ in shape: {v.shape} vs {e.shape}")
        if len(colnames) != v.shape[1]:
            raise ValueError(f"{prefix}: {v.shape[1]} columns but {len(colnames)} names")
        bad = ~np.isfinite(v) | ~np.isfinite(e) | (e < 0)
        if transform is not None:
            v, e = transform(v, e)
        v = np.where(bad, 0.0, v)
        e = np.where(bad, 0.0, e)
        blocks.append(v.astype(dtype))
        var_blocks.append((e * e).astype(dtype))
        names.extend(f"{prefix}_{c}" for c in colnames)
        pen.extend([penalise] * v.shape[1])
        bad_parts.append((bad, [f"{prefix}_{c}" for c in colnames]))

    if photometry is not None:
        add(photometry, photometry_err, "mag", list(bands), False)
    if labels is not None:
        scales = np.array([LABEL_SCALES.get(name, 1.0) for name in label_names], dtype=np.float64)

        def scale(v, e):
            return v / scales, e / scales

        add(labels, labels_err, "label", list(label_names), True, scale)
    if flux is not None:
        lo, hi = FLUX_CLIP

        def log_flux(v, e):
            f = np.clip(np.nan_to_num(v, nan=1.0), lo, hi)
            return np.log(f), e / f

        add(flux, flux_err, "lnf", [str(i) for i in range(np.shape(flux)[1])], True, log_flux)

    X = np.concatenate([np.ones((n, 1), dtype=dtype), *blocks], axis=1)
    variance = np.concatenate([np.zeros((n, 1), dtype=dtype), *var_blocks], axis=1)
    valid = np.ones(n, dtype=bool)
    missing = np.full(n, "", dtype=object)
    for bad, cols in bad_parts:
        rows = np.flatnonzero(bad.any(axis=1))
        valid[rows] = False
        for i in rows:
            which = [c for c, b in zip(cols, bad[i], strict=True) if b]
            text = ",".join(which[:5]) + (f",+{len(which) - 5} more" if len(which) > 5 else "")
            missing[i] = text if not missing[i] else missing[i] + "," + text
    return FeatureMatrix(X, variance, tuple(names), np.asarray(pen, dtype=bool), valid, missing)
