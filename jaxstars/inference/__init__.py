"""Per-star posterior machinery shared by all models.

* :mod:`~jaxstars.inference.nuts` — NUTS for any NumPyro model, vmapped over stars with per-star adaptation,
  diagnostics and flags (:func:`sample_stars`);
* :mod:`~jaxstars.inference.grid` — grid posteriors over one or two parameters with interpolated quantiles;
* :mod:`~jaxstars.inference.importance` — importance-sampled marginal likelihoods with their effective sample size.
"""

from jaxstars.inference.grid import (
    GridPosterior,
    GridPosterior2D,
    grid_posterior_1d,
    grid_posterior_2d,
    sample_grid_posterior,
    sample_grid_posterior_2d,
)
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
    "GridPosterior2D",
    "ImportanceResult",
    "NUTSConfig",
    "NUTSResult",
    "grid_posterior_1d",
    "grid_posterior_2d",
    "importance_log_marginal",
    "latent_sites",
    "nuts_flag_names",
    "sample_grid_posterior",
    "sample_grid_posterior_2d",
    "sample_stars",
    "sequential_nuts",
]
