"""Validation metrics of FLOWER's reddening posteriors (O'Callaghan et al., paper 002, §5.1) and synthetic reddening.

* :func:`reddening_metrics` — the §5.1.2 summary of posterior reddening against a known truth: the residual of
  the posterior-mean ``E`` (the paper quotes "a 0.006 mag residual" for Gaia+PS1 and 0.002 mag with 2MASS without
  saying which statistic; mean, median and rms are all given here), the mean posterior standard deviation
  (paper: 0.044 / 0.038 mag) and the calibration, i.e. the fraction of true values inside the central 68 %
  (q16–q84) and 95 % (q2.5–q97.5) posterior intervals.
* :func:`distance_metrics` — the same calibration for distances, plus fractional errors, when the truth is known.
* :func:`add_synthetic_reddening` — §5.1.1: redden (nearly) zero-extinction stars by a known ``E`` through the
  model's extinction law ``A = R(E, C) E`` (§2.8), with ``C = (BP − RP)₀`` the stars' intrinsic colour.

Everything here is plain NumPy on arrays or astropy tables (no model evaluation).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["add_synthetic_reddening", "distance_metrics", "reddening_metrics"]


def _as_float(values, n: int | None = None) -> np.ndarray:
    col = values
    if hasattr(col, "filled") and np.ma.isMaskedArray(col):
        col = col.filled(np.nan)
    a = np.asarray(getattr(col, "value", col), dtype=np.float64).ravel()
    if n is not None and a.shape[0] != n:
        raise ValueError(f"expected {n} values, got {a.shape[0]}")
    return a


def _number(value) -> float | None:
    """A JSON-friendly float: ``None`` for NaN / inf."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fraction_inside(truth, lo, hi) -> float | None:
    if truth.size == 0:
        return None
    return float(np.mean((truth >= lo) & (truth <= hi)))


def reddening_metrics(
    true_ebv,
    ebv_mean,
    ebv_std,
    ebv_q2_5,
    ebv_q16,
    ebv_q84,
    ebv_q97_5,
    flags=None,
) -> dict:
    """§5.1.2 metrics of reddening posteriors against a known truth.

    Parameters
    ----------
    true_ebv : array (n,)
        True ``E(B−V)`` (NaN where unknown).
    ebv_mean, ebv_std : array (n,)
        Posterior mean and standard deviation of ``E`` (NaN where there is no result).
    ebv_q2_5, ebv_q16, ebv_q84, ebv_q97_5 : array (n,)
        Posterior quantiles (2.5 %, 16 %, 84 %, 97.5 %).
    flags : array of int (n,), optional
        The posterior's flag bit field; only counted (``n_flagged``), rows are not excluded for it.

    Returns
    -------
    dict
        ``n_rows`` (rows given); ``n`` (rows with a finite truth, mean, std and all four quantiles: the rows every
        other number is computed on); ``n_no_result`` (rows with a finite truth but no finite result);
        ``n_flagged`` (rows among the ``n`` with any flag bit set; ``None`` without ``flags``);
        ``mean_residual`` = mean(ebv_mean − true_ebv), ``median_residual``, ``rms_residual``;
        ``mean_posterior_std`` = mean(ebv_std); ``normalised_residual_std`` = std((ebv_mean − true_ebv) / ebv_std)
        (≈ 1 for calibrated Gaussian-like posteriors); ``coverage_68`` = fraction with
        ``q16 ≤ true_ebv ≤ q84``; ``coverage_95`` = fraction with ``q2_5 ≤ true_ebv ≤ q97_5``.  Statistics over
        no rows are ``None``.
    """
    truth = _as_float(true_ebv)
    n_rows = truth.shape[0]
    mean, std, q025, q16, q84, q975 = (
        _as_float(a, n_rows) for a in (ebv_mean, ebv_std, ebv_q2_5, ebv_q16, ebv_q84, ebv_q97_5)
    )
    has_result = np.isfinite(mean) & np.isfinite(std) & np.isfinite(q025) & np.isfinite(q16)
    has_result &= np.isfinite(q84) & np.isfinite(q975)
    known = np.isfinite(truth)
    ok = has_result & known
    out: dict = {
        "n_rows": int(n_rows),
        "n": int(ok.sum()),
        "n_no_result": int((known & ~has_result).sum()),
        "n_flagged": None,
    }
    if flags is not None:
        f = np.asarray(flags, dtype=np.int64).ravel()
        if f.shape[0] != n_rows:
            raise ValueError(f"expected {n_rows} flags, got {f.shape[0]}")
        out["n_flagged"] = int(np.count_nonzero(f[ok]))
    t = truth[ok]
    residual = mean[ok] - t
    s = std[ok]
    if t.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = residual / s
        z = z[np.isfinite(z)]
        out.update(
            mean_residual=_number(np.mean(residual)),
            median_residual=_number(np.median(residual)),
            rms_residual=_number(np.sqrt(np.mean(residual**2))),
            mean_posterior_std=_number(np.mean(s)),
            normalised_residual_std=_number(np.std(z)) if z.size else None,
        )
    else:
        out.update(
            mean_residual=None,
            median_residual=None,
            rms_residual=None,
            mean_posterior_std=None,
            normalised_residual_std=None,
        )
    out["coverage_68"] = _fraction_inside(t, q16[ok], q84[ok])
    out["coverage_95"] = _fraction_inside(t, q025[ok], q975[ok])
    return out


def distance_metrics(
    true_distance, distance_mean, distance_q2_5, distance_q16, distance_q50, distance_q84, distance_q97_5
) -> dict:
    """Distance posteriors against a known true distance (simulations).

    Returns
    -------
    dict
        ``n`` (rows with a finite positive truth and finite results); ``median_abs_fractional_error`` =
        median(|q50 − d| / d) of the posterior median; ``mean_fractional_residual`` = mean((mean − d) / d) of the
        posterior mean; ``coverage_68`` (``q16 ≤ d ≤ q84``) and ``coverage_95`` (``q2_5 ≤ d ≤ q97_5``).
    """
    truth = _as_float(true_distance)
    n = truth.shape[0]
    mean, q025, q16, q50, q84, q975 = (
        _as_float(a, n)
        for a in (distance_mean, distance_q2_5, distance_q16, distance_q50, distance_q84, distance_q97_5)
    )
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(truth) & (truth > 0)
    for a in (mean, q025, q16, q50, q84, q975):
        ok &= np.isfinite(a)
    t = truth[ok]
    out: dict = {"n": int(ok.sum())}
    if t.size:
        out["median_abs_fractional_error"] = _number(np.median(np.abs(q50[ok] - t) / t))
        out["mean_fractional_residual"] = _number(np.mean((mean[ok] - t) / t))
    else:
        out["median_abs_fractional_error"] = None
        out["mean_fractional_residual"] = None
    out["coverage_68"] = _fraction_inside(t, q16[ok], q84[ok])
    out["coverage_95"] = _fraction_inside(t, q025[ok], q975[ok])
    return out


def _column_or_nan(table, name: str, n: int) -> np.ndarray:
    if name in table.colnames:
        return _as_float(table[name], n)
    return np.full(n, np.nan)


def _intrinsic_from_truth(features, table, n: int) -> np.ndarray:
    """``x = Λ M`` from the ``true_absmag_<band>`` columns (NaN where absent)."""
    absmag = np.stack([_column_or_nan(table, f"true_absmag_{b}", n) for b in features.catalog_bands], axis=1)
    return np.asarray(features.intrinsic(absmag), dtype=np.float64)


def _intrinsic_from_observed(features, table, e0: np.ndarray, n: int, iterations: int = 5) -> np.ndarray:
    """Colours of ``x̂ = Λ(m̂ − A(E₀, x̂))`` from the observed photometry, dereddened by the known ``E₀``.

    Only the colours matter to the law (its argument is ``(BP − RP)₀ = x_BP − x_RP``); the leading component
    would need the distance and is left at the apparent magnitude.  A short fixed-point iteration handles the
    colour dependence of ``R``; with ``E₀ = 0`` the observed colours are returned.
    """
    mag = np.stack([_column_or_nan(table, f"mag_{b}", n) for b in features.catalog_bands], axis=1)
    x_obs = np.asarray(features.intrinsic(mag), dtype=np.float64)
    e0 = np.where(np.isfinite(e0), e0, 0.0)
    x = x_obs
    for _ in range(iterations):
        a = np.asarray(features.extinction(e0, x), dtype=np.float64)
        x = x_obs - np.asarray(features.intrinsic(a), dtype=np.float64)
    return x


def add_synthetic_reddening(model, table, ebv: float, *, intrinsic: str = "auto", truth_column: str = "true_ebv"):
    """A copy of ``table`` reddened by a further ``E(B−V) = ebv`` through the model's law (§5.1.1).

    For each star with known reddening ``E₀`` (column ``truth_column``; 0 when the table has no such column: the
    stars are assumed extinction-free, as FLOWER's validation stars are) and intrinsic features ``x``, every band
    of the model gets ``Δm_b = A_b(E₀ + E, x) − A_b(E₀, x)``, with ``A(E, x) = R(E, C) E`` from
    ``model.features.extinction`` (``C = (BP − RP)₀`` from ``x``; the law is non-linear in ``E``, hence the
    difference rather than ``A(E, x)`` alone).  ``Δm`` is added to ``mag_<band>`` (and to the noise-free
    ``true_mag_<band>`` if present); the magnitude errors are unchanged (the stars' photometric noise is already in
    ``mag_<band>``, as in the paper, which reddens observed validation photometry).  Bands outside the model's
    set are left as they were (the model does not read them).

    Which ``x`` (only its ``(BP − RP)₀`` matters):

    * ``"truth"`` — ``Λ`` of the ``true_absmag_<band>`` columns (simulations): the exact intrinsic colour;
    * ``"observed"`` — the observed colours dereddened by ``E₀`` (:func:`_intrinsic_from_observed`), i.e. the
      paper's choice of the validation stars' own Gaia ``BP − RP``; photometric noise then enters the law's
      argument, a second-order effect (``∂R/∂C · δC · E``);
    * ``"auto"`` — ``"truth"`` when every ``true_absmag_<band>`` column of the model's bands exists, else
      ``"observed"``; rows whose truth is not finite fall back to the observed colours.

    Parameters
    ----------
    model : FlowerModel or FlowerFeatures
        Anything with ``features`` (or the features themselves): bands, ``intrinsic`` and ``extinction``.
    table : astropy.table.Table
        Canonical columns ``mag_<band>`` (PS1 as ``mag_ps1_g`` …), optionally ``true_ebv``, ``true_absmag_<band>``.
    ebv : float
        The added reddening ``E(B−V)`` (SFD scale, mag); 0 returns an unreddened copy with the truth columns.
    intrinsic : {"auto", "truth", "observed"}
    truth_column : str
        Column of the known reddening ``E₀``.

    Returns
    -------
    astropy.table.Table
        A new table with reddened ``mag_<band>`` (``true_mag_<band>``), ``true_ebv = E₀ + ebv`` and
        ``synthetic_ebv = ebv``.  Rows whose ``E₀`` is NaN, or whose law colour is unknown (no ``BP``/``RP`` and
        no truth), get ``true_ebv`` NaN (left out of :func:`reddening_metrics`); the latter are not reddened.
    """
    from astropy.table import Table

    features = getattr(model, "features", model)
    if intrinsic not in ("auto", "truth", "observed"):
        raise ValueError(f"intrinsic must be 'auto', 'truth' or 'observed', got {intrinsic!r}")
    ebv = float(ebv)
    if not math.isfinite(ebv):
        raise ValueError(f"ebv must be finite, got {ebv}")
    out = Table(table, copy=True)
    n = len(out)
    bands = features.catalog_bands
    e0 = _column_or_nan(out, truth_column, n) if truth_column in out.colnames else np.zeros(n)
    e0_used = np.where(np.isfinite(e0), e0, 0.0)

    has_truth = all(f"true_absmag_{b}" in out.colnames for b in bands)
    if intrinsic == "truth" and not has_truth:
        missing = [f"true_absmag_{b}" for b in bands if f"true_absmag_{b}" not in out.colnames]
        raise ValueError(f"intrinsic='truth' needs the columns {missing}")
    x = _intrinsic_from_observed(features, out, e0_used, n)
    if intrinsic in ("auto", "truth") and has_truth:
        x_true = _intrinsic_from_truth(features, out, n)
        colour_ok = (
            np.isfinite(np.asarray(features.law_colour(x_true))) if features.law_argument else np.ones(n, bool)
        )
        x = np.where(colour_ok[:, None], x_true, x)

    a_after = np.asarray(features.extinction(e0_used + ebv, x), dtype=np.float64)
    a_before = np.asarray(features.extinction(e0_used, x), dtype=np.float64)
    delta = a_after - a_before
    unknown = ~np.all(np.isfinite(delta), axis=1)  # no (BP − RP)₀ for the law: left unreddened, truth unknown
    delta[unknown] = 0.0
    for j, band in enumerate(bands):
        for name in (f"mag_{band}", f"true_mag_{band}"):
            if name in out.colnames:
                values = _as_float(out[name], n) + delta[:, j]
                unit = getattr(out[name], "unit", None)
                description = getattr(out[name], "description", None)
                out[name] = values
                out[name].unit = unit
                out[name].description = description
    out[truth_column] = np.where(np.isfinite(e0) & ~unknown, e0 + ebv, np.nan)
    out[truth_column].description = "true E(B-V) including the synthetic reddening"
    out["synthetic_ebv"] = np.full(n, ebv)
    out["synthetic_ebv"].description = "E(B-V) added through the model's extinction law (FLOWER §5.1.1)"
    return out
