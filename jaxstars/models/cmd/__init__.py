"""Cranmer et al. (paper 000): a normalising-flow colour–magnitude density learned with iterative dust, and the
photometric distance posteriors it gives.

* :mod:`~jaxstars.models.cmd.features` — the modelled vector (M_G, BP−RP, BP−G[, G−X …]) and its extinction;
* :mod:`~jaxstars.models.cmd.model` — :class:`CMDModel` (flow + standardisation + zero-point), per-star inputs;
* :mod:`~jaxstars.models.cmd.training` — §3.2: parallax samples (Eq. 1), iterative dust (Eq. 2), weighted loss;
* :mod:`~jaxstars.models.cmd.posterior` — distance posteriors (grid, vectorised) and the NumPyro/NUTS model;
* :mod:`~jaxstars.models.cmd.sampling` — the same posteriors by vmapped per-star NUTS (shared inference engine).
"""

from .features import CRANMER_BAND_EXTINCTION, CMDFeatures, gaia_cmd_features
from .model import FLAGS, CMDModel, CMDStars, flag_names, prepare_stars
from .posterior import (
    PosteriorConfig,
    distance_log_posterior,
    distance_model,
    distance_posteriors,
    photometric_covariance,
    photometric_quadrature,
    run_nuts,
)
from .sampling import nuts_distance_posteriors
from .training import (
    BestEstimate,
    TrainedCMD,
    batched_best_estimates,
    best_estimates,
    cranmer_loss,
    default_flow,
    iterate_best_distance,
    loss_weights,
    train_cmd,
    training_arrays,
)

__all__ = [
    "CRANMER_BAND_EXTINCTION",
    "FLAGS",
    "BestEstimate",
    "CMDFeatures",
    "CMDModel",
    "CMDStars",
    "PosteriorConfig",
    "TrainedCMD",
    "batched_best_estimates",
    "best_estimates",
    "cranmer_loss",
    "default_flow",
    "distance_log_posterior",
    "distance_model",
    "distance_posteriors",
    "flag_names",
    "gaia_cmd_features",
    "iterate_best_distance",
    "loss_weights",
    "nuts_distance_posteriors",
    "photometric_covariance",
    "photometric_quadrature",
    "prepare_stars",
    "run_nuts",
    "train_cmd",
    "training_arrays",
]
