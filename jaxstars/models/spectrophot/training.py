"""Two-fold A/B training, cross-validation of λ and ϖ₀, predictions and the output catalog (§3, §5).

Every Parent-Sample star gets a random fold label A or B (:func:`assign_folds`). θ_A is fitted on the Training-Set
stars of fold A and predicts the stars of fold B, and vice versa (:func:`train_two_fold`), so no star's own
parallax enters its spectrophotometric parallax, even indirectly. λ and ϖ₀ are chosen on a grid by the same
two-fold split (:func:`cross_validate`): the score is the held-out χ² of the Gaia parallaxes of each fold's
training stars under the other fold's predictions (lower is better). Predictions carry the Eq. 5 uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from .features import FeatureMatrix
from .model import SpectrophotModel
from .optimize import FitResult, Standardiser, fit_two_stage

__all__ = [
    "DEFAULT_OPTIONS",
    "FLAGS",
    "TwoFoldResult",
    "assign_folds",
    "cross_validate",
    "fit_theta",
    "fractional_scatter",
    "predict",
    "spectrophot_catalog",
    "train_two_fold",
]

DEFAULT_OPTIONS = {
    "newton": {"tol": 1e-10, "inner_tol": 1e-8, "max_inner": 5000, "max_iter": 50},
    "fista": {"tol": 1e-9, "patience": 50, "max_iter": 50000},
}
"""Solver settings used unless overridden (see :mod:`.optimize`)."""

FLAGS = {"missing_feature": 1, "no_training_parallax": 2, "not_in_parent_sample": 4, "exp_overflow": 8}
"""Bits of the catalog's ``flags`` column. ``no_training_parallax`` is information, not an error."""


def assign_folds(n: int, seed: int = 0) -> np.ndarray:
    """A random, balanced A/B label per star (``numpy`` array of ``'A'``/``'B'``); same seed → same labels."""
    rng = np.random.default_rng(seed)
    labels = np.where(np.arange(n) < (n + 1) // 2, "A", "B")
    return labels[rng.permutation(n)]


def fit_theta(
    features: FeatureMatrix,
    parallax: np.ndarray,
    parallax_error: np.ndarray,
    rows: np.ndarray,
    lam: float,
    zero_point: float,
    *,
    method: str = "newton",
    options: dict | None = None,
    dtype=np.float32,
    theta0: np.ndarray | None = None,
) -> tuple[np.ndarray, FitResult]:
    """Fit Eq. 3 on the stars ``rows`` (bool mask); returns θ in raw feature units and the stage-2 result."""
    rows = np.asarray(rows, dtype=bool) & features.valid
    if rows.sum() < 2:
        raise ValueError(f"fit_theta: only {int(rows.sum())} usable training stars")
    st = Standardiser.fit(features.X, rows)
    Xs = st.transform(features.X[rows], dtype=dtype)
    y = np.asarray(parallax, np.float64)[rows] + zero_point
    w = st.penalty_weights(features.penalised, lam)
    opts = {**DEFAULT_OPTIONS.get(method, {}), **(options or {})}
    start = None if theta0 is None else st.theta_from_raw(theta0)
    result, _ = fit_two_stage(Xs, y, np.asarray(parallax_error, np.float64)[rows], w, theta0=start, method=method,
                              options=opts)  # fmt: skip
    theta = st.theta_to_raw(result.theta)
    theta[features.penalised & (result.theta == 0)] = 0.0  # exact zeros survive the unscaling
    return theta, result


def predict(theta: np.ndarray, features: FeatureMatrix) -> tuple[np.ndarray, np.ndarray]:
    """``(ϖ_sp, σ_sp)`` (Eqs. 4–5, numpy float64); NaN for stars with missing features."""
    eta = features.X.astype(np.float64) @ theta
    with np.errstate(over="ignore", invalid="ignore"):
        plx = np.exp(eta)
        sig = plx * np.sqrt(features.variance.astype(np.float64) @ (theta * theta))
    plx[~features.valid] = np.nan
    sig[~features.valid] = np.nan
    return plx, sig


@dataclass
class TwoFoldResult:
    """Output of :func:`train_two_fold`: the model, per-star predictions and the fits."""

    model: SpectrophotModel
    parallax_sp: np.ndarray
    parallax_sp_error: np.ndarray
    folds: np.ndarray
    fits: dict


def train_two_fold(
    features: FeatureMatrix,
    parallax: np.ndarray,
    parallax_error: np.ndarray,
    training: np.ndarray,
    folds: np.ndarray,
    lam: float,
    zero_point: float,
    *,
    method: str = "newton",
    options: dict | None = None,
    dtype=np.float32,
    config: dict | None = None,
    warm: dict | None = None,
) -> TwoFoldResult:
    """Fit θ_A on training stars of fold A and θ_B on fold B; predict each star with the other fold's θ."""
    training = np.asarray(training, bool) & features.valid
    thetas, fits = {}, {}
    for f in ("A", "B"):
        start = None if warm is None else warm.get(f)
        thetas[f], fits[f] = fit_theta(features, parallax, parallax_error, training & (folds == f), lam, zero_point,
                                       method=method, options=options, dtype=dtype, theta0=start)  # fmt: skip
    model = SpectrophotModel(thetas, features.names, features.penalised, lam, zero_point, dict(config or {}))
    plx = np.full(len(folds), np.nan)
    sig = np.full(len(folds), np.nan)
    for f in ("A", "B"):
        rows = folds == f
        p, s = predict(model.theta_for(f), features)
        plx[rows], sig[rows] = p[rows], s[rows]
    return TwoFoldResult(model, plx, sig, folds, fits)


def heldout_chi2(result: TwoFoldResult, parallax, parallax_error, training) -> float:
    """Held-out χ² of the Gaia parallaxes of all training stars under the other fold's predictions."""
    rows = np.asarray(training, bool) & np.isfinite(result.parallax_sp)
    r = (np.asarray(parallax)[rows] + result.model.zero_point - result.parallax_sp[rows]) / np.asarray(
        parallax_error
    )[rows]
    return float(np.sum(r * r))


def cross_validate(
    features: FeatureMatrix,
    parallax: np.ndarray,
    parallax_error: np.ndarray,
    training: np.ndarray,
    folds: np.ndarray,
    lams: Sequence[float],
    zero_points: Sequence[float],
    **kwargs,
) -> dict:
    """Grid search of (λ, ϖ₀) by two-fold CV (§5). λ runs from large to small with warm starts.

    Returns
    -------
    dict
        ``grid``: list of ``{lam, zero_point, heldout_chi2, sparsity}``; ``best``: the entry with the lowest
        held-out χ²; ``result``: its :class:`TwoFoldResult`.
    """
    grid, best, best_result = [], None, None
    for zp in zero_points:
        warm = None
        for lam in sorted(lams, reverse=True):
            res = train_two_fold(features, parallax, parallax_error, training, folds, lam, zp, warm=warm, **kwargs)
            warm = res.model.thetas
            entry = {
                "lam": float(lam),
                "zero_point": float(zp),
                "heldout_chi2": heldout_chi2(res, parallax, parallax_error, training),
                "sparsity": res.model.sparsity(),
            }
            grid.append(entry)
            if best is None or entry["heldout_chi2"] < best["heldout_chi2"]:
                best, best_result = entry, res
    return {"grid": grid, "best": best, "result": best_result}


def fractional_scatter(parallax_sp, parallax, parallax_error, zero_point=0.0, min_snr: float = 20.0) -> dict:
    """Scatter of ``ϖ_sp / ϖ_a − 1`` for stars with ``ϖ/σ > min_snr`` (the paper's Fig. 2 right panel, < 9 %).

    Returns ``n``, ``std`` (plain standard deviation), ``robust`` (1.4826 × MAD of ``ln(ϖ_sp / ϖ_a)``), ``bias``
    (median of ``ϖ_sp / ϖ_a − 1``) and ``gaia_noise`` (median σ/ϖ of those stars, which the scatter includes).
    """
    plx = np.asarray(parallax, float) + zero_point
    err = np.asarray(parallax_error, float)
    sp = np.asarray(parallax_sp, float)
    rows = np.isfinite(sp) & (plx / err > min_snr)
    if rows.sum() < 2:
        return {"n": int(rows.sum()), "std": None, "robust": None, "bias": None, "gaia_noise": None}
    ratio = sp[rows] / plx[rows]
    lr = np.log(ratio)
    return {
        "n": int(rows.sum()),
        "std": float(np.std(ratio - 1.0)),
        "robust": float(1.4826 * np.median(np.abs(lr - np.median(lr)))),
        "bias": float(np.median(ratio) - 1.0),
        "gaia_noise": float(np.median(err[rows] / plx[rows])),
    }


def spectrophot_catalog(
    result: TwoFoldResult,
    features: FeatureMatrix,
    parallax: np.ndarray,
    parallax_error: np.ndarray,
    training: np.ndarray,
    parent: np.ndarray | None = None,
) -> Table:
    """The output catalog (the paper's Table 1): Gaia and spectrophotometric parallaxes, fold, training flag.

    Columns: ``parallax``, ``parallax_error`` (input, untouched), ``parallax_sp``, ``parallax_sp_error`` [mas],
    ``fold`` (A/B: the star's own fold; its prediction uses the other fold's θ), ``training`` (bool), ``flags``
    (bits of :data:`FLAGS`) and ``missing_features``. ``meta`` holds λ, ϖ₀ and the sparsity of θ per fold.
    """
    n = len(result.folds)
    flags = np.zeros(n, dtype=np.int64)
    flags[~features.valid] |= FLAGS["missing_feature"]
    flags[~np.asarray(training, bool)] |= FLAGS["no_training_parallax"]
    if parent is not None:
        flags[~np.asarray(parent, bool)] |= FLAGS["not_in_parent_sample"]
    flags[features.valid & ~np.isfinite(result.parallax_sp)] |= FLAGS["exp_overflow"]
    out = Table()
    out["parallax"] = np.asarray(parallax, float)
    out["parallax_error"] = np.asarray(parallax_error, float)
    out["parallax_sp"] = result.parallax_sp
    out["parallax_sp_error"] = result.parallax_sp_error
    for name in ("parallax", "parallax_error", "parallax_sp", "parallax_sp_error"):
        out[name].unit = "mas"
    out["fold"] = result.folds.astype("U1")
    out["training"] = np.asarray(training, bool)
    out["flags"] = flags
    out["missing_features"] = np.asarray(features.missing, dtype=str)
    out.meta.update(
        {
            "LAMBDA": result.model.lam,
            "PLXZP": result.model.zero_point,
            "SPARSE_A": result.model.sparsity().get("A"),
            "SPARSE_B": result.model.sparsity().get("B"),
            "MODEL": "Hogg, Eilers & Rix spectrophotometric parallaxes (jaxstars.models.spectrophot)",
        }
    )
    return out
