"""Green et al. (paper 001): a data-driven stellar model θ = (Teff, logg, [Fe/H]) → absolute magnitude, colours and
a θ-dependent reddening vector, trained with per-star error propagation, and photometric posteriors with it.

* :mod:`~jaxstars.models.stellar.network` — :class:`StellarNetwork`: ``B M(θ)`` and ``R(θ) = exp(linear)`` (Fig. 3,
  Eq. 2, Eq. 5), regularisation of Eq. 15;
* :mod:`~jaxstars.models.stellar.stars` — floors, masks and flags of a star table (§3);
* :mod:`~jaxstars.models.stellar.covariance` — Eq. 4 (network Jacobian by ``jacfwd``), Eq. 6, whitening (Eq. 10),
  χ² (Eqs. 11–14), reddening update (Eqs. 8–9);
* :mod:`~jaxstars.models.stellar.training` — the iterative training of §4 (:func:`train_stellar`);
* :mod:`~jaxstars.models.stellar.metrics` — ⟨χ²/d.o.f.⟩, residual scores (Eq. 18, Fig. 12), ΔR/R (Eq. 17);
* :mod:`~jaxstars.models.stellar.density` — training-density map and validity flag (§6, Fig. 13);
* :mod:`~jaxstars.models.stellar.model`, :mod:`~jaxstars.models.stellar.release` — save/load, and the port of the
  released Keras network (h5py only);
* :mod:`~jaxstars.models.stellar.posterior` — the NumPyro model of Eq. 19 run with the shared NUTS engine.
"""

from .covariance import (
    StarArrays,
    batch_chi2,
    batch_reddening_update,
    batch_whitening,
    chi2,
    colour_covariance,
    magnitude_covariance,
    reddening_update,
    star_arrays,
    whitening_matrix,
)
from .density import ABSOLUTE_THRESHOLD, COLOUR_THRESHOLD, PAPER_BANDWIDTH, DensityMap
from .metrics import colour_names, delta_r_over_r, evaluate_stellar, model_difference, scores
from .model import FORMAT, MODEL_FILE, StellarModel, StellarModelError, load_stellar_model, released_model
from .network import StellarNetwork
from .posterior import (
    StellarPrior,
    draw_log_density,
    fit_theta_mixture,
    posterior_data,
    prune_chains,
    simulate_photometry,
    stellar_init,
    stellar_posteriors,
    stellar_star_model,
    summarise_posteriors,
)
from .release import (
    RELEASE_BANDS,
    ReleaseFileError,
    read_density_grid,
    read_keras_network,
    read_release_catalog,
    read_theta_normalisation,
)
from .stars import INVALID_FLAGS, STAR_FLAGS, StellarStars, prepare_stars, star_flag_names
from .training import StellarTrainConfig, TrainedStellar, chi2_threshold, split_indices, train_stellar

__all__ = [
    "ABSOLUTE_THRESHOLD",
    "COLOUR_THRESHOLD",
    "FORMAT",
    "INVALID_FLAGS",
    "MODEL_FILE",
    "PAPER_BANDWIDTH",
    "RELEASE_BANDS",
    "STAR_FLAGS",
    "DensityMap",
    "ReleaseFileError",
    "StarArrays",
    "StellarModel",
    "StellarModelError",
    "StellarNetwork",
    "StellarPrior",
    "StellarStars",
    "StellarTrainConfig",
    "TrainedStellar",
    "batch_chi2",
    "batch_reddening_update",
    "batch_whitening",
    "chi2",
    "chi2_threshold",
    "colour_covariance",
    "colour_names",
    "delta_r_over_r",
    "draw_log_density",
    "evaluate_stellar",
    "fit_theta_mixture",
    "load_stellar_model",
    "magnitude_covariance",
    "model_difference",
    "posterior_data",
    "prepare_stars",
    "prune_chains",
    "read_density_grid",
    "read_keras_network",
    "read_release_catalog",
    "read_theta_normalisation",
    "reddening_update",
    "released_model",
    "scores",
    "simulate_photometry",
    "split_indices",
    "star_arrays",
    "star_flag_names",
    "stellar_init",
    "stellar_posteriors",
    "stellar_star_model",
    "summarise_posteriors",
    "train_stellar",
    "whitening_matrix",
]
