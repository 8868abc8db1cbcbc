"""Parent-sample and training-set selection of Hogg, Eilers & Rix §4, as masks with reasons (nothing is dropped).

* :func:`logg_cut` — ``0 < log g < 2.2``: luminous giants above the red clump (a cut on spectral labels only).
* :func:`colour_cuts` — Eq. 6 ``J − Ks < 0.4 + 0.45 (BP − RP)`` and Eq. 7 ``H − W2 > −0.05``.
* :func:`photometry_cut` — every band of the feature vector observed (Eq. 11 needs complete features).
* :func:`training_cuts` — the training quality cuts: ``σ_ϖ < 0.1 mas``, ``visibility_periods_used ≥ 8`` and Eq. 10
  ``astrometric_chi2_al / sqrt(astrometric_n_good_obs_al − 5) ≤ 35`` (:func:`jaxstars.astro.quality.hogg2019_cuts`
  pieces), plus a finite parallax with a positive, finite uncertainty. Cuts whose Gaia columns are absent from the
  table are skipped and listed. There is deliberately NO cut on the parallax value or on ϖ/σ.

All return :class:`jaxstars.astro.quality.CutResult` objects; combine them with
:func:`jaxstars.astro.quality.apply_cuts` to get one mask, the reasons per row and counts per reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxstars.astro.quality import (
    CutResult,
    chi2_ratio_cut,
    parallax_error_cut,
    visibility_periods_cut,
)

__all__ = ["colour_cuts", "logg_cut", "parent_sample_cuts", "photometry_cut", "training_cuts"]


def _col(table, name: str) -> np.ndarray:
    names = table.colnames if hasattr(table, "colnames") else list(table.keys())
    if name not in names:
        raise KeyError(f"spectrophot selection: the input has no column {name!r}")
    col = table[name]
    return (
        np.ma.filled(np.ma.asarray(col).astype(float), np.nan) if hasattr(col, "mask") else np.asarray(col, float)
    )


def _cut(passes: np.ndarray, missing: np.ndarray, label: str, missing_label: str) -> CutResult:
    reasons = np.full(passes.shape, "", dtype=object)
    reasons[~passes & ~missing] = label
    reasons[missing] = missing_label
    return CutResult(passes & ~missing, reasons)


def logg_cut(table, max_logg: float = 2.2, min_logg: float = 0.0, column: str = "logg") -> CutResult:
    """``min_logg < log g < max_logg`` (§4: luminous red giants above the red clump)."""
    g = _col(table, column)
    missing = ~np.isfinite(g)
    with np.errstate(invalid="ignore"):
        passes = (g > min_logg) & (g < max_logg)
    return _cut(passes, missing, f"logg outside ({min_logg:g}, {max_logg:g})", f"logg: missing {column}")


def colour_cuts(table) -> list[CutResult]:
    """Eq. 6 ``J − Ks < 0.4 + 0.45 (BP − RP)`` and Eq. 7 ``H − W2 > −0.05`` (canonical ``mag_*`` columns)."""
    j, ks, bp, rp = (_col(table, f"mag_{b}") for b in ("J", "Ks", "BP", "RP"))
    miss6 = ~np.isfinite(j - ks + bp - rp)
    with np.errstate(invalid="ignore"):
        eq6 = _cut(j - ks < 0.4 + 0.45 * (bp - rp), miss6, "Eq. 6: J-Ks >= 0.4+0.45(BP-RP)", "Eq. 6: missing band")
    h, w2 = _col(table, "mag_H"), _col(table, "mag_W2")
    miss7 = ~np.isfinite(h - w2)
    with np.errstate(invalid="ignore"):
        eq7 = _cut(h - w2 > -0.05, miss7, "Eq. 7: H-W2 <= -0.05", "Eq. 7: missing band")
    return [eq6, eq7]


def photometry_cut(table, bands: Sequence[str]) -> CutResult:
    """Every band in ``bands`` has a finite magnitude and a finite, positive uncertainty."""
    ok = np.ones(len(table), dtype=bool)
    for b in bands:
        m, e = _col(table, f"mag_{b}"), _col(table, f"mag_err_{b}")
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(m) & np.isfinite(e) & (e > 0)
    return _cut(ok, np.zeros_like(ok), f"incomplete photometry ({'/'.join(bands)})", "")


def parent_sample_cuts(
    table, bands: Sequence[str], *, max_logg: float = 2.2, colours: bool = True
) -> list[CutResult]:
    """§4 Parent Sample: the log g window, complete photometry in ``bands`` and (if the bands allow) Eqs. 6–7."""
    cuts = [logg_cut(table, max_logg), photometry_cut(table, bands)]
    if colours and {"J", "Ks", "BP", "RP"} <= set(bands):
        eq6, eq7 = colour_cuts(table)
        cuts.append(eq6)
        if {"H", "W2"} <= set(bands):
            cuts.append(eq7)
    return cuts


def training_cuts(table, max_parallax_error: float | None = 0.1) -> tuple[list[CutResult], list[str]]:
    """§4 training-set cuts (see the module docstring); returns ``(cuts, skipped)``.

    ``max_parallax_error=None`` drops the σ_ϖ < 0.1 mas cut (e.g. for Hipparcos parallaxes, all far above it).
    """
    names = set(table.colnames if hasattr(table, "colnames") else table.keys())
    plx, err = _col(table, "parallax"), _col(table, "parallax_error")
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(plx) & np.isfinite(err) & (err > 0)
    cuts = [_cut(usable, np.zeros_like(usable), "parallax or parallax_error unusable", "")]
    skipped = []
    if max_parallax_error is not None:
        cuts.append(parallax_error_cut(table, max_parallax_error))
    if "visibility_periods_used" in names:
        cuts.append(visibility_periods_cut(table, 8))
    else:
        skipped.append("visibility_periods_used >= 8 (no column)")
    if {"astrometric_chi2_al", "astrometric_n_good_obs_al"} <= names:
        cuts.append(chi2_ratio_cut(table, 35.0))
    else:
        skipped.append("Eq. 10 chi2 ratio (no astrometric_chi2_al / astrometric_n_good_obs_al)")
    return cuts, skipped
