"""Per-star posterior machinery shared by all models.

* :mod:`~jaxstars.inference.nuts` — NUTS for any NumPyro model, vmapped over stars with per-star adaptation,
  diagnostics and flags (:func:`sample_stars`);
* :mod:`~jaxstars.inference.grid` — grid posteriors over one parameter with interpolated quantiles;
* :mod:`~jaxstars.inference.importance` — importance-sampled marginal likelihoods with their effective sample size.
"""

from jaxstars.inference.grid import GridPosterior, grid_posterior_1d
from jaxstars.inference.importance import ImportanceResult, importance_log_marginal
from jaxstars.inference.nuts import (
    NUTS_FLAGS,
    NUTSConfig,
    NUTSResult,
    latent_sites,
    nuts_flag_names,
    sample_stars,
    sequential_nuts,
)

__all__ = [
    "NUTS_FLAGS",
    "GridPosterior",
    "ImportanceResult",
    "NUTSConfig",
    "NUTSResult",
    "grid_posterior_1d",
    "importance_log_marginal",
    "latent_sites",
    "nuts_flag_names",
    "sample_stars",
    "sequential_nuts",
]
