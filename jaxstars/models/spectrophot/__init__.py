"""Spectrophotometric parallaxes with linear models (Hogg, Eilers & Rix, paper 003).

* :mod:`~jaxstars.models.spectrophot.model` — the forward function ``ϖ_sp = exp(θ · x)`` (Eqs. 1, 4), χ² (Eq. 2),
  the L1-regularised objective (Eq. 3), the Eq. 5 uncertainty, the NumPyro model and :class:`SpectrophotModel`;
* :mod:`~jaxstars.models.spectrophot.features` — the feature vector of Eq. 11 and its variances;
* :mod:`~jaxstars.models.spectrophot.optimize` — proximal Gauss–Newton and FISTA solvers, the two-stage start;
* :mod:`~jaxstars.models.spectrophot.training` — A/B two-fold training, cross-validation of λ and ϖ₀, the catalog;
* :mod:`~jaxstars.models.spectrophot.selection` — parent-sample (log g, Eqs. 6–7) and training (Eq. 10) cuts;
* :mod:`~jaxstars.models.spectrophot.synthetic` — APOGEE-like synthetic giants with known parallaxes;
* :mod:`~jaxstars.models.spectrophot.inputs` — data files (Green h5, APOGEE FITS, any table) → features;
* :mod:`~jaxstars.models.spectrophot.cli` — ``jaxstars spectrophot fit|predict``.
"""

from .features import FLUX_CLIP, PAPER_BANDS, FeatureMatrix, build_features
from .inputs import LABELS, load_table, resolve_bands, table_features
from .model import (
    FORMAT,
    MODEL_FILE,
    SpectrophotModel,
    SpectrophotModelError,
    chi2,
    log_parallax,
    objective,
    prediction_uncertainty,
    spectrophot_numpyro_model,
)
from .optimize import FitResult, Standardiser, fista, fit_two_stage, prox_newton, soft_threshold
from .selection import colour_cuts, logg_cut, parent_sample_cuts, photometry_cut, training_cuts
from .synthetic import SyntheticSpectrophot, apogee_wavelengths, make_synthetic
from .training import (
    DEFAULT_OPTIONS,
    FLAGS,
    TwoFoldResult,
    assign_folds,
    cross_validate,
    fit_theta,
    fractional_scatter,
    predict,
    spectrophot_catalog,
    train_two_fold,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "FLAGS",
    "FLUX_CLIP",
    "FORMAT",
    "LABELS",
    "MODEL_FILE",
    "PAPER_BANDS",
    "FeatureMatrix",
    "FitResult",
    "SpectrophotModel",
    "SpectrophotModelError",
    "Standardiser",
    "SyntheticSpectrophot",
    "TwoFoldResult",
    "apogee_wavelengths",
    "assign_folds",
    "build_features",
    "chi2",
    "colour_cuts",
    "cross_validate",
    "fista",
    "fit_theta",
    "fit_two_stage",
    "fractional_scatter",
    "load_table",
    "log_parallax",
    "logg_cut",
    "make_synthetic",
    "objective",
    "parent_sample_cuts",
    "photometry_cut",
    "predict",
    "prediction_uncertainty",
    "prox_newton",
    "resolve_bands",
    "soft_threshold",
    "spectrophot_catalog",
    "spectrophot_numpyro_model",
    "table_features",
    "train_two_fold",
    "training_cuts",
]
