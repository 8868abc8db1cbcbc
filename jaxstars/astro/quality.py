"""Catalogue quality cuts from the papers, each returning a mask *and* a reason; none is applied silently.

Every cut takes an astropy ``Table`` (or a dict of numpy arrays) with Gaia archive / 2MASS column names and
returns a :class:`CutResult` ``(mask, reasons)``: ``mask`` is ``True`` for rows that pass, ``reasons`` holds a
short fixed label for every failing row (``""`` for passing rows).  Rows whose needed value is missing (masked
or NaN) fail with the label ``"<cut>: missing <column>"`` rather than being dropped or passed silently.
A missing *column* raises ``KeyError`` naming it.  :func:`apply_cuts` combines several results into one mask,
a per-row list of reasons and a count per reason; nothing is removed from the table.

Cuts and where they come from
-----------------------------
* :func:`ruwe_cut` — ``RUWE < 1.4`` (Cranmer et al. §2, following the Gaia DR2 known-issues note on RUWE;
  FLOWER §3.1 uses ``RUWE < 2.0``).  Without a ``ruwe`` column (Gaia DR2 ``gaia_source``) it falls back, if
  asked, to the unit-weight error of :func:`unit_weight_error`, which is *not* renormalised (true RUWE divides
  it by a reference value u0(G, BP−RP), mostly slightly above 1, so the UWE cut is usually the stricter of the
  two) and says so in the reason label.
* :func:`chi2_ratio_cut` — ``astrometric_chi2_al / sqrt(astrometric_n_good_obs_al − 5) <= 35``
  (Hogg, Eilers & Rix §4, Eq. 10); :func:`parallax_error_cut` ``σ_ϖ < 0.1 mas`` and
  :func:`visibility_periods_cut` ``visibility_periods_used >= 8`` (their training cuts; the paper's text says
  "more than 8", the authors' code uses ``>= 8``, see IMPLEMENTATION_NOTES.md); :func:`hogg2019_cuts`.
* :func:`astrometric_cut_lindegren2018` — ``u < 1.2 max(1, exp(−0.2 (G − 19.5)))`` with
  ``u = sqrt(astrometric_chi2_al / (astrometric_n_good_obs_al − 5))`` (Lindegren et al. 2018, A&A 616, A2,
  App. C, Eq. C.1) and :func:`bp_rp_excess_cut` —
  ``1.0 + 0.015 (G_BP − G_RP)² < phot_bp_rp_excess_factor < 1.3 + 0.06 (G_BP − G_RP)²`` (Eq. C.2): the DR2
  cleaning filters used in the DR2 validation (Arenou et al. 2018, A&A 616, A17) and HR-diagram paper (Gaia
  Collaboration, Babusiaux et al. 2018, A&A 616, A10, who write C.1 squared:
  ``χ²/ν < 1.44 max(1, exp(−0.4 (G − 19.5)))``); :func:`arenou2018_cuts`.  For (E)DR3 photometry the excess
  factor should be the corrected C* of Riello et al. (2021); this cut is the DR2 form.
* :func:`excess_noise_cut` — ``astrometric_excess_noise_sig <= 2`` (Gaia data model: ``D > 2`` means the
  astrometric excess noise is probably significant).
* :func:`tmass_quality_cut` — 2MASS ``ph_qual == "AAA"`` (J, H, Ks all photometric quality A).
* :func:`five_parameter_cut`, :func:`g_observations_cut` and :func:`flower_cuts` — FLOWER §3.1: 5-parameter
  solutions, ``RUWE < 2.0``, at least 9 visibility periods and 3 G-band observations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "CutResult",
    "CutSummary",
    "apply_cuts",
    "arenou2018_cuts",
    "astrometric_cut_lindegren2018",
    "bp_rp_excess_cut",
    "chi2_ratio_cut",
    "cranmer2020_cuts",
    "excess_noise_cut",
    "five_parameter_cut",
    "flower_cuts",
    "g_observations_cut",
    "hogg2019_cuts",
    "parallax_error_cut",
    "ruwe_cut",
    "tmass_quality_cut",
    "unit_weight_error",
    "visibility_periods_cut",
]


class CutResult(NamedTuple):
    """One cut: ``mask`` (``True`` = passes) and ``reasons`` (label per failing row, ``""`` where it passes)."""

    mask: np.ndarray
    reasons: np.ndarray


class CutSummary(NamedTuple):
    """Several cuts combined by :func:`apply_cuts`.

    Attributes
    ----------
    mask : numpy.ndarray
        ``True`` where the row passes every cut.
    reasons : list of tuple of str
        Per row, the labels of every cut it fails (empty tuple if it passes).
    counts : dict
        Number of rows failing for each label (a row failing several cuts counts once per label).
    """

    mask: np.ndarray
    reasons: list
    counts: dict

    def __str__(self) -> str:
        n = self.mask.size
        lines = [f"{int(self.mask.sum())} of {n} rows pass"]
        lines += [f"  {count:>8d}  {label}" for label, count in sorted(self.counts.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


TableLike = Any  # astropy Table or Mapping[str, array]


def _column(table: TableLike, name: str, cut: str) -> np.ndarray:
    """Column as a float64 array with masked values as NaN; ``KeyError`` naming the column if absent."""
    names = table.colnames if hasattr(table, "colnames") else list(table.keys())
    if name not in names:
        raise KeyError(f"{cut}: the input has no column {name!r} (Gaia archive / 2MASS column names expected)")
    col = table[name]
    if hasattr(col, "mask") or isinstance(col, np.ma.MaskedArray):
        return np.ma.filled(np.ma.asarray(col).astype(float), np.nan)
    return np.asarray(col, dtype=float)


def _has(table: TableLike, name: str) -> bool:
    names = table.colnames if hasattr(table, "colnames") else list(table.keys())
    return name in names


def _result(passes: np.ndarray, missing: np.ndarray, label: str, missing_label: str) -> CutResult:
    """Build a CutResult; ``passes`` must already be False where ``missing``."""
    reasons = np.full(passes.shape, "", dtype=object)
    reasons[~passes & ~missing] = label
    reasons[missing] = missing_label
    return CutResult(passes & ~missing, reasons)


def _missing_label(cut: str, names: Sequence[str]) -> str:
    return f"{cut}: missing {'/'.join(names)}"


def unit_weight_error(table: TableLike) -> np.ndarray:
    """Astrometric unit-weight error ``u = sqrt(astrometric_chi2_al / (astrometric_n_good_obs_al − 5))``.

    This is the UWE of Lindegren et al. (2018, App. C).  The RUWE of DR2 (known-issues note) and (E)DR3 divides
    it by a reference value ``u0(G, G_BP − G_RP)``; UWE is not renormalised.  On the pyia DR3 extract
    UWE / RUWE has median 1.02 and lies in 1.00–1.31 for 98% of rows (rank correlation 0.95), so for DR3 a UWE
    cut at the same threshold is slightly stricter than the RUWE cut.  NaN where ``n_good_obs <= 5`` or inputs
    are missing.
    """
    chi2 = _column(table, "astrometric_chi2_al", "unit_weight_error")
    n_good = _column(table, "astrometric_n_good_obs_al", "unit_weight_error")
    dof = n_good - 5.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dof > 0, np.sqrt(chi2 / np.where(dof > 0, dof, 1.0)), np.nan)


def ruwe_cut(table: TableLike, max_ruwe: float = 1.4, *, allow_uwe: bool = True) -> CutResult:
    """``ruwe < max_ruwe`` (Cranmer et al. §2: 1.4; FLOWER §3.1: 2.0).

    Parameters
    ----------
    table : astropy Table or dict of arrays
    max_ruwe : float
        Threshold (strict ``<``).
    allow_uwe : bool
        If the table has no ``ruwe`` column (Gaia DR2), use :func:`unit_weight_error` instead; the reason label
        then reads ``"uwe >= …"`` and notes that it is not renormalised.  If ``False``, a missing ``ruwe``
        column raises ``KeyError``.
    """
    if _has(table, "ruwe") or not allow_uwe:
        value = _column(table, "ruwe", "ruwe_cut")
        label = f"ruwe >= {max_ruwe:g}"
        missing_label = _missing_label("ruwe", ["ruwe"])
    else:
        value = unit_weight_error(table)
        label = f"uwe >= {max_ruwe:g} (no ruwe column; chi2-based UWE, not renormalised)"
        missing_label = _missing_label("uwe", ["astrometric_chi2_al", "astrometric_n_good_obs_al"])
    missing = ~np.isfinite(value)
    with np.errstate(invalid="ignore"):
        passes = value < max_ruwe
    return _result(passes, missing, label, missing_label)


def visibility_periods_cut(table: TableLike, min_periods: int = 8) -> CutResult:
    """``visibility_periods_used >= min_periods`` (Hogg et al.: 8; FLOWER: 9)."""
    value = _column(table, "visibility_periods_used", "visibility_periods_cut")
    missing = ~np.isfinite(value)
    with np.errstate(invalid="ignore"):
        passes = value >= min_periods
    return _result(
        passes,
        missing,
        f"visibility_periods_used < {min_periods}",
        _missing_label("visibility", ["visibility_periods_used"]),
    )


def parallax_error_cut(table: TableLike, max_error: float = 0.1) -> CutResult:
    """``parallax_error < max_error`` (mas; Hogg et al. training set: 0.1 mas).  Non-positive errors fail."""
    value = _column(table, "parallax_error", "parallax_error_cut")
    missing = ~np.isfinite(value)
    with np.errstate(invalid="ignore"):
        nonpositive = value <= 0
        passes = (value < max_error) & ~nonpositive
    result = _result(
        passes,
        missing,
        f"parallax_error >= {max_error:g} mas",
        _missing_label("parallax_error", ["parallax_error"]),
    )
    result.reasons[nonpositive & ~missing] = "parallax_error <= 0"
    return result


def chi2_ratio_cut(table: TableLike, max_ratio: float = 35.0) -> CutResult:
    """``astrometric_chi2_al / sqrt(astrometric_n_good_obs_al − 5) <= max_ratio`` (Hogg et al. Eq. 10)."""
    chi2 = _column(table, "astrometric_chi2_al", "chi2_ratio_cut")
    n_good = _column(table, "astrometric_n_good_obs_al", "chi2_ratio_cut")
    dof = n_good - 5.0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(dof > 0, chi2 / np.sqrt(np.where(dof > 0, dof, 1.0)), np.nan)
        passes = ratio <= max_ratio
    missing = ~np.isfinite(ratio)
    return _result(
        passes,
        missing,
        f"chi2_al/sqrt(n_good_obs-5) > {max_ratio:g}",
        _missing_label("chi2_ratio", ["astrometric_chi2_al", "astrometric_n_good_obs_al"]),
    )


def astrometric_cut_lindegren2018(table: TableLike) -> CutResult:
    """``u < 1.2 max(1, exp(−0.2 (G − 19.5)))`` (Lindegren et al. 2018, Eq. C.1), ``u`` the unit-weight error."""
    u = unit_weight_error(table)
    g = _column(table, "phot_g_mean_mag", "astrometric_cut_lindegren2018")
    threshold = 1.2 * np.maximum(1.0, np.exp(-0.2 * (g - 19.5)))
    missing = ~np.isfinite(u) | ~np.isfinite(g)
    with np.errstate(invalid="ignore"):
        passes = u < threshold
    return _result(
        passes,
        missing,
        "uwe >= 1.2 max(1, exp(-0.2 (G-19.5)))",
        _missing_label("astrometric_C1", ["astrometric_chi2_al", "astrometric_n_good_obs_al", "phot_g_mean_mag"]),
    )


def bp_rp_excess_cut(table: TableLike) -> CutResult:
    """``1.0 + 0.015 c² < phot_bp_rp_excess_factor < 1.3 + 0.06 c²``, ``c = G_BP − G_RP`` (Lindegren+2018 C.2).

    The colour is ``phot_bp_mean_mag − phot_rp_mean_mag``; rows without BP/RP photometry fail as missing.
    """
    excess = _column(table, "phot_bp_rp_excess_factor", "bp_rp_excess_cut")
    colour = _column(table, "phot_bp_mean_mag", "bp_rp_excess_cut") - _column(
        table, "phot_rp_mean_mag", "bp_rp_excess_cut"
    )
    missing = ~np.isfinite(excess) | ~np.isfinite(colour)
    with np.errstate(invalid="ignore"):
        passes = (excess > 1.0 + 0.015 * colour**2) & (excess < 1.3 + 0.06 * colour**2)
    return _result(
        passes,
        missing,
        "phot_bp_rp_excess_factor outside (1.0+0.015c^2, 1.3+0.06c^2)",
        _missing_label("bp_rp_excess", ["phot_bp_rp_excess_factor", "phot_bp_mean_mag", "phot_rp_mean_mag"]),
    )


def excess_noise_cut(table: TableLike, max_significance: float = 2.0) -> CutResult:
    """``astrometric_excess_noise_sig <= max_significance`` (Gaia data model: ``> 2`` is probably significant)."""
    value = _column(table, "astrometric_excess_noise_sig", "excess_noise_cut")
    missing = ~np.isfinite(value)
    with np.errstate(invalid="ignore"):
        passes = value <= max_significance
    return _result(
        passes,
        missing,
        f"astrometric_excess_noise_sig > {max_significance:g}",
        _missing_label("excess_noise", ["astrometric_excess_noise_sig"]),
    )


def tmass_quality_cut(table: TableLike, column: str = "ph_qual", required: str = "AAA") -> CutResult:
    """2MASS photometric quality flag equal to ``required`` (default ``"AAA"``: J, H, Ks all quality A).

    Accepts str or bytes values; masked / empty values (no 2MASS match) fail as missing.
    """
    names = table.colnames if hasattr(table, "colnames") else list(table.keys())
    if column not in names:
        raise KeyError(f"tmass_quality_cut: the input has no column {column!r} (2MASS ph_qual flag)")
    col = table[column]
    masked = np.ma.getmaskarray(np.ma.asarray(col)) if hasattr(col, "mask") else np.zeros(len(col), dtype=bool)
    raw = np.asarray(np.ma.asarray(col).data if hasattr(col, "mask") else col)
    values = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in raw.ravel()], dtype=object).reshape(
        raw.shape
    )
    values = np.array([v.strip() for v in values], dtype=object)
    missing = masked | (values == "") | (values == "--")
    passes = values == required
    return _result(passes, missing, f"{column} != {required}", _missing_label("tmass", [column]))


def five_parameter_cut(table: TableLike) -> CutResult:
    """``astrometric_params_solved == 31`` (5-parameter solution; FLOWER §3.1)."""
    value = _column(table, "astrometric_params_solved", "five_parameter_cut")
    missing = ~np.isfinite(value)
    return _result(
        value == 31,
        missing,
        "not a 5-parameter solution",
        _missing_label("five_parameter", ["astrometric_params_solved"]),
    )


def g_observations_cut(table: TableLike, min_obs: int = 3) -> CutResult:
    """``phot_g_n_obs >= min_obs`` (FLOWER §3.1: at least 3 G-band observations)."""
    value = _column(table, "phot_g_n_obs", "g_observations_cut")
    missing = ~np.isfinite(value)
    with np.errstate(invalid="ignore"):
        passes = value >= min_obs
    return _result(
        passes, missing, f"phot_g_n_obs < {min_obs}", _missing_label("g_observations", ["phot_g_n_obs"])
    )


def cranmer2020_cuts(table: TableLike) -> list[CutResult]:
    """Cranmer et al. §2 quality cut: RUWE < 1.4 (UWE fallback for DR2 tables without ``ruwe``)."""
    return [ruwe_cut(table, 1.4)]


def hogg2019_cuts(table: TableLike) -> list[CutResult]:
    """Hogg, Eilers & Rix training-set cuts: visibility periods ≥ 8, σ_ϖ < 0.1 mas, Eq. 10 ≤ 35."""
    return [visibility_periods_cut(table, 8), parallax_error_cut(table, 0.1), chi2_ratio_cut(table, 35.0)]


def arenou2018_cuts(table: TableLike) -> list[CutResult]:
    """Gaia DR2 astrometric (Eq. C.1) and photometric-excess (Eq. C.2) cleaning filters of Lindegren et al. 2018."""
    return [astrometric_cut_lindegren2018(table), bp_rp_excess_cut(table)]


def flower_cuts(table: TableLike) -> list[CutResult]:
    """FLOWER §3.1 (O'Callaghan et al.): 5-p solutions, RUWE < 2.0, ≥ 9 visibility periods, ≥ 3 G observations."""
    return [
        five_parameter_cut(table),
        ruwe_cut(table, 2.0),
        visibility_periods_cut(table, 9),
        g_observations_cut(table, 3),
    ]


def apply_cuts(results: Sequence[CutResult] | CutResult) -> CutSummary:
    """Combine cut results: one mask, the list of failed reasons per row, and a count per reason.

    Parameters
    ----------
    results : sequence of CutResult (or a single one)
        E.g. ``hogg2019_cuts(t) + [tmass_quality_cut(t)]``.  All must have the same length.

    Returns
    -------
    CutSummary
        ``str(summary)`` gives a readable report.  The table itself is not modified: select with
        ``table[summary.mask]`` when you decide to.
    """
    if isinstance(results, CutResult):
        results = [results]
    results = list(results)
    if not results:
        raise ValueError("apply_cuts needs at least one CutResult")
    lengths = {len(r.mask) for r in results}
    if len(lengths) != 1:
        raise ValueError(f"cut results have different lengths {sorted(lengths)}: were they computed on one table?")
    mask = np.logical_and.reduce([np.asarray(r.mask, dtype=bool) for r in results])
    reasons_matrix = np.stack([np.asarray(r.reasons, dtype=object) for r in results], axis=1)
    per_row = [tuple(label for label in row if label) for row in reasons_matrix]
    counts = Counter(label for row in per_row for label in row)
    return CutSummary(mask=mask, reasons=per_row, counts=dict(counts))
